//! The `wake-daemon` program as users run it, with a real test agent (a shell script that
//! records its environment): seed Test 1's receiving half, crashes at every journaled step,
//! duplicates, epochs, claims that must reach the remote, and bad input.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use chrono::{DateTime, Utc};
use trinity_core::fsio;
use trinity_core::schema::{
    Claim, CurrentWork, Doc, Handoff, HandoffReason, Heartbeat, HeartbeatStatus, InstanceStatus,
    Priority, TaskRef, WakeSignal,
};
use trinity_core::syncstate::SyncState;
use trinity_core::{HandoffId, InstanceState, PcId, SignalId, TaskId, Tree, validate};

const BIN: &str = env!("CARGO_BIN_EXE_wake-daemon");

const AGENT: &str = r#"#!/bin/sh
env | grep '^TRINITY_' | sort > "$AGENT_OUT/launch-$$.env"
if [ -n "$AGENT_HOLD" ]; then
  while [ ! -e "$AGENT_HOLD" ]; do sleep 0.05; done
fi
"#;

fn pc(s: &str) -> PcId {
    PcId::new(s).expect("valid id")
}

struct Env {
    t: trinity_testkit::TestTree,
}

impl Env {
    fn new(extra_config: &str) -> Self {
        // PC2 of the fleet; its agent is a script that records its environment.
        let t = trinity_testkit::TestTree::builder()
            .pc("PC2")
            .config(extra_config)
            .build();
        std::fs::create_dir_all(t.root().join("agent-out")).expect("mkdir");
        let agent = t.root().join("agent.sh");
        std::fs::write(&agent, AGENT).expect("agent");
        t.append_config(&format!(
            "[agent]\ncommand = [\"/bin/sh\", {:?}]\nnew_console = false\n",
            agent.display().to_string()
        ));
        Self { t }
    }

    fn root(&self) -> &Path {
        self.t.root()
    }

    fn tree(&self) -> Tree {
        Tree::new(self.t.state_dir())
    }

    fn cmd(&self) -> Command {
        let mut c = self.t.command(BIN);
        c.env("AGENT_OUT", self.root().join("agent-out"));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run wake-daemon")
    }

    /// The environments the test agent recorded, one per launch.
    fn launches(&self) -> Vec<BTreeMap<String, String>> {
        let mut out: Vec<BTreeMap<String, String>> =
            std::fs::read_dir(self.root().join("agent-out"))
                .expect("agent-out")
                .flatten()
                .map(|e| {
                    std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .lines()
                        .filter_map(|l| l.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect()
                })
                .collect();
        out.sort();
        out
    }

    /// Waits until no agent of this environment runs any more: each writes its record before
    /// it exits, so the launches counted afterwards are all there are (no grace period).
    fn wait_agents_exited(&self) {
        let marker = format!("AGENT_OUT={}", self.root().join("agent-out").display());
        trinity_testkit::wait_for("the agents to exit", || {
            !std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .any(|p| {
                    std::fs::read(p.path().join("environ"))
                        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
                })
        });
    }

    fn wait_launches(&self, n: usize) -> Vec<BTreeMap<String, String>> {
        let mut l = Vec::new();
        trinity_testkit::wait_for(&format!("{n} agent launch(es)"), || {
            l = self.launches();
            l.len() >= n && l.iter().all(|e| e.contains_key("TRINITY_PC"))
        });
        l
    }

    fn write_handoff(
        &self,
        from: &str,
        at: DateTime<Utc>,
        tasks: &[&str],
        epoch: Option<u64>,
    ) -> HandoffId {
        let h = Handoff {
            format_version: 1,
            from_pc: pc(from),
            to_pc: pc("PC2"),
            timestamp: at,
            reason: if epoch.is_some() {
                HandoffReason::Reassignment
            } else {
                HandoffReason::CreditExhaustion
            },
            task_queue: tasks
                .iter()
                .map(|t| TaskRef {
                    id: TaskId::new(t).expect("valid"),
                    priority: Priority::High,
                    description: format!("do {t}"),
                })
                .collect(),
            current_work: tasks.first().map(|t| CurrentWork {
                task_id: TaskId::new(t).expect("valid"),
                progress: "50%".to_owned(),
                completed_subtasks: vec![],
                next_subtask: None,
                code: None,
                session: None,
                conversation_sha256: None,
            }),
            credit_state: None,
            epoch,
            authored_by: epoch.map(|_| pc("PC3")),
            leader_epoch: epoch.map(|_| 1),
        };
        let id = h.id().expect("id");
        fsio::create(&self.tree().handoff_file(&id), &h).expect("handoff");
        id
    }

    fn write_signal(
        &self,
        id: &str,
        from: &str,
        at: DateTime<Utc>,
        handoff: Option<&HandoffId>,
    ) -> PathBuf {
        let s = WakeSignal {
            format_version: 1,
            id: SignalId::new(id).expect("valid"),
            from_pc: pc(from),
            to_pc: pc("PC2"),
            timestamp: at,
            task: "credit_handoff".to_owned(),
            message: format!("Taking over from {from} due to credit exhaustion"),
            handoff: handoff.cloned(),
            expires_at: None,
            epoch: None,
            leader_epoch: None,
        };
        let path = self.tree().wake_file(&pc("PC2"), &s.id);
        fsio::create(&path, &s).expect("signal");
        path
    }

    fn heartbeat(&self) -> Heartbeat {
        fsio::load::<Heartbeat>(&self.tree().heartbeat_file(&pc("PC2")))
            .expect("heartbeat")
            .value
    }
}

use trinity_testkit::describe as text;

fn now() -> DateTime<Utc> {
    use chrono::Timelike;
    let n = Utc::now();
    n.with_nanosecond(0).unwrap_or(n)
}

#[test]
fn seed_test_1_receiving_half() {
    let env = Env::new("");
    let at = now();
    let id = env.write_handoff("PC1", at, &["auto-mcp-git-sync", "chunk2-courses"], None);
    let signal = env.write_signal("sig-1", "PC1", at, Some(&id));

    let o = env.run(&["--once"]);
    assert!(o.status.success(), "{}", text(&o));
    let tree = env.tree();

    // Archived.
    assert!(!tree.handoff_file(&id).exists());
    assert!(tree.processed_handoff_file(&id).is_file());
    // Claimed.
    for t in ["auto-mcp-git-sync", "chunk2-courses"] {
        let c = fsio::load::<Claim>(&tree.claim_file(&TaskId::new(t).expect("valid")))
            .expect("claim")
            .value;
        assert_eq!(c.pc, pc("PC2"));
        assert_eq!(c.handoff.as_ref(), Some(&id));
    }
    // ACTIVE with the current work.
    let inst = fsio::load::<InstanceStatus>(&tree.instance_file(&pc("PC2")))
        .expect("instance")
        .value;
    assert_eq!(inst.state, InstanceState::Active);
    assert_eq!(
        inst.current_work.map(|w| w.task_id.to_string()).as_deref(),
        Some("auto-mcp-git-sync")
    );
    // The credit monitor's windows were reset.
    let events = std::fs::read_to_string(tree.credit_events_file()).expect("events");
    assert!(events.contains("\"kind\":\"reset\""), "{events}");
    // The agent, once, with the handoff in its environment.
    let launches = env.wait_launches(1);
    assert_eq!(launches.len(), 1);
    let e = &launches[0];
    assert_eq!(e["TRINITY_PC"], "PC2");
    assert_eq!(e["TRINITY_FROM_PC"], "PC1");
    assert_eq!(e["TRINITY_TASK_ID"], "auto-mcp-git-sync");
    let handoff_file = PathBuf::from(&e["TRINITY_HANDOFF_FILE"]);
    assert!(
        handoff_file.is_absolute() && handoff_file.is_file(),
        "{handoff_file:?}"
    );
    let tasks: Vec<TaskRef> =
        serde_json::from_slice(&std::fs::read(&e["TRINITY_TASKS_FILE"]).expect("tasks file"))
            .expect("tasks json");
    assert_eq!(tasks.len(), 2);
    // The seed's heartbeat.
    let hb = env.heartbeat();
    assert_eq!(hb.status, HeartbeatStatus::HandoffAccepted);
    assert_eq!(hb.from_pc, Some(pc("PC1")));
    assert_eq!(hb.tasks_received, Some(2));
    // The signal is consumed; every file left in the tree is valid.
    assert!(!signal.exists());
    let fleet = fsio::load(&tree.fleet_file()).expect("fleet").value;
    for p in validate::synced_files(&tree).expect("list") {
        validate::validate_file(&tree, &p, Some(&fleet))
            .unwrap_or_else(|e| panic!("{} is invalid: {e}", p.display()));
    }
    // Running again does nothing more.
    let o = env.run(&["--once"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(env.launches().len(), 1);
    let log = std::fs::read_to_string(tree.logs_dir().join("wake-daemon.log")).expect("log");
    assert!(log.contains("handoff accepted"), "{log}");
}

#[test]
fn killed_at_every_journaled_step_the_agent_still_starts_exactly_once() {
    for step in [
        "received",
        "archived",
        "claims-written",
        "claimed",
        "instance-written",
        "credit-reset",
        "launching",
        "launched",
        "done",
    ] {
        let env = Env::new("");
        let at = now();
        let id = env.write_handoff("PC1", at, &["task-a", "task-b"], None);
        env.write_signal("sig-crash", "PC1", at, Some(&id));
        let crashed = env
            .cmd()
            .arg("--once")
            .env("TRINITY_FAILPOINT", format!("wake:{step}"))
            .output()
            .expect("run");
        assert!(
            !crashed.status.success(),
            "{step}: the fail point must abort: {}",
            text(&crashed)
        );
        assert!(
            String::from_utf8_lossy(&crashed.stderr).contains(&format!("failpoint wake:{step}")),
            "{step}: {}",
            text(&crashed)
        );
        let o = env.run(&["--once"]);
        assert!(o.status.success(), "{step}: {}", text(&o));
        let launches = env.wait_launches(1);
        // A second launch, if there were one, has written its record once every agent exited.
        env.wait_agents_exited();
        assert_eq!(env.launches().len(), 1, "{step}: {launches:?}");
        let hb = env.heartbeat();
        assert_eq!(hb.status, HeartbeatStatus::HandoffAccepted, "{step}");
        assert_eq!(hb.tasks_received, Some(2), "{step}");
        assert!(env.tree().processed_handoff_file(&id).is_file(), "{step}");
        let resets = std::fs::read_to_string(env.tree().credit_events_file())
            .expect("events")
            .matches("\"reset\"")
            .count();
        assert_eq!(resets, 1, "{step}: one credit reset");
    }
}

#[test]
fn a_handoff_without_tasks_still_starts_the_agent() {
    let env = Env::new("");
    let at = now();
    let id = env.write_handoff("PC1", at, &[], None);
    env.write_signal("sig-empty", "PC1", at, Some(&id));
    let o = env.run(&["--once"]);
    assert!(o.status.success(), "{}", text(&o));
    let launches = env.wait_launches(1);
    assert!(!launches[0].contains_key("TRINITY_TASK_ID"));
    assert_eq!(env.heartbeat().tasks_received, Some(0));
}

#[test]
fn two_signals_for_one_handoff_start_one_agent() {
    let env = Env::new("");
    let at = now();
    let id = env.write_handoff("PC1", at, &["task-a"], None);
    env.write_signal("sig-a", "PC1", at, Some(&id));
    env.write_signal("sig-b", "PC1", at, Some(&id));
    let o = env.run(&["--once"]);
    assert!(o.status.success(), "{}", text(&o));
    env.wait_launches(1);
    env.wait_agents_exited();
    assert_eq!(env.launches().len(), 1);
    assert!(
        env.tree()
            .wake_dir(&pc("PC2"))
            .read_dir()
            .expect("dir")
            .next()
            .is_none()
    );
}

#[test]
fn a_corrupt_journal_record_is_set_aside_and_its_handoff_never_redone() {
    let env = Env::new("");
    let at = now();
    let first = env.write_handoff("PC1", at, &["task-a"], None);
    env.write_signal("sig-a", "PC1", at, Some(&first));
    assert!(env.run(&["--once"]).status.success());
    env.wait_launches(1);
    // The finished record of the accepted handoff is damaged on disk.
    let record = env.tree().wake_finished_journal(&first);
    std::fs::write(&record, b"{\"id\": ").expect("corrupt");
    // A second signal for the same handoff, and one for another handoff.
    let later = at + chrono::Duration::seconds(1);
    let second = env.write_handoff("PC3", later, &["task-b"], None);
    env.write_signal("sig-a2", "PC1", later, Some(&first));
    env.write_signal("sig-b", "PC3", later, Some(&second));
    let o = env.run(&["--once"]);
    assert!(!o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("held:") && out.contains("unreadable"), "{out}");
    // The damaged record is kept beside where it was; the other handoff went ahead.
    assert_eq!(
        std::fs::read(trinity_core::local::quarantine_path(&record)).expect("kept"),
        b"{\"id\": "
    );
    let launches = env.wait_launches(2);
    assert!(
        launches
            .iter()
            .any(|l| l["TRINITY_HANDOFF_FILE"].contains(second.as_str())),
        "{launches:?}"
    );
    // Run again: still held, still not redone, said again by this run.
    let o = env.run(&["--once"]);
    assert!(
        !o.status.success() && text(&o).contains("held:"),
        "{}",
        text(&o)
    );
    let journal = wake_daemon::journal::Journal::new(env.tree());
    assert!(
        journal
            .handoff(&second)
            .expect("read")
            .is_some_and(|r| r.is_final())
    );
    assert_eq!(
        env.launches().len(),
        2,
        "the first handoff was started again"
    );
}

#[test]
fn a_handoff_older_than_the_newest_epoch_is_ignored() {
    let env = Env::new("");
    let at = now();
    let newer = env.write_handoff("PC1", at, &["task-a"], Some(2));
    env.write_signal("sig-new", "PC3", at, Some(&newer));
    assert!(env.run(&["--once"]).status.success());
    env.wait_launches(1);
    let older = env.write_handoff(
        "PC3",
        at + chrono::Duration::seconds(1),
        &["task-a"],
        Some(1),
    );
    env.write_signal(
        "sig-old",
        "PC3",
        at + chrono::Duration::seconds(1),
        Some(&older),
    );
    let o = env.run(&["--once"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("older than epoch 2"), "{}", text(&o));
    env.wait_agents_exited();
    assert_eq!(env.launches().len(), 1);
}

#[test]
fn claims_count_only_once_they_reach_the_remote_and_a_lost_claim_is_dropped() {
    let env = Env::new(
        "[sync]\nmode = \"git\"\n[wake]\nclaim_timeout = \"300ms\"\npoll_interval = \"50ms\"\n",
    );
    let tree = env.tree();
    let at = now();
    let id = env.write_handoff("PC1", at, &["task-a", "task-b"], None);
    env.write_signal("sig-sync", "PC1", at, Some(&id));
    // git-sync has not pushed anything since: the claims are not confirmed.
    SyncState {
        in_sync_at: Some(at - chrono::Duration::hours(1)),
        ..SyncState::default()
    }
    .save(&tree)
    .expect("sync state");
    let o = env.run(&["--once"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("is git-sync running?"));
    assert!(env.launches().is_empty());

    // The merge brought PC3's claim on task-b (it reached the remote first); then git-sync
    // reports everything pushed.
    let b = TaskId::new("task-b").expect("valid");
    let theirs = Claim {
        format_version: 1,
        task_id: b.clone(),
        pc: pc("PC3"),
        claimed_at: at,
        epoch: 0,
        handoff: None,
    };
    fsio::save(&tree.claim_file(&b), &Doc::new(theirs)).expect("claim");
    SyncState {
        in_sync_at: Some(Utc::now() + chrono::Duration::seconds(1)),
        ..SyncState::default()
    }
    .save(&tree)
    .expect("sync state");
    let o = env.run(&["--once"]);
    assert!(o.status.success(), "{}", text(&o));
    let launches = env.wait_launches(1);
    let tasks: Vec<TaskRef> =
        serde_json::from_slice(&std::fs::read(&launches[0]["TRINITY_TASKS_FILE"]).expect("tasks"))
            .expect("json");
    assert_eq!(
        tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["task-a"]
    );
    assert_eq!(env.heartbeat().tasks_received, Some(1));
    let log = std::fs::read_to_string(tree.logs_dir().join("wake-daemon.log")).expect("log");
    assert!(
        log.contains("lost the claim on a task to another PC"),
        "{log}"
    );
}

#[test]
fn a_late_reassignment_whose_task_moved_on_starts_no_agent() {
    let env = Env::new("");
    let tree = env.tree();
    let at = now();
    // PC3 holds task-a at a newer work epoch than the reassignment that reaches PC2 now.
    let a = TaskId::new("task-a").expect("valid");
    let theirs = Claim {
        format_version: 1,
        task_id: a.clone(),
        pc: pc("PC3"),
        claimed_at: at,
        epoch: 9,
        handoff: None,
    };
    fsio::save(&tree.claim_file(&a), &Doc::new(theirs)).expect("claim");
    let id = env.write_handoff("PC1", at, &["task-a"], Some(2));
    env.write_signal("sig-late", "PC3", at, Some(&id));
    let o = env.run(&["--once"]);
    assert!(o.status.success(), "{}", text(&o));
    let log = std::fs::read_to_string(tree.logs_dir().join("wake-daemon.log")).expect("log");
    assert!(log.contains("no agent started"), "{log}");
    assert!(!log.contains("started the agent"), "{log}");
    assert!(env.launches().is_empty(), "nothing to do, nothing started");
}

#[test]
fn new_work_is_queued_for_an_agent_that_still_runs() {
    let env = Env::new("");
    let hold = env.root().join("release-agent");
    let at = now();
    let first = env.write_handoff("PC1", at, &["task-a"], None);
    env.write_signal("sig-1", "PC1", at, Some(&first));
    let o = env
        .cmd()
        .arg("--once")
        .env("AGENT_HOLD", &hold)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", text(&o));
    let launches = env.wait_launches(1);
    let later = at + chrono::Duration::seconds(5);
    let second = env.write_handoff("PC3", later, &["task-b"], None);
    env.write_signal("sig-2", "PC3", later, Some(&second));
    let o = env
        .cmd()
        .arg("--once")
        .env("AGENT_HOLD", &hold)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(&hold, "go").expect("release");
    env.wait_agents_exited();
    assert_eq!(env.launches().len(), 1, "no second agent");
    let tasks: Vec<TaskRef> =
        serde_json::from_slice(&std::fs::read(&launches[0]["TRINITY_TASKS_FILE"]).expect("tasks"))
            .expect("json");
    assert_eq!(
        tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["task-a", "task-b"]
    );
}

#[test]
fn bad_signals_are_refused_and_nothing_is_executed() {
    let env = Env::new("");
    let tree = env.tree();
    let dir = tree.wake_dir(&pc("PC2"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let at = now();
    let pwned = env.root().join("pwned");
    let sig = |id: &str, body: serde_json::Value| {
        std::fs::write(
            dir.join(format!("{id}.json")),
            serde_json::to_vec(&body).expect("json"),
        )
        .expect("write");
    };
    let base = |id: &str| {
        serde_json::json!({"format_version": 1, "id": id, "from_pc": "PC1", "to_pc": "PC2",
            "timestamp": at, "task": "credit_handoff", "message": ""})
    };
    // For another PC.
    let mut v = base("for-pc3");
    v["to_pc"] = "PC3".into();
    sig("for-pc3", v);
    // From outside the fleet.
    let mut v = base("from-pc9");
    v["from_pc"] = "PC9".into();
    sig("from-pc9", v);
    // Shell metacharacters in the task.
    let mut v = base("evil-task");
    v["task"] = format!("x; touch {}", pwned.display()).into();
    sig("evil-task", v);
    // Shell metacharacters in the message: valid free text, never executed.
    let mut v = base("evil-message");
    v["message"] = format!(
        "$(touch {p}) `touch {p}` %COMSPEC% /c echo && touch {p}",
        p = pwned.display()
    )
    .into();
    sig("evil-message", v);
    // 100 KB of text.
    let mut v = base("huge");
    v["message"] = "x".repeat(100 * 1024).into();
    sig("huge", v);
    // Expired.
    let mut v = base("expired");
    v["timestamp"] = serde_json::to_value(at - chrono::Duration::hours(3)).expect("time");
    sig("expired", v);
    // A missing handoff.
    let mut v = base("missing-handoff");
    v["handoff"] = "handoff_PC1_to_PC2_20260101T000000Z".into();
    sig("missing-handoff", v);
    // An invalid handoff.
    let bad_handoff = HandoffId::new("handoff_PC1_to_PC2_20260102T000000Z").expect("valid");
    std::fs::create_dir_all(tree.handoff_dir()).expect("mkdir");
    std::fs::write(tree.handoff_file(&bad_handoff), "{ truncated").expect("write");
    let mut v = base("invalid-handoff");
    v["handoff"] = bad_handoff.to_string().into();
    sig("invalid-handoff", v);
    // `../` in names.
    let mut v = base("dotdot");
    v["handoff"] = "../../etc/passwd".into();
    sig("dotdot", v);
    std::fs::write(
        dir.join("a..b.json"),
        serde_json::to_vec(&base("a..b")).expect("json"),
    )
    .expect("write");

    let o = env.run(&["--once"]);
    assert!(o.status.success(), "the daemon carries on: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for (name, why) in [
        ("for-pc3", "PC3"),
        ("from-pc9", "PC9"),
        ("evil-task", "task"),
        ("huge", "limit"),
        ("expired", "expired"),
        ("missing-handoff", "does not exist"),
        ("invalid-handoff", "invalid"),
        ("dotdot", ".."),
        ("a..b", ".."),
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("refused {name}.json")))
            .unwrap_or_else(|| panic!("{name} not refused:\n{out}"));
        assert!(line.contains(why), "{name}: {line}");
    }
    // The free-text message was a plain wake-up: accepted, never executed.
    assert!(!pwned.exists(), "nothing was executed");
    assert!(env.launches().is_empty(), "no agent started");
    // Nothing is left pending; the bad files are kept in quarantine with their reasons.
    assert!(dir.read_dir().expect("dir").next().is_none());
    let quarantined = std::fs::read_dir(tree.quarantine_dir())
        .expect("quarantine")
        .count();
    // Six invalid signals and the invalid handoff file, each beside its reason note; the valid
    // signals that were refused (expired, pointing at a bad handoff) are simply consumed.
    assert_eq!(quarantined, 2 * 7, "files in quarantine");
    let log = std::fs::read_to_string(tree.logs_dir().join("wake-daemon.log")).expect("log");
    assert_eq!(log.matches("refused a wake signal").count(), 9, "{log}");
}

#[test]
fn send_writes_a_signal_and_refuses_bad_ones() {
    let env = Env::new("");
    let o = env.run(&[
        "--send",
        "PC3",
        "--task",
        "credit_handoff",
        "--message",
        "Taking over from PC2 due to credit exhaustion",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let path = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let s = fsio::load::<WakeSignal>(&path).expect("valid").value;
    assert_eq!((s.from_pc.as_str(), s.to_pc.as_str()), ("PC2", "PC3"));
    for (args, want) in [
        (&["--send", "PC2"][..], "to itself"),
        (&["--send", "PC9"], "not a member"),
        (&["--send", "PC3", "--task", "rm -rf"], "task"),
        (&["--send", "../PC3"], "PC id"),
    ] {
        let o = env.run(args);
        assert!(!o.status.success(), "{args:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(want),
            "{args:?}: {}",
            text(&o)
        );
    }
}

#[test]
fn status_lists_pending_signals_and_handoffs() {
    let env = Env::new("");
    let at = now();
    let id = env.write_handoff("PC1", at, &["task-a"], None);
    env.write_signal("sig-1", "PC1", at, Some(&id));
    let o = env.run(&["--status"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("pending sig-1.json: from PC1"), "{out}");
    env.run(&["--once"]);
    env.wait_launches(1);
    let o = env.run(&["--status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["handoffs"][0]["step"]["step"], "done");
    assert_eq!(v["pending"].as_array().map(Vec::len), Some(0));
    let o = env.run(&["--help"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Usage"));
}

#[test]
fn the_daemon_picks_up_a_signal_within_moments_and_stops_cleanly() {
    let env = Env::new("[wake]\npoll_interval = \"1h\"\n");
    let mut child = trinity_testkit::spawn(env.cmd().stdout(Stdio::null()).stderr(Stdio::null()));
    let tree = env.tree();
    // "started" is logged once the watcher is in place.
    let log = tree.log_file(&trinity_core::DaemonId::WakeDaemon.name());
    trinity_testkit::wait_for("the wake-daemon started", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("wake-daemon started"))
    });
    let at = now();
    let id = env.write_handoff("PC1", at, &["task-a"], None);
    env.write_signal("sig-live", "PC1", at, Some(&id));
    // The poll interval is an hour: only the file watcher can have seen it.
    env.wait_launches(1);
    let status = trinity_testkit::stop(&mut child);
    assert!(status.success());
}
