//! `trinity`: the operator's command line for a Trinity fleet.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod demo;
mod doctor;
mod fleet;
mod init;
mod logs;
mod status;
mod task;
mod validate;
mod work;

/// Keep AI coding agents working around the clock across several PCs.
///
/// Each PC runs four daemons (credit-monitor, wake-daemon, git-sync, coordinator) that share
/// a `.trinity/` state tree synced through git. This command sets a PC up and shows the fleet.
#[derive(Debug, Parser)]
#[command(name = "trinity", version, propagate_version = true)]
struct Cli {
    /// The configuration file [default: ./trinity.toml]
    #[arg(long, global = true, env = "TRINITY_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set this PC up: clone the state repository and write the local config file.
    Init(init::InitArgs),
    /// Check files of a state tree against their schemas.
    Validate(validate::ValidateArgs),
    /// Show the fleet at a glance, from the state tree alone.
    Status(status::StatusArgs),
    /// Show (and follow) a daemon's log.
    Logs(logs::LogsArgs),
    /// Check this PC and say what to fix: config, state tree, remote, daemons, sync, clock,
    /// waiting signals, agent (exit 1 on any problem).
    Doctor(doctor::DoctorArgs),
    /// The fleet's signing keys: list, approve a newcomer, revoke a lost PC, rotate this PC's.
    Fleet(fleet::FleetArgs),
    /// Put work into the fleet's queue and look at it: add, list, show, import.
    Task(task::TaskArgs),
    /// Take the next task, report progress, finish it (for the agent and for people).
    Work(work::WorkArgs),
    /// Claude Code hooks that make the agent report by itself: setup, context, checkpoint.
    Agent(agent::AgentArgs),
    /// Run a whole fleet on this machine — three PCs, the real daemons, one bare repository —
    /// through the handoff scenarios, a verified `work done` and a PC that goes silent; every
    /// step is checked in the files (exit 0 only if all were observed).
    Demo(demo::DemoArgs),
    /// The demo's stand-in agent (started by the demo's wake-daemons).
    #[command(hide = true)]
    DemoAgent(demo::DemoAgentArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => init::run(args, cli.config.as_deref()),
        Command::Validate(args) => validate::run(args),
        Command::Status(args) => status::run(args, cli.config.as_deref()),
        Command::Logs(args) => logs::run(args, cli.config.as_deref()),
        Command::Doctor(args) => doctor::run(args, cli.config.as_deref()),
        Command::Fleet(args) => fleet::run(args, cli.config.as_deref()),
        Command::Task(args) => task::run(args, cli.config.as_deref()),
        Command::Work(args) => work::run(args, cli.config.as_deref()),
        Command::Agent(args) => agent::run(args, cli.config.as_deref()),
        Command::Demo(args) => demo::run(args),
        Command::DemoAgent(args) => demo::agent(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration the way every Trinity program does, printing its warnings.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<trinity_core::config::Config> {
    Ok(trinity_core::daemon::load_config("trinity", path)?.config)
}

/// The keys this PC believes (docs/security.md), by `config`'s `security` settings.
fn keyring(
    config: &trinity_core::config::Config,
    tree: &trinity_core::Tree,
) -> anyhow::Result<trinity_core::trust::Keyring> {
    Ok(trinity_core::trust::Keyring::open(
        tree,
        config.security.require_signatures,
        chrono::Utc::now(),
    )?)
}

/// The configuration and its state tree, which must exist.
fn load_tree(
    path: Option<&std::path::Path>,
) -> anyhow::Result<(trinity_core::config::Config, trinity_core::Tree)> {
    let config = load_config(path)?;
    let tree = config.tree();
    if !tree.root().is_dir() {
        anyhow::bail!(
            "no state tree at {}: run `trinity init` first",
            tree.root().display()
        );
    }
    Ok((config, tree))
}
