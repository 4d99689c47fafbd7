//! The `coordinator` program: its command line and how the shell runs it.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use trinity_core::daemon::Start;
use trinity_core::fsio;
use trinity_core::schema::{Lease, MultiInstanceStatus};
use trinity_core::{DaemonId, SystemClock};
use trinity_runtime::{Flags, Opened, Pending, Program, Settled};

use crate::leader::Standing;
use crate::{Coordinator, CycleReport, daemon, notifications};

/// Keep the fleet honest: assign work, verify finished work, catch silent PCs, report.
///
/// Every PC may run it: one leads, holding coordinator/lease.json (taken through git: only a
/// lease that reached the remote counts; fleet.toml's `coordinator` is preferred), the others
/// follow and take over when the lease goes unrenewed for coordinator.lease_ttl. Each cycle
/// (coordinator.monitor_interval, and at once when work changes) the leader reads every PC's
/// files and writes status/multi-instance-status.json, the credit dashboard
/// (dashboards/CREDIT_DASHBOARD.html opens by double-click) and reports/. It gives queued tasks
/// to PCs on standby, runs [[coordinator.phases]] on finished work (APPROVE / DENY / ESCALATE),
/// wakes PCs silent for suspect_after, and reassigns the work of PCs silent for dead_after.
/// Logs: logs/coordinator.log.
#[derive(Debug, Parser)]
#[command(name = "coordinator", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    flags: Flags,
}

/// What `coordinator --status` shows: the lease and the fleet status as the leader last wrote
/// them.
#[derive(Debug, Serialize)]
pub struct CoordinatorStatus {
    /// `coordinator/lease.json`.
    pub lease: Option<Lease>,
    /// `status/multi-instance-status.json`.
    pub status: Option<MultiInstanceStatus>,
}

/// The coordinator, opened.
#[derive(Debug)]
pub struct CoordinatorProgram {
    coord: Coordinator,
    lease_ttl: Duration,
    verification_bound: Duration,
}

impl Program for CoordinatorProgram {
    const ID: DaemonId = DaemonId::Coordinator;
    type Cli = Cli;
    type Status = CoordinatorStatus;

    fn flags(cli: &Cli) -> &Flags {
        &cli.flags
    }

    fn status(start: &Start) -> anyhow::Result<CoordinatorStatus> {
        let tree = &start.tree;
        Ok(CoordinatorStatus {
            lease: fsio::load_optional::<Lease>(&tree.lease_file())?.map(|d| d.value),
            status: fsio::load_optional::<MultiInstanceStatus>(&tree.multi_status_file())?
                .map(|d| d.value),
        })
    }

    fn print_status(status: &CoordinatorStatus) -> anyhow::Result<()> {
        print_status(status)
    }

    fn open(_cli: Cli, start: Start) -> anyhow::Result<Opened<Self>> {
        let Start {
            config,
            config_dir,
            pc,
            tree,
        } = start;
        if !config.coordinator.enabled {
            println!("the coordinator is disabled on {pc} (coordinator.enabled = false)");
            tracing::info!("disabled by coordinator.enabled = false");
            return Ok(Opened::Done(ExitCode::SUCCESS));
        }
        let lease_ttl = config.coordinator.lease_ttl;
        let verification_bound = verification_bound(&config.coordinator.phases);
        let coord = Coordinator::new(tree, pc, config, config_dir, SystemClock::shared());
        Ok(Opened::Daemon(Self {
            coord,
            lease_ttl,
            verification_bound,
        }))
    }

    /// One cycle; a lease on its way to the remote, or a verification running, is seen
    /// through (at most the lease's ttl, the phases' deadlines).
    fn once(mut self) -> anyhow::Result<ExitCode> {
        let mut report = CycleReport {
            standing: Standing::Following {
                holder: None,
                epoch: 0,
            },
            actions: Vec::new(),
        };
        let coord = &mut self.coord;
        let settled = trinity_runtime::settle("coordinator", Duration::from_millis(200), || {
            let next = coord.cycle()?;
            report.actions.extend(next.actions);
            report.standing = next.standing;
            Ok(if matches!(report.standing, Standing::Claiming { .. }) {
                Pending::On {
                    what: "git-sync to push the lease to the remote (is git-sync running? see `git-sync --status`)".to_owned(),
                    bound: self.lease_ttl,
                }
            } else if coord.verifying() {
                Pending::On {
                    what: "the verification to finish".to_owned(),
                    bound: self.verification_bound,
                }
            } else {
                Pending::Nothing
            })
        })?;
        print_report(&report);
        if let Settled::GaveUp { .. } = settled {
            return Ok(ExitCode::FAILURE);
        }
        // Messages about what this run did go out before it exits (each is bounded: three
        // attempts of at most ten seconds).
        let bound = notifications::TIMEOUT * notifications::ATTEMPTS + Duration::from_secs(5);
        if !self.coord.flush_notifications(bound) {
            eprintln!("coordinator: some notifications were still being sent when it stopped");
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        Ok(daemon::run(self.coord, shutdown).await?)
    }
}

/// The longest a verification can run: every phase's start and run deadlines, and a minute.
fn verification_bound(phases: &[trinity_core::config::PhaseConfig]) -> std::time::Duration {
    phases
        .iter()
        .map(|p| p.start_deadline + p.run_deadline)
        .sum::<std::time::Duration>()
        + std::time::Duration::from_secs(60)
}

fn print_report(report: &CycleReport) {
    println!("{}", report.standing);
    for a in &report.actions {
        println!("{a}");
    }
}

fn print_status(s: &CoordinatorStatus) -> anyhow::Result<()> {
    match &s.lease {
        Some(l) => println!(
            "leader: {} (epoch {}), lease renewed {}",
            l.holder,
            l.epoch,
            l.renewed_at.to_rfc3339()
        ),
        None => println!("leader: none yet (no coordinator/lease.json)"),
    }
    let Some(s) = &s.status else {
        println!("no fleet status yet (status/multi-instance-status.json)");
        return Ok(());
    };
    println!(
        "status written {} by {}",
        s.updated_at.to_rfc3339(),
        s.coordinator
    );
    for (pc, i) in &s.instances {
        println!(
            "  {pc}: {:?}, {}, {}{}",
            i.liveness,
            i.state.map_or("no state", |st| st.as_str()),
            i.credit_level.map_or("credit unknown", |c| c.as_str()),
            i.current_task
                .as_ref()
                .map(|t| format!(", task {t}"))
                .unwrap_or_default()
        );
    }
    for h in &s.handoffs {
        println!("  handoff {} ({}): {}", h.id, h.reason.describe(), h.phase);
    }
    if let Some(a) = &s.last_action {
        println!("last action: {a}");
    }
    Ok(())
}
