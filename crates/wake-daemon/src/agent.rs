//! Starting the agent and finding out whether it still runs.
//!
//! The command comes from `[agent]` in the local config only — never from the synced tree — and
//! runs as an argument vector without a shell. The handoff reaches the agent through
//! environment variables, never through its command line, so nothing a remote PC writes can
//! become a command on this machine.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, UpdateKind};

/// The environment variable carrying the launch id.
pub const LAUNCH_ID_VAR: &str = "TRINITY_LAUNCH_ID";

/// Everything needed to start the agent once.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Working directory (`None`: the daemon's own).
    pub workdir: Option<PathBuf>,
    /// Variables added to the daemon's environment.
    pub env: Vec<(String, OsString)>,
    /// Where the agent's output goes (appended).
    pub log: PathBuf,
    /// Windows: a console window of its own.
    pub new_console: bool,
}

/// Why the agent could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// `agent.command` is empty.
    #[error("agent.command is empty: name the agent program in trinity.toml")]
    NoCommand,
    /// The program could not be started.
    #[error("failed to start the agent {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Starts the agent, detached from the daemon (its own process group, so stopping the daemon
/// does not stop it). A thread waits for it, so it never lingers as a zombie, and logs its exit.
pub fn spawn(launch: &Launch) -> Result<u32, LaunchError> {
    let (program, args) = launch.command.split_first().ok_or(LaunchError::NoCommand)?;
    let mut cmd = Command::new(program_path(program));
    cmd.args(args).envs(launch.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &launch.workdir {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::null());
    if let Some(dir) = launch.log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
    {
        Ok(out) => {
            let err = out
                .try_clone()
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null());
            cmd.stdout(Stdio::from(out)).stderr(err);
        }
        Err(_) => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    detach(&mut cmd, launch.new_console);
    let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = child.id();
    std::thread::Builder::new()
        .name(format!("agent-{pid}"))
        .spawn(move || match child.wait() {
            Ok(status) => tracing::info!(pid, %status, "the agent exited"),
            Err(e) => tracing::warn!(pid, error = %e, "cannot wait for the agent"),
        })
        .ok();
    Ok(pid)
}

/// The program to start. On Windows a bare name is looked up on PATH with every extension of
/// PATHEXT, not only `.exe` as the system does: `claude` as npm installs it is `claude.cmd`.
fn program_path(program: &str) -> PathBuf {
    if cfg!(windows) {
        trinity_core::program::find_on_path(
            program,
            std::env::var_os("PATH").as_deref(),
            std::env::var_os("PATHEXT").as_deref(),
        )
        .unwrap_or_else(|| PathBuf::from(program))
    } else {
        PathBuf::from(program)
    }
}

#[cfg(unix)]
fn detach(cmd: &mut Command, _new_console: bool) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
}

#[cfg(windows)]
fn detach(cmd: &mut Command, new_console: bool) {
    use std::os::windows::process::CommandExt;
    const CREATE_NEW_CONSOLE: u32 = 0x0000_0010;
    const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
    let flags = if new_console {
        CREATE_NEW_CONSOLE | CREATE_NEW_PROCESS_GROUP
    } else {
        CREATE_NEW_PROCESS_GROUP
    };
    cmd.creation_flags(flags);
}

#[cfg(not(any(unix, windows)))]
fn detach(_cmd: &mut Command, _new_console: bool) {}

fn carries(environ: &[OsString], launch_id: &str) -> bool {
    let want = format!("{LAUNCH_ID_VAR}={launch_id}");
    environ.iter().any(|e| e.to_str() == Some(want.as_str()))
}

fn alive(status: ProcessStatus) -> bool {
    !matches!(status, ProcessStatus::Zombie | ProcessStatus::Dead)
}

/// True when `pid` is alive and is the agent started with `launch_id` (not a process that
/// reused the pid).
pub fn is_running(pid: u32, launch_id: &str) -> bool {
    let mut sys = System::new();
    let pid = Pid::from_u32(pid);
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing().with_environ(UpdateKind::Always),
    );
    sys.process(pid)
        .is_some_and(|p| alive(p.status()) && carries(p.environ(), launch_id))
}

/// The process started with `launch_id`, if one is alive (after a crash between "about to
/// launch" and "launched" was journaled).
pub fn find(launch_id: &str) -> Option<u32> {
    let mut sys = System::new();
    sys.refresh_processes_specifics(
        ProcessesToUpdate::All,
        true,
        ProcessRefreshKind::nothing().with_environ(UpdateKind::Always),
    );
    sys.processes()
        .values()
        .find(|p| alive(p.status()) && carries(p.environ(), launch_id))
        .map(|p| p.pid().as_u32())
}

/// The directory the agent runs in: `agent.workdir`, relative to the config file's directory
/// when relative; `None` for the daemon's own.
pub fn workdir(configured: &str, base: Option<&Path>) -> Option<PathBuf> {
    let w = configured.trim();
    if w.is_empty() {
        return None;
    }
    let p = PathBuf::from(w);
    Some(match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p,
    })
}
