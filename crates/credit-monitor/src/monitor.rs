//! Recording events, evaluating the rules and deciding to hand off.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use trinity_core::config::Config;
use trinity_core::credit::{self, CreditEvent, Evaluation, EventKind, Rules};
use trinity_core::daemon::{self, FileLock};
use trinity_core::fsio::{self, IoError};
use trinity_core::pcfiles;
use trinity_core::rotation::{self, Choice, PeerView};
use trinity_core::schema::{
    CreditLevel, CreditStatus, Doc, Fleet, HandoffReason, Heartbeat, HeartbeatStatus,
};
use trinity_core::{PcId, SharedClock, Tree};

use crate::handoff::{self, Station};
use crate::state::{self, Action, MonitorError, TriggerState};

/// The events file is compacted when it grows past this.
pub const COMPACT_AT_BYTES: u64 = 512 * 1024;

/// Events older than this are dropped by compaction (limits still in force are kept).
pub const KEEP_EVENTS_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest events file read (compaction keeps it far below).
const MAX_EVENTS_BYTES: usize = 64 * 1024 * 1024;

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
        self.record_many(std::slice::from_ref(event))
    }

    /// Appends several events (from a transcript) and acts once.
    pub fn record_many(&self, events: &[CreditEvent]) -> Result<StepReport, MonitorError> {
        let _lock = self.lock()?;
        for e in events {
            daemon::append_line_locked(&self.tree.credit_events_file(), &e.to_line())?;
        }
        // Their tokens, once: counted where they are appended.
        if events.iter().any(|e| e.tokens.is_some_and(|t| t > 0)) {
            let mut state = self.load_state()?;
            state.count_tokens(events);
            self.save_state(&state)?;
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
        credit::request_reset(&self.tree, self.now())?;
        let _lock = self.lock()?;
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
            handoff::finish(&self.station(), &mut state, now)?;
        }
        let (monitor, bad_lines, size) = self.load_events(now)?;
        if size > COMPACT_AT_BYTES {
            self.compact(now)?;
        }
        if state.take_reset(monitor.last_reset().filter(|r| *r <= now)) {
            tracing::info!("credit reset: every window starts afresh, any pause ends");
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
            let action = handoff::start(
                &self.station(),
                &mut state,
                &evaluation,
                &choice,
                reason,
                now,
            )?;
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

    /// The persisted trigger state (defaults when there is none).
    pub fn load_state(&self) -> Result<TriggerState, MonitorError> {
        state::load(&self.tree)
    }

    pub(crate) fn save_state(&self, state: &TriggerState) -> Result<(), MonitorError> {
        state::save(&self.tree, state)
    }

    /// Once the next PC accepted this PC's handoff: HANDOFF_READY → HANDOFF_COMPLETE →
    /// STANDBY ([`handoff::settle_outgoing`]). Returns whether it moved.
    pub fn settle_outgoing(&self) -> Result<bool, MonitorError> {
        handoff::settle_outgoing(&self.station(), self.now())
    }

    /// What the handoff writer needs of this monitor.
    pub(crate) fn station(&self) -> Station<'_> {
        Station {
            tree: &self.tree,
            pc: &self.pc,
            config: &self.config,
        }
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
            tokens_by_day: state.tokens_by_day.clone(),
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
