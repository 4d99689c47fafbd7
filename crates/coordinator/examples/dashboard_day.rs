//! A day of a three-PC fleet, played in seconds, for the dashboard page: `cargo run -p
//! coordinator --example dashboard_day -- [DIR]` (default: a new temporary directory, kept)
//! prints the page's path. The coordinator is the real one (its cycle every simulated minute,
//! a manual clock, one shared folder as with `sync.mode = "none"`); the PCs are scripted by
//! their files: they take the handoffs addressed to them, work a task for a few hours, submit it
//! for verification, meet a five-hour usage limit after four and a half hours of work and hand
//! off to the next PC, and one of them goes silent for a while. The docs' screenshot of the
//! page comes from it (`scripts/dashboard-screenshot.sh`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use coordinator::Coordinator;
use coordinator::cycle::read_pending;
use trinity_core::config::{Config, PhaseConfig, SyncMode};
use trinity_core::fsio;
use trinity_core::schema::{
    Claim, CreditLevel, CreditStatus, CurrentWork, Doc, Done, Fleet, Handoff, HandoffReason,
    Heartbeat, HeartbeatStatus, InstanceStatus, Outcome, Priority, Task, TaskRef, Verification,
};
use trinity_core::{Clock, HandoffId, InstanceState, ManualClock, PcId, TaskId, Tree};

/// Minutes of work a PC does before its usage limit.
const WORK_BEFORE_LIMIT: i64 = 270;
/// The usage limit's window.
const LIMIT_WINDOW: i64 = 300;
/// Minutes a task takes: two to four hours, by its name.
fn task_minutes(task: Option<&TaskId>) -> i64 {
    let seed = task.map_or(0, |t| t.as_str().bytes().map(i64::from).sum::<i64>());
    120 + seed * 37 % 120
}

#[derive(Debug, Default)]
struct Pc {
    task: Option<TaskId>,
    task_started: i64,
    worked: i64,
    exhausted_until: Option<DateTime<Utc>>,
    submitted: Option<HandoffId>,
    silent: bool,
    tokens: BTreeMap<String, u64>,
}

fn pc(s: &str) -> PcId {
    PcId::new(s).expect("valid pc")
}

fn main() {
    let dir = match std::env::args().nth(1) {
        Some(d) => PathBuf::from(d),
        None => tempfile::tempdir().expect("tempdir").keep(),
    };
    let tree = Tree::new(dir.join("state"));
    std::fs::create_dir_all(tree.root()).expect("state folder");
    let ids = [pc("PC1"), pc("PC2"), pc("PC3")];
    fsio::save(
        &tree.fleet_file(),
        &Doc::new(Fleet::new(ids.to_vec(), pc("PC3"))),
    )
    .expect("fleet");
    let end: DateTime<Utc> = "2026-12-05T17:00:00Z".parse().expect("time");
    let start = end - Duration::hours(24);
    let clock = ManualClock::new(start);
    let mut config = Config {
        pc: Some(pc("PC3")),
        state_dir: tree.root().to_owned(),
        ..Config::default()
    };
    config.sync.mode = SyncMode::None;
    config.agent.workdir = dir.display().to_string();
    config.coordinator.phases = vec![PhaseConfig {
        name: "unit".to_owned(),
        command: vec!["sh".to_owned(), "-c".to_owned(), "exit 0".to_owned()],
        critical: true,
        start_deadline: std::time::Duration::from_secs(10),
        run_deadline: std::time::Duration::from_secs(60),
    }];
    let mut pcs: BTreeMap<PcId, Pc> = ids.iter().map(|p| (p.clone(), Pc::default())).collect();
    let mut coordinator = Coordinator::new(
        tree.clone(),
        pc("PC3"),
        config,
        None,
        Arc::new(clock.clone()),
    );
    let mut created = 0;
    for minute in 0..=24 * 60 {
        let now = clock.now();
        // The work: one task at a time in the night, two in the day.
        let wanted = if (840..1_300).contains(&minute) { 2 } else { 1 };
        while open_tasks(&tree) < wanted {
            new_task(&tree, created, now);
            created += 1;
        }
        // PC2 goes silent in the evening for an hour and a half.
        pcs.get_mut(&pc("PC2")).expect("PC2").silent = (1_080..1_170).contains(&minute);
        for id in &ids {
            play(&tree, &ids, &mut pcs, id, minute, now);
        }
        let report = coordinator.cycle().expect("cycle");
        assert!(
            coordinator.leading().is_some(),
            "minute {minute}: PC3 does not lead: {:?}",
            report.standing
        );
        // Verifications run as real processes: let them finish before the next minute.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while coordinator.verifying() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
            coordinator.cycle().expect("cycle");
        }
        clock.advance(std::time::Duration::from_secs(60));
    }
    println!("{}", tree.dashboard_html_file().display());
}

const NAMES: [&str; 9] = [
    "parser", "lexer", "api", "docs", "cache", "cli", "tests", "bench", "release",
];

fn new_task(tree: &Tree, n: usize, now: DateTime<Utc>) {
    let name = format!("{}-{}", NAMES[n % NAMES.len()], n / NAMES.len() + 1);
    let t = Task {
        format_version: 1,
        id: TaskId::new(&name).expect("task id"),
        description: format!("build the {name}"),
        priority: Priority::High,
        created_at: now,
        created_by: PcId::new("PC1").expect("pc"),
        dependencies: Vec::new(),
        role: None,
    };
    fsio::create(&tree.task_file(&t.id), &t).expect("task");
}

/// Tasks not done yet.
fn open_tasks(tree: &Tree) -> usize {
    let count = |dir: PathBuf| {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().filter(|e| e.path().is_file()).count())
            .unwrap_or(0)
    };
    let tasks = count(tree.spawn_queue_dir());
    let done = count(tree.done_dir());
    tasks.saturating_sub(done)
}

/// One minute of one scripted PC.
fn play(
    tree: &Tree,
    ids: &[PcId],
    pcs: &mut BTreeMap<PcId, Pc>,
    id: &PcId,
    minute: i64,
    now: DateTime<Utc>,
) {
    let me = pcs.get_mut(id).expect("pc");
    if me.silent {
        return;
    }
    // Its reset.
    if me.exhausted_until.is_some_and(|u| u <= now) {
        me.exhausted_until = None;
        me.worked = 0;
    }
    // Back from silence, its task reassigned (the claim is another PC's): it lets it go.
    if let Some(task) = me.task.clone()
        && fsio::load::<Claim>(&tree.claim_file(&task)).is_ok_and(|c| &c.value.pc != id)
    {
        me.task = None;
    }
    // A verdict on its submission: archive it, back on standby.
    if let Some(sub) = me.submitted.clone()
        && fsio::load::<Verification>(&tree.verification_file(&sub))
            .is_ok_and(|v| v.value.verdict.is_some())
    {
        archive(tree, &sub);
        me.submitted = None;
        me.task = None;
    }
    // A handoff for it (an assignment, a reassignment, a colleague's usage limit).
    if me.task.is_none() && me.exhausted_until.is_none() && me.submitted.is_none() {
        let keyring = trinity_core::trust::Keyring::open_or_closed(tree, true, Utc::now());
        for (hid, h) in read_pending(tree, &keyring) {
            if &h.to_pc != id || h.reason == HandoffReason::WorkComplete {
                continue;
            }
            let task = h
                .current_work
                .as_ref()
                .map(|w| w.task_id.clone())
                .or_else(|| h.task_queue.first().map(|t| t.id.clone()));
            archive(tree, &hid);
            if let Some(task) = task {
                let claim = Claim {
                    format_version: 1,
                    task_id: task.clone(),
                    pc: id.clone(),
                    claimed_at: now,
                    epoch: h.leader_epoch.unwrap_or(0),
                    handoff: Some(hid.clone()),
                };
                fsio::save(&tree.claim_file(&task), &Doc::new(claim)).expect("claim");
                me.task = Some(task);
                me.task_started = minute;
            }
            break;
        }
    }
    let working = me.task.is_some() && me.submitted.is_none() && me.exhausted_until.is_none();
    if working {
        me.worked += 1;
        // Tokens: a busy agent's minute, varying with the hour.
        let day = now.format("%Y-%m-%d").to_string();
        *me.tokens.entry(day).or_insert(0) += 6_000 + (minute as u64 * 7_919) % 5_000;
    }
    // Finished: submitted for verification.
    if working && minute - me.task_started >= task_minutes(me.task.as_ref()) {
        let task = me.task.clone().expect("task");
        let h = handoff(id, id, now, HandoffReason::WorkComplete, &task);
        let hid = h.id().expect("id");
        fsio::create(&tree.handoff_file(&hid), &h).expect("submission");
        let done = Done {
            format_version: 1,
            task_id: task.clone(),
            pc: id.clone(),
            finished_at: now,
            outcome: Outcome::Completed,
            summary: format!("{task} built and tested"),
            commit: None,
        };
        fsio::create(&tree.done_file(&task), &done).expect("done");
        let _ = std::fs::remove_file(tree.claim_file(&task));
        me.submitted = Some(hid);
    }
    // The usage limit: hand the task to the next PC that can take it.
    let mut handed_to = None;
    if me.task.is_some()
        && me.submitted.is_none()
        && me.exhausted_until.is_none()
        && me.worked >= WORK_BEFORE_LIMIT
    {
        me.exhausted_until = Some(now + Duration::minutes(LIMIT_WINDOW - WORK_BEFORE_LIMIT + 120));
        handed_to = me.task.take();
    }
    let state = match (&me.task, &me.submitted, me.exhausted_until) {
        (_, _, Some(_)) => InstanceState::HandoffComplete,
        (_, Some(_), _) => InstanceState::HandoffReady,
        (Some(_), None, None) => InstanceState::Active,
        (None, None, None) => InstanceState::Standby,
    };
    let status = match (state, me.exhausted_until) {
        (_, Some(_)) => HeartbeatStatus::Paused,
        (InstanceState::Active, _) => HeartbeatStatus::Active,
        _ => HeartbeatStatus::Idle,
    };
    let mut hb = Heartbeat::new(id.clone(), status, now);
    hb.paused_until = me.exhausted_until;
    fsio::save(&tree.heartbeat_file(id), &Doc::new(hb)).expect("heartbeat");
    let instance = InstanceStatus {
        format_version: 1,
        pc: id.clone(),
        state,
        since: now,
        current_work: me.task.as_ref().map(work),
        claimed_tasks: me.task.iter().cloned().collect(),
        handoff: me.submitted.clone(),
        epoch: 0,
    };
    fsio::save(&tree.instance_file(id), &Doc::new(instance)).expect("instance");
    let credit = CreditStatus {
        format_version: 1,
        pc: id.clone(),
        updated_at: now,
        level: if me.exhausted_until.is_some() {
            CreditLevel::Exhausted
        } else if me.worked > WORK_BEFORE_LIMIT - 40 {
            CreditLevel::Warning
        } else {
            CreditLevel::Healthy
        },
        rule: Some("usage_limit".to_owned()),
        fraction: me.worked as f64 / WORK_BEFORE_LIMIT as f64,
        reason: String::new(),
        rules: BTreeMap::new(),
        rate_limit_count: 0,
        error_rate: 0.01,
        avg_response_time: 3.2,
        exhausted_until: me.exhausted_until,
        next_pc: None,
        tokens_by_day: me.tokens.clone(),
    };
    fsio::save(&tree.credit_file(id), &Doc::new(credit)).expect("credit");
    if let Some(task) = handed_to {
        let pos = ids.iter().position(|p| p == id).expect("member");
        let next = (1..ids.len())
            .map(|k| &ids[(pos + k) % ids.len()])
            .find(|p| {
                let other = &pcs[*p];
                !other.silent
                    && other.exhausted_until.is_none()
                    && other.task.is_none()
                    && other.submitted.is_none()
            })
            .cloned();
        let me = pcs.get_mut(id).expect("pc");
        match next {
            Some(next) => {
                let h = handoff(id, &next, now, HandoffReason::UsageLimit, &task);
                let hid = h.id().expect("id");
                fsio::create(&tree.handoff_file(&hid), &h).expect("handoff");
                let _ = std::fs::remove_file(tree.claim_file(&task));
            }
            // Nobody free: it keeps the task for after its reset.
            None => me.task = Some(task),
        }
    }
}

fn work(task: &TaskId) -> CurrentWork {
    CurrentWork {
        task_id: task.clone(),
        progress: "in progress".to_owned(),
        completed_subtasks: Vec::new(),
        next_subtask: None,
        code: None,
        session: None,
        conversation_sha256: None,
    }
}

fn handoff(
    from: &PcId,
    to: &PcId,
    at: DateTime<Utc>,
    reason: HandoffReason,
    task: &TaskId,
) -> Handoff {
    Handoff {
        format_version: 1,
        from_pc: from.clone(),
        to_pc: to.clone(),
        timestamp: at,
        reason,
        task_queue: vec![TaskRef {
            id: task.clone(),
            description: format!("build the {task}"),
            priority: Priority::High,
        }],
        current_work: Some(work(task)),
        credit_state: None,
        epoch: None,
        authored_by: None,
        leader_epoch: None,
    }
}

fn archive(tree: &Tree, id: &HandoffId) {
    let from = tree.handoff_file(id);
    let to = tree.processed_handoff_file(id);
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).expect("processed dir");
    }
    let _ = std::fs::rename(from, to);
}
