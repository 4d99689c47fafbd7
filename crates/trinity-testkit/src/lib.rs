//! Helpers for tests that run the workspace's programs as real processes.
//!
//! * [`hermetic`] strips `TRINITY_*` and `GIT_*` from a command's environment and points git at
//!   no global or system configuration, with a home directory of the test's own.
//! * [`wait_for`] polls a condition until a deadline — never a blind sleep; [`poll`] is the
//!   same loop for a step that gives a value, with its own pace and a failure's context.
//! * [`stop`] asks a daemon to stop (SIGTERM) and waits for it with a deadline; [`spawn`]
//!   starts one that is killed when its handle is dropped, so a test that fails midway leaves
//!   no daemon running on a deleted directory.
//! * [`describe`] formats a finished command's status and output for assertion messages.
//! * [`TestTree`] is a temporary directory with a state tree and one PC's `trinity.toml`:
//!   what a daemon's tests start from.

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
    poll(
        what,
        Duration::from_millis(20),
        || ok().then_some(()).ok_or(()),
        |()| String::new(),
    );
}

/// Runs `step` every `every` until it gives a value, and returns it: the tests' one poll loop.
/// After [`DEADLINE`] it panics with "timed out waiting for {what}" and what `why` makes of the
/// last failed step (its output, the logs…), built only then.
pub fn poll<T, E>(
    what: &str,
    every: Duration,
    mut step: impl FnMut() -> Result<T, E>,
    why: impl FnOnce(E) -> String,
) -> T {
    let start = Instant::now();
    loop {
        match step() {
            Ok(value) => return value,
            Err(e) if start.elapsed() >= DEADLINE => {
                panic!("timed out waiting for {what}\n{}", why(e))
            }
            Err(_) => std::thread::sleep(every),
        }
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

/// A child process killed, and waited for, when dropped (a test that panics drops it too).
/// It derefs to the [`Child`].
#[derive(Debug)]
pub struct Running(Child);

/// Starts `cmd` as a [`Running`] child; panics when it cannot be started.
pub fn spawn(cmd: &mut Command) -> Running {
    Running(cmd.spawn().expect("cannot start the program"))
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
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

/// A temporary directory holding a state tree (`.trinity/` with its `fleet.toml`) and the
/// `trinity.toml` of one PC of the fleet, for tests that run a program against it.
#[derive(Debug)]
pub struct TestTree {
    dir: tempfile::TempDir,
}

/// How a [`TestTree`] is made: the fleet PC1, PC2, PC3 (coordinator PC3) seen from PC1, with
/// `sync.mode = "none"` (no git), unless told otherwise.
#[derive(Debug, Clone)]
pub struct TestTreeBuilder {
    pcs: Vec<String>,
    coordinator: String,
    pc: String,
    config: String,
    sync_none: bool,
}

impl TestTree {
    /// Starts a builder with the defaults.
    pub fn builder() -> TestTreeBuilder {
        TestTreeBuilder {
            pcs: ["PC1", "PC2", "PC3"].map(str::to_owned).to_vec(),
            coordinator: "PC3".to_owned(),
            pc: "PC1".to_owned(),
            config: String::new(),
            sync_none: true,
        }
    }

    /// The temporary directory (the PC's working directory; `trinity.toml` is here).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The state tree's root: `{root}/.trinity`.
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.root().join(".trinity")
    }

    /// The PC's `trinity.toml`.
    pub fn config_file(&self) -> std::path::PathBuf {
        self.root().join("trinity.toml")
    }

    /// Appends `text` to `trinity.toml`.
    pub fn append_config(&self, text: &str) {
        let mut config = std::fs::read_to_string(self.config_file()).expect("config");
        config.push_str(text);
        std::fs::write(self.config_file(), config).expect("config");
    }

    /// A hermetic command for `program`, run in [`TestTree::root`] with `TRINITY_CONFIG` set.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        hermetic(&mut c, self.root())
            .current_dir(self.root())
            .env("TRINITY_CONFIG", self.config_file());
        c
    }
}

impl TestTreeBuilder {
    /// The fleet's PCs and its coordinator.
    pub fn fleet(mut self, pcs: &[&str], coordinator: &str) -> Self {
        self.pcs = pcs.iter().map(|p| (*p).to_owned()).collect();
        self.coordinator = coordinator.to_owned();
        self
    }

    /// The PC whose `trinity.toml` this is.
    pub fn pc(mut self, pc: &str) -> Self {
        self.pc = pc.to_owned();
        self
    }

    /// Text appended to `trinity.toml` (tables like `[agent]`). A `[sync]` table in it
    /// replaces the default `mode = "none"`.
    pub fn config(mut self, text: &str) -> Self {
        self.sync_none &= !text.contains("[sync]");
        self.config.push_str(text);
        self
    }

    /// Writes the files.
    pub fn build(self) -> TestTree {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join(".trinity");
        std::fs::create_dir_all(&state).expect("mkdir");
        let pcs: Vec<String> = self.pcs.iter().map(|p| format!("{p:?}")).collect();
        std::fs::write(
            state.join("fleet.toml"),
            format!(
                "format_version = 1\npcs = [{}]\ncoordinator = {:?}\n",
                pcs.join(", "),
                self.coordinator
            ),
        )
        .expect("fleet");
        let sync = if self.sync_none {
            "[sync]\nmode = \"none\"\n"
        } else {
            ""
        };
        std::fs::write(
            dir.path().join("trinity.toml"),
            format!(
                "pc = {:?}\nstate_dir = \".trinity\"\n{sync}{}",
                self.pc, self.config
            ),
        )
        .expect("config");
        TestTree { dir }
    }
}
