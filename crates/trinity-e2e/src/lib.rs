//! Cross-daemon tests live in `tests/`: they run the workspace's real programs (`trinity`,
//! `git-sync`, `credit-monitor`, `wake-daemon`) for several simulated PCs that share one local
//! bare repository, as the fleet would. Build the workspace first (`scripts/test.sh` does).
//!
//! This library is their harness: a [`World`] of PCs set up by `trinity init`, whose daemons
//! can be started, killed and restarted one by one, and a test agent that records every start.
//! [`World::over`] puts the shared repository behind the network test bed instead (a loopback
//! sshd or HTTPS server, reached through a fault proxy: `trinity_netbed`).
#![cfg(unix)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use trinity_core::fsio;
use trinity_core::schema::{Claim, Heartbeat};
use trinity_core::{PcId, TaskId, Tree};
pub use trinity_netbed::{Cut, NetRemote, Transport};

/// The daemons of the handoff path, which every PC runs.
pub const DAEMONS: [&str; 3] = ["git-sync", "credit-monitor", "wake-daemon"];

/// Every daemon, the coordinator included.
pub const ALL_DAEMONS: [&str; 4] = ["git-sync", "credit-monitor", "wake-daemon", "coordinator"];

/// The workspace's programs, next to the test's executable (`target/<profile>/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace, or scripts/test.sh)",
        path.display()
    );
    path
}

/// One agent start, as the test agent recorded it.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The PC it ran on.
    pub pc: String,
    /// Its `TRINITY_*` environment, one `NAME=value` a line.
    pub env: String,
}

impl Launch {
    /// A `TRINITY_*` variable's value.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
    }

    /// The handoff id (the handoff file's name without `.json`).
    pub fn handoff(&self) -> Option<String> {
        let file = self.var("TRINITY_HANDOFF_FILE")?;
        Path::new(file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
    }
}

/// Several simulated PCs in one temporary directory: `remote.git`, one directory per PC (its
/// `trinity.toml` and `.trinity/`), a home for hermetic git, and `agents/` where the test agent
/// writes a file per start. Daemons still running are stopped when it is dropped.
#[derive(Debug)]
pub struct World {
    pcs: Vec<String>,
    daemons: BTreeMap<(String, String), Child>,
    env: Vec<(String, String)>,
    net: Option<NetRemote>,
    // Last: the directory goes once the daemons and servers using it have stopped.
    dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        for c in self.daemons.values() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in self.daemons.values_mut() {
            let _ = c.wait();
        }
        // git-sync's shared ssh connections outlive it by a minute; end them with the server.
        self.net = None;
    }
}

/// Whether this machine can run `transport`'s test server. Where it cannot, the test says so
/// and is skipped — unless `TRINITY_NETBED_REQUIRED` is set (CI), where that is a failure.
pub fn can_serve(transport: Transport) -> bool {
    if trinity_netbed::available(transport) {
        return true;
    }
    assert!(
        std::env::var_os("TRINITY_NETBED_REQUIRED").is_none(),
        "no {transport} server on this machine (sshd: apt-get install openssh-server)"
    );
    eprintln!(
        "SKIPPED: no {transport} server on this machine (sshd: apt-get install openssh-server)"
    );
    false
}

impl World {
    /// Sets up `pcs` with `trinity init` (the first creates the remote and the fleet, with the
    /// last as coordinator), the test agent, and `extra_config` appended to every
    /// `trinity.toml` (after an `[agent]` table).
    pub fn new(pcs: &[&str], extra_config: &str) -> Self {
        Self::with_agent(pcs, extra_config, "")
    }

    /// [`World::new`], with `agent_tail` (shell) run by the test agent after it recorded its
    /// start (`$AGENT_TRINITY` is the `trinity` program).
    pub fn with_agent(pcs: &[&str], extra_config: &str, agent_tail: &str) -> Self {
        Self::build(pcs, extra_config, agent_tail, None)
    }

    /// [`World::new`] with the shared repository served over `transport` on loopback, through
    /// the test bed's fault proxy ([`World::net`]); every program gets the variables its git
    /// needs. `None` (the test is skipped) when this machine cannot run the server.
    pub fn over(transport: Transport, pcs: &[&str], extra_config: &str) -> Option<Self> {
        can_serve(transport).then(|| Self::build(pcs, extra_config, "", Some(transport)))
    }

    fn build(
        pcs: &[&str],
        extra_config: &str,
        agent_tail: &str,
        transport: Option<Transport>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        std::fs::create_dir_all(dir.path().join("agents")).expect("agents");
        let agent = dir.path().join("agent.sh");
        // Written under a temporary name and renamed, so a reader never sees half a record.
        std::fs::write(
            &agent,
            format!(
                "#!/bin/sh\nenv | grep '^TRINITY_' | sort > \"$AGENT_OUT/.$TRINITY_PC-$$.tmp\"\n\
             mv \"$AGENT_OUT/.$TRINITY_PC-$$.tmp\" \"$AGENT_OUT/$TRINITY_PC-$$.env\"\n{agent_tail}\n"
            ),
        )
        .expect("agent");
        let mut world = Self {
            dir,
            pcs: pcs.iter().map(|p| (*p).to_owned()).collect(),
            daemons: BTreeMap::new(),
            env: Vec::new(),
            net: None,
        };
        let mut remote = world.root().join("remote.git").display().to_string();
        if let Some(t) = transport {
            let root = world.root().to_owned();
            world.git(&root, &["init", "-q", "--bare", "remote.git"]);
            let net = NetRemote::start(t, &world.remote(), &root.join("netbed"))
                .unwrap_or_else(|e| panic!("cannot start the {t} test server: {e}"));
            remote = net.url().to_owned();
            world.env.extend(net.env().iter().cloned());
            world.net = Some(net);
        }
        for (i, pc) in pcs.iter().enumerate() {
            std::fs::create_dir_all(world.root().join(pc)).expect("pc dir");
            let mut init = world.cmd("trinity", pc);
            init.args(["init", "--pc", pc, "--remote", &remote]);
            if i == 0 {
                init.args([
                    "--create-remote",
                    "--fleet",
                    &pcs.join(","),
                    "--coordinator",
                    pcs[pcs.len() - 1],
                ]);
            }
            assert!(init.status().expect("trinity init").success(), "init {pc}");
            let config = world.root().join(pc).join("trinity.toml");
            let mut text = std::fs::read_to_string(&config).expect("config");
            text.push_str(&format!(
                "[agent]\ncommand = [\"/bin/sh\", {:?}]\nnew_console = false\n{extra_config}",
                agent.display().to_string()
            ));
            std::fs::write(&config, text).expect("config");
        }
        world.approve_keys();
        world
    }

    /// The first PC founded the fleet's trust at `init`: it approves the others' keys, and
    /// git-sync brings the approvals to every PC before any daemon starts.
    pub fn approve_keys(&self) {
        let Some((founder, others)) = self.pcs.split_first() else {
            return;
        };
        for pc in others {
            let key = self.public_key(pc);
            let out = self.output("trinity", founder, &["fleet", "approve", pc, "--key", &key]);
            assert!(out.status.success(), "approve {pc}: {out:?}");
        }
        for pc in &self.pcs {
            let out = self.output("git-sync", pc, &["--once"]);
            assert!(out.status.success(), "git-sync --once on {pc}: {out:?}");
        }
    }

    /// `pc`'s public signing key.
    pub fn public_key(&self, pc: &str) -> String {
        trinity_core::trust::SigningKey::load(&self.tree(pc))
            .expect("signing key")
            .expect("a key made by init")
            .public()
            .to_string()
    }

    /// Sets a variable for every program started from now on (a `TRINITY_*` setting, say).
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// The temporary directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The shared bare repository (on this machine, whatever the PCs reach it through).
    pub fn remote(&self) -> PathBuf {
        self.root().join("remote.git")
    }

    /// The network between the PCs and the repository, for a world made by [`World::over`].
    pub fn net(&self) -> Option<&NetRemote> {
        self.net.as_ref()
    }

    /// The PCs, in rotation order.
    pub fn pcs(&self) -> Vec<String> {
        self.pcs.clone()
    }

    /// A workspace program run as `pc` (hermetic, in the PC's directory, output discarded).
    pub fn cmd(&self, program: &str, pc: &str) -> Command {
        let mut c = Command::new(bin(program));
        trinity_testkit::hermetic(&mut c, &self.root().join("home"))
            .current_dir(self.root().join(pc))
            .env("TRINITY_CONFIG", self.root().join(pc).join("trinity.toml"))
            .env("AGENT_OUT", self.root().join("agents"))
            .env("AGENT_TRINITY", bin("trinity"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// git, hermetic, in `dir`; panics on failure.
    pub fn git(&self, dir: &Path, args: &[&str]) -> String {
        let mut c = Command::new("git");
        trinity_testkit::hermetic(&mut c, &self.root().join("home"));
        let o = c.current_dir(dir).args(args).output().expect("git");
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            trinity_testkit::describe(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Starts a daemon of `pc` (replacing the record of an earlier, dead one). When it is
    /// still running (two restarts in a row), it is left as it is: a second process would only
    /// be refused by its instance lock, and the running one would be lost track of.
    pub fn start(&mut self, program: &str, pc: &str) {
        let key = (pc.to_owned(), program.to_owned());
        if let Some(running) = self.daemons.get_mut(&key)
            && matches!(running.try_wait(), Ok(None))
        {
            return;
        }
        let child = self.cmd(program, pc).spawn().expect("daemon");
        self.daemons.insert(key, child);
    }

    /// Appends `text` to one PC's `trinity.toml`.
    pub fn append_config(&self, pc: &str, text: &str) {
        let path = self.root().join(pc).join("trinity.toml");
        let mut config = std::fs::read_to_string(&path).expect("config");
        config.push_str(text);
        std::fs::write(&path, config).expect("config");
    }

    /// Gives `pc` these `roles` (a top-level key, so it goes at the top of its `trinity.toml`).
    pub fn set_roles(&self, pc: &str, roles: &[&str]) {
        let path = self.root().join(pc).join("trinity.toml");
        let text = std::fs::read_to_string(&path).expect("config");
        let list: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
        std::fs::write(&path, format!("roles = [{}]\n{text}", list.join(", "))).expect("config");
    }

    /// A project for the agents: `project.git` (bare, branch `main`) with one commit of
    /// `files` (path, contents), cloned into every PC's `project/`. Returns the bare repository.
    pub fn project(&self, files: &[(&str, &str)]) -> PathBuf {
        let root = self.root().to_owned();
        self.git(
            &root,
            &["init", "-q", "--bare", "-b", "main", "project.git"],
        );
        self.git(&root, &["clone", "-q", "project.git", "seed"]);
        let seed = root.join("seed");
        for (path, text) in files {
            let p = seed.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        self.git(&seed, &["add", "-A"]);
        self.git(&seed, &["commit", "-q", "-m", "start"]);
        self.git(&seed, &["push", "-q", "origin", "main"]);
        for pc in &self.pcs {
            self.git(
                &root.join(pc),
                &["clone", "-q", "../project.git", "project"],
            );
        }
        root.join("project.git")
    }

    /// Starts every daemon of every PC, the coordinator included.
    pub fn start_fleet(&mut self) {
        for pc in self.pcs() {
            for d in ALL_DAEMONS {
                self.start(d, &pc);
            }
        }
    }

    /// Starts the handoff path's daemons of every PC (no coordinator).
    pub fn start_all(&mut self) {
        for pc in self.pcs() {
            for d in DAEMONS {
                self.start(d, &pc);
            }
        }
    }

    /// Kills a daemon with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(&mut self, program: &str, pc: &str) {
        if let Some(mut c) = self.daemons.remove(&(pc.to_owned(), program.to_owned())) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Asks every daemon to stop (SIGTERM) and waits for each.
    pub fn stop_all(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.daemons) {
            trinity_testkit::stop(&mut c);
        }
    }

    /// A PC's state tree.
    pub fn tree(&self, pc: &str) -> Tree {
        Tree::new(self.root().join(pc).join(".trinity"))
    }

    /// Every agent start so far.
    pub fn launches(&self) -> Vec<Launch> {
        let Ok(dir) = std::fs::read_dir(self.root().join("agents")) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let stem = name.strip_suffix(".env")?;
                let pc = stem.rsplit_once('-')?.0.to_owned();
                let env = std::fs::read_to_string(e.path()).ok()?;
                Some(Launch { pc, env })
            })
            .collect()
    }

    /// Agent starts on `pc`.
    pub fn launches_on(&self, pc: &str) -> usize {
        self.launches().iter().filter(|l| l.pc == pc).count()
    }

    /// Polls `ok` until it holds; after the testkit's deadline, panics naming `what`, with
    /// the end of every daemon's log.
    pub fn wait(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let every = std::time::Duration::from_millis(20);
        let step = || ok().then_some(()).ok_or(());
        trinity_testkit::poll(what, every, step, |()| self.log_tails(40));
    }

    /// The last `lines` lines of every daemon's log of every PC.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for pc in &self.pcs {
            for d in ALL_DAEMONS {
                let log = self.log(pc, d);
                if log.is_empty() {
                    continue;
                }
                let all: Vec<&str> = log.lines().collect();
                out.push_str(&format!("---- {pc} {d} ----\n"));
                for l in &all[all.len().saturating_sub(lines)..] {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// A workspace program run as `pc` with its output captured.
    pub fn output(&self, program: &str, pc: &str, args: &[&str]) -> std::process::Output {
        self.cmd(program, pc)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run")
    }

    /// `credit-monitor --force-handoff` on `pc`, which must hand off; returns the handoff file.
    pub fn force_handoff(&self, pc: &str) -> PathBuf {
        let o = self.output("credit-monitor", pc, &["--force-handoff"]);
        assert!(o.status.success(), "{}", trinity_testkit::describe(&o));
        // "handoff: PC1 → PC2 (manual): /…/handoff/handoff_PC1_to_PC2_….json"
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        PathBuf::from(out.trim().rsplit(": ").next().expect("the handoff's path"))
    }

    /// `credit-monitor --record-rate-limit`, three times: the default rule hands off.
    pub fn record_rate_limits(&self, pc: &str) {
        for _ in 0..3 {
            let s = self
                .cmd("credit-monitor", pc)
                .arg("--record-rate-limit")
                .status()
                .expect("credit-monitor");
            assert!(s.success());
        }
    }

    /// Who holds a task's claim, as `pc` sees it.
    pub fn claim_holder(&self, pc: &str, task: &str) -> Option<String> {
        fsio::load::<Claim>(&self.tree(pc).claim_file(&TaskId::new(task).expect("valid")))
            .ok()
            .map(|c| c.value.pc.to_string())
    }

    /// `of`'s heartbeat, as `seen_by` sees it.
    pub fn heartbeat(&self, seen_by: &str, of: &str) -> Option<Heartbeat> {
        fsio::load::<Heartbeat>(
            &self
                .tree(seen_by)
                .heartbeat_file(&PcId::new(of).expect("valid")),
        )
        .ok()
        .map(|d| d.value)
    }

    /// Every synced file of a PC's tree, with its contents (without the temporary files of
    /// atomic writes, which are never synced: a killed writer may leave one behind).
    pub fn files(&self, pc: &str) -> BTreeMap<String, Vec<u8>> {
        let tree = self.tree(pc);
        trinity_core::validate::synced_files(&tree)
            .expect("list")
            .into_iter()
            .filter(|p| {
                !p.file_name().is_some_and(|n| {
                    n.to_string_lossy()
                        .ends_with(trinity_core::layout::TEMP_SUFFIX)
                })
            })
            .map(|p| {
                (
                    tree.relative(&p).expect("relative"),
                    std::fs::read(&p).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// A daemon's log file of a PC.
    pub fn log(&self, pc: &str, daemon: &str) -> String {
        std::fs::read_to_string(self.tree(pc).logs_dir().join(format!("{daemon}.log")))
            .unwrap_or_default()
    }
}
