"""The fleet's keys for the benchmark scripts: the first PC founded the fleet's trust at
`trinity init`; it approves the others' keys, and git-sync brings the approvals to every PC
before any daemon starts (as `trinity demo` and the e2e tests do)."""
import json


def approve(pcs, run):
    """`run(pc, argv)` runs a program of the build as `pc` (argv[0] is its name: "trinity",
    "git-sync") and returns its standard output."""
    first, others = pcs[0], pcs[1:]
    for pc in others:
        keys = json.loads(run(pc, ["trinity", "fleet", "keys", "--json"]))
        own = next(k["key"] for k in keys if k["pc"] == pc and k["trusted"])
        run(first, ["trinity", "fleet", "approve", pc, "--key", own])
    for pc in pcs:
        run(pc, ["git-sync", "--once"])
