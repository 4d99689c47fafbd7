//! The long-running credit monitor: re-evaluates on every new event and every interval, tails
//! Claude Code's transcripts, and ends the pause in the heartbeat when it is over.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trinity_core::pcfiles;
use trinity_core::schema::{CreditLevel, HeartbeatStatus};
use trinity_runtime::{Events, OperatorAlerts};

use crate::monitor::{Monitor, StepReport};
use crate::state::{Action, MonitorError};
use crate::transcripts::{self, TailState};

/// How the loop is paced.
#[derive(Debug, Clone)]
pub struct Options {
    /// Re-evaluate at least this often.
    pub interval: Duration,
    /// Look at the transcripts this often.
    pub transcript_poll: Duration,
    /// The transcripts directory, if tailing is on.
    pub transcripts: Option<PathBuf>,
    /// The agents' output (`logs/agent.log`), read with the transcripts.
    pub agent_log: Option<PathBuf>,
}

/// What woke the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The events file changed.
    Events,
    /// The interval passed.
    Tick,
    /// Time to read the transcripts (and the agents' output).
    Transcripts,
    /// Claude Code's `StopFailure` hook reported a failed turn: read them now.
    Poked,
}

/// True when a file-system event concerns `file` (other writes in `local/credit/`, our own
/// state and lock files among them, are not news).
pub fn is_change_of(event: &notify::Event, file: &Path) -> bool {
    use notify::EventKind as K;
    matches!(event.kind, K::Create(_) | K::Modify(_) | K::Any)
        && event
            .paths
            .iter()
            .any(|p| p.file_name() == file.file_name())
}

/// Runs until `shutdown` is cancelled.
pub async fn run(
    monitor: Monitor,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), MonitorError> {
    // Fail early on a tree without a usable fleet.
    monitor.fleet()?;

    let events_file = monitor.tree().credit_events_file();
    let events_dir = monitor.tree().credit_local_dir();
    let poke_file = monitor.tree().credit_poke_file();
    let mut events = Events::new();
    let watched = events_file.clone();
    events.watch(
        &[(&events_dir, false)],
        move |event| is_change_of(event, &watched),
        Wake::Events,
        "evaluating on the interval only",
    );
    let poked = poke_file.clone();
    events.watch(
        &[(&events_dir, false)],
        move |event| is_change_of(event, &poked),
        Wake::Poked,
        "reading the transcripts on their interval only",
    );
    events.every(options.interval, Wake::Tick);
    if options.transcripts.is_some() || options.agent_log.is_some() {
        events.every(options.transcript_poll, Wake::Transcripts);
    }
    let tail_path = monitor.tree().transcript_state_file();
    let mut tail = TailState::load(&tail_path);
    tracing::info!(
        pc = %monitor.pc(),
        tree = %monitor.tree().root().display(),
        interval = %humantime::format_duration(options.interval),
        transcripts = ?options.transcripts,
        "credit monitor started"
    );

    let mut last_level = None;
    let mut alerts = OperatorAlerts::default();
    while let Some(wake) = events.next(&shutdown).await {
        let result = match wake {
            Wake::Events => monitor.step().map(Some),
            Wake::Tick => {
                let r = monitor.step();
                if let Ok(outcome) = &r {
                    end_pause(&monitor, outcome);
                }
                if let Err(e) = monitor.settle_outgoing() {
                    tracing::warn!(error = %e, "cannot record that the handoff is complete");
                }
                r.map(Some)
            }
            Wake::Transcripts => read_transcripts(&monitor, &options, &mut tail, &tail_path),
            Wake::Poked => {
                let said = std::fs::read_to_string(&poke_file).unwrap_or_default();
                tracing::info!(hook = %said.trim(), "Claude Code reported a failed turn: reading its transcript and output now");
                read_transcripts(&monitor, &options, &mut tail, &tail_path)
            }
        };
        match result {
            Ok(Some(outcome)) => report(&outcome, &mut last_level),
            Ok(None) => {}
            Err(e) if e.needs_operator() => {
                // Retrying cannot help until someone acts: said once, not every tick.
                if alerts.note(e.to_string()) {
                    tracing::error!(error = %e, "the credit monitor cannot act until this is fixed; it checks again on each tick");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "credit monitor step failed; retrying on the next event or tick")
            }
        }
        alerts.end_pass();
    }
    tracing::info!("credit monitor stopped");
    Ok(())
}

fn read_transcripts(
    monitor: &Monitor,
    options: &Options,
    tail: &mut TailState,
    tail_path: &Path,
) -> Result<Option<StepReport>, MonitorError> {
    let before = tail.clone();
    let events = transcripts::poll(
        options.transcripts.as_deref(),
        options.agent_log.as_deref(),
        tail,
        monitor.now(),
    );
    let outcome = if events.is_empty() {
        None
    } else {
        tracing::debug!(events = events.len(), "read events from transcripts");
        Some(monitor.record_many(&events)?)
    };
    if *tail != before {
        tail.save(tail_path)?;
    }
    Ok(outcome)
}

fn report(outcome: &StepReport, last_level: &mut Option<CreditLevel>) {
    let e = &outcome.evaluation;
    if *last_level != Some(e.level) {
        let rule = e.rule.unwrap_or("-");
        match e.level {
            CreditLevel::Healthy => tracing::info!(level = %e.level, "credit healthy"),
            CreditLevel::Warning => {
                tracing::warn!(level = %e.level, rule, fraction = e.fraction, reason = %e.reason, "credit WARNING")
            }
            CreditLevel::Critical => {
                tracing::warn!(level = %e.level, rule, fraction = e.fraction, reason = %e.reason, "credit CRITICAL: a handoff is near")
            }
            CreditLevel::Exhausted => {
                tracing::warn!(level = %e.level, rule, reason = %e.reason, "credit EXHAUSTED")
            }
        }
        *last_level = Some(e.level);
    }
    if let Action::NoTarget { skipped, retry_at } = &outcome.action {
        tracing::debug!(%skipped, retry_at = %retry_at.to_rfc3339(), "still no PC to hand off to");
    }
}

/// Ends the pause in the heartbeat when it is over, and the exhaustion when credit is back.
fn end_pause(monitor: &Monitor, outcome: &StepReport) {
    let now = monitor.now();
    let pause_over = outcome.state.paused_until.is_none_or(|u| u <= now);
    let exhausted = outcome.evaluation.level == CreditLevel::Exhausted;
    let result = pcfiles::update_heartbeat(monitor.tree(), monitor.pc(), now, |hb| {
        if hb.status == HeartbeatStatus::HandoffInitiated && pause_over {
            hb.status = HeartbeatStatus::Idle;
            hb.paused_until = None;
        }
        if hb.status == HeartbeatStatus::Exhausted && !exhausted {
            hb.status = HeartbeatStatus::Idle;
        }
        if hb.paused_until.is_some_and(|u| u <= now) {
            hb.paused_until = None;
        }
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot update the heartbeat");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, DataChange, ModifyKind};

    #[test]
    fn only_changes_to_the_events_file_wake_the_loop() {
        let file = Path::new("/t/local/credit/events.jsonl");
        let ev = |kind, path: &str| notify::Event::new(kind).add_path(PathBuf::from(path));
        let modify = notify::EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(is_change_of(
            &ev(modify, "/t/local/credit/events.jsonl"),
            file
        ));
        assert!(is_change_of(
            &ev(
                notify::EventKind::Create(CreateKind::File),
                "/t/local/credit/events.jsonl"
            ),
            file
        ));
        assert!(!is_change_of(
            &ev(modify, "/t/local/credit/state.json"),
            file
        ));
        assert!(!is_change_of(
            &ev(
                notify::EventKind::Access(AccessKind::Any),
                "/t/local/credit/events.jsonl"
            ),
            file
        ));
    }
}
