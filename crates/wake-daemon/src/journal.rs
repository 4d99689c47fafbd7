//! The wake-daemon's journal in `local/wake/`: what was done with each signal and how far each
//! handoff's acceptance has gone. Every record is written atomically before the next step.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trinity_core::fsio::IoError;
use trinity_core::local::{self, LocalError, LocalState};
use trinity_core::{HandoffId, SignalId, TaskId, Tree};

/// What became of a signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalOutcome {
    /// Acted upon (its handoff accepted, or a plain wake-up noted).
    Accepted,
    /// Refused: invalid, expired, stale, or its handoff unusable.
    Refused,
    /// A second signal for work already accepted.
    Duplicate,
}

/// `local/wake/signals/{id}.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalRecord {
    /// The signal.
    pub id: SignalId,
    /// When it was handled.
    pub at: DateTime<Utc>,
    /// What became of it.
    pub outcome: SignalOutcome,
    /// Why, for people.
    pub reason: String,
    /// The handoff it pointed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<HandoffId>,
}

/// The steps of accepting a handoff, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum Step {
    /// Nothing done yet.
    Received,
    /// The handoff file is in `handoff/processed/`.
    Archived,
    /// Claims were written at `at`; waiting for them to reach the remote.
    ClaimsWritten {
        /// When (this machine's clock).
        at: DateTime<Utc>,
    },
    /// The claims that held after syncing are ours.
    Claimed,
    /// `instances/{PC}.json` says ACTIVE.
    InstanceWritten,
    /// The credit monitor's windows were reset.
    CreditReset,
    /// About to start the agent with this launch id (a crash here is resolved by looking for
    /// a process carrying it).
    Launching {
        /// The `TRINITY_LAUNCH_ID` given to the agent.
        launch_id: String,
    },
    /// The agent runs (or the work was queued for one already running, or there was no work).
    Launched {
        /// The agent's process id, when one was started or found.
        pid: Option<u32>,
        /// What happened, for people.
        how: String,
    },
    /// The heartbeat says `handoff_accepted`. Finished.
    Done,
    /// The handoff was refused; nothing more will be done.
    Refused {
        /// Why.
        reason: String,
    },
}

impl Step {
    /// The step's name in logs and `--status`: `claims-written`.
    pub fn as_str(&self) -> &'static str {
        match self {
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
}

/// `local/wake/handoffs/{id}.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoffRecord {
    /// The handoff.
    pub id: HandoffId,
    /// The signal that brought it.
    pub signal: SignalId,
    /// When acceptance started.
    pub started_at: DateTime<Utc>,
    /// How far it has gone.
    pub step: Step,
    /// Tasks whose claims held.
    #[serde(default)]
    pub won: Vec<TaskId>,
    /// Tasks another PC holds.
    #[serde(default)]
    pub lost: Vec<TaskId>,
    /// True once the slow-sync warning was logged.
    #[serde(default)]
    pub warned_slow_sync: bool,
}

impl HandoffRecord {
    /// True when nothing more will be done.
    pub fn is_final(&self) -> bool {
        matches!(self.step, Step::Done | Step::Refused { .. })
    }
}

/// `local/wake/agent.json`: the agent this daemon started last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Its process id.
    pub pid: u32,
    /// The `TRINITY_LAUNCH_ID` in its environment (guards against pid reuse).
    pub launch_id: String,
    /// When it was started.
    pub started_at: DateTime<Utc>,
    /// The handoff it was started for.
    pub handoff: HandoffId,
    /// Its tasks file (`TRINITY_TASKS_FILE`), where queued work is added.
    pub tasks_file: std::path::PathBuf,
}

/// The newest work epoch seen per task (`local/wake/epochs.json`, a plain map).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epochs(pub BTreeMap<TaskId, u64>);

impl LocalState for SignalRecord {
    const NAME: &'static str = "the wake journal's signal record";
}

impl LocalState for HandoffRecord {
    const NAME: &'static str = "the wake journal's handoff record";
}

impl LocalState for AgentRecord {
    const NAME: &'static str = "the wake journal's agent record";
}

impl LocalState for Epochs {
    const NAME: &'static str = "the wake journal's work epochs";
    const VERSION: Option<u32> = None;
}

/// Every record in `dir`; a corrupt one is set aside and logged (reading it again later
/// finds it refused by [`local::read_once`], never redone).
fn read_all<T: LocalState>(dir: &Path) -> Vec<T> {
    let (found, problems) = local::read_dir(dir);
    for e in problems {
        tracing::error!(error = %e, "a wake journal record is unreadable");
    }
    found
}

/// Reads and writes the journal of one tree.
#[derive(Debug, Clone)]
pub struct Journal {
    tree: Tree,
}

impl Journal {
    /// The journal of `tree`.
    pub fn new(tree: Tree) -> Self {
        Self { tree }
    }

    /// What was done with a signal, if anything.
    pub fn signal(&self, id: &SignalId) -> Result<Option<SignalRecord>, LocalError> {
        local::read_once(&self.tree.wake_signal_journal(id))
    }

    /// Records what was done with a signal.
    pub fn record_signal(&self, record: &SignalRecord) -> Result<(), LocalError> {
        local::write(&self.tree.wake_signal_journal(&record.id), record)
    }

    /// A handoff's progress, if it was started.
    pub fn handoff(&self, id: &HandoffId) -> Result<Option<HandoffRecord>, LocalError> {
        match local::read_once(&self.tree.wake_handoff_journal(id))? {
            Some(r) => Ok(Some(r)),
            None => local::read_once(&self.tree.wake_finished_journal(id)),
        }
    }

    /// Saves a handoff's progress. A finished record moves to `handoffs/finished/`, so each pass
    /// reads only the unfinished ones.
    pub fn save_handoff(&self, record: &HandoffRecord) -> Result<(), LocalError> {
        let active = self.tree.wake_handoff_journal(&record.id);
        if record.is_final() {
            local::write(&self.tree.wake_finished_journal(&record.id), record)?;
            match std::fs::remove_file(&active) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(IoError::new("remove", &active, source).into()),
            }
        } else {
            local::write(&active, record)
        }
    }

    /// The unfinished handoff records, oldest first.
    pub fn unfinished(&self) -> Vec<HandoffRecord> {
        let mut out = self.records_in(&self.tree.wake_handoff_journal_dir());
        // A finished record left behind by a crash while it was being moved.
        for done in out.iter().filter(|r| r.is_final()) {
            let _ = self.save_handoff(done);
        }
        out.retain(|r| !r.is_final());
        out
    }

    /// Every handoff record, finished or not, oldest first.
    pub fn handoffs(&self) -> Vec<HandoffRecord> {
        let dir = self.tree.wake_handoff_journal_dir();
        let mut all = self.records_in(&dir);
        all.extend(self.records_in(&self.tree.wake_finished_journal_dir()));
        all.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        all
    }

    fn records_in(&self, dir: &Path) -> Vec<HandoffRecord> {
        let mut out: Vec<HandoffRecord> = read_all(dir);
        out.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        out
    }

    /// Recent signal records, newest first.
    pub fn signals(&self, limit: usize) -> Vec<SignalRecord> {
        let mut out: Vec<SignalRecord> = read_all(&self.tree.wake_signal_journal_dir());
        out.sort_by(|a, b| (b.at, &b.id).cmp(&(a.at, &a.id)));
        out.truncate(limit);
        out
    }

    /// The newest epoch seen per task.
    pub fn epochs(&self) -> Result<Epochs, LocalError> {
        local::read_or_default(&self.tree.wake_epochs_file())
    }

    /// Saves the epochs.
    pub fn save_epochs(&self, epochs: &Epochs) -> Result<(), LocalError> {
        local::write(&self.tree.wake_epochs_file(), epochs)
    }

    /// The agent started last, if any.
    pub fn agent(&self) -> Result<Option<AgentRecord>, LocalError> {
        local::read(&self.tree.agent_file())
    }

    /// Records the agent started.
    pub fn save_agent(&self, record: &AgentRecord) -> Result<(), LocalError> {
        local::write(&self.tree.agent_file(), record)
    }
}
