//! `git-sync`: keeps this PC's `.trinity/` tree in step with the fleet through git.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use git_sync::daemon;
use git_sync::sync::Syncer;
use trinity_core::config::SyncMode;
use trinity_core::daemon::Start;
use trinity_core::service::DaemonArgs;
use trinity_core::syncstate::SyncState;
use trinity_core::{DaemonName, SystemClock, logging};

/// Keep this PC's state tree in step with the fleet through git, losing nothing.
///
/// Without an action flag it runs as a daemon: local changes are validated and committed
/// (an invalid file is quarantined, never committed), the remote is checked every
/// sync.pull_interval, what arrived is merged by the rules of each path's class, and local
/// commits are pushed — a lost push race is fetched, merged and retried. Logs:
/// logs/git-sync.log in the state tree.
#[derive(Debug, Parser)]
#[command(name = "git-sync", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    daemon: DaemonArgs,

    /// Run one full cycle (commit, fetch, merge, push) and exit: 0 on success, 1 with the
    /// reason otherwise
    #[arg(long, conflicts_with = "status")]
    once: bool,

    /// Print the sync state the other daemons read (local/git-sync/state.json)
    #[arg(long)]
    status: bool,

    /// With --status: print JSON
    #[arg(long, requires = "status")]
    json: bool,
}

fn main() -> ExitCode {
    trinity_core::service::daemon_main("git-sync", |c: &Cli| &c.daemon, run)
}

fn run(
    cli: Cli,
    service_token: Option<tokio_util::sync::CancellationToken>,
) -> anyhow::Result<ExitCode> {
    let Start {
        config, pc, tree, ..
    } = trinity_core::daemon::start(daemon::NAME, cli.daemon.config.as_deref())?;
    if !tree.git_dir().exists() {
        bail!(
            "{} is not a git clone of the state repository: run `trinity init` first",
            tree.root().display()
        );
    }
    if cli.status {
        let state = SyncState::read(&tree)?.unwrap_or_default();
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&state)?);
        } else {
            print_status(&state);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if config.sync.mode == SyncMode::None {
        bail!("sync.mode is \"none\" in the configuration: this PC does not sync");
    }
    let name = DaemonName::new(daemon::NAME)?;
    let _log = logging::init(&name, &config.logging, &tree.logs_dir())?;
    let root = tree.root().to_owned();
    let mut syncer = Syncer::open(tree.clone(), pc, config.clone(), SystemClock::shared())?;
    if cli.once {
        let _instance = trinity_core::daemon::InstanceLock::acquire(&tree, &name)?;
        return Ok(match syncer.cycle(true) {
            Ok(report) => {
                if let Some(c) = &report.committed {
                    println!("committed {}", &c[..8.min(c.len())]);
                }
                if report.merged {
                    println!("merged the remote's changes");
                }
                if report.pushed {
                    println!("pushed");
                }
                for q in &report.quarantined {
                    println!("quarantined {q}");
                }
                for c in &report.conflicts {
                    println!("conflict kept aside: {c}");
                }
                match syncer.maintain_if_due() {
                    Ok(Some(m)) => {
                        if m.pruned {
                            println!("dropped the history a compaction replaced");
                        }
                        println!(
                            "consolidated {} pack files and {} loose objects into {} packs",
                            m.before.packs, m.before.loose, m.after.packs
                        )
                    }
                    Ok(None) => {}
                    Err(e) => eprintln!("git-sync: {e}"),
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("git-sync: {e}");
                ExitCode::FAILURE
            }
        });
    }
    let sync_config = config.sync.clone();
    trinity_core::daemon::run_with(service_token, |shutdown| {
        daemon::run(syncer, root, sync_config, shutdown)
    })
    .context("failed to start the async runtime")??;
    Ok(ExitCode::SUCCESS)
}

fn print_status(s: &SyncState) {
    let t =
        |x: Option<chrono::DateTime<chrono::Utc>>| x.map_or("never".to_owned(), |t| t.to_rfc3339());
    println!("in sync at:   {}", t(s.in_sync_at));
    println!("remote seen:  {}", t(s.remote_seen_at));
    println!("last fetch:   {}", t(s.last_fetch));
    println!("last push:    {}", t(s.last_push));
    println!("local head:   {}", s.local_head.as_deref().unwrap_or("-"));
    println!("remote head:  {}", s.remote_head.as_deref().unwrap_or("-"));
    println!("commits waiting to be pushed: {}", s.commits_ahead);
    println!(
        "push races: {}, merge conflicts: {}, files quarantined: {}",
        s.push_races, s.conflicts, s.quarantined
    );
    println!(
        "pack consolidations: {} (last: {}), history compactions: {} (last: {}), repository reopened after a failure: {}",
        s.maintenance_runs,
        t(s.last_maintenance),
        s.compactions,
        t(s.last_compaction),
        s.reopens
    );
    if let Some(e) = &s.last_error {
        println!("last error:   {e}");
    }
}
