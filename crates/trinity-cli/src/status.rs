//! `trinity status`: the fleet at a glance, read from the state tree alone.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;
use trinity_core::fsio::{self, LoadError};
use trinity_core::layout::{FileKind, Tree};
use trinity_core::queue::{QueueView, TaskState};
use trinity_core::schema::{
    CreditLevel, CreditStatus, Escalation, Fleet, Handoff, Heartbeat, HeartbeatStatus,
    InstanceStatus, Lease, Schema, WakeSignal,
};
use trinity_core::trust::Keyring;
use trinity_core::{InstanceState, PcId};

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    /// The state tree to read [default: state_dir from the config]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    state_dir: PathBuf,
    generated_at: DateTime<Utc>,
    this_pc: Option<PcId>,
    rotation: Vec<PcId>,
    preferred_coordinator: Option<PcId>,
    lease: Option<LeaseLine>,
    pcs: Vec<PcLine>,
    pending_handoffs: Vec<HandoffLine>,
    wake_signals: Vec<WakeLine>,
    queue: Queue,
    escalations: usize,
    /// This machine's git-sync, from `local/git-sync/state.json`.
    sync: Option<trinity_core::syncstate::SyncState>,
    /// Files nobody acts on because their signature is not believed: in the queue now, or set
    /// aside in `local/quarantine/` by this PC's daemons.
    refused: Vec<String>,
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
struct LeaseLine {
    holder: PcId,
    epoch: u64,
    expires_at: DateTime<Utc>,
    expired: bool,
}

#[derive(Debug, Serialize)]
struct PcLine {
    pc: PcId,
    heartbeat: Option<HeartbeatStatus>,
    heartbeat_at: Option<DateTime<Utc>>,
    heartbeat_age_s: Option<i64>,
    credit: Option<CreditLevel>,
    exhausted_until: Option<DateTime<Utc>>,
    state: Option<InstanceState>,
    current_task: Option<String>,
    claimed_tasks: usize,
    wake_pending: usize,
}

#[derive(Debug, Serialize)]
struct HandoffLine {
    id: String,
    from_pc: PcId,
    to_pc: PcId,
    reason: String,
    tasks: usize,
    age_s: i64,
}

#[derive(Debug, Serialize)]
struct WakeLine {
    to_pc: PcId,
    from_pc: PcId,
    id: String,
    task: String,
    age_s: i64,
}

#[derive(Debug, Default, Serialize)]
struct Queue {
    tasks: usize,
    claimed: usize,
    done: usize,
    /// Ready to be taken.
    waiting: usize,
    /// Waiting for dependencies.
    blocked: usize,
}

pub(crate) fn run(args: StatusArgs, config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (state_dir, this_pc, required) = match args.state_dir {
        Some(dir) => (dir, None, true),
        None => {
            let config = crate::load_config(config_path)?;
            (
                config.state_dir.clone(),
                config.pc.clone(),
                config.security.require_signatures,
            )
        }
    };
    if !state_dir.is_dir() {
        anyhow::bail!(
            "the state tree {} does not exist; run `trinity init` first",
            state_dir.display()
        );
    }
    let report = build(&Tree::new(&state_dir), this_pc, required, Utc::now());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// Collects invalid files as problems instead of failing: status shows what it can.
struct Reader<'a> {
    tree: &'a Tree,
    problems: Vec<String>,
    /// The keys this PC believes, for the files that start work.
    keyring: Keyring,
    /// Files left out for their signature, with why.
    refused: Vec<String>,
}

impl Reader<'_> {
    /// [`Reader::load`] of a signed file: one whose signature is not believed is left out and
    /// listed as refused.
    fn load_signed<T: Schema>(&mut self, path: &Path) -> Option<T> {
        let loaded = fsio::load_trusted::<T>(path, &self.keyring).map(|(doc, _)| doc);
        self.take(path, loaded)
    }

    fn load<T: Schema>(&mut self, path: &Path) -> Option<T> {
        let loaded = fsio::load::<T>(path);
        self.take(path, loaded)
    }

    /// The value of a file read, or `None` with what went wrong noted: a refused signature
    /// under `refused`, anything else but absence under `problems`.
    fn take<T: Schema>(
        &mut self,
        path: &Path,
        loaded: Result<trinity_core::schema::Doc<T>, LoadError>,
    ) -> Option<T> {
        match loaded {
            Ok(doc) => Some(doc.value),
            Err(e) if e.is_not_found() => None,
            Err(LoadError::Refused { refusal, .. }) => {
                let rel = self
                    .tree
                    .relative(path)
                    .unwrap_or_else(|_| path.display().to_string());
                self.refused.push(format!("{rel}: {refusal}"));
                None
            }
            Err(LoadError::Invalid { source, .. }) => {
                let rel = self
                    .tree
                    .relative(path)
                    .unwrap_or_else(|_| path.display().to_string());
                self.problems.push(format!("{rel}: {source}"));
                None
            }
            Err(e) => {
                self.problems.push(e.to_string());
                None
            }
        }
    }

    /// The tree files of a directory (local and temporary files skipped), sorted by name;
    /// a file the layout has no place for is reported as a problem.
    fn list(&mut self, dir: &Path) -> Vec<(PathBuf, FileKind)> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out: Vec<(PathBuf, FileKind)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let path = e.path();
                match self.tree.classify(&path) {
                    Ok(FileKind::Local) => None,
                    Ok(kind) => Some((path, kind)),
                    Err(err) => {
                        self.problems.push(err.to_string());
                        None
                    }
                }
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn build(tree: &Tree, this_pc: Option<PcId>, required: bool, now: DateTime<Utc>) -> Report {
    // One moment of the tree: git-sync does not update it while status reads.
    let _settled = trinity_core::syncstate::hold_checkouts(tree);
    let mut r = Reader {
        tree,
        problems: Vec::new(),
        keyring: Keyring::open_or_closed(tree, required, now),
        refused: Vec::new(),
    };
    let age = |t: DateTime<Utc>| (now - t).num_seconds();
    let fleet = r.load::<Fleet>(&tree.fleet_file());
    if fleet.is_none() && !tree.fleet_file().exists() {
        r.problems.push(
            "fleet.toml is missing: this is not a state tree made by `trinity init`".to_owned(),
        );
    }

    let mut wake_by_pc: BTreeMap<PcId, usize> = BTreeMap::new();
    let mut wake_signals = Vec::new();
    let wake_dirs: Vec<PathBuf> = fs::read_dir(tree.wake_root())
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    for dir in wake_dirs {
        for (path, _) in r.list(&dir) {
            if let Some(w) = r.load_signed::<WakeSignal>(&path) {
                *wake_by_pc.entry(w.to_pc.clone()).or_default() += 1;
                wake_signals.push(WakeLine {
                    age_s: age(w.timestamp),
                    to_pc: w.to_pc,
                    from_pc: w.from_pc,
                    id: w.id.to_string(),
                    task: w.task,
                });
            }
        }
    }

    let rotation = fleet.as_ref().map(|f| f.pcs.clone()).unwrap_or_default();
    let mut pcs = Vec::new();
    for pc in &rotation {
        let hb = r.load::<Heartbeat>(&tree.heartbeat_file(pc));
        let credit = r.load::<CreditStatus>(&tree.credit_file(pc));
        let inst = r.load::<InstanceStatus>(&tree.instance_file(pc));
        pcs.push(PcLine {
            pc: pc.clone(),
            heartbeat: hb.as_ref().map(|h| h.status),
            heartbeat_at: hb.as_ref().map(|h| h.timestamp),
            heartbeat_age_s: hb.as_ref().map(|h| age(h.timestamp)),
            credit: credit.as_ref().map(|c| c.level),
            exhausted_until: credit
                .as_ref()
                .and_then(|c| c.exhausted_until)
                .filter(|t| *t > now),
            state: inst.as_ref().map(|i| i.state),
            current_task: inst
                .as_ref()
                .and_then(|i| i.current_work.as_ref())
                .map(|w| w.task_id.to_string()),
            claimed_tasks: inst.as_ref().map_or(0, |i| i.claimed_tasks.len()),
            wake_pending: wake_by_pc.get(pc).copied().unwrap_or(0),
        });
    }

    let mut pending_handoffs = Vec::new();
    for (path, kind) in r.list(&tree.handoff_dir()) {
        if let FileKind::Handoff(id) = kind
            && let Some(h) = r.load_signed::<Handoff>(&path)
        {
            pending_handoffs.push(HandoffLine {
                id: id.to_string(),
                age_s: age(h.timestamp),
                from_pc: h.from_pc,
                to_pc: h.to_pc,
                reason: h.reason.describe().to_owned(),
                tasks: h.task_queue.len(),
            });
        }
    }

    // The queue as `task list` and `work next` see it.
    let view = QueueView::read(tree, &r.keyring);
    r.problems.extend(view.unreadable.iter().cloned());
    let mut refused = std::mem::take(&mut r.refused);
    refused.extend(view.refused.iter().map(|e| {
        e.strip_prefix(&format!("{}/", tree.root().display()))
            .unwrap_or(e)
            .replacen(trinity_core::trust::REFUSED, "", 1)
    }));
    refused.extend(trinity_core::trust::set_aside(tree).into_iter().map(|s| {
        format!(
            "{}: {} (set aside in {})",
            s.original,
            s.reason,
            s.moved_to.display()
        )
    }));
    let mut queue = Queue {
        tasks: view.tasks.len(),
        ..Queue::default()
    };
    for (_, state) in view.listing() {
        *match state {
            TaskState::Queued => &mut queue.waiting,
            TaskState::Blocked { .. } => &mut queue.blocked,
            TaskState::Claimed { .. } => &mut queue.claimed,
            TaskState::Done { .. } => &mut queue.done,
        } += 1;
    }
    let mut escalations = 0;
    for (path, _) in r.list(&tree.escalation_dir()) {
        escalations += usize::from(r.load::<Escalation>(&path).is_some());
    }
    let lease = r.load::<Lease>(&tree.lease_file()).map(|l| LeaseLine {
        expired: l.expires_at <= now,
        holder: l.holder,
        epoch: l.epoch,
        expires_at: l.expires_at,
    });

    Report {
        state_dir: tree.root().to_owned(),
        generated_at: now,
        this_pc,
        preferred_coordinator: fleet.map(|f| f.coordinator),
        rotation,
        lease,
        pcs,
        pending_handoffs,
        wake_signals,
        queue,
        escalations,
        sync: trinity_core::syncstate::SyncState::load(tree),
        refused,
        problems: r.problems,
    }
}

/// "42s", "12m", "3h 5m", "2d 3h"; "in 5s" for the future (a clock ahead of ours).
fn ago(secs: i64) -> String {
    let (future, s) = (secs < 0, secs.unsigned_abs());
    let text = trinity_core::clock::human_duration(std::time::Duration::from_secs(s));
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

fn print_table(r: &Report) {
    print_fleet(r);
    println!();
    print_pcs(r);
    println!();
    print_work(r);
}

/// The rotation and who coordinates.
fn print_fleet(r: &Report) {
    if r.rotation.is_empty() {
        println!(
            "Fleet: unknown (no valid fleet.toml in {})",
            r.state_dir.display()
        );
    } else {
        let mut cycle: Vec<&str> = r.rotation.iter().map(PcId::as_str).collect();
        cycle.push(r.rotation[0].as_str());
        println!("Fleet: {}", cycle.join(" -> "));
    }
    match (&r.lease, &r.preferred_coordinator) {
        (Some(l), _) => println!(
            "Coordinator: {} (lease epoch {}, {})",
            l.holder,
            l.epoch,
            if l.expired {
                "expired".to_owned()
            } else {
                format!(
                    "expires {}",
                    ago((r.generated_at - l.expires_at).num_seconds())
                )
            }
        ),
        (None, Some(pref)) => println!("Coordinator: no lease yet (preferred: {pref})"),
        (None, None) => {}
    }
}

/// One row per PC: heartbeat, credit, state, task, wake signals waiting.
fn print_pcs(r: &Report) {
    let dash = "-".to_owned();
    let rows: Vec<[String; 6]> = r
        .pcs
        .iter()
        .map(|p| {
            let me = if r.this_pc.as_ref() == Some(&p.pc) {
                "*"
            } else {
                ""
            };
            let hb = match (p.heartbeat, p.heartbeat_age_s) {
                (Some(s), Some(a)) => format!("{} {}", serde_plain(&s), ago(a)),
                _ => "never".to_owned(),
            };
            let credit = match (p.credit, p.exhausted_until) {
                (Some(c), Some(until)) => {
                    format!("{} until {}", serde_plain(&c), until.format("%H:%M"))
                }
                (Some(c), None) => serde_plain(&c),
                (None, _) => dash.clone(),
            };
            [
                format!("{}{me}", p.pc),
                hb,
                credit,
                p.state.map_or(dash.clone(), |s| s.to_string()),
                p.current_task.clone().unwrap_or(dash.clone()),
                if p.wake_pending > 0 {
                    p.wake_pending.to_string()
                } else {
                    dash.clone()
                },
            ]
        })
        .collect();
    let header = ["PC", "HEARTBEAT", "CREDIT", "STATE", "TASK", "WAKE"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// Handoffs and signals in flight, the queue, escalations, this PC's sync, problems.
fn print_work(r: &Report) {
    println!("Pending handoffs: {}", r.pending_handoffs.len());
    for h in &r.pending_handoffs {
        println!(
            "  {} -> {} ({}), {} task(s), {}",
            h.from_pc,
            h.to_pc,
            h.reason,
            h.tasks,
            ago(h.age_s)
        );
    }
    println!("Wake signals: {}", r.wake_signals.len());
    for w in &r.wake_signals {
        println!(
            "  {} <- {} {} ({})",
            w.to_pc,
            w.from_pc,
            w.task,
            ago(w.age_s)
        );
    }
    println!(
        "Queue: {} task(s): {} waiting, {} blocked, {} claimed, {} done",
        r.queue.tasks, r.queue.waiting, r.queue.blocked, r.queue.claimed, r.queue.done
    );
    if r.escalations > 0 {
        println!("Escalations: {} (see escalations/)", r.escalations);
    }
    match &r.sync {
        Some(s) => {
            let when = |t: Option<DateTime<Utc>>| {
                t.map_or("never".to_owned(), |t| {
                    ago((r.generated_at - t).num_seconds())
                })
            };
            println!(
                "Sync (this PC): in sync {}, last push {}, {} commit(s) waiting{}",
                when(s.in_sync_at),
                when(s.last_push),
                s.commits_ahead,
                s.last_error
                    .as_deref()
                    .map(|e| format!(", last error: {}", e.lines().next().unwrap_or_default()))
                    .unwrap_or_default()
            );
        }
        None => println!("Sync (this PC): git-sync has not run here"),
    }
    if !r.refused.is_empty() {
        println!();
        println!(
            "Refused, not signed by a member this PC trusts: {} (nothing was run for them; docs/security.md)",
            r.refused.len()
        );
        for p in &r.refused {
            println!("  {p}");
        }
    }
    if !r.problems.is_empty() {
        println!();
        println!(
            "Problems: {} (run `trinity validate {}`)",
            r.problems.len(),
            r.state_dir.display()
        );
        for p in &r.problems {
            println!("  {p}");
        }
    }
}

/// A unit enum as serde writes it, without quotes: `handoff_initiated`, `EXHAUSTED`.
fn serde_plain<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(ago(0), "0s ago");
        assert_eq!(ago(59), "59s ago");
        assert_eq!(ago(61), "1m ago");
        assert_eq!(ago(3 * 3600 + 5 * 60), "3h 5m ago");
        assert_eq!(ago(2 * 86400 + 3600), "2d 1h ago");
        assert_eq!(ago(-5), "in 5s");
    }

    /// A task waiting for a dependency is blocked, not waiting (it was counted as waiting).
    #[test]
    fn the_queue_counts_tasks_by_their_state() {
        use trinity_core::schema::{Claim, Priority, Task};
        use trinity_core::{PcId, TaskId};
        let dir = tempfile::tempdir().expect("temp");
        let tree = Tree::new(dir.path());
        let now = Utc::now();
        let id = |s: &str| TaskId::new(s).expect("id");
        let pc1 = PcId::new("PC1").expect("pc");
        for (name, deps) in [("api", vec![]), ("docs", vec![id("api")]), ("ui", vec![])] {
            let t = Task {
                format_version: 1,
                id: id(name),
                description: format!("do {name}"),
                priority: Priority::Medium,
                created_at: now,
                created_by: pc1.clone(),
                dependencies: deps,
                role: None,
            };
            fsio::create(&tree.task_file(&t.id), &t).expect("task");
        }
        let claim = Claim {
            format_version: 1,
            task_id: id("ui"),
            pc: pc1,
            claimed_at: now,
            epoch: 0,
            handoff: None,
        };
        fsio::create(&tree.claim_file(&claim.task_id), &claim).expect("claim");
        let q = build(&tree, None, true, now).queue;
        assert_eq!(
            (q.tasks, q.waiting, q.blocked, q.claimed, q.done),
            (3, 1, 1, 1, 0)
        );
    }

    #[test]
    fn reads_the_fixture_tree() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/valid");
        let now = DateTime::parse_from_rfc3339("2025-11-23T16:31:30Z")
            .expect("valid")
            .to_utc();
        let r = build(&Tree::new(&root), None, true, now);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.rotation.len(), 3);
        let pc1 = &r.pcs[0];
        assert_eq!(pc1.heartbeat, Some(HeartbeatStatus::HandoffInitiated));
        assert_eq!(pc1.heartbeat_age_s, Some(90));
        assert_eq!(pc1.credit, Some(CreditLevel::Exhausted));
        assert_eq!(pc1.state, Some(InstanceState::HandoffReady));
        assert_eq!(r.pcs[1].wake_pending, 1);
        assert_eq!(r.pending_handoffs.len(), 2);
        assert_eq!(r.wake_signals.len(), 1);
        assert_eq!(
            (
                r.queue.tasks,
                r.queue.claimed,
                r.queue.done,
                r.queue.waiting
            ),
            (4, 1, 1, 2)
        );
        assert_eq!(r.escalations, 1);
        let lease = r.lease.expect("lease");
        assert_eq!(
            (lease.holder.as_str(), lease.epoch, lease.expired),
            ("PC3", 7, false)
        );
        // The fixture tree has no local/git-sync/state.json.
        assert!(r.sync.is_none());
    }

    #[test]
    fn shows_this_pcs_sync_state() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = Tree::new(dir.path());
        std::fs::write(
            tree.fleet_file(),
            "format_version = 1\npcs = [\"PC1\", \"PC2\"]\ncoordinator = \"PC2\"\n",
        )
        .expect("fleet");
        let state = trinity_core::syncstate::SyncState {
            commits_ahead: 2,
            last_error: Some("cannot reach the remote".to_owned()),
            ..Default::default()
        };
        state.save(&tree).expect("state");
        let r = build(&tree, None, true, Utc::now());
        let sync = r.sync.expect("sync state");
        assert_eq!(sync.commits_ahead, 2);
        assert_eq!(sync.last_error.as_deref(), Some("cannot reach the remote"));
    }
}
