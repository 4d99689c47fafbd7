//! The long-running git-sync: a file watcher with debounce for local changes, checks of the
//! remote at a rate that follows what is in flight, backoff for network trouble with a quick
//! probe that notices the link's return.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::time::Instant;
use tokio_util::sync::CancellationToken;
use trinity_runtime::{Events, Next, OperatorAlerts};

use crate::sync::{SyncError, Syncer};

/// Without file events, the working tree is still scanned every this many remote checks.
pub const SCAN_EVERY_TICKS: u32 = 10;

/// While backing off after a network failure, the remote is still probed this often (one
/// cheap check with [`PROBE_DEADLINE`]), so its return is noticed within seconds however long
/// the backoff has grown; the backoff governs only the heavy work.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

/// How long one probe may wait for the remote.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(5);

/// After work arrived from the remote, or the link came back, the remote is checked at the
/// quick rate (`sync.pull_interval`) for this long, whatever else is in flight.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(60);

/// Where every check is a new connection with its handshake (ssh on Windows, whose OpenSSH
/// cannot share one), the quick rate is never quicker than this: a third of the connections,
/// for about a second more per handoff.
pub const UNSHARED_MIN_INTERVAL: Duration = Duration::from_secs(3);

/// True when a file-system event is about a synced file: not under `.git/`, `local/` or
/// `logs/`, and not a temporary file of an atomic write.
pub fn is_tree_change(event: &notify::Event, root: &Path) -> bool {
    use notify::EventKind as K;
    if matches!(event.kind, K::Access(_)) {
        return false;
    }
    let tree = trinity_core::Tree::new(root);
    event.paths.iter().any(|p| {
        let lock = p.extension().is_some_and(|x| x == "lock");
        !lock
            && tree
                .relative(p)
                .is_ok_and(|rel| trinity_core::layout::is_synced(&rel))
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

/// What wakes the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A synced file changed (the watcher).
    TreeChanged,
    /// The remote's branch moved (a remote on this machine, watched).
    RemoteMoved,
    /// The debounce after the last file change is over.
    QuietPeriodOver,
    /// The next check of the remote is due ([`Schedule::next_check`]).
    CheckDue,
}

/// A cycle to run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cycle {
    /// Scan the working tree for local changes (otherwise only the remote is looked at).
    pub scan: bool,
    /// The remote is in backoff: commit locally only.
    pub offline: bool,
    /// First probe the remote: if it answers, the backoff is over and the cycle runs in full.
    pub probe: bool,
}

/// What a successful cycle tells the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// A heartbeat refresh was held back.
    pub heartbeat_deferred: bool,
    /// Something is in flight ([`crate::sync::Syncer::in_flight`]): check the remote quickly.
    pub in_flight: bool,
    /// The remote brought work: check it quickly for a while.
    pub work_arrived: bool,
}

/// The daemon's timing — debounce, scan cadence, the rate of remote checks, backoff and the
/// probe during it — with no I/O: the loop feeds it events and the time, tests feed it
/// synthetic ones.
#[derive(Debug)]
pub struct Schedule {
    debounce: Duration,
    quick: Duration,
    idle: Duration,
    watching: bool,
    backoff: Backoff,
    quiet_until: Option<Instant>,
    resume_at: Option<Instant>,
    next_probe: Option<Instant>,
    last_check: Option<Instant>,
    in_flight: bool,
    active_until: Option<Instant>,
    ticks: u32,
    scan_next: bool,
    heartbeat_waiting: bool,
}

impl Schedule {
    /// A schedule whose first check is at once and scans (whatever changed while the daemon
    /// was not running), then checks quickly for [`ACTIVE_WINDOW`]. `watching` is false when
    /// there is no file watcher: every check scans then. `quick` is `sync.pull_interval`, or
    /// longer where each check costs a connection.
    pub fn new(
        config: &trinity_core::config::SyncConfig,
        quick: Duration,
        watching: bool,
        now: Instant,
    ) -> Self {
        Self {
            debounce: config.debounce,
            quick,
            idle: config.idle_pull_interval.max(quick),
            watching,
            backoff: Backoff::new(config.backoff_max),
            quiet_until: None,
            resume_at: None,
            next_probe: None,
            last_check: None,
            in_flight: false,
            active_until: Some(now + ACTIVE_WINDOW),
            ticks: 0,
            scan_next: true,
            heartbeat_waiting: false,
        }
    }

    /// When the debounce ends, if a change is waiting for it.
    pub fn quiet_until(&self) -> Option<Instant> {
        self.quiet_until
    }

    /// The time between two checks of the remote now: `pull_interval` while anything is in
    /// flight or work arrived lately, `idle_pull_interval` otherwise.
    pub fn interval(&self, now: Instant) -> Duration {
        if self.in_flight || self.active_until.is_some_and(|t| now < t) {
            self.quick
        } else {
            self.idle
        }
    }

    /// When the next check is due: after the current interval; while backing off, at the next
    /// probe or the backoff's end, whichever is first.
    pub fn next_check(&self, now: Instant) -> Instant {
        if let Some(resume) = self.resume_at {
            return self.next_probe.map_or(resume, |p| p.min(resume));
        }
        match self.last_check {
            Some(t) => t + self.interval(now),
            None => now,
        }
    }

    /// A probe got an answer: the backoff is over, and the remote is checked quickly for a
    /// while (other PCs' work queued during the outage is on its way).
    pub fn reachable(&mut self, now: Instant) {
        if self.resume_at.take().is_some() {
            tracing::info!("the remote is reachable again");
        }
        self.next_probe = None;
        self.backoff.succeed();
        self.active_until = Some(now + ACTIVE_WINDOW);
    }

    /// What to do about `event` at `now`. `heartbeat_due`: a heartbeat refresh held back by
    /// `heartbeat_commit_interval` may be committed now.
    pub fn on(&mut self, event: Event, now: Instant, heartbeat_due: bool) -> Option<Cycle> {
        let scan = match event {
            Event::TreeChanged => {
                self.quiet_until = Some(now + self.debounce);
                return None;
            }
            Event::RemoteMoved => false,
            Event::QuietPeriodOver => {
                self.quiet_until = None;
                true
            }
            Event::CheckDue => {
                self.last_check = Some(now);
                self.ticks = self.ticks.wrapping_add(1);
                std::mem::take(&mut self.scan_next)
                    || !self.watching
                    || self.ticks.is_multiple_of(SCAN_EVERY_TICKS)
                    || (self.heartbeat_waiting && heartbeat_due)
            }
        };
        let offline = self.resume_at.is_some_and(|t| now < t);
        let probe =
            offline && event == Event::CheckDue && self.next_probe.is_some_and(|p| now >= p);
        if probe {
            self.next_probe = Some(now + PROBE_EVERY);
        }
        Some(Cycle {
            scan,
            offline,
            probe,
        })
    }

    /// Takes a cycle's result; returns the wait before the remote is tried again after a
    /// failure (zero: at the next check, with a scan).
    pub fn after(
        &mut self,
        cycle: Cycle,
        result: Result<Outcome, &SyncError>,
        now: Instant,
    ) -> Duration {
        match result {
            Ok(outcome) => {
                self.heartbeat_waiting = outcome.heartbeat_deferred;
                if !cycle.offline {
                    self.in_flight = outcome.in_flight;
                    if outcome.work_arrived {
                        self.active_until = Some(now + ACTIVE_WINDOW);
                    }
                    if self.resume_at.is_some() {
                        self.reachable(now);
                    }
                    self.backoff.succeed();
                }
                Duration::ZERO
            }
            Err(e) => {
                let wait = self.backoff.fail(e);
                if wait.is_zero() {
                    self.scan_next = true;
                } else {
                    self.resume_at = Some(now + wait);
                    // Probing an unreachable remote is cheap; probing one that refuses our
                    // credentials every few seconds would look like an attack to its host.
                    self.next_probe = match e {
                        SyncError::Network(_) => Some(now + PROBE_EVERY),
                        _ => None,
                    };
                }
                wait
            }
        }
    }
}

/// Runs until `shutdown` is cancelled.
pub async fn run(
    mut syncer: Syncer,
    root: PathBuf,
    config: trinity_core::config::SyncConfig,
    shutdown: CancellationToken,
) -> Result<(), SyncError> {
    let mut events = Events::new();
    let watch_root = root.clone();
    let watching = events.watch(
        &[(&root, true)],
        move |event| is_tree_change(event, &watch_root),
        Event::TreeChanged,
        "scanning on every remote check instead",
    );
    // A remote on this machine: watch its branches too, so a push by another PC is seen at
    // once instead of at the next pull tick (the tick stays as the fallback).
    if let Some(refs) = syncer.local_remote().map(|r| r.join("refs").join("heads")) {
        events.watch(
            &[(&refs, true)],
            |event| !matches!(event.kind, notify::EventKind::Access(_)),
            Event::RemoteMoved,
            "checking every pull_interval",
        );
    }
    let quick = if syncer.link().connection_per_check() {
        tracing::info!(
            "every check of the remote opens an ssh connection (no connection sharing here): checking at most every {}",
            humantime::format_duration(config.pull_interval.max(UNSHARED_MIN_INTERVAL))
        );
        config.pull_interval.max(UNSHARED_MIN_INTERVAL)
    } else {
        config.pull_interval
    };
    let mut schedule = Schedule::new(&config, quick, watching, Instant::now());
    // A failure that lasts (a repository broken or removed under the daemon) is said once.
    let mut alerts = OperatorAlerts::default();
    tracing::info!(
        tree = %root.display(),
        branch = %config.branch,
        remote = syncer.link().endpoint().kind(),
        "git-sync started"
    );
    loop {
        let due = schedule.next_check(Instant::now());
        let deadline = schedule.quiet_until().map_or(due, |q| q.min(due));
        let event = match events.next_until(&shutdown, Some(deadline.into())).await {
            Next::Shutdown => break,
            Next::Wake(event) => event,
            Next::Deadline if schedule.quiet_until().is_some_and(|q| q <= Instant::now()) => {
                Event::QuietPeriodOver
            }
            Next::Deadline => Event::CheckDue,
        };
        let Some(mut cycle) = schedule.on(event, Instant::now(), syncer.heartbeat_due()) else {
            continue;
        };
        if cycle.probe {
            match syncer.probe(PROBE_DEADLINE) {
                Ok(()) => {
                    schedule.reachable(Instant::now());
                    cycle.offline = false;
                    cycle.scan = true;
                }
                Err(e) => tracing::debug!(error = %e, "the remote is still unreachable"),
            }
        }
        // The cycle blocks the daemon's one thread on purpose: nothing else runs meanwhile
        // (file events queue in their channels), and no thread is started or handed over per
        // cycle, which kept memory creeping up over hours (docs/benchmarks.md).
        let result = if cycle.offline {
            syncer.cycle_local(cycle.scan)
        } else {
            syncer.cycle(cycle.scan)
        };
        let outcome = result.as_ref().map(|r| Outcome {
            heartbeat_deferred: r.heartbeat_deferred,
            work_arrived: r.work_arrived,
            in_flight: !cycle.offline && syncer.in_flight(),
        });
        let wait = schedule.after(cycle, outcome, Instant::now());
        match &result {
            // Between two cycles: every fetch adds a pack file, every commit loose objects.
            Ok(report) if report.touched_objects() => {
                match syncer.maintain_if_due() {
                    // The old repository handle's caches and maps are gone: give their
                    // memory back now rather than at the shell's next release.
                    Ok(Some(_)) => trinity_runtime::release_free_memory(),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "repository maintenance failed; trying again after the next change")
                    }
                }
            }
            Ok(_) => {}
            Err(e) if wait.is_zero() => {
                if alerts.note(e.to_string()) {
                    tracing::error!(error = %e, "sync cycle failed; retrying on the next tick (said again only once it has stopped failing)")
                }
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in = %humantime::format_duration(wait), "sync cycle failed; local commits wait")
            }
        }
        alerts.end_pass();
    }
    drop(events);
    syncer.close_link();
    let link = syncer.link().stats();
    tracing::info!(
        checks = link.checks,
        sessions = link.sessions,
        session_fetches = link.session_fetches,
        git_fetches = link.git_fetches,
        "git-sync stopped"
    );
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
        assert_eq!(
            b.fail(&SyncError::Push(trinity_core::gitcmd::GitError::Failed {
                args: "push".into(),
                status: "exit status: 1".into(),
                stderr: "hook".into(),
            })),
            Duration::ZERO
        );
    }

    #[test]
    fn the_schedule_debounces_scans_on_its_cadence_and_backs_off() {
        let config = trinity_core::config::SyncConfig {
            debounce: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            ..Default::default()
        };
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Schedule::new(&config, config.pull_interval, true, t0);
        let c = |scan, offline| {
            Some(Cycle {
                scan,
                offline,
                probe: false,
            })
        };
        let ok = Ok(Outcome::default());
        // The first check is at once and scans: whatever changed while the daemon was not
        // running.
        assert_eq!(s.next_check(t0), t0);
        assert_eq!(s.on(Event::CheckDue, at(0), false), c(true, false));
        // A burst of changes moves the end of the quiet period; nothing runs meanwhile.
        assert_eq!(s.on(Event::TreeChanged, at(100), false), None);
        assert_eq!(s.on(Event::TreeChanged, at(300), false), None);
        assert_eq!(s.quiet_until(), Some(at(800)));
        assert_eq!(s.on(Event::QuietPeriodOver, at(800), false), c(true, false));
        assert_eq!(s.quiet_until(), None);
        // Checks look at the remote only; every tenth scans too, as does a due heartbeat.
        let scans: Vec<bool> = (1..=SCAN_EVERY_TICKS + 1)
            .map(|i| {
                s.on(Event::CheckDue, at(1000 * u64::from(i)), false)
                    .expect("cycle")
                    .scan
            })
            .collect();
        assert_eq!(scans.iter().filter(|x| **x).count(), 1, "{scans:?}");
        let deferred = Ok(Outcome {
            heartbeat_deferred: true,
            ..Outcome::default()
        });
        assert_eq!(
            s.after(c(false, false).expect("c"), deferred, at(20_000)),
            Duration::ZERO
        );
        assert_eq!(s.on(Event::CheckDue, at(21_000), true), c(true, false));
        assert_eq!(s.on(Event::RemoteMoved, at(21_500), true), c(false, false));
        // The network fails: local-only cycles until the backoff ends, doubling each time.
        let net = SyncError::Network("down".into());
        let cycle = c(false, false).expect("c");
        assert_eq!(
            s.after(cycle, Err(&net), at(22_000)),
            Duration::from_secs(1)
        );
        assert_eq!(s.on(Event::TreeChanged, at(22_100), false), None);
        assert_eq!(
            s.on(Event::QuietPeriodOver, at(22_600), false),
            c(true, true)
        );
        assert_eq!(s.on(Event::CheckDue, at(23_000), false), c(false, false));
        assert_eq!(
            s.after(cycle, Err(&net), at(23_000)),
            Duration::from_secs(2)
        );
        // An offline cycle's success does not end the backoff; a real one does.
        assert_eq!(
            s.after(c(false, true).expect("c"), ok, at(23_500)),
            Duration::ZERO
        );
        assert_eq!(s.on(Event::RemoteMoved, at(24_000), false), c(false, true));
        assert_eq!(s.after(cycle, ok, at(25_100)), Duration::ZERO);
        assert_eq!(s.on(Event::RemoteMoved, at(25_200), false), c(false, false));
        assert_eq!(
            s.after(cycle, Err(&net), at(26_000)),
            Duration::from_secs(1)
        );
        // A local failure retries at the next check, with a scan.
        s.after(cycle, ok, at(30_000));
        let local = SyncError::Maintenance(trinity_core::gitcmd::GitError::TimedOut {
            args: "repack".into(),
            after: Duration::ZERO,
            stderr: String::new(),
        });
        assert_eq!(s.after(cycle, Err(&local), at(31_000)), Duration::ZERO);
        assert_eq!(s.on(Event::CheckDue, at(32_000), false), c(true, false));
        // Without a watcher every check scans.
        let mut blind = Schedule::new(&config, config.pull_interval, false, t0);
        for i in 0..3 {
            assert_eq!(
                blind.on(Event::CheckDue, at(i * 1000), false),
                c(true, false)
            );
        }
    }

    #[test]
    fn checks_are_quick_while_work_is_in_flight_and_slow_when_the_fleet_is_quiet() {
        let config = trinity_core::config::SyncConfig {
            pull_interval: Duration::from_secs(1),
            idle_pull_interval: Duration::from_secs(10),
            ..Default::default()
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut s = Schedule::new(&config, config.pull_interval, true, t0);
        let cycle = Cycle {
            scan: false,
            offline: false,
            probe: false,
        };
        let quiet = Ok(Outcome::default());
        // Just started: quick for a while (the fleet may have moved meanwhile).
        s.on(Event::CheckDue, t0, false);
        s.after(cycle, quiet, t0);
        assert_eq!(s.next_check(t0), at(1));
        // Nothing in flight and the window over: slow.
        let late = at(ACTIVE_WINDOW.as_secs() + 1);
        s.on(Event::CheckDue, late, false);
        s.after(cycle, quiet, late);
        assert_eq!(s.next_check(late), late + Duration::from_secs(10));
        // An agent at work somewhere (or a push or a handoff waiting): quick.
        let busy = Ok(Outcome {
            in_flight: true,
            ..Outcome::default()
        });
        s.after(cycle, busy, late);
        assert_eq!(s.next_check(late), late + Duration::from_secs(1));
        // Back to quiet, then work arrives from the remote: quick for the window only.
        s.after(cycle, quiet, late);
        assert_eq!(s.interval(late), Duration::from_secs(10));
        let arrived = Ok(Outcome {
            work_arrived: true,
            ..Outcome::default()
        });
        s.after(cycle, arrived, late);
        assert_eq!(
            s.interval(late + Duration::from_secs(59)),
            Duration::from_secs(1)
        );
        s.after(cycle, quiet, late + Duration::from_secs(1));
        assert_eq!(
            s.interval(late + Duration::from_secs(61)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn a_long_backoff_is_cut_short_by_a_probe_that_gets_an_answer() {
        let config = trinity_core::config::SyncConfig {
            backoff_max: Duration::from_secs(60),
            ..Default::default()
        };
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Schedule::new(&config, config.pull_interval, true, t0);
        let cycle = Cycle {
            scan: false,
            offline: false,
            probe: false,
        };
        let net = SyncError::Network("down".into());
        // Many failures: the heavy work now waits a minute.
        let mut now = 0;
        for _ in 0..8 {
            s.after(cycle, Err(&net), at(now));
            now += 100;
        }
        let failed_at = at(now - 100);
        assert_eq!(s.next_check(failed_at), failed_at + PROBE_EVERY);
        // The probe is due every PROBE_EVERY meanwhile; each check in between commits locally.
        let c = s
            .on(Event::CheckDue, failed_at + PROBE_EVERY, false)
            .expect("cycle");
        assert!(c.offline && c.probe, "{c:?}");
        assert_eq!(
            s.next_check(failed_at + PROBE_EVERY),
            failed_at + PROBE_EVERY * 2
        );
        let local = s
            .on(Event::QuietPeriodOver, failed_at + PROBE_EVERY, false)
            .expect("cycle");
        assert!(local.offline && !local.probe, "{local:?}");
        // A probe gets an answer: back online at once, and quick for a while.
        s.reachable(failed_at + PROBE_EVERY * 2);
        let after = failed_at + PROBE_EVERY * 2;
        assert_eq!(s.interval(after), config.pull_interval);
        let c = s.on(Event::CheckDue, after, false).expect("cycle");
        assert!(!c.offline && !c.probe, "{c:?}");
        // Refused credentials are not probed: only retried every backoff_max.
        let auth = SyncError::Auth("no".into());
        s.after(cycle, Err(&auth), after);
        assert_eq!(s.next_check(after), after + Duration::from_secs(60));
    }
}
