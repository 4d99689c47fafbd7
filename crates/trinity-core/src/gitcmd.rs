//! Running the `git` program non-interactively.
//!
//! gix does git-sync's local work, but some steps need the `git` program (push, and the
//! one-shot `trinity init`). Every invocation here runs with prompts disabled
//! (`GIT_TERMINAL_PROMPT=0`, ssh in batch mode, no credential-manager dialogs) and the C locale,
//! so that a missing credential fails at once instead of hanging, and messages can be matched.
//! A runner can also be given a deadline ([`Git::timeout`]), after which git is killed: a link
//! that stops answering mid-push must not hold a daemon forever.
//!
//! ssh runs as the user's git would run it ([`SshCommand::resolve`]: `GIT_SSH_COMMAND`,
//! `core.sshCommand`, `GIT_SSH`, or `ssh`), with `BatchMode` added for OpenSSH.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A failed git invocation.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The program could not be started.
    #[error("failed to run `{program}` (is git installed and on PATH?): {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// git did not finish within the runner's deadline and was killed.
    #[error("`git {args}` did not finish within {}s and was stopped (the remote stopped answering?)", .after.as_secs())]
    TimedOut {
        /// The arguments, space-separated.
        args: String,
        /// The deadline.
        after: Duration,
        /// What git printed on stderr before it was stopped.
        stderr: String,
    },
    /// git ran and failed.
    #[error("`git {args}` failed ({status}): {stderr}")]
    Failed {
        /// The arguments, space-separated.
        args: String,
        /// The exit status.
        status: String,
        /// What git printed on stderr, trimmed.
        stderr: String,
    },
}

impl GitError {
    /// git's stderr, when git ran.
    pub fn stderr(&self) -> &str {
        match self {
            GitError::Failed { stderr, .. } | GitError::TimedOut { stderr, .. } => stderr,
            GitError::Spawn { .. } => "",
        }
    }

    /// Whether git was stopped for taking too long.
    pub fn timed_out(&self) -> bool {
        matches!(self, GitError::TimedOut { .. })
    }
}

/// Which kind of ssh program a command runs, as git tells them apart (`ssh.variant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshVariant {
    /// OpenSSH (`ssh`): takes `-o` options, a port as `-p`, and passes `GIT_PROTOCOL` on.
    OpenSsh,
    /// PuTTY's `plink`/`putty`: a port as `-P`, no options.
    Putty,
    /// TortoiseGit's `tortoiseplink`: like PuTTY, plus `-batch`.
    TortoisePlink,
    /// Anything else: only `[user@]host command`.
    Simple,
}

impl SshVariant {
    /// The variant of a program, from its file name (`ssh`, `ssh.exe`, `plink.exe`…).
    pub fn of_program(program: &str) -> Self {
        let name = program
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or(program)
            .to_ascii_lowercase();
        let stem = name.strip_suffix(".exe").unwrap_or(&name);
        match stem {
            "ssh" => SshVariant::OpenSsh,
            "plink" | "putty" => SshVariant::Putty,
            "tortoiseplink" => SshVariant::TortoisePlink,
            _ => SshVariant::Simple,
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "ssh" => Some(SshVariant::OpenSsh),
            "plink" | "putty" => Some(SshVariant::Putty),
            "tortoiseplink" => Some(SshVariant::TortoisePlink),
            "simple" => Some(SshVariant::Simple),
            _ => None,
        }
    }
}

/// The ssh command git uses for a repository, as a command line for a shell (what
/// `GIT_SSH_COMMAND` holds), with its variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshCommand {
    /// The command line.
    pub command: String,
    /// Which program it is.
    pub variant: SshVariant,
}

/// Quotes `s` for a POSIX shell (what git runs `GIT_SSH_COMMAND` with) unless it needs none.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl SshCommand {
    /// The command git would run for `dir`'s repository: `GIT_SSH_COMMAND`, else
    /// `core.sshCommand`, else `GIT_SSH` (a program, quoted), else `ssh`; the variant from
    /// `GIT_SSH_VARIANT`, else `ssh.variant`, else the program's name.
    pub fn resolve(dir: Option<&Path>) -> Self {
        Self::resolve_with(|k| std::env::var(k).ok(), dir)
    }

    /// [`SshCommand::resolve`] with the environment read through `var`.
    pub fn resolve_with(var: impl Fn(&str) -> Option<String>, dir: Option<&Path>) -> Self {
        let (config_command, config_variant) = read_ssh_config(dir);
        let env = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let command = env("GIT_SSH_COMMAND")
            .or(config_command)
            .or_else(|| env("GIT_SSH").map(|p| shell_quote(&p)))
            .unwrap_or_else(|| "ssh".to_owned());
        let variant = env("GIT_SSH_VARIANT")
            .and_then(|v| SshVariant::parse(&v))
            .or(config_variant)
            .unwrap_or_else(|| SshVariant::of_program(&first_word(&command)));
        Self { command, variant }
    }

    /// The command with OpenSSH options appended (`-o Name=value` each); other variants are
    /// left as they are.
    pub fn with_options(&self, options: &[(&str, String)]) -> Self {
        if self.variant != SshVariant::OpenSsh {
            return self.clone();
        }
        let mut command = self.command.clone();
        for (name, value) in options {
            command.push_str(" -o ");
            command.push_str(&shell_quote(&format!("{name}={value}")));
        }
        Self {
            command,
            variant: self.variant,
        }
    }

    /// [`SshCommand::with_options`] with `BatchMode=yes`: never a prompt.
    pub fn batch(&self) -> Self {
        self.with_options(&[("BatchMode", "yes".to_owned())])
    }
}

/// The program a shell command line starts with (its first word, quotes removed).
fn first_word(command: &str) -> String {
    let t = command.trim_start();
    match t.chars().next() {
        Some(q @ ('\'' | '"')) => t[1..].split(q).next().unwrap_or("").to_owned(),
        _ => t.split_whitespace().next().unwrap_or("").to_owned(),
    }
}

/// `core.sshCommand` and `ssh.variant` of `dir`'s repository (and the user's configuration),
/// read with one git run.
fn read_ssh_config(dir: Option<&Path>) -> (Option<String>, Option<SshVariant>) {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let Ok(out) = cmd
        .args([
            "config",
            "--null",
            "--get-regexp",
            "^(core\\.sshcommand|ssh\\.variant)$",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return (None, None);
    };
    let mut command = None;
    let mut variant = None;
    for entry in String::from_utf8_lossy(&out.stdout).split('\0') {
        let Some((key, value)) = entry.split_once('\n') else {
            continue;
        };
        match key.to_ascii_lowercase().as_str() {
            "core.sshcommand" if !value.trim().is_empty() => command = Some(value.to_owned()),
            "ssh.variant" => variant = SshVariant::parse(value),
            _ => {}
        }
    }
    (command, variant)
}

/// git subcommands that may talk to a remote (and so run ssh).
fn is_network(subcommand: &OsStr) -> bool {
    [
        "push",
        "fetch",
        "ls-remote",
        "clone",
        "pull",
        "remote-https",
        "remote-http",
    ]
    .iter()
    .any(|c| subcommand == *c)
}

/// A git runner, optionally bound to a working directory.
#[derive(Debug, Clone)]
pub struct Git {
    program: PathBuf,
    dir: Option<PathBuf>,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    ssh: Option<SshCommand>,
    timeout: Option<Duration>,
}

impl Default for Git {
    fn default() -> Self {
        Self {
            program: PathBuf::from("git"),
            dir: None,
            env: Vec::new(),
            ssh: None,
            timeout: None,
        }
    }
}

impl Git {
    /// git, run in the current directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// git, run inside `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(dir.into()),
            ..Self::default()
        }
    }

    /// The same runner with one more environment variable (`GIT_INDEX_FILE`, an identity…).
    pub fn with_env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((name.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The same runner with this ssh command for git's network commands (instead of the
    /// user's, resolved at each network command, in batch mode).
    pub fn with_ssh(mut self, ssh: SshCommand) -> Self {
        self.ssh = Some(ssh);
        self
    }

    /// The same runner, killing git when a command takes longer than `after`.
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    /// The command, with the non-interactive environment set, ready to run.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut cmd = Command::new(&self.program);
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        cmd.args(&args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GCM_INTERACTIVE", "never")
            .env("GIT_ASKPASS", "")
            .env("SSH_ASKPASS", "")
            .env("LC_ALL", "C")
            .env("LANGUAGE", "C")
            .stdin(Stdio::null());
        // ssh as the user's git would run it (their command, their config), never prompting.
        // Only network commands need it, so local ones do not pay for reading the config.
        let ssh = match &self.ssh {
            Some(ssh) => Some(ssh.clone()),
            None if args.first().is_some_and(|a| is_network(a)) => {
                Some(SshCommand::resolve(self.dir.as_deref()).batch())
            }
            None => None,
        };
        if let Some(ssh) = ssh {
            cmd.env("GIT_SSH_COMMAND", ssh.command);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs git and returns its stdout; a non-zero exit is an error carrying stderr.
    pub fn run<I, S>(&self, args: I) -> Result<String, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let joined = || {
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let spawn_error = |source| GitError::Spawn {
            program: self.program.display().to_string(),
            source,
        };
        let mut cmd = self.command(&args);
        let output = match self.timeout {
            None => cmd.output().map_err(spawn_error)?,
            Some(after) => match output_within(&mut cmd, after).map_err(spawn_error)? {
                Finished::Done(o) => o,
                Finished::Killed { stderr } => {
                    return Err(GitError::TimedOut {
                        args: joined(),
                        after,
                        stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
                    });
                }
            },
        };
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(GitError::Failed {
                args: joined(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    /// The working directory this runner is bound to.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

/// Starts `cmd` in a process group of its own (Unix), so that [`kill_group`] stops it with
/// everything it started — git's ssh, a shell's children — and nothing else. (Windows:
/// unchanged; [`kill_group`] stops the process tree.)
pub fn own_group(cmd: &mut Command) -> &mut Command {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    cmd
}

/// Stops a child started with [`own_group`] and every process of its group (a daemonised
/// ssh connection-sharing master has left it, and lives on), then reaps it.
pub fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        if let Some(pid) = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
    #[cfg(windows)]
    {
        // The tree: git and the ssh it started.
        let _ = Command::new("taskkill")
            .args(["/T", "/F", "/PID", &child.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// How a command run with a deadline ended.
enum Finished {
    Done(std::process::Output),
    Killed { stderr: Vec<u8> },
}

/// Runs `cmd` collecting its output, killing it — with what it started — once `after` has
/// passed. The output is read on two threads; the process is looked at every 10 ms (no signal
/// handler is installed, so nothing else in the process is disturbed).
fn output_within(cmd: &mut Command, after: Duration) -> std::io::Result<Finished> {
    let deadline = Instant::now() + after;
    let mut child = own_group(cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(mut pipe) = pipe {
            let spawned = std::thread::Builder::new()
                .name("git output".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut buf = Vec::new();
                    let _ = pipe.read_to_end(&mut buf);
                    let _ = tx.send(buf);
                });
            drop(spawned);
        }
        rx
    };
    let out = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    // What a reader has, once the process is gone: a program it started may still hold the
    // pipe (ssh's connection-sharing master does not, but nothing else is assumed).
    let drain = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default()
    };
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Finished::Done(std::process::Output {
                status,
                stdout: drain(out),
                stderr: drain(err),
            }));
        }
        if Instant::now() >= deadline {
            kill_group(&mut child);
            return Ok(Finished::Killed { stderr: drain(err) });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True when `remote` names a path on this machine rather than a URL (`https://…`, `ssh://…`,
/// `user@host:repo`).
pub fn is_local_path(remote: &str) -> bool {
    if remote.contains("://") {
        return remote.starts_with("file://");
    }
    let path = Path::new(remote);
    if path.is_absolute() || remote.starts_with('.') {
        return true;
    }
    // scp-like syntax `host:path` has a colon before any slash; a Windows drive letter `C:` is
    // a path.
    match remote.find(':') {
        None => true,
        Some(1) if remote.as_bytes()[0].is_ascii_alphabetic() => true,
        Some(colon) => remote.find(['/', '\\']).is_some_and(|slash| slash < colon),
    }
}

/// What a failed push or fetch means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Somebody pushed first: a lost compare-and-swap.
    Race,
    /// The remote is unreachable.
    Network,
    /// Credentials refused.
    Auth,
    /// Anything else.
    Other,
}

/// Classifies git's (or gix's) error text.
pub fn classify_failure(stderr: &str) -> Failure {
    let s = stderr.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| s.contains(n));
    if any(&[
        "fetch first",
        "non-fast-forward",
        "updates were rejected",
        "failed to update ref",
        "[rejected]",
        "cannot lock ref",
        "stale info",
    ]) {
        Failure::Race
    } else if any(&[
        "authentication failed",
        "permission denied",
        "terminal prompts disabled",
        "could not read username",
        "access denied",
        "403",
        "401",
    ]) {
        Failure::Auth
    } else if any(&[
        "could not read from remote",
        "does not appear to be a git repository",
        "unable to access",
        "could not resolve host",
        "connection refused",
        "connection timed out",
        "network is unreachable",
        "no such file or directory",
        "not a git repository",
        "failed to connect",
        "could not open",
        "repository not found",
        "does not exist",
    ]) {
        Failure::Network
    } else {
        Failure::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_paths_from_urls() {
        for local in [
            "/srv/trinity.git",
            "./remote.git",
            "remote.git",
            "C:\\trinity.git",
            "file:///srv/x.git",
            "a/b:c",
        ] {
            assert!(is_local_path(local), "{local}");
        }
        for url in [
            "https://example.com/x.git",
            "ssh://host/x.git",
            "git@github.com:me/x.git",
            "host:x.git",
        ] {
            assert!(!is_local_path(url), "{url}");
        }
    }

    #[test]
    fn failures_carry_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Git::in_dir(dir.path())
            .run(["rev-parse", "HEAD"])
            .expect_err("not a repository");
        assert!(err.stderr().contains("not a git repository"), "{err}");
        assert!(err.to_string().contains("git rev-parse HEAD"), "{err}");
    }

    #[test]
    fn ssh_runs_as_git_would_run_it() {
        assert_eq!(SshVariant::of_program("ssh"), SshVariant::OpenSsh);
        assert_eq!(
            SshVariant::of_program("C:\\Program Files\\Git\\usr\\bin\\ssh.exe"),
            SshVariant::OpenSsh
        );
        assert_eq!(SshVariant::of_program("/usr/bin/plink"), SshVariant::Putty);
        assert_eq!(
            SshVariant::of_program("TortoisePlink.exe"),
            SshVariant::TortoisePlink
        );
        assert_eq!(SshVariant::of_program("my-wrapper"), SshVariant::Simple);
        assert_eq!(first_word("'/opt/my ssh/ssh' -v"), "/opt/my ssh/ssh");
        assert_eq!(first_word("  ssh -F x"), "ssh");
        assert_eq!(shell_quote("ssh"), "ssh");
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");

        let dir = tempfile::tempdir().expect("tempdir");
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .current_dir(dir.path())
                .args(args)
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .status()
                .expect("git")
                .success();
            assert!(ok, "{args:?}");
        };
        git(&["init", "-q"]);
        let none = |_: &str| None;
        // Nothing configured: git's default.
        let plain = SshCommand::resolve_with(none, Some(dir.path()));
        assert_eq!(plain.command, "ssh");
        assert_eq!(plain.variant, SshVariant::OpenSsh);
        assert_eq!(plain.batch().command, "ssh -o BatchMode=yes");
        // The repository's core.sshCommand is kept (a plain GIT_SSH_COMMAND used to hide it).
        git(&["config", "core.sshCommand", "ssh -i /keys/trinity"]);
        let configured = SshCommand::resolve_with(none, Some(dir.path()));
        assert_eq!(configured.command, "ssh -i /keys/trinity");
        assert_eq!(
            configured
                .with_options(&[("ControlPath", "/t/a b/%C".to_owned())])
                .command,
            "ssh -i /keys/trinity -o 'ControlPath=/t/a b/%C'"
        );
        // GIT_SSH_COMMAND wins over it; GIT_SSH only when neither is set.
        let env = |k: &str| match k {
            "GIT_SSH_COMMAND" => Some("plink -v".to_owned()),
            "GIT_SSH" => Some("/bin/ssh".to_owned()),
            _ => None,
        };
        let putty = SshCommand::resolve_with(env, Some(dir.path()));
        assert_eq!(putty.command, "plink -v");
        assert_eq!(putty.variant, SshVariant::Putty);
        assert_eq!(putty.batch(), putty, "no OpenSSH options for PuTTY");
        git(&["config", "--unset", "core.sshCommand"]);
        let program = SshCommand::resolve_with(
            |k| (k == "GIT_SSH").then(|| "/opt/my ssh/ssh".to_owned()),
            Some(dir.path()),
        );
        assert_eq!(program.command, "'/opt/my ssh/ssh'");
        assert_eq!(program.variant, SshVariant::OpenSsh);
        // ssh.variant overrides the name.
        git(&["config", "ssh.variant", "simple"]);
        assert_eq!(
            SshCommand::resolve_with(none, Some(dir.path())).variant,
            SshVariant::Simple
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_command_past_its_deadline_is_stopped_with_what_it_started() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        // git runs a shell, which runs a long sleep: all of it must go at the deadline.
        let alias = format!(
            "alias.slow=!sh -c 'echo $$ > {}; exec sleep 30'",
            pid_file.display()
        );
        let started = Instant::now();
        let err = Git::new()
            .timeout(Duration::from_millis(500))
            .run(["-c", &alias, "slow"])
            .expect_err("stopped");
        assert!(err.timed_out(), "{err}");
        assert!(err.to_string().contains("did not finish within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid = std::fs::read_to_string(&pid_file).expect("the sleep's pid");
        // Gone, or a zombie waiting for init to reap it: either way no longer running.
        let running = || {
            std::fs::read_to_string(Path::new("/proc").join(pid.trim()).join("stat")).is_ok_and(
                |stat| {
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| !rest.starts_with('Z'))
                },
            )
        };
        let waited = Instant::now();
        while running() {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "the sleep started by git outlived the deadline"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // A quick command is unaffected.
        let v = Git::new()
            .timeout(Duration::from_secs(20))
            .run(["--version"])
            .expect("version");
        assert!(v.starts_with("git version"), "{v}");
    }

    #[test]
    fn push_and_fetch_failures_are_told_apart() {
        for (text, want) in [
            (
                " ! [rejected]        trinity -> trinity (fetch first)",
                Failure::Race,
            ),
            (
                "! [rejected] trinity -> trinity (non-fast-forward)",
                Failure::Race,
            ),
            (
                "! [remote rejected] trinity -> trinity (failed to update ref)",
                Failure::Race,
            ),
            (
                "fatal: '/srv/x.git' does not appear to be a git repository\nfatal: Could not read from remote repository.",
                Failure::Network,
            ),
            (
                "ssh: connect to host example.com port 22: Connection refused",
                Failure::Network,
            ),
            (
                "fatal: unable to access 'https://example.com/x.git/': Could not resolve host: example.com",
                Failure::Network,
            ),
            (
                "git@github.com: Permission denied (publickey).",
                Failure::Auth,
            ),
            (
                "fatal: could not read Username for 'https://example.com': terminal prompts disabled",
                Failure::Auth,
            ),
            ("remote: hook declined", Failure::Other),
        ] {
            assert_eq!(classify_failure(text), want, "{text}");
        }
    }
}
