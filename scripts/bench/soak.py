#!/usr/bin/env python3
"""Soak: a whole fleet of three PCs, every daemon running, for a given wall time, with churn.

Usage: scripts/bench/soak.py [--minutes M] [--idle-minutes I] [--churn-per-second R]
                             [--handoff-every S] [--bin-dir DIR] [--wrap PC:DAEMON=CMD] [--keep]
       (builds nothing: run `cargo build --release --workspace` first)

Three PCs share one local bare repository, each set up by `trinity init` and running
`git-sync`, `credit-monitor`, `wake-daemon` and `coordinator` at their default settings. Two settings differ,
and only so that the forced handoffs can go round the ring for an hour: `credit.pause` (1m)
and `credit.rate_limit_window` (2m); the agent is a shell script that records its start.

Churn on top of what the daemons write themselves (heartbeats, credit files, handoffs):
task files written on a random PC, `--churn-per-second` of them (1.5 by default; each is a
commit, so an hour carries more commits than a real fleet's day: 3 PCs x 1 heartbeat commit a
minute = 4320 a day), the oldest deleted again so the tree stays the size of a real one; and a
forced handoff (three recorded rate limits) every `--handoff-every` seconds, round the ring.

The churn runs for `--minutes`, between two idle phases of `--idle-minutes` (no churn, no
forced handoffs: the fleet as it is most of the time). Every minute it samples, for each PC:
every daemon's RSS (and anonymous RSS) and CPU time, the pack count, loose objects and size of
`.git`, the commits on the remote, the latency of a probe file written on PC1 until it is in
PC2's tree, and ERROR lines in the logs. At the end it prints the tables (as Markdown) and a
verdict: zero sync errors and lost probes, packs bounded, no daemon exited, remote fsck clean,
and each daemon idling after the churn as before it — idle RSS within 20 %, idle CPU a minute
within 50 % or 0.2 s (the last sample of each idle phase compared).
"""
import argparse, json, os, random, signal, statistics, subprocess, sys, tempfile, time
from datetime import datetime, timezone
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetkeys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REL = os.path.join(ROOT, "target", "release")
PCS = ["PC1", "PC2", "PC3"]
DAEMONS = ["git-sync", "credit-monitor", "wake-daemon", "coordinator"]
MAX_PACKS = 16  # git-sync's bound (crates/git-sync/src/repo.rs)
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--minutes", type=float, default=60)
ap.add_argument("--churn-per-second", type=float, default=1.5)
ap.add_argument("--handoff-every", type=float, default=180)
ap.add_argument("--sample-every", type=float, default=60)
ap.add_argument("--keep", action="store_true")
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--bin-dir", default=REL,
                help="where the release binaries are (a copy keeps a long soak apart from builds)")
ap.add_argument("--idle-minutes", type=float, default=3,
                help="idle phases (no churn, no handoffs) before and after the churn, whose "
                     "RSS and CPU are compared")
ap.add_argument("--set", action="append", default=[], metavar="TRINITY_…=VALUE",
                help="a setting for every PC, as an environment variable "
                     "(TRINITY_SYNC__COMPACT_AFTER_COMMITS=800)")
ap.add_argument("--wrap", action="append", default=[], metavar="PC:DAEMON=COMMAND",
                help="run one daemon under a profiler, e.g. PC1:git-sync='heaptrack -o /tmp/h'")
args = ap.parse_args()
REL = os.path.abspath(args.bin_dir)
rng = random.Random(args.seed)

for b in ["trinity"] + DAEMONS:
    if not os.path.isfile(os.path.join(REL, b)):
        sys.exit(f"{REL}/{b} is missing: run `cargo build --release --workspace` first")

d = tempfile.mkdtemp(prefix="trinity-soak-")
home = os.path.join(d, "home")
agents = os.path.join(d, "agents")
os.makedirs(home)
os.makedirs(agents)
env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "TRINITY_"))}
env.update(HOME=home, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1",
           GIT_AUTHOR_NAME="soak", GIT_AUTHOR_EMAIL="soak@soak",
           GIT_COMMITTER_NAME="soak", GIT_COMMITTER_EMAIL="soak@soak", AGENT_OUT=agents)
for setting in args.set:
    name, _, value = setting.partition("=")
    env[name] = value
remote = os.path.join(d, "remote.git")
agent = os.path.join(d, "agent.sh")
with open(agent, "w") as f:
    f.write('#!/bin/sh\necho "$TRINITY_HANDOFF_ID" > "$AGENT_OUT/$TRINITY_PC-$$.txt"\n')


def pc_env(pc):
    return dict(env, TRINITY_CONFIG=os.path.join(d, pc, "trinity.toml"))


def run(cmd, pc, check=True):
    p = subprocess.run(cmd, cwd=os.path.join(d, pc), env=pc_env(pc), capture_output=True, text=True)
    if check and p.returncode != 0:
        sys.exit(f"{cmd} on {pc} failed: {p.stdout}{p.stderr}")
    return p


def git(*a, cwd=None):
    return subprocess.run(["git", *a], cwd=cwd, env=env, capture_output=True, text=True).stdout.strip()


for pc in PCS:
    os.makedirs(os.path.join(d, pc))
    cmd = [os.path.join(REL, "trinity"), "init", "--pc", pc, "--remote", remote]
    if pc == "PC1":
        cmd += ["--create-remote", "--fleet", ",".join(PCS), "--coordinator", "PC3"]
    run(cmd, pc)
    with open(os.path.join(d, pc, "trinity.toml"), "a") as f:
        f.write(f'[agent]\ncommand = ["/bin/sh", "{agent}"]\nnew_console = false\n'
                f'[credit]\nclaude_projects_dir = ""\npause = "1m"\nrate_limit_window = "2m"\n')
fleetkeys.approve(PCS, lambda pc, argv: run([os.path.join(REL, argv[0]), *argv[1:]], pc).stdout)

procs = {}


wraps = {}
for w in args.wrap:
    target, _, command = w.partition("=")
    wraps[tuple(target.split(":"))] = command.split()


def start(pc, name):
    log = open(os.path.join(d, pc, f"{name}.stderr"), "ab")
    cmd = wraps.get((pc, name), []) + [os.path.join(REL, name)]
    procs[(pc, name)] = subprocess.Popen(cmd, cwd=os.path.join(d, pc),
                                         env=pc_env(pc), stdout=subprocess.DEVNULL, stderr=log)


def tree(pc):
    return os.path.join(d, pc, ".trinity")


def proc_stats(pid):
    """(RSS bytes, CPU seconds, anonymous RSS bytes) of a process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        cpu = (int(parts[11]) + int(parts[12])) / TICK
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE
        anon = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) * 1024
        return rss, cpu, anon
    except (OSError, IndexError, ValueError):
        return 0, 0.0, 0


def code_rss(pid):
    """Resident bytes of the program's own file (its code paged in), and of files mapped
    from any repository's objects/pack/ (pack files and their indices)."""
    code = packs = 0
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        path = ""
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                first = line.split(None, 6)
                if len(first) >= 5 and "-" in first[0] and ":" in first[3]:
                    path = first[5].strip() if len(first) > 5 else ""
                elif line.startswith("Rss:"):
                    kb = int(line.split()[1]) * 1024
                    if path == exe:
                        code += kb
                    elif "/objects/pack/" in path:
                        packs += kb
    except (OSError, IndexError, ValueError):
        pass
    return code, packs


def objects(path):
    packs = loose = size = 0
    for root, _, files in os.walk(path):
        for n in files:
            try:
                size += os.path.getsize(os.path.join(root, n))
            except OSError:
                continue
            if root.endswith(os.sep + "pack"):
                packs += n.endswith(".idx")
            elif len(os.path.basename(root)) == 2 and "objects" in root:
                loose += 1
    return packs, loose, size


def errors(pc):
    n = 0
    logs = os.path.join(tree(pc), "logs")
    for name in os.listdir(logs) if os.path.isdir(logs) else []:
        with open(os.path.join(logs, name), errors="replace") as f:
            n += sum(1 for line in f if " ERROR " in line)
    return n


def write_atomic(path, body):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".soak.tmp"
    with open(tmp, "w") as f:
        f.write(body)
    os.rename(tmp, path)


def task_body(tid, pc, deps=()):
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({"format_version": 1, "id": tid, "priority": "low", "description": "soak churn",
                       "created_at": now, "created_by": pc, "dependencies": list(deps)})


# The churn's tasks wait on one task that is never finished, so the coordinator gives none of
# them out: a real fleet takes on a few tasks a day, and each leaves a claim and a done record
# behind for good, while this churn adds 1.5 tasks a second (given out, they would leave 5,000
# claims an hour, and every daemon's memory follows the size of the tree it reads).
BLOCKER = "soak-blocker"

# Before the daemons start: the blocker is given out once, during the first idle phase.
write_atomic(os.path.join(tree("PC1"), "spawn_queue", BLOCKER + ".json"), task_body(BLOCKER, "PC1"))
for pc in PCS:
    for name in DAEMONS:
        start(pc, name)



probe_n = 0


def probe():
    """Seconds from a file written on PC1 until it is in PC2's tree."""
    global probe_n
    probe_n += 1
    tid = f"probe-{probe_n}"
    source = os.path.join(tree("PC1"), "spawn_queue", tid + ".json")
    write_atomic(source, task_body(tid, "PC1", [BLOCKER]))
    t0 = time.time()
    target = os.path.join(tree("PC2"), "spawn_queue", tid + ".json")
    while not os.path.exists(target):
        time.sleep(0.005)
        if time.time() - t0 > 120:
            return None
    took = time.time() - t0
    os.remove(source)  # the tree keeps its size
    return took


samples = []
latencies = []
churn = []  # (pc, path) oldest first
handoffs = 0
start_time = time.time()
idle = args.idle_minutes * 60
churn_from = start_time + idle  # an idle phase first: the baseline
churn_until = churn_from + args.minutes * 60
end_time = churn_until + idle  # and an idle phase last: what a day of churn left behind
next_sample = start_time + 20  # let the fleet settle first
next_handoff = churn_from + 30
last_cpu = {}
turn = 0
interval = 1.0 / args.churn_per_second if args.churn_per_second > 0 else None
next_churn = churn_from
print(f"soak: {args.minutes} min in {d}", flush=True)


def sample():
    now = time.time()
    phase = "idle-start" if now < churn_from else "churn" if now < churn_until + 20 else "idle-end"
    row = {"t": round((now - start_time) / 60, 1), "phase": phase}
    lat = probe()
    latencies.append(lat)
    row["latency_ms"] = None if lat is None else round(lat * 1000)
    row["commits"] = int(git("rev-list", "--count", "trinity", cwd=remote) or 0)
    packs = []
    for pc in PCS:
        p, l, s = objects(os.path.join(tree(pc), ".git", "objects"))
        packs.append(p)
        row[f"{pc}_git_mb"] = round(sum(
            os.path.getsize(os.path.join(r, n)) for r, _, fs in os.walk(os.path.join(tree(pc), ".git"))
            for n in fs if os.path.exists(os.path.join(r, n))) / 1e6, 2)
        row[f"{pc}_loose"] = l
        row[f"{pc}_errors"] = errors(pc)
        try:
            with open(os.path.join(tree(pc), "local", "git-sync", "state.json")) as f:
                st = json.load(f)
        except (OSError, ValueError):
            st = {}
        row[f"{pc}_history"] = int(git("rev-list", "--count", "HEAD", cwd=tree(pc)) or 0)
        row[f"{pc}_maint"] = st.get("maintenance_runs", 0)
        row[f"{pc}_compactions"] = st.get("compactions", 0)
        row[f"{pc}_reopens"] = st.get("reopens", 0)
    row["packs_max"] = max(packs)
    row["remote_mb"] = round(objects(os.path.join(remote, "objects"))[2] / 1e6, 2)
    for (pc, name), p in procs.items():
        rss, cpu, anon = proc_stats(p.pid)
        prev = last_cpu.get((pc, name))
        row[f"{pc}_{name}_rss_mb"] = round(rss / 1e6, 1)
        row[f"{pc}_{name}_anon_mb"] = round(anon / 1e6, 1)
        if name == "git-sync":
            code, packs = code_rss(p.pid)
            row[f"{pc}_{name}_code_mb"] = round(code / 1e6, 1)
            row[f"{pc}_{name}_packs_mb"] = round(packs / 1e6, 1)
        row[f"{pc}_{name}_cpu_s"] = round(cpu - prev, 2) if prev is not None else 0.0
        last_cpu[(pc, name)] = cpu
        if p.poll() is not None:
            row[f"{pc}_{name}_exited"] = p.returncode
    samples.append(row)
    print(json.dumps(row), flush=True)


try:
    while time.time() < end_time:
        now = time.time()
        if now >= next_sample:
            sample()
            next_sample += args.sample_every
            continue
        if not churn_from <= now < churn_until:
            time.sleep(0.05)
            continue

        if now >= next_handoff:
            pc = PCS[turn % 3]
            turn += 1
            for _ in range(3):
                run([os.path.join(REL, "credit-monitor"), "--record-rate-limit"], pc, check=False)
            handoffs += 1
            next_handoff += args.handoff_every
            continue
        if interval and now >= next_churn:
            pc = rng.choice(PCS)
            tid = f"churn-{pc.lower()}-{int(now * 1000)}"
            path = os.path.join(tree(pc), "spawn_queue", tid + ".json")
            write_atomic(path, task_body(tid, pc, [BLOCKER]))
            churn.append((pc, path))
            if len(churn) > 60:
                old_pc, old = churn.pop(0)
                try:
                    os.remove(old)
                except FileNotFoundError:
                    pass
            next_churn += interval
            continue
        time.sleep(0.01)
    sample()
finally:
    for p in procs.values():
        p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()

# ---- the report ----------------------------------------------------------------------------
launches = len(os.listdir(agents))
first, last = samples[0], samples[-1]
hours = (time.time() - start_time) / 3600
# Commits made during the run (the remote's count drops when the history is compacted, so
# count from the git-sync logs' commit lines instead of the remote).
commits = 0
for pc in PCS:
    for name in os.listdir(os.path.join(tree(pc), "logs")):
        if name.startswith("git-sync"):
            with open(os.path.join(tree(pc), "logs", name), errors="replace") as f:
                commits += sum(1 for line in f if " commit=" in line)
lats = sorted(x for x in latencies if x is not None)
lost_probes = sum(1 for x in latencies if x is None)
fsck = subprocess.run(["git", "fsck", "--no-progress"], cwd=remote, env=env, capture_output=True, text=True)
total_errors = sum(last[f"{pc}_errors"] for pc in PCS)
max_packs = max(s["packs_max"] for s in samples)
max_git = max(s[f"{pc}_git_mb"] for s in samples for pc in PCS)
exits = [k for s in samples for k in s if k.endswith("_exited")]

cols = ["t", "phase", "commits", "latency_ms", "packs_max"] + [f"{pc}_git_mb" for pc in PCS] + \
       ["remote_mb"] + [f"{pc}_history" for pc in PCS] + [f"{pc}_loose" for pc in PCS] + \
       [f"{pc}_errors" for pc in PCS]
print("\n| " + " | ".join(cols) + " |")
print("|" + "---|" * len(cols))
for s in samples:
    print("| " + " | ".join(str(s.get(c, "")) for c in cols) + " |")

print("\n| daemon (during the churn) | RSS first MB | RSS last MB | RSS max MB | anonymous RSS first → last MB "
      "| CPU s/min (median) |")
print("|---|---|---|---|---|---|")
busy = [s for s in samples if s["phase"] == "churn"] or samples
for pc in PCS:
    for name in DAEMONS:
        rss = [s.get(f"{pc}_{name}_rss_mb", 0) for s in busy]
        anon = [s.get(f"{pc}_{name}_anon_mb", 0) for s in busy]
        per_min = [s[f"{pc}_{name}_cpu_s"] * 60 / args.sample_every for s in busy]
        print(f"| {pc} {name} | {rss[0]} | {rss[-1]} | {max(rss)} | {anon[0]} → {anon[-1]} | "
              f"{statistics.median(per_min):.2f} |")

# The criterion: after the churn, each daemon idles as it did before it. Compared: the last
# sample of each idle phase (the fleet settled), RSS within 20 %, CPU a minute within 50 % or
# 0.2 s (an idle daemon's CPU is a few hundredths of a second a minute, where one extra
# heartbeat commit is already a large fraction).
idle_start = [s for s in samples if s["phase"] == "idle-start"]
idle_end = [s for s in samples if s["phase"] == "idle-end"]
idle_ok = bool(idle_start and idle_end)
if idle_ok:
    a, b = idle_start[-1], idle_end[-1]
    print("\n| daemon | idle RSS before MB | idle RSS after MB | change | idle anonymous RSS before → after MB "
          "| idle CPU s/min before | after |")
    print("|---|---|---|---|---|---|---|")
    for pc in PCS:
        for name in DAEMONS:
            r0, r1 = a[f"{pc}_{name}_rss_mb"], b[f"{pc}_{name}_rss_mb"]
            c0, c1 = (x[f"{pc}_{name}_cpu_s"] * 60 / args.sample_every for x in (a, b))
            change = (r1 / r0 - 1) * 100 if r0 else 0
            good = change <= 20 and c1 <= max(c0 * 1.5, c0 + 0.2)
            idle_ok &= good
            print(f"| {pc} {name} | {r0} | {r1} | {change:+.0f} % | {a[f'{pc}_{name}_anon_mb']} → "
                  f"{b[f'{pc}_{name}_anon_mb']} | {c0:.2f} | {c1:.2f}{'' if good else ' FAIL'} |")
else:
    print("no idle phase sampled before and after the churn (--idle-minutes too short?)")

growth_per_commit = (last["remote_mb"] - first["remote_mb"]) * 1e6 / commits if commits else 0
print(f"\n{hours * 60:.0f} min; {commits} commits on the remote ({commits / hours:.0f}/h; a real "
      f"3-PC fleet makes about 4320 heartbeat commits a day); {handoffs} forced handoffs, "
      f"{launches} agents started")
if lats:
    print(f"sync latency PC1 -> PC2: median {statistics.median(lats) * 1000:.0f} ms, "
          f"max {lats[-1] * 1000:.0f} ms, first hour-quarter median "
          f"{statistics.median(lats[:max(1, len(lats) // 4)]) * 1000:.0f} ms, last quarter median "
          f"{statistics.median(lats[-max(1, len(lats) // 4):]) * 1000:.0f} ms; {lost_probes} probes lost")
print(f"packs at most {max_packs}; a PC's .git at most {max_git} MB; remote objects "
      f"{first['remote_mb']} -> {last['remote_mb']} MB ({growth_per_commit:.0f} bytes a commit)")
print("pack consolidations / history compactions / repository reopens per PC: " + ", ".join(
    f"{pc} {last[pc + '_maint']}/{last[pc + '_compactions']}/{last[pc + '_reopens']}" for pc in PCS))
print(f"ERROR lines in the logs: {total_errors}; daemons that exited: {exits or 'none'}; "
      f"remote fsck: {'clean' if fsck.returncode == 0 else fsck.stderr.strip()}")
ok = (total_errors == 0 and lost_probes == 0 and max_packs <= MAX_PACKS + 2 and idle_ok
      and not exits and fsck.returncode == 0)
print("verdict:", "PASS" if ok else "FAIL")
if args.keep:
    print(f"kept {d}")
else:
    subprocess.run(["rm", "-rf", d])
sys.exit(0 if ok else 1)
