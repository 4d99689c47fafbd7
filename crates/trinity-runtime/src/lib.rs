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
use tokio_util::sync::CancellationToken;
use trinity_core::daemon::{InstanceLock, Start};
use trinity_core::{DaemonId, logging};

pub mod events;
pub mod service;

pub use events::{Events, Next, Timer};
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
    let tree = start.tree.clone();
    let daemon = match P::open(cli, start)? {
        Opened::Daemon(d) => d,
        Opened::Done(code) => return Ok(code),
    };
    if once {
        let _instance = InstanceLock::acquire(&tree, &name)?;
        return daemon.once();
    }
    trinity_core::daemon::run_with(service_token, |shutdown| daemon.run(shutdown))
        .context("failed to start the async runtime")??;
    Ok(ExitCode::SUCCESS)
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
}
