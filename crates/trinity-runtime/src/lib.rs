//! The program shell of Trinity's four daemons, written once.
//!
//! A daemon describes itself as a [`Program`] — its id, its command line, how it opens, one
//! round of its work (`--once`), its loop, and what `--status` shows as a typed value — and its
//! `main` is one line: [`main::<Daemon>()`](main). The shell does the rest, in the same order
//! for all four: the command line (with `--service`, under the Windows service control
//! manager), the configuration, this PC and its tree, `--status [--json]` (before logging: it
//! writes nothing), the log file, then either one round under the daemon's instance lock or the
//! loop on a one-thread async runtime until Ctrl-C, SIGTERM or the service's Stop. Errors are
//! printed as `{daemon}: error: …` with their causes, and exit 1.
//!
//! [`settle`] is the `--once` wait every daemon shares: repeat a step until nothing is awaited,
//! saying what is awaited and for how long at most, and give up after that.

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use trinity_core::clock::{SharedClock, SystemClock};
use trinity_core::daemon::{InstanceLock, Start};
use trinity_core::pcfiles::{self, BEAT_INTERVAL};
use trinity_core::{DaemonId, DaemonName, PcId, Tree, logging};

pub mod events;
pub mod process;
pub mod service;

pub use events::{Events, Next, Timer};
pub use process::{OperatorAlerts, release_free_memory};
pub use service::DaemonArgs;

/// The flags every daemon takes (flattened into its command line).
#[derive(Debug, Clone, clap::Args)]
pub struct Flags {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub daemon: DaemonArgs,

    /// Do one round of the daemon's work and exit, waiting a bounded time (said) for what it
    /// started to settle: 0 when done, 1 with the reason otherwise
    #[arg(long, conflicts_with = "status")]
    pub once: bool,

    /// Print what the daemon last recorded and exit
    #[arg(long)]
    pub status: bool,

    /// With --status: print JSON
    #[arg(long, requires = "status")]
    pub json: bool,
}

/// What opening a daemon led to.
#[derive(Debug)]
pub enum Opened<D> {
    /// The daemon, ready for `--once` or its loop.
    Daemon(D),
    /// The program's work is done (a command that is not the daemon's: `wake-daemon --send`,
    /// `credit-monitor --record-…`), with this exit code.
    Done(ExitCode),
}

/// One of Trinity's daemons, as the shell runs it.
pub trait Program: Sized {
    /// Which daemon: its program, log, lock and service name.
    const ID: DaemonId;
    /// Its command line, flattening [`Flags`].
    type Cli: clap::Parser + Send + 'static;
    /// What `--status` shows (`--json` prints it as JSON).
    type Status: serde::Serialize;
    /// Whether the shell keeps the daemon's entry in this PC's heartbeat ([`Chores`]). git-sync
    /// carries the heartbeat to the fleet but writes none of it: a PC whose other daemons have
    /// stopped must fall silent to the coordinator even while its git-sync runs.
    const BEATS: bool = true;

    /// The shared flags inside the command line.
    fn flags(cli: &Self::Cli) -> &Flags;

    /// A command that needs only the configuration, run before the tree is looked for
    /// (`credit-monitor replay`); `None` to go on.
    fn before_start(cli: &Self::Cli) -> Option<anyhow::Result<ExitCode>> {
        let _ = cli;
        None
    }

    /// What `--status` shows, read from the tree.
    fn status(start: &Start) -> anyhow::Result<Self::Status>;

    /// `--status` for people.
    fn print_status(status: &Self::Status) -> anyhow::Result<()>;

    /// Opens the daemon, logging started.
    fn open(cli: Self::Cli, start: Start) -> anyhow::Result<Opened<Self>>;

    /// `--once`: one round under the daemon's instance lock (see [`settle`]).
    fn once(self) -> anyhow::Result<ExitCode>;

    /// The daemon's loop, until `shutdown` is cancelled.
    fn run(self, shutdown: CancellationToken) -> impl Future<Output = anyhow::Result<()>>;
}

/// The `main` of every daemon program.
pub fn main<P: Program>() -> ExitCode {
    service::daemon_main(
        P::ID.as_str(),
        |cli: &P::Cli| &P::flags(cli).daemon,
        run::<P>,
    )
}

fn run<P: Program>(
    cli: P::Cli,
    service_token: Option<CancellationToken>,
) -> anyhow::Result<ExitCode> {
    if let Some(result) = P::before_start(&cli) {
        return result;
    }
    let flags = P::flags(&cli);
    let (once, status, json) = (flags.once, flags.status, flags.json);
    let start = trinity_core::daemon::start(P::ID.as_str(), flags.daemon.config.as_deref())?;
    if status {
        let status = P::status(&start)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            P::print_status(&status)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let name = P::ID.name();
    let _log = logging::init(&name, &start.config.logging, &start.tree.logs_dir())?;
    let mut chores = Chores::new(
        start.tree.clone(),
        start.pc.clone(),
        name,
        SystemClock::shared(),
    );
    chores.beats = P::BEATS;
    let daemon = match P::open(cli, start)? {
        Opened::Daemon(d) => d,
        Opened::Done(code) => return Ok(code),
    };
    let _instance = InstanceLock::acquire(&chores.tree, &chores.name)?;
    if once {
        return daemon.once();
    }
    process::run_with(service_token, |shutdown| async move {
        tokio::select! {
            result = daemon.run(shutdown) => result,
            never = chores.run() => match never {},
        }
    })
    .context("failed to start the async runtime")??;
    Ok(ExitCode::SUCCESS)
}

/// How often the shell hands the memory a daemon freed back to the system
/// ([`release_free_memory`]): what a burst of work left behind is gone within this.
pub const RELEASE_MEMORY_EVERY: Duration = Duration::from_secs(60);

/// What the shell does for every daemon while its loop runs, beside it on the same thread:
/// its entry in this PC's heartbeat (`heartbeat/{PC}.json`'s `daemons`) refreshed every
/// [`BEAT_INTERVAL`] (where [`Program::BEATS`]) — a loop stuck in one step stops beating, which
/// `trinity doctor` reports — and freed memory given back every [`RELEASE_MEMORY_EVERY`].
#[derive(Debug)]
pub struct Chores {
    tree: Tree,
    pc: PcId,
    name: DaemonName,
    clock: SharedClock,
    started_at: DateTime<Utc>,
    beats: bool,
}

impl Chores {
    /// The chores of daemon `name` of `pc`, started now by `clock`.
    pub fn new(tree: Tree, pc: PcId, name: DaemonName, clock: SharedClock) -> Self {
        let started_at = clock.now();
        Self {
            tree,
            pc,
            name,
            clock,
            started_at,
            beats: true,
        }
    }

    /// Refreshes the daemon's entry in the heartbeat (a failure is logged: the next beat
    /// tries again).
    pub fn beat(&self) {
        let now = self.clock.now();
        if let Err(e) = pcfiles::beat(&self.tree, &self.pc, &self.name, self.started_at, now) {
            tracing::warn!(error = %e, "cannot update the heartbeat");
        }
    }

    /// Beats at once and then every [`BEAT_INTERVAL`], and releases memory every
    /// [`RELEASE_MEMORY_EVERY`], for as long as it is polled.
    async fn run(self) -> std::convert::Infallible {
        let mut beat = events::ticker(BEAT_INTERVAL);
        let mut release = events::ticker(RELEASE_MEMORY_EVERY);
        loop {
            tokio::select! {
                _ = beat.tick(), if self.beats => self.beat(),
                _ = release.tick() => release_free_memory(),
            }
        }
    }
}

/// What a `--once` step still waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Nothing: the round is over.
    Nothing,
    /// `what` (words for people: "git-sync to push the lease"), for at most `bound` since it
    /// was first awaited.
    On {
        /// What is awaited.
        what: String,
        /// How long at most.
        bound: Duration,
    },
}

/// How a [`settle`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Nothing was left to wait for.
    Done,
    /// It gave up waiting for `what` after `bound`.
    GaveUp {
        /// What was awaited.
        what: String,
        /// How long it waited.
        bound: Duration,
    },
}

/// Runs `step` until it awaits nothing, every `poll`. Says on standard error what it waits for
/// and for how long at most (once per thing awaited), and gives up, saying so, when one thing
/// has been awaited for its bound.
pub fn settle(
    program: &str,
    poll: Duration,
    mut step: impl FnMut() -> anyhow::Result<Pending>,
) -> anyhow::Result<Settled> {
    let mut awaited: Option<(String, Instant)> = None;
    loop {
        let (what, bound) = match step()? {
            Pending::Nothing => return Ok(Settled::Done),
            Pending::On { what, bound } => (what, bound),
        };
        let since = match &awaited {
            Some((w, since)) if *w == what => *since,
            _ => {
                eprintln!(
                    "{program}: waiting for {what}; giving up after {}",
                    humantime::format_duration(bound)
                );
                let now = Instant::now();
                awaited = Some((what.clone(), now));
                now
            }
        };
        if since.elapsed() >= bound {
            eprintln!(
                "{program}: gave up after {} waiting for {what}",
                humantime::format_duration(bound)
            );
            return Ok(Settled::GaveUp { what, bound });
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn settle_ends_when_nothing_is_awaited_and_gives_up_after_the_bound() {
        let mut left = 3;
        let done = settle("test", Duration::from_millis(1), || {
            left -= 1;
            Ok(if left == 0 {
                Pending::Nothing
            } else {
                Pending::On {
                    what: "the thing".to_owned(),
                    bound: Duration::from_secs(60),
                }
            })
        })
        .expect("settle");
        assert_eq!((done, left), (Settled::Done, 0));

        let mut steps = 0;
        let gave_up = settle("test", Duration::from_millis(1), || {
            steps += 1;
            Ok(Pending::On {
                what: "what never comes".to_owned(),
                bound: Duration::from_millis(20),
            })
        })
        .expect("settle");
        assert_eq!(
            gave_up,
            Settled::GaveUp {
                what: "what never comes".to_owned(),
                bound: Duration::from_millis(20)
            }
        );
        assert!(steps > 1, "it polled again before giving up ({steps})");
    }

    #[test]
    fn a_step_that_fails_ends_the_wait_with_its_error() {
        let err = settle("test", Duration::from_millis(1), || {
            anyhow::bail!("the tree is gone")
        })
        .expect_err("fails");
        assert_eq!(err.to_string(), "the tree is gone");
    }

    /// A clock one second later at every look, so the looks can be counted.
    #[derive(Debug)]
    struct Ticking(std::sync::Mutex<DateTime<Utc>>);

    impl trinity_core::Clock for Ticking {
        fn now(&self) -> DateTime<Utc> {
            let mut t = self.0.lock().expect("clock");
            *t += chrono::Duration::seconds(1);
            *t
        }
    }

    fn chores(dir: &std::path::Path, clock: SharedClock) -> Chores {
        let pc = PcId::new("PC1").expect("pc");
        Chores::new(Tree::new(dir), pc, DaemonId::WakeDaemon.name(), clock)
    }

    fn beat_of(dir: &std::path::Path) -> (DateTime<Utc>, DateTime<Utc>) {
        let tree = Tree::new(dir);
        let hb = trinity_core::fsio::load::<trinity_core::schema::Heartbeat>(
            &tree.heartbeat_file(&PcId::new("PC1").expect("pc")),
        )
        .expect("heartbeat")
        .value;
        let beat = &hb.daemons[&DaemonId::WakeDaemon.name()];
        (beat.started_at, beat.updated_at)
    }

    #[test]
    fn a_beat_records_the_daemon_by_the_injected_clock() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t0 = "2026-12-05T10:00:00Z".parse().expect("time");
        let clock = trinity_core::ManualClock::new(t0);
        let chores = chores(dir.path(), Arc::new(clock.clone()));
        clock.advance(Duration::from_secs(30));
        chores.beat();
        assert_eq!(
            beat_of(dir.path()),
            (t0, t0 + chrono::Duration::seconds(30))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_chores_beat_at_once_then_every_beat_interval_for_hours() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t0: DateTime<Utc> = "2026-12-05T10:00:00Z".parse().expect("time");
        let clock = Arc::new(Ticking(std::sync::Mutex::new(t0)));
        let chores = chores(dir.path(), clock);
        // 300 beat intervals and a bit (two and a half hours, 150 memory releases among
        // them), in paused time: a beat at once and one per interval, none lost or doubled.
        let ran = tokio::time::timeout(BEAT_INTERVAL * 300 + Duration::from_secs(1), chores.run());
        assert!(ran.await.is_err(), "the chores run until they are dropped");
        // The clock was read at the start and once per beat.
        assert_eq!(
            beat_of(dir.path()),
            (
                t0 + chrono::Duration::seconds(1),
                t0 + chrono::Duration::seconds(302)
            )
        );
    }
}
