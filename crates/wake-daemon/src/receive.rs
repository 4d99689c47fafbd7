//! Receiving wake signals and accepting handoffs.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use trinity_core::config::{Config, SyncMode};
use trinity_core::credit::{CreditEvent, EventKind};
use trinity_core::fsio::{self, IoError, LoadError, SaveError};
use trinity_core::local::{self, LocalError, TasksFile};
use trinity_core::pcfiles::FleetError;
use trinity_core::schema::{
    Claim, Doc, Fleet, Handoff, HandoffReason, HeartbeatStatus, InstanceStatus, TaskRef,
    WakeSignal, WakeTask,
};
use trinity_core::syncstate::SyncState;
use trinity_core::{
    HandoffId, InstanceState, PcId, SharedClock, SignalId, TaskId, Tree, daemon, failpoint,
    pcfiles, state, validate,
};

use crate::agent::{self, LAUNCH_ID_VAR, Launch};
use crate::journal::{AgentRecord, HandoffRecord, Journal, SignalOutcome, SignalRecord, Step};

/// Why the wake-daemon could not do its work (a bad signal is not an error: it is refused).
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// `fleet.toml` is missing or invalid, or this PC is not in it.
    #[error("cannot read the fleet: {0}")]
    Fleet(#[from] FleetError),
    /// A file of the tree could not be read.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A file of the tree could not be written.
    #[error(transparent)]
    Save(#[from] SaveError),
    /// An owned file could not be updated.
    #[error(transparent)]
    Update(#[from] pcfiles::UpdateError),
    /// The journal or the agent's tasks file could not be read or written.
    #[error(transparent)]
    Journal(#[from] LocalError),
    /// A name made from valid parts was refused (a bug).
    #[error(transparent)]
    Name(#[from] trinity_core::ids::IdError),
    /// The handoff's journal record vanished while it was being accepted.
    #[error("the journal record of {0} disappeared")]
    RecordGone(HandoffId),
    /// The agent could not be started.
    #[error(transparent)]
    Launch(#[from] agent::LaunchError),
}

impl WakeError {
    /// True when retrying cannot help until someone changes something (the fleet, a journal
    /// record set aside): said once, not on every pass.
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            WakeError::Fleet(_)
                | WakeError::Journal(
                    LocalError::Corrupt { .. }
                        | LocalError::SetAside { .. }
                        | LocalError::TooNew { .. }
                )
        )
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Signals accepted (their handoffs fully accepted) or noted.
    pub accepted: Vec<SignalId>,
    /// Signals refused, with why.
    pub refused: Vec<(String, String)>,
    /// Duplicate signals removed.
    pub duplicates: usize,
    /// Handoffs waiting for their claims to reach the remote.
    pub waiting: Vec<HandoffId>,
    /// Agents started (pids).
    pub launched: Vec<u32>,
    /// Signals held until an operator acts (their journal record was set aside as corrupt).
    pub held: Vec<String>,
}

impl Report {
    /// True when nothing is left pending.
    pub fn all_handled(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// How far a handoff got in one pass.
enum Progress {
    Done,
    Waiting,
    Refused(String),
}

/// This PC's receiving side.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub(crate) tree: Tree,
    pub(crate) pc: PcId,
    pub(crate) config: Config,
    config_dir: Option<PathBuf>,
    clock: SharedClock,
    pub(crate) journal: Journal,
}

impl Receiver {
    /// The receiver for `pc` on `tree`. `config_dir` resolves a relative `agent.workdir`.
    pub fn new(
        tree: Tree,
        pc: PcId,
        config: Config,
        config_dir: Option<PathBuf>,
        clock: SharedClock,
    ) -> Self {
        let journal = Journal::new(tree.clone());
        Self {
            tree,
            pc,
            config,
            config_dir,
            clock,
            journal,
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

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The time by this receiver's clock (injected; the system clock in the daemon).
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// `fleet.toml`, with this PC in it.
    pub fn fleet(&self) -> Result<Fleet, WakeError> {
        Ok(pcfiles::load_member(&self.tree, &self.pc)?)
    }

    /// The signal files waiting in `wake/{PC}/`.
    pub fn pending_signals(&self) -> Vec<PathBuf> {
        let dir = self.tree.wake_dir(&self.pc);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && !is_temp(p))
            .collect();
        files.sort();
        files
    }

    /// Handles every pending signal (oldest first) and resumes every unfinished handoff.
    pub fn process(&self) -> Result<Report, WakeError> {
        let fleet = self.fleet()?;
        let mut report = Report::default();
        self.withdraw_lost_work()?;

        // Handoffs started earlier (a crash, or claims waiting for the remote).
        for record in self.journal.unfinished() {
            self.advance(record, &mut report)?;
        }

        let mut signals: Vec<(Option<DateTime<Utc>>, PathBuf)> = self
            .pending_signals()
            .into_iter()
            .map(|p| {
                let ts = fsio::load::<WakeSignal>(&p).ok().map(|d| d.value.timestamp);
                (ts, p)
            })
            .collect();
        signals.sort();
        for (_, path) in signals {
            match self.handle_signal(&path, &fleet, &mut report) {
                // One signal that needs an operator does not hold up the others.
                Err(e) if e.needs_operator() => report.held.push(e.to_string()),
                other => other?,
            }
        }
        Ok(report)
    }

    fn consume(&self, path: &Path) {
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a handled signal");
        }
    }

    fn refuse_signal(
        &self,
        path: &Path,
        id: Option<&SignalId>,
        reason: String,
        quarantine: bool,
        report: &mut Report,
    ) -> Result<(), WakeError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        tracing::warn!(signal = %name, %reason, "refused a wake signal; nothing was run");
        if quarantine {
            fsio::quarantine(&self.tree, path, &reason, self.now())?;
        } else {
            self.consume(path);
        }
        if let Some(id) = id {
            self.journal.record_signal(&SignalRecord {
                id: id.clone(),
                at: self.now(),
                outcome: SignalOutcome::Refused,
                reason: reason.clone(),
                handoff: None,
            })?;
        }
        report.refused.push((name, reason));
        Ok(())
    }

    fn handle_signal(
        &self,
        path: &Path,
        fleet: &Fleet,
        report: &mut Report,
    ) -> Result<(), WakeError> {
        let now = self.now();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(id) = SignalId::new(&stem) else {
            return self.refuse_signal(
                path,
                None,
                format!("{stem:?} is not a valid signal file name"),
                true,
                report,
            );
        };
        if let Some(done) = self.journal.signal(&id)? {
            tracing::info!(signal = %id, outcome = ?done.outcome, "signal already handled; removing it");
            self.consume(path);
            report.duplicates += 1;
            return Ok(());
        }
        if let Err(problem) = validate::validate_file(&self.tree, path, Some(fleet)) {
            return self.refuse_signal(path, Some(&id), problem.message, true, report);
        }
        let signal = match fsio::load::<WakeSignal>(path) {
            Ok(doc) => doc.value,
            Err(e) => return self.refuse_signal(path, Some(&id), e.to_string(), true, report),
        };
        if signal.to_pc != self.pc {
            let reason = format!("addressed to {}, not to {}", signal.to_pc, self.pc);
            return self.refuse_signal(path, Some(&id), reason, true, report);
        }
        if !fleet.contains(&signal.from_pc) {
            let reason = format!(
                "sent by {}, which is not a member of the fleet ({})",
                signal.from_pc,
                fleet.pcs_joined()
            );
            return self.refuse_signal(path, Some(&id), reason, true, report);
        }
        let task = WakeTask::parse(&signal.task);
        if signal.from_pc == self.pc && !task.is_some_and(WakeTask::may_be_sent_to_self) {
            let reason = format!("sent by {} to itself", self.pc);
            return self.refuse_signal(path, Some(&id), reason, true, report);
        }
        if let Some(reason) = self.deposed_leader(signal.leader_epoch) {
            return self.refuse_signal(path, Some(&id), reason, false, report);
        }
        if task == Some(WakeTask::Verdict) {
            let outcome = self.take_verdict(&signal)?;
            self.journal.record_signal(&SignalRecord {
                id: id.clone(),
                at: now,
                outcome: SignalOutcome::Accepted,
                reason: outcome,
                handoff: signal.handoff.clone(),
            })?;
            self.consume(path);
            report.accepted.push(id);
            return Ok(());
        }
        let ttl = chrono::Duration::from_std(self.config.wake.signal_ttl).unwrap_or_default();
        let expires = signal.expires_at.unwrap_or(signal.timestamp + ttl);
        if expires <= now {
            let reason = format!("expired at {}", expires.to_rfc3339());
            return self.refuse_signal(path, Some(&id), reason, false, report);
        }

        let Some(handoff_id) = signal.handoff.clone() else {
            // A plain wake-up (the coordinator's reactivation): say we are here.
            tracing::info!(signal = %id, from = %signal.from_pc, task = %signal.task, "woken up");
            pcfiles::update_heartbeat(&self.tree, &self.pc, now, |_| {})?;
            self.journal.record_signal(&SignalRecord {
                id: id.clone(),
                at: now,
                outcome: SignalOutcome::Accepted,
                reason: format!("wake-up ({})", signal.task),
                handoff: None,
            })?;
            self.consume(path);
            report.accepted.push(id);
            return Ok(());
        };

        let record = match self.journal.handoff(&handoff_id)? {
            Some(existing) if existing.signal != id => {
                tracing::info!(signal = %id, handoff = %handoff_id, "a second signal for a handoff already being accepted; removing it");
                self.journal.record_signal(&SignalRecord {
                    id: id.clone(),
                    at: now,
                    outcome: SignalOutcome::Duplicate,
                    reason: format!("handoff {handoff_id} was brought by {}", existing.signal),
                    handoff: Some(handoff_id),
                })?;
                self.consume(path);
                report.duplicates += 1;
                return Ok(());
            }
            Some(existing) => existing,
            None => {
                tracing::info!(signal = %id, handoff = %handoff_id, from = %signal.from_pc, "accepting a handoff");
                let record = HandoffRecord {
                    id: handoff_id.clone(),
                    signal: id.clone(),
                    started_at: now,
                    step: Step::Received,
                    won: Vec::new(),
                    lost: Vec::new(),
                    warned_slow_sync: false,
                };
                self.journal.save_handoff(&record)?;
                failpoint::hit("wake:received");
                record
            }
        };
        match self.advance(record, report)? {
            Progress::Waiting => {}
            Progress::Done => {
                self.journal.record_signal(&SignalRecord {
                    id: id.clone(),
                    at: self.now(),
                    outcome: SignalOutcome::Accepted,
                    reason: format!("handoff {handoff_id} accepted"),
                    handoff: Some(handoff_id),
                })?;
                self.consume(path);
                report.accepted.push(id);
            }
            Progress::Refused(reason) => {
                self.refuse_signal(path, Some(&id), reason, false, report)?;
            }
        }
        Ok(())
    }

    /// Runs the handoff's remaining steps as far as they can go now.
    fn advance(
        &self,
        mut record: HandoffRecord,
        report: &mut Report,
    ) -> Result<Progress, WakeError> {
        let id = record.id.clone();
        loop {
            let next = match &record.step {
                Step::Done => return Ok(Progress::Done),
                Step::Refused { reason } => return Ok(Progress::Refused(reason.clone())),
                Step::Received => match self.archive(&id)? {
                    Ok(()) => Step::Archived,
                    Err(reason) => Step::Refused { reason },
                },
                Step::Archived => {
                    let h = self.handoff(&id)?;
                    self.write_claims(&h)?;
                    Step::ClaimsWritten { at: self.now() }
                }
                Step::ClaimsWritten { at } => {
                    let at = *at;
                    let nothing_claimed = task_ids(&self.handoff(&id)?).is_empty();
                    if !nothing_claimed && !self.claims_synced(at) {
                        let waited = (self.now() - at).to_std().unwrap_or_default();
                        if waited > self.config.wake.claim_timeout && !record.warned_slow_sync {
                            tracing::warn!(handoff = %id, waited = %humantime::format_duration(std::time::Duration::from_secs(waited.as_secs())), "claims have not reached the remote yet; is git-sync running?");
                            record.warned_slow_sync = true;
                            self.journal.save_handoff(&record)?;
                        }
                        report.waiting.push(id.clone());
                        return Ok(Progress::Waiting);
                    }
                    let h = self.handoff(&id)?;
                    let (won, lost) = self.check_claims(&h);
                    for task in &lost {
                        tracing::warn!(handoff = %id, task = %task, "lost the claim on a task to another PC; dropping it");
                    }
                    record.won = won;
                    record.lost = lost;
                    Step::Claimed
                }
                Step::Claimed => {
                    let h = self.handoff(&id)?;
                    self.activate(&h, &record.won)?;
                    Step::InstanceWritten
                }
                Step::InstanceWritten => {
                    // A PC taking over from one out of credit starts its windows afresh; work
                    // the coordinator gives a PC leaves its own credit as it is.
                    let h = self.handoff(&id)?;
                    if !matches!(
                        h.reason,
                        HandoffReason::Assignment | HandoffReason::Remediation
                    ) {
                        let reset = CreditEvent::new(self.now(), EventKind::Reset);
                        daemon::append_line(
                            &self.tree.credit_events_file(),
                            &reset.to_line(),
                            &self.tree.credit_lock_file(),
                        )?;
                    }
                    Step::CreditReset
                }
                Step::CreditReset => {
                    let h = self.handoff(&id)?;
                    self.restore_code(&h);
                    self.place_conversation(&h, &id);
                    self.start_agent(&h, &record.won, None, report)?
                }
                Step::Launching { launch_id } => {
                    let launch_id = launch_id.clone();
                    match agent::find(&launch_id) {
                        Some(pid) => {
                            tracing::info!(pid, "found the agent started before a restart");
                            Step::Launched {
                                pid: Some(pid),
                                how: "started before a restart".to_owned(),
                            }
                        }
                        None => {
                            let h = self.handoff(&id)?;
                            self.start_agent(&h, &record.won, Some(launch_id), report)?
                        }
                    }
                }
                Step::Launched { .. }
                    if record.won.is_empty() && self.handoff(&id)?.reason.is_coordinators() =>
                {
                    // Nothing was taken over: the heartbeat says what the PC really does.
                    Step::Done
                }
                Step::Launched { .. } => {
                    let h = self.handoff(&id)?;
                    let tasks = record.won.len() as u32;
                    pcfiles::update_heartbeat(&self.tree, &self.pc, self.now(), |hb| {
                        // Work from another PC is a handoff accepted; work the leader gave its
                        // own PC is just work.
                        hb.status = if h.from_pc == self.pc {
                            HeartbeatStatus::Active
                        } else {
                            HeartbeatStatus::HandoffAccepted
                        };
                        hb.from_pc = Some(h.from_pc.clone()).filter(|p| *p != self.pc);
                        hb.to_pc = None;
                        hb.tasks_received = Some(tasks);
                        hb.reason = Some(h.reason);
                        hb.handoff = Some(id.clone());
                        hb.paused_until = None;
                    })?;
                    tracing::info!(handoff = %id, from = %h.from_pc, tasks_received = tasks, "handoff accepted");
                    Step::Done
                }
            };
            let name = step_name(&next);
            record.step = next;
            self.journal.save_handoff(&record)?;
            failpoint::hit(&format!("wake:{name}"));
        }
    }

    /// The handoff's contents, from `handoff/processed/` once archived.
    fn handoff(&self, id: &HandoffId) -> Result<Handoff, WakeError> {
        let path = self.tree.processed_handoff_file(id);
        Ok(fsio::load::<Handoff>(&path)?.value)
    }

    /// Validates the handoff file and moves it to `handoff/processed/`. `Ok(Err(reason))`
    /// refuses the handoff.
    fn archive(&self, id: &HandoffId) -> Result<Result<(), String>, WakeError> {
        let pending = self.tree.handoff_file(id);
        let archived = self.tree.processed_handoff_file(id);
        let source = if pending.is_file() {
            pending.clone()
        } else if archived.is_file() {
            archived.clone()
        } else {
            return Ok(Err(format!(
                "its handoff file handoff/{id}.json does not exist"
            )));
        };
        let fleet = self.fleet()?;
        if let Err(problem) = validate::validate_file(&self.tree, &source, Some(&fleet)) {
            if source == pending {
                fsio::quarantine(&self.tree, &pending, &problem.message, self.now())?;
            }
            return Ok(Err(format!(
                "its handoff file is invalid: {}",
                problem.message
            )));
        }
        let h = match fsio::load::<Handoff>(&source) {
            Ok(d) => d.value,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if h.to_pc != self.pc {
            return Ok(Err(format!(
                "the handoff is for {}, not {}",
                h.to_pc, self.pc
            )));
        }
        if let Some(reason) = self.deposed_leader(h.leader_epoch) {
            return Ok(Err(reason));
        }
        // Epochs: work reassigned by the coordinator carries a newer epoch; anything older
        // than the newest seen for its tasks is stale.
        let mut epochs = self.journal.epochs()?;
        let epoch = h.epoch.unwrap_or(0);
        let tasks = task_ids(&h);
        if let Some((task, newest)) = tasks
            .iter()
            .filter_map(|t| epochs.0.get(t).map(|e| (t, *e)))
            .find(|(_, e)| *e > epoch)
        {
            return Ok(Err(format!(
                "its epoch {epoch} is older than epoch {newest} already seen for task {task}"
            )));
        }
        if source == pending {
            let bytes = fsio::read_bounded(&pending, 2 * 1024 * 1024)?;
            match fsio::write_new(&archived, &bytes) {
                Ok(()) => {}
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e.into()),
            }
            std::fs::remove_file(&pending).map_err(|source| IoError {
                action: "remove the archived handoff",
                path: pending.clone(),
                source,
            })?;
        }
        for t in tasks {
            let e = epochs.0.entry(t).or_insert(epoch);
            *e = (*e).max(epoch);
        }
        self.journal.save_epochs(&epochs)?;
        Ok(Ok(()))
    }

    /// Writes a claim for every task of the handoff that nobody else holds. A claim held by the
    /// PC handing over (or, for a reassignment, by anyone at an older epoch) is taken over.
    fn write_claims(&self, h: &Handoff) -> Result<(), WakeError> {
        let now = self.now();
        let epoch = h.epoch.unwrap_or(0);
        for task in task_ids(h) {
            let path = self.tree.claim_file(&task);
            let ours = Claim {
                format_version: 1,
                task_id: task.clone(),
                pc: self.pc.clone(),
                claimed_at: now,
                epoch,
                handoff: h.id(),
            };
            match fsio::load::<Claim>(&path) {
                Err(e) if e.is_not_found() => match fsio::create(&path, &ours) {
                    Ok(()) => {}
                    Err(SaveError::Io(e)) if e.is_already_exists() => {}
                    Err(e) => return Err(e.into()),
                },
                Ok(doc) => {
                    let c = doc.value;
                    let takeover = c.pc == h.from_pc
                        || (h.reason == HandoffReason::Reassignment && c.epoch < epoch);
                    if c.pc == self.pc {
                        if c.epoch < epoch {
                            fsio::save(&path, &Doc::new(ours))?;
                        }
                    } else if takeover {
                        fsio::save(
                            &path,
                            &Doc::new(Claim {
                                epoch: epoch.max(c.epoch),
                                ..ours
                            }),
                        )?;
                    } else {
                        tracing::info!(task = %task, holder = %c.pc, "task already claimed by another PC");
                    }
                }
                Err(e) => {
                    tracing::warn!(task = %task, error = %e, "unreadable claim; leaving it to git-sync");
                }
            }
        }
        Ok(())
    }

    /// Checks out the code the outgoing PC pushed (current_work.code) in the agent's workdir,
    /// setting this checkout's uncommitted changes aside first. Never stops the handoff: on
    /// failure the agent starts on what this PC has. Safe to run again after a crash.
    fn restore_code(&self, h: &Handoff) {
        let Some(work) = &h.current_work else {
            return;
        };
        let Some(snap) = &work.code else {
            return;
        };
        let Some(dir) = agent::workdir(&self.config.agent.workdir, self.config_dir.as_deref())
        else {
            tracing::info!(task = %work.task_id, "the handoff carries code, but agent.workdir is not set; not checked out");
            return;
        };
        if !snap.pushed {
            tracing::warn!(task = %work.task_id, why = snap.note.as_deref().unwrap_or(""), "the outgoing PC could not push its code; starting from what this PC has");
        }
        match trinity_core::code::restore(&dir, &work.task_id, snap, &self.pc, self.now()) {
            Ok(r) => {
                if let Some(saved) = &r.set_aside {
                    tracing::warn!(dir = %dir.display(), saved = %saved, "set this checkout's uncommitted changes aside (git log -p {saved} shows them)");
                }
                tracing::info!(task = %work.task_id, branch = %r.branch, commit = %snap.wip_commit, "checked out the code handed over");
            }
            Err(e) => {
                tracing::warn!(task = %work.task_id, error = %e, "could not check out the code handed over; starting from what this PC has");
            }
        }
    }

    /// Where Claude Code looks for the sessions of the agent's workdir on this PC.
    fn session_file(&self, session: &str) -> Option<PathBuf> {
        if !trinity_core::code::is_session_id(session) {
            return None;
        }
        let projects = trinity_core::config::expand_home(&self.config.credit.claude_projects_dir)?;
        let workdir = agent::workdir(&self.config.agent.workdir, self.config_dir.as_deref())
            .or_else(|| std::env::current_dir().ok())?;
        let workdir = if workdir.is_absolute() {
            workdir
        } else {
            std::env::current_dir().ok()?.join(workdir)
        };
        Some(
            trinity_core::code::claude_project_dir(&projects, &workdir)
                .join(format!("{session}.jsonl")),
        )
    }

    /// Puts the conversation the handoff carries where Claude Code finds it for the agent's
    /// workdir (never over a session file already there), then removes it from the tree: this
    /// PC is its consumer.
    fn place_conversation(&self, h: &Handoff, id: &HandoffId) {
        let carried = self.tree.conversation_file(id);
        if !carried.is_file() {
            return;
        }
        let session = h.current_work.as_ref().and_then(|w| w.session.as_deref());
        if let Some(dest) = session.and_then(|s| self.session_file(s)) {
            if dest.exists() {
                tracing::info!(file = %dest.display(), "the conversation is already here");
            } else {
                let placed =
                    fsio::read_bounded(&carried, trinity_core::validate::MAX_CONVERSATION_BYTES)
                        .map_err(|e| e.to_string())
                        .and_then(|bytes| {
                            if let Some(dir) = dest.parent() {
                                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                            }
                            fsio::write_atomic(&dest, &bytes).map_err(|e| e.to_string())
                        });
                match placed {
                    Ok(()) => {
                        tracing::info!(file = %dest.display(), "placed the conversation handed over")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot place the conversation; the agent starts a new one")
                    }
                }
            }
        }
        if let Err(e) = std::fs::remove_file(&carried)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, file = %carried.display(), "cannot remove the carried conversation");
        }
    }

    /// Whether claims written at `at` have reached the remote (at once without git).
    fn claims_synced(&self, at: DateTime<Utc>) -> bool {
        match self.config.sync.mode {
            SyncMode::None => true,
            SyncMode::Git => SyncState::load(&self.tree).is_some_and(|s| s.has_reached_remote(at)),
        }
    }

    /// The tasks whose claims are ours after syncing, and those another PC holds.
    fn check_claims(&self, h: &Handoff) -> (Vec<TaskId>, Vec<TaskId>) {
        let mut won = Vec::new();
        let mut lost = Vec::new();
        for task in task_ids(h) {
            match fsio::load::<Claim>(&self.tree.claim_file(&task)) {
                Ok(c) if c.value.pc == self.pc => won.push(task),
                _ => lost.push(task),
            }
        }
        (won, lost)
    }

    /// `instances/{PC}.json` ACTIVE with the handoff's work.
    fn activate(&self, h: &Handoff, won: &[TaskId]) -> Result<(), WakeError> {
        let now = self.now();
        let current_work = h.current_work.clone().filter(|w| won.contains(&w.task_id));
        if won.is_empty() && current_work.is_none() {
            tracing::info!(handoff = ?h.id(), "the handoff carried no work this PC holds; instance state unchanged");
            return Ok(());
        }
        let id = h.id();
        let target = if h.reason == HandoffReason::Remediation {
            InstanceState::Remediation
        } else {
            InstanceState::Active
        };
        pcfiles::update_instance(&self.tree, &self.pc, now, |current| {
            let from = current.map_or(InstanceState::Standby, |c| c.state);
            if let Some(path) = state::path(from, target)
                && path.len() > 1
            {
                let steps: Vec<&str> = path.iter().map(|s| s.as_str()).collect();
                tracing::info!(from = %from, via = %steps.join(" → "), "new work: the previous handoff is complete");
            }
            let mut claimed: BTreeSet<TaskId> = current
                .filter(|c| c.state == InstanceState::Active)
                .map(|c| c.claimed_tasks.iter().cloned().collect())
                .unwrap_or_default();
            claimed.extend(won.iter().cloned());
            Some(InstanceStatus {
                format_version: 1,
                pc: self.pc.clone(),
                state: target,
                since: now,
                current_work: current_work
                    .or_else(|| current.and_then(|c| c.current_work.clone()))
                    .or_else(|| {
                        // Nothing in progress: the first task received is the current work.
                        won.first()
                            .map(|t| trinity_core::schema::CurrentWork::new(t.clone()))
                    }),
                claimed_tasks: claimed.into_iter().collect(),
                handoff: id.clone(),
                epoch: current.map_or(0, |c| c.epoch).max(h.epoch.unwrap_or(0)),
            })
        })?;
        Ok(())
    }

    /// Starts the agent for the won tasks, or queues them for the agent already running.
    fn start_agent(
        &self,
        h: &Handoff,
        won: &[TaskId],
        launch_id: Option<String>,
        report: &mut Report,
    ) -> Result<Step, WakeError> {
        let Some(id) = h.id() else {
            return Ok(Step::Refused {
                reason: "the handoff has no valid id".to_owned(),
            });
        };
        // Work the coordinator gave whose tasks all went elsewhere (another PC holds them at a
        // newer epoch, or they are done): there is nothing for an agent to do.
        if h.reason.is_coordinators() && won.is_empty() {
            tracing::info!(handoff = %id, "its tasks went elsewhere meanwhile; no agent started");
            return Ok(Step::Launched {
                pid: None,
                how: "nothing left to do: its tasks went elsewhere".to_owned(),
            });
        }
        // Otherwise the agent starts even when the handoff lists no task: the handoff file
        // itself says what the other PC was doing.
        let current = h.current_work.as_ref().filter(|w| won.contains(&w.task_id));
        let tasks: Vec<TaskRef> = h
            .task_queue
            .iter()
            .filter(|t| won.contains(&t.id))
            .cloned()
            .collect();
        if self.config.wake.queue_when_agent_running
            && let Some(running) = self.journal.agent()?
            && running.handoff != id
            && agent::is_running(running.pid, &running.launch_id)
        {
            let TasksFile(mut queued) = local::read_or_default(&running.tasks_file)?;
            for t in &tasks {
                if !queued.iter().any(|q| q.id == t.id) {
                    queued.push(t.clone());
                }
            }
            local::write(&running.tasks_file, &TasksFile(queued))?;
            tracing::info!(
                pid = running.pid,
                tasks = tasks.len(),
                "the agent is still running; queued the new work for it"
            );
            return Ok(Step::Launched {
                pid: Some(running.pid),
                how: format!("queued for the agent already running (pid {})", running.pid),
            });
        }
        let tasks_file = self.tree.wake_tasks_file(&id);
        local::write(&tasks_file, &TasksFile(tasks))?;
        let launch_id = match launch_id {
            Some(l) => l,
            None => {
                let l = format!("{id}.{}", std::process::id());
                let mut record = self
                    .journal
                    .handoff(&id)?
                    .ok_or_else(|| WakeError::RecordGone(id.clone()))?;
                record.step = Step::Launching {
                    launch_id: l.clone(),
                };
                self.journal.save_handoff(&record)?;
                failpoint::hit("wake:launching");
                l
            }
        };
        let task_id = current
            .map(|w| w.task_id.clone())
            .or_else(|| won.first().cloned());
        let mut env: Vec<(String, OsString)> = vec![
            ("TRINITY_PC".to_owned(), self.pc.as_str().into()),
            ("TRINITY_FROM_PC".to_owned(), h.from_pc.as_str().into()),
            (
                "TRINITY_HANDOFF_FILE".to_owned(),
                absolute(&self.tree.processed_handoff_file(&id)).into_os_string(),
            ),
            (
                "TRINITY_TASKS_FILE".to_owned(),
                absolute(&tasks_file).into_os_string(),
            ),
            (LAUNCH_ID_VAR.to_owned(), launch_id.clone().into()),
        ];
        if let Some(t) = &task_id {
            env.push(("TRINITY_TASK_ID".to_owned(), t.as_str().into()));
        }
        let mut command = self.config.agent.command.clone();
        if let Some(session) = current.and_then(|w| w.session.as_deref())
            && trinity_core::code::is_claude(&command)
            && self.session_file(session).is_some_and(|f| f.is_file())
            && !command.iter().any(|a| a == "--resume" || a == "-r")
        {
            command.extend(["--resume".to_owned(), session.to_owned()]);
            tracing::info!(session, "the agent resumes the conversation handed over");
        }
        let launch = Launch {
            command,
            workdir: agent::workdir(&self.config.agent.workdir, self.config_dir.as_deref()),
            env,
            log: self.tree.agent_log_file(),
            new_console: self.config.agent.new_console,
        };
        let pid = agent::spawn(&launch)?;
        tracing::info!(pid, program = %launch.command[0], handoff = %id, "started the agent");
        self.journal.save_agent(&AgentRecord {
            pid,
            launch_id,
            started_at: self.now(),
            handoff: id,
            tasks_file,
        })?;
        report.launched.push(pid);
        Ok(Step::Launched {
            pid: Some(pid),
            how: "started".to_owned(),
        })
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

fn is_temp(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(trinity_core::layout::TEMP_SUFFIX))
}

/// The handoff's tasks: its queue, and its current work's task if the queue lacks it.
fn task_ids(h: &Handoff) -> Vec<TaskId> {
    let mut ids: Vec<TaskId> = Vec::new();
    if let Some(w) = &h.current_work {
        ids.push(w.task_id.clone());
    }
    for t in &h.task_queue {
        if !ids.contains(&t.id) {
            ids.push(t.id.clone());
        }
    }
    ids
}

/// The step's name in logs and fail points.
pub fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Received => "received",
        Step::Archived => "archived",
        Step::ClaimsWritten { .. } => "claims-written",
        Step::Claimed => "claimed",
        Step::InstanceWritten => "instance-written",
        Step::CreditReset => "credit-reset",
        Step::Launching { .. } => "launching",
        Step::Launched { .. } => "launched",
        Step::Done => "done",
        Step::Refused { .. } => "refused",
    }
}
