//! `trinity init`: join this PC to a fleet.
//!
//! Clones the state repository's `trinity` branch into the state directory. When the remote has
//! no such branch yet, this PC creates it with `fleet.toml` and `.gitignore` and pushes it; if
//! another PC won that race, the push is refused and this PC clones the winner's branch
//! instead (fleet.toml is a compare-and-swap file). Then it writes the local config file.
//! Running it again with the same arguments changes nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use trinity_core::PcId;
use trinity_core::config::DEFAULT_CONFIG_FILE;
use trinity_core::fsio;
use trinity_core::gitcmd::{Git, is_local_path};
use trinity_core::layout::{GITIGNORE, Tree};
use trinity_core::schema::{self, Fleet, Schema};

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// This PC's id in the fleet
    #[arg(long, value_name = "PC")]
    pc: PcId,
    /// The state repository: a path to a bare repository, or a git URL
    #[arg(long, value_name = "REMOTE")]
    remote: String,
    /// Where to put this PC's state tree (a clone of the state repository)
    #[arg(long, value_name = "DIR", default_value = ".trinity")]
    state_dir: PathBuf,
    /// The fleet in rotation order, when creating it (a joining PC gets the existing fleet)
    #[arg(long, value_name = "PC,PC,...", value_delimiter = ',')]
    fleet: Vec<PcId>,
    /// The preferred coordinator, when creating the fleet [default: the last PC of --fleet]
    #[arg(long, value_name = "PC")]
    coordinator: Option<PcId>,
    /// The branch of the state repository
    #[arg(long, default_value = "trinity")]
    branch: String,
    /// Create the remote as a bare repository if it is a local path that does not exist
    #[arg(long)]
    create_remote: bool,
    /// Trust this member's key (PC=KEY, as `trinity fleet keys` prints it on that member)
    /// instead of the founding key found in the state repository; repeatable
    #[arg(long, value_name = "PC=KEY")]
    trust: Vec<String>,
}

pub(crate) fn run(args: InitArgs, config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let remote = normalize_remote(&args.remote)?;
    let state_dir = absolute(&args.state_dir)?;
    let config_path = config_path
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));

    // Check the config file first, so that a conflicting one stops us before any cloning.
    let config_text = config_file_text(&args.pc, &state_dir, &remote, &args.branch);
    let config_state =
        check_existing_config(&config_path, &args.pc, &state_dir, &remote, &args.branch)?;
    create_local_remote(&remote, args.create_remote)?;

    let (tree_state, fleet) = ensure_clone(&args, &remote, &state_dir)?;
    if !args.fleet.is_empty() && args.fleet != fleet.pcs {
        eprintln!(
            "warning: the state repository already has the fleet {}; --fleet {} is ignored",
            fleet.pcs_joined(),
            args.fleet
                .iter()
                .map(PcId::as_str)
                .collect::<Vec<_>>()
                .join(",")
        );
    }

    if config_state == ConfigState::Missing {
        if let Some(dir) = config_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
        }
        fsio::write_atomic(&config_path, config_text.as_bytes())?;
    }

    let signing = crate::fleet::enrol(&Tree::new(&state_dir), &args.pc, &args.trust)?;
    println!("state tree: {} ({tree_state})", state_dir.display());
    println!(
        "fleet:      {} (coordinator {})",
        fleet.pcs_joined(),
        fleet.coordinator
    );
    println!(
        "config:     {} ({})",
        config_path.display(),
        if config_state == ConfigState::Missing {
            "written"
        } else {
            "unchanged"
        }
    );
    for line in signing {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .context("failed to read the current directory")?
            .join(path)
    })
}

/// Local paths become absolute: the config file may be read from another directory.
fn normalize_remote(remote: &str) -> anyhow::Result<String> {
    if !is_local_path(remote) || remote.starts_with("file://") {
        return Ok(remote.to_owned());
    }
    Ok(absolute(Path::new(remote))?.to_string_lossy().into_owned())
}

/// A local remote that does not exist is created with `--create-remote`, else refused.
fn create_local_remote(remote: &str, create: bool) -> anyhow::Result<()> {
    if !is_local_path(remote) || remote.starts_with("file://") {
        return Ok(());
    }
    let path = Path::new(remote);
    if path.exists() {
        return Ok(());
    }
    if !create {
        bail!(
            "the remote {remote} does not exist; create it with `git init --bare {remote}` or pass --create-remote"
        );
    }
    Git::new()
        .run([
            std::ffi::OsStr::new("init"),
            "--bare".as_ref(),
            "-q".as_ref(),
            path.as_os_str(),
        ])
        .context("failed to create the remote")?;
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum ConfigState {
    Missing,
    Same,
}

fn config_file_text(pc: &PcId, state_dir: &Path, remote: &str, branch: &str) -> String {
    let q = |s: &str| toml_string(s);
    format!(
        "# Written by `trinity init`. Every key is documented in deploy/config/trinity.example.toml.\n\
         pc = {}\n\
         state_dir = {}\n\
         \n\
         [sync]\n\
         remote = {}\n\
         branch = {}\n",
        q(pc.as_str()),
        q(&state_dir.to_string_lossy()),
        q(remote),
        q(branch),
    )
}

fn toml_string(s: &str) -> String {
    // A JSON string is a valid TOML basic string (same escapes, `\uXXXX` included).
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

fn check_existing_config(
    path: &Path,
    pc: &PcId,
    state_dir: &Path,
    remote: &str,
    branch: &str,
) -> anyhow::Result<ConfigState> {
    if !path.exists() {
        return Ok(ConfigState::Missing);
    }
    let sources = trinity_core::config::Sources {
        file: Some(path.to_owned()),
        file_required: true,
        env: Vec::new(),
    };
    let existing = trinity_core::config::load(&sources)
        .with_context(|| format!("{} exists but cannot be read", path.display()))?
        .config;
    let mut differences = Vec::new();
    if existing.pc.as_ref() != Some(pc) {
        differences.push(format!(
            "pc is {}",
            existing
                .pc
                .as_ref()
                .map_or("not set".to_owned(), |p| p.to_string())
        ));
    }
    if existing.state_dir != state_dir {
        differences.push(format!("state_dir is {}", existing.state_dir.display()));
    }
    if existing.sync.remote != remote {
        differences.push(format!("sync.remote is {:?}", existing.sync.remote));
    }
    if existing.sync.branch != branch {
        differences.push(format!("sync.branch is {:?}", existing.sync.branch));
    }
    if differences.is_empty() {
        Ok(ConfigState::Same)
    } else {
        bail!(
            "{} already exists and differs ({}); edit or remove it, or pass --config to write another file",
            path.display(),
            differences.join(", ")
        )
    }
}

/// Reads the tree's fleet and checks that `pc` is a member.
fn member_fleet(tree_dir: &Path, pc: &PcId) -> anyhow::Result<Fleet> {
    let fleet = fsio::load::<Fleet>(&Tree::new(tree_dir).fleet_file())
        .context("the state repository's fleet.toml is not valid")?
        .value;
    if !fleet.contains(pc) {
        bail!(
            "{pc} is not a member of this fleet ({}); add it to fleet.toml in the state repository first",
            fleet.pcs_joined()
        );
    }
    Ok(fleet)
}

/// A directory that is removed when dropped, unless it was moved into place.
struct Staging {
    path: PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.path.exists() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Makes sure `state_dir` is a clone of the remote's branch with `pc` in its fleet. A new
/// clone is made in a staging directory beside `state_dir` and moved into place only when
/// everything checked out, so a failed init leaves nothing behind. Returns what was done.
fn ensure_clone(
    args: &InitArgs,
    remote: &str,
    state_dir: &Path,
) -> anyhow::Result<(&'static str, Fleet)> {
    if Tree::new(state_dir).git_dir().exists() {
        let git = Git::in_dir(state_dir);
        let Ok(origin) = git.run(["remote", "get-url", "origin"]) else {
            bail!(
                "{} is a git repository without an `origin` remote (left by an interrupted `trinity init`?); remove it and run init again",
                state_dir.display()
            );
        };
        if origin.trim() != remote {
            bail!(
                "{} is already a clone of {:?}, not of {remote:?}",
                state_dir.display(),
                origin.trim()
            );
        }
        let head = git
            .run(["symbolic-ref", "--short", "HEAD"])
            .unwrap_or_default();
        if head.trim() != args.branch {
            bail!(
                "{} is on branch {:?}, expected {:?}",
                state_dir.display(),
                head.trim(),
                args.branch
            );
        }
        return Ok(("already set up", member_fleet(state_dir, &args.pc)?));
    }
    if state_dir.exists()
        && fs::read_dir(state_dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} exists, is not empty and is not a state tree; choose another --state-dir",
            state_dir.display()
        );
    }

    let name = state_dir
        .file_name()
        .map_or("state".into(), |n| n.to_string_lossy());
    let staging = Staging {
        path: state_dir.with_file_name(format!(".{name}.init-{}", std::process::id())),
    };
    if staging.path.exists() {
        fs::remove_dir_all(&staging.path)?;
    }
    eprintln!("contacting {remote} ...");
    let heads = Git::new()
        .run(["ls-remote", "--heads", remote, &args.branch])
        .with_context(|| format!("failed to reach the remote {remote}"))?;
    let outcome = if !heads.trim().is_empty() {
        eprintln!("cloning branch {} ...", args.branch);
        clone(remote, &args.branch, &staging.path, &args.pc)?;
        "cloned"
    } else {
        // An empty remote: create the branch with the fleet, and push it. If someone else
        // pushed first, their fleet wins: clone it.
        let fleet = new_fleet(args)?;
        eprintln!(
            "the remote has no branch {}: creating it with the fleet {}",
            args.branch,
            fleet.pcs_joined()
        );
        create_branch(&staging.path, &args.branch, &fleet, &args.pc)?;
        let git = Git::in_dir(&staging.path);
        git.run(["remote", "add", "origin", remote])?;
        match git.run([
            "push",
            "-q",
            "origin",
            &format!("HEAD:refs/heads/{}", args.branch),
        ]) {
            Ok(_) => {
                git.run(["fetch", "-q", "origin"])?;
                git.run([
                    "branch",
                    "-q",
                    "--set-upstream-to",
                    &format!("origin/{}", args.branch),
                ])?;
                "created the fleet"
            }
            Err(e) if is_race(e.stderr()) => {
                fs::remove_dir_all(&staging.path)?;
                clone(remote, &args.branch, &staging.path, &args.pc)?;
                "cloned (another PC created the fleet first)"
            }
            Err(e) => return Err(e).context("failed to push the new fleet"),
        }
    };
    let fleet = member_fleet(&staging.path, &args.pc)?;
    if state_dir.exists() {
        fs::remove_dir(state_dir)
            .with_context(|| format!("failed to replace the empty {}", state_dir.display()))?;
    }
    if let Some(parent) = state_dir.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::rename(&staging.path, state_dir)
        .with_context(|| format!("failed to move the new clone into {}", state_dir.display()))?;
    Ok((outcome, fleet))
}

/// Another PC created the remote's branch first (or pushed to it meanwhile).
fn is_race(stderr: &str) -> bool {
    use trinity_core::gitcmd::{Failure, classify_failure};
    classify_failure(stderr) == Failure::Race || stderr.contains("already exists")
}

fn new_fleet(args: &InitArgs) -> anyhow::Result<Fleet> {
    if args.fleet.is_empty() {
        bail!("the remote has no fleet yet: pass --fleet PC1,PC2,PC3 to create it");
    }
    let coordinator = match &args.coordinator {
        Some(c) => c.clone(),
        None => args.fleet.last().cloned().context("--fleet is empty")?,
    };
    let fleet = Fleet::new(args.fleet.clone(), coordinator);
    let problems = fleet.check();
    if !problems.is_empty() {
        bail!("invalid fleet: {}", problems.join("; "));
    }
    Ok(fleet)
}

/// Per-clone settings: an identity for git-sync's commits (so no global git config is needed),
/// and no line-ending conversion of the tree's files.
fn configure_clone(git: &Git, pc: &PcId) -> anyhow::Result<()> {
    git.run(["config", "user.name", &format!("trinity {pc}")])?;
    git.run([
        "config",
        "user.email",
        &format!("{}@trinity.invalid", pc.as_str().to_ascii_lowercase()),
    ])?;
    git.run(["config", "core.autocrlf", "false"])?;
    Ok(())
}

fn clone(remote: &str, branch: &str, state_dir: &Path, pc: &PcId) -> anyhow::Result<()> {
    let dir = state_dir.as_os_str();
    Git::new()
        .run([
            std::ffi::OsStr::new("clone"),
            "-q".as_ref(),
            "--branch".as_ref(),
            branch.as_ref(),
            "--single-branch".as_ref(),
            remote.as_ref(),
            dir,
        ])
        .with_context(|| format!("failed to clone {remote}"))?;
    configure_clone(&Git::in_dir(state_dir), pc)
}

fn create_branch(state_dir: &Path, branch: &str, fleet: &Fleet, pc: &PcId) -> anyhow::Result<()> {
    fs::create_dir_all(state_dir)
        .with_context(|| format!("failed to create {}", state_dir.display()))?;
    let git = Git::in_dir(state_dir);
    git.run(["init", "-q", "-b", branch])?;
    configure_clone(&git, pc)?;
    let tree = Tree::new(state_dir);
    let mut fleet_text = String::from(
        "# The fleet, in rotation order. Compare-and-swap: edit with care, the remote's version wins a race.\n",
    );
    fleet_text.push_str(std::str::from_utf8(&schema::to_bytes(fleet)?)?);
    fsio::write_new(&tree.fleet_file(), fleet_text.as_bytes())?;
    fsio::write_new(&tree.gitignore_file(), GITIGNORE.as_bytes())?;
    // The founding key, published with the fleet: the PCs that join pin it.
    crate::fleet::enrol(&tree, pc, &[])?;
    let keys = tree.relative(&tree.keys_dir())?;
    let recipients = tree.relative(&tree.recipients_dir())?;
    git.run([
        "add",
        trinity_core::layout::FLEET_FILE,
        trinity_core::layout::GITIGNORE_FILE,
        &keys,
        &recipients,
    ])?;
    git.run([
        "commit",
        "-q",
        "-m",
        &format!(
            "fleet: {} (coordinator {})",
            fleet.pcs_joined(),
            fleet.coordinator
        ),
    ])?;
    Ok(())
}
