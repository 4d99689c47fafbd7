#!/usr/bin/env python3
"""Recovery after a network outage: how soon the files written during it reach the other PC once
the link returns (release build: `cargo build --release --workspace` first).

Usage: scripts/bench/outage.py [--outage 30 600] [--cut blackhole refuse] [--remote ssh|https]
                               [--latency 25ms] [--bin-dir DIR]

Two PCs with git-sync running, the state repository behind the network test bed (a loopback sshd
or HTTPS server through its fault proxy, --latency each way). For each outage length and kind
of cut: the link is cut; PC1 writes ten tasks spread over the outage (`trinity task add`); the
link returns; the time until all ten are in PC2's tree is taken.
"""
import argparse, os, shutil, subprocess, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netbed import NetBed
import fleetkeys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ap = argparse.ArgumentParser()
ap.add_argument("--outage", nargs="+", type=float, default=[30, 600], help="seconds")
ap.add_argument("--cut", nargs="+", default=["blackhole", "refuse"])
ap.add_argument("--remote", choices=["ssh", "https"], default="ssh")
ap.add_argument("--latency", default="25ms")
ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
opts = ap.parse_args()
BIN = opts.bin_dir
PCS = ["PC1", "PC2"]

d = tempfile.mkdtemp(prefix="trinity-outage-")
home = os.path.join(d, "home")
os.makedirs(home)
remote = os.path.join(d, "remote.git")
subprocess.run(["git", "init", "-q", "--bare", remote], check=True)
bed = NetBed(BIN, remote, os.path.join(d, "netbed"), opts.remote, latency=opts.latency)

def env_for(pc):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("TRINITY_", "GIT_"))}
    e.update(HOME=home, GIT_CONFIG_GLOBAL=os.path.join(home, "none"), GIT_CONFIG_NOSYSTEM="1",
             TRINITY_CONFIG=os.path.join(d, pc, "trinity.toml"))
    e.update(bed.env)
    return e

def run(pc, *args):
    return subprocess.run([os.path.join(BIN, args[0]), *args[1:]], cwd=os.path.join(d, pc),
                          env=env_for(pc), check=True, capture_output=True, text=True)

for i, pc in enumerate(PCS):
    os.makedirs(os.path.join(d, pc))
    args = ["trinity", "init", "--pc", pc, "--remote", bed.url]
    if i == 0:
        args += ["--create-remote", "--fleet", ",".join(PCS), "--coordinator", PCS[-1]]
    run(pc, *args)
fleetkeys.approve(PCS, lambda pc, argv: run(pc, *argv).stdout)

procs = [subprocess.Popen([os.path.join(BIN, "git-sync")], cwd=os.path.join(d, pc), env=env_for(pc),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for pc in PCS]

def wait(what, ok, limit):
    t = time.time()
    while not ok():
        if time.time() - t > limit:
            raise SystemExit(f"timed out waiting for {what} (kept {d})")
        time.sleep(0.01)

def task_file(pc, tid):
    return os.path.join(d, pc, ".trinity", "spawn_queue", tid + ".json")

ok = False
try:
    results = []
    n = 0
    for outage in opts.outage:
        for cut in opts.cut:
            tasks = [f"t{n}-{i}" for i in range(10)]
            n += 1
            bed.command(f"cut {cut}")
            t0 = time.time()
            for i, tid in enumerate(tasks):
                # Spread over the outage's first nine tenths.
                at = t0 + outage * 0.9 * i / len(tasks)
                time.sleep(max(0, at - time.time()))
                run("PC1", "trinity", "task", "add", tid, "--description", "written during an outage")
            time.sleep(max(0, t0 + outage - time.time()))
            assert not any(os.path.exists(task_file("PC2", t)) for t in tasks), "crossed a cut link"
            bed.command("heal")
            healed = time.time()
            wait(f"the tasks of outage {n} on PC2", lambda: all(os.path.exists(task_file("PC2", t)) for t in tasks),
                 limit=outage + 300)
            took = time.time() - healed
            results.append((outage, cut, took))
            print(f"{opts.remote}, {opts.latency} each way: {cut} for {outage:.0f} s -> the ten files on PC2 "
                  f"{took:.2f} s after the link returned", flush=True)
    ok = True
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    bed.close()
    if ok:
        shutil.rmtree(d, ignore_errors=True)
