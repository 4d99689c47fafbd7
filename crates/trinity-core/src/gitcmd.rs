//! Running the `git` program non-interactively.
//!
//! gix does git-sync's local work, but some steps need the `git` program (push, and the
//! one-shot `trinity init`). Every invocation here runs with prompts disabled
//! (`GIT_TERMINAL_PROMPT=0`, ssh in batch mode, no credential-manager dialogs) and the C locale,
//! so that a missing credential fails at once instead of hanging, and messages can be matched.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
            GitError::Failed { stderr, .. } => stderr,
            GitError::Spawn { .. } => "",
        }
    }
}

/// A git runner, optionally bound to a working directory.
#[derive(Debug, Clone)]
pub struct Git {
    program: PathBuf,
    dir: Option<PathBuf>,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl Default for Git {
    fn default() -> Self {
        Self {
            program: PathBuf::from("git"),
            dir: None,
            env: Vec::new(),
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

    /// The command, with the non-interactive environment set, ready to run.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.program);
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        cmd.args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GCM_INTERACTIVE", "never")
            .env("GIT_ASKPASS", "")
            .env("SSH_ASKPASS", "")
            .env("LC_ALL", "C")
            .env("LANGUAGE", "C")
            .stdin(Stdio::null());
        if std::env::var_os("GIT_SSH_COMMAND").is_none() {
            cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
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
        let output = self
            .command(&args)
            .output()
            .map_err(|source| GitError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(GitError::Failed {
                args: args
                    .iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
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
