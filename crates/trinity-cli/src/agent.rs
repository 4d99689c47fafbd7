//! `trinity agent`: making Claude Code report by itself, through its hooks.
//!
//! `setup` prints (or, with `--write`, merges into the workdir's `.claude/settings.local.json`)
//! three hooks: at `SessionStart`, `trinity agent context` prints the work handed to this PC,
//! which Claude Code adds to the conversation; at `Stop` (each time the agent finishes a turn),
//! `trinity agent checkpoint` records the session id in this PC's current work, so a handoff
//! carries the right conversation; at `StopFailure` (a turn ended by an API error — a rate or
//! usage limit among them), `trinity agent stop-failure` tells the credit monitor to read the
//! transcript at once rather than at its next poll.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use trinity_core::queue::QueueView;
use trinity_core::schema::InstanceStatus;
use trinity_core::{fsio, pcfiles};

/// Claude Code hooks: the handoff's context at session start, a checkpoint after every turn.
#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Print the Claude Code settings (hooks) that make the agent report by itself.
    Setup(SetupArgs),
    /// For the SessionStart hook: print the work handed to this PC, for the agent to read.
    Context,
    /// For the Stop hook: record the agent's session id in this PC's current work (reads
    /// Claude Code's hook input from standard input).
    Checkpoint,
    /// For the StopFailure hook: a turn ended by an API error (a rate limit…); the credit
    /// monitor reads the transcript at once (reads the hook input from standard input).
    StopFailure,
}

#[derive(Debug, Args)]
struct SetupArgs {
    /// Merge the hooks into the workdir's .claude/settings.local.json instead of printing them
    #[arg(long)]
    write: bool,
    /// The project checkout [default: agent.workdir]
    #[arg(long)]
    workdir: Option<PathBuf>,
}

pub(crate) fn run(args: AgentArgs, config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    match args.command {
        AgentCommand::Setup(a) => setup(a, config_path),
        AgentCommand::Context => context(config_path),
        AgentCommand::Checkpoint => checkpoint(config_path),
        AgentCommand::StopFailure => stop_failure(config_path),
    }
}

/// The `trinity` program and the config file, as absolute paths for the hook commands.
fn hook_command(config_path: Option<&Path>, sub: &str) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find the trinity program")?;
    let config = match config_path {
        Some(p) => p.to_owned(),
        None => PathBuf::from("trinity.toml"),
    };
    let config = std::path::absolute(&config)
        .with_context(|| format!("cannot resolve {}", config.display()))?;
    Ok(format!(
        "{} --config {} agent {sub}",
        quote(&exe.to_string_lossy()),
        quote(&config.to_string_lossy())
    ))
}

/// Quotes a path for the shell Claude Code runs hook commands with.
fn quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/\\:._-".contains(&b))
    {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('"', "\\\""))
    }
}

fn hooks(config_path: Option<&Path>) -> anyhow::Result<Value> {
    Ok(json!({
        "SessionStart": [{"hooks": [{"type": "command", "command": hook_command(config_path, "context")?, "timeout": 30}]}],
        "Stop": [{"hooks": [{"type": "command", "command": hook_command(config_path, "checkpoint")?, "timeout": 30}]}],
        "StopFailure": [{"hooks": [{"type": "command", "command": hook_command(config_path, "stop-failure")?, "timeout": 30}]}],
    }))
}

fn setup(a: SetupArgs, config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let hooks = hooks(config_path)?;
    if !a.write {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "hooks": hooks }))?
        );
        eprintln!(
            "(add this to your project's .claude/settings.local.json, or run `trinity agent setup --write`)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let workdir = match a.workdir {
        Some(w) => w,
        None => {
            let config = crate::load_config(config_path)?;
            let w = config.agent.workdir.trim().to_owned();
            if w.is_empty() {
                bail!("agent.workdir is not set: give --workdir DIR (the project checkout)");
            }
            PathBuf::from(w)
        }
    };
    if !workdir.is_dir() {
        bail!("{} is not a directory", workdir.display());
    }
    let path = workdir.join(".claude").join("settings.local.json");
    let mut settings: Value = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON; fix it first", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let Some(root) = settings.as_object_mut() else {
        bail!("{} does not hold a JSON object", path.display());
    };
    let all = root.entry("hooks").or_insert_with(|| json!({}));
    let Some(all) = all.as_object_mut() else {
        bail!("`hooks` in {} is not an object", path.display());
    };
    for (event, entries) in hooks.as_object().into_iter().flatten() {
        let list = all.entry(event.clone()).or_insert_with(|| json!([]));
        let Some(list) = list.as_array_mut() else {
            bail!("`hooks.{event}` in {} is not a list", path.display());
        };
        // Trinity's own entries are replaced, anything else is kept.
        list.retain(|entry| {
            !entry["hooks"].as_array().is_some_and(|hs| {
                hs.iter().any(|h| {
                    h["command"].as_str().is_some_and(|c| {
                        c.contains(" agent context")
                            || c.contains(" agent checkpoint")
                            || c.contains(" agent stop-failure")
                    })
                })
            })
        });
        list.extend(entries.as_array().into_iter().flatten().cloned());
    }
    let text = serde_json::to_string_pretty(&settings)? + "\n";
    fsio::write_atomic(&path, text.as_bytes())?;
    println!("wrote the hooks into {}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn context(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (config, tree) = crate::load_tree(config_path)?;
    let pc = config.require_pc()?.clone();
    let instance = fsio::load::<InstanceStatus>(&tree.instance_file(&pc))
        .ok()
        .map(|d| d.value);
    let view = QueueView::read(&tree, &crate::keyring(&config, &tree)?);
    println!("# Trinity\n");
    println!(
        "You are the coding agent of {pc}, one PC of a Trinity fleet: when this PC runs out of API credit, your work goes to the next PC, which continues it."
    );
    match instance.as_ref().and_then(|i| i.current_work.as_ref()) {
        Some(work) => {
            println!("\n## Your current task: {}\n", work.task_id);
            if let Some(task) = view.tasks.get(&work.task_id) {
                println!("{}\n", task.description);
            }
            if !work.progress.is_empty() {
                println!("- progress so far: {}", work.progress);
            }
            if !work.completed_subtasks.is_empty() {
                println!("- steps done: {}", work.completed_subtasks.join(", "));
            }
            if let Some(next) = &work.next_subtask {
                println!("- next step: {next}");
            }
            if let Some(code) = &work.code {
                println!(
                    "- the code in progress was handed over as commit {} (branch trinity/work/{} here)",
                    code.wip_commit, work.task_id
                );
            }
        }
        None => println!("\nNo task is assigned to this PC yet: run `trinity work next`."),
    }
    if let Ok(file) = std::env::var("TRINITY_HANDOFF_FILE") {
        println!("\nThe handoff that brought the work here: {file}");
    }
    println!(
        "\n## Reporting\n\n- `trinity work progress --progress 60% --done STEP --next STEP` after each step\n- `trinity work done --summary \"…\"` when the task is finished\n- `trinity work next` for the next task (exit code 3: nothing to do)"
    );
    Ok(ExitCode::SUCCESS)
}

fn checkpoint(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (config, tree) = crate::load_tree(config_path)?;
    let pc = config.require_pc()?.clone();
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read the hook input")?;
    let hook: Value = serde_json::from_str(&input).unwrap_or(Value::Null);
    let session = hook["session_id"]
        .as_str()
        .filter(|s| trinity_core::code::is_session_id(s))
        .map(str::to_owned);
    pcfiles::update_instance(&tree, &pc, Utc::now(), |current| {
        let mut next = current.cloned()?;
        let work = next.current_work.as_mut()?;
        if session.is_some() {
            work.session.clone_from(&session);
        }
        Some(next)
    })
    .context("cannot update this PC's instance file")?;
    Ok(ExitCode::SUCCESS)
}

/// The StopFailure hook: writes what Claude Code said (the session, the error: `rate_limit`,
/// `billing_error`…) to `local/credit/poke.json`, which the credit monitor watches; it then
/// reads the transcript and the agent's output at once. Counting stays with the monitor, which
/// counts each refusal once whichever source reports it.
fn stop_failure(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (_, tree) = crate::load_tree(config_path)?;
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read the hook input")?;
    let hook: Value = serde_json::from_str(&input).unwrap_or(Value::Null);
    let short = |v: &Value| -> String { v.as_str().unwrap_or("").chars().take(200).collect() };
    let poke = json!({
        "at": Utc::now().to_rfc3339(),
        "session_id": short(&hook["session_id"]),
        "error": short(&hook["error"]),
    });
    let file = tree.credit_poke_file();
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fsio::write_atomic(&file, (poke.to_string() + "\n").as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
