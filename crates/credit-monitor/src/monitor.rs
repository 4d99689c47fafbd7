//! Recording events, evaluating the rules and deciding to hand off.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trinity_core::config::Config;
use trinity_core::credit::{self, CreditEvent, Evaluation, EventKind, Rules};
use trinity_core::daemon::{self, FileLock};
use trinity_core::fsio::{self, IoError};
use trinity_core::local::{self, LocalError, LocalState};
use trinity_core::pcfiles::{self, FleetError};
use trinity_core::rotation::{self, Choice, PeerView};
use trinity_core::schema::{
    CreditLevel, CreditStatus, Doc, Fleet, HandoffReason, Heartbeat, HeartbeatStatus,
};
use trinity_core::{HandoffId, PcId, SharedClock, Tree};

use crate::handoff::{self, PendingHandoff};

/// The events file is compacted when it grows past this.
pub const COMPACT_AT_BYTES: u64 = 512 * 1024;

/// Events older than this are dropped by compaction (limits still in force are kept).
pub const KEEP_EVENTS_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest events file read (compaction keeps it far below).
const MAX_EVENTS_BYTES: usize = 64 * 1024 * 1024;

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
        matches!(
            self,
            MonitorError::Fleet(_)
                | MonitorError::State(
                    LocalError::Corrupt { .. }
                        | LocalError::SetAside { .. }
                        | LocalError::TooNew { .. }
                )
        )
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
        }
    }
}

impl LocalState for TriggerState {
    const NAME: &'static str = "the credit monitor's trigger state";
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

/// The result of one step.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The rules' verdict.
    pub evaluation: Evaluation,
    /// What was done about it.
    pub action: Action,
    /// The PC a handoff would go to now.
    pub next_pc: Option<PcId>,
    /// The persisted trigger state after the step.
    pub state: TriggerState,
    /// Event lines that could not be read (skipped).
    pub bad_lines: usize,
}

/// One PC's credit monitor.
#[derive(Debug, Clone)]
pub struct Monitor {
    pub(crate) tree: Tree,
    pub(crate) pc: PcId,
    pub(crate) config: Config,
    pub(crate) clock: SharedClock,
}

impl Monitor {
    /// A monitor for `pc` on `tree`.
    pub fn new(tree: Tree, pc: PcId, config: Config, clock: SharedClock) -> Self {
        Self {
            tree,
            pc,
            config,
            clock,
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

    /// The clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn lock(&self) -> Result<FileLock, MonitorError> {
        Ok(FileLock::acquire(&self.tree.credit_lock_file())?)
    }

    /// Appends `event` and acts on the new evaluation, all under the credit lock.
    pub fn record(&self, event: &CreditEvent) -> Result<StepReport, MonitorError> {
        let _lock = self.lock()?;
        daemon::append_line_locked(&self.tree.credit_events_file(), &event.to_line())?;
        self.step_locked(false)
    }

    /// Appends several events (from a transcript) and acts once.
    pub fn record_many(&self, events: &[CreditEvent]) -> Result<StepReport, MonitorError> {
        let _lock = self.lock()?;
        for e in events {
            daemon::append_line_locked(&self.tree.credit_events_file(), &e.to_line())?;
        }
        self.step_locked(false)
    }

    /// Evaluates and acts without a new event (the daemon's tick).
    pub fn step(&self) -> Result<StepReport, MonitorError> {
        let _lock = self.lock()?;
        self.step_locked(false)
    }

    /// Hands off now, whatever the rules say (still once: not during a pause).
    pub fn force_handoff(&self) -> Result<StepReport, MonitorError> {
        let _lock = self.lock()?;
        self.step_locked(true)
    }

    /// Starts every window afresh and ends any pause (`--reset`, and the wake-daemon's `reset`
    /// event when this PC accepts work).
    pub fn reset(&self) -> Result<StepReport, MonitorError> {
        let _lock = self.lock()?;
        let now = self.now();
        daemon::append_line_locked(
            &self.tree.credit_events_file(),
            &CreditEvent::new(now, EventKind::Reset).to_line(),
        )?;
        let mut state = self.load_state()?;
        state.paused_until = None;
        state.armed = true;
        state.no_target_until = None;
        state.escalated = false;
        self.save_state(&state)?;
        self.step_locked(false)
    }

    /// Evaluates without writing anything (for `--status`).
    pub fn peek(&self) -> Result<StepReport, MonitorError> {
        let now = self.now();
        let (monitor, bad_lines, _) = self.load_events(now)?;
        let evaluation = monitor.evaluate(now);
        let state = self.load_state()?;
        let next_pc = self.choose(now).ok().and_then(|c| c.next);
        Ok(StepReport {
            evaluation,
            action: Action::None,
            next_pc,
            state,
            bad_lines,
        })
    }

    pub(crate) fn step_locked(&self, force: bool) -> Result<StepReport, MonitorError> {
        let now = self.now();
        let mut state = self.load_state()?;
        // A handoff interrupted by a crash is finished before anything else.
        if state.pending.is_some() {
            handoff::finish(self, &mut state, now)?;
        }
        let (monitor, bad_lines, size) = self.load_events(now)?;
        if size > COMPACT_AT_BYTES {
            self.compact(now)?;
        }
        let evaluation = monitor.evaluate(now);
        let exhausted = evaluation.level == CreditLevel::Exhausted;
        if !exhausted && !force && (!state.armed || state.escalated) {
            state.armed = true;
            state.escalated = false;
            state.no_target_until = None;
        }
        let choice = self.choose(now);
        let mut next_pc = choice.as_ref().ok().and_then(|c| c.next.clone());

        let paused = state.paused_until.filter(|u| *u > now);
        let waiting = state.no_target_until.filter(|u| *u > now);
        let action = if !(exhausted || force) {
            Action::None
        } else if let Some(until) = paused {
            Action::Paused(until)
        } else if !state.armed && !force {
            Action::AlreadyHandedOff
        } else if let Some(until) = waiting.filter(|_| !force) {
            Action::Waiting(until)
        } else {
            let choice = choice?;
            let reason = if force {
                HandoffReason::Manual
            } else {
                evaluation.handoff_reason()
            };
            let action = handoff::start(self, &mut state, &evaluation, &choice, reason, now)?;
            if matches!(action, Action::HandedOff { .. }) {
                next_pc = self.choose(now).ok().and_then(|c| c.next);
            }
            action
        };
        self.save_state(&state)?;
        self.write_status(&evaluation, next_pc.as_ref(), &state, now)?;
        Ok(StepReport {
            evaluation,
            action,
            next_pc,
            state,
            bad_lines,
        })
    }

    /// Reads the events file into a fresh rule monitor. Returns it, the number of unreadable
    /// lines, and the file's size.
    fn load_events(&self, _now: DateTime<Utc>) -> Result<(credit::Tracker, usize, u64), IoError> {
        let path = self.tree.credit_events_file();
        let mut monitor = credit::Tracker::new(Rules::from(&self.config.credit));
        let bytes = match fsio::read_bounded(&path, MAX_EVENTS_BYTES) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok((monitor, 0, 0)),
            Err(e) => return Err(e),
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut bad = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match CreditEvent::parse_line(line) {
                Ok(e) => monitor.ingest(&e),
                Err(_) => bad += 1,
            }
        }
        if bad > 0 {
            tracing::warn!(path = %path.display(), lines = bad, "skipped unreadable event lines");
        }
        Ok((monitor, bad, bytes.len() as u64))
    }

    /// Rewrites the events file with what the rules can still use: events since the last
    /// reset and newer than a day, and limits still in force.
    fn compact(&self, now: DateTime<Utc>) -> Result<(), IoError> {
        let path = self.tree.credit_events_file();
        let bytes = fsio::read_bounded(&path, MAX_EVENTS_BYTES)?;
        let text = String::from_utf8_lossy(&bytes);
        let events: Vec<CreditEvent> = text
            .lines()
            .filter_map(|l| CreditEvent::parse_line(l).ok())
            .collect();
        let start = events
            .iter()
            .rposition(|e| e.kind == EventKind::Reset)
            .unwrap_or(0);
        let cutoff = now - chrono::Duration::from_std(KEEP_EVENTS_FOR).unwrap_or_default();
        let kept: Vec<&CreditEvent> = events[start..]
            .iter()
            .filter(|e| {
                e.ts >= cutoff
                    || e.kind == EventKind::Reset
                    || (matches!(e.kind, EventKind::UsageLimit | EventKind::SpendLimit)
                        && e.reset_at.is_none_or(|r| r > now))
            })
            .collect();
        let mut out = String::new();
        for e in &kept {
            out.push_str(&e.to_line());
            out.push('\n');
        }
        tracing::info!(
            before = events.len(),
            after = kept.len(),
            "compacted the credit events file"
        );
        fsio::write_atomic(&path, out.as_bytes())
    }

    /// The rotation choice from the files of the other PCs.
    pub fn choose(&self, now: DateTime<Utc>) -> Result<Choice, MonitorError> {
        let fleet = self.fleet()?;
        let views = observe_peers(&self.tree, &fleet, &self.pc);
        Ok(rotation::choose_next(
            &fleet,
            &self.pc,
            &views,
            now,
            self.config.coordinator.suspect_after,
        ))
    }

    /// `fleet.toml`.
    pub fn fleet(&self) -> Result<Fleet, MonitorError> {
        Ok(pcfiles::load_member(&self.tree, &self.pc)?)
    }

    /// The persisted trigger state (defaults when there is none). A corrupt one is set aside
    /// and refused until someone has looked at it: guessing could hand off twice.
    pub fn load_state(&self) -> Result<TriggerState, MonitorError> {
        Ok(local::read_once(&self.tree.credit_state_file())?.unwrap_or_default())
    }

    pub(crate) fn save_state(&self, state: &TriggerState) -> Result<(), MonitorError> {
        if self.load_state().ok().as_ref() == Some(state) {
            return Ok(());
        }
        local::write(&self.tree.credit_state_file(), state)?;
        Ok(())
    }

    /// Writes `credit/{PC}.json` when anything but its time changed.
    fn write_status(
        &self,
        e: &Evaluation,
        next_pc: Option<&PcId>,
        state: &TriggerState,
        now: DateTime<Utc>,
    ) -> Result<(), MonitorError> {
        let path = self.tree.credit_file(&self.pc);
        let status = CreditStatus {
            format_version: 1,
            pc: self.pc.clone(),
            updated_at: now,
            level: e.level,
            rule: e.rule.map(str::to_owned),
            fraction: e.fraction,
            reason: e.reason.clone(),
            rules: e.fractions(),
            rate_limit_count: e.rate_limit_count,
            error_rate: e.error_rate,
            avg_response_time: e.avg_response_time,
            exhausted_until: e
                .exhausted_until
                .or(state.paused_until.filter(|u| *u > now)),
            next_pc: next_pc.cloned(),
        };
        let existing = fsio::load::<CreditStatus>(&path).ok();
        let doc = match existing {
            Some(mut doc) => {
                let mut old = doc.value.clone();
                old.updated_at = now;
                if old == status {
                    return Ok(());
                }
                doc.value = status;
                doc
            }
            None => Doc::new(status),
        };
        fsio::save(&path, &doc)?;
        Ok(())
    }
}

/// What this PC can see of the others: heartbeat (status, pause, and when its file last
/// changed by this machine's clock) and credit file.
pub fn observe_peers(tree: &Tree, fleet: &Fleet, me: &PcId) -> BTreeMap<PcId, PeerView> {
    let mut views = BTreeMap::new();
    for pc in fleet.pcs.iter().filter(|p| *p != me) {
        let mut view = PeerView::default();
        let hb_path = tree.heartbeat_file(pc);
        if let Ok(doc) = fsio::load::<Heartbeat>(&hb_path) {
            view.last_seen = modified(&hb_path);
            view.status = Some(doc.value.status);
            view.paused_until = doc.value.paused_until;
            if doc.value.status == HeartbeatStatus::Paused && view.paused_until.is_none() {
                view.status = Some(HeartbeatStatus::Paused);
            }
        }
        if let Ok(doc) = fsio::load::<CreditStatus>(&tree.credit_file(pc)) {
            view.credit_level = Some(doc.value.level);
            view.exhausted_until = doc.value.exhausted_until;
        }
        views.insert(pc.clone(), view);
    }
    views
}

fn modified(path: &Path) -> Option<DateTime<Utc>> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .map(DateTime::<Utc>::from)
}
