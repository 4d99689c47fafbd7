//! One coordinator cycle: look at the lease, and when leading, at the whole fleet; act; report.
//!
//! Everything the leader acts on is read from the tree each cycle (heartbeats, instances,
//! credit, claims, handoffs, verification results), so a new leader picks up where a dead one
//! stopped. What it keeps in memory only spares repeated work within one leadership: which
//! suspects it woke, which dead PCs it handled, which verdicts it delivered.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use trinity_core::config::Config;
use trinity_core::coordination::{self, ChangeWatch, Criteria, Idle};
use trinity_core::fsio::{self, SaveError};
use trinity_core::queue::QueueReader;
use trinity_core::schema::{
    CreditLevel, CurrentWork, Doc, Escalation, EscalationKind, Fleet, Handoff, HandoffReason,
    HeartbeatStatus, Liveness, PhaseResult, PhaseStatus, Schema, TaskRef, Verdict, Verification,
    WakeSignal, WakeTask,
};
use trinity_core::{HandoffId, InstanceState, PcId, RecordId, SharedClock, SignalId, TaskId, Tree};

use crate::leader::{LeaseEvent, LeaseKeeper, Standing};
use crate::notifications::Notifier;
use crate::report;
use crate::verify::{self, Running, Workdir};

mod action;
mod assign;
mod liveness;
mod reports;
mod timeline;
mod verdicts;

pub(crate) use verdicts::read_verifications;

use crate::view::handoff_files;
pub use crate::view::{FleetView, read_pending};
pub use action::{Action, DeadWork, Fix};

/// Why a cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// `fleet.toml` is missing or invalid, or this PC is not in it.
    #[error("cannot read the fleet: {0}")]
    Fleet(#[from] trinity_core::pcfiles::FleetError),
    /// A name made from valid parts was refused (a bug).
    #[error(transparent)]
    Name(#[from] trinity_core::ids::IdError),
}

/// What one cycle did.
#[derive(Debug, Clone)]
pub struct CycleReport {
    /// Where this PC stands on the lease.
    pub standing: Standing,
    /// What the leader did (empty when following).
    pub actions: Vec<Action>,
}

impl CycleReport {
    /// What the leader did, in words, one line each.
    pub fn lines(&self) -> Vec<String> {
        self.actions.iter().map(ToString::to_string).collect()
    }
}

struct Run {
    epoch: u64,
    record: Verification,
    running: Running,
}

/// The coordinator of one PC.
pub struct Coordinator {
    pub(crate) tree: Tree,
    pc: PcId,
    pub(crate) config: Config,
    config_dir: Option<PathBuf>,
    clock: SharedClock,
    keeper: LeaseKeeper,
    pub(crate) watch: ChangeWatch,
    woken: BTreeSet<PcId>,
    buried: BTreeSet<PcId>,
    assigned: BTreeMap<PcId, DateTime<Utc>>,
    delivered: BTreeSet<HandoffId>,
    announced: BTreeSet<HandoffId>,
    runs: BTreeMap<HandoffId, Run>,
    notifier: Notifier,
    last_action: Option<(DateTime<Utc>, String)>,
    written: BTreeMap<PathBuf, (String, DateTime<Utc>)>,
    leading_since: Option<DateTime<Utc>>,
    last_epoch: Option<u64>,
    pub(crate) queue: QueueReader,
    reports_at: Option<DateTime<Utc>>,
    timeline: Option<trinity_core::schema::Timeline>,
    unreadable: BTreeSet<HandoffId>,
    /// Queue files left out for their signature, each said once in the log.
    pub(crate) refused: BTreeSet<String>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("pc", &self.pc)
            .field("leading", &self.keeper.leading())
            .field("runs", &self.runs.len())
            .finish_non_exhaustive()
    }
}

/// How often reports are rewritten when nothing in them changed (their time stamps aside).
const REFRESH: std::time::Duration = std::time::Duration::from_secs(300);

/// The least time between two rounds of report writes.
pub const REPORT_SPACING: std::time::Duration = std::time::Duration::from_secs(10);

impl Coordinator {
    /// A coordinator for `pc` over `tree`.
    pub fn new(
        tree: Tree,
        pc: PcId,
        config: Config,
        config_dir: Option<PathBuf>,
        clock: SharedClock,
    ) -> Self {
        let keeper = LeaseKeeper::new(
            tree.clone(),
            pc.clone(),
            config.coordinator.lease_ttl,
            config.sync.mode,
            clock.clone(),
        )
        .require_signatures(config.security.require_signatures);
        let ca_file = config.coordinator.notify_ca_file.trim();
        let ca_file = (!ca_file.is_empty()).then(|| {
            let p = PathBuf::from(ca_file);
            match &config_dir {
                Some(dir) if p.is_relative() => dir.join(p),
                _ => p,
            }
        });
        let notifier = Notifier::new(
            &config.coordinator.notify_url,
            &config.coordinator.notify_format,
            ca_file.as_deref(),
        );
        Self {
            tree,
            pc,
            config,
            config_dir,
            clock,
            keeper,
            watch: ChangeWatch::default(),
            woken: BTreeSet::new(),
            buried: BTreeSet::new(),
            assigned: BTreeMap::new(),
            delivered: BTreeSet::new(),
            announced: BTreeSet::new(),
            runs: BTreeMap::new(),
            notifier,
            last_action: None,
            written: BTreeMap::new(),
            leading_since: None,
            last_epoch: None,
            queue: QueueReader::default(),
            reports_at: None,
            timeline: None,
            unreadable: BTreeSet::new(),
            refused: BTreeSet::new(),
        }
    }

    /// The tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// This PC.
    pub fn pc(&self) -> &PcId {
        &self.pc
    }

    /// The epoch this PC leads with, if it leads.
    pub fn leading(&self) -> Option<u64> {
        self.keeper.leading()
    }

    /// Whether a verification runs now.
    pub fn verifying(&self) -> bool {
        !self.runs.is_empty()
    }

    /// Waits until the notifications sent so far are delivered (or given up), at most
    /// `within`: before a `--once` run exits. False if some were still on their way.
    pub fn flush_notifications(&self, within: std::time::Duration) -> bool {
        self.notifier.flush(within)
    }

    /// The time by the coordinator's clock (injected; the system clock in the daemon).
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Loads the fleet and checks this PC is a member.
    pub fn fleet(&self) -> Result<Fleet, CycleError> {
        Ok(trinity_core::pcfiles::load_member(&self.tree, &self.pc)?)
    }

    /// Stops every verification in progress (on shutdown or when the lease is lost).
    pub fn stop_runs(&mut self) {
        for (id, mut run) in std::mem::take(&mut self.runs) {
            tracing::info!(handoff = %id, "stopping a verification");
            run.running.cancel();
            let _ = run.running.wait();
        }
    }

    /// One cycle.
    pub fn cycle(&mut self) -> Result<CycleReport, CycleError> {
        let fleet = self.fleet()?;
        let now = self.now();
        let (standing, events) = self.keeper.step(&fleet.coordinator, now);
        for e in events {
            match e {
                LeaseEvent::Won { epoch, why } => {
                    tracing::info!(epoch, %why, "this PC leads the fleet now");
                    self.begin_leading(epoch, now);
                }
                LeaseEvent::Lost { epoch, why } => {
                    tracing::warn!(epoch, %why, "lost the coordinator lease; stopping at once");
                    self.stop_runs();
                    self.leading_since = None;
                }
            }
        }
        let mut view = self.read(&fleet, now);
        let Standing::Leading { epoch } = standing else {
            return Ok(CycleReport {
                standing,
                actions: Vec::new(),
            });
        };
        let mut actions = Vec::new();
        self.lead(&fleet, &mut view, epoch, now, &mut actions);
        for a in &actions {
            tracing::info!(epoch, "{a}");
        }
        if let Some(a) = actions.last() {
            self.last_action = Some((now, a.to_string()));
        }
        self.track(&fleet, &view, now);
        self.write_reports(&fleet, &view, epoch, now);
        Ok(CycleReport { standing, actions })
    }

    fn begin_leading(&mut self, epoch: u64, now: DateTime<Utc>) {
        self.leading_since = Some(now);
        // Back at the same epoch (it stopped itself after a long pause, and nobody took over
        // meanwhile): what it remembers still holds.
        if self.last_epoch == Some(epoch) {
            return;
        }
        self.last_epoch = Some(epoch);
        self.woken.clear();
        self.buried.clear();
        // The timeline carries on from the tree: what the leader before wrote, not what this
        // PC remembers from an earlier leadership.
        self.timeline = None;

        self.delivered.clear();
        self.assigned.clear();
        // The handoffs already in the tree were announced by the leader before (at most once
        // rather than twice).
        let keyring = self.keyring(self.now());
        self.announced = read_pending(&self.tree, &keyring)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
    }

    fn lead(
        &mut self,
        fleet: &Fleet,
        view: &mut FleetView,
        epoch: u64,
        now: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        self.announce_handoffs(view);
        self.watch_liveness(fleet, view, epoch, now, actions);
        self.verify_submissions(view, epoch, now, actions);
        self.assign_work(fleet, view, epoch, now, actions);
        // What is remembered of handoffs matters only while they wait (their file is still in
        // handoff/): a leader that runs for months must not keep every id it ever saw.
        let tree = &self.tree;
        self.announced.retain(|id| tree.handoff_file(id).exists());
        self.delivered.retain(|id| tree.handoff_file(id).exists());
    }

    fn announce_handoffs(&mut self, view: &FleetView) {
        for (id, h) in &view.pending {
            if self.announced.insert(id.clone()) {
                let title = match h.reason {
                    HandoffReason::WorkComplete => format!("Trinity: {} finished work", h.from_pc),
                    _ if h.from_pc == h.to_pc => format!("Trinity: work for {}", h.to_pc),
                    _ => format!("Trinity: handoff {} → {}", h.from_pc, h.to_pc),
                };
                let task = h
                    .current_work
                    .as_ref()
                    .map(|w| w.task_id.to_string())
                    .or_else(|| h.task_queue.first().map(|t| t.id.to_string()))
                    .unwrap_or_else(|| "no task".to_owned());
                self.notifier
                    .send(title, format!("{} ({}): {task}", id, h.reason.describe()));
            }
        }
    }
}

fn bad(what: &str) -> SaveError {
    SaveError::Io(fsio::IoError {
        action: "name",
        path: PathBuf::from(what),
        source: std::io::Error::other(what.to_owned()),
    })
}

impl Coordinator {
    /// How often the cycle runs.
    pub fn config_interval(&self) -> std::time::Duration {
        self.config.coordinator.monitor_interval
    }
}
