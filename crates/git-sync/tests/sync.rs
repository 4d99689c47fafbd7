//! git-sync against a local bare repository, with hermetic git config: convergence of three
//! clones, a remote that goes away, kills at random points and at every fail point, stale
//! locks, invalid and unknown files, heartbeat churn. (Unix: the hermetic setup and the kills
//! use Unix paths and signals.)
#![cfg(unix)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_git-sync");

struct Fleet {
    dir: tempfile::TempDir,
}

use trinity_testkit::describe as text;

impl Fleet {
    /// A bare remote with the `trinity` branch (fleet.toml, .gitignore) and a clone per PC.
    fn new(pcs: &[&str], extra_config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let f = Self { dir };
        std::fs::create_dir_all(f.home()).expect("home");
        f.git(
            f.root(),
            &["init", "-q", "--bare", "-b", "trinity", "remote.git"],
        );
        let seed = f.root().join("seed");
        f.git(f.root(), &["init", "-q", "-b", "trinity", "seed"]);
        std::fs::write(
            seed.join("fleet.toml"),
            "format_version = 1\npcs = [\"PC1\", \"PC2\", \"PC3\"]\ncoordinator = \"PC3\"\n",
        )
        .expect("fleet");
        std::fs::write(seed.join(".gitignore"), trinity_core::layout::GITIGNORE).expect("ignore");
        f.git(&seed, &["add", "-A"]);
        f.git(
            &seed,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "-m",
                "fleet",
            ],
        );
        f.git(&seed, &["push", "-q", "../remote.git", "trinity"]);
        for pc in pcs {
            let home = f.root().join(pc);
            std::fs::create_dir_all(&home).expect("pc dir");
            f.git(
                &home,
                &[
                    "clone",
                    "-q",
                    "--branch",
                    "trinity",
                    "--single-branch",
                    "../remote.git",
                    ".trinity",
                ],
            );
            std::fs::write(
                home.join("trinity.toml"),
                format!("pc = \"{pc}\"\nstate_dir = \".trinity\"\n[sync]\nremote = \"../remote.git\"\nstale_index_lock = \"2s\"\n{extra_config}"),
            )
            .expect("config");
        }
        f
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn home(&self) -> PathBuf {
        self.root().join("home")
    }

    fn hermetic(&self, c: &mut Command) {
        trinity_testkit::hermetic(c, &self.home());
    }

    fn git(&self, dir: &Path, args: &[&str]) -> String {
        let mut c = Command::new("git");
        self.hermetic(&mut c);
        let o = c.current_dir(dir).args(args).output().expect("git");
        assert!(o.status.success(), "git {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn tree(&self, pc: &str) -> PathBuf {
        self.root().join(pc).join(".trinity")
    }

    fn sync_cmd(&self, pc: &str) -> Command {
        let mut c = Command::new(BIN);
        self.hermetic(&mut c);
        c.current_dir(self.root().join(pc))
            .env("TRINITY_CONFIG", self.root().join(pc).join("trinity.toml"));
        c
    }

    fn once(&self, pc: &str) -> Output {
        self.sync_cmd(pc).arg("--once").output().expect("git-sync")
    }

    fn once_ok(&self, pc: &str) -> Output {
        let o = self.once(pc);
        assert!(o.status.success(), "{pc}: {}", text(&o));
        o
    }

    fn write(&self, pc: &str, rel: &str, body: &str) {
        let path = self.tree(pc).join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, body).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
    }

    /// Every synced file of a PC's working tree, with its contents.
    fn files(&self, pc: &str) -> BTreeMap<String, String> {
        let tree = trinity_core::Tree::new(self.tree(pc));
        trinity_core::validate::synced_files(&tree)
            .expect("list")
            .into_iter()
            .map(|p| {
                (
                    tree.relative(&p).expect("relative"),
                    std::fs::read_to_string(&p).expect("read"),
                )
            })
            .collect()
    }

    fn head(&self, pc: &str) -> String {
        self.git(&self.tree(pc), &["rev-parse", "HEAD"])
            .trim()
            .to_owned()
    }

    fn assert_clean(&self, pc: &str) {
        let status = self.git(&self.tree(pc), &["status", "--porcelain"]);
        assert!(
            status.trim().is_empty(),
            "{pc}: git status not clean:\n{status}"
        );
    }

    fn fsck(&self, dir: &Path) {
        self.git(dir, &["fsck", "--no-progress"]);
    }

    fn log(&self, pc: &str) -> String {
        std::fs::read_to_string(self.tree(pc).join("logs/git-sync.log")).unwrap_or_default()
    }
}

fn heartbeat(pc: &str, status: &str, ts: &str) -> String {
    format!(r#"{{"format_version":1,"pc":"{pc}","status":"{status}","timestamp":"{ts}"}}"#)
}

fn claim(task: &str, pc: &str) -> String {
    format!(
        r#"{{"format_version":1,"task_id":"{task}","pc":"{pc}","claimed_at":"2026-11-21T10:00:00Z"}}"#
    )
}

fn signal(id: &str, from: &str, to: &str) -> String {
    format!(
        r#"{{"format_version":1,"id":"{id}","from_pc":"{from}","to_pc":"{to}","timestamp":"2026-11-21T10:00:00Z","task":"credit_handoff","message":"hi"}}"#
    )
}

#[test]
fn three_clones_writing_at_once_converge_with_one_claim_winner() {
    let fleet = Fleet::new(&["PC1", "PC2", "PC3"], "");
    let pcs = ["PC1", "PC2", "PC3"];
    for round in 0..3 {
        for pc in pcs {
            fleet.write(
                pc,
                &format!("heartbeat/{pc}.json"),
                &heartbeat(pc, "active", &format!("2026-11-21T10:0{round}:00Z")),
            );
            let to = if pc == "PC1" { "PC2" } else { "PC1" };
            fleet.write(
                pc,
                &format!("wake/{to}/sig-{pc}-{round}.json"),
                &signal(&format!("sig-{pc}-{round}"), pc, to),
            );
            fleet.write(pc, "claims/task-x.json", &claim("task-x", pc));
        }
        // All three at the same moment.
        let children: Vec<_> = pcs
            .iter()
            .map(|pc| {
                fleet
                    .sync_cmd(pc)
                    .arg("--once")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        for child in children {
            let o = child.wait_with_output().expect("wait");
            assert!(o.status.success(), "{}", text(&o));
        }
    }
    // Let every PC see everything.
    for _ in 0..2 {
        for pc in pcs {
            fleet.once_ok(pc);
        }
    }
    let heads: Vec<String> = pcs.iter().map(|pc| fleet.head(pc)).collect();
    assert!(
        heads.windows(2).all(|w| w[0] == w[1]),
        "heads differ: {heads:?}"
    );
    let trees: Vec<_> = pcs.iter().map(|pc| fleet.files(pc)).collect();
    assert_eq!(trees[0], trees[1]);
    assert_eq!(trees[1], trees[2]);
    let files = &trees[0];
    for pc in pcs {
        assert!(
            files.contains_key(&format!("heartbeat/{pc}.json")),
            "{pc}'s heartbeat"
        );
        for round in 0..3 {
            let to = if pc == "PC1" { "PC2" } else { "PC1" };
            assert!(
                files.contains_key(&format!("wake/{to}/sig-{pc}-{round}.json")),
                "{pc} round {round}"
            );
        }
    }
    // Exactly one claim winner, the same everywhere; every PC kept its own heartbeat.
    let winner = &files["claims/task-x.json"];
    assert!(
        pcs.iter()
            .filter(|pc| winner.contains(&format!("\"pc\":\"{pc}\"")))
            .count()
            == 1
    );
    for pc in pcs {
        assert!(
            files[&format!("heartbeat/{pc}.json")].contains("10:02:00"),
            "{pc}'s latest heartbeat"
        );
        fleet.assert_clean(pc);
        fleet.fsck(&fleet.tree(pc));
    }
    fleet.fsck(&fleet.root().join("remote.git"));
    let log = fleet.git(&fleet.tree("PC1"), &["log", "--format=%s"]);
    assert!(log.contains("claim: task-x by PC"), "{log}");
    assert!(log.contains("wake: PC2 from PC1"), "{log}");
}

#[test]
fn a_remote_that_goes_away_keeps_commits_queued_and_pushes_them_when_back() {
    let fleet = Fleet::new(&["PC1", "PC2"], "");
    let remote = fleet.root().join("remote.git");
    let away = fleet.root().join("remote-away.git");
    std::fs::rename(&remote, &away).expect("take the remote away");
    fleet.write(
        "PC1",
        "heartbeat/PC1.json",
        &heartbeat("PC1", "active", "2026-11-21T10:00:00Z"),
    );
    fleet.write("PC1", "claims/task-y.json", &claim("task-y", "PC1"));
    let o = fleet.once("PC1");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot reach the remote"),
        "{}",
        text(&o)
    );
    let state = fleet
        .sync_cmd("PC1")
        .args(["--status", "--json"])
        .output()
        .expect("status");
    let v: serde_json::Value = serde_json::from_slice(&state.stdout).expect("json");
    assert_eq!(v["commits_ahead"], 1, "{v}");
    assert!(
        v["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach")),
        "{v}"
    );
    // More work while offline.
    fleet.write("PC1", "claims/task-z.json", &claim("task-z", "PC1"));
    assert!(!fleet.once("PC1").status.success());

    std::fs::rename(&away, &remote).expect("bring it back");
    let o = fleet.once_ok("PC1");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("pushed"),
        "{}",
        text(&o)
    );
    fleet.once_ok("PC2");
    let files = fleet.files("PC2");
    for f in [
        "heartbeat/PC1.json",
        "claims/task-y.json",
        "claims/task-z.json",
    ] {
        assert!(files.contains_key(f), "{f} lost");
    }
    fleet.assert_clean("PC1");
    fleet.assert_clean("PC2");
}

/// A fixed pseudo-random sequence (the test is the same on every run).
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

fn recover(fleet: &Fleet, pc: &str) {
    // A lock left by the kill is stale after `stale_index_lock` (2 s here).
    let step = || match fleet.once(pc) {
        o if o.status.success() => Ok(()),
        o => Err(text(&o)),
    };
    trinity_testkit::poll(
        &format!("{pc} to recover"),
        Duration::from_millis(200),
        step,
        |t| t,
    );
}

#[test]
fn killed_at_random_points_and_at_every_fail_point_nothing_is_lost() {
    let fleet = Fleet::new(&["PC1", "PC2"], "");
    let mut seed = 42;
    let mut written = Vec::new();
    // Random kills (SIGKILL) while a cycle runs, with the other PC pushing in between so that
    // merges happen too.
    for i in 0..16 {
        let rel = format!("claims/task-{i}.json");
        fleet.write("PC1", &rel, &claim(&format!("task-{i}"), "PC1"));
        written.push(rel);
        let other = format!("claims/other-{i}.json");
        fleet.write("PC2", &other, &claim(&format!("other-{i}"), "PC2"));
        written.push(other);
        fleet.once_ok("PC2");
        let mut child = fleet
            .sync_cmd("PC1")
            .arg("--once")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(lcg(&mut seed) % 60));
        let _ = child.kill();
        let _ = child.wait();
    }
    // Exact points: abort at each.
    for (i, point) in [
        "sync:committed",
        "sync:head-moved",
        "sync:fetched",
        "sync:checkout-planned",
        "sync:merged",
        "sync:checked-out",
        "sync:pushing",
    ]
    .iter()
    .enumerate()
    {
        let rel = format!("claims/fp-{i}.json");
        fleet.write("PC1", &rel, &claim(&format!("fp-{i}"), "PC1"));
        written.push(rel);
        let other = format!("claims/fp-other-{i}.json");
        fleet.write("PC2", &other, &claim(&format!("fp-other-{i}"), "PC2"));
        written.push(other);
        fleet.once_ok("PC2");
        let o = fleet
            .sync_cmd("PC1")
            .arg("--once")
            .env("TRINITY_FAILPOINT", point)
            .output()
            .expect("run");
        assert!(!o.status.success(), "{point} did not abort: {}", text(&o));
        recover(&fleet, "PC1");
    }
    recover(&fleet, "PC1");
    fleet.once_ok("PC2");
    fleet.once_ok("PC1");
    for pc in ["PC1", "PC2"] {
        fleet.fsck(&fleet.tree(pc));
        fleet.assert_clean(pc);
        let files = fleet.files(pc);
        for rel in &written {
            assert!(files.contains_key(rel), "{pc}: {rel} was lost");
        }
    }
    fleet.fsck(&fleet.root().join("remote.git"));
    assert_eq!(fleet.head("PC1"), fleet.head("PC2"));
}

#[test]
fn stale_index_lock_is_removed_and_a_fresh_one_is_left_alone() {
    let fleet = Fleet::new(&["PC1"], "");
    let lock = fleet.tree("PC1").join(".git/index.lock");
    std::fs::write(&lock, "").expect("lock");
    let f = std::fs::File::options()
        .write(true)
        .open(&lock)
        .expect("open");
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(120))
        .expect("age it");
    drop(f);
    fleet.write(
        "PC1",
        "heartbeat/PC1.json",
        &heartbeat("PC1", "active", "2026-11-21T10:00:00Z"),
    );
    fleet.once_ok("PC1");
    assert!(!lock.exists(), "stale lock removed");
    assert!(
        fleet
            .log("PC1")
            .contains("removed a stale git lock left by a crash")
    );
    fleet.assert_clean("PC1");

    std::fs::write(&lock, "").expect("fresh lock");
    fleet.write(
        "PC1",
        "heartbeat/PC1.json",
        &heartbeat("PC1", "idle", "2026-11-21T10:01:00Z"),
    );
    let o = fleet.once_ok("PC1");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("pushed"),
        "{}",
        text(&o)
    );
    assert!(lock.exists(), "a fresh lock is never removed");
    assert!(fleet.log("PC1").contains("locked by another git process"));
    std::fs::remove_file(&lock).expect("unlock");

    // A branch lock only git-sync takes, left by a git-sync killed while moving the branch:
    // the next git-sync removes it at once, however young it is.
    let branch_lock = fleet.tree("PC1").join(".git/refs/heads/trinity.lock");
    std::fs::write(&branch_lock, "").expect("branch lock");
    fleet.write(
        "PC1",
        "heartbeat/PC1.json",
        &heartbeat("PC1", "active", "2026-11-21T10:02:00Z"),
    );
    let o = fleet.once_ok("PC1");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("pushed"),
        "{}",
        text(&o)
    );
    assert!(
        !branch_lock.exists(),
        "a crashed git-sync's branch lock is removed"
    );
}

#[test]
fn invalid_and_unknown_files_are_quarantined_never_committed() {
    let fleet = Fleet::new(&["PC1", "PC2"], "");
    fleet.write(
        "PC1",
        "claims/broken.json",
        "{ \"format_version\": 1, \"task_id\": ",
    );
    fleet.write("PC1", "notes/todo.txt", "remember the milk");
    fleet.write("PC1", "claims/fine.json", &claim("fine", "PC1"));
    let o = fleet.once_ok("PC1");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("quarantined claims/broken.json"), "{out}");
    assert!(out.contains("quarantined notes/todo.txt"), "{out}");
    let committed = fleet.git(
        &fleet.tree("PC1"),
        &["ls-tree", "-r", "--name-only", "HEAD"],
    );
    assert!(committed.contains("claims/fine.json"));
    assert!(
        !committed.contains("broken") && !committed.contains("todo"),
        "{committed}"
    );
    let quarantine: Vec<String> = std::fs::read_dir(fleet.tree("PC1").join("local/quarantine"))
        .expect("quarantine")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(quarantine.len(), 4, "{quarantine:?}");
    let log = fleet.log("PC1");
    assert!(
        log.contains("quarantined a file instead of committing it"),
        "{log}"
    );
    fleet.assert_clean("PC1");
    fleet.once_ok("PC2");
    assert!(!fleet.files("PC2").contains_key("claims/broken.json"));
}

#[test]
fn deletions_travel_and_a_consumed_signal_stays_consumed() {
    let fleet = Fleet::new(&["PC1", "PC2"], "");
    fleet.write("PC1", "wake/PC2/sig-1.json", &signal("sig-1", "PC1", "PC2"));
    fleet.once_ok("PC1");
    fleet.once_ok("PC2");
    assert!(fleet.tree("PC2").join("wake/PC2/sig-1.json").exists());
    std::fs::remove_file(fleet.tree("PC2").join("wake/PC2/sig-1.json")).expect("consume");
    fleet.once_ok("PC2");
    fleet.once_ok("PC1");
    assert!(!fleet.tree("PC1").join("wake/PC2/sig-1.json").exists());
    let log = fleet.git(
        &fleet.tree("PC1"),
        &["log", "-1", "--format=%s", "--", "wake"],
    );
    assert!(log.contains("wake consumed: PC2"), "{log}");
}

/// A finished task arrives as one commit that removes its claim and adds its done record. A
/// checkout wrote the files one by one (claims/ before done/), and the coordinator, reading
/// in between, saw the task neither claimed nor done and gave it out again (seen in the demo:
/// intro done by PC1 and started again on PC3). A reader holding the checkout lock shared
/// must see the tree as of one commit: the old one until it lets go, then the new one.
#[test]
fn a_reader_holding_checkouts_back_never_sees_half_a_commit() {
    let fleet = Fleet::new(&["PC1", "PC2"], "");
    fleet.write("PC1", "spawn_queue/t.json", &task("t"));
    fleet.write("PC1", "claims/t.json", &claim("t", "PC1"));
    fleet.once_ok("PC1");
    fleet.once_ok("PC2");
    let pc2 = trinity_core::Tree::new(fleet.tree("PC2"));
    assert!(pc2.claim_file(&"t".parse().expect("id")).exists());
    // PC1 finishes t: one commit, claim out, done record in.
    std::fs::remove_file(fleet.tree("PC1").join("claims/t.json")).expect("unclaim");
    fleet.write(
        "PC1",
        "done/t.json",
        r#"{"format_version":1,"task_id":"t","pc":"PC1","finished_at":"2026-11-21T11:00:00Z","outcome":"completed","summary":"ok"}"#,
    );
    fleet.once_ok("PC1");

    let claim = fleet.tree("PC2").join("claims/t.json");
    let done = fleet.tree("PC2").join("done/t.json");
    let held = trinity_core::syncstate::hold_checkouts(&pc2)
        .expect("git-sync created the checkout lock when it started");
    let mut child = fleet
        .sync_cmd("PC2")
        .arg("--once")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git-sync");
    // The branch has moved (the checkout record is written first) …
    let step = || {
        let running = child.try_wait().expect("wait").is_none();
        assert!(running, "git-sync ended before its checkout");
        pc2.sync_checkout_file().exists().then_some(()).ok_or(())
    };
    trinity_testkit::poll("git-sync's checkout", Duration::ZERO, step, |()| {
        String::new()
    });
    // … but while the reader holds on, the files stay as the old commit has them (without
    // the lock the claim is gone within a millisecond, the process done soon after).
    let watch_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < watch_until {
        assert!(
            claim.exists() && !done.exists(),
            "the checkout went on under a reader"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "git-sync finished under a reader"
        );
    }
    drop(held);
    let out = child.wait_with_output().expect("git-sync");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !claim.exists() && done.exists(),
        "the new commit is checked out"
    );
    assert!(!pc2.sync_checkout_file().exists());
}

#[test]
fn the_daemon_holds_back_heartbeat_refreshes_but_commits_a_status_change_at_once() {
    let fleet = Fleet::new(
        &["PC1"],
        "heartbeat_commit_interval = \"1h\"\npull_interval = \"100ms\"\ndebounce = \"50ms\"\n",
    );
    let mut child = trinity_testkit::spawn(
        fleet
            .sync_cmd("PC1")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let commits = || {
        fleet
            .git(&fleet.tree("PC1"), &["rev-list", "--count", "HEAD"])
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
    };
    let wait = |what: &str, ok: &dyn Fn() -> bool| trinity_testkit::wait_for(what, ok);
    let base = commits();
    fleet.write(
        "PC1",
        "heartbeat/PC1.json",
        &heartbeat("PC1", "active", "2026-11-21T10:00:00Z"),
    );
    wait("the first heartbeat", &|| commits() == base + 1);
    // Only the time stamp changes: held back. A claim written afterwards is committed, which
    // proves the daemon has looked at the tree since.
    fleet.write(
        "PC1",
        "heartbeat/PC1.json",
        &heartbeat("PC1", "active", "2026-11-21T10:00:30Z"),
    );
    fleet.write("PC1", "claims/task-q.json", &claim("task-q", "PC1"));
    wait("the claim", &|| commits() == base + 2);
    let last = fleet.git(
        &fleet.tree("PC1"),
        &["show", "--name-only", "--format=", "HEAD"],
    );
    assert_eq!(
        last.trim(),
        "claims/task-q.json",
        "the heartbeat refresh was held back"
    );
    // A status change goes at once.
    fleet.write(
        "PC1",
        "heartbeat/PC1.json",
        &heartbeat(
            "PC1",
            "handoff_accepted\",\"from_pc\":\"PC2",
            "2026-11-21T10:01:00Z",
        ),
    );
    wait("the status change", &|| commits() == base + 3);
    let subject = fleet.git(&fleet.tree("PC1"), &["log", "-1", "--format=%s"]);
    assert!(
        subject.contains("heartbeat: PC1 (handoff_accepted)"),
        "{subject}"
    );
    // The sync state says everything is on the remote.
    let state = fleet
        .sync_cmd("PC1")
        .args(["--status", "--json"])
        .output()
        .expect("status");
    let v: serde_json::Value = serde_json::from_slice(&state.stdout).expect("json");
    assert_eq!(v["commits_ahead"], 0);
    assert!(v["in_sync_at"].is_string());
    let status = trinity_testkit::stop(&mut child);
    assert!(status.success());
    assert!(fleet.log("PC1").contains("git-sync stopped"));
}

#[test]
fn status_and_help() {
    let fleet = Fleet::new(&["PC1"], "");
    let o = fleet
        .sync_cmd("PC1")
        .arg("--status")
        .output()
        .expect("status");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("commits waiting to be pushed"),
        "{}",
        text(&o)
    );
    let o = fleet.sync_cmd("PC1").arg("--help").output().expect("help");
    assert!(String::from_utf8_lossy(&o.stdout).contains("Usage"));

    // A corrupt state file is reported and set aside, never shown as "never synced".
    let state = fleet.tree("PC1").join("local/git-sync/state.json");
    std::fs::create_dir_all(state.parent().expect("dir")).expect("mkdir");
    std::fs::write(&state, "{not json").expect("write");
    let o = fleet
        .sync_cmd("PC1")
        .arg("--status")
        .output()
        .expect("status");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        err.contains("state.json is unreadable") && err.contains("state.json.corrupt"),
        "{}",
        text(&o)
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("never"));
    assert!(state.with_extension("json.corrupt").is_file());
}

fn task(id: &str) -> String {
    format!(
        r#"{{"format_version":1,"id":"{id}","priority":"normal","description":"task {id}","created_at":"2026-11-21T10:00:00Z","created_by":"PC1"}}"#
    )
}

fn pack_count(tree: &Path) -> usize {
    git_sync::repo::ObjectCounts::read(&tree.join(".git/objects")).packs
}

/// The bug that stopped a fleet within its first hour: every fetch adds a pack file, and the
/// long-lived repository handle's table of pack indices was sized when it was opened, so
/// from about the 33rd fetch on every cycle failed. One daemon here takes 320 fetches of new
/// commits (and commits and pushes of its own every 20 rounds), while another process
/// repacks its repository twice under it; every change must arrive, no cycle may fail, and
/// the pack files stay bounded.
#[test]
fn one_daemon_takes_hundreds_of_fetches_without_a_failed_cycle_and_packs_stay_bounded() {
    const ROUNDS: usize = 320;
    let fleet = Fleet::new(
        &["PC2"],
        "pull_interval = \"5s\"\ndebounce = \"20ms\"\nheartbeat_commit_interval = \"1h\"\n",
    );
    // PC1's side: a plain clone committing and pushing one task file a round.
    let writer = fleet.root().join("writer");
    fleet.git(
        fleet.root(),
        &["clone", "-q", "--branch", "trinity", "remote.git", "writer"],
    );
    let mut daemon = trinity_testkit::spawn(
        fleet
            .sync_cmd("PC2")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let pc2 = fleet.tree("PC2");
    let mut max_packs = 0;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let id = format!("task-{round:04}");
        let rel = format!("spawn_queue/{id}.json");
        if round % 20 == 10 {
            // PC2 changes something of its own: committed and pushed by the same daemon.
            let claim_rel = format!("claims/{id}.json");
            fleet.write("PC2", &claim_rel, &claim(&id, "PC2"));
            trinity_testkit::poll(
                &format!("round {round}: PC2's claim on the remote"),
                Duration::from_millis(10),
                || {
                    fleet.git(&writer, &["pull", "-q", "--rebase"]);
                    writer.join(&claim_rel).exists().then_some(()).ok_or(())
                },
                |()| fleet.log("PC2"),
            );
        }
        if round % 150 == 75 {
            // Another process consolidates the packs the daemon's handle knows, and the
            // remote's loose objects into a pack.
            fleet.git(&pc2, &["repack", "-a", "-d", "-q"]);
            fleet.git(&fleet.root().join("remote.git"), &["repack", "-d", "-q"]);
        }
        let path = writer.join(&rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, task(&id)).expect("task");
        fleet.git(&writer, &["add", "-A"]);
        fleet.git(&writer, &["commit", "-q", "-m", &format!("task {id}")]);
        fleet.git(&writer, &["push", "-q", "origin", "trinity"]);
        trinity_testkit::poll(
            &format!("round {round}: {rel} on PC2"),
            Duration::from_millis(2),
            || pc2.join(&rel).exists().then_some(()).ok_or(()),
            |()| format!("({} packs)\n{}", pack_count(&pc2), fleet.log("PC2")),
        );
        max_packs = max_packs.max(pack_count(&pc2));
    }
    let took = started.elapsed();
    // Watching the remote reads its branch, never its objects: no file of it stays mapped
    // (they grew with every push, and a Windows share cannot delete a mapped pack).
    #[cfg(target_os = "linux")]
    {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", daemon.id())).expect("maps");
        let remote = fleet.root().join("remote.git");
        let mapped: Vec<&str> = maps
            .lines()
            .filter(|l| l.contains(remote.to_str().expect("utf-8 path")))
            .collect();
        assert!(
            mapped.is_empty(),
            "the remote's files stay mapped:\n{}",
            mapped.join("\n")
        );
    }
    let status = trinity_testkit::stop(&mut daemon);
    assert!(status.success(), "daemon exit: {status:?}");
    let log = fleet.log("PC2");
    assert!(!log.contains("sync cycle failed"), "a cycle failed:\n{log}");
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(pc2.join("local/git-sync/state.json")).expect("state"),
    )
    .expect("state json");
    assert!(state["last_error"].is_null(), "{state}");
    assert_eq!(state["reopens"], 0, "no cycle needed a second try: {state}");
    assert!(
        state["maintenance_runs"].as_u64().unwrap_or(0) >= 5,
        "the daemon consolidated its packs: {state}"
    );
    // Sampled after each arrival; maintenance runs right after the cycle that crossed the bound.
    assert!(
        max_packs <= git_sync::repo::MAX_PACKS + 2,
        "packs reached {max_packs}"
    );
    for round in 0..ROUNDS {
        let rel = format!("spawn_queue/task-{round:04}.json");
        assert_eq!(
            std::fs::read_to_string(pc2.join(&rel)).expect("arrived"),
            task(&format!("task-{round:04}"))
        );
    }
    fleet.assert_clean("PC2");
    fleet.fsck(&pc2);
    fleet.fsck(&fleet.root().join("remote.git"));
    eprintln!("{ROUNDS} rounds in {took:?}, at most {max_packs} packs");
}

fn commit_count(fleet: &Fleet, dir: &Path, rev: &str) -> u64 {
    fleet
        .git(dir, &["rev-list", "--count", rev])
        .trim()
        .parse()
        .expect("count")
}

/// The history is compacted when it passes `compact_after_commits`; a PC that was offline
/// meanwhile, with commits it could not push, carries them onto the new history, and a file
/// consumed by another PC meanwhile stays consumed.
#[test]
fn history_is_compacted_and_a_pc_offline_meanwhile_keeps_its_unpushed_changes() {
    let fleet = Fleet::new(&["PC1", "PC2", "PC3"], "compact_after_commits = 20\n");
    let remote = fleet.root().join("remote.git");
    fleet.write("PC3", "wake/PC2/sig-a.json", &signal("sig-a", "PC3", "PC2"));
    fleet.once_ok("PC3");
    fleet.once_ok("PC2");
    fleet.once_ok("PC1");
    // PC3 goes offline and goes on working.
    let pc3 = fleet.tree("PC3");
    fleet.git(
        &pc3,
        &["config", "remote.origin.url", "/nonexistent/remote.git"],
    );
    fleet.write(
        "PC3",
        "heartbeat/PC3.json",
        &heartbeat("PC3", "active", "2026-11-21T11:00:00Z"),
    );
    fleet.write("PC3", "claims/offline.json", &claim("offline", "PC3"));
    fleet.write("PC3", "spawn_queue/offline.json", &task("offline"));
    assert!(!fleet.once("PC3").status.success(), "PC3 is offline");
    // Meanwhile PC2 consumes the signal, and PC1 makes history until it is compacted
    // (PC1 is not the coordinator: it compacts past 1.5 x 20 commits).
    std::fs::remove_file(fleet.tree("PC2").join("wake/PC2/sig-a.json")).expect("consume");
    fleet.once_ok("PC2");
    let mut written = vec![
        "claims/offline.json".to_owned(),
        "spawn_queue/offline.json".to_owned(),
    ];
    let mut compacted = false;
    for i in 0..40 {
        let rel = format!("claims/pc1-{i}.json");
        fleet.write("PC1", &rel, &claim(&format!("pc1-{i}"), "PC1"));
        written.push(rel);
        let o = fleet.once_ok("PC1");
        if String::from_utf8_lossy(&o.stdout).contains("dropped the history") {
            compacted = true;
            break;
        }
    }
    assert!(
        compacted,
        "PC1 compacted the history:\n{}",
        fleet.log("PC1")
    );
    assert_eq!(commit_count(&fleet, &remote, "trinity"), 1);
    let pc1 = fleet.tree("PC1");
    assert_eq!(commit_count(&fleet, &pc1, "HEAD"), 1);
    // PC1 keeps nothing of the old history: every reference reaches the one commit, and no
    // object is left outside it.
    assert_eq!(
        fleet.git(&pc1, &["rev-list", "--all", "--count"]).trim(),
        "1"
    );
    let unreachable = fleet.git(
        &pc1,
        &["fsck", "--unreachable", "--no-reflogs", "--no-progress"],
    );
    assert!(unreachable.trim().is_empty(), "{unreachable}");
    // PC2 follows: same files, the short history.
    fleet.once_ok("PC2");
    assert_eq!(fleet.files("PC2"), fleet.files("PC1"));
    assert_eq!(commit_count(&fleet, &fleet.tree("PC2"), "HEAD"), 1);
    // PC3 comes back: its unpushed work is carried over, the consumed signal stays consumed.
    fleet.git(
        &pc3,
        &[
            "config",
            "remote.origin.url",
            remote.to_str().expect("utf-8"),
        ],
    );
    fleet.once_ok("PC3");
    fleet.once_ok("PC1");
    fleet.once_ok("PC2");
    let files = fleet.files("PC1");
    for pc in ["PC2", "PC3"] {
        assert_eq!(fleet.files(pc), files, "{pc} differs from PC1");
    }
    for rel in &written {
        assert!(files.contains_key(rel), "{rel} was lost");
    }
    assert!(
        files["heartbeat/PC3.json"].contains("2026-11-21T11:00:00Z"),
        "PC3's own heartbeat is PC3's latest"
    );
    assert!(
        !files.contains_key("wake/PC2/sig-a.json"),
        "a consumed signal came back"
    );
    assert!(commit_count(&fleet, &remote, "trinity") <= 3);
    assert!(
        commit_count(&fleet, &pc3, "HEAD") <= 3,
        "PC3 left the old history"
    );
    for pc in ["PC1", "PC2", "PC3"] {
        fleet.fsck(&fleet.tree(pc));
        fleet.assert_clean(pc);
    }
    fleet.fsck(&remote);
    // A PC joining now clones the short history only.
    fleet.git(
        fleet.root(),
        &["clone", "-q", "--branch", "trinity", "remote.git", "joiner"],
    );
    assert!(commit_count(&fleet, &fleet.root().join("joiner"), "HEAD") <= 3);
}

/// A compaction killed at each of its steps loses nothing: the other PC's change pushed
/// meanwhile survives, and both PCs end on one short history.
#[test]
fn a_compaction_killed_at_any_step_loses_nothing() {
    for point in ["compact:committed", "compact:pushed", "compact:refs-moved"] {
        let fleet = Fleet::new(&["PC1", "PC2"], "compact_after_commits = 10\n");
        let mut written = Vec::new();
        let uncompacted = |pc: &str| {
            let o = fleet
                .sync_cmd(pc)
                .arg("--once")
                .env("TRINITY_SYNC__COMPACT_AFTER_COMMITS", "0")
                .output()
                .expect("once");
            assert!(o.status.success(), "{}", text(&o));
        };
        for i in 0..16 {
            let rel = format!("claims/a-{i}.json");
            fleet.write("PC1", &rel, &claim(&format!("a-{i}"), "PC1"));
            written.push(rel);
            uncompacted("PC1");
        }
        uncompacted("PC2");
        fleet.write("PC2", "claims/b.json", &claim("b", "PC2"));
        written.push("claims/b.json".to_owned());
        let o = fleet
            .sync_cmd("PC1")
            .arg("--once")
            .env("TRINITY_FAILPOINT", point)
            .output()
            .expect("run");
        assert!(!o.status.success(), "{point} did not abort: {}", text(&o));
        uncompacted("PC2");
        recover(&fleet, "PC1");
        fleet.once_ok("PC2");
        fleet.once_ok("PC1");
        let remote = fleet.root().join("remote.git");
        assert!(
            commit_count(&fleet, &remote, "trinity") <= 3,
            "{point}: the history was compacted"
        );
        for pc in ["PC1", "PC2"] {
            let files = fleet.files(pc);
            for rel in &written {
                assert!(files.contains_key(rel), "{point}: {pc} lost {rel}");
            }
            fleet.fsck(&fleet.tree(pc));
            fleet.assert_clean(pc);
        }
        assert_eq!(fleet.head("PC1"), fleet.head("PC2"), "{point}");
        fleet.fsck(&remote);
    }
}

#[test]
fn a_repository_removed_under_the_daemon_is_reported_once_not_every_tick() {
    let fleet = Fleet::new(&["PC1"], "pull_interval = \"50ms\"\n");
    let mut daemon = trinity_testkit::spawn(
        fleet
            .sync_cmd("PC1")
            .env("TRINITY_LOG", "git_sync=debug,info")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    trinity_testkit::wait_for("git-sync started", || {
        fleet.log("PC1").contains("git-sync started")
    });
    std::fs::remove_dir_all(fleet.tree("PC1").join(".git")).expect("remove .git");
    // Every tick fails (in the debug log); the lasting error is said once. (The removal can
    // land mid-cycle and fail that one cycle another way first: a second warning, at most.)
    let log = || fleet.log("PC1");
    let lines = |what: &[&str]| {
        log()
            .lines()
            .filter(|l| what.iter().all(|w| l.contains(w)))
            .count()
    };
    trinity_testkit::wait_for("ten failed ticks", || {
        lines(&["the local repository still fails"]) >= 10
    });
    let lasting = ["sync cycle failed", "it is closed for maintenance"];
    assert_eq!(lines(&lasting), 1, "{}", log());
    let warned = lines(&["the local repository failed; opening it afresh"]);
    assert!((1..=2).contains(&warned), "{}", log());
    trinity_testkit::stop(&mut daemon);
}
