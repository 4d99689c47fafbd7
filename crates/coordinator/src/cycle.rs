//! One coordinator cycle: look at the lease, and when leading, at the whole fleet; act; report.
//!
//! Everything the leader acts on is read from the tree each cycle (heartbeats, instances,
//! credit, claims, handoffs, verification results), so a new leader picks up where a dead one
//! stopped. What it keeps in memory only spares repeated work within one leadership: which
//! suspects it woke, which dead PCs it handled, which verdicts it delivered.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use trinity_core::config::Config;
use trinity_core::coordination::{self, ChangeWatch, Criteria, Idle};
use trinity_core::fsio::{self, SaveError};
use trinity_core::queue::{QueueReader, QueueView};
use trinity_core::schema::{
    CreditLevel, CreditStatus, CurrentWork, Doc, Escalation, EscalationKind, Fleet, Handoff,
    HandoffReason, Heartbeat, HeartbeatStatus, InstanceStatus, Liveness, PhaseResult, PhaseStatus,
    Schema, TaskRef, Verdict, Verification, WakeSignal, WakeTask,
};
use trinity_core::{HandoffId, InstanceState, PcId, RecordId, SharedClock, SignalId, TaskId, Tree};

use crate::leader::{LeaseEvent, LeaseKeeper, Standing};
use crate::notify::Notifier;
use crate::report;
use crate::verify::{self, Running, Workdir};

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
    /// What the leader did, one line each (empty when following).
    pub actions: Vec<String>,
}

/// Everything the leader reads in one cycle.
#[derive(Debug, Default)]
pub struct FleetView {
    /// Heartbeats by PC.
    pub heartbeats: BTreeMap<PcId, Heartbeat>,
    /// Instance states by PC.
    pub instances: BTreeMap<PcId, InstanceStatus>,
    /// Credit by PC.
    pub credit: BTreeMap<PcId, CreditStatus>,
    /// Handoffs waiting for their receiver.
    pub pending: Vec<(HandoffId, Handoff)>,
    /// Handoffs archived so far.
    pub processed: u64,
    /// Tasks, claims and done records.
    pub queue: QueueView,
    /// Verification results by handoff.
    pub verifications: BTreeMap<HandoffId, Verification>,
    /// Liveness by PC, by the leader's clock.
    pub liveness: BTreeMap<PcId, (Liveness, Option<DateTime<Utc>>)>,
}

struct Run {
    epoch: u64,
    record: Verification,
    running: Running,
}

/// The coordinator of one PC.
pub struct Coordinator {
    tree: Tree,
    pc: PcId,
    config: Config,
    config_dir: Option<PathBuf>,
    clock: SharedClock,
    keeper: LeaseKeeper,
    watch: ChangeWatch,
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
    queue: QueueReader,
    reports_at: Option<DateTime<Utc>>,
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
        );
        let notifier = Notifier::new(&config.coordinator.notify_url);
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
            self.last_action = Some((now, a.clone()));
        }
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
        self.delivered.clear();
        self.assigned.clear();
        // The handoffs already in the tree were announced by the leader before (at most once
        // rather than twice).
        self.announced = read_pending(&self.tree)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
    }

    /// Reads the fleet's files and judges liveness.
    pub fn read(&mut self, fleet: &Fleet, now: DateTime<Utc>) -> FleetView {
        let mut view = FleetView::default();
        let c = &self.config.coordinator;
        for pc in &fleet.pcs {
            let hb_path = self.tree.heartbeat_file(pc);
            let in_path = self.tree.instance_file(pc);
            let cr_path = self.tree.credit_file(pc);
            let read = |p: &Path| fsio::read_bounded(p, 256 * 1024).ok();
            let (hb, inst, cr) = (read(&hb_path), read(&in_path), read(&cr_path));
            let fp = (hb.is_some() || inst.is_some() || cr.is_some()).then(|| {
                coordination::fingerprint(&[
                    hb.as_deref().unwrap_or(b""),
                    inst.as_deref().unwrap_or(b""),
                    cr.as_deref().unwrap_or(b""),
                ])
            });
            let seen = self.watch.observe(pc, fp, now);
            let live = if pc == &self.pc {
                Liveness::Alive
            } else {
                coordination::liveness(seen, now, c.suspect_after, c.dead_after)
            };
            view.liveness.insert(pc.clone(), (live, seen));
            if let Some(v) = hb.and_then(|b| trinity_core::schema::from_bytes::<Heartbeat>(&b).ok())
            {
                view.heartbeats.insert(pc.clone(), v);
            }
            if let Some(v) =
                inst.and_then(|b| trinity_core::schema::from_bytes::<InstanceStatus>(&b).ok())
            {
                view.instances.insert(pc.clone(), v);
            }
            if let Some(v) =
                cr.and_then(|b| trinity_core::schema::from_bytes::<CreditStatus>(&b).ok())
            {
                view.credit.insert(pc.clone(), v);
            }
        }
        view.pending = read_pending(&self.tree);
        view.processed = std::fs::read_dir(self.tree.processed_handoff_dir())
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count() as u64
            })
            .unwrap_or(0);
        view.queue = self.queue.read(&self.tree);
        view.verifications = read_verifications(&self.tree);
        view
    }

    fn lead(
        &mut self,
        fleet: &Fleet,
        view: &mut FleetView,
        epoch: u64,
        now: DateTime<Utc>,
        actions: &mut Vec<String>,
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

    fn watch_liveness(
        &mut self,
        fleet: &Fleet,
        view: &FleetView,
        epoch: u64,
        now: DateTime<Utc>,
        actions: &mut Vec<String>,
    ) {
        for pc in &fleet.pcs {
            let Some((live, seen)) = view.liveness.get(pc).cloned() else {
                continue;
            };
            match live {
                Liveness::Alive | Liveness::Unknown => {
                    if self.woken.remove(pc) {
                        tracing::info!(pc = %pc, "a suspect PC is alive again");
                    }
                    self.buried.remove(pc);
                }
                Liveness::Suspect => {
                    if self.woken.insert(pc.clone()) {
                        let silent = silent_text(seen, now);
                        match self.signal(pc, WakeTask::Reactivation, None, None, epoch, now, &format!("{pc} has been silent for {silent}; the coordinator asks it to report")) {
                            Ok(()) => actions.push(format!("{pc} is SUSPECT (silent for {silent}): sent a reactivation wake")),
                            Err(e) => tracing::warn!(pc = %pc, error = %e, "cannot send a reactivation wake"),
                        }
                    }
                }
                Liveness::Dead => {
                    if self.buried.insert(pc.clone()) {
                        self.woken.remove(pc);
                        self.reassign(fleet, view, pc, seen, epoch, now, actions);
                    }
                }
            }
        }
    }

    /// Whether `pc` can be given work: alive, with credit, not pausing, on standby, with no
    /// handoff on its way to it and no unfinished claim.
    fn can_take_work(&self, view: &FleetView, pc: &PcId, now: DateTime<Utc>) -> bool {
        if view.liveness.get(pc).map(|l| l.0) != Some(Liveness::Alive) {
            return false;
        }
        if let Some(hb) = view.heartbeats.get(pc) {
            match hb.status {
                HeartbeatStatus::Exhausted | HeartbeatStatus::Stopped => return false,
                HeartbeatStatus::Paused if hb.paused_until.is_none_or(|u| u > now) => {
                    return false;
                }
                _ => {}
            }
        } else {
            return false;
        }
        if let Some(c) = view.credit.get(pc)
            && (c.level == CreditLevel::Exhausted || c.exhausted_until.is_some_and(|u| u > now))
        {
            return false;
        }
        // On standby; or waiting for a person's decision on escalated work, which need not
        // keep the PC idle.
        if let Some(i) = view.instances.get(pc) {
            let escalated = i.state == InstanceState::Verification
                && i.handoff
                    .as_ref()
                    .and_then(|h| view.verifications.get(h))
                    .is_some_and(|v| v.verdict == Some(Verdict::Escalate));
            if i.state != InstanceState::Standby && !escalated {
                return false;
            }
        }
        if view.pending.iter().any(|(_, h)| &h.to_pc == pc) {
            return false;
        }
        if view
            .queue
            .claims
            .values()
            .any(|c| &c.pc == pc && !view.queue.done.contains_key(&c.task_id))
        {
            return false;
        }
        // Given work lately and not ACTIVE yet: its wake-daemon is still accepting it.
        if let Some(at) = self.assigned.get(pc)
            && (now - *at).to_std().unwrap_or_default() < self.config.wake.claim_timeout * 2
        {
            return false;
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn reassign(
        &mut self,
        fleet: &Fleet,
        view: &FleetView,
        dead: &PcId,
        seen: Option<DateTime<Utc>>,
        epoch: u64,
        now: DateTime<Utc>,
        actions: &mut Vec<String>,
    ) {
        let silent = silent_text(seen, now);
        let claims: Vec<_> = view
            .queue
            .claims
            .values()
            .filter(|c| &c.pc == dead && !view.queue.done.contains_key(&c.task_id))
            .cloned()
            .collect();
        let in_flight: BTreeSet<TaskId> = view
            .pending
            .iter()
            .filter(|(_, h)| h.reason == HandoffReason::Reassignment)
            .flat_map(|(_, h)| h.task_queue.iter().map(|t| t.id.clone()))
            .collect();
        let mut claims = claims;
        // The work in progress first, then by priority and age, as the queue orders work.
        let current = view
            .instances
            .get(dead)
            .and_then(|i| i.current_work.as_ref().map(|w| w.task_id.clone()));
        claims.sort_by_key(|c| {
            let task = view.queue.tasks.get(&c.task_id);
            (
                Some(&c.task_id) != current.as_ref(),
                task.map_or(u8::MAX, |t| t.priority.rank()),
                task.map(|t| t.created_at),
                c.task_id.clone(),
            )
        });
        let mut tasks: Vec<TaskRef> = claims
            .iter()
            .filter(|c| !in_flight.contains(&c.task_id))
            .map(|c| match view.queue.tasks.get(&c.task_id) {
                Some(t) => TaskRef {
                    id: t.id.clone(),
                    priority: t.priority,
                    description: t.description.clone(),
                },
                None => TaskRef {
                    id: c.task_id.clone(),
                    priority: Default::default(),
                    description: String::new(),
                },
            })
            .collect();
        // Work on its way to the dead PC that it never accepted (an assignment, a handoff):
        // nobody else would ever take it. If the PC comes back and accepts it late, the claim
        // at the higher work epoch wins and it drops the task.
        for (_, h) in view
            .pending
            .iter()
            .filter(|(_, h)| &h.to_pc == dead && h.reason != HandoffReason::WorkComplete)
        {
            for t in &h.task_queue {
                if !in_flight.contains(&t.id)
                    && !view.queue.done.contains_key(&t.id)
                    && !tasks.iter().any(|x| x.id == t.id)
                    && view.queue.claims.get(&t.id).is_none_or(|c| &c.pc == dead)
                {
                    tasks.push(t.clone());
                }
            }
        }
        let inst = view.instances.get(dead);
        let last_work = inst.and_then(|i| i.current_work.clone());
        let hb_time = view.heartbeats.get(dead).map(|h| h.timestamp);
        let target = if tasks.is_empty() {
            None
        } else {
            fleet
                .successors(dead)
                .find(|p| self.can_take_work(view, p, now))
                .or_else(|| {
                    fleet.successors(dead).find(|p| {
                        view.liveness.get(*p).map(|l| l.0) == Some(Liveness::Alive)
                            && view
                                .credit
                                .get(*p)
                                .is_none_or(|c| c.level != CreditLevel::Exhausted)
                    })
                })
                .cloned()
        };
        let mut outcome = String::new();
        if tasks.is_empty() {
            outcome.push_str("It held no unfinished work: nothing was reassigned.");
            actions.push(format!(
                "{dead} is DEAD (silent for {silent}); it held no work"
            ));
        } else if let Some(to) = target {
            let work_epoch = claims.iter().map(|c| c.epoch).max().unwrap_or(0) + 1;
            let current_work = last_work
                .clone()
                .filter(|w| tasks.iter().any(|t| t.id == w.task_id));
            let h = Handoff {
                format_version: Handoff::FORMAT_VERSION,
                from_pc: dead.clone(),
                to_pc: to.clone(),
                timestamp: now,
                reason: HandoffReason::Reassignment,
                task_queue: tasks.clone(),
                current_work,
                credit_state: None,
                epoch: Some(work_epoch),
                authored_by: Some(self.pc.clone()),
                leader_epoch: Some(epoch),
            };
            match self.send_handoff(
                &h,
                WakeTask::Reassignment,
                epoch,
                now,
                &format!("{dead} went silent; its work is yours"),
            ) {
                Ok(id) => {
                    let list: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
                    outcome = format!(
                        "Its work ({}) was reassigned to {to} at work epoch {work_epoch} by {id}.",
                        list.join(", ")
                    );
                    actions.push(format!(
                        "{dead} is DEAD (silent for {silent}): reassigned {} to {to}",
                        list.join(", ")
                    ));
                    self.assigned.insert(to.clone(), now);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot write the reassignment");
                    self.buried.remove(dead);
                    return;
                }
            }
        } else {
            let list: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
            outcome = format!(
                "No live PC with credit could take its work ({}): escalated.",
                list.join(", ")
            );
            self.escalate(
                EscalationKind::StaleInstance,
                format!("{dead} is dead and no live PC with credit can take its work"),
                None,
                Some(outcome.clone()),
                now,
            );
            actions.push(format!(
                "{dead} is DEAD: nobody can take its work; escalated"
            ));
        }
        let pm = report::postmortem(
            dead,
            now,
            seen,
            hb_time,
            inst,
            last_work.as_ref(),
            &outcome,
            &self.pc,
            epoch,
        );
        if let Ok(id) = RecordId::new(format!("{dead}-{}", trinity_core::ids::file_timestamp(now)))
            && let Err(e) = fsio::write_new(&self.tree.postmortem_file(&id), pm.as_bytes())
        {
            tracing::warn!(error = %e, "cannot write the post-mortem");
        }
        self.notifier.send(
            format!("Trinity: {dead} is dead"),
            format!("Silent for {silent}. {outcome}"),
        );
    }

    fn verify_submissions(
        &mut self,
        view: &mut FleetView,
        epoch: u64,
        now: DateTime<Utc>,
        actions: &mut Vec<String>,
    ) {
        // Finished runs first.
        let ids: Vec<HandoffId> = self.runs.keys().cloned().collect();
        for id in ids {
            let Some(results) = self.runs.get_mut(&id).and_then(|r| r.running.try_finish()) else {
                continue;
            };
            let Some(run) = self.runs.remove(&id) else {
                continue;
            };
            if run.epoch != epoch {
                continue;
            }
            let v = self.decide(run.record, results, now);
            if let Some(verdict) = v.verdict {
                actions.push(format!(
                    "verified {id}: {} — {}",
                    verdict_word(verdict),
                    v.reasons.join("; ")
                ));
            }
            view.verifications.insert(id, v);
        }
        let mut submissions: Vec<(HandoffId, Handoff)> = view
            .pending
            .iter()
            .filter(|(_, h)| h.reason == HandoffReason::WorkComplete)
            .cloned()
            .collect();
        if self.config.coordinator.verify_credit_handoffs {
            submissions.extend(self.credit_handoffs_to_verify(view));
        }
        for (id, h) in submissions {
            match view.verifications.get(&id) {
                Some(v) if v.verdict.is_some() => {
                    // A credit handoff verified after the fact: the verdict is a record (and
                    // an escalation when unclear); the work already moved on.
                    if h.reason != HandoffReason::WorkComplete {
                        continue;
                    }
                    if !self.delivered.contains(&id) {
                        let v = v.clone();
                        match self.deliver(&id, &h, &v, view, epoch, now) {
                            Ok(line) => {
                                self.delivered.insert(id.clone());
                                actions.push(line);
                            }
                            Err(e) => {
                                tracing::warn!(handoff = %id, error = %e, "cannot deliver the verdict; retrying next cycle")
                            }
                        }
                    }
                }
                _ if self.runs.contains_key(&id) => {}
                _ => {
                    if let Some(record) = self.start_verification(&id, &h, epoch, now) {
                        actions.push(format!("verifying {id} ({} phase(s))", record.phases.len()));
                        view.verifications.insert(id, record);
                    }
                }
            }
        }
    }

    /// Credit handoffs (pending, or archived since this PC leads) without a verification.
    fn credit_handoffs_to_verify(&self, view: &FleetView) -> Vec<(HandoffId, Handoff)> {
        let is_credit = |h: &Handoff| {
            matches!(
                h.reason,
                HandoffReason::CreditExhaustion
                    | HandoffReason::UsageLimit
                    | HandoffReason::SpendLimit
                    | HandoffReason::Manual
            )
        };
        let mut out: Vec<(HandoffId, Handoff)> = view
            .pending
            .iter()
            .filter(|(id, h)| is_credit(h) && !view.verifications.contains_key(id))
            .cloned()
            .collect();
        let since = self
            .leading_since
            .map(|t| t - chrono::Duration::minutes(10));
        if let (Some(since), Ok(dir)) =
            (since, std::fs::read_dir(self.tree.processed_handoff_dir()))
        {
            for e in dir.flatten() {
                let path = e.path();
                let Some(id) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| HandoffId::new(s).ok())
                else {
                    continue;
                };
                if id.created_at() < since || view.verifications.contains_key(&id) {
                    continue;
                }
                if let Ok(doc) = fsio::load::<Handoff>(&path)
                    && is_credit(&doc.value)
                {
                    out.push((id, doc.value));
                }
            }
        }
        out
    }

    fn start_verification(
        &mut self,
        id: &HandoffId,
        h: &Handoff,
        epoch: u64,
        now: DateTime<Utc>,
    ) -> Option<Verification> {
        let phases = self.config.coordinator.phases.clone();
        let task = h.current_work.as_ref().map(|w| w.task_id.clone());
        let record = Verification {
            format_version: Verification::FORMAT_VERSION,
            handoff_id: id.clone(),
            pc: h.from_pc.clone(),
            task: task.clone(),
            coordinator: self.pc.clone(),
            epoch,
            started_at: now,
            finished_at: None,
            phases: phases
                .iter()
                .map(|p| PhaseResult::new(p.name.clone(), PhaseStatus::Pending, p.critical))
                .collect(),
            verdict: None,
            reasons: Vec::new(),
        };
        if phases.is_empty() {
            // Nothing to run: decide now.
            return Some(self.decide(record, Vec::new(), now));
        }
        if let Err(e) = fsio::save(&self.tree.verification_file(id), &Doc::new(record.clone())) {
            tracing::warn!(error = %e, "cannot write the verification record");
            return None;
        }
        let code = h
            .current_work
            .as_ref()
            .and_then(|w| w.code.clone())
            .filter(|c| c.pushed && !c.repository.is_empty());
        let workdir = match code {
            Some(code) => Workdir::Snapshot {
                dir: self.tree.verify_checkout_dir(),
                code,
            },
            None => Workdir::Plain(self.plain_workdir()),
        };
        let mut env = vec![
            ("TRINITY_HANDOFF_ID".to_owned(), id.to_string()),
            ("TRINITY_VERIFY_PC".to_owned(), h.from_pc.to_string()),
            ("TRINITY_VERIFY_LEADER".to_owned(), self.pc.to_string()),
        ];
        if let Some(t) = &task {
            env.push(("TRINITY_TASK_ID".to_owned(), t.to_string()));
        }
        if let Some(c) = h.current_work.as_ref().and_then(|w| w.code.as_ref()) {
            env.push(("TRINITY_VERIFY_COMMIT".to_owned(), c.wip_commit.clone()));
        }
        let job = verify::Job {
            phases,
            workdir,
            env,
            scratch: self.tree.verify_run_dir(id),
        };
        match Running::start(job) {
            Ok(running) => {
                self.runs.insert(
                    id.clone(),
                    Run {
                        epoch,
                        record: record.clone(),
                        running,
                    },
                );
                Some(record)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the verification thread");
                None
            }
        }
    }

    fn plain_workdir(&self) -> PathBuf {
        let configured = self.config.agent.workdir.trim();
        if !configured.is_empty() {
            return PathBuf::from(configured);
        }
        self.config_dir
            .clone()
            .unwrap_or_else(|| self.tree.root().to_owned())
    }

    /// Judges the results, writes the verdict, escalates when a person must decide.
    fn decide(
        &mut self,
        mut record: Verification,
        results: Vec<PhaseResult>,
        now: DateTime<Utc>,
    ) -> Verification {
        let c = &self.config.coordinator;
        let (verdict, reasons) = coordination::verdict(
            &results,
            Criteria {
                coverage_min: c.coverage_min,
                medium_issue_limit: c.medium_issue_limit,
            },
        );
        record.phases = results;
        record.finished_at = Some(now.max(record.started_at));
        record.verdict = Some(verdict);
        record.reasons = reasons;
        if let Err(e) = fsio::save(
            &self.tree.verification_file(&record.handoff_id),
            &Doc::new(record.clone()),
        ) {
            tracing::error!(error = %e, "cannot write the verdict");
        }
        let task = record
            .task
            .as_ref()
            .map(|t| format!(" (task {t})"))
            .unwrap_or_default();
        if verdict == Verdict::Escalate {
            self.escalate(
                EscalationKind::Verification,
                format!(
                    "decide on {}'s work{task}: {}",
                    record.pc,
                    record.reasons.first().cloned().unwrap_or_default()
                ),
                Some(record.handoff_id.clone()),
                Some(format!(
                    "The verification of {} was unclear. Read verification/{}.json; then either \
                     accept the work as done, or tell {} what to fix.\n\n{}",
                    record.handoff_id,
                    record.handoff_id,
                    record.pc,
                    record.reasons.join("\n")
                )),
                now,
            );
        }
        self.notifier.send(
            format!("Trinity: {} {}", verdict_word(verdict), record.pc),
            format!("{}{task}: {}", record.handoff_id, record.reasons.join("; ")),
        );
        record
    }

    /// Tells the submitting PC the verdict; on DENY also gives it the work back to fix.
    fn deliver(
        &mut self,
        id: &HandoffId,
        h: &Handoff,
        v: &Verification,
        view: &FleetView,
        epoch: u64,
        now: DateTime<Utc>,
    ) -> Result<String, SaveError> {
        let verdict = v.verdict.unwrap_or(Verdict::Escalate);
        let to = &h.from_pc;
        self.signal(
            to,
            WakeTask::Verdict,
            Some(id.clone()),
            None,
            epoch,
            now,
            &format!("{}: {}", verdict_word(verdict), v.reasons.join("; ")),
        )?;
        if verdict != Verdict::Deny {
            return Ok(format!(
                "told {to} the verdict on {id}: {}",
                verdict_word(verdict)
            ));
        }
        let Some(work) = h.current_work.clone() else {
            return Ok(format!(
                "told {to} the verdict on {id}: DENY (no task to fix)"
            ));
        };
        let finished = v.finished_at.unwrap_or(v.started_at);
        // The task is not done after all: its result goes (the leader consumes done records).
        match std::fs::remove_file(self.tree.done_file(&work.task_id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(task = %work.task_id, error = %e, "cannot withdraw the done record")
            }
        }
        if remediation_exists(&self.tree, view, to, &work.task_id, finished) {
            return Ok(format!(
                "told {to} the verdict on {id}: DENY (the fix was already asked for)"
            ));
        }
        let task = view.queue.tasks.get(&work.task_id);
        let fix = CurrentWork {
            task_id: work.task_id.clone(),
            progress: format!("verification denied: {}", v.reasons.join("; ")),
            completed_subtasks: work.completed_subtasks.clone(),
            next_subtask: Some(format!(
                "fix what verification found (verification/{id}.json): {}",
                v.reasons.first().cloned().unwrap_or_default()
            )),
            code: None,
            session: None,
        };
        let remediation = Handoff {
            format_version: Handoff::FORMAT_VERSION,
            from_pc: self.pc.clone(),
            to_pc: to.clone(),
            timestamp: now,
            reason: HandoffReason::Remediation,
            task_queue: vec![TaskRef {
                id: work.task_id.clone(),
                priority: task.map(|t| t.priority).unwrap_or_default(),
                description: task.map(|t| t.description.clone()).unwrap_or_default(),
            }],
            current_work: Some(fix),
            credit_state: None,
            epoch: None,
            authored_by: Some(self.pc.clone()),
            leader_epoch: Some(epoch),
        };
        let rid = self.send_handoff(
            &remediation,
            WakeTask::Remediation,
            epoch,
            now,
            "verification denied your work: fix it",
        )?;
        Ok(format!(
            "told {to} the verdict on {id}: DENY; the fix of {} goes back to it ({rid})",
            work.task_id
        ))
    }

    fn assign_work(
        &mut self,
        fleet: &Fleet,
        view: &FleetView,
        epoch: u64,
        now: DateTime<Utc>,
        actions: &mut Vec<String>,
    ) {
        self.assigned.retain(|pc, _| {
            view.instances.get(pc).is_none_or(|i| {
                matches!(
                    i.state,
                    InstanceState::Standby | InstanceState::Verification
                )
            })
        });
        let idle: Vec<Idle> = fleet
            .pcs
            .iter()
            .filter(|p| self.can_take_work(view, p, now))
            .map(|p| Idle {
                pc: p.clone(),
                roles: view
                    .heartbeats
                    .get(p)
                    .map(|h| h.roles.clone())
                    .unwrap_or_default(),
                tokens: 0,
            })
            .collect();
        if idle.is_empty() {
            return;
        }
        let taken: BTreeSet<TaskId> = view
            .pending
            .iter()
            .flat_map(|(_, h)| {
                h.task_queue
                    .iter()
                    .map(|t| t.id.clone())
                    .chain(h.current_work.as_ref().map(|w| w.task_id.clone()))
            })
            .collect();
        for (pc, task_id) in coordination::assign(&view.queue, &idle, &taken) {
            let Some(task) = view.queue.tasks.get(&task_id) else {
                continue;
            };
            let h = Handoff {
                format_version: Handoff::FORMAT_VERSION,
                from_pc: self.pc.clone(),
                to_pc: pc.clone(),
                timestamp: now,
                reason: HandoffReason::Assignment,
                task_queue: vec![TaskRef {
                    id: task.id.clone(),
                    priority: task.priority,
                    description: task.description.clone(),
                }],
                current_work: None,
                credit_state: None,
                epoch: None,
                authored_by: Some(self.pc.clone()),
                leader_epoch: Some(epoch),
            };
            match self.send_handoff(
                &h,
                WakeTask::Assignment,
                epoch,
                now,
                &format!("new work: {}", task.id),
            ) {
                Ok(id) => {
                    self.assigned.insert(pc.clone(), now);
                    actions.push(format!(
                        "assigned {} ({} priority) to {pc} ({id})",
                        task.id,
                        task.priority.as_str()
                    ));
                }
                Err(e) => tracing::warn!(pc = %pc, task = %task.id, error = %e, "cannot assign"),
            }
        }
    }

    /// Writes a handoff the leader authored and the wake signal that brings it.
    fn send_handoff(
        &mut self,
        h: &Handoff,
        task: WakeTask,
        epoch: u64,
        now: DateTime<Utc>,
        message: &str,
    ) -> Result<HandoffId, SaveError> {
        // Handoff ids are to the second: wait for a free one rather than collide.
        let mut h = h.clone();
        let mut id = h.id().ok_or_else(|| bad("cannot name the handoff"))?;
        let mut bump = 0;
        while self.tree.handoff_file(&id).exists() || self.tree.processed_handoff_file(&id).exists()
        {
            bump += 1;
            h.timestamp = now + chrono::Duration::seconds(bump);
            id = h.id().ok_or_else(|| bad("cannot name the handoff"))?;
        }
        fsio::create(&self.tree.handoff_file(&id), &h)?;
        self.announced.insert(id.clone());
        self.signal(
            &h.to_pc,
            task,
            Some(id.clone()),
            h.epoch,
            epoch,
            now,
            message,
        )?;
        Ok(id)
    }

    #[allow(clippy::too_many_arguments)]
    fn signal(
        &self,
        to: &PcId,
        task: WakeTask,
        handoff: Option<HandoffId>,
        work_epoch: Option<u64>,
        epoch: u64,
        now: DateTime<Utc>,
        message: &str,
    ) -> Result<(), SaveError> {
        let signal = WakeSignal {
            format_version: WakeSignal::FORMAT_VERSION,
            id: SignalId::generate(&self.pc, now, task.as_str()),
            from_pc: self.pc.clone(),
            to_pc: to.clone(),
            timestamp: now,
            task: task.as_str().to_owned(),
            message: message
                .chars()
                .filter(|c| !c.is_control() || *c == '\n')
                .take(trinity_core::schema::MAX_WAKE_MESSAGE_CHARS)
                .collect(),
            handoff,
            expires_at: None,
            epoch: work_epoch,
            leader_epoch: Some(epoch),
        };
        fsio::create(&self.tree.wake_file(to, &signal.id), &signal)
    }

    fn escalate(
        &self,
        kind: EscalationKind,
        summary: String,
        handoff: Option<HandoffId>,
        details: Option<String>,
        now: DateTime<Utc>,
    ) {
        let id = RecordId::generate(&self.pc, now, &format!("{kind:?}").to_ascii_lowercase());
        let e = Escalation {
            format_version: Escalation::FORMAT_VERSION,
            id: id.clone(),
            created_at: now,
            created_by: self.pc.clone(),
            kind,
            summary: summary.clone(),
            handoff,
            paths: Vec::new(),
            details,
        };
        match fsio::create(&self.tree.escalation_file(&id), &e) {
            Ok(()) => {
                tracing::warn!(escalation = %id, %summary, "escalated to a person");
                self.notifier.send("Trinity: a person must decide", summary);
            }
            Err(err) => tracing::error!(error = %err, "cannot write the escalation"),
        }
    }

    fn write_reports(&mut self, fleet: &Fleet, view: &FleetView, epoch: u64, now: DateTime<Utc>) {
        // Reports are for people: at most one round of writes every REPORT_SPACING, so that a
        // burst of handoffs does not add a burst of commits racing the handoffs' own.
        if let Some(last) = self.reports_at
            && (now - last).to_std().unwrap_or_default() < REPORT_SPACING
        {
            return;
        }
        self.reports_at = Some(now);
        let mut status = report::status(fleet, view, &self.pc, epoch, now);
        if let Some((at, what)) = &self.last_action {
            status.last_autonomous_action = Some(*at);
            status.last_action = Some(what.clone());
        }
        for h in &mut status.handoffs {
            if self.runs.contains_key(&h.id) {
                h.phase = "verifying".to_owned();
            }
        }
        let dashboard = report::dashboard(fleet, view, now);
        let html = report::dashboard_html(&status, &dashboard);
        let integration = report::integration_status(&status, view);
        let kpi_week = report::kpi_week(&status, now);
        let (Some(status_json), Some(dash_json)) = (to_json(&status), to_json(&dashboard)) else {
            tracing::error!("cannot encode the fleet status (a bug)");
            return;
        };
        let status_key = report::without_times(&status_json);
        let dash_key = report::without_times(&dash_json);
        let html_key = format!("{status_key}\n{dash_key}");
        self.write_if_changed(self.tree.multi_status_file(), status_json, status_key);
        self.write_if_changed(self.tree.credit_dashboard_file(), dash_json, dash_key);
        self.write_if_changed(self.tree.dashboard_html_file(), html, html_key);
        let key = report::without_times(&integration);
        if let Ok(id) = RecordId::new("integration-status") {
            self.write_report(self.tree.report_file(&id), integration, key, false);
        }
        let key = report::without_times(&kpi_week);
        if let Ok(id) = RecordId::new(format!("kpi-{}", now.format("%G-W%V"))) {
            self.write_report(self.tree.report_file(&id), kpi_week, key, false);
        }
        for (pc, text) in report::instance_logs(fleet, view, now) {
            let key = report::without_times(&text);
            let path = self.tree.instance_log_file(&pc, now.date_naive());
            self.write_report(path, text, key, false);
        }
    }

    /// Writes a report when `key` (its contents, time stamps aside) changed, or every few
    /// minutes.
    fn write_if_changed(&mut self, path: PathBuf, text: String, key: String) {
        self.write_report(path, text, key, true);
    }

    /// Writes a report when `key` changed; with `refresh`, also every few minutes (files whose
    /// time stamp tells people the leader is alive: the status and the dashboards).
    fn write_report(&mut self, path: PathBuf, text: String, key: String, refresh: bool) {
        let now = self.now();
        if let Some((old, at)) = self.written.get(&path)
            && *old == key
            && (!refresh || (now - *at).to_std().unwrap_or_default() < REFRESH)
        {
            return;
        }
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match fsio::write_atomic(&path, text.as_bytes()) {
            Ok(()) => {
                self.written.insert(path, (key, now));
            }
            Err(e) => tracing::warn!(error = %e, "cannot write a report"),
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

fn to_json<T: Schema>(value: &T) -> Option<String> {
    trinity_core::schema::to_bytes(value)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

/// The verdict in the seed's words.
pub fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "APPROVE",
        Verdict::Deny => "DENY",
        Verdict::Escalate => "ESCALATE",
    }
}

fn silent_text(seen: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    seen.and_then(|s| (now - s).to_std().ok())
        .map(|d| {
            humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
        })
        .unwrap_or_else(|| "ever".to_owned())
}

/// The handoffs in `handoff/` (not archived), oldest first.
pub fn read_pending(tree: &Tree) -> Vec<(HandoffId, Handoff)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(tree.handoff_dir()) else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        if !path.is_file() || path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Some(id) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| HandoffId::new(s).ok())
        else {
            continue;
        };
        if let Ok(doc) = fsio::load::<Handoff>(&path) {
            out.push((id, doc.value));
        }
    }
    out.sort_by_key(|(id, _)| (id.created_at(), id.clone()));
    out
}

fn read_verifications(tree: &Tree) -> BTreeMap<HandoffId, Verification> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(tree.verification_dir()) else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        if let Ok(doc) = fsio::load::<Verification>(&path) {
            out.insert(doc.value.handoff_id.clone(), doc.value);
        }
    }
    out
}

/// Whether a remediation of `task` for `to` was written at or after `since` (pending or
/// archived): a new leader must not ask for the same fix twice.
fn remediation_exists(
    tree: &Tree,
    view: &FleetView,
    to: &PcId,
    task: &TaskId,
    since: DateTime<Utc>,
) -> bool {
    let is_it = |h: &Handoff| {
        h.reason == HandoffReason::Remediation
            && &h.to_pc == to
            && h.timestamp >= since - chrono::Duration::seconds(1)
            && h.task_queue.iter().any(|t| &t.id == task)
    };
    if view.pending.iter().any(|(_, h)| is_it(h)) {
        return true;
    }
    let Ok(dir) = std::fs::read_dir(tree.processed_handoff_dir()) else {
        return false;
    };
    dir.flatten().any(|e| {
        let path = e.path();
        let Some(id) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| HandoffId::new(s).ok())
        else {
            return false;
        };
        id.to_pc() == to
            && id.created_at() >= since - chrono::Duration::seconds(1)
            && fsio::load::<Handoff>(&path).is_ok_and(|d| is_it(&d.value))
    })
}

impl Coordinator {
    /// How often the cycle runs.
    pub fn config_interval(&self) -> std::time::Duration {
        self.config.coordinator.monitor_interval
    }
}
