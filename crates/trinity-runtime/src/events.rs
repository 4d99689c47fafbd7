//! What wakes a daemon's loop, in one place: file watchers and timers, each turned into the
//! daemon's own wake value, and shutdown. Every daemon's loop has the same shape:
//!
//! ```text
//! let mut events = Events::new();
//! events.watch(&dirs, wanted, Wake::Changed, "cycling on the timer only");
//! events.every(interval, Wake::Tick);
//! while let Some(wake) = events.next(&shutdown).await { … }
//! ```
//!
//! On one thread, without tasks: [`Events::next`] polls the sources in turn (so a busy watcher
//! cannot starve a timer) and drains a watcher that fired, so a burst of file events is one
//! wake.

use std::future::poll_fn;
use std::path::Path;
use std::task::{Context, Poll};

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;

/// A timer of an [`Events`], to switch on and off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer(usize);

/// What [`Events::next_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next<W> {
    /// A source fired.
    Wake(W),
    /// The deadline passed first.
    Deadline,
    /// Shutdown was asked for.
    Shutdown,
}

/// A daemon's event sources.
#[derive(Debug)]
pub struct Events<W> {
    watches: Vec<(UnboundedReceiver<()>, W)>,
    timers: Vec<(Interval, W, bool)>,
    watchers: Vec<notify::RecommendedWatcher>,
    turn: usize,
}

impl<W: Copy> Default for Events<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W: Copy> Events<W> {
    /// No sources yet.
    pub fn new() -> Self {
        Self {
            watches: Vec::new(),
            timers: Vec::new(),
            watchers: Vec::new(),
            turn: 0,
        }
    }

    /// Wakes with `wake` for each change in `dirs` (recursively where the flag says so) that
    /// `wanted` accepts; the directories are made first. Where watching cannot be set up, says
    /// so with `otherwise` (what the daemon does instead) and returns false: the other sources
    /// carry on.
    pub fn watch(
        &mut self,
        dirs: &[(&Path, bool)],
        wanted: impl Fn(&notify::Event) -> bool + Send + 'static,
        wake: W,
        otherwise: &str,
    ) -> bool {
        for (dir, _) in dirs {
            let _ = std::fs::create_dir_all(dir);
        }
        let (watcher, rx) = watch(dirs, wanted);
        self.watches.push((rx, wake));
        match watcher {
            Ok(w) => {
                self.watchers.push(w);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch {}; {otherwise}", describe(dirs));
                false
            }
        }
    }

    /// Wakes with `wake` every `period`, at once first; ticks missed while the daemon was busy
    /// are skipped.
    pub fn every(&mut self, period: std::time::Duration, wake: W) -> Timer {
        self.timers.push((ticker(period), wake, true));
        Timer(self.timers.len() - 1)
    }

    /// Switches a timer on or off (off: it does not wake the loop).
    pub fn enable(&mut self, timer: Timer, on: bool) {
        if let Some(t) = self.timers.get_mut(timer.0) {
            t.2 = on;
        }
    }

    /// Waits `period` for a burst of file changes to end, and takes the changes that came
    /// meanwhile as handled (one pass for the whole burst).
    pub async fn settle(&mut self, period: std::time::Duration) {
        tokio::time::sleep(period).await;
        for (rx, _) in &mut self.watches {
            while rx.try_recv().is_ok() {}
        }
    }

    /// The next wake; `None` once shutdown is asked for.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Option<W> {
        match self.next_until(shutdown, None).await {
            Next::Wake(w) => Some(w),
            Next::Deadline | Next::Shutdown => None,
        }
    }

    /// The next wake, or [`Next::Deadline`] when `deadline` comes first.
    pub async fn next_until(
        &mut self,
        shutdown: &CancellationToken,
        deadline: Option<Instant>,
    ) -> Next<W> {
        let deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => Next::Shutdown,
            w = poll_fn(|cx| self.poll_sources(cx)) => Next::Wake(w),
            _ = deadline => Next::Deadline,
        }
    }

    fn poll_sources(&mut self, cx: &mut Context<'_>) -> Poll<W> {
        let n = self.watches.len() + self.timers.len();
        for k in 0..n {
            let i = (self.turn + k) % n;
            let fired = if let Some((rx, wake)) = self.watches.get_mut(i) {
                // A closed channel (no watcher) never fires.
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(())) => {
                        // A burst of changes is one wake.
                        while rx.try_recv().is_ok() {}
                        Some(*wake)
                    }
                    Poll::Ready(None) | Poll::Pending => None,
                }
            } else {
                match self.timers.get_mut(i - self.watches.len()) {
                    Some((timer, wake, true)) => timer.poll_tick(cx).is_ready().then_some(*wake),
                    _ => None,
                }
            };
            if let Some(w) = fired {
                self.turn = i + 1;
                return Poll::Ready(w);
            }
        }
        Poll::Pending
    }
}

fn describe(dirs: &[(&Path, bool)]) -> String {
    match dirs {
        [] => "nothing".to_owned(),
        [(d, _)] => d.display().to_string(),
        [(d, _), rest @ ..] => format!("{} and {} more", d.display(), rest.len()),
    }
}

/// Watches each of `dirs` (recursively where its flag says so) and sends `()` for every event
/// that `wanted` accepts. The watcher stops when dropped. Where watching cannot be set up (no
/// inotify watches left, a directory missing, …) the error comes back and the channel stays
/// silent: the daemon's timers carry on alone (so it does, with an error, when `dirs` is empty).
pub fn watch(
    dirs: &[(&Path, bool)],
    wanted: impl Fn(&notify::Event) -> bool + Send + 'static,
) -> (
    notify::Result<notify::RecommendedWatcher>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    use notify::Watcher;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    if dirs.is_empty() {
        // No watcher (and no thread of its own) for nothing.
        return (Err(notify::Error::generic("nothing to watch")), rx);
    }
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res
            && wanted(&event)
        {
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| {
        for (dir, recursive) in dirs {
            let mode = if *recursive {
                notify::RecursiveMode::Recursive
            } else {
                notify::RecursiveMode::NonRecursive
            };
            w.watch(dir, mode)?;
        }
        Ok(w)
    });
    (watcher, rx)
}

/// A timer that ticks every `period`, at once first, and skips the ticks it missed while the
/// daemon was busy.
pub fn ticker(period: std::time::Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Wake {
        Changed,
        Tick,
        Fast,
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime")
    }

    #[test]
    fn timers_tick_at_once_then_every_period_and_a_timer_off_stays_quiet() {
        runtime().block_on(async {
            let shutdown = CancellationToken::new();
            let mut events = Events::new();
            events.every(Duration::from_secs(60), Wake::Tick);
            let fast = events.every(Duration::from_secs(1), Wake::Fast);
            events.enable(fast, false);
            let start = Instant::now();
            assert_eq!(events.next(&shutdown).await, Some(Wake::Tick));
            assert_eq!(events.next(&shutdown).await, Some(Wake::Tick));
            assert_eq!(start.elapsed(), Duration::from_secs(60));
            events.enable(fast, true);
            assert_eq!(events.next(&shutdown).await, Some(Wake::Fast));
            // Over many rounds both keep firing: the slow one is not starved.
            let mut ticks = 0;
            for _ in 0..500 {
                if events.next(&shutdown).await == Some(Wake::Tick) {
                    ticks += 1;
                }
            }
            assert!(ticks >= 7, "{ticks} slow ticks in 500 wakes");
            shutdown.cancel();
            assert_eq!(events.next(&shutdown).await, None);
        });
    }

    #[test]
    fn a_burst_on_a_source_is_one_wake_and_the_deadline_comes_when_nothing_does() {
        runtime().block_on(async {
            let shutdown = CancellationToken::new();
            let mut events = Events::new();
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            events.watches.push((rx, Wake::Changed));
            for _ in 0..20 {
                tx.send(()).expect("send");
            }
            let soon = Instant::now() + Duration::from_secs(10);
            assert_eq!(
                events.next_until(&shutdown, Some(soon)).await,
                Next::Wake(Wake::Changed)
            );
            assert_eq!(
                events.next_until(&shutdown, Some(soon)).await,
                Next::Deadline
            );
            assert_eq!(Instant::now(), soon);
            // What arrives while a burst settles is part of it.
            tx.send(()).expect("send");
            assert_eq!(events.next(&shutdown).await, Some(Wake::Changed));
            tx.send(()).expect("send");
            events.settle(Duration::from_millis(100)).await;
            let later = Instant::now() + Duration::from_secs(1);
            assert_eq!(
                events.next_until(&shutdown, Some(later)).await,
                Next::Deadline
            );
        });
    }

    #[test]
    fn a_file_written_in_a_watched_directory_wakes_the_loop() {
        let dir = tempfile::tempdir().expect("temp");
        let watched = dir.path().join("w");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let shutdown = CancellationToken::new();
                let mut events = Events::new();
                assert!(events.watch(&[(&watched, false)], |_| true, Wake::Changed, "polling"));
                assert!(watched.is_dir(), "the watched directory is made");
                std::fs::write(watched.join("a.json"), "{}").expect("write");
                let deadline = Instant::now() + Duration::from_secs(30);
                assert_eq!(
                    events.next_until(&shutdown, Some(deadline)).await,
                    Next::Wake(Wake::Changed)
                );
            });
    }

    #[test]
    fn a_directory_that_cannot_be_watched_leaves_the_timers() {
        runtime().block_on(async {
            let shutdown = CancellationToken::new();
            let mut events = Events::new();
            assert!(!events.watch(&[], |_| true, Wake::Changed, "polling"));
            events.every(Duration::from_secs(5), Wake::Tick);
            assert_eq!(events.next(&shutdown).await, Some(Wake::Tick));
            assert_eq!(events.next(&shutdown).await, Some(Wake::Tick));
        });
    }

    #[test]
    fn a_watch_reports_the_changes_its_filter_wants_and_nothing_without_directories() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let (watcher, mut rx) = watch(&[(dir.path(), false)], |e| {
                e.paths
                    .iter()
                    .any(|p| p.extension().is_some_and(|x| x == "json"))
            });
            let _watcher = watcher.expect("watching a directory");
            std::fs::write(dir.path().join("ignored.txt"), "x").expect("write");
            std::fs::write(dir.path().join("wanted.json"), "{}").expect("write");
            // The filter sees every event; the .json file's reaches the channel.
            let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await;
            assert_eq!(got.expect("an event within 10 s"), Some(()));

            let (none, mut closed) = watch(&[], |_| true);
            assert!(none.is_err(), "nothing to watch is an error");
            assert_eq!(closed.recv().await, None, "its channel is closed at once");

            // A ticker ticks at once, then every period, skipping what it missed.
            let mut t = ticker(std::time::Duration::from_secs(3600));
            tokio::time::timeout(std::time::Duration::from_secs(10), t.tick())
                .await
                .expect("the first tick is immediate");
            assert_eq!(
                t.missed_tick_behavior(),
                tokio::time::MissedTickBehavior::Skip
            );
        });
    }
}
