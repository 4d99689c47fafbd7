#!/usr/bin/env python3
"""git-sync figures: propagation latency between two PCs, idle CPU per cycle, idle memory,
at a short and a long history.

Usage: scripts/bench/git_sync.py [HISTORY ...]   (default: 100 20000; build with
`cargo build --release -p git-sync` first)

For each history length: a bare remote whose `trinity` branch has that many commits (made
with git fast-import), two clones (PC1, PC2) with default sync settings but remote checks every
2 s, and the release git-sync daemon running on each. Latency: a claim file is written on PC1 (atomically) and the
time until it is in PC2's working tree is taken, 30 rounds. Idle: with nothing changing for
20 s, the CPU time the PC2 daemon used (utime + stime from /proc) divided by the remote checks
it made (one per pull_interval, 2 s; CPU from /proc/PID/schedstat), and its resident memory.
"""
import json, os, random, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "git-sync")
random.seed(7)

def env(home):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "TRINITY_"))}
    e.update(HOME=home, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1",
             GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
             GIT_COMMITTER_EMAIL="b@b")
    return e

def git(cwd, *args, e, inp=None):
    return subprocess.run(["git", *args], cwd=cwd, env=e, input=inp, check=True,
                          capture_output=True).stdout

def history(remote, n, e):
    lines = []
    fleet = b'format_version = 1\npcs = ["PC1", "PC2", "PC3"]\ncoordinator = "PC3"\n'
    ignore = b"/local/\n/logs/\n*.tmp\n"
    for i in range(n):
        hb = json.dumps({"format_version": 1, "pc": "PC3", "status": "active",
                         "timestamp": "2026-11-21T10:00:00Z", "tasks_received": i}).encode()
        lines.append(b"commit refs/heads/trinity\n")
        lines.append(b"committer b <b@b> %d +0000\n" % (1700000000 + i))
        msg = b"heartbeat: PC3"
        lines.append(b"data %d\n%s\n" % (len(msg), msg))
        if i == 0:
            for path, data in ((b"fleet.toml", fleet), (b".gitignore", ignore)):
                lines.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path, len(data), data))
        lines.append(b"M 100644 inline heartbeat/PC3.json\ndata %d\n%s\n" % (len(hb), hb))
    git(remote, "fast-import", "--quiet", e=e, inp=b"".join(lines))

def cpu(pid):
    """Seconds on CPU, from the scheduler's nanosecond counter."""
    return int(open(f"/proc/{pid}/schedstat").read().split()[0]) / 1e9

def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

def run(n):
    d = tempfile.mkdtemp()
    home = os.path.join(d, "home"); os.makedirs(home)
    e = env(home)
    remote = os.path.join(d, "remote.git")
    git(d, "init", "-q", "--bare", "-b", "trinity", remote, e=e)
    history(remote, n, e)
    daemons = []
    for pc in ("PC1", "PC2"):
        pd = os.path.join(d, pc); os.makedirs(pd)
        git(pd, "clone", "-q", "--branch", "trinity", "--single-branch", remote, ".trinity", e=e)
        open(os.path.join(pd, "trinity.toml"), "w").write(f'pc = "{pc}"\nstate_dir = ".trinity"\n')
        # Checks every 2 s whatever is in flight, so the idle cost per check is comparable
        # across runs (the default rates are 1 s with work in flight, 10 s when quiet).
        de = dict(e, TRINITY_CONFIG=os.path.join(pd, "trinity.toml"),
                  TRINITY_SYNC__PULL_INTERVAL="2s", TRINITY_SYNC__IDLE_PULL_INTERVAL="2s")
        daemons.append(subprocess.Popen([BIN], cwd=pd, env=de, stderr=subprocess.DEVNULL))
    try:
        time.sleep(3)
        lat = []
        for i in range(30):
            rel = f"claims/bench-{i}.json"
            src = os.path.join(d, "PC1", ".trinity", rel)
            os.makedirs(os.path.dirname(src), exist_ok=True)
            body = json.dumps({"format_version": 1, "task_id": f"bench-{i}", "pc": "PC1",
                               "claimed_at": "2026-11-21T10:00:00Z"})
            open(src + ".tmp", "w").write(body)
            t0 = time.time()
            os.rename(src + ".tmp", src)
            dst = os.path.join(d, "PC2", ".trinity", rel)
            while not os.path.exists(dst):
                time.sleep(0.002)
                if time.time() - t0 > 30:
                    sys.exit(f"round {i}: not propagated in 30 s")
            lat.append((time.time() - t0) * 1000)
            time.sleep(random.uniform(0.2, 2.2))  # no lock-step with the pull ticker
        time.sleep(5)
        pid = daemons[1].pid
        c0, t0 = cpu(pid), time.time()
        time.sleep(20)
        c1, t1 = cpu(pid), time.time()
        checks = (t1 - t0) / 2.0
        lat.sort()
        print(f"history {n:>6} commits: latency median {statistics.median(lat):.0f} ms, "
              f"p95 {lat[int(len(lat) * 0.95) - 1]:.0f} ms; idle CPU {(c1 - c0) / checks * 1000:.2f} ms "
              f"per 2 s check ({(c1 - c0) * 1000:.0f} ms over {t1 - t0:.0f} s); idle RSS {rss_mb(pid):.1f} MB")
    finally:
        for p in daemons:
            p.terminate(); p.wait()
        shutil.rmtree(d, ignore_errors=True)

for n in [int(a) for a in sys.argv[1:]] or [100, 20000]:
    run(n)
