//! Helpers for tests that run the workspace's programs as real processes.
//!
//! * [`hermetic`] strips `TRINITY_*` and `GIT_*` from a command's environment and points git at
//!   no global or system configuration, with a home directory of the test's own.
//! * [`wait_for`] polls a condition until a deadline — never a blind sleep.
//! * [`stop`] asks a daemon to stop (SIGTERM) and waits for it with a deadline.
//! * [`describe`] formats a finished command's status and output for assertion messages.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The longest any wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Makes `cmd` independent of the machine's configuration: no `TRINITY_*` or `GIT_*`
/// variables from the caller, `HOME` set to `home`, no global or system git config, a fixed
/// git identity, and no standard input.
pub fn hermetic<'c>(cmd: &'c mut Command, home: &Path) -> &'c mut Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("TRINITY_") || k.starts_with("GIT_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home)
        .env("USERPROFILE", home)
        .env(
            "GIT_CONFIG_GLOBAL",
            if cfg!(windows) { "NUL" } else { "/dev/null" },
        )
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@test")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@test")
        .stdin(Stdio::null())
}

/// Polls `ok` every 20 ms until it holds; panics naming `what` after [`DEADLINE`].
pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asks `child` to stop as Ctrl-C or a service manager would (SIGTERM on Unix; killed
/// elsewhere) and returns its exit status, failing after [`DEADLINE`].
pub fn stop(child: &mut Child) -> ExitStatus {
    #[cfg(unix)]
    {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    #[cfg(not(unix))]
    {
        let _ = child.kill();
    }
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        assert!(start.elapsed() < DEADLINE, "the process did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// "status …, stdout: …, stderr: …", for assertion messages.
pub fn describe(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
