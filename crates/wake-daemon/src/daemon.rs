//! The long-running wake-daemon: watches `wake/{PC}/` (with a polling fallback) and handles
//! every signal as it arrives.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trinity_core::pcfiles;
use trinity_runtime::{Events, OperatorAlerts};

use crate::receive::{Receiver, WakeError};

/// True when a file-system event may mean a new signal (anything but a temporary file of an
/// atomic write being created).
pub fn is_signal_change(event: &notify::Event) -> bool {
    use notify::EventKind as K;
    matches!(event.kind, K::Create(_) | K::Modify(_) | K::Any | K::Other)
        && event
            .paths
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "json"))
}

/// Runs until `shutdown` is cancelled.
pub async fn run(
    receiver: Receiver,
    poll_interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), WakeError> {
    receiver.fleet()?;
    // The coordinator gives work by role: say which this PC takes.
    let roles = receiver.config.roles.clone();
    if let Err(e) =
        pcfiles::update_heartbeat(receiver.tree(), receiver.pc(), receiver.now(), |hb| {
            hb.roles = roles;
        })
    {
        tracing::warn!(error = %e, "cannot write this PC's roles into its heartbeat");
    }
    let dir = receiver.tree().wake_dir(receiver.pc());
    // And git-sync's state: a handoff waiting for its claims to reach the remote goes on as
    // soon as git-sync reports them pushed.
    let sync_dir = receiver.tree().sync_local_dir();
    let dirs = [(dir.as_path(), false), (sync_dir.as_path(), false)];
    let mut events = Events::new();
    // A poll (the fallback when the watcher misses a file) and a signal file both mean a pass.
    events.watch(&dirs, is_signal_change, (), "polling only");
    events.every(poll_interval, ());
    tracing::info!(pc = %receiver.pc(), dir = %dir.display(), "wake-daemon started");
    let mut alerts = OperatorAlerts::default();
    while events.next(&shutdown).await.is_some() {
        pass(&receiver, &mut alerts);
    }
    tracing::info!("wake-daemon stopped");
    Ok(())
}

/// One pass over the signals and unfinished handoffs (on a poll or a signal file): refusals
/// go to the debug log, problems only an operator can fix are said once.
pub fn pass(receiver: &Receiver, alerts: &mut OperatorAlerts) {
    match receiver.process() {
        Ok(report) => {
            for (signal, reason) in &report.refused {
                tracing::debug!(%signal, %reason, "refused");
            }
            for problem in report.held {
                if alerts.note(problem.clone()) {
                    tracing::error!(error = %problem, "a signal is held until this is fixed; the others go on");
                }
            }
        }
        Err(e) if e.needs_operator() => {
            if alerts.note(e.to_string()) {
                tracing::error!(error = %e, "the wake-daemon cannot act until this is fixed; it checks again on each poll");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "wake pass failed; retrying on the next event or poll")
        }
    }
    alerts.end_pass();
}

/// The directory watched, for messages.
pub fn watched_dir(receiver: &Receiver) -> std::path::PathBuf {
    receiver.tree().wake_dir(receiver.pc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RemoveKind};
    use std::path::PathBuf;

    #[test]
    fn new_json_files_wake_the_loop_and_removals_do_not() {
        let ev = |kind, path: &str| notify::Event::new(kind).add_path(PathBuf::from(path));
        assert!(is_signal_change(&ev(
            notify::EventKind::Create(CreateKind::File),
            "/t/wake/PC2/a.json"
        )));
        assert!(is_signal_change(&ev(
            notify::EventKind::Modify(ModifyKind::Any),
            "/t/wake/PC2/a.json"
        )));
        assert!(!is_signal_change(&ev(
            notify::EventKind::Create(CreateKind::File),
            "/t/wake/PC2/.a.json.12.0.tmp"
        )));
        assert!(!is_signal_change(&ev(
            notify::EventKind::Remove(RemoveKind::File),
            "/t/wake/PC2/a.json"
        )));
    }
}
