//! The credit monitor in-process, with a manual clock: the handoff it writes, once per
//! exhaustion, the pause across restarts, the rotation, the escalation, crash recovery, and
//! transcript parsing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use credit_monitor::transcripts::{self, TailState};
use credit_monitor::{Action, Monitor};
use trinity_core::config::Config;
use trinity_core::credit::{CreditEvent, EventKind};
use trinity_core::fsio;
use trinity_core::schema::{
    Claim, CreditLevel, CreditStatus, CurrentWork, Doc, Escalation, Fleet, Handoff, HandoffReason,
    Heartbeat, HeartbeatStatus, InstanceStatus, Priority, Task, WakeSignal,
};
use trinity_core::{InstanceState, ManualClock, PcId, TaskId, Tree, validate};

fn pc(s: &str) -> PcId {
    PcId::new(s).expect("valid id")
}

fn t0() -> DateTime<Utc> {
    "2026-11-21T10:00:00Z".parse().expect("valid time")
}

struct Env {
    _dir: tempfile::TempDir,
    tree: Tree,
    clock: ManualClock,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = Tree::new(dir.path().join(".trinity"));
        let fleet = Fleet::new(vec![pc("PC1"), pc("PC2"), pc("PC3")], pc("PC3"));
        fsio::save(&tree.fleet_file(), &Doc::new(fleet)).expect("fleet");
        Self {
            _dir: dir,
            tree,
            clock: ManualClock::new(t0()),
        }
    }

    fn monitor(&self, who: &str) -> Monitor {
        let config = Config {
            pc: Some(pc(who)),
            ..Config::default()
        };
        Monitor::new(
            self.tree.clone(),
            pc(who),
            config,
            Arc::new(self.clock.clone()),
        )
    }

    fn now(&self) -> DateTime<Utc> {
        use trinity_core::Clock;
        self.clock.now()
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// A heartbeat for `who`, last changed now (by this machine's clock, as git-sync would
    /// leave it).
    fn alive(&self, who: &str, status: HeartbeatStatus, paused_until: Option<DateTime<Utc>>) {
        let path = self.tree.heartbeat_file(&pc(who));
        let hb = Heartbeat {
            paused_until,
            ..Heartbeat::new(pc(who), status, self.now())
        };
        fsio::save(&path, &Doc::new(hb)).expect("heartbeat");
        touch(&path, self.now());
    }

    fn event(&self, kind: EventKind) -> CreditEvent {
        CreditEvent::new(self.now(), kind)
    }

    fn files(&self, dir: PathBuf) -> Vec<PathBuf> {
        validate::files_under(&dir).unwrap_or_default()
    }
}

fn touch(path: &Path, at: DateTime<Utc>) {
    let f = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    f.set_modified(at.into()).expect("set mtime");
}

fn task(id: &str, priority: Priority, minute: i64) -> Task {
    Task {
        format_version: 1,
        id: TaskId::new(id).expect("valid"),
        priority,
        description: format!("do {id}"),
        created_at: t0() + chrono::Duration::minutes(minute),
        created_by: pc("PC3"),
        dependencies: Vec::new(),
        role: None,
    }
}

fn seed_work(env: &Env) {
    let tree = &env.tree;
    for t in [
        task("auto-mcp-git-sync", Priority::High, 0),
        task("chunk2-courses", Priority::Normal, 1),
        task("docs-pass", Priority::Low, 2),
        task("urgent-fix", Priority::Critical, 3),
        task("done-already", Priority::Critical, 4),
        task("theirs", Priority::Critical, 5),
        // Waiting on docs-pass: nobody can work on it yet.
        Task {
            dependencies: vec![TaskId::new("docs-pass").expect("valid")],
            ..task("after-docs", Priority::Critical, 6)
        },
    ] {
        fsio::create(&tree.task_file(&t.id), &t).expect("task");
    }
    let claim = |id: &str, who: &str| Claim {
        format_version: 1,
        task_id: TaskId::new(id).expect("valid"),
        pc: pc(who),
        claimed_at: t0(),
        epoch: 0,
        handoff: None,
    };
    for (id, who) in [
        ("auto-mcp-git-sync", "PC1"),
        ("chunk2-courses", "PC1"),
        ("done-already", "PC1"),
        ("theirs", "PC2"),
    ] {
        fsio::create(
            &tree.claim_file(&TaskId::new(id).expect("valid")),
            &claim(id, who),
        )
        .expect("claim");
    }
    let done = trinity_core::schema::Done {
        format_version: 1,
        task_id: TaskId::new("done-already").expect("valid"),
        pc: pc("PC1"),
        finished_at: t0(),
        outcome: trinity_core::schema::Outcome::Completed,
        summary: String::new(),
        commit: None,
    };
    fsio::create(&tree.done_file(&done.task_id), &done).expect("done");
    let instance = InstanceStatus {
        format_version: 1,
        pc: pc("PC1"),
        state: InstanceState::Active,
        since: t0(),
        current_work: Some(CurrentWork {
            task_id: TaskId::new("chunk2-courses").expect("valid"),
            progress: "50%".to_owned(),
            completed_subtasks: vec!["outline".to_owned()],
            next_subtask: Some("lesson 3".to_owned()),
            code: None,
            session: None,
            conversation_sha256: None,
        }),
        claimed_tasks: vec![TaskId::new("chunk2-courses").expect("valid")],
        handoff: None,
        epoch: 0,
    };
    fsio::save(&tree.instance_file(&pc("PC1")), &Doc::new(instance)).expect("instance");
}

fn handoffs(env: &Env) -> Vec<Handoff> {
    env.files(env.tree.handoff_dir())
        .into_iter()
        .filter(|p| !p.starts_with(env.tree.processed_handoff_dir()))
        .map(|p| fsio::load::<Handoff>(&p).expect("valid handoff").value)
        .collect()
}

fn signals(env: &Env, to: &str) -> Vec<WakeSignal> {
    env.files(env.tree.wake_dir(&pc(to)))
        .into_iter()
        .map(|p| fsio::load::<WakeSignal>(&p).expect("valid signal").value)
        .collect()
}

fn heartbeat(env: &Env, who: &str) -> Heartbeat {
    fsio::load::<Heartbeat>(&env.tree.heartbeat_file(&pc(who)))
        .expect("heartbeat")
        .value
}

#[test]
fn seed_test_2_the_third_rate_limit_hands_off_inside_its_own_call() {
    let env = Env::new();
    seed_work(&env);
    env.alive("PC2", HeartbeatStatus::Idle, None);
    env.alive("PC3", HeartbeatStatus::Active, None);
    let m = env.monitor("PC1");

    let first = m.record(&env.event(EventKind::RateLimit)).expect("record");
    assert_eq!(
        (first.evaluation.level, &first.action),
        (CreditLevel::Warning, &Action::None)
    );
    env.advance(10);
    let second = m.record(&env.event(EventKind::RateLimit)).expect("record");
    assert_eq!(second.evaluation.level, CreditLevel::Critical);
    assert!(handoffs(&env).is_empty());
    env.advance(10);
    let third = m.record(&env.event(EventKind::RateLimit)).expect("record");
    let Action::HandedOff { handoff, to } = &third.action else {
        panic!("expected a handoff, got {:?}", third.action);
    };
    assert_eq!(to, &pc("PC2"));

    // The handoff file, in the seed's format.
    let all = handoffs(&env);
    assert_eq!(all.len(), 1);
    let h = &all[0];
    assert_eq!(h.id().as_ref(), Some(handoff));
    assert_eq!((h.from_pc.as_str(), h.to_pc.as_str()), ("PC1", "PC2"));
    assert_eq!(h.reason, HandoffReason::CreditExhaustion);
    let queue: Vec<&str> = h.task_queue.iter().map(|t| t.id.as_str()).collect();
    // Current work first, then the other claim, then the unclaimed tasks ready to be taken by
    // priority; done tasks, other PCs' claims and tasks waiting on a dependency are left out.
    assert_eq!(
        queue,
        [
            "chunk2-courses",
            "auto-mcp-git-sync",
            "urgent-fix",
            "docs-pass"
        ]
    );
    assert_eq!(
        h.current_work.as_ref().map(|w| w.progress.as_str()),
        Some("50%")
    );
    let credit = h.credit_state.as_ref().expect("credit state");
    assert_eq!(credit.rate_limit_count, 3);
    assert_eq!(credit.rule.as_deref(), Some("rate_limit"));

    // The wake signal, the heartbeat, the instance state.
    let sig = signals(&env, "PC2");
    assert_eq!(sig.len(), 1);
    assert_eq!(sig[0].handoff.as_ref(), Some(handoff));
    assert_eq!(sig[0].task, "credit_handoff");
    let hb = heartbeat(&env, "PC1");
    assert_eq!(hb.status, HeartbeatStatus::HandoffInitiated);
    assert_eq!(hb.to_pc, Some(pc("PC2")));
    assert_eq!(
        hb.paused_until,
        Some(env.now() + chrono::Duration::minutes(5))
    );
    let inst = fsio::load::<InstanceStatus>(&env.tree.instance_file(&pc("PC1")))
        .expect("instance")
        .value;
    assert_eq!(inst.state, InstanceState::HandoffReady);
    assert_eq!(inst.handoff.as_ref(), Some(handoff));
    let status = fsio::load::<CreditStatus>(&env.tree.credit_file(&pc("PC1")))
        .expect("credit status")
        .value;
    assert_eq!(status.level, CreditLevel::Exhausted);
    assert_eq!(status.rate_limit_count, 3);

    // Every file written is valid where it lies.
    let fleet = fsio::load::<Fleet>(&env.tree.fleet_file())
        .expect("fleet")
        .value;
    for p in validate::synced_files(&env.tree).expect("list") {
        validate::validate_file(&env.tree, &p, Some(&fleet))
            .unwrap_or_else(|e| panic!("{} is invalid: {e}", p.display()));
    }

    // A fourth rate limit does not hand off again.
    env.advance(10);
    let fourth = m.record(&env.event(EventKind::RateLimit)).expect("record");
    assert!(
        matches!(fourth.action, Action::Paused(_)),
        "{:?}",
        fourth.action
    );
    assert_eq!(handoffs(&env).len(), 1);
}

#[test]
fn the_pause_survives_a_restart_and_one_exhaustion_hands_off_once() {
    let env = Env::new();
    env.alive("PC2", HeartbeatStatus::Idle, None);
    env.alive("PC3", HeartbeatStatus::Idle, None);
    {
        let m = env.monitor("PC1");
        for _ in 0..3 {
            m.record(&env.event(EventKind::RateLimit)).expect("record");
            env.advance(1);
        }
    }
    assert_eq!(handoffs(&env).len(), 1);
    // A new process (a restart): still paused.
    let m = env.monitor("PC1");
    let o = m.step().expect("step");
    assert!(matches!(o.action, Action::Paused(_)), "{:?}", o.action);
    // After the pause, still within the window: the same exhaustion, not a new one.
    env.advance(6 * 60);
    env.alive("PC2", HeartbeatStatus::Idle, None);
    env.alive("PC3", HeartbeatStatus::Idle, None);
    let o = m.record(&env.event(EventKind::RateLimit)).expect("record");
    assert_eq!(o.action, Action::AlreadyHandedOff);
    assert_eq!(handoffs(&env).len(), 1);
    // The window passes: the level drops and the trigger re-arms.
    env.advance(16 * 60);
    env.alive("PC2", HeartbeatStatus::Idle, None);
    env.alive("PC3", HeartbeatStatus::Idle, None);
    let o = m.step().expect("step");
    assert_eq!(o.evaluation.level, CreditLevel::Healthy);
    assert!(o.state.armed);
    // A new exhaustion hands off again.
    for _ in 0..3 {
        env.advance(1);
        m.record(&env.event(EventKind::RateLimit)).expect("record");
    }
    assert_eq!(handoffs(&env).len(), 2);
}

#[test]
fn paused_exhausted_and_silent_pcs_are_passed_over() {
    let env = Env::new();
    let later = env.now() + chrono::Duration::minutes(3);
    env.alive("PC2", HeartbeatStatus::Paused, Some(later));
    env.alive("PC3", HeartbeatStatus::Idle, None);
    let m = env.monitor("PC1");
    let o = m.force_handoff().expect("force");
    assert_eq!(
        o.action,
        Action::HandedOff {
            handoff: handoffs(&env)[0].id().expect("id"),
            to: pc("PC3")
        }
    );
    assert_eq!(handoffs(&env)[0].reason, HandoffReason::Manual);
    assert!(signals(&env, "PC2").is_empty());
}

#[test]
fn when_nobody_can_take_over_it_escalates_once_and_wakes_nobody() {
    let env = Env::new();
    let in_two_hours = env.now() + chrono::Duration::hours(2);
    env.alive("PC2", HeartbeatStatus::Exhausted, None);
    env.alive("PC3", HeartbeatStatus::Idle, None);
    let out = CreditStatus {
        format_version: 1,
        pc: pc("PC3"),
        updated_at: env.now(),
        level: CreditLevel::Exhausted,
        rule: Some("usage_limit".to_owned()),
        fraction: 1.0,
        reason: "usage limit".to_owned(),
        rules: Default::default(),
        rate_limit_count: 0,
        error_rate: 0.0,
        avg_response_time: 0.0,
        exhausted_until: Some(in_two_hours),
        next_pc: None,
        tokens_by_day: Default::default(),
    };
    fsio::save(&env.tree.credit_file(&pc("PC3")), &Doc::new(out)).expect("credit");
    let m = env.monitor("PC1");
    let mut usage = env.event(EventKind::UsageLimit);
    usage.reset_at = Some(env.now() + chrono::Duration::hours(3));
    let o = m.record(&usage).expect("record");
    let Action::NoTarget { retry_at, skipped } = &o.action else {
        panic!("expected no target, got {:?}", o.action);
    };
    // PC3's exhaustion ends first.
    assert_eq!(*retry_at, in_two_hours);
    assert!(skipped.contains("PC2 out of credit"), "{skipped}");
    assert!(handoffs(&env).is_empty());
    assert!(signals(&env, "PC2").is_empty() && signals(&env, "PC3").is_empty());
    let escalations = env.files(env.tree.escalation_dir());
    assert_eq!(escalations.len(), 1);
    let esc = fsio::load::<Escalation>(&escalations[0])
        .expect("valid")
        .value;
    assert!(
        esc.summary.contains("no PC can take over"),
        "{}",
        esc.summary
    );
    assert_eq!(heartbeat(&env, "PC1").status, HeartbeatStatus::Exhausted);

    // Until then, it waits without writing anything new.
    env.advance(60);
    let o = m.step().expect("step");
    assert_eq!(o.action, Action::Waiting(in_two_hours));
    assert_eq!(env.files(env.tree.escalation_dir()).len(), 1);

    // When PC3 is back, it hands off with the usage-limit reason.
    env.advance(2 * 3600);
    env.alive("PC2", HeartbeatStatus::Exhausted, None);
    env.alive("PC3", HeartbeatStatus::Idle, None);
    std::fs::remove_file(env.tree.credit_file(&pc("PC3"))).expect("remove");
    let o = m.step().expect("step");
    assert!(
        matches!(&o.action, Action::HandedOff { to, .. } if *to == pc("PC3")),
        "{:?}",
        o.action
    );
    assert_eq!(handoffs(&env)[0].reason, HandoffReason::UsageLimit);
}

#[test]
fn a_handoff_interrupted_by_a_crash_is_finished_not_repeated() {
    let env = Env::new();
    env.alive("PC2", HeartbeatStatus::Idle, None);
    let m = env.monitor("PC1");
    m.force_handoff().expect("force");
    let signal = signals(&env, "PC2").remove(0);
    let handoff = handoffs(&env).remove(0);
    // Make it look as if the process died right after writing the handoff file: the wake
    // signal and heartbeat were never written, the plan is still pending.
    std::fs::remove_file(env.tree.wake_file(&pc("PC2"), &signal.id)).expect("remove");
    std::fs::remove_file(env.tree.heartbeat_file(&pc("PC1"))).expect("remove");
    let mut state = m.load_state().expect("state");
    state.pending = Some(credit_monitor::state::PendingHandoff {
        handoff: handoff.clone(),
        signal: signal.clone(),
        done: credit_monitor::state::HandoffStep::HandoffFile,
        conversation: None,
    });
    std::fs::write(
        env.tree.credit_state_file(),
        serde_json::to_vec(&state).expect("json"),
    )
    .expect("write state");

    env.advance(5);
    // The next step (a recorder or the daemon's tick) finishes the handoff.
    let o = m.step().expect("step");
    assert_eq!(o.action, Action::None);
    assert_eq!(handoffs(&env), vec![handoff]);
    assert_eq!(signals(&env, "PC2"), vec![signal]);
    assert_eq!(
        heartbeat(&env, "PC1").status,
        HeartbeatStatus::HandoffInitiated
    );
    assert!(m.load_state().expect("state").pending.is_none());
}

#[test]
fn a_corrupt_trigger_state_is_set_aside_and_refused_never_guessed() {
    let env = Env::new();
    env.alive("PC2", HeartbeatStatus::Idle, None);
    env.alive("PC3", HeartbeatStatus::Idle, None);
    let m = env.monitor("PC1");
    m.force_handoff().expect("force");
    assert_eq!(handoffs(&env).len(), 1);
    // The state saying "handed off, paused, disarmed" is damaged on disk.
    let path = env.tree.credit_state_file();
    std::fs::write(&path, b"{\"armed\": fal").expect("corrupt");
    env.advance(5);
    let err = m
        .step()
        .expect_err("a corrupt state is not taken as absent");
    assert!(err.needs_operator(), "{err}");
    assert!(trinity_core::local::was_quarantined(&path));
    // Still refused on later steps (its default would re-arm a second handoff).
    env.advance(5);
    let err = m.step().expect_err("still refused");
    assert!(err.to_string().contains("set aside as corrupt"), "{err}");
    assert_eq!(handoffs(&env).len(), 1);
}

#[test]
fn overloaded_storms_never_hand_off() {
    let env = Env::new();
    env.alive("PC2", HeartbeatStatus::Idle, None);
    let m = env.monitor("PC1");
    for _ in 0..100 {
        env.advance(1);
        let o = m.record(&env.event(EventKind::Overloaded)).expect("record");
        assert_eq!(o.evaluation.level, CreditLevel::Healthy);
    }
    assert!(handoffs(&env).is_empty());
}

#[test]
fn tokens_are_counted_per_day_and_survive_a_reset() {
    let env = Env::new();
    let m = env.monitor("PC1");
    let with_tokens = |n: u64| CreditEvent {
        tokens: Some(n),
        ..env.event(EventKind::Success)
    };
    m.record(&with_tokens(1_000)).expect("record");
    m.record_many(&[with_tokens(200), with_tokens(30)])
        .expect("record");
    m.record(&env.event(EventKind::Success)).expect("no tokens");
    env.advance(24 * 3600);
    m.record(&with_tokens(7)).expect("record");
    m.reset().expect("reset");
    let status = fsio::load::<CreditStatus>(&env.tree.credit_file(&pc("PC1")))
        .expect("credit status")
        .value;
    let days: Vec<(&str, u64)> = status
        .tokens_by_day
        .iter()
        .map(|(d, n)| (d.as_str(), *n))
        .collect();
    assert_eq!(days, [("2026-11-21", 1_230), ("2026-11-22", 7)]);
    // Only the last seven days are kept.
    for _ in 0..8 {
        env.advance(24 * 3600);
        m.record(&with_tokens(1)).expect("record");
    }
    let state = m.load_state().expect("state");
    assert_eq!(state.tokens_by_day.len(), credit_monitor::state::TOKEN_DAYS);
    assert!(!state.tokens_by_day.contains_key("2026-11-22"));
}

#[test]
fn reset_starts_afresh_and_ends_the_pause() {
    let env = Env::new();
    env.alive("PC2", HeartbeatStatus::Idle, None);
    let m = env.monitor("PC1");
    for _ in 0..3 {
        m.record(&env.event(EventKind::RateLimit)).expect("record");
    }
    assert_eq!(handoffs(&env).len(), 1);
    let o = m.reset().expect("reset");
    assert_eq!(o.evaluation.level, CreditLevel::Healthy);
    assert_eq!(o.state.paused_until, None);
    assert!(o.state.armed);
}

#[test]
fn a_reset_requested_by_another_daemon_means_what_the_monitor_says_once() {
    let env = Env::new();
    env.alive("PC2", HeartbeatStatus::Idle, None);
    env.alive("PC3", HeartbeatStatus::Idle, None);
    let m = env.monitor("PC1");
    // Three rate limits: the n-th handoff, and a step later the PC is paused and disarmed.
    let run_out = |n: usize| {
        env.advance(5);
        for _ in 0..3 {
            m.record(&env.event(EventKind::RateLimit)).expect("record");
        }
        assert_eq!(handoffs(&env).len(), n);
        env.advance(5);
        let o = m.step().expect("step");
        assert!(
            o.state.paused_until.is_some() && !o.state.armed,
            "{:?}",
            o.state
        );
    };
    // A reset from long ago (this PC once took work over), then a handoff: still paused.
    trinity_core::credit::request_reset(&env.tree, env.now()).expect("request");
    run_out(1);
    // The wake-daemon takes work over on this PC: it asks for a reset; the next step acts on it.
    env.advance(5);
    trinity_core::credit::request_reset(&env.tree, env.now()).expect("request");
    let o = m.step().expect("step");
    assert_eq!(o.state.paused_until, None);
    assert!(o.state.armed);
    assert_eq!(o.evaluation.level, CreditLevel::Healthy);
    // Out again: handed off again, and the same (old) request does not undo this pause.
    run_out(2);
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/credit")
}

#[test]
fn transcripts_become_events_once_each() {
    let dir = tempfile::tempdir().expect("temp dir");
    let project = dir.path().join("-home-dev-project");
    std::fs::create_dir_all(&project).expect("mkdir");
    let mut state = TailState {
        started: true, // not the first pass: a new file is read from its start
        ..TailState::default()
    };
    let now = t0();
    let src = fixtures().join("transcripts/-home-dev-project/session-1.jsonl");
    let text = std::fs::read_to_string(&src).expect("fixture");
    let file = project.join("session-1.jsonl");
    std::fs::write(&file, &text).expect("copy");

    let events = transcripts::poll(Some(dir.path()), None, &mut state, now);
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Success,
            EventKind::RateLimit,
            EventKind::Overloaded,
            EventKind::Success,
            EventKind::UsageLimit,
            EventKind::Error,
        ]
    );
    // msg_01 is written twice (two content blocks) and counted once, with all its tokens.
    assert_eq!(events[0].tokens, Some(1200 + 300 + 5000 + 40));
    // The usage limit resets at the epoch in the message, whatever the local time zone.
    assert_eq!(
        events[4].reset_at,
        Some("2026-11-21T19:00:00Z".parse().expect("valid time"))
    );
    assert_eq!(
        events[1].ts,
        "2026-11-21T09:01:00Z"
            .parse::<DateTime<Utc>>()
            .expect("valid time")
    );

    // Nothing new: nothing read. The unterminated last line is read once it is complete,
    // and a response already counted is not counted again.
    assert!(transcripts::poll(Some(dir.path()), None, &mut state, now).is_empty());
    let mut more = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect("open");
    use std::io::Write;
    let rest = r#""}],"usage":{"input_tokens":1,"output_tokens":2}},"requestId":"req_03"}"#;
    writeln!(more, "{rest}").expect("append");
    let again = r#"{"type":"assistant","message":{"id":"msg_02","usage":{"input_tokens":10,"output_tokens":90}},"requestId":"req_02"}"#;
    writeln!(more, "{again}").expect("append");
    drop(more);
    let events = transcripts::poll(Some(dir.path()), None, &mut state, now);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].tokens, Some(3));
}

#[test]
fn files_present_at_the_first_start_are_read_from_their_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("p").join("old.jsonl");
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::copy(
        fixtures().join("transcripts/-home-dev-project/session-1.jsonl"),
        &file,
    )
    .expect("copy");
    let mut state = TailState::default();
    assert!(transcripts::poll(Some(dir.path()), None, &mut state, t0()).is_empty());
    assert!(state.started);
}

#[test]
fn the_outgoing_pc_goes_to_standby_once_the_next_pc_took_its_handoff() {
    let env = Env::new();
    env.alive("PC2", HeartbeatStatus::Idle, None);
    let working = InstanceStatus {
        format_version: 1,
        pc: pc("PC1"),
        state: InstanceState::Active,
        since: env.now(),
        current_work: Some(CurrentWork::new(TaskId::new("t1").expect("valid"))),
        claimed_tasks: vec![TaskId::new("t1").expect("valid")],
        handoff: None,
        epoch: 0,
    };
    fsio::save(&env.tree.instance_file(&pc("PC1")), &Doc::new(working)).expect("instance");
    let m = env.monitor("PC1");
    m.force_handoff().expect("force");
    let id = handoffs(&env)[0].id().expect("id");
    let state = |env: &Env| {
        fsio::load::<InstanceStatus>(&env.tree.instance_file(&pc("PC1")))
            .expect("instance")
            .value
    };
    assert_eq!(state(&env).state, InstanceState::HandoffReady);
    // Not taken yet: nothing moves.
    assert!(!m.settle_outgoing().expect("settle"));
    assert_eq!(state(&env).state, InstanceState::HandoffReady);
    // PC2's wake-daemon archives it.
    std::fs::create_dir_all(env.tree.processed_handoff_dir()).expect("dir");
    std::fs::rename(
        env.tree.handoff_file(&id),
        env.tree.processed_handoff_file(&id),
    )
    .expect("archive");
    assert!(m.settle_outgoing().expect("settle"));
    let after = state(&env);
    assert_eq!(after.state, InstanceState::Standby);
    assert!(after.current_work.is_none() && after.claimed_tasks.is_empty());
    // Once only.
    assert!(!m.settle_outgoing().expect("settle"));
}
