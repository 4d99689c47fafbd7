//! `wake-daemon`: accepts the handoffs addressed to this PC and starts the agent.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use trinity_core::config::Config;
use trinity_core::daemon::Start;
use trinity_core::schema::WakeSignal;
use trinity_core::service::DaemonArgs;
use trinity_core::{DaemonName, HandoffId, PcId, SystemClock, fsio, logging};
use wake_daemon::journal::Step;
use wake_daemon::receive::step_name;
use wake_daemon::send::{self, Outgoing};
use wake_daemon::{Receiver, daemon};

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
struct Cli {
    #[command(flatten)]
    daemon: DaemonArgs,

    /// Handle what is pending and exit: 0 when everything was handled, 1 when a handoff still
    /// waits for its claims to reach the remote
    #[arg(long, conflicts_with_all = ["status", "send"])]
    once: bool,

    /// List pending signals, recent handoffs and the agent
    #[arg(long, conflicts_with = "send")]
    status: bool,

    /// With --status: print JSON
    #[arg(long, requires = "status")]
    json: bool,

    /// Send a wake signal to PC and exit
    #[arg(long, value_name = "PC")]
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

fn main() -> ExitCode {
    trinity_core::service::daemon_main("wake-daemon", |c: &Cli| &c.daemon, run)
}

fn run(
    cli: Cli,
    service_token: Option<tokio_util::sync::CancellationToken>,
) -> anyhow::Result<ExitCode> {
    let Start {
        config,
        config_dir,
        pc,
        tree,
    } = trinity_core::daemon::start(daemon::NAME, cli.daemon.config.as_deref())?;
    let name = DaemonName::new(daemon::NAME)?;
    let _log = logging::init(&name, &config.logging, &tree.logs_dir())?;

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
        return Ok(ExitCode::SUCCESS);
    }

    let receiver = Receiver::new(tree, pc, config.clone(), config_dir, SystemClock::shared());
    if cli.status {
        print_status(&receiver, cli.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    if cli.once {
        return once(&receiver, &config);
    }
    let poll = config.wake.poll_interval;
    trinity_core::daemon::run_with(service_token, |shutdown| {
        daemon::run(receiver, poll, shutdown)
    })
    .context("failed to start the async runtime")??;
    Ok(ExitCode::SUCCESS)
}

/// One pass; while handoffs wait for their claims to reach the remote, passes again until
/// `wake.claim_timeout`.
fn once(receiver: &Receiver, config: &Config) -> anyhow::Result<ExitCode> {
    let name = DaemonName::new(daemon::NAME)?;
    let _instance = trinity_core::daemon::InstanceLock::acquire(receiver.tree(), &name)?;
    let deadline = std::time::Instant::now() + config.wake.claim_timeout;
    let mut report = receiver.process()?;
    let mut launched = report.launched.clone();
    while !report.all_handled() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100).min(config.wake.poll_interval));
        report = receiver.process()?;
        launched.extend(report.launched.iter().copied());
    }
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
            println!("waiting: {h}: its claims have not reached the remote (is git-sync running?)");
        }
        Ok(ExitCode::FAILURE)
    }
}

fn print_status(receiver: &Receiver, json: bool) -> anyhow::Result<()> {
    let pending: Vec<(String, Result<WakeSignal, String>)> = receiver
        .pending_signals()
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let parsed = fsio::load::<WakeSignal>(&p)
                .map(|d| d.value)
                .map_err(|e| e.to_string());
            (name, parsed)
        })
        .collect();
    let handoffs = receiver.journal().handoffs();
    let signals = receiver.journal().signals(10);
    let agent = receiver.journal().agent()?;
    let agent_running = agent
        .as_ref()
        .is_some_and(|a| wake_daemon::agent::is_running(a.pid, &a.launch_id));
    if json {
        let value = serde_json::json!({
            "pc": receiver.pc(),
            "pending": pending.iter().map(|(n, s)| match s {
                Ok(s) => serde_json::json!({"file": n, "from_pc": s.from_pc, "task": s.task, "timestamp": s.timestamp, "handoff": s.handoff}),
                Err(e) => serde_json::json!({"file": n, "invalid": e}),
            }).collect::<Vec<_>>(),
            "handoffs": handoffs,
            "recent_signals": signals,
            "agent": agent,
            "agent_running": agent_running,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: wake signals in {}",
        receiver.pc(),
        daemon::watched_dir(receiver).display()
    )?;
    if pending.is_empty() {
        writeln!(out, "  none pending")?;
    }
    for (name, s) in &pending {
        match s {
            Ok(s) => writeln!(
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
            Err(e) => writeln!(out, "  pending {name}: INVALID: {e}")?,
        }
    }
    writeln!(out, "handoffs:")?;
    for h in handoffs.iter().rev().take(10) {
        let detail = match &h.step {
            Step::Refused { reason } => format!(": {reason}"),
            Step::Launched { how, .. } => format!(": {how}"),
            _ => String::new(),
        };
        writeln!(
            out,
            "  {} {} (won {}, lost {}){detail}",
            h.id,
            step_name(&h.step),
            h.won.len(),
            h.lost.len()
        )?;
    }
    writeln!(out, "recent signals:")?;
    for s in &signals {
        writeln!(out, "  {} {:?}: {}", s.id, s.outcome, s.reason)?;
    }
    match agent {
        Some(a) => writeln!(
            out,
            "agent: pid {} started {} for {} — {}",
            a.pid,
            a.started_at.to_rfc3339(),
            a.handoff,
            if agent_running {
                "running"
            } else {
                "not running"
            }
        )?,
        None => writeln!(out, "agent: never started")?,
    }
    Ok(())
}
