//! The `wake-daemon` program: its command line and how the shell runs it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use trinity_core::config::Config;
use trinity_core::daemon::Start;
use trinity_core::schema::WakeSignal;
use trinity_core::{DaemonId, HandoffId, PcId, SystemClock, fsio};
use trinity_runtime::{Flags, Opened, Pending, Program};

use crate::journal::{AgentRecord, HandoffRecord, SignalRecord, Step};
use crate::send::{self, Outgoing};
use crate::{Receiver, daemon};

/// Accept the work handed to this PC and start the agent on it — exactly once.
///
/// Without an action flag it runs as a daemon, watching wake/{PC}/ in the state tree. Each
/// signal is validated (addressee, sender, expiry, duplicates); its handoff is archived into
/// handoff/processed/, its tasks are claimed, and the agent from [agent] in trinity.toml is
/// started with the handoff in its environment (TRINITY_PC, TRINITY_FROM_PC,
/// TRINITY_HANDOFF_FILE, TRINITY_TASK_ID, TRINITY_TASKS_FILE). Logs: logs/wake-daemon.log (the
/// seed's auto_wake_daemon.log).
#[derive(Debug, Parser)]
#[command(name = "wake-daemon", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    flags: Flags,

    /// Send a wake signal to PC and exit
    #[arg(long, value_name = "PC", conflicts_with_all = ["once", "status"])]
    send: Option<PcId>,

    /// With --send: what for, a short token (a-z, 0-9, _ and -)
    #[arg(long, value_name = "TOKEN", requires = "send", default_value = "wake")]
    task: String,

    /// With --send: free text for people (never executed)
    #[arg(long, value_name = "TEXT", requires = "send", default_value = "")]
    message: String,

    /// With --send: the handoff the PC should accept
    #[arg(long, value_name = "ID", requires = "send")]
    handoff: Option<HandoffId>,

    /// With --send: how long the signal stays valid [default: wake.signal_ttl]
    #[arg(long, value_name = "DURATION", requires = "send", value_parser = trinity_core::config::humantime_serde::parse)]
    expires_in: Option<Duration>,
}

/// A wake signal waiting in `wake/{PC}/`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum PendingSignal {
    /// A readable one.
    Valid {
        /// Its file name.
        file: String,
        /// The signal.
        #[serde(flatten)]
        signal: Box<WakeSignal>,
    },
    /// One that does not parse or validate.
    Invalid {
        /// Its file name.
        file: String,
        /// Why.
        invalid: String,
    },
}

/// What `wake-daemon --status` shows.
#[derive(Debug, Serialize)]
pub struct WakeStatus {
    /// This PC.
    pub pc: PcId,
    /// The directory watched for signals.
    #[serde(skip)]
    pub watched: PathBuf,
    /// Signals not handled yet.
    pub pending: Vec<PendingSignal>,
    /// The handoffs this PC handled, oldest first.
    pub handoffs: Vec<HandoffRecord>,
    /// The last ten signals handled, newest first.
    pub recent_signals: Vec<SignalRecord>,
    /// The agent last started.
    pub agent: Option<AgentRecord>,
    /// Whether it still runs.
    pub agent_running: bool,
}

/// The wake-daemon, opened.
#[derive(Debug)]
pub struct WakeDaemon {
    receiver: Receiver,
    config: Config,
}

impl Program for WakeDaemon {
    const ID: DaemonId = DaemonId::WakeDaemon;
    type Cli = Cli;
    type Status = WakeStatus;

    fn flags(cli: &Cli) -> &Flags {
        &cli.flags
    }

    fn status(start: &Start) -> anyhow::Result<WakeStatus> {
        let receiver = Receiver::new(
            start.tree.clone(),
            start.pc.clone(),
            start.config.clone(),
            start.config_dir.clone(),
            SystemClock::shared(),
        );
        let pending = receiver
            .pending_signals()
            .into_iter()
            .map(|p| {
                let file = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match fsio::load::<WakeSignal>(&p) {
                    Ok(d) => PendingSignal::Valid {
                        file,
                        signal: Box::new(d.value),
                    },
                    Err(e) => PendingSignal::Invalid {
                        file,
                        invalid: e.to_string(),
                    },
                }
            })
            .collect();
        let agent = receiver.journal().agent()?;
        let agent_running = agent
            .as_ref()
            .is_some_and(|a| crate::agent::is_running(a.pid, &a.launch_id));
        Ok(WakeStatus {
            pc: receiver.pc().clone(),
            watched: daemon::watched_dir(&receiver),
            pending,
            handoffs: receiver.journal().handoffs(),
            recent_signals: receiver.journal().signals(10),
            agent,
            agent_running,
        })
    }

    fn print_status(s: &WakeStatus) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}: wake signals in {}", s.pc, s.watched.display())?;
        if s.pending.is_empty() {
            writeln!(out, "  none pending")?;
        }
        for p in &s.pending {
            match p {
                PendingSignal::Valid {
                    file: name,
                    signal: s,
                } => writeln!(
                    out,
                    "  pending {name}: from {} ({}) at {}{}",
                    s.from_pc,
                    s.task,
                    s.timestamp.to_rfc3339(),
                    s.handoff
                        .as_ref()
                        .map(|h| format!(", handoff {h}"))
                        .unwrap_or_default()
                )?,
                PendingSignal::Invalid {
                    file: name,
                    invalid: e,
                } => writeln!(out, "  pending {name}: INVALID: {e}")?,
            }
        }
        writeln!(out, "handoffs:")?;
        for h in s.handoffs.iter().rev().take(10) {
            let detail = match &h.step {
                Step::Refused { reason } => format!(": {reason}"),
                Step::Launched { how, .. } => format!(": {how}"),
                _ => String::new(),
            };
            writeln!(
                out,
                "  {} {} (won {}, lost {}){detail}",
                h.id,
                h.step.as_str(),
                h.won.len(),
                h.lost.len()
            )?;
        }
        writeln!(out, "recent signals:")?;
        for r in &s.recent_signals {
            writeln!(out, "  {} {:?}: {}", r.id, r.outcome, r.reason)?;
        }
        match &s.agent {
            Some(a) => writeln!(
                out,
                "agent: pid {} started {} for {} — {}",
                a.pid,
                a.started_at.to_rfc3339(),
                a.handoff,
                if s.agent_running {
                    "running"
                } else {
                    "not running"
                }
            )?,
            None => writeln!(out, "agent: never started")?,
        }
        Ok(())
    }

    fn open(cli: Cli, start: Start) -> anyhow::Result<Opened<Self>> {
        let Start {
            config,
            config_dir,
            pc,
            tree,
        } = start;
        if let Some(to) = cli.send {
            let out = Outgoing {
                to,
                task: cli.task,
                message: cli.message,
                handoff: cli.handoff,
                expires_in: cli.expires_in,
            };
            let path = send::send(&tree, &pc, &out, chrono::Utc::now())?;
            tracing::info!(path = %path.display(), to = %out.to, task = %out.task, "sent a wake signal");
            println!("{}", path.display());
            return Ok(Opened::Done(ExitCode::SUCCESS));
        }
        let receiver = Receiver::new(tree, pc, config.clone(), config_dir, SystemClock::shared());
        Ok(Opened::Daemon(Self { receiver, config }))
    }

    /// One pass; while handoffs wait for their claims to reach the remote, passes again until
    /// `wake.claim_timeout`.
    fn once(self) -> anyhow::Result<ExitCode> {
        let receiver = &self.receiver;
        let mut launched = Vec::new();
        let mut last = None;
        trinity_runtime::settle(
            "wake-daemon",
            Duration::from_millis(100).min(self.config.wake.poll_interval),
            || {
                let report = receiver.process()?;
                launched.extend(report.launched.iter().copied());
                let done = report.all_handled();
                last = Some(report);
                Ok(if done {
                    Pending::Nothing
                } else {
                    Pending::On {
                        what: "the claims of a handoff to reach the remote (is git-sync running?)"
                            .to_owned(),
                        bound: self.config.wake.claim_timeout,
                    }
                })
            },
        )?;
        let Some(report) = last else {
            return Ok(ExitCode::FAILURE);
        };
        for (signal, reason) in &report.refused {
            println!("refused {signal}: {reason}");
        }
        for pid in &launched {
            println!("started the agent (pid {pid})");
        }
        for problem in &report.held {
            println!("held: {problem}");
        }
        if report.all_handled() && report.held.is_empty() {
            Ok(ExitCode::SUCCESS)
        } else {
            for h in &report.waiting {
                println!(
                    "waiting: {h}: its claims have not reached the remote (is git-sync running?)"
                );
            }
            Ok(ExitCode::FAILURE)
        }
    }

    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let poll = self.config.wake.poll_interval;
        Ok(daemon::run(self.receiver, poll, shutdown).await?)
    }
}
