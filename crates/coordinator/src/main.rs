//! `coordinator`: leads the fleet when it holds the lease; follows, ready to take over, when not.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use coordinator::leader::Standing;
use coordinator::{Coordinator, daemon};
use trinity_core::daemon::Start;
use trinity_core::fsio;
use trinity_core::schema::{Lease, MultiInstanceStatus};
use trinity_core::service::DaemonArgs;
use trinity_core::{DaemonName, SystemClock, logging};

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
struct Cli {
    #[command(flatten)]
    daemon: DaemonArgs,

    /// Run one cycle and exit (waits for a running verification to finish)
    #[arg(long, conflicts_with = "status")]
    once: bool,

    /// Print the lease and the fleet status as the leader last wrote it
    #[arg(long)]
    status: bool,

    /// With --status: print JSON
    #[arg(long, requires = "status")]
    json: bool,
}

fn main() -> ExitCode {
    trinity_core::service::daemon_main("coordinator", |c: &Cli| &c.daemon, run)
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
    if cli.status {
        return print_status(&tree, cli.json);
    }
    let name = DaemonName::new(daemon::NAME)?;
    let _log = logging::init(&name, &config.logging, &tree.logs_dir())?;
    if !config.coordinator.enabled {
        println!("the coordinator is disabled on {pc} (coordinator.enabled = false)");
        tracing::info!("disabled by coordinator.enabled = false");
        return Ok(ExitCode::SUCCESS);
    }
    let config_lease_ttl = config.coordinator.lease_ttl;
    let config_phases = config.coordinator.phases.clone();
    let mut coord = Coordinator::new(tree, pc, config, config_dir, SystemClock::shared());
    if cli.once {
        let _instance = trinity_core::daemon::InstanceLock::acquire(coord.tree(), &name)?;
        let mut report = coord.cycle()?;
        // A lease on its way to the remote, or a verification running: see it through, saying
        // what is awaited and for how long at most.
        let lease_wait = config_lease_ttl;
        let verify_wait = verification_bound(&config_phases);
        let mut waiting_for: Option<(&str, std::time::Instant)> = None;
        loop {
            let (what, bound) = if matches!(report.standing, Standing::Claiming { .. }) {
                (
                    "git-sync to push the lease to the remote (is git-sync running? see `git-sync --status`)",
                    lease_wait,
                )
            } else if coord.verifying() {
                ("the verification to finish", verify_wait)
            } else {
                break;
            };
            let since = match waiting_for {
                Some((w, since)) if w == what => since,
                _ => {
                    eprintln!(
                        "coordinator: waiting for {what}; giving up after {}",
                        humantime::format_duration(bound)
                    );
                    let now = std::time::Instant::now();
                    waiting_for = Some((what, now));
                    now
                }
            };
            if since.elapsed() >= bound {
                print_report(&report);
                eprintln!(
                    "coordinator: gave up after {} waiting for {what}",
                    humantime::format_duration(bound)
                );
                return Ok(ExitCode::FAILURE);
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            let next = coord.cycle()?;
            let mut actions = report.actions;
            actions.extend(next.actions);
            report = coordinator::CycleReport {
                standing: next.standing,
                actions,
            };
        }
        print_report(&report);
        // Messages about what this run did go out before it exits (each is bounded: three
        // attempts of at most ten seconds).
        let bound = coordinator::notifications::TIMEOUT * coordinator::notifications::ATTEMPTS
            + std::time::Duration::from_secs(5);
        if !coord.flush_notifications(bound) {
            eprintln!("coordinator: some notifications were still being sent when it stopped");
        }
        return Ok(ExitCode::SUCCESS);
    }
    trinity_core::daemon::run_with(service_token, |shutdown| daemon::run(coord, shutdown))
        .context("failed to start the async runtime")??;
    Ok(ExitCode::SUCCESS)
}

/// The longest a verification can run: every phase's start and run deadlines, and a minute.
fn verification_bound(phases: &[trinity_core::config::PhaseConfig]) -> std::time::Duration {
    phases
        .iter()
        .map(|p| p.start_deadline + p.run_deadline)
        .sum::<std::time::Duration>()
        + std::time::Duration::from_secs(60)
}

fn print_report(report: &coordinator::CycleReport) {
    match &report.standing {
        Standing::Leading { epoch } => println!("leading (epoch {epoch})"),
        Standing::Claiming { epoch } => {
            println!("claimed the lease (epoch {epoch}); it has not reached the remote yet")
        }
        Standing::Following {
            holder: Some(h),
            epoch,
        } => {
            println!("following {h} (epoch {epoch})")
        }
        Standing::Following { holder: None, .. } => println!("no leader yet"),
    }
    for a in &report.actions {
        println!("{a}");
    }
}

fn print_status(tree: &trinity_core::Tree, json: bool) -> anyhow::Result<ExitCode> {
    let lease = fsio::load_optional::<Lease>(&tree.lease_file())?.map(|d| d.value);
    let status =
        fsio::load_optional::<MultiInstanceStatus>(&tree.multi_status_file())?.map(|d| d.value);
    if json {
        let v = serde_json::json!({ "lease": lease, "status": status });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &lease {
        Some(l) => println!(
            "leader: {} (epoch {}), lease renewed {}",
            l.holder,
            l.epoch,
            l.renewed_at.to_rfc3339()
        ),
        None => println!("leader: none yet (no coordinator/lease.json)"),
    }
    let Some(s) = status else {
        println!("no fleet status yet (status/multi-instance-status.json)");
        return Ok(ExitCode::SUCCESS);
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
    Ok(ExitCode::SUCCESS)
}
