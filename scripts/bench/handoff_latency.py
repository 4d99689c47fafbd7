#!/usr/bin/env python3
"""Handoff latency with the whole fleet running: three PCs, all four daemons each, one state
repository (the release build: run `cargo build --release --workspace` first).

Usage: scripts/bench/handoff_latency.py [N] [--remote local|ssh|https] [--latency 25ms]
       (N forced handoffs around the ring, default 21; the remote a local bare repository by
       default, or the same repository behind the network test bed's sshd or HTTPS server and
       its proxy, adding --latency each way: 25ms makes a 50 ms round trip)

Each round forces a handoff on the PC holding the work (`credit-monitor --force-handoff`) and
times, from just before that command: (1) the agent's start on the next PC (the agent writes
the time), and (2) the next PC's `handoff_accepted` heartbeat for that handoff visible in the
outgoing PC's own tree (pulled by its git-sync). Prints each round and the median and p95.
For a network remote, the new connections the fleet opens (counted by the proxy) and the
requests the server answers, per PC and minute, over BENCH_IDLE_S (60) seconds twice: with the
fleet quiet (every PC on standby, before the first handoff) and with an agent at work (after the
last). Then each daemon's memory and CPU over the second.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netbed import NetBed
import fleetkeys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ap = argparse.ArgumentParser()
ap.add_argument("n", nargs="?", type=int, default=21)
ap.add_argument("--remote", choices=["local", "ssh", "https"], default="local")
ap.add_argument("--latency", default="0ms", help="added each way by the proxy (network remotes)")
ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
ap.add_argument("--heartbeat-commit-interval", default="0s",
                help="sync.heartbeat_commit_interval (0s: every refresh committed; the default setting is 1m)")
ap.add_argument("--set", action="append", default=[], metavar="TRINITY_X=V",
                help="a setting for every PC, e.g. TRINITY_SYNC__SHARE_SSH_CONNECTION=false")
opts = ap.parse_args()
REL = opts.bin_dir
N = opts.n
PCS = ["PC1", "PC2", "PC3"]
DAEMONS = ["git-sync", "credit-monitor", "wake-daemon"] + ([] if os.environ.get("BENCH_NO_COORDINATOR") else ["coordinator"])

d = tempfile.mkdtemp(prefix="trinity-latency-")
home = os.path.join(d, "home")
os.makedirs(home)
out = os.path.join(d, "out")
os.makedirs(out)
agent = os.path.join(d, "agent.sh")
open(agent, "w").write('#!/bin/sh\ndate +%s.%N > "$OUT/.$$.tmp" && mv "$OUT/.$$.tmp" "$OUT/$(basename "$TRINITY_HANDOFF_FILE" .json).t"\n')

bed = None
remote = os.path.join(d, "remote.git")
if opts.remote != "local":
    subprocess.run(["git", "init", "-q", "--bare", remote], check=True)
    bed = NetBed(REL, remote, os.path.join(d, "netbed"), opts.remote, latency=opts.latency)
    remote = bed.url

def env_for(pc):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("TRINITY_", "GIT_"))}
    e.update(HOME=home, GIT_CONFIG_GLOBAL=os.path.join(home, "none"), GIT_CONFIG_NOSYSTEM="1",
             TRINITY_CONFIG=os.path.join(d, pc, "trinity.toml"), OUT=out,
             TRINITY_SYNC__HEARTBEAT_COMMIT_INTERVAL=opts.heartbeat_commit_interval)
    e.update(kv.split("=", 1) for kv in opts.set)
    if bed:
        e.update(bed.env)
    return e

for i, pc in enumerate(PCS):
    os.makedirs(os.path.join(d, pc))
    args = [os.path.join(REL, "trinity"), "init", "--pc", pc, "--remote", remote]
    if i == 0:
        args += ["--create-remote", "--fleet", ",".join(PCS), "--coordinator", PCS[-1]]
    subprocess.run(args, cwd=os.path.join(d, pc), env=env_for(pc), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(d, pc, "trinity.toml"), "a") as f:
        f.write(f'[credit]\nclaude_projects_dir = ""\npause = "1s"\n'
                f'[agent]\ncommand = ["/bin/sh", "{agent}"]\nnew_console = false\n')
fleetkeys.approve(PCS, lambda pc, argv: subprocess.run(
    [os.path.join(REL, argv[0]), *argv[1:]], cwd=os.path.join(d, pc), env=env_for(pc),
    check=True, capture_output=True, text=True).stdout)

procs = []
for pc in PCS:
    for dm in DAEMONS:
        procs.append(subprocess.Popen([os.path.join(REL, dm)], cwd=os.path.join(d, pc), env=env_for(pc),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

def heartbeat(seen_by, of):
    try:
        return json.load(open(os.path.join(d, seen_by, ".trinity", "heartbeat", of + ".json")))
    except Exception:
        return None

failed = []

def wait(what, ok, limit=60):
    t = time.time()
    while not ok():
        if time.time() - t > limit:
            failed.append(what)
            raise SystemExit(f"timed out waiting for {what} (kept {d})")
        time.sleep(0.005)

idle = float(os.environ.get("BENCH_IDLE_S", "60"))

def network_use(label):
    """New connections and server requests per PC and minute over `idle` seconds."""
    if not bed or idle <= 0:
        return
    c0, r0 = bed.stats()["connections"], bed.requests()
    time.sleep(idle)
    c, r = bed.stats()["connections"] - c0, bed.requests() - r0
    per = len(PCS) * (idle / 60)
    print(f"{label}, {idle:.0f} s: {c / per:.1f} new connections and {r / per:.1f} requests per PC and minute", flush=True)

try:
    wait("every heartbeat everywhere", lambda: all(heartbeat(a, b) for a in PCS for b in PCS))
    # Past the quick checks every daemon makes after starting.
    time.sleep(65 if bed and idle > 0 else 0)
    network_use("quiet fleet (every PC on standby)")
    start_lat, seen_lat = [], []
    holder = 0
    for r in range(N):
        src = PCS[holder]
        t0 = time.time()
        p = subprocess.run([os.path.join(REL, "credit-monitor"), "--force-handoff"], cwd=os.path.join(d, src),
                           env=env_for(src), capture_output=True, text=True)
        if "handoff:" not in p.stdout:
            time.sleep(0.2)  # the next PC may still be pausing after its own handoff
            continue
        path = p.stdout.strip().rsplit(": ", 1)[-1]
        hid = os.path.basename(path)[:-len(".json")]
        dst = hid.split("_to_")[1].rsplit("_", 1)[0]
        mark = os.path.join(out, hid + ".t")
        wait(f"the agent on {dst}", lambda: os.path.exists(mark))
        t1 = float(open(mark).read())
        wait(f"{dst}'s handoff_accepted on {src}", lambda: (heartbeat(src, dst) or {}).get("handoff") == hid
             and (heartbeat(src, dst) or {}).get("status") == "handoff_accepted")
        t2 = time.time()
        start_lat.append((t1 - t0) * 1000)
        seen_lat.append((t2 - t0) * 1000)
        print(f"{r + 1:>3} {src} -> {dst}: agent started {start_lat[-1]:7.1f} ms, accepted seen on {src} {seen_lat[-1]:7.1f} ms", flush=True)
        holder = PCS.index(dst)
    def p95(v):
        v = sorted(v)
        return v[min(len(v) - 1, int(len(v) * 0.95))]
    print(f"\n{len(start_lat)} handoffs around the ring, remote {opts.remote}"
          + (f" with {opts.latency} each way" if bed else ""))
    print(f"trigger -> agent started on the next PC: median {statistics.median(start_lat):.0f} ms, p95 {p95(start_lat):.0f} ms")
    print(f"trigger -> handoff_accepted visible on the outgoing PC: median {statistics.median(seen_lat):.0f} ms, p95 {p95(seen_lat):.0f} ms")
    # Idle: each daemon's resident memory and CPU over a quiet minute (Linux /proc).
    def sample(pid):
        try:
            rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            return rss, (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except Exception:
            return None
    names = [(pc, dm) for pc in PCS for dm in DAEMONS]
    before = [sample(p.pid) for p in procs]
    if bed:
        print()
        network_use("an agent at work (the last PC, ACTIVE)")
    else:
        time.sleep(idle)
    after = [sample(p.pid) for p in procs]
    if idle <= 0:
        raise SystemExit(0)
    print(f"\nidle for {idle:.0f} s (PC1's daemons; the others alike):")
    for (pc, dm), b, a in zip(names, before, after):
        if pc == "PC1" and a and b:
            print(f"  {dm:<15} RSS {a[0] / 1024:5.1f} MiB, CPU {1000 * (a[1] - b[1]) / idle:6.2f} ms/s")
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    if bed:
        bed.close()
    if not failed:
        shutil.rmtree(d, ignore_errors=True)
