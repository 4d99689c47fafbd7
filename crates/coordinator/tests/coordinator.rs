//! The coordinator's cycle, in-process, on one shared state folder (no git: the lease is the
//! file), with a manual clock: the 45-minute rules run in microseconds.
#![cfg_attr(not(unix), allow(unused_imports, dead_code))]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use coordinator::Coordinator;
use coordinator::leader::Standing;
use trinity_core::config::{Config, PhaseConfig, SyncMode};
use trinity_core::fsio;
use trinity_core::schema::{
    Claim, CurrentWork, Doc, Escalation, Fleet, Handoff, HandoffReason, Heartbeat, HeartbeatStatus,
    InstanceStatus, Lease, MultiInstanceStatus, Priority, Task, Verdict, Verification, WakeSignal,
};
use trinity_core::syncstate::SyncState;
use trinity_core::{HandoffId, InstanceState, ManualClock, PcId, TaskId, Tree};

fn pc(s: &str) -> PcId {
    PcId::new(s).expect("valid")
}

fn tid(s: &str) -> TaskId {
    TaskId::new(s).expect("valid")
}

fn t0() -> DateTime<Utc> {
    "2026-03-02T09:00:00Z".parse().expect("time")
}

struct Fixture {
    _dir: tempfile::TempDir,
    tree: Tree,
    clock: ManualClock,
    config: Config,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path().join("state"));
        std::fs::create_dir_all(tree.root()).expect("tree");
        fsio::save(
            &tree.fleet_file(),
            &Doc::new(Fleet::new(vec![pc("PC1"), pc("PC2"), pc("PC3")], pc("PC3"))),
        )
        .expect("fleet");
        let mut config = Config {
            pc: Some(pc("PC3")),
            state_dir: tree.root().to_owned(),
            ..Config::default()
        };
        config.sync.mode = SyncMode::None;
        config.agent.workdir = dir.path().display().to_string();
        let f = Self {
            _dir: dir,
            tree,
            clock: ManualClock::new(t0()),
            config,
        };
        for p in ["PC1", "PC2", "PC3"] {
            f.beat(p, HeartbeatStatus::Idle, &[]);
        }
        f
    }

    fn coordinator(&self, me: &str) -> Coordinator {
        let mut config = self.config.clone();
        config.pc = Some(pc(me));
        Coordinator::new(
            self.tree.clone(),
            pc(me),
            config,
            None,
            Arc::new(self.clock.clone()),
        )
    }

    fn now(&self) -> DateTime<Utc> {
        trinity_core::Clock::now(&self.clock)
    }

    fn beat(&self, who: &str, status: HeartbeatStatus, roles: &[&str]) {
        let mut hb = Heartbeat::new(pc(who), status, self.now());
        hb.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        fsio::save(&self.tree.heartbeat_file(&pc(who)), &Doc::new(hb)).expect("heartbeat");
    }

    fn task(&self, id: &str, priority: Priority, minute: i64, role: Option<&str>, deps: &[&str]) {
        let t = Task {
            format_version: 1,
            id: tid(id),
            description: format!("do {id}"),
            priority,
            created_at: t0() + chrono::Duration::minutes(minute),
            created_by: pc("PC1"),
            dependencies: deps.iter().map(|d| tid(d)).collect(),
            role: role.map(str::to_owned),
        };
        fsio::create(&self.tree.task_file(&t.id), &t).expect("task");
    }

    fn instance(
        &self,
        who: &str,
        state: InstanceState,
        work: Option<&str>,
        handoff: Option<&HandoffId>,
    ) {
        let i = InstanceStatus {
            format_version: 1,
            pc: pc(who),
            state,
            since: self.now(),
            current_work: work.map(|w| CurrentWork {
                task_id: tid(w),
                progress: "40%".to_owned(),
                completed_subtasks: vec!["outline".to_owned()],
                next_subtask: Some("body".to_owned()),
                code: None,
                session: None,
                conversation_sha256: None,
            }),
            claimed_tasks: work.map(|w| vec![tid(w)]).unwrap_or_default(),
            handoff: handoff.cloned(),
            epoch: 0,
        };
        fsio::save(&self.tree.instance_file(&pc(who)), &Doc::new(i)).expect("instance");
    }

    fn claim(&self, who: &str, task: &str, epoch: u64) {
        let c = Claim {
            format_version: 1,
            task_id: tid(task),
            pc: pc(who),
            claimed_at: self.now(),
            epoch,
            handoff: None,
        };
        fsio::save(&self.tree.claim_file(&tid(task)), &Doc::new(c)).expect("claim");
    }

    /// What `trinity work done` writes when a coordinator leads.
    fn submit(&self, who: &str, task: &str) -> HandoffId {
        let h = Handoff {
            format_version: 1,
            from_pc: pc(who),
            to_pc: pc(who),
            timestamp: self.now(),
            reason: HandoffReason::WorkComplete,
            task_queue: Vec::new(),
            current_work: Some(CurrentWork {
                task_id: tid(task),
                progress: "done".to_owned(),
                completed_subtasks: Vec::new(),
                next_subtask: None,
                code: None,
                session: None,
                conversation_sha256: None,
            }),
            credit_state: None,
            epoch: None,
            authored_by: None,
            leader_epoch: None,
        };
        let id = h.id().expect("id");
        fsio::create(&self.tree.handoff_file(&id), &h).expect("submission");
        let done = trinity_core::schema::Done {
            format_version: 1,
            task_id: tid(task),
            pc: pc(who),
            finished_at: self.now(),
            outcome: trinity_core::schema::Outcome::Completed,
            summary: String::new(),
            commit: None,
        };
        fsio::create(&self.tree.done_file(&tid(task)), &done).expect("done");
        self.instance(who, InstanceState::HandoffReady, None, Some(&id));
        id
    }

    fn pending(&self) -> Vec<Handoff> {
        coordinator::cycle::read_pending(
            &self.tree,
            &trinity_core::trust::Keyring::open_or_closed(&self.tree, true, chrono::Utc::now()),
        )
        .into_iter()
        .map(|(_, h)| h)
        .collect()
    }

    fn signals(&self, to: &str) -> Vec<WakeSignal> {
        let mut out: Vec<WakeSignal> = std::fs::read_dir(self.tree.wake_dir(&pc(to)))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fsio::load::<WakeSignal>(&e.path()).ok().map(|d| d.value))
            .collect();
        out.sort_by_key(|s| s.timestamp);
        out
    }

    fn files_in(&self, dir: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.tree.root().join(dir))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    }

    fn status(&self) -> MultiInstanceStatus {
        fsio::load::<MultiInstanceStatus>(&self.tree.multi_status_file())
            .expect("status")
            .value
    }
}

fn leads(report: &coordinator::CycleReport) -> bool {
    matches!(report.standing, Standing::Leading { .. })
}

#[test]
fn work_goes_to_standby_pcs_by_priority_dependencies_and_role_once() {
    let f = Fixture::new();
    f.beat("PC1", HeartbeatStatus::Idle, &["backend"]);
    f.beat("PC2", HeartbeatStatus::Idle, &["frontend"]);
    f.task("a-normal", Priority::Normal, 0, None, &[]);
    f.task("b-frontend", Priority::High, 1, Some("frontend"), &[]);
    f.task("c-critical", Priority::Critical, 2, None, &["a-normal"]);
    f.task("d-later", Priority::Low, 3, None, &[]);
    let mut c = f.coordinator("PC3");
    let r = c.cycle().expect("cycle");
    assert!(leads(&r), "{r:?}");

    let mut given: BTreeMap<String, String> = BTreeMap::new();
    for h in f.pending() {
        assert_eq!(h.reason, HandoffReason::Assignment);
        assert_eq!(h.authored_by, Some(pc("PC3")));
        assert_eq!(h.leader_epoch, Some(1));
        given.insert(h.to_pc.to_string(), h.task_queue[0].id.to_string());
    }
    // PC1 (backend) cannot take the frontend task: the oldest ready one; PC2 gets its role's;
    // PC3 (the leader, no roles) the next; the critical one waits for its dependency.
    assert_eq!(
        given,
        BTreeMap::from([
            ("PC1".to_owned(), "a-normal".to_owned()),
            ("PC2".to_owned(), "b-frontend".to_owned()),
            ("PC3".to_owned(), "d-later".to_owned()),
        ])
    );
    for p in ["PC1", "PC2", "PC3"] {
        let s = f.signals(p);
        assert_eq!(s.len(), 1, "{p}: {s:?}");
        assert_eq!(s[0].task, "assignment");
        assert_eq!(s[0].leader_epoch, Some(1));
    }
    // Nothing is given twice while the handoffs wait for their receivers.
    f.clock.advance(Duration::from_secs(30));
    let r = c.cycle().expect("cycle");
    assert!(
        r.lines().iter().all(|a| !a.starts_with("assigned")),
        "{:?}",
        r.actions
    );
    assert_eq!(f.pending().len(), 3);
    // Every file the leader wrote is valid in its place.
    let problems = trinity_core::validate::validate_tree(&f.tree);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn busy_exhausted_paused_and_silent_pcs_get_no_work() {
    let f = Fixture::new();
    f.task("t1", Priority::High, 0, None, &[]);
    f.task("t2", Priority::High, 1, None, &[]);
    f.task("t3", Priority::High, 2, None, &[]);
    f.instance("PC1", InstanceState::Active, Some("other"), None);
    let mut hb = Heartbeat::new(pc("PC2"), HeartbeatStatus::Paused, f.now());
    hb.paused_until = Some(f.now() + chrono::Duration::minutes(5));
    fsio::save(&f.tree.heartbeat_file(&pc("PC2")), &Doc::new(hb)).expect("hb");
    f.beat("PC3", HeartbeatStatus::Exhausted, &[]);
    let mut c = f.coordinator("PC3");
    c.cycle().expect("cycle");
    assert!(f.pending().is_empty(), "{:?}", f.pending());
}

fn phase(name: &str, script: &str, critical: bool, run_deadline: Duration) -> PhaseConfig {
    PhaseConfig {
        name: name.to_owned(),
        command: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
        critical,
        start_deadline: Duration::from_secs(10),
        run_deadline,
    }
}

/// Cycles until the submission has a verdict.
fn verdict_of(f: &Fixture, c: &mut Coordinator, id: &HandoffId) -> Verification {
    let path = f.tree.verification_file(id);
    let mut v = None;
    trinity_testkit::wait_for("the verdict", || {
        c.cycle().expect("cycle");
        v = fsio::load::<Verification>(&path)
            .ok()
            .map(|d| d.value)
            .filter(|v| v.verdict.is_some());
        v.is_some()
    });
    // One more cycle delivers it.
    c.cycle().expect("cycle");
    v.expect("verdict")
}

#[cfg(unix)]
#[test]
fn finished_work_is_approved_denied_or_escalated_by_its_phases() {
    let long = Duration::from_secs(60);
    let cases: Vec<(Vec<PhaseConfig>, Verdict, &str)> = vec![
        (
            vec![
                phase("unit", "echo 12 passed", true, long),
                phase(
                    "quality",
                    "echo '{\"critical\":0,\"high\":0,\"medium\":1,\"coverage\":0.9,\"benchmarks_ok\":true}'",
                    false,
                    long,
                ),
            ],
            Verdict::Approve,
            "all 2 phase(s) passed",
        ),
        (
            vec![phase("unit", "echo 3 failed >&2; exit 1", true, long)],
            Verdict::Deny,
            "critical phase unit failed (exit code 1)",
        ),
        (
            vec![phase(
                "bench",
                "echo '{\"benchmarks_ok\":false}'",
                false,
                long,
            )],
            Verdict::Deny,
            "benchmark regression",
        ),
        (
            vec![phase("slow", "sleep 30", true, Duration::from_millis(300))],
            Verdict::Escalate,
            "ran past its deadline",
        ),
        (
            vec![phase("lint", "exit 2", false, long)],
            Verdict::Escalate,
            "phase lint failed",
        ),
    ];
    for (phases, want, reason) in cases {
        let mut f = Fixture::new();
        f.config.coordinator.phases = phases;
        f.config.coordinator.coverage_min = 0.8;
        f.task("feature", Priority::High, 0, None, &[]);
        let id = f.submit("PC1", "feature");
        let mut c = f.coordinator("PC3");
        let v = verdict_of(&f, &mut c, &id);
        assert_eq!(v.verdict, Some(want), "{v:?}");
        assert!(
            v.reasons.iter().any(|r| r.contains(reason)),
            "{:?} lacks {reason}",
            v.reasons
        );
        assert_eq!(v.task, Some(tid("feature")));
        assert_eq!((v.coordinator.as_str(), v.epoch), ("PC3", 1));
        assert!(
            v.phases.iter().all(|p| p.duration_s.is_some()
                || p.status == trinity_core::schema::PhaseStatus::NotStarted)
        );

        let to_pc1 = f.signals("PC1");
        let verdicts: Vec<_> = to_pc1.iter().filter(|s| s.task == "verdict").collect();
        assert_eq!(verdicts.len(), 1, "exactly one verdict signal: {to_pc1:?}");
        assert_eq!(verdicts[0].handoff.as_ref(), Some(&id));
        let remediations: Vec<Handoff> = f
            .pending()
            .into_iter()
            .filter(|h| h.reason == HandoffReason::Remediation)
            .collect();
        let escalations = f.files_in("escalations");
        match want {
            Verdict::Approve => {
                assert!(remediations.is_empty());
                assert!(escalations.is_empty());
                assert!(f.tree.done_file(&tid("feature")).exists());
            }
            Verdict::Deny => {
                assert_eq!(remediations.len(), 1);
                let r = &remediations[0];
                assert_eq!(r.to_pc, pc("PC1"));
                assert_eq!(r.task_queue[0].id, tid("feature"));
                let work = r.current_work.as_ref().expect("work");
                assert!(work.progress.contains(reason), "{}", work.progress);
                assert!(
                    !f.tree.done_file(&tid("feature")).exists(),
                    "the task is not done after all"
                );
                assert!(to_pc1.iter().any(|s| s.task == "remediation"));
                assert!(escalations.is_empty());
            }
            Verdict::Escalate => {
                assert!(remediations.is_empty());
                assert_eq!(escalations.len(), 1, "{escalations:?}");
                let e = fsio::load::<Escalation>(&escalations[0])
                    .expect("escalation")
                    .value;
                assert_eq!(e.handoff.as_ref(), Some(&id));
                assert!(e.summary.contains("decide on PC1's work"), "{}", e.summary);
                // Its wake-daemon took the verdict (VERIFICATION until a person decides);
                // meanwhile the PC gets new work.
                f.instance("PC1", InstanceState::Verification, None, Some(&id));
                std::fs::create_dir_all(f.tree.processed_handoff_dir()).expect("dir");
                std::fs::rename(f.tree.handoff_file(&id), f.tree.processed_handoff_file(&id))
                    .expect("archive");
                f.task("next-one", Priority::Normal, 5, None, &[]);
                let r = c.cycle().expect("cycle");
                assert!(
                    r.lines()
                        .iter()
                        .any(|a| a.starts_with("assigned next-one") && a.contains("to PC1")),
                    "{:?}",
                    r.actions
                );
            }
        }
        // Nothing is delivered twice, and a new leader asks for no second fix.
        for _ in 0..3 {
            c.cycle().expect("cycle");
        }
        let mut fresh = f.coordinator("PC3");
        fresh.cycle().expect("cycle");
        fresh.cycle().expect("cycle");
        let again = f
            .pending()
            .into_iter()
            .filter(|h| h.reason == HandoffReason::Remediation)
            .count();
        assert_eq!(again, remediations.len());
        let problems = trinity_core::validate::validate_tree(&f.tree);
        assert!(problems.is_empty(), "{problems:?}");
        let status = f.status();
        assert_eq!(
            status.kpis.auto_approval_rate,
            Some(if want == Verdict::Approve { 1.0 } else { 0.0 })
        );
    }
}

#[test]
fn without_phases_finished_work_is_approved_and_says_it_was_unchecked() {
    let f = Fixture::new();
    f.task("feature", Priority::High, 0, None, &[]);
    let id = f.submit("PC1", "feature");
    let mut c = f.coordinator("PC3");
    let v = verdict_of(&f, &mut c, &id);
    assert_eq!(v.verdict, Some(Verdict::Approve));
    assert!(
        v.reasons[0].contains("no verification phases"),
        "{:?}",
        v.reasons
    );
}

#[test]
fn a_silent_pc_is_suspect_then_refuted_by_a_fresh_heartbeat() {
    let f = Fixture::new();
    let mut c = f.coordinator("PC3");
    c.cycle().expect("cycle");
    let keep_alive = |f: &Fixture| f.beat("PC2", HeartbeatStatus::Idle, &[]);
    f.clock.advance(Duration::from_secs(14 * 60));
    keep_alive(&f);
    c.cycle().expect("cycle");
    assert!(f.signals("PC1").is_empty(), "14 minutes of silence is fine");
    f.clock.advance(Duration::from_secs(60));
    keep_alive(&f);
    let r = c.cycle().expect("cycle");
    assert!(
        r.lines().iter().any(|a| a.contains("PC1 is SUSPECT")),
        "{:?}",
        r.actions
    );
    let s = f.signals("PC1");
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].task, "reactivation");
    assert!(f.signals("PC2").is_empty(), "PC2 kept beating");
    // Woken once per silence.
    f.clock.advance(Duration::from_secs(60));
    keep_alive(&f);
    c.cycle().expect("cycle");
    assert_eq!(f.signals("PC1").len(), 1);
    // Its wake-daemon answers: a fresh heartbeat. Alive again; nothing is reassigned later
    // while it keeps beating.
    f.beat("PC1", HeartbeatStatus::Idle, &[]);
    // (Reports are written at most every REPORT_SPACING.)
    f.clock.advance(coordinator::cycle::REPORT_SPACING);
    f.beat("PC2", HeartbeatStatus::Idle, &[]);
    c.cycle().expect("cycle");
    assert_eq!(
        f.status().instances[&pc("PC1")].liveness,
        trinity_core::schema::Liveness::Alive
    );
    for _ in 0..6 {
        f.clock.advance(Duration::from_secs(10 * 60));
        f.beat("PC1", HeartbeatStatus::Active, &[]);
        keep_alive(&f);
        c.cycle().expect("cycle");
    }
    assert!(f.files_in("postmortems").is_empty());
    assert_eq!(f.signals("PC1").len(), 1);
}

/// git-sync's report, as of now: every local change and everything on the remote seen.
fn synced(f: &Fixture, remote_seen_at: DateTime<Utc>) {
    SyncState {
        in_sync_at: Some(f.now()),
        remote_seen_at: Some(remote_seen_at),
        ..SyncState::default()
    }
    .save(&f.tree)
    .expect("sync state");
}

#[test]
fn a_leader_that_cannot_see_the_remote_declares_nobody_dead() {
    let mut f = Fixture::new();
    f.config.sync.mode = SyncMode::Git;
    f.task("chunk2", Priority::High, 0, None, &[]);
    f.claim("PC1", "chunk2", 3);
    f.instance("PC1", InstanceState::Active, Some("chunk2"), None);
    let mut c = f.coordinator("PC3");
    // Leading (the lease confirmed by git-sync), every PC seen.
    c.cycle().expect("cycle");
    f.clock.advance(Duration::from_secs(1));
    synced(&f, f.now());
    c.cycle().expect("cycle");
    assert!(c.leading().is_some());
    let cut_off = f.now();
    // An hour passes in which this PC's git-sync brings nothing in (its network is down, or
    // it is too busy): PC1 is silent, and so is everyone else as far as it can tell.
    // (Its own pushes still get out: it keeps the lease.)
    for _ in 0..60 {
        f.clock.advance(Duration::from_secs(59));
        c.cycle().expect("cycle");
        f.clock.advance(Duration::from_secs(1));
        synced(&f, cut_off);
    }
    assert!(c.leading().is_some());
    assert!(
        f.files_in("postmortems").is_empty(),
        "nobody is dead for a blind leader"
    );
    // The remote is seen again and PC2 has been reporting meanwhile; PC1 has not: it is dead.
    f.beat("PC2", HeartbeatStatus::Idle, &[]);
    synced(&f, f.now());
    let r = c.cycle().expect("cycle");
    assert!(
        r.lines().iter().any(|a| a.contains("PC1 is DEAD")),
        "{:?}",
        r.actions
    );
    assert_eq!(f.files_in("postmortems").len(), 1);
}

#[test]
fn a_dead_pcs_work_is_reassigned_with_a_higher_epoch_and_a_post_mortem() {
    let f = Fixture::new();
    f.task("chunk2", Priority::High, 0, None, &[]);
    f.claim("PC1", "chunk2", 3);
    f.instance("PC1", InstanceState::Active, Some("chunk2"), None);
    let mut c = f.coordinator("PC3");
    c.cycle().expect("cycle");
    for _ in 0..8 {
        f.clock.advance(Duration::from_secs(5 * 60));
        f.beat("PC2", HeartbeatStatus::Idle, &[]);
        c.cycle().expect("cycle");
    }
    f.clock.advance(Duration::from_secs(4 * 60));
    f.beat("PC2", HeartbeatStatus::Idle, &[]);
    c.cycle().expect("cycle");
    assert!(
        f.files_in("postmortems").is_empty(),
        "44 minutes: not dead yet"
    );
    f.clock.advance(Duration::from_secs(60));
    f.beat("PC2", HeartbeatStatus::Idle, &[]);
    let r = c.cycle().expect("cycle");
    assert!(
        r.lines()
            .iter()
            .any(|a| a.contains("PC1 is DEAD") && a.contains("to PC2")),
        "{:?}",
        r.actions
    );
    let h: Vec<Handoff> = f
        .pending()
        .into_iter()
        .filter(|h| h.reason == HandoffReason::Reassignment)
        .collect();
    assert_eq!(h.len(), 1, "{h:?}");
    let h = &h[0];
    assert_eq!((h.from_pc.as_str(), h.to_pc.as_str()), ("PC1", "PC2"));
    assert_eq!(h.epoch, Some(4), "above the claim's epoch");
    assert_eq!(h.leader_epoch, Some(1));
    assert_eq!(
        h.current_work.as_ref().map(|w| w.progress.as_str()),
        Some("40%")
    );
    let s = f.signals("PC2");
    assert!(
        s.iter()
            .any(|s| s.task == "reassignment" && s.epoch == Some(4)),
        "{s:?}"
    );
    let pms = f.files_in("postmortems");
    assert_eq!(pms.len(), 1);
    let pm = std::fs::read_to_string(&pms[0]).expect("post-mortem");
    assert!(pm.contains("# PC1 declared dead"), "{pm}");
    assert!(
        pm.contains("chunk2") && pm.contains("to PC2 at work epoch 4"),
        "{pm}"
    );
    // Once per death.
    f.clock.advance(Duration::from_secs(60));
    f.beat("PC2", HeartbeatStatus::Idle, &[]);
    c.cycle().expect("cycle");
    assert_eq!(f.files_in("postmortems").len(), 1);
    assert_eq!(
        f.pending()
            .iter()
            .filter(|h| h.reason == HandoffReason::Reassignment)
            .count(),
        1
    );
    let problems = trinity_core::validate::validate_tree(&f.tree);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn work_given_to_a_pc_that_died_before_taking_it_goes_to_a_live_one() {
    let f = Fixture::new();
    f.task("orphan", Priority::High, 0, None, &[]);
    // PC2 and PC3 are busy; PC1 gets the task, but its wake-daemon never takes it.
    f.instance("PC2", InstanceState::Active, Some("x2"), None);
    f.instance("PC3", InstanceState::Active, Some("x3"), None);
    let mut c = f.coordinator("PC3");
    c.cycle().expect("cycle");
    let given: Vec<Handoff> = f.pending();
    assert_eq!(given.len(), 1);
    assert_eq!(given[0].to_pc, pc("PC1"));
    // PC1 falls silent; PC2 becomes free.
    f.instance("PC2", InstanceState::Standby, None, None);
    for _ in 0..10 {
        f.clock.advance(Duration::from_secs(5 * 60));
        f.beat("PC2", HeartbeatStatus::Idle, &[]);
        c.cycle().expect("cycle");
    }
    let re: Vec<Handoff> = f
        .pending()
        .into_iter()
        .filter(|h| h.reason == HandoffReason::Reassignment)
        .collect();
    assert_eq!(re.len(), 1, "{:?}", f.pending());
    assert_eq!(re[0].to_pc, pc("PC2"));
    assert_eq!(re[0].task_queue[0].id, tid("orphan"));
}

#[test]
fn a_deposed_leader_stops_at_once_and_writes_nothing() {
    let f = Fixture::new();
    // PC1 leads: the preferred PC3 runs no coordinator, so PC1 took the lease after lease_ttl.
    let mut old = f.coordinator("PC1");
    assert!(!leads(&old.cycle().expect("cycle")));
    f.clock.advance(Duration::from_secs(120));
    assert!(leads(&old.cycle().expect("cycle")));
    let status_before = std::fs::read(f.tree.multi_status_file()).expect("status");
    // PC2 took the lease over (PC1 looked dead to it).
    let lease = Lease {
        format_version: 1,
        holder: pc("PC2"),
        epoch: 2,
        acquired_at: f.now(),
        renewed_at: f.now(),
        expires_at: f.now() + chrono::Duration::minutes(2),
    };
    fsio::save(&f.tree.lease_file(), &Doc::new(lease)).expect("lease");
    // Work that a leader would act on at once.
    f.task("urgent", Priority::Critical, 0, None, &[]);
    f.submit("PC2", "urgent");
    let r = old.cycle().expect("cycle");
    assert!(!leads(&r), "{r:?}");
    assert!(r.actions.is_empty(), "{:?}", r.actions);
    assert!(
        f.pending()
            .iter()
            .all(|h| h.reason == HandoffReason::WorkComplete)
    );
    assert!(f.files_in("verification").is_empty());
    assert_eq!(
        std::fs::read(f.tree.multi_status_file()).expect("status"),
        status_before
    );
}

#[test]
fn kpis_come_from_the_verification_history() {
    let f = Fixture::new();
    let mk = |n: u32, verdict: Verdict, minutes: i64, critical_fail: bool| {
        let at = t0() - chrono::Duration::hours(i64::from(n) + 1);
        let id = HandoffId::from_parts(&pc("PC1"), &pc("PC1"), at).expect("id");
        let v = Verification {
            format_version: 1,
            handoff_id: id.clone(),
            pc: pc("PC1"),
            task: None,
            coordinator: pc("PC3"),
            epoch: 1,
            started_at: at,
            finished_at: Some(at + chrono::Duration::minutes(minutes)),
            phases: vec![trinity_core::schema::PhaseResult {
                exit_code: Some(i32::from(critical_fail)),
                duration_s: Some(1.0),
                ..trinity_core::schema::PhaseResult::new(
                    "unit",
                    if critical_fail {
                        trinity_core::schema::PhaseStatus::Failed
                    } else {
                        trinity_core::schema::PhaseStatus::Passed
                    },
                    true,
                )
            }],
            verdict: Some(verdict),
            reasons: vec!["r".to_owned()],
        };
        fsio::save(&f.tree.verification_file(&id), &Doc::new(v)).expect("verification");
    };
    // 7 approved in 4, 6, 8, 10, 12, 14, 16 minutes; one denied on a critical failure; two escalated.
    for (n, m) in [4, 6, 8, 10, 12, 14, 16].into_iter().enumerate() {
        mk(n as u32, Verdict::Approve, m, false);
    }
    mk(7, Verdict::Deny, 3, true);
    mk(8, Verdict::Escalate, 3, false);
    mk(9, Verdict::Escalate, 3, false);
    let mut c = f.coordinator("PC3");
    c.cycle().expect("cycle");
    let k = f.status().kpis;
    assert_eq!(k.handoff_cycle_time_median_s, Some(600.0));
    assert_eq!(k.auto_approval_rate, Some(0.7));
    assert_eq!(k.integration_issue_rate, Some(0.1));
    assert_eq!(k.escalation_rate, Some(0.2));
    let week = std::fs::read_to_string(f.tree.reports_dir().join("kpi-2026-W10.md"))
        .expect("weekly review");
    assert!(
        week.contains("| auto-approval rate | 70.0% | > 95% | **no** |"),
        "{week}"
    );
    assert!(
        week.contains(
            "| handoff cycle time (ready → approved, median) | 10.0 min | < 15 min | yes |"
        ),
        "{week}"
    );
}

/// A tiny ntfy stand-in: records (title, body) of every POST.
type Received = Arc<Mutex<Vec<(String, String)>>>;

fn ntfy() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/trinity", listener.local_addr().expect("addr"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut title = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                // Header names in any case (HTTP/1.1 makes no difference).
                if let Some((name, v)) = line.split_once(':') {
                    match name.trim().to_ascii_lowercase().as_str() {
                        "title" => title = v.trim().to_owned(),
                        "content-length" => len = v.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            g.lock()
                .expect("lock")
                .push((title, String::from_utf8_lossy(&body).into_owned()));
            let mut s = stream;
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

#[test]
fn notifications_go_out_once_per_event() {
    let (url, got) = ntfy();
    let mut f = Fixture::new();
    f.config.coordinator.notify_url = url;
    f.task("feature", Priority::High, 0, None, &[]);
    f.task("other", Priority::Low, 1, None, &[]);
    f.claim("PC2", "other", 0);
    f.instance("PC2", InstanceState::Active, Some("other"), None);
    let mut c = f.coordinator("PC3");
    c.cycle().expect("cycle");
    f.submit("PC1", "feature");
    for _ in 0..4 {
        c.cycle().expect("cycle");
    }
    // PC2 dies.
    for _ in 0..10 {
        f.clock.advance(Duration::from_secs(5 * 60));
        f.beat("PC1", HeartbeatStatus::Idle, &[]);
        c.cycle().expect("cycle");
    }
    let titles = || -> Vec<String> {
        got.lock()
            .expect("lock")
            .iter()
            .map(|(t, _)| t.clone())
            .collect()
    };
    trinity_testkit::wait_for("the notifications", || {
        let t = titles();
        t.iter().any(|x| x.contains("APPROVE PC1")) && t.iter().any(|x| x.contains("PC2 is dead"))
    });
    let t = titles();
    let count = |needle: &str| t.iter().filter(|x| x.contains(needle)).count();
    assert_eq!(count("PC1 finished work"), 1, "{t:?}");
    assert_eq!(count("APPROVE PC1"), 1, "{t:?}");
    assert_eq!(count("PC2 is dead"), 1, "{t:?}");
    let bodies: Vec<String> = got
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    assert!(
        bodies.iter().any(|b| b.contains("reassigned to")),
        "{bodies:?}"
    );
}

/// Notifications over HTTPS to a webhook (a server with a certificate authority of its own,
/// trusted through `notify_ca_file`), in Slack's shape, retried when the server fails.
#[cfg(unix)]
#[test]
fn notifications_reach_an_https_webhook_and_a_failing_server_is_tried_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = trinity_netbed::https::Capture::start(dir.path()).expect("https server");
    let mut f = Fixture::new();
    f.config.coordinator.notify_url = hook.url("/services/T0/B0/XYZSECRET");
    f.config.coordinator.notify_ca_file = hook.ca_file().display().to_string();
    // The URL is not Slack's own host: say which shape it takes.
    f.config.coordinator.notify_format = "slack".to_owned();
    // The server fails twice (a 503, a 502), then takes the message; the next one it refuses
    // (404: a deleted webhook), which is final.
    hook.reply_next(&[503, 502, 200, 404]);
    f.task("feature", Priority::High, 0, None, &[]);
    let mut c = f.coordinator("PC3");
    c.cycle().expect("cycle");
    // PC1 submits its work: announced, then approved (no phases configured) — two messages.
    f.submit("PC1", "feature");
    c.cycle().expect("cycle");
    assert!(c.flush_notifications(Duration::from_secs(30)), "delivered");
    let got = hook.requests();
    let text = |r: &trinity_netbed::https::Captured| -> String {
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        body["text"].as_str().expect("text").to_owned()
    };
    let finished: Vec<_> = got
        .iter()
        .filter(|r| text(r).starts_with("*Trinity: PC1 finished work*\n"))
        .collect();
    assert_eq!(finished.len(), 3, "two failures, then delivered: {got:?}");
    for r in &got {
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/services/T0/B0/XYZSECRET");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let approved: Vec<_> = got
        .iter()
        .filter(|r| text(r).starts_with("*Trinity: APPROVE PC1*"))
        .collect();
    assert_eq!(approved.len(), 1, "a 404 is not tried again: {got:?}");
    assert_eq!(got.len(), 4, "{got:?}");
}

/// A notification URL whose certificate no trusted authority signed is refused: nothing is sent.
#[cfg(unix)]
#[test]
fn an_https_server_with_an_unknown_authority_is_not_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = trinity_netbed::https::Capture::start(dir.path()).expect("https server");
    let mut f = Fixture::new();
    f.config.coordinator.notify_url = hook.url("/topic");
    f.task("feature", Priority::High, 0, None, &[]);
    let mut c = f.coordinator("PC3");
    c.cycle().expect("cycle");
    f.submit("PC1", "feature");
    c.cycle().expect("cycle");
    // Given up at once: a certificate that does not verify is not tried again.
    assert!(c.flush_notifications(Duration::from_secs(30)), "given up");
    assert!(
        hook.requests().is_empty(),
        "no request may reach an untrusted server: {:?}",
        hook.requests()
    );
}

/// The dashboard page, rendered by a real browser when one is installed (CI installs
/// Debian's `chromium`).
#[test]
fn the_dashboard_page_renders_the_fleet() {
    let f = Fixture::new();
    let credit = trinity_core::schema::CreditStatus {
        format_version: 1,
        pc: pc("PC1"),
        updated_at: f.now(),
        level: trinity_core::schema::CreditLevel::Warning,
        rule: Some("rate_limit".to_owned()),
        fraction: 0.6,
        reason: "3 of 5 rate limits".to_owned(),
        rules: BTreeMap::new(),
        rate_limit_count: 3,
        error_rate: 0.25,
        avg_response_time: 4.5,
        exhausted_until: None,
        next_pc: Some(pc("PC2")),
        tokens_by_day: BTreeMap::new(),
    };
    fsio::save(&f.tree.credit_file(&pc("PC1")), &Doc::new(credit)).expect("credit");
    f.task("feature", Priority::High, 0, None, &[]);
    f.claim("PC1", "feature", 0);
    f.instance("PC1", InstanceState::Active, Some("feature"), None);
    let mut c = f.coordinator("PC3");
    c.cycle().expect("cycle");
    let page = f.tree.dashboard_html_file();
    let html = std::fs::read_to_string(&page).expect("page");
    assert!(html.contains("<td class=\"warn\">WARNING</td>"), "{html}");
    let Some(dom) = rendered(&page) else {
        return;
    };
    for want in [
        "Trinity fleet",
        "PC1",
        "WARNING",
        "25%",
        "4.5 s",
        "ACTIVE",
        "feature",
        "next PC: PC2",
        "coordinator PC3 (lease epoch 1)",
    ] {
        assert!(
            dom.contains(want),
            "the rendered page lacks {want:?}:\n{dom}"
        );
    }
}

/// A day of the fleet on the page: PC1 works, meets its usage limit and hands off to PC2; the
/// leader restarts. The timeline has both phases of PC1 with the reset ahead, the handoff
/// drawn between the rows, the countdown, the tokens per day, the latest events, and the last
/// action survives the restart.
#[test]
fn the_dashboard_draws_the_day_with_handoffs_resets_and_tokens() {
    use trinity_core::schema::{CreditLevel, CreditStatus, Phase, Timeline};
    let f = Fixture::new();
    let credit = |level: CreditLevel, until: Option<DateTime<Utc>>| CreditStatus {
        format_version: 1,
        pc: pc("PC1"),
        updated_at: f.now(),
        level,
        rule: Some("usage_limit".to_owned()),
        fraction: 0.5,
        reason: String::new(),
        rules: BTreeMap::new(),
        rate_limit_count: 0,
        error_rate: 0.0,
        avg_response_time: 2.0,
        exhausted_until: until,
        next_pc: Some(pc("PC2")),
        tokens_by_day: [("2026-03-01", 912_450), ("2026-03-02", 1_843_200)]
            .into_iter()
            .map(|(d, n)| (d.to_owned(), n))
            .collect(),
    };
    let save_credit = |c: CreditStatus| {
        fsio::save(&f.tree.credit_file(&pc("PC1")), &Doc::new(c)).expect("credit");
    };
    // 09:00: PC1 works; a task waits and the leader gives it to a PC on standby.
    save_credit(credit(CreditLevel::Healthy, None));
    f.beat("PC1", HeartbeatStatus::Active, &[]);
    f.task("feature", Priority::High, 0, None, &[]);
    f.claim("PC1", "feature", 0);
    f.instance("PC1", InstanceState::Active, Some("feature"), None);
    f.task("docs", Priority::Medium, 0, None, &[]);
    let mut c = f.coordinator("PC3");
    let report = c.cycle().expect("cycle");
    assert!(
        report.lines().iter().any(|a| a.contains("docs")),
        "{:?}",
        report.actions
    );
    // 12:00: PC1 met its usage limit (reset 12:43), handed off to PC2 and pauses.
    f.clock.advance(Duration::from_secs(3 * 3600));
    let reset = f.now() + chrono::Duration::minutes(43);
    save_credit(credit(CreditLevel::Exhausted, Some(reset)));
    let mut hb = Heartbeat::new(pc("PC1"), HeartbeatStatus::Paused, f.now());
    hb.paused_until = Some(reset);
    fsio::save(&f.tree.heartbeat_file(&pc("PC1")), &Doc::new(hb)).expect("heartbeat");
    f.instance("PC1", InstanceState::HandoffComplete, None, None);
    f.beat("PC2", HeartbeatStatus::Active, &[]);
    f.beat("PC3", HeartbeatStatus::Idle, &[]);
    f.instance("PC2", InstanceState::Active, Some("feature"), None);
    let h = bare_handoff(
        "PC1",
        "PC2",
        f.now() - chrono::Duration::minutes(1),
        HandoffReason::UsageLimit,
    );
    let id = h.id().expect("id");
    fsio::create(&f.tree.processed_handoff_file(&id), &h).expect("archived handoff");
    c.cycle().expect("cycle");
    // 12:01: the leader restarts (its memory gone); it carries the timeline on.
    drop(c);
    f.clock.advance(Duration::from_secs(60));
    for (p, s) in [
        ("PC2", HeartbeatStatus::Active),
        ("PC3", HeartbeatStatus::Idle),
    ] {
        f.beat(p, s, &[]);
    }
    let mut c = f.coordinator("PC3");
    c.cycle().expect("cycle");

    let tl = fsio::load::<Timeline>(&f.tree.timeline_file())
        .expect("timeline")
        .value;
    let pc1: Vec<_> = tl.pcs[&pc("PC1")]
        .iter()
        .map(|s| (s.phase, s.from, s.until))
        .collect();
    let noon = t0() + chrono::Duration::hours(3);
    assert_eq!(
        pc1,
        [
            (Phase::Active, t0(), None),
            (Phase::Exhausted, noon, Some(reset)),
        ],
        "the restarted leader carries PC1's phase on: {tl:#?}"
    );
    assert!(
        tl.events
            .iter()
            .any(|e| e.handoff == id && e.reason == HandoffReason::UsageLimit),
        "{tl:#?}"
    );
    let page = f.tree.dashboard_html_file();
    let html = std::fs::read_to_string(&page).expect("page");
    for want in [
        r#"<rect class="span active""#,
        r#"<rect class="span exhausted""#,
        r#"<rect class="ahead""#,
        r#"<line class="handoff""#,
        "<b>PC1</b> exhausted until <b>12:43 UTC</b> — in 42m (as of 12:01 UTC)",
        "<td class=\"n\">1.84 M</td>",
        "<td class=\"n\">912 k</td>",
        "handoff PC1 → PC2 (usage limit)",
        "assigned a task to",
    ] {
        assert!(html.contains(want), "the page lacks {want:?}:\n{html}");
    }
    assert!(
        !html.contains("Last autonomous action: none yet"),
        "the restarted leader forgot the last action:\n{html}"
    );
    let Some(dom) = rendered(&page) else {
        return;
    };
    // Parsed as SVG inside HTML: the drawing's elements are in the document.
    for want in [
        "<svg id=\"timeline-day\"",
        "<svg id=\"timeline-hour\"",
        "class=\"span exhausted\"",
        "class=\"handoff\"",
        "Usage-limit resets",
        "exhausted until",
        "1.84 M",
    ] {
        assert!(
            dom.contains(want),
            "the rendered page lacks {want:?}:\n{dom}"
        );
    }
}

/// A handoff from `from` to `to` that carries no task or work (what a credit handoff of an
/// idle PC writes).
fn bare_handoff(from: &str, to: &str, at: DateTime<Utc>, reason: HandoffReason) -> Handoff {
    Handoff {
        format_version: 1,
        from_pc: pc(from),
        to_pc: pc(to),
        timestamp: at,
        reason,
        task_queue: Vec::new(),
        current_work: None,
        credit_state: None,
        epoch: None,
        authored_by: None,
        leader_epoch: None,
    }
}

/// The page's document as headless Chromium parsed it; `None` (said) where there is no Chromium.
fn rendered(page: &std::path::Path) -> Option<String> {
    let Some(browser) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| which(b).is_some())
    else {
        eprintln!("no chromium here: the page was checked as text only");
        return None;
    };
    let out = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

#[cfg(unix)]
#[test]
fn credit_handoffs_are_verified_after_the_fact_when_configured() {
    let mut f = Fixture::new();
    f.config.coordinator.verify_credit_handoffs = true;
    f.config.coordinator.phases = vec![phase("unit", "exit 1", true, Duration::from_secs(60))];
    let h = bare_handoff("PC1", "PC2", f.now(), HandoffReason::CreditExhaustion);
    let id = h.id().expect("id");
    let mut c = f.coordinator("PC3");
    c.cycle().expect("cycle");
    fsio::create(&f.tree.handoff_file(&id), &h).expect("handoff");
    let v = verdict_of(&f, &mut c, &id);
    assert_eq!(v.verdict, Some(Verdict::Deny));
    // The work already moved on: a record, no verdict signal, no remediation.
    assert!(f.signals("PC1").is_empty(), "{:?}", f.signals("PC1"));
    assert!(
        f.pending()
            .iter()
            .all(|h| h.reason == HandoffReason::CreditExhaustion)
    );
}
