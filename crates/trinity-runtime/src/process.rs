//! What a daemon process needs from its host: the one-thread runtime, stopped by a signal or
//! a token; freed memory given back; problems only an operator can fix said once.

use tokio_util::sync::CancellationToken;

/// Runs a daemon's async loop until Ctrl-C, Ctrl-Break or SIGTERM or, given a token (a Windows
/// service's: the service control manager cancels it), until that token is cancelled. On one
/// thread: a daemon's loop handles one event at a time and does its file and git work inline,
/// so no worker thread is ever started or handed over (that churn made memory creep up over
/// hours).
pub fn run_with<F, Fut, T>(shutdown: Option<CancellationToken>, run: F) -> std::io::Result<T>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(async {
        let token = shutdown.unwrap_or_else(shutdown_on_signals);
        run(token).await
    }))
}

/// A token cancelled on Ctrl-C, SIGTERM (Unix) or Ctrl-Break (Windows). Call inside a tokio
/// runtime. Tests make a plain [`CancellationToken`] and cancel it themselves.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stop requested; finishing the current step");
        t.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(windows)]
async fn wait_for_signal() {
    match tokio::signal::windows::ctrl_break() {
        Ok(mut brk) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = brk.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(any(unix, windows)))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Hands the memory the allocator holds free back to the operating system. glibc keeps freed
/// blocks in its arenas and returns only a free tail, so a long-lived daemon whose bursts of
/// work (a fetch, a repack, a compaction) free memory in the middle of its heap keeps that
/// memory resident for good: git-sync's resident memory rose by a third over an hour's soak
/// while its live heap stayed under 2 MB (docs/benchmarks.md). Cheap (a walk of the free
/// lists); call it after such a burst. Does nothing where the allocator is not glibc's.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::trim();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
// SAFETY: `malloc_trim` takes no pointer and is thread-safe (it locks each arena in turn); it
// only gives whole free pages back with `madvise`/`sbrk`, so no live allocation is touched.
#[allow(unsafe_code)]
mod glibc {
    unsafe extern "C" {
        safe fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }

    pub(super) fn trim() {
        malloc_trim(0);
    }
}

/// Problems only an operator can fix (a fleet file without this PC, a journal record set
/// aside as corrupt): a loop that meets them on every pass says each one once, and again only
/// after it went away and came back.
#[derive(Debug, Default)]
pub struct OperatorAlerts {
    last_pass: std::collections::BTreeSet<String>,
    this_pass: std::collections::BTreeSet<String>,
}

impl OperatorAlerts {
    /// Notes a problem met in this pass; true when it is new (so to be logged).
    pub fn note(&mut self, message: String) -> bool {
        let new = !self.last_pass.contains(&message);
        self.this_pass.insert(message);
        new
    }

    /// Ends a pass: problems not met in it are forgotten.
    pub fn end_pass(&mut self) {
        self.last_pass = std::mem::take(&mut self.this_pass);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn releasing_free_memory_gives_freed_pages_back() {
        fn anon_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").expect("status");
            let line = status
                .lines()
                .find(|l| l.starts_with("RssAnon:"))
                .expect("RssAnon");
            line.split_whitespace()
                .nth(1)
                .expect("kB")
                .parse()
                .expect("number")
        }
        // 64 MB in blocks small enough to come from the heap, not their own mappings; one
        // block kept at the end pins the heap's top, so freeing the rest returns nothing by
        // itself: the freed pages stay resident until they are released.
        let mut blocks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![i as u8; 4096]).collect();
        let pin = vec![1u8; 4096];
        blocks.clear();
        blocks.shrink_to_fit();
        let before = anon_kib();
        release_free_memory();
        let after = anon_kib();
        assert_eq!(pin[0], 1);
        assert!(
            after + 32 * 1024 < before,
            "resident anonymous memory {before} KiB -> {after} KiB"
        );
    }

    #[test]
    fn operator_alerts_are_said_once_and_again_after_they_went_away() {
        let mut alerts = OperatorAlerts::default();
        assert!(alerts.note("a".to_owned()));
        assert!(alerts.note("b".to_owned()));
        alerts.end_pass();
        assert!(!alerts.note("a".to_owned()));
        alerts.end_pass();
        // "b" went away for a pass; "a" is still there.
        assert!(alerts.note("b".to_owned()));
        assert!(!alerts.note("a".to_owned()));
        alerts.end_pass();
        alerts.end_pass();
        assert!(alerts.note("a".to_owned()));
    }
}
