#!/usr/bin/env python3
"""Time from a wake signal file appearing to the agent's start, with the real wake-daemon.

Usage: scripts/bench/wake_latency.py [N]   (builds nothing: run `cargo build --release` first)

A temporary tree with sync.mode = "none"; the agent is a shell script that writes the time it
started. Each round writes a handoff, then the signal (atomically, by rename), and waits for the
agent. Prints the median and the 95th percentile in milliseconds.
"""
import json, os, statistics, subprocess, sys, tempfile, time
from datetime import datetime, timezone, timedelta

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "wake-daemon")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 50

d = tempfile.mkdtemp()
tree = os.path.join(d, ".trinity")
os.makedirs(os.path.join(tree, "wake", "PC2"))
os.makedirs(os.path.join(tree, "handoff"))
os.makedirs(os.path.join(d, "out"))
open(os.path.join(tree, "fleet.toml"), "w").write(
    'format_version = 1\npcs = ["PC1", "PC2", "PC3"]\ncoordinator = "PC3"\n')
agent = os.path.join(d, "agent.sh")
open(agent, "w").write('#!/bin/sh\ndate +%s.%N > "$OUT/$TRINITY_TASK_ID.t"\n')
open(os.path.join(d, "trinity.toml"), "w").write(
    f'pc = "PC2"\nstate_dir = ".trinity"\n[sync]\nmode = "none"\n[wake]\npoll_interval = "2s"\n'
    f'queue_when_agent_running = false\n[agent]\ncommand = ["/bin/sh", "{agent}"]\nnew_console = false\n')
env = dict(os.environ, TRINITY_CONFIG=os.path.join(d, "trinity.toml"), OUT=os.path.join(d, "out"))
daemon = subprocess.Popen([BIN], env=env, cwd=d, stderr=subprocess.DEVNULL)
time.sleep(1.0)  # let it start watching
base = datetime.now(timezone.utc).replace(microsecond=0)
lat = []
try:
    for i in range(N):
        ts = base + timedelta(seconds=i + 1)
        stamp = ts.strftime("%Y%m%dT%H%M%SZ")
        hid = f"handoff_PC1_to_PC2_{stamp}"
        task = f"task-{i}"
        h = {"format_version": 1, "from_pc": "PC1", "to_pc": "PC2",
             "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "reason": "credit_exhaustion",
             "task_queue": [{"id": task, "priority": "high", "description": "bench"}]}
        open(os.path.join(tree, "handoff", hid + ".json"), "w").write(json.dumps(h))
        s = {"format_version": 1, "id": f"sig-{i}", "from_pc": "PC1", "to_pc": "PC2",
             "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "task": "credit_handoff", "message": "bench", "handoff": hid}
        tmp = os.path.join(tree, "wake", "PC2", f".sig-{i}.json.tmp")
        open(tmp, "w").write(json.dumps(s))
        t0 = time.time()
        os.rename(tmp, os.path.join(tree, "wake", "PC2", f"sig-{i}.json"))
        out = os.path.join(d, "out", task + ".t")
        while not os.path.exists(out) or os.path.getsize(out) == 0:
            time.sleep(0.001)
            if time.time() - t0 > 10:
                sys.exit(f"round {i}: agent not started within 10 s")
        lat.append((float(open(out).read()) - t0) * 1000)
finally:
    daemon.terminate()
    daemon.wait()
lat.sort()
print(f"wake latency over {N} rounds: median {statistics.median(lat):.1f} ms, "
      f"p95 {lat[int(len(lat) * 0.95) - 1]:.1f} ms, max {lat[-1]:.1f} ms")
