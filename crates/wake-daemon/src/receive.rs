//! Receiving wake signals and accepting handoffs.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use trinity_core::config::{Config, SyncMode};
use trinity_core::fsio::{self, IoError, LoadError, SaveError};
use trinity_core::local::{self, LocalError, TasksFile};
use trinity_core::pcfiles::FleetError;
use trinity_core::schema::{
    Claim, Doc, Fleet, Handoff, HandoffReason, HeartbeatStatus, InstanceStatus, TaskRef,
    WakeSignal, WakeTask,
};
use trinity_core::syncstate::SyncState;
use trinity_core::trust::{Keyring, TrustError};
use trinity_core::{
    HandoffId, InstanceState, PcId, SharedClock, SignalId, TaskId, Tree, failpoint, pcfiles, state,
    validate,
};

use crate::agent::{self, LAUNCH_ID_VAR, Launch};
use crate::journal::{AgentRecord, HandoffRecord, Journal, SignalOutcome, SignalRecord, Step};

mod accept;
mod launch;

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
    /// The agent could not be started.
    #[error(transparent)]
    Launch(#[from] agent::LaunchError),
    /// The keys this PC believes could not be worked out.
    #[error("cannot check signatures: {0}")]
    Trust(#[from] TrustError),
}

impl WakeError {
    /// True when retrying cannot help until someone changes something (the fleet, a journal
    /// record set aside): said once, not on every pass.
    pub fn needs_operator(&self) -> bool {
        match self {
            WakeError::Fleet(_) => true,
            WakeError::Journal(e) => e.needs_operator(),
            _ => false,
        }
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

    /// The keys this PC believes now (read afresh: keys and revocations arrive with git-sync).
    pub fn keyring(&self) -> Result<Keyring, WakeError> {
        Ok(Keyring::open(
            &self.tree,
            self.config.security.require_signatures,
            self.now(),
        )?)
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
        let signal = match fsio::load_trusted::<WakeSignal>(path, &self.keyring()?) {
            Ok((doc, _)) => doc.value,
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

        self.accept_handoff(path, id, &signal, handoff_id, report)
    }

    /// A signal that brings a handoff: the handoff's acceptance begins or goes on (one record
    /// per handoff: a second signal for it is a duplicate), and the signal is consumed once
    /// the handoff is accepted or refused.
    fn accept_handoff(
        &self,
        path: &Path,
        id: SignalId,
        signal: &WakeSignal,
        handoff_id: HandoffId,
        report: &mut Report,
    ) -> Result<(), WakeError> {
        let now = self.now();
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
}

fn is_temp(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(trinity_core::layout::TEMP_SUFFIX))
}
