//! The credit monitor's own state and vocabulary: the trigger state persisted in
//! `local/credit/state.json` (with the handoff being written), what a step decided, and the
//! errors. Both the decision (`monitor`) and the writing of a handoff (`handoff`) use them;
//! neither depends on the other's internals.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trinity_core::fsio::IoError;
use trinity_core::local::{self, LocalError, LocalState};
use trinity_core::pcfiles::{self, FleetError};
use trinity_core::schema::{Handoff, WakeSignal};
use trinity_core::{HandoffId, PcId, Tree};

/// Why the monitor could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// `fleet.toml` is missing or invalid, or this PC is not in it: there is nobody to hand
    /// off to.
    #[error("cannot read the fleet: {0}")]
    Fleet(#[from] FleetError),
    /// A file of the tree could not be written (the handoff, the wake signal, an escalation).
    #[error(transparent)]
    Save(#[from] trinity_core::fsio::SaveError),
    /// This PC's heartbeat or instance file could not be updated.
    #[error(transparent)]
    Update(#[from] pcfiles::UpdateError),
    /// The trigger state (`local/credit/state.json`) could not be read or written.
    #[error(transparent)]
    State(#[from] LocalError),
    /// A name made from valid parts was refused (a bug): nothing was written.
    #[error(transparent)]
    Name(#[from] trinity_core::ids::IdError),
    /// The pending handoff in the trigger state names no valid handoff file.
    #[error("the pending handoff in the trigger state has no valid id")]
    PendingWithoutId,
}

impl MonitorError {
    /// True when retrying cannot help until someone changes something (the fleet, a file set
    /// aside): the daemon says so plainly instead of retrying quietly.
    pub fn needs_operator(&self) -> bool {
        match self {
            MonitorError::Fleet(_) => true,
            MonitorError::State(e) => e.needs_operator(),
            _ => false,
        }
    }
}

/// `local/credit/state.json`: what must survive a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerState {
    /// True when the next EXHAUSTED evaluation may hand off. Cleared by a handoff, set again
    /// when the level drops below EXHAUSTED or on a reset.
    #[serde(default = "yes")]
    pub armed: bool,
    /// The pause after the last handoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<DateTime<Utc>>,
    /// The last handoff sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handoff: Option<HandoffId>,
    /// When nobody could take over: do not try again before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_target_until: Option<DateTime<Utc>>,
    /// True once the "every PC is exhausted" escalation was written for this exhaustion.
    #[serde(default)]
    pub escalated: bool,
    /// A handoff being written (finished on the next run after a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingHandoff>,
    /// The newest reset request (a `reset` event) taken; the epoch when none was yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_applied: Option<DateTime<Utc>>,
    /// Tokens used per UTC day (`YYYY-MM-DD`), the last [`TOKEN_DAYS`] days: counted as each
    /// event is recorded, so resets and the event log's compaction lose nothing of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens_by_day: BTreeMap<String, u64>,
}

/// Days of token counts kept and published.
pub const TOKEN_DAYS: usize = 7;

impl TriggerState {
    /// Adds the tokens of `events` to their days, keeping the last [`TOKEN_DAYS`] days.
    pub fn count_tokens(&mut self, events: &[trinity_core::credit::CreditEvent]) {
        for e in events {
            if let Some(t) = e.tokens.filter(|t| *t > 0) {
                *self
                    .tokens_by_day
                    .entry(e.ts.format("%Y-%m-%d").to_string())
                    .or_insert(0) += t;
            }
        }
        while self.tokens_by_day.len() > TOKEN_DAYS {
            self.tokens_by_day.pop_first();
        }
    }
}

impl TriggerState {
    /// What a reset request means, owned here: every window starts afresh (the rules see the
    /// `reset` event), any pause ends, the trigger is armed again. `requested` is the newest
    /// `reset` event; it acts once, when newer than the last one taken. Returns whether it
    /// acted.
    pub fn take_reset(&mut self, requested: Option<DateTime<Utc>>) -> bool {
        let fresh = match (requested, self.reset_applied) {
            (None, _) => false,
            (Some(at), Some(seen)) => at > seen,
            // A state written before requests were tracked: a reset no newer than its last
            // handoff was spent before that handoff (never undo a pause it set).
            (Some(at), None) => self
                .last_handoff
                .as_ref()
                .is_none_or(|h| at > h.created_at() + chrono::Duration::seconds(1)),
        };
        // From now on requests are tracked (the epoch: none taken yet).
        self.reset_applied = requested
            .max(self.reset_applied)
            .or(Some(DateTime::UNIX_EPOCH));
        if fresh {
            self.paused_until = None;
            self.armed = true;
            self.no_target_until = None;
            self.escalated = false;
        }
        fresh
    }
}

fn yes() -> bool {
    true
}

impl Default for TriggerState {
    fn default() -> Self {
        Self {
            armed: true,
            paused_until: None,
            last_handoff: None,
            no_target_until: None,
            escalated: false,
            pending: None,
            reset_applied: None,
            tokens_by_day: BTreeMap::new(),
        }
    }
}

impl LocalState for TriggerState {
    const NAME: &'static str = "the credit monitor's trigger state";
}

/// The persisted trigger state (defaults when there is none). A corrupt one is set aside and
/// refused until someone has looked at it: guessing could hand off twice.
pub fn load(tree: &Tree) -> Result<TriggerState, MonitorError> {
    Ok(local::read_once(&tree.credit_state_file())?.unwrap_or_default())
}

/// Saves the trigger state (not rewritten when unchanged).
pub fn save(tree: &Tree, state: &TriggerState) -> Result<(), MonitorError> {
    if load(tree).ok().as_ref() == Some(state) {
        return Ok(());
    }
    local::write(&tree.credit_state_file(), state)?;
    Ok(())
}

/// What an evaluation led to.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing to do.
    None,
    /// A handoff was written.
    HandedOff {
        /// Its id.
        handoff: HandoffId,
        /// The PC woken.
        to: PcId,
    },
    /// Out of credit, but nobody can take over; an escalation was written (once).
    NoTarget {
        /// Why each PC was passed over.
        skipped: String,
        /// When to try again.
        retry_at: DateTime<Utc>,
    },
    /// Out of credit, but this exhaustion was already handed off.
    AlreadyHandedOff,
    /// Out of credit while pausing after a handoff.
    Paused(DateTime<Utc>),
    /// Out of credit; waiting until `retry_at` before looking for a PC again.
    Waiting(DateTime<Utc>),
}

/// A handoff being written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingHandoff {
    /// The handoff file's contents.
    pub handoff: Handoff,
    /// The wake signal's contents.
    pub signal: WakeSignal,
    /// The last step finished.
    pub done: HandoffStep,
    /// The agent's session transcript to carry into `conversations/{handoff-id}.jsonl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<std::path::PathBuf>,
}

/// The steps of writing a handoff, in order (stored as their number: 0–4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum HandoffStep {
    /// Planned: nothing of the tree written yet.
    Planned,
    /// The handoff file (and the conversation before it) is written.
    HandoffFile,
    /// The wake signal is written.
    WakeSignal,
    /// The heartbeat says `handoff_initiated`.
    Heartbeat,
    /// The instance state is HANDOFF_READY (or was left as it was). The last step.
    InstanceState,
}

impl From<HandoffStep> for u8 {
    fn from(step: HandoffStep) -> u8 {
        step as u8
    }
}

impl TryFrom<u8> for HandoffStep {
    type Error = String;

    fn try_from(n: u8) -> Result<Self, String> {
        use HandoffStep as S;
        [
            S::Planned,
            S::HandoffFile,
            S::WakeSignal,
            S::Heartbeat,
            S::InstanceState,
        ]
        .get(usize::from(n))
        .copied()
        .ok_or_else(|| format!("no handoff step {n} (0 to 4)"))
    }
}
