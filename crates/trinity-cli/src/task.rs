//! `trinity task`: putting work into the fleet's queue and looking at it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use trinity_core::queue::{self, QueueView};
use trinity_core::schema::{Priority, Schema, Task};
use trinity_core::trust::Keyring;
use trinity_core::{PcId, TaskId, Tree, fsio};

/// Add tasks to the queue, list them, show one.
#[derive(Debug, Args)]
pub(crate) struct TaskArgs {
    #[command(subcommand)]
    command: TaskCommand,
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    /// Queue a task (spawn_queue/ID.json); git-sync carries it to the fleet.
    Add(AddArgs),
    /// Every task with its state (queued, blocked, claimed by a PC, done), priority and age.
    List(ListArgs),
    /// One task: its fields, state, claim and result.
    Show(ShowArgs),
    /// Queue many tasks from a JSON list or a TOML file of [[task]] tables (all or none).
    ///
    /// Each entry: id, description, and optionally priority, depends_on (task ids, also
    /// within the file) and role.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
struct AddArgs {
    /// The task's id: letters, digits, '-', '_', '.' (it names the file)
    id: String,
    /// What to do, for the agent and for people
    #[arg(long, short = 'd')]
    description: String,
    /// How urgent
    #[arg(long, short = 'p', value_enum, default_value = "normal")]
    priority: PriorityArg,
    /// A task that must be done first (repeat for several)
    #[arg(long = "depends-on", value_name = "ID")]
    depends_on: Vec<String>,
    /// The kind of PC that should take it (PCs with `roles` in their config take only theirs)
    #[arg(long)]
    role: Option<String>,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// The task's id
    id: String,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// A .json file (a list of tasks) or a .toml file ([[task]] tables)
    file: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PriorityArg {
    Critical,
    High,
    Normal,
    Medium,
    Low,
}

impl From<PriorityArg> for Priority {
    fn from(p: PriorityArg) -> Self {
        match p {
            PriorityArg::Critical => Priority::Critical,
            PriorityArg::High => Priority::High,
            PriorityArg::Normal => Priority::Normal,
            PriorityArg::Medium => Priority::Medium,
            PriorityArg::Low => Priority::Low,
        }
    }
}

/// One entry of an import file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportEntry {
    id: String,
    description: String,
    #[serde(default)]
    priority: Priority,
    #[serde(default, alias = "dependencies")]
    depends_on: Vec<String>,
    #[serde(default)]
    role: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlImport {
    task: Vec<ImportEntry>,
}

pub(crate) fn run(args: TaskArgs, config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (config, tree) = crate::load_tree(config_path)?;
    let keyring = crate::keyring(&config, &tree)?;
    match args.command {
        TaskCommand::Add(a) => {
            let pc = config.require_pc()?.clone();
            let task = new_task(
                &pc,
                &a.id,
                a.description,
                a.priority.into(),
                &a.depends_on,
                a.role,
            )?;
            add(&tree, &keyring, vec![task])
        }
        TaskCommand::Import(a) => {
            let pc = config.require_pc()?.clone();
            let tasks = read_import(&a.file, &pc)?;
            add(&tree, &keyring, tasks)
        }
        TaskCommand::List(a) => list(&tree, &keyring, a.json),
        TaskCommand::Show(a) => show(&tree, &keyring, &a.id, a.json),
    }
}

fn task_id(text: &str) -> anyhow::Result<TaskId> {
    TaskId::new(text).map_err(|e| anyhow::anyhow!("{text:?} is not a valid task id: {e}"))
}

fn new_task(
    pc: &PcId,
    id: &str,
    description: String,
    priority: Priority,
    depends_on: &[String],
    role: Option<String>,
) -> anyhow::Result<Task> {
    if description.trim().is_empty() {
        bail!("task {id}: the description is empty");
    }
    let task = Task {
        format_version: Task::FORMAT_VERSION,
        id: task_id(id)?,
        priority,
        description,
        created_at: Utc::now(),
        created_by: pc.clone(),
        dependencies: depends_on
            .iter()
            .map(|d| task_id(d))
            .collect::<anyhow::Result<_>>()?,
        role,
    };
    let problems = task.check();
    if !problems.is_empty() {
        bail!("task {id}: {}", problems.join("; "));
    }
    Ok(task)
}

fn read_import(file: &Path, pc: &PcId) -> anyhow::Result<Vec<Task>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("failed to read {}", file.display()))?;
    let toml = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let entries: Vec<ImportEntry> = if toml {
        toml::from_str::<TomlImport>(&text)
            .with_context(|| format!("{} is not a TOML list of [[task]] tables", file.display()))?
            .task
    } else {
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON list of tasks", file.display()))?
    };
    if entries.is_empty() {
        bail!("{} lists no task", file.display());
    }
    entries
        .into_iter()
        .map(|e| new_task(pc, &e.id, e.description, e.priority, &e.depends_on, e.role))
        .collect()
}

/// Checks every task against the queue and each other, then creates them all.
fn add(tree: &Tree, keyring: &Keyring, tasks: Vec<Task>) -> anyhow::Result<ExitCode> {
    let view = QueueView::read(tree, keyring);
    if let Err(problems) = view.check_new(&tasks) {
        for p in &problems {
            eprintln!("error: {p}");
        }
        bail!(
            "nothing was added ({} problem{})",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
    }
    for task in &tasks {
        fsio::create(&tree.task_file(&task.id), task)
            .with_context(|| format!("failed to queue task {}", task.id))?;
    }
    for task in &tasks {
        let state = QueueView::read(tree, keyring).state(task);
        println!(
            "queued {} ({}): {}",
            task.id,
            task.priority.as_str(),
            state.describe()
        );
    }
    if tasks.len() > 1 {
        println!("{} tasks added", tasks.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn list(tree: &Tree, keyring: &Keyring, json: bool) -> anyhow::Result<ExitCode> {
    let view = QueueView::read(tree, keyring);
    let now = Utc::now();
    let listing = view.listing();
    if json {
        let rows: Vec<serde_json::Value> = listing
            .iter()
            .map(|(t, s)| {
                serde_json::json!({
                    "id": t.id,
                    "priority": t.priority,
                    "state": s,
                    "role": t.role,
                    "dependencies": t.dependencies,
                    "created_at": t.created_at,
                    "created_by": t.created_by,
                    "description": t.description,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if listing.is_empty() {
        println!("the queue is empty: add work with `trinity task add ID --description TEXT`");
    } else {
        let width = listing
            .iter()
            .map(|(t, _)| t.id.as_str().len())
            .max()
            .unwrap_or(2)
            .max(4);
        println!("{:<width$}  {:<8}  {:<5}  STATE", "TASK", "PRIORITY", "AGE");
        for (t, s) in &listing {
            let role = t
                .role
                .as_deref()
                .map(|r| format!(" [{r}]"))
                .unwrap_or_default();
            println!(
                "{:<width$}  {:<8}  {:<5}  {}{role}",
                t.id.as_str(),
                t.priority.as_str(),
                queue::age(t, now),
                s.describe()
            );
        }
    }
    for problem in &view.unreadable {
        eprintln!("warning: {problem}");
    }
    Ok(ExitCode::SUCCESS)
}

fn show(tree: &Tree, keyring: &Keyring, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let id = task_id(id)?;
    let view = QueueView::read(tree, keyring);
    let Some(task) = view.tasks.get(&id) else {
        if view.done.contains_key(&id) {
            bail!("task {id} is no longer queued; its result is in done/{id}.json");
        }
        bail!("no task {id} in the queue (`trinity task list` shows them all)");
    };
    let state = view.state(task);
    if json {
        let value = serde_json::json!({
            "task": task,
            "state": state,
            "claim": view.claims.get(&id),
            "done": view.done.get(&id),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("task:        {}", task.id);
    println!("state:       {}", state.describe());
    println!("priority:    {}", task.priority.as_str());
    if let Some(role) = &task.role {
        println!("role:        {role}");
    }
    if !task.dependencies.is_empty() {
        let deps: Vec<String> = task
            .dependencies
            .iter()
            .map(|d| {
                let s = match view.tasks.get(d) {
                    Some(t) => view.state(t).describe(),
                    None if view.is_done(d) => "done".to_owned(),
                    None => "unknown".to_owned(),
                };
                format!("{d} ({s})")
            })
            .collect();
        println!("depends on:  {}", deps.join(", "));
    }
    println!(
        "created:     {} by {} ({} ago)",
        task.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        task.created_by,
        queue::age(task, Utc::now())
    );
    if let Some(c) = view.claims.get(&id) {
        println!(
            "claimed:     {} by {}",
            c.claimed_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            c.pc
        );
    }
    if let Some(d) = view.done.get(&id) {
        println!(
            "finished:    {} by {}",
            d.finished_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            d.pc
        );
        if !d.summary.is_empty() {
            println!("summary:     {}", d.summary);
        }
    }
    println!("description: {}", task.description);
    Ok(ExitCode::SUCCESS)
}
