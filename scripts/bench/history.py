#!/usr/bin/env python3
"""History growth: what a state repository of N commits weighs, and what a joining PC pays.

Usage: scripts/bench/history.py [N ...]   (default: 10000 15000 100000; build with
`cargo build --release -p trinity-cli` first)

For each N: a bare remote whose `trinity` branch holds N commits shaped like a real fleet's
(made with git fast-import): three PCs taking turns, each commit rewriting one PC's heartbeat
or credit file with fresh time stamps and figures, as the daemons do about once a minute. The
remote is packed as git's own gc would (`git repack -a -d`). Then a PC joins with
`trinity init --pc PC4 --remote …` (a real clone, `--no-local` semantics: objects are packed and
sent as over a network) and the time and the size of its `.git` are taken.

Prints bytes per commit, and what a year would weigh without compaction at the measured rate
of a 3-PC fleet (about 4800 commits a day: scripts/bench/soak.py with no churn).
"""
import json, os, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRINITY = os.path.join(ROOT, "target", "release", "trinity")
PER_DAY = 4800


def env(home):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "TRINITY_"))}
    e.update(HOME=home, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1",
             GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
             GIT_COMMITTER_EMAIL="b@b")
    return e


def git(cwd, *args, e, inp=None):
    return subprocess.run(["git", *args], cwd=cwd, env=e, input=inp, check=True,
                          capture_output=True).stdout


def stamp(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def history(remote, n, e):
    out = []
    fleet = b'format_version = 1\npcs = ["PC1", "PC2", "PC3", "PC4"]\ncoordinator = "PC3"\n'
    ignore = b"/local/\n/logs/\n.*.tmp\n"
    t0 = 1_790_000_000
    for i in range(n):
        t = t0 + i * 18  # ~4800 commits a day
        pc = f"PC{i % 3 + 1}"
        if i % 2 == 0:
            path = f"heartbeat/{pc}.json"
            body = {"format_version": 1, "pc": pc, "status": "active", "timestamp": stamp(t),
                    "daemons": {"credit-monitor": {"pid": 4000 + i % 7, "seen_at": stamp(t)},
                                "git-sync": {"pid": 4100, "seen_at": stamp(t)},
                                "wake-daemon": {"pid": 4200, "seen_at": stamp(t)}}}
            msg = f"heartbeat: {pc} (active)\n\nM {path}\n"
        else:
            path = f"credit/{pc}.json"
            body = {"format_version": 1, "pc": pc, "level": "HEALTHY", "updated_at": stamp(t),
                    "fraction": round((i % 97) / 100, 2), "tokens_today": i * 37 % 100000}
            msg = f"credit: {pc} HEALTHY\n\nM {path}\n"
        data = json.dumps(body, indent=2).encode()
        out.append(b"commit refs/heads/trinity\n")
        out.append(b"committer trinity %s <%s@trinity.invalid> %d +0000\n"
                   % (pc.encode(), pc.lower().encode(), t))
        out.append(b"data %d\n%s\n" % (len(msg), msg.encode()))
        if i == 0:
            for p, d in ((b"fleet.toml", fleet), (b".gitignore", ignore)):
                out.append(b"M 100644 inline %s\ndata %d\n%s\n" % (p, len(d), d))
        out.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data))
    git(remote, "fast-import", "--quiet", e=e, inp=b"".join(out))
    git(remote, "repack", "-a", "-d", "-q", e=e)


def size(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def run(n):
    d = tempfile.mkdtemp()
    try:
        home = os.path.join(d, "home")
        os.makedirs(home)
        e = env(home)
        remote = os.path.join(d, "remote.git")
        git(d, "init", "-q", "--bare", "-b", "trinity", remote, e=e)
        t = time.time()
        history(remote, n, e)
        built = time.time() - t
        remote_bytes = size(os.path.join(remote, "objects"))
        pc = os.path.join(d, "PC4")
        os.makedirs(pc)
        t = time.time()
        p = subprocess.run([TRINITY, "init", "--pc", "PC4", "--remote", "file://" + remote],
                           cwd=pc, env=e, capture_output=True, text=True)
        took = time.time() - t
        if p.returncode != 0:
            sys.exit(f"trinity init failed: {p.stdout}{p.stderr}")
        git_bytes = size(os.path.join(pc, ".trinity", ".git"))
        return {"commits": n, "remote_mb": remote_bytes / 1e6, "bytes_per_commit": remote_bytes / n,
                "join_s": took, "join_git_mb": git_bytes / 1e6, "build_s": built}
    finally:
        shutil.rmtree(d, ignore_errors=True)


if not os.path.isfile(TRINITY):
    sys.exit(f"{TRINITY} is missing: cargo build --release -p trinity-cli")
sizes = [int(a) for a in sys.argv[1:]] or [10000, 15000, 100000]
print("| commits | remote, packed | bytes a commit | `trinity init` of a joining PC | its .git |")
print("|---|---|---|---|---|")
per_commit = []
for n in sizes:
    r = run(n)
    per_commit.append(r["bytes_per_commit"])
    print(f"| {n} | {r['remote_mb']:.1f} MB | {r['bytes_per_commit']:.0f} | {r['join_s']:.2f} s "
          f"| {r['join_git_mb']:.1f} MB |", flush=True)
b = per_commit[-1]
print(f"\nAt {PER_DAY} commits a day: {PER_DAY * b / 1e6:.1f} MB a day; a year without compaction "
      f"{PER_DAY * 365 * b / 1e6:.0f} MB ({PER_DAY * 365} commits).")
