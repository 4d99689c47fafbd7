//! The coordinator's loop: a cycle every `monitor_interval`, at once when a watched directory
//! changes, and every second while a verification runs or a lease waits for the remote.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trinity_core::Tree;
use trinity_runtime::Events;

use crate::cycle::{Coordinator, CycleError};
use crate::leader::Standing;

/// The directories whose changes start a cycle at once: the work and its handoffs, the
/// lease, and git-sync's state (a sync that confirms a lease).
pub fn watched(tree: &Tree) -> Vec<std::path::PathBuf> {
    vec![
        tree.handoff_dir(),
        tree.done_dir(),
        tree.claims_dir(),
        tree.instance_dir(),
        tree.spawn_queue_dir(),
        tree.coordinator_dir(),
        tree.sync_local_dir(),
    ]
}

fn is_interesting(event: &notify::Event) -> bool {
    use notify::EventKind;
    matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
    ) && event.paths.iter().any(|p| {
        p.extension().is_some_and(|e| e == "json")
            && !p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".tmp"))
    })
}

/// What wakes the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Tick,
    Changed,
}

/// Runs until `shutdown` is cancelled.
pub async fn run(mut coord: Coordinator, shutdown: CancellationToken) -> Result<(), CycleError> {
    coord.fleet()?;
    let interval = coord.config_interval();
    let dirs = watched(coord.tree());
    let dirs: Vec<_> = dirs.iter().map(|d| (d.as_path(), false)).collect();
    let mut events = Events::new();
    events.watch(
        &dirs,
        is_interesting,
        Wake::Changed,
        "cycling on the timer only",
    );
    events.every(interval, Wake::Tick);
    // Every second while a verification runs or a lease waits for the remote.
    let busy = events.every(Duration::from_secs(1), Wake::Tick);
    tracing::info!(pc = %coord.pc(), interval = %humantime::format_duration(interval), "coordinator started");
    let mut standing: Option<Standing> = None;
    loop {
        let hurry = coord.verifying() || matches!(standing, Some(Standing::Claiming { .. }));
        events.enable(busy, hurry);
        match events.next(&shutdown).await {
            None => break,
            Some(Wake::Tick) => {}
            // Let a burst of changes settle into one cycle.
            Some(Wake::Changed) => events.settle(Duration::from_millis(100)).await,
        }
        match coord.cycle() {
            Ok(report) => {
                if standing.as_ref() != Some(&report.standing) {
                    match &report.standing {
                        Standing::Leading { epoch } => tracing::info!(epoch, "leading"),
                        Standing::Claiming { epoch } => tracing::info!(
                            epoch,
                            "claiming the lease; waiting for it to reach the remote"
                        ),
                        Standing::Following {
                            holder: Some(h),
                            epoch,
                        } => tracing::info!(leader = %h, epoch, "following"),
                        Standing::Following { holder: None, .. } => {
                            tracing::info!("no leader yet; watching the lease")
                        }
                    }
                    standing = Some(report.standing);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "coordinator cycle failed; retrying on the next tick")
            }
        }
    }
    coord.stop_runs();
    tracing::info!("coordinator stopped");
    Ok(())
}
