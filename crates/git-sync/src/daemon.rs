//! The long-running git-sync: a file watcher with debounce for local changes, a ticker for the
//! remote, backoff for network trouble.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use trinity_core::DaemonName;
use trinity_core::daemon::{InstanceError, InstanceLock};

use crate::sync::{SyncError, Syncer};

/// The daemon's name, for its log and lock files.
pub const NAME: &str = "git-sync";

/// Without file events, the working tree is still scanned every this many remote checks.
pub const SCAN_EVERY_TICKS: u32 = 10;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another git-sync holds the tree.
    #[error(transparent)]
    Instance(#[from] InstanceError),
    /// The repository cannot be opened.
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// True when a file-system event is about a synced file: not under `.git/`, `local/` or
/// `logs/`, and not a temporary file of an atomic write.
pub fn is_tree_change(event: &notify::Event, root: &Path) -> bool {
    use notify::EventKind as K;
    if matches!(event.kind, K::Access(_)) {
        return false;
    }
    event.paths.iter().any(|p| {
        let Ok(rel) = p.strip_prefix(root) else {
            return false;
        };
        let first = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n.ends_with(trinity_core::layout::TEMP_SUFFIX) || n.ends_with(".lock")
        });
        !rel.as_os_str().is_empty() && !matches!(first.as_str(), ".git" | "local" | "logs") && !temp
    })
}

/// How long to wait after a failure before touching the remote again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    current: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at one second, doubling up to `max`.
    pub fn new(max: Duration) -> Self {
        Self {
            current: Duration::ZERO,
            max,
        }
    }

    /// The wait after another failure of this kind.
    pub fn fail(&mut self, err: &SyncError) -> Duration {
        self.current = match err {
            SyncError::Auth(_) => self.max,
            SyncError::Network(_) if self.current.is_zero() => Duration::from_secs(1).min(self.max),
            SyncError::Network(_) => (self.current * 2).min(self.max),
            _ => Duration::ZERO,
        };
        self.current
    }

    /// Back to normal after a success.
    pub fn succeed(&mut self) {
        self.current = Duration::ZERO;
    }
}

/// Runs until `shutdown` is cancelled.
pub async fn run(
    mut syncer: Syncer,
    root: PathBuf,
    config: trinity_core::config::SyncConfig,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let name = DaemonName::new(NAME).map_err(|e| SyncError::Push(e.to_string()))?;
    let tree = trinity_core::Tree::new(&root);
    let _instance = InstanceLock::acquire(&tree, &name)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watch_root = root.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res
            && is_tree_change(&event, &watch_root)
        {
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| w.watch(&root, RecursiveMode::Recursive).map(|()| w));
    // A remote on this machine: watch its branches too, so a push by another PC is seen at
    // once instead of at the next pull tick (the tick stays as the fallback).
    let (remote_tx, mut remote_rx) = mpsc::unbounded_channel();
    let remote_watcher = syncer.local_remote().map(|remote| {
        let refs = remote.join("refs").join("heads");
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(event) = res
                && !matches!(event.kind, notify::EventKind::Access(_))
            {
                let _ = remote_tx.send(());
            }
        })
        .and_then(|mut w| w.watch(&refs, RecursiveMode::Recursive).map(|()| w))
    });
    if let Some(Err(e)) = &remote_watcher {
        tracing::info!(error = %e, "cannot watch the remote's branches; checking every pull_interval");
    }
    let watching = match &watcher {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the tree; scanning on every remote check instead");
            false
        }
    };
    let mut pull = tokio::time::interval(config.pull_interval);
    pull.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut backoff = Backoff::new(config.backoff_max);
    let mut quiet_until: Option<Instant> = None;
    let mut resume_at: Option<Instant> = None;
    let mut ticks: u32 = 0;
    let mut heartbeat_waiting = false;
    tracing::info!(tree = %root.display(), branch = %config.branch, "git-sync started");
    // A first full cycle picks up whatever changed while it was not running.
    let mut scan_next = true;
    loop {
        let debounce = async {
            match quiet_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let scan = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(()) = rx.recv() => {
                quiet_until = Some(Instant::now() + config.debounce);
                continue;
            }
            Some(()) = remote_rx.recv() => {
                while remote_rx.try_recv().is_ok() {}
                false
            }
            _ = debounce => {
                quiet_until = None;
                true
            }
            _ = pull.tick() => {
                ticks = ticks.wrapping_add(1);
                std::mem::take(&mut scan_next)
                    || !watching
                    || ticks.is_multiple_of(SCAN_EVERY_TICKS)
                    || (heartbeat_waiting && syncer.heartbeat_due())
            }
        };
        let offline = resume_at.is_some_and(|t| Instant::now() < t);
        // The cycle blocks the daemon's one thread on purpose: nothing else runs meanwhile
        // (file events queue in their channels), and no thread is started or handed over per
        // cycle, which kept memory creeping up over hours (docs/benchmarks.md).
        let result = if offline {
            syncer.cycle_local(scan)
        } else {
            syncer.cycle(scan)
        };
        match result {
            Ok(report) => {
                heartbeat_waiting = report.heartbeat_deferred;
                if !offline {
                    if resume_at.take().is_some() {
                        tracing::info!("the remote is reachable again");
                    }
                    backoff.succeed();
                }
                // Between two cycles: every fetch adds a pack file, every commit loose objects.
                if report.touched_objects() {
                    let maintained = syncer.maintain_if_due();
                    if let Err(e) = maintained {
                        tracing::warn!(error = %e, "repository maintenance failed; trying again after the next change");
                    }
                }
            }
            Err(e) => {
                let wait = backoff.fail(&e);
                if wait.is_zero() {
                    tracing::error!(error = %e, "sync cycle failed; retrying on the next tick");
                    scan_next = true;
                } else {
                    tracing::error!(error = %e, retry_in = %humantime::format_duration(wait), "sync cycle failed; local commits wait");
                    resume_at = Some(Instant::now() + wait);
                }
            }
        }
    }
    drop(watcher);
    drop(remote_watcher);
    tracing::info!("git-sync stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, ModifyKind};

    #[test]
    fn only_synced_files_wake_the_loop() {
        let root = Path::new("/t/.trinity");
        let ev = |kind, p: &str| notify::Event::new(kind).add_path(PathBuf::from(p));
        let create = notify::EventKind::Create(CreateKind::File);
        assert!(is_tree_change(
            &ev(create, "/t/.trinity/claims/x.json"),
            root
        ));
        assert!(is_tree_change(
            &ev(
                notify::EventKind::Modify(ModifyKind::Any),
                "/t/.trinity/heartbeat/PC1.json"
            ),
            root
        ));
        for ignored in [
            "/t/.trinity/.git/index",
            "/t/.trinity/local/credit/events.jsonl",
            "/t/.trinity/logs/git-sync.log",
            "/t/.trinity/claims/.x.json.1.0.tmp",
            "/elsewhere/x.json",
        ] {
            assert!(!is_tree_change(&ev(create, ignored), root), "{ignored}");
        }
        assert!(!is_tree_change(
            &ev(
                notify::EventKind::Access(AccessKind::Any),
                "/t/.trinity/claims/x.json"
            ),
            root
        ));
    }

    #[test]
    fn network_failures_back_off_exponentially_and_auth_at_once() {
        let max = Duration::from_secs(60);
        let mut b = Backoff::new(max);
        let net = SyncError::Network("down".into());
        let waits: Vec<u64> = (0..8).map(|_| b.fail(&net).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        b.succeed();
        assert_eq!(b.fail(&SyncError::Auth("no".into())), max);
        b.succeed();
        assert_eq!(b.fail(&SyncError::Push("hook".into())), Duration::ZERO);
    }
}
