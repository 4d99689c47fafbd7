//! How long one coordinator cycle takes: `cargo run --release -p coordinator --example
//! cycle_bench -- [PCS] [TASKS] [ROUNDS]` (default: 3 PCs, 30 tasks; then 100 PCs with 10,000
//! tasks). Builds a state tree in a temporary directory (heartbeats, instance and credit files
//! for every PC; tasks, a third claimed and a third done), makes one PC the leader, and times
//! the cycles after the first (the steady state, every PC busy so nothing is assigned).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use coordinator::Coordinator;
use trinity_core::config::{Config, SyncMode};
use trinity_core::fsio;
use trinity_core::schema::{
    Claim, CreditLevel, CreditStatus, CurrentWork, Doc, Done, Fleet, Heartbeat, HeartbeatStatus,
    InstanceStatus, Outcome, Priority, Task,
};
use trinity_core::{InstanceState, ManualClock, PcId, TaskId, Tree};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let runs: Vec<(usize, usize)> = match args.as_slice() {
        [pcs, tasks, ..] => vec![(*pcs, *tasks)],
        _ => vec![(3, 30), (100, 10_000)],
    };
    let rounds = args.get(2).copied().unwrap_or(30);
    println!("| PCs | tasks | first cycle | cycle (median) | cycle (p95) |");
    println!("|---:|---:|---:|---:|---:|");
    for (pcs, tasks) in runs {
        let (first, median, p95) = bench(pcs, tasks, rounds);
        println!(
            "| {pcs} | {tasks} | {:.1} ms | {:.1} ms | {:.1} ms |",
            ms(first),
            ms(median),
            ms(p95)
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench(pcs: usize, tasks: usize, rounds: usize) -> (Duration, Duration, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = Tree::new(dir.path().join("state"));
    std::fs::create_dir_all(tree.root()).expect("tree");
    let ids: Vec<PcId> = (1..=pcs)
        .map(|i| PcId::new(format!("PC{i}")).expect("valid"))
        .collect();
    let leader = ids[ids.len() - 1].clone();
    fsio::save(
        &tree.fleet_file(),
        &Doc::new(Fleet::new(ids.clone(), leader.clone())),
    )
    .expect("fleet");
    let now = Utc::now();
    let clock = ManualClock::new(now);
    for (i, pc) in ids.iter().enumerate() {
        let hb = Heartbeat::new(pc.clone(), HeartbeatStatus::Active, now);
        fsio::save(&tree.heartbeat_file(pc), &Doc::new(hb)).expect("heartbeat");
        let credit = CreditStatus {
            format_version: 1,
            pc: pc.clone(),
            updated_at: now,
            level: CreditLevel::Healthy,
            rule: None,
            fraction: 0.1,
            reason: String::new(),
            rules: Default::default(),
            rate_limit_count: (i % 3) as u32,
            error_rate: 0.01,
            avg_response_time: 2.0,
            exhausted_until: None,
            next_pc: Some(ids[(i + 1) % ids.len()].clone()),
            tokens_by_day: Default::default(),
        };
        fsio::save(&tree.credit_file(pc), &Doc::new(credit)).expect("credit");
    }
    for n in 0..tasks {
        let id = TaskId::new(format!("task-{n:05}")).expect("valid");
        let task = Task {
            format_version: 1,
            id: id.clone(),
            description: format!("task number {n}"),
            priority: [Priority::High, Priority::Normal, Priority::Low][n % 3],
            created_at: now - chrono::Duration::minutes((tasks - n) as i64),
            created_by: ids[0].clone(),
            dependencies: if n > 0 && n % 10 == 0 {
                vec![TaskId::new(format!("task-{:05}", n - 1)).expect("valid")]
            } else {
                Vec::new()
            },
            role: None,
        };
        fsio::create(&tree.task_file(&id), &task).expect("task");
        let holder = &ids[n % ids.len()];
        match n % 3 {
            0 => {
                let c = Claim {
                    format_version: 1,
                    task_id: id.clone(),
                    pc: holder.clone(),
                    claimed_at: now,
                    epoch: 0,
                    handoff: None,
                };
                fsio::create(&tree.claim_file(&id), &c).expect("claim");
            }
            1 => {
                let d = Done {
                    format_version: 1,
                    task_id: id.clone(),
                    pc: holder.clone(),
                    finished_at: now,
                    outcome: Outcome::Completed,
                    summary: "done".to_owned(),
                    commit: None,
                };
                fsio::create(&tree.done_file(&id), &d).expect("done");
            }
            _ => {}
        }
    }
    for (i, pc) in ids.iter().enumerate() {
        let task = TaskId::new(format!("task-{:05}", (i * 3) % tasks.max(1))).expect("valid");
        let inst = InstanceStatus {
            format_version: 1,
            pc: pc.clone(),
            state: InstanceState::Active,
            since: now,
            current_work: Some(CurrentWork {
                task_id: task.clone(),
                progress: "50%".to_owned(),
                completed_subtasks: Vec::new(),
                next_subtask: None,
                code: None,
                session: None,
                conversation_sha256: None,
            }),
            claimed_tasks: vec![task],
            handoff: None,
            epoch: 0,
        };
        fsio::save(&tree.instance_file(pc), &Doc::new(inst)).expect("instance");
    }
    let config = Config {
        pc: Some(leader.clone()),
        state_dir: tree.root().to_owned(),
        ..Config::default()
    };
    let mut config = config;
    config.sync.mode = SyncMode::None;
    if std::env::var_os("BENCH_PARTS").is_some() {
        let t = Instant::now();
        let q = trinity_core::queue::QueueView::read(
            &tree,
            &trinity_core::trust::Keyring::open_or_closed(&tree, true, chrono::Utc::now()),
        );
        eprintln!(
            "QueueView::read: {:.1} ms ({} tasks)",
            ms(t.elapsed()),
            q.tasks.len()
        );
        let t = Instant::now();
        let n = trinity_core::validate::files_under(&tree.spawn_queue_dir())
            .map(|v| v.len())
            .unwrap_or(0);
        eprintln!("listing: {:.1} ms ({n})", ms(t.elapsed()));
    }
    let mut c = Coordinator::new(tree, leader, config, None, Arc::new(clock.clone()));
    let t = Instant::now();
    c.cycle().expect("cycle");
    let first = t.elapsed();
    let mut times = Vec::new();
    for _ in 0..rounds {
        clock.advance(Duration::from_secs(30));
        let t = Instant::now();
        c.cycle().expect("cycle");
        times.push(t.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    let p95 = times[(times.len() * 95 / 100).min(times.len() - 1)];
    (first, median, p95)
}
