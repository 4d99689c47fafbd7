//! The `git-sync` program: its command line and how the shell runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use trinity_core::config::{SyncConfig, SyncMode};
use trinity_core::daemon::Start;
use trinity_core::syncstate::SyncState;
use trinity_core::{DaemonId, SystemClock};
use trinity_runtime::{Flags, Opened, Program};

use crate::daemon;
use crate::sync::Syncer;

/// Keep this PC's state tree in step with the fleet through git, losing nothing.
///
/// Without an action flag it runs as a daemon: local changes are validated and committed
/// (an invalid file is quarantined, never committed), the remote is checked every
/// sync.pull_interval, what arrived is merged by the rules of each path's class, and local
/// commits are pushed — a lost push race is fetched, merged and retried. With --once: one full
/// cycle (commit, fetch, merge, push). Logs: logs/git-sync.log in the state tree.
#[derive(Debug, Parser)]
#[command(name = "git-sync", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    flags: Flags,
}

/// git-sync, opened.
#[derive(Debug)]
pub struct GitSync {
    syncer: Syncer,
    root: PathBuf,
    config: SyncConfig,
}

fn require_clone(start: &Start) -> anyhow::Result<()> {
    if !start.tree.git_dir().exists() {
        bail!(
            "{} is not a git clone of the state repository: run `trinity init` first",
            start.tree.root().display()
        );
    }
    Ok(())
}

impl Program for GitSync {
    const ID: DaemonId = DaemonId::GitSync;
    type Cli = Cli;
    type Status = SyncState;
    const BEATS: bool = false;

    fn flags(cli: &Cli) -> &Flags {
        &cli.flags
    }

    fn status(start: &Start) -> anyhow::Result<SyncState> {
        require_clone(start)?;
        Ok(SyncState::read(&start.tree)?.unwrap_or_default())
    }

    fn print_status(s: &SyncState) -> anyhow::Result<()> {
        let t = |x: Option<chrono::DateTime<chrono::Utc>>| {
            x.map_or("never".to_owned(), |t| t.to_rfc3339())
        };
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
        Ok(())
    }

    fn open(_cli: Cli, start: Start) -> anyhow::Result<Opened<Self>> {
        require_clone(&start)?;
        if start.config.sync.mode == SyncMode::None {
            bail!("sync.mode is \"none\" in the configuration: this PC does not sync");
        }
        let root = start.tree.root().to_owned();
        let config = start.config.sync.clone();
        let syncer = Syncer::open(start.tree, start.pc, start.config, SystemClock::shared())?;
        Ok(Opened::Daemon(Self {
            syncer,
            root,
            config,
        }))
    }

    fn once(mut self) -> anyhow::Result<ExitCode> {
        let report = match self.syncer.cycle(true) {
            Ok(report) => report,
            Err(e) => {
                eprintln!("git-sync: {e}");
                return Ok(ExitCode::FAILURE);
            }
        };
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
        match self.syncer.maintain_if_due() {
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
        Ok(ExitCode::SUCCESS)
    }

    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        Ok(daemon::run(self.syncer, self.root, self.config, shutdown).await?)
    }
}
