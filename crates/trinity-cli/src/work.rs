//! `trinity work`: how the agent (or a person) takes work and reports on it.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use trinity_core::config::{Config, SyncMode};
use trinity_core::fsio::{self, SaveError};
use trinity_core::queue::QueueView;
use trinity_core::schema::{
    Claim, CurrentWork, Done, Handoff, HandoffReason, InstanceStatus, Outcome, Task,
};
use trinity_core::syncstate::SyncState;
use trinity_core::{InstanceState, PcId, TaskId, Tree, pcfiles, state};

/// The exit code of `trinity work next` when there is nothing to do.
pub(crate) const NOTHING_TO_DO: u8 = 3;

/// Take the next task, report progress, finish it.
#[derive(Debug, Args)]
pub(crate) struct WorkArgs {
    #[command(subcommand)]
    command: WorkCommand,
}

#[derive(Debug, Subcommand)]
enum WorkCommand {
    /// Claim the next task this PC should do and make it its current work.
    ///
    /// The highest-priority queued task whose dependencies are done and whose role fits this
    /// PC's `roles`, then the oldest. The claim counts only once it is on the remote (git-sync
    /// reports it); a claim another PC won first is left, and the next task tried. Prints the
    /// task; exits 3 when there is nothing to do. Run again, it prints the current work.
    Next(NextArgs),
    /// Report progress on this PC's task (instances/{PC}.json): how far, steps done, next step.
    Progress(ProgressArgs),
    /// Finish a task: writes done/{ID}.json and releases the claim.
    ///
    /// When a coordinator leads the fleet (coordinator/lease.json exists), the finished work
    /// (with a snapshot of the agent's code, when agent.workdir is a git checkout) is submitted
    /// for verification: handoff/handoff_{PC}_to_{PC}_{TS}.json, this PC goes HANDOFF_READY and
    /// waits for the verdict, which comes by wake signal (APPROVE: standby and the next
    /// assignment; DENY: the task comes back with what to fix). Without a coordinator the PC
    /// goes straight to standby.
    Done(DoneArgs),
}

#[derive(Debug, Args)]
struct NextArgs {
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ProgressArgs {
    /// The task [default: TRINITY_TASK_ID, else the current work]
    #[arg(long)]
    task: Option<String>,
    /// How far: a percentage (0-100, `50` or `50%`) or a few words
    #[arg(long, allow_hyphen_values = true)]
    progress: Option<String>,
    /// A step finished (repeat for several)
    #[arg(long = "done", value_name = "SUBTASK")]
    done: Vec<String>,
    /// The step to take next
    #[arg(long = "next", value_name = "SUBTASK")]
    next: Option<String>,
    /// A remark kept with the progress
    #[arg(long)]
    note: Option<String>,
}

#[derive(Debug, Args)]
struct DoneArgs {
    /// The task [default: TRINITY_TASK_ID, else the current work]
    #[arg(long)]
    task: Option<String>,
    /// What was done, for people
    #[arg(long, default_value = "")]
    summary: String,
}

pub(crate) fn run(args: WorkArgs, config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (config, tree) = crate::load_tree(config_path)?;
    let pc = config.require_pc()?.clone();
    match args.command {
        WorkCommand::Next(a) => next(&config, &tree, &pc, a.json),
        WorkCommand::Progress(a) => progress(&config, &tree, &pc, a),
        WorkCommand::Done(a) => done(&config, &tree, &pc, a),
    }
}

fn instance(tree: &Tree, pc: &PcId) -> Option<InstanceStatus> {
    fsio::load::<InstanceStatus>(&tree.instance_file(pc))
        .ok()
        .map(|d| d.value)
}

fn next(config: &Config, tree: &Tree, pc: &PcId, json: bool) -> anyhow::Result<ExitCode> {
    let view = QueueView::read(tree, &crate::keyring(config, tree)?);
    for r in &view.refused {
        eprintln!("left out (not signed by a member this PC trusts; docs/security.md): {r}");
    }
    // Already working on something: say so again (the agent may ask twice).
    if let Some(work) = instance(tree, pc).and_then(|i| i.current_work)
        && let Some(task) = view.tasks.get(&work.task_id)
        && !view.done.contains_key(&work.task_id)
        && view.claims.get(&work.task_id).is_some_and(|c| &c.pc == pc)
    {
        print_task(task, json, "current work")?;
        return Ok(ExitCode::SUCCESS);
    }
    // Finished work waits for the coordinator's verdict before new work comes.
    if let Some(i) = instance(tree, pc)
        && matches!(
            i.state,
            InstanceState::HandoffReady
                | InstanceState::Verification
                | InstanceState::Approved
                | InstanceState::Failed
        )
        && let Some(h) = &i.handoff
        && h.from_pc() == pc
        && h.to_pc() == pc
    {
        eprintln!(
            "{pc} is {}: its finished work ({h}) waits for the coordinator's verdict; the next task comes by assignment",
            i.state
        );
        return Ok(ExitCode::from(NOTHING_TO_DO));
    }
    let now = Utc::now;
    let deadline = config.wake.claim_timeout;
    let mut tried: Vec<TaskId> = Vec::new();
    loop {
        let view = QueueView::read(tree, &crate::keyring(config, tree)?);
        // A claim of ours not yet confirmed (an earlier run stopped waiting) comes first.
        let pending = view
            .claims
            .values()
            .find(|c| {
                &c.pc == pc && !view.done.contains_key(&c.task_id) && !tried.contains(&c.task_id)
            })
            .and_then(|c| view.tasks.get(&c.task_id));
        let task = match pending.or_else(|| {
            view.listing()
                .into_iter()
                .filter(|(t, s)| {
                    *s == trinity_core::queue::TaskState::Queued
                        && !tried.contains(&t.id)
                        && trinity_core::queue::role_fits(t, &config.roles)
                })
                .map(|(t, _)| t)
                .next()
        }) {
            Some(t) => t.clone(),
            None => {
                if json {
                    println!("null");
                } else {
                    println!("nothing to do: no queued task is ready for {pc}");
                }
                return Ok(ExitCode::from(NOTHING_TO_DO));
            }
        };
        tried.push(task.id.clone());
        let claim = Claim {
            format_version: 1,
            task_id: task.id.clone(),
            pc: pc.clone(),
            claimed_at: now(),
            epoch: 0,
            handoff: None,
        };
        match fsio::create(&tree.claim_file(&task.id), &claim) {
            Ok(()) => {}
            // Ours from an earlier run, or another PC's that arrived meanwhile: judged below.
            Err(SaveError::Io(e)) if e.is_already_exists() => {}
            Err(e) => return Err(e).context("failed to write the claim"),
        }
        // Taken once the claim is in place, not before: a git-sync cycle that began between
        // an earlier moment and the write would not have seen the file, yet would count as
        // having put it on the remote — and two PCs could both win the task.
        let written_at = now();
        if !wait_until_on_remote(config, tree, written_at, deadline)? {
            bail!(
                "the claim on {} did not reach the remote within {}: is git-sync running? \
                 (`trinity work next` again picks it up where it stopped)",
                task.id,
                humantime::format_duration(deadline)
            );
        }
        match fsio::load::<Claim>(&tree.claim_file(&task.id)) {
            Ok(c) if &c.value.pc == pc => {
                make_current(tree, pc, &task)?;
                print_task(&task, json, "claimed")?;
                return Ok(ExitCode::SUCCESS);
            }
            Ok(c) => eprintln!(
                "{} was claimed by {} first; trying the next task",
                task.id, c.value.pc
            ),
            Err(e) => eprintln!(
                "the claim on {} is unreadable ({e}); trying the next task",
                task.id
            ),
        }
    }
}

/// Whether a change written at `written_at` is on the remote (at once without git), polling
/// git-sync's report until `deadline`.
fn wait_until_on_remote(
    config: &Config,
    tree: &Tree,
    written_at: DateTime<Utc>,
    deadline: Duration,
) -> anyhow::Result<bool> {
    if config.sync.mode == SyncMode::None {
        return Ok(true);
    }
    let start = Instant::now();
    let mut said = false;
    loop {
        if SyncState::load(tree).is_some_and(|s| s.has_reached_remote(written_at)) {
            return Ok(true);
        }
        if start.elapsed() > deadline {
            return Ok(false);
        }
        if !said && start.elapsed() > Duration::from_secs(2) {
            eprintln!("waiting for git-sync to put the claim on the remote…");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn make_current(tree: &Tree, pc: &PcId, task: &Task) -> anyhow::Result<()> {
    let now = Utc::now();
    let mut refused = None;
    pcfiles::update_instance(tree, pc, now, |current| {
        let from = current.map_or(InstanceState::Standby, |c| c.state);
        if from != InstanceState::Active
            && let Err(e) = state::transition(from, InstanceState::Active)
        {
            refused = Some(e.to_string());
            return None;
        }
        let mut next = current.cloned().unwrap_or(InstanceStatus {
            format_version: 1,
            pc: pc.clone(),
            state: InstanceState::Standby,
            since: now,
            current_work: None,
            claimed_tasks: Vec::new(),
            handoff: None,
            epoch: 0,
        });
        if next.state != InstanceState::Active {
            next.state = InstanceState::Active;
            next.since = now;
            next.handoff = None;
        }
        next.current_work = Some(CurrentWork::new(task.id.clone()));
        if !next.claimed_tasks.contains(&task.id) {
            next.claimed_tasks.push(task.id.clone());
        }
        Some(next)
    })
    .context("failed to update this PC's instance file")?;
    if let Some(why) = refused {
        bail!("{pc} cannot take work now: {why}");
    }
    Ok(())
}

fn print_task(task: &Task, json: bool, what: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(task)?);
        return Ok(());
    }
    println!("{what}: {}", task.id);
    println!("priority: {}", task.priority.as_str());
    if !task.dependencies.is_empty() {
        let deps: Vec<&str> = task.dependencies.iter().map(TaskId::as_str).collect();
        println!("after:    {}", deps.join(", "));
    }
    println!("{}", task.description);
    Ok(())
}

/// The task a progress or done report is about, held by this PC.
fn held_task(
    config: &Config,
    tree: &Tree,
    pc: &PcId,
    given: Option<String>,
) -> anyhow::Result<TaskId> {
    let text = given
        .or_else(|| {
            std::env::var("TRINITY_TASK_ID")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .or_else(|| {
            instance(tree, pc)
                .and_then(|i| i.current_work)
                .map(|w| w.task_id.to_string())
        })
        .context(
            "which task? give --task ID (or set TRINITY_TASK_ID); this PC has no current work",
        )?;
    let id =
        TaskId::new(&text).map_err(|e| anyhow::anyhow!("{text:?} is not a valid task id: {e}"))?;
    let view = QueueView::read(tree, &crate::keyring(config, tree)?);
    if !view.tasks.contains_key(&id) && !view.done.contains_key(&id) {
        bail!("no task {id} in the queue");
    }
    if view.done.contains_key(&id) {
        bail!("task {id} is already done");
    }
    match view.claims.get(&id) {
        Some(c) if &c.pc == pc => Ok(id),
        Some(c) => bail!("task {id} is claimed by {}, not by {pc}", c.pc),
        None => bail!("{pc} holds no claim on task {id} (take it with `trinity work next`)"),
    }
}

/// `50`, `50%` → `50%`; a percentage outside 0–100 is refused; words are kept as they are.
fn normalize_progress(text: &str) -> anyhow::Result<String> {
    let t = text.trim();
    let number = t.strip_suffix('%').unwrap_or(t).trim();
    match number.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(format!("{number}%")),
        Ok(_) => bail!("progress {t} is outside 0-100%"),
        Err(_) if t.ends_with('%') => bail!("progress {t:?} is not a percentage"),
        Err(_) if t.is_empty() => bail!("progress is empty"),
        Err(_) => Ok(t.to_owned()),
    }
}

fn progress(config: &Config, tree: &Tree, pc: &PcId, a: ProgressArgs) -> anyhow::Result<ExitCode> {
    let id = held_task(config, tree, pc, a.task)?;
    let pct = a.progress.as_deref().map(normalize_progress).transpose()?;
    if pct.is_none() && a.done.is_empty() && a.next.is_none() && a.note.is_none() {
        bail!("nothing to report: give --progress, --done, --next or --note");
    }
    let now = Utc::now();
    let updated = pcfiles::update_instance(tree, pc, now, |current| {
        let mut next = current.cloned()?;
        let mut work = match next.current_work.take() {
            Some(w) if w.task_id == id => w,
            _ => CurrentWork::new(id.clone()),
        };
        if let Some(p) = &pct {
            work.progress = p.clone();
        }
        if let Some(note) = &a.note {
            let base = work.progress.split(" — ").next().unwrap_or("").to_owned();
            work.progress = if base.is_empty() {
                note.clone()
            } else {
                format!("{base} — {note}")
            };
        }
        for d in &a.done {
            if !work.completed_subtasks.contains(d) {
                work.completed_subtasks.push(d.clone());
            }
        }
        if a.next.is_some() {
            work.next_subtask = a.next.clone();
        } else if work
            .next_subtask
            .as_ref()
            .is_some_and(|n| a.done.contains(n))
        {
            work.next_subtask = None;
        }
        if !next.claimed_tasks.contains(&id) {
            next.claimed_tasks.push(id.clone());
        }
        next.current_work = Some(work);
        Some(next)
    })
    .context("failed to update this PC's instance file")?;
    let Some(work) = updated.and_then(|i| i.current_work) else {
        bail!("{pc} has no instance file yet: take work with `trinity work next` first");
    };
    println!(
        "{}: {}{}{}",
        work.task_id,
        if work.progress.is_empty() {
            "(no progress given)"
        } else {
            &work.progress
        },
        if work.completed_subtasks.is_empty() {
            String::new()
        } else {
            format!("; done: {}", work.completed_subtasks.join(", "))
        },
        work.next_subtask
            .map(|n| format!("; next: {n}"))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

fn done(config: &Config, tree: &Tree, pc: &PcId, a: DoneArgs) -> anyhow::Result<ExitCode> {
    let id = held_task(config, tree, pc, a.task)?;
    let now = Utc::now();
    let verified = tree.lease_file().is_file();
    let finished = instance(tree, pc)
        .and_then(|i| i.current_work)
        .filter(|w| w.task_id == id);
    // The code goes with the submission, so the coordinator verifies exactly this work.
    let code = if verified {
        snapshot_code(config, &id)
    } else {
        None
    };
    let record = Done {
        format_version: 1,
        task_id: id.clone(),
        pc: pc.clone(),
        finished_at: now,
        outcome: Outcome::Completed,
        summary: a.summary.clone(),
        commit: code.as_ref().map(|c| c.wip_commit.clone()),
    };
    fsio::create(&tree.done_file(&id), &record)
        .with_context(|| format!("failed to write the result of {id}"))?;
    // The result is what counts from now on; the claim has served its purpose.
    match std::fs::remove_file(tree.claim_file(&id)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("warning: the claim on {id} stays: {e}"),
    }
    let submission = if verified {
        let mut work = finished.unwrap_or(CurrentWork::new(id.clone()));
        work.progress = if a.summary.is_empty() {
            "done".to_owned()
        } else {
            format!("done — {}", a.summary)
        };
        work.next_subtask = None;
        work.code = code;
        let h = Handoff {
            format_version: 1,
            from_pc: pc.clone(),
            to_pc: pc.clone(),
            timestamp: now,
            reason: HandoffReason::WorkComplete,
            task_queue: Vec::new(),
            current_work: Some(work),
            credit_state: None,
            epoch: None,
            authored_by: None,
            leader_epoch: None,
        };
        let hid = h.id().context("cannot name the submission")?;
        fsio::create(&tree.handoff_file(&hid), &h)
            .with_context(|| format!("failed to submit {id} for verification"))?;
        Some(hid)
    } else {
        None
    };
    pcfiles::update_instance(tree, pc, now, |current| {
        let mut next = current.cloned()?;
        next.claimed_tasks.retain(|t| t != &id);
        if next.current_work.as_ref().is_some_and(|w| w.task_id == id) {
            next.current_work = None;
        }
        let idle = next.current_work.is_none() && next.claimed_tasks.is_empty();
        let working = matches!(
            next.state,
            InstanceState::Active | InstanceState::Remediation
        );
        if let Some(hid) = &submission {
            if working {
                next.state = InstanceState::HandoffReady;
                next.since = now;
                next.handoff = Some(hid.clone());
            }
        } else if next.state == InstanceState::Active && idle {
            next.state = InstanceState::Standby;
            next.since = now;
        }
        Some(next)
    })
    .context("failed to update this PC's instance file")?;
    println!("done: {id}");
    if let Some(hid) = submission {
        println!(
            "submitted for verification: {hid}; the coordinator's verdict comes by wake signal"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A snapshot of the agent's code for `task`, when agent.workdir is a git checkout.
fn snapshot_code(config: &Config, task: &TaskId) -> Option<trinity_core::schema::CodeSnapshot> {
    let workdir = config.agent.workdir.trim();
    if workdir.is_empty() || !Path::new(workdir).join(".git").exists() {
        return None;
    }
    let pc = config.pc.as_ref()?;
    match trinity_core::code::snapshot(Path::new(workdir), task, pc, &config.work.remote) {
        Ok(snap) => {
            if !snap.pushed {
                eprintln!(
                    "warning: the code snapshot {} could not be pushed: {}",
                    snap.wip_commit,
                    snap.note.as_deref().unwrap_or("")
                );
            }
            Some(snap)
        }
        Err(e) => {
            eprintln!("warning: the code was not snapshotted: {e}");
            None
        }
    }
}
