//! The `trinity` binary end to end: real git against a local bare repository, hermetic git
//! configuration, and waits that poll a condition with a deadline.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

struct TestEnv {
    dir: tempfile::TempDir,
}

impl TestEnv {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `trinity` with no configuration leaking in from the machine.
    fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trinity"));
        cmd.current_dir(self.dir.path());
        hermetic(&mut cmd, self.dir.path());
        cmd
    }

    fn trinity(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run trinity")
    }

    fn git(&self, dir: &Path, args: &[&str]) -> String {
        let mut cmd = Command::new("git");
        hermetic(&mut cmd, self.dir.path());
        let out = cmd.current_dir(dir).args(args).output().expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `trinity init` for one PC, with its own state dir and config under `{pc}/`.
    fn init(&self, pc: &str, extra: &[&str]) -> Output {
        let state = format!("{pc}/.trinity");
        let config = format!("{pc}/trinity.toml");
        let mut args = vec![
            "init",
            "--pc",
            pc,
            "--remote",
            "remote.git",
            "--state-dir",
            &state,
            "--config",
            &config,
        ];
        args.extend_from_slice(extra);
        self.trinity(&args)
    }
}

/// The test kit's hermetic environment, with git's dates fixed.
fn hermetic(cmd: &mut Command, home: &Path) {
    trinity_testkit::hermetic(cmd, home)
        .env("GIT_AUTHOR_DATE", "2025-11-23T16:30:00Z")
        .env("GIT_COMMITTER_DATE", "2025-11-23T16:30:00Z");
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "expected success, got {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

#[test]
fn three_pcs_init_against_one_remote_and_share_one_branch() {
    let env = TestEnv::new();
    let out = ok(&env.init("PC1", &["--fleet", "PC1,PC2,PC3", "--create-remote"]));
    assert!(out.contains("created the fleet"), "{out}");
    // PC2 and PC3 join without naming the fleet: they get the existing one.
    assert!(ok(&env.init("PC2", &[])).contains("cloned"));
    assert!(ok(&env.init("PC3", &["--coordinator", "PC1"])).contains("cloned"));

    let remote_head = env.git(
        &env.path("remote.git"),
        &["rev-parse", "refs/heads/trinity"],
    );
    let fleet = std::fs::read_to_string(env.path("PC1/.trinity/fleet.toml")).expect("fleet");
    assert!(
        fleet.contains("pcs = [\"PC1\", \"PC2\", \"PC3\"]")
            && fleet.contains("coordinator = \"PC3\""),
        "{fleet}"
    );
    for pc in ["PC1", "PC2", "PC3"] {
        let tree = env.path(&format!("{pc}/.trinity"));
        assert_eq!(env.git(&tree, &["rev-parse", "HEAD"]), remote_head, "{pc}");
        assert_eq!(
            env.git(&tree, &["symbolic-ref", "--short", "HEAD"]),
            "trinity"
        );
        // A joining PC's encryption key waits for git-sync to publish it; the founder's went
        // out with the fleet.
        let waiting = if pc == "PC1" {
            String::new()
        } else {
            format!("?? recipients/{pc}.json")
        };
        assert_eq!(
            env.git(&tree, &["status", "--porcelain"]),
            waiting,
            "{pc} tree is dirty"
        );
        assert_eq!(
            std::fs::read_to_string(tree.join("fleet.toml")).expect("fleet"),
            fleet
        );
        let ignore = std::fs::read_to_string(tree.join(".gitignore")).expect("gitignore");
        assert!(ignore.contains("/local/") && ignore.contains("/logs/"));
        let config =
            std::fs::read_to_string(env.path(&format!("{pc}/trinity.toml"))).expect("config");
        assert!(config.contains(&format!("pc = \"{pc}\"")), "{config}");
        // The tree validates, and the written config loads without warnings.
        ok(&env.trinity(&["validate", tree.to_str().expect("utf8")]));
        let status = ok(&env.trinity(&["--config", &format!("{pc}/trinity.toml"), "status"]));
        assert!(
            status.contains("Fleet: PC1 -> PC2 -> PC3 -> PC1"),
            "{status}"
        );
        assert!(
            status.contains(&format!("{pc}*")),
            "this PC is marked: {status}"
        );
    }
    assert_eq!(
        env.git(&env.path("remote.git"), &["rev-list", "--count", "trinity"]),
        "1"
    );

    // Running it again changes nothing: no commit, no file rewritten.
    let config_before = std::fs::read(env.path("PC1/trinity.toml")).expect("config");
    let again = ok(&env.init("PC1", &["--fleet", "PC1,PC2,PC3"]));
    assert!(
        again.contains("already set up") && again.contains("unchanged"),
        "{again}"
    );
    assert_eq!(
        std::fs::read(env.path("PC1/trinity.toml")).expect("config"),
        config_before
    );
    assert_eq!(
        env.git(
            &env.path("remote.git"),
            &["rev-parse", "refs/heads/trinity"]
        ),
        remote_head
    );
    assert_eq!(
        env.git(&env.path("PC1/.trinity"), &["status", "--porcelain"]),
        ""
    );
}

#[test]
fn a_joining_pc_with_another_fleet_gets_the_existing_one() {
    let env = TestEnv::new();
    ok(&env.init("PC1", &["--fleet", "PC1,PC2,PC3", "--create-remote"]));
    let out = env.init("PC2", &["--fleet", "PC2,PC1"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(&out);
    assert!(
        stderr.contains("already has the fleet PC1, PC2, PC3"),
        "{stderr}"
    );
}

#[test]
fn concurrent_inits_on_an_empty_remote_converge_on_one_fleet() {
    let env = TestEnv::new();
    ok(&env.trinity(&[
        "init",
        "--pc",
        "PC1",
        "--remote",
        "remote.git",
        "--state-dir",
        "seed/.trinity",
        "--config",
        "seed/t.toml",
        "--fleet",
        "PC1,PC2",
        "--create-remote",
    ]));
    // A second, empty remote for the race.
    env.git(env.dir.path(), &["init", "--bare", "-q", "race.git"]);
    let spawn = |pc: &str, fleet: &str, coord: &str| {
        let state = format!("{pc}/.trinity");
        let config = format!("{pc}/trinity.toml");
        env.cmd()
            .args([
                "init",
                "--pc",
                pc,
                "--remote",
                "race.git",
                "--state-dir",
                &state,
                "--config",
                &config,
            ])
            .args(["--fleet", fleet, "--coordinator", coord])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let a = spawn("PC1", "PC1,PC2", "PC1");
    let b = spawn("PC2", "PC1,PC2", "PC2");
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    ok(&a);
    ok(&b);
    let fa = std::fs::read_to_string(env.path("PC1/.trinity/fleet.toml")).expect("fleet a");
    let fb = std::fs::read_to_string(env.path("PC2/.trinity/fleet.toml")).expect("fleet b");
    assert_eq!(fa, fb, "both PCs must end on the winner's fleet");
    let head = env.git(&env.path("race.git"), &["rev-parse", "refs/heads/trinity"]);
    assert_eq!(
        env.git(&env.path("PC1/.trinity"), &["rev-parse", "HEAD"]),
        head
    );
    assert_eq!(
        env.git(&env.path("PC2/.trinity"), &["rev-parse", "HEAD"]),
        head
    );
}

#[test]
fn init_refuses_bad_input_clearly() {
    let env = TestEnv::new();
    let msg = fails(&env.init("PC1", &["--fleet", "PC1,PC2"]));
    assert!(
        msg.contains("does not exist") && msg.contains("--create-remote"),
        "{msg}"
    );

    let msg = fails(&env.init("PC1", &["--create-remote"]));
    assert!(msg.contains("pass --fleet"), "{msg}");

    let msg = fails(&env.init("../PC1", &["--fleet", "PC1"]));
    assert!(msg.contains("`..`"), "{msg}");

    let msg = fails(&env.init("PC1", &["--fleet", "PC1,PC2", "--coordinator", "PC7"]));
    assert!(msg.contains("coordinator PC7 is not one of pcs"), "{msg}");

    ok(&env.init("PC1", &["--fleet", "PC1,PC2"]));
    let msg = fails(&env.init("PC4", &[]));
    assert!(
        msg.contains("PC4 is not a member of this fleet (PC1, PC2)"),
        "{msg}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(env.path("PC4"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "a failed init left {leftovers:?} behind"
    );

    // A repository without `origin` (an init killed half way) is named as such.
    std::fs::create_dir_all(env.path("PC5/.trinity")).expect("mkdir");
    env.git(&env.path("PC5/.trinity"), &["init", "-q"]);
    let msg = fails(&env.init("PC5", &[]));
    assert!(msg.contains("without an `origin` remote"), "{msg}");

    // PC2's config file already says PC1: refuse rather than overwrite.
    std::fs::create_dir_all(env.path("PC2")).expect("mkdir");
    std::fs::copy(env.path("PC1/trinity.toml"), env.path("PC2/trinity.toml")).expect("copy");
    let msg = fails(&env.init("PC2", &[]));
    assert!(
        msg.contains("already exists and differs") && msg.contains("pc is PC1"),
        "{msg}"
    );
    assert!(
        !env.path("PC2/.trinity").exists(),
        "nothing is cloned when the config conflicts"
    );
    let msg = fails(&env.trinity(&[
        "init",
        "--pc",
        "PC2",
        "--remote",
        "other.git",
        "--create-remote",
        "--fleet",
        "PC1,PC2",
        "--state-dir",
        "PC2/.trinity",
        "--config",
        "PC2/trinity.toml",
    ]));
    assert!(msg.contains("already exists and differs"), "{msg}");
    assert!(
        !env.path("other.git").exists(),
        "no remote is created when the config conflicts"
    );

    std::fs::create_dir_all(env.path("PC3/.trinity")).expect("mkdir");
    std::fs::write(env.path("PC3/.trinity/notes.txt"), "mine").expect("write");
    let msg = fails(&env.init("PC3", &[]));
    assert!(
        msg.contains("is not empty and is not a state tree"),
        "{msg}"
    );
}

#[test]
fn validate_accepts_the_valid_fixtures() {
    let env = TestEnv::new();
    let valid = fixtures().join("valid");
    let out = ok(&env.trinity(&["validate", valid.to_str().expect("utf8")]));
    assert!(out.contains("all valid"), "{out}");
    assert!(
        out.contains("fields unknown to this version, kept: ")
            && out.contains("current_work.branch"),
        "{out}"
    );
}

#[derive(Deserialize)]
struct Expectation {
    file: String,
    expect: String,
}

#[test]
fn validate_rejects_every_invalid_fixture_naming_file_and_problem() {
    let env = TestEnv::new();
    let dir = fixtures().join("invalid");
    let cases: BTreeMap<String, Expectation> =
        toml::from_str(&std::fs::read_to_string(dir.join("expectations.toml")).expect("read"))
            .expect("parse");
    for (name, case) in cases {
        let file = dir.join(&name).join(&case.file);
        let out = env.trinity(&["validate", file.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().next().unwrap_or_default();
        assert!(line.starts_with(&*file.to_string_lossy()), "{name}: {line}");
        assert!(
            line.contains(&case.expect),
            "{name}: {line:?} does not say {:?}",
            case.expect
        );
    }
    let msg = fails(&env.trinity(&["validate", "no/such/file.json"]));
    assert!(msg.contains("does not exist"), "{msg}");
}

#[test]
fn status_json_reads_the_tree() {
    let env = TestEnv::new();
    let valid = fixtures().join("valid");
    let out = ok(&env.trinity(&[
        "status",
        "--json",
        "--state-dir",
        valid.to_str().expect("utf8"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["rotation"], serde_json::json!(["PC1", "PC2", "PC3"]));
    assert_eq!(v["pcs"][0]["heartbeat"], "handoff_initiated");
    assert_eq!(v["pcs"][0]["credit"], "EXHAUSTED");
    assert_eq!(v["pcs"][1]["state"], "ACTIVE");
    assert_eq!(v["pending_handoffs"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["queue"]["tasks"], 4);
    assert_eq!(v["problems"], serde_json::json!([]));

    let table = ok(&env.trinity(&["status", "--state-dir", valid.to_str().expect("utf8")]));
    for want in [
        "PC1 -> PC2 (credit exhaustion), 1 task(s)",
        "PC2 <- PC1 credit_handoff",
        "Coordinator: PC3 (lease epoch 7",
    ] {
        assert!(table.contains(want), "missing {want:?} in\n{table}");
    }

    let msg = fails(&env.trinity(&["status", "--state-dir", "missing"]));
    assert!(msg.contains("run `trinity init` first"), "{msg}");
}

#[test]
fn status_reports_invalid_files_without_failing() {
    let env = TestEnv::new();
    ok(&env.init("PC1", &["--fleet", "PC1,PC2", "--create-remote"]));
    std::fs::create_dir_all(env.path("PC1/.trinity/heartbeat")).expect("mkdir");
    std::fs::write(env.path("PC1/.trinity/heartbeat/PC2.json"), "{\"pc\":").expect("write");
    let out = ok(&env.trinity(&["--config", "PC1/trinity.toml", "status"]));
    assert!(
        out.contains("Problems: 1") && out.contains("heartbeat/PC2.json: is not valid JSON"),
        "{out}"
    );
}

#[test]
fn logs_prints_the_last_lines_and_follows() {
    let env = TestEnv::new();
    let logs = env.path("tree/logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let log = logs.join("git-sync.log");
    std::fs::write(&log, "one\ntwo\nthree\n").expect("write");
    let out = ok(&env.trinity(&["logs", "git-sync", "-n", "2", "--state-dir", "tree"]));
    assert_eq!(out, "two\nthree\n");

    let msg = fails(&env.trinity(&["logs", "coordinator", "--state-dir", "tree"]));
    assert!(msg.contains("logs present: git-sync"), "{msg}");

    let mut child = trinity_testkit::spawn(
        env.cmd()
            .args(["logs", "sync", "-f", "-n", "1", "--state-dir", "tree"])
            .stdout(Stdio::piped()),
    );
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.expect("line")).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let next = |rx: &mpsc::Receiver<String>| {
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    };
    assert_eq!(next(&rx).expect("first line"), "three");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open")
        .write_all(b"four\n")
        .expect("append");
    assert_eq!(next(&rx).expect("followed line"), "four");
    // A roll-over: the file is replaced by a new, shorter one.
    std::fs::rename(&log, logs.join("git-sync.1.log")).expect("roll");
    std::fs::write(&log, "five\n").expect("new file");
    assert_eq!(next(&rx).expect("line after roll-over"), "five");
    child.kill().expect("kill");
    child.wait().expect("wait");
}

#[test]
fn every_command_has_help() {
    let env = TestEnv::new();
    for cmd in [
        &["init"][..],
        &["validate"],
        &["status"],
        &["logs"],
        &["task"],
        &["task", "add"],
        &["task", "list"],
        &["task", "show"],
        &["task", "import"],
        &["work"],
        &["work", "next"],
        &["work", "progress"],
        &["work", "done"],
        &["agent"],
        &["agent", "setup"],
        &["agent", "context"],
        &["agent", "checkpoint"],
        &["agent", "stop-failure"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = ok(&env.trinity(&args));
        assert!(out.contains("Usage: trinity"), "{cmd:?}: {out}");
    }
    let out = ok(&env.trinity(&["--help"]));
    for cmd in [
        "init", "validate", "status", "logs", "task", "work", "agent",
    ] {
        assert!(out.contains(cmd), "{out}");
    }
}

#[test]
fn tasks_are_added_listed_shown_and_imported_and_bad_ones_refused_whole() {
    let env = TestEnv::new();
    ok(&env.init(
        "PC1",
        &[
            "--create-remote",
            "--fleet",
            "PC1,PC2,PC3",
            "--coordinator",
            "PC3",
        ],
    ));
    let t = |args: &[&str]| {
        let mut all = vec!["--config", "PC1/trinity.toml", "task"];
        all.extend_from_slice(args);
        env.trinity(&all)
    };
    let out = ok(&t(&[
        "add",
        "intro",
        "-d",
        "Write the introduction",
        "-p",
        "high",
    ]));
    assert!(out.contains("queued intro (high): queued"), "{out}");
    let out = ok(&t(&[
        "add",
        "courses",
        "-d",
        "Courses",
        "--depends-on",
        "intro",
    ]));
    assert!(out.contains("blocked by intro"), "{out}");
    // Bad input: one clear line each, nothing written.
    for (args, says) in [
        (
            &["add", "intro", "-d", "again"][..],
            "task intro already exists",
        ),
        (
            &["add", "x", "-d", "x", "--depends-on", "nope"][..],
            "depends on nope, which does not exist",
        ),
        (&["add", "a/b", "-d", "x"][..], "is not a valid task id"),
        (&["add", "y", "-d", "  "][..], "the description is empty"),
        (
            &["add", "z", "-d", "x", "-p", "urgent"][..],
            "invalid value",
        ),
        (&["show", "missing"][..], "no task missing in the queue"),
    ] {
        let err = fails(&t(args));
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // An import is all or nothing: a cycle refuses every task of the file.
    std::fs::write(
        env.path("cycle.json"),
        r#"[{"id":"x1","description":"a","depends_on":["x2"]},{"id":"x2","description":"b","depends_on":["x1"]},{"id":"x3","description":"c"}]"#,
    )
    .expect("write");
    let err = fails(&t(&["import", "cycle.json"]));
    assert!(err.contains("dependency cycle: x1 → x2 → x1"), "{err}");
    assert!(!env.path("PC1/.trinity/spawn_queue/x3.json").exists());
    std::fs::write(
        env.path("tasks.toml"),
        "[[task]]\nid = \"api\"\ndescription = \"Build the API\"\npriority = \"critical\"\nrole = \"backend\"\n\n[[task]]\nid = \"ui\"\ndescription = \"Build the UI\"\ndepends_on = [\"api\"]\nrole = \"frontend\"\n",
    )
    .expect("write");
    let out = ok(&t(&["import", "tasks.toml"]));
    assert!(out.contains("2 tasks added"), "{out}");
    // The list: ready work first by priority, then blocked work.
    let out = ok(&t(&["list"]));
    let order: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(order, ["api", "intro", "courses", "ui"], "{out}");
    let rows: serde_json::Value = serde_json::from_str(&ok(&t(&["list", "--json"]))).expect("json");
    assert_eq!(rows[0]["id"], "api");
    assert_eq!(rows[0]["role"], "backend");
    assert_eq!(rows[3]["state"]["state"], "blocked");
    assert_eq!(rows[3]["state"]["waiting_on"][0], "api");
    let out = ok(&t(&["show", "courses"]));
    assert!(out.contains("depends on:  intro (queued)"), "{out}");
    // Every file written is valid where it is.
    ok(&env.trinity(&["validate", "PC1/.trinity"]));
}

/// PC1 of a three-PC fleet, with `sync.mode = "none"` (claims count as soon as they are
/// written) and `extra` appended to its trinity.toml.
fn pc_on_its_own(extra: &str) -> TestEnv {
    let env = TestEnv::new();
    ok(&env.init(
        "PC1",
        &[
            "--create-remote",
            "--fleet",
            "PC1,PC2,PC3",
            "--coordinator",
            "PC3",
        ],
    ));
    let config = env.path("PC1/trinity.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("[sync]\n", "[sync]\nmode = \"none\"\n") + extra,
    )
    .expect("config");
    env
}

#[test]
fn work_next_progress_done_on_one_pc_and_bad_reports_refused() {
    let env = pc_on_its_own("");
    let t = |args: &[&str]| {
        let mut all = vec!["--config", "PC1/trinity.toml"];
        all.extend_from_slice(args);
        env.trinity(&all)
    };
    let out = t(&["work", "next"]);
    assert_eq!(out.status.code(), Some(3), "nothing to do: {out:?}");
    ok(&t(&["task", "add", "low", "-d", "later", "-p", "low"]));
    ok(&t(&["task", "add", "high", "-d", "first", "-p", "high"]));
    let out = ok(&t(&["work", "next"]));
    assert!(out.starts_with("claimed: high"), "{out}");
    let out = ok(&t(&["work", "next"]));
    assert!(out.starts_with("current work: high"), "asked twice: {out}");
    let out = ok(&t(&[
        "work",
        "progress",
        "--progress",
        "40",
        "--done",
        "outline",
        "--next",
        "body",
    ]));
    assert!(
        out.contains("high: 40%; done: outline; next: body"),
        "{out}"
    );
    for (args, says) in [
        (
            &["work", "progress", "--progress", "150"][..],
            "outside 0-100%",
        ),
        (
            &["work", "progress", "--progress", "-5%"][..],
            "outside 0-100%",
        ),
        (
            &["work", "progress", "--task", "low", "--progress", "5"][..],
            "PC1 holds no claim on task low",
        ),
        (
            &["work", "progress", "--task", "nope", "--progress", "5"][..],
            "no task nope in the queue",
        ),
        (&["work", "progress"][..], "nothing to report"),
    ] {
        let err = fails(&t(args));
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let instance: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.path("PC1/.trinity/instances/PC1.json")).expect("instance"),
    )
    .expect("json");
    assert_eq!(instance["state"], "ACTIVE");
    assert_eq!(instance["current_work"]["progress"], "40%");
    ok(&t(&["work", "done", "--summary", "finished"]));
    assert!(env.path("PC1/.trinity/done/high.json").is_file());
    assert!(
        !env.path("PC1/.trinity/claims/high.json").exists(),
        "the claim is released"
    );
    let err = fails(&t(&["work", "done", "--task", "high"]));
    assert!(err.contains("task high is already done"), "{err}");
    let out = ok(&t(&["work", "next", "--json"]));
    let task: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(task["id"], "low");
    ok(&t(&["work", "done"]));
    let instance: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.path("PC1/.trinity/instances/PC1.json")).expect("instance"),
    )
    .expect("json");
    assert_eq!(instance["state"], "STANDBY", "{instance}");
    assert_eq!(t(&["work", "next"]).status.code(), Some(3));
    ok(&env.trinity(&["validate", "PC1/.trinity"]));
}

#[test]
fn agent_hooks_are_set_up_merged_once_and_report() {
    let env = pc_on_its_own("[agent]\nworkdir = \"project\"\n");
    std::fs::create_dir_all(env.path("PC1/project/.claude")).expect("project");
    // The user's own settings, with a hook of their own.
    std::fs::write(
        env.path("PC1/project/.claude/settings.local.json"),
        r#"{"model": "opus", "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}]}}"#,
    )
    .expect("settings");
    let t = |args: &[&str]| {
        let mut all = vec!["--config", "PC1/trinity.toml"];
        all.extend_from_slice(args);
        env.trinity(&all)
    };
    let printed: serde_json::Value =
        serde_json::from_str(&ok(&t(&["agent", "setup"]))).expect("json");
    assert!(
        printed["hooks"]["SessionStart"][0]["hooks"][0]["command"]
            .as_str()
            .is_some_and(|c| c.ends_with("agent context")),
        "{printed}"
    );
    ok(&t(&["agent", "setup", "--write"]));
    ok(&t(&["agent", "setup", "--write"]));
    let settings: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.path("PC1/project/.claude/settings.local.json")).expect("settings"),
    )
    .expect("json");
    assert_eq!(settings["model"], "opus", "the user's settings stay");
    let stop = settings["hooks"]["Stop"].as_array().expect("Stop hooks");
    assert_eq!(
        stop.len(),
        2,
        "the user's hook and trinity's, once: {settings}"
    );
    assert_eq!(stop[0]["hooks"][0]["command"], "notify-send done");
    assert_eq!(
        settings["hooks"]["SessionStart"].as_array().map(Vec::len),
        Some(1)
    );
    assert!(
        settings["hooks"]["StopFailure"][0]["hooks"][0]["command"]
            .as_str()
            .is_some_and(|c| c.ends_with("agent stop-failure")),
        "{settings}"
    );
    // Claude Code's StopFailure hook input (as 2.1.332 sends it on a rate limit) pokes the
    // credit monitor: local/credit/poke.json names the session and the error.
    let mut cmd = env.cmd();
    cmd.args(["--config", "PC1/trinity.toml", "agent", "stop-failure"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("stop-failure");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(br#"{"session_id":"9708dab7-4eeb-4349-a414-5e2da24c8a5d","hook_event_name":"StopFailure","error":"rate_limit","last_assistant_message":"API Error: Request rejected (429)"}"#)
        .expect("write");
    ok(&child.wait_with_output().expect("wait"));
    let poke: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.path("PC1/.trinity/local/credit/poke.json")).expect("poke"),
    )
    .expect("json");
    assert_eq!(poke["error"], "rate_limit");
    assert_eq!(poke["session_id"], "9708dab7-4eeb-4349-a414-5e2da24c8a5d");
    // The context the SessionStart hook prints.
    let out = ok(&t(&["agent", "context"]));
    assert!(out.contains("No task is assigned"), "{out}");
    ok(&t(&["task", "add", "t1", "-d", "Write the hooks chapter"]));
    ok(&t(&["work", "next"]));
    ok(&t(&[
        "work",
        "progress",
        "--progress",
        "30",
        "--next",
        "section 2",
    ]));
    let out = ok(&t(&["agent", "context"]));
    for want in [
        "Your current task: t1",
        "Write the hooks chapter",
        "progress so far: 30%",
        "next step: section 2",
        "trinity work done",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    // The Stop hook's input names the session: it is recorded with the current work.
    let mut cmd = env.cmd();
    cmd.args(["--config", "PC1/trinity.toml", "agent", "checkpoint"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("checkpoint");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(br#"{"session_id":"64117f35-ef1a-4144-90e8-712ead76c58d","hook_event_name":"Stop","stop_hook_active":false}"#)
        .expect("write");
    ok(&child.wait_with_output().expect("wait"));
    let instance: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.path("PC1/.trinity/instances/PC1.json")).expect("instance"),
    )
    .expect("json");
    assert_eq!(
        instance["current_work"]["session"],
        "64117f35-ef1a-4144-90e8-712ead76c58d"
    );
}
