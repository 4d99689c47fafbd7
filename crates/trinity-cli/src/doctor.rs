//! `trinity doctor`: checks this PC and says what to fix.
//!
//! The seed's troubleshooting questions, answered by looking: is each daemon running (and
//! still reporting)? is git sync working (the remote reachable without a prompt, the last
//! push recent, no error)? are wake signals or handoffs for this PC waiting unhandled? is the
//! clock in step with the fleet's commits? is the agent command there?

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Args;
use trinity_core::clock::human_duration;
use trinity_core::config::{Config, SyncMode};
use trinity_core::daemon::FileLock;
use trinity_core::fsio;
use trinity_core::gitcmd::Git;
use trinity_core::schema::{CreditStatus, Fleet, Handoff, Heartbeat, WakeSignal};
use trinity_core::syncstate::SyncState;
use trinity_core::{DaemonId, PcId, Tree};

/// Check this PC: configuration, state tree, remote, daemons, sync, clock, agent.
#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// Skip contacting the remote (no `git ls-remote`)
    #[arg(long)]
    offline: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug)]
struct Finding {
    level: Level,
    what: String,
    detail: String,
    fix: Option<String>,
}

#[derive(Debug, Default)]
struct Report {
    findings: Vec<Finding>,
}

impl Report {
    fn add(&mut self, level: Level, what: &str, detail: impl Into<String>, fix: Option<String>) {
        self.findings.push(Finding {
            level,
            what: what.to_owned(),
            detail: detail.into(),
            fix,
        });
    }
    fn ok(&mut self, what: &str, detail: impl Into<String>) {
        self.add(Level::Ok, what, detail, None);
    }
    fn warn(&mut self, what: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(Level::Warn, what, detail, Some(fix.into()));
    }
    fn fail(&mut self, what: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(Level::Fail, what, detail, Some(fix.into()));
    }
}

/// A daemon whose heartbeat entry is older than this is running but not reporting.
const HUNG_AFTER: Duration = Duration::from_secs(5 * 60);

/// A wake signal for this PC still there after this long was not handled.
const UNHANDLED_AFTER: Duration = Duration::from_secs(5 * 60);

pub(crate) fn run(args: DoctorArgs, config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut r = Report::default();
    let loaded = match trinity_core::config::load(&trinity_core::config::Sources::from_env(
        config_path,
    )) {
        Ok(l) => l,
        Err(e) => {
            r.fail(
                "config",
                e.to_string(),
                "fix the file (every key is in deploy/config/trinity.example.toml), or run `trinity init`",
            );
            print(&r, None);
            return Ok(ExitCode::FAILURE);
        }
    };
    let config = loaded.config;
    let file = loaded
        .file
        .as_ref()
        .map_or("defaults and TRINITY_* variables only".to_owned(), |f| {
            f.display().to_string()
        });
    if loaded.warnings.is_empty() {
        r.ok("config", file.clone());
    } else {
        r.warn(
            "config",
            format!("{file}: {}", loaded.warnings.join("; ")),
            "remove or correct those keys",
        );
    }
    let Some(pc) = config.pc.clone() else {
        r.fail(
            "config",
            "`pc` is not set",
            "run `trinity init --pc PC1 --remote …`",
        );
        print(&r, None);
        return Ok(ExitCode::FAILURE);
    };
    let tree = config.tree();
    git_present(&mut r);
    if !state_tree(&mut r, &config, &tree, &pc) {
        print(&r, Some(&pc));
        return Ok(ExitCode::FAILURE);
    }
    if !args.offline {
        remote(&mut r, &config);
    }
    daemons(&mut r, &config, &tree, &pc);
    sync(&mut r, &config, &tree);
    clock(&mut r, &tree);
    waiting(&mut r, &tree, &pc);
    agent(&mut r, &config);
    credit(&mut r, &tree, &pc);
    local_state(&mut r, &tree);
    signatures(&mut r, &config, &tree, &pc);
    print(&r, Some(&pc));
    Ok(if r.findings.iter().any(|f| f.level == Level::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print(r: &Report, pc: Option<&PcId>) {
    match pc {
        Some(pc) => println!("trinity doctor — {pc}"),
        None => println!("trinity doctor"),
    }
    for f in &r.findings {
        let mark = match f.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        println!("  {mark}  {:<15} {}", f.what, f.detail);
        if let Some(fix) = &f.fix {
            println!("        {:<15} → {fix}", "");
        }
    }
    let fails = r.findings.iter().filter(|f| f.level == Level::Fail).count();
    let warns = r.findings.iter().filter(|f| f.level == Level::Warn).count();
    if fails == 0 && warns == 0 {
        println!("Everything looks right.");
    } else {
        println!("{fails} problem(s), {warns} warning(s).");
    }
}

fn git_present(r: &mut Report) {
    match Git::new().run(["--version"]) {
        Ok(v) => {
            let version = v.trim().trim_start_matches("git version ").to_owned();
            let nums: Vec<u32> = version
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .take(2)
                .filter_map(|s| s.parse().ok())
                .collect();
            if nums.len() == 2 && (nums[0], nums[1]) < (2, 33) {
                r.warn(
                    "git",
                    format!("{version}: older than 2.33"),
                    "upgrade git: pack consolidation falls back to a full repack",
                );
            } else {
                r.ok("git", version);
            }
        }
        Err(e) => r.fail("git", e.to_string(), "install git and put it on PATH"),
    }
}

/// The state tree: there, a clone on the right branch, no merge stuck, a fleet this PC is in.
fn state_tree(r: &mut Report, config: &Config, tree: &Tree, pc: &PcId) -> bool {
    let root = tree.root();
    if !root.is_dir() {
        r.fail(
            "state tree",
            format!("{} does not exist", root.display()),
            "run `trinity init`",
        );
        return false;
    }
    match fsio::load::<Fleet>(&tree.fleet_file()) {
        Ok(doc) if doc.value.contains(pc) => {
            r.ok(
                "fleet",
                format!("{} (this PC is {pc})", doc.value.pcs_joined()),
            );
        }
        Ok(doc) => r.fail(
            "fleet",
            format!("{pc} is not one of {}", doc.value.pcs_joined()),
            "add it to fleet.toml (on any PC; git-sync spreads it) or fix `pc` in trinity.toml",
        ),
        Err(e) => r.fail("fleet", e.to_string(), "run `trinity init` again"),
    }
    if config.sync.mode == SyncMode::None {
        r.ok(
            "state tree",
            format!("{} (sync.mode none: a shared folder)", root.display()),
        );
        return true;
    }
    let git = Git::in_dir(root);
    let branch = git
        .run(["rev-parse", "--abbrev-ref", "HEAD"])
        .map(|s| s.trim().to_owned());
    match branch {
        Ok(b) if b == config.sync.branch => {}
        Ok(b) => r.fail(
            "state tree",
            format!("on branch {b}, not {}", config.sync.branch),
            format!("git -C {} checkout {}", root.display(), config.sync.branch),
        ),
        Err(e) => {
            r.fail(
                "state tree",
                format!("{} is not a git clone: {e}", root.display()),
                "move it aside and run `trinity init` again",
            );
            return false;
        }
    }
    let git_dir = tree.git_dir();
    for stuck in ["MERGE_HEAD", "rebase-merge", "rebase-apply"] {
        if git_dir.join(stuck).exists() {
            r.fail(
                "state tree",
                format!("a git operation was left half done ({stuck})"),
                format!(
                    "git -C {} merge --abort (git-sync never leaves one: someone ran git by hand)",
                    root.display()
                ),
            );
        }
    }
    match git.run(["remote", "get-url", "origin"]) {
        Ok(url) if url.trim() == config.sync.remote.trim() || config.sync.remote.is_empty() => {
            r.ok(
                "state tree",
                format!("{} on {}", root.display(), config.sync.branch),
            );
        }
        Ok(url) => r.warn(
            "state tree",
            format!(
                "its origin is {} but sync.remote is {}",
                url.trim(),
                config.sync.remote
            ),
            "make them agree (git-sync pushes to sync.remote)",
        ),
        Err(_) => r.ok(
            "state tree",
            format!("{} on {}", root.display(), config.sync.branch),
        ),
    }
    true
}

/// `git ls-remote` against the remote, prompts off, with a deadline.
fn remote(r: &mut Report, config: &Config) {
    if config.sync.mode == SyncMode::None {
        return;
    }
    let mut cmd = Git::new().command([
        "ls-remote",
        "--heads",
        config.sync.remote.as_str(),
        config.sync.branch.as_str(),
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return r.fail("remote", e.to_string(), "install git"),
    };
    let deadline = Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return r.fail(
                    "remote",
                    format!(
                        "{} did not answer within {} s",
                        config.sync.remote,
                        deadline.as_secs()
                    ),
                    "check the network (VPN, Tailscale) and that the host is up",
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return r.fail("remote", e.to_string(), "run it again"),
        }
    }
    match child.wait_with_output() {
        Ok(o) if o.status.success() => {
            let found = !o.stdout.is_empty();
            r.ok(
                "remote",
                format!(
                    "{} answered in {:.1} s{}",
                    config.sync.remote,
                    started.elapsed().as_secs_f64(),
                    if found {
                        ""
                    } else {
                        " (the branch is not there yet)"
                    }
                ),
            );
        }
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr).trim().to_owned();
            r.fail(
                "remote",
                format!("{}: {err}", config.sync.remote),
                "check the URL, the network and the credentials (no prompt can be answered: use an ssh key or a credential helper)",
            );
        }
        Err(e) => r.fail("remote", e.to_string(), "run it again"),
    }
}

/// Each daemon: running (it holds its lock), and still reporting in the heartbeat.
fn daemons(r: &mut Report, config: &Config, tree: &Tree, pc: &PcId) {
    let beat = fsio::load::<Heartbeat>(&tree.heartbeat_file(pc))
        .ok()
        .map(|d| d.value);
    let now = Utc::now();
    for id in DaemonId::ALL {
        let name = id.as_str();
        if id == DaemonId::Coordinator && !config.coordinator.enabled {
            r.ok(name, "disabled on this PC (coordinator.enabled = false)");
            continue;
        }
        if id == DaemonId::GitSync && config.sync.mode == SyncMode::None {
            r.ok(name, "not needed (sync.mode none)");
            continue;
        }
        let dn = id.name();
        let running = match FileLock::try_acquire(&tree.lock_file(&dn)) {
            Ok(Some(_free)) => false,
            Ok(None) => true,
            Err(e) => {
                r.warn(
                    name,
                    format!("cannot tell: {e}"),
                    "check the permissions of the state tree",
                );
                continue;
            }
        };
        let log = tree.log_file(&dn);
        let log_age = modified_age(&log, now);
        if !running {
            let how = if cfg!(windows) {
                format!("start it: `start-trinity.bat {name}` (or its service)")
            } else {
                format!("start it: `{name}` (or its service: `deploy/systemd/trinity.sh start`)")
            };
            let last = log_age.map_or(String::new(), |a| {
                format!("; its log was last written {} ago", human_duration(a))
            });
            r.fail(name, format!("not running{last}"), how);
            continue;
        }
        let reported = beat
            .as_ref()
            .and_then(|b| b.daemons.get(&dn))
            .map(|d| (now - d.updated_at).to_std().unwrap_or_default());
        match reported {
            Some(age) if age > HUNG_AFTER => r.warn(
                name,
                format!(
                    "running, but its last report is {} old",
                    human_duration(age)
                ),
                format!("restart it; its log: `trinity logs {name}`"),
            ),
            _ => r.ok(
                name,
                format!(
                    "running{}",
                    log_age.map_or(String::new(), |a| format!(
                        ", log written {} ago",
                        human_duration(a)
                    ))
                ),
            ),
        }
    }
}

fn sync(r: &mut Report, config: &Config, tree: &Tree) {
    if config.sync.mode == SyncMode::None {
        return;
    }
    let Some(s) = SyncState::load(tree) else {
        r.warn("sync", "git-sync has not reported yet", "start git-sync");
        return;
    };
    let now = Utc::now();
    if let Some(err) = &s.last_error {
        r.fail(
            "sync",
            format!("the last cycle failed: {err}"),
            "read `trinity logs git-sync`; the error names what failed",
        );
        return;
    }
    let since = s.in_sync_at.map(|t| (now - t).to_std().unwrap_or_default());
    match since {
        Some(age) if age > Duration::from_secs(10 * 60) && s.commits_ahead > 0 => r.warn(
            "sync",
            format!(
                "{} commit(s) not on the remote for {}",
                s.commits_ahead,
                human_duration(age)
            ),
            "is git-sync running? `trinity logs git-sync`",
        ),
        Some(age) => r.ok(
            "sync",
            format!(
                "in step with the remote {} ago, {} commit(s) waiting",
                human_duration(age),
                s.commits_ahead
            ),
        ),
        None => r.warn(
            "sync",
            "never in step with the remote yet",
            "wait for git-sync's first cycle",
        ),
    }
}

/// Commit times of the fleet against this clock: a commit "from the future" means a clock is off.
fn clock(r: &mut Report, tree: &Tree) {
    let Ok(out) = Git::in_dir(tree.root()).run(["log", "-50", "--format=%ct"]) else {
        return;
    };
    let now = Utc::now().timestamp();
    let newest = out
        .lines()
        .filter_map(|l| l.trim().parse::<i64>().ok())
        .max();
    match newest {
        Some(t) if t > now + 120 => r.warn(
            "clock",
            format!("a commit of the fleet is {} s ahead of this PC's clock", t - now),
            "turn on time synchronisation (Windows: Settings → Time → Sync now) here or on the other PCs",
        ),
        Some(_) => r.ok("clock", "no commit of the fleet is ahead of this clock"),
        None => {}
    }
}

/// Wake signals and handoffs for this PC that nobody handled.
fn waiting(r: &mut Report, tree: &Tree, pc: &PcId) {
    let now = Utc::now();
    let mut stale_signals = 0;
    for e in std::fs::read_dir(tree.wake_dir(pc))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(doc) = fsio::load::<WakeSignal>(&e.path())
            && (now - doc.value.timestamp).to_std().unwrap_or_default() > UNHANDLED_AFTER
        {
            stale_signals += 1;
        }
    }
    let mut stale_handoffs = 0;
    for e in std::fs::read_dir(tree.handoff_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(doc) = fsio::load::<Handoff>(&e.path())
            && &doc.value.to_pc == pc
            && doc.value.from_pc != doc.value.to_pc
            && (now - doc.value.timestamp).to_std().unwrap_or_default() > UNHANDLED_AFTER
        {
            stale_handoffs += 1;
        }
    }
    if stale_signals + stale_handoffs == 0 {
        r.ok("wake", "no signal or handoff for this PC waits unhandled");
    } else {
        r.fail(
            "wake",
            format!(
                "{stale_signals} wake signal(s) and {stale_handoffs} handoff(s) for {pc} older than {}",
                human_duration(UNHANDLED_AFTER)
            ),
            "is the wake-daemon running? `wake-daemon --status` lists them; `trinity logs wake-daemon`",
        );
    }
}

fn agent(r: &mut Report, config: &Config) {
    let Some(program) = config.agent.command.first() else {
        r.fail(
            "agent",
            "agent.command is empty",
            "set [agent] command in trinity.toml",
        );
        return;
    };
    match trinity_core::program::locate(program) {
        Some(found) => r.ok("agent", format!("{program} → {}", found.display())),
        None => r.fail(
            "agent",
            format!("{program} is not on PATH"),
            if trinity_core::code::is_claude(&config.agent.command) {
                "install Claude Code (npm install -g @anthropic-ai/claude-code) for the account the daemons run as".to_owned()
            } else {
                "install it, or give its full path in [agent] command".to_owned()
            },
        ),
    }
    let workdir = config.agent.workdir.trim();
    if !workdir.is_empty() && !Path::new(workdir).is_dir() {
        r.fail(
            "agent",
            format!("agent.workdir {workdir} does not exist"),
            "clone the project there, or fix agent.workdir",
        );
    }
}

fn credit(r: &mut Report, tree: &Tree, pc: &PcId) {
    match fsio::load::<CreditStatus>(&tree.credit_file(pc)) {
        Ok(doc) => {
            let c = doc.value;
            let text = format!(
                "{}{}",
                c.level.as_str(),
                if c.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.reason)
                }
            );
            if c.level == trinity_core::schema::CreditLevel::Exhausted {
                r.warn(
                    "credit",
                    text,
                    "this PC hands off until its credit resets (`credit-monitor --status`)",
                );
            } else {
                r.ok("credit", text);
            }
        }
        Err(_) => r.warn("credit", "no credit status yet", "start the credit-monitor"),
    }
}

/// Per-machine state files set aside as corrupt (`{file}.corrupt`): a journal record or the
/// credit trigger state stays refused until someone has looked at it.
fn local_state(r: &mut Report, tree: &Tree) {
    let set_aside: Vec<String> = trinity_core::validate::files_under(&tree.local_dir())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".corrupt"))
        .map(|p| {
            tree.relative(&p)
                .unwrap_or_else(|_| p.display().to_string())
        })
        .collect();
    if set_aside.is_empty() {
        r.ok("local state", "no file set aside as corrupt");
    } else {
        r.fail(
            "local state",
            format!("set aside as corrupt: {}", set_aside.join(", ")),
            "look at each (the logs say what it held); what it recorded is not done again until you remove it",
        );
    }
}

/// This PC's signing key, whether the fleet believes it, and what was refused for its signature
/// (docs/security.md).
fn signatures(r: &mut Report, config: &Config, tree: &Tree, pc: &PcId) {
    use trinity_core::trust::{KeyStanding, Keyring, SigningKey};
    let key = match SigningKey::load(tree) {
        Ok(Some(k)) if k.pc() == pc => k,
        Ok(Some(k)) => {
            return r.fail(
                "signatures",
                format!("the signing key is {}'s, not {pc}'s", k.pc()),
                "run `trinity init` again with this PC's id",
            );
        }
        Ok(None) => {
            return r.warn(
                "signatures",
                "this PC has no signing key: it neither signs nor checks what it acts on, so anyone who can push to the state repository can start work here",
                "run `trinity init` again (docs/security.md: moving a fleet to signing)",
            );
        }
        Err(e) => return r.fail("signatures", e.to_string(), "see docs/security.md"),
    };
    let keyring = match Keyring::open(tree, config.security.require_signatures, Utc::now()) {
        Ok(k) => k,
        Err(e) => return r.fail("signatures", e.to_string(), "see docs/security.md"),
    };
    let own = keyring.keys().iter().find(|v| v.key == key.public());
    if let Some(KeyStanding::Revoked { by }) = own.map(|v| &v.standing) {
        return r.fail(
            "signatures",
            format!(
                "this PC's key {} was revoked by {by}: every PC refuses what it writes",
                key.public().fingerprint()
            ),
            "run `trinity init` again for a new key and have a member approve it",
        );
    }
    let published = std::fs::read(tree.key_file(pc))
        .ok()
        .and_then(|b| trinity_core::schema::from_bytes::<trinity_core::schema::KeyRecord>(&b).ok())
        .is_some_and(|k| k.public_key == key.public());
    if !published {
        r.warn(
            "signatures",
            format!(
                "this PC's key {} is not approved yet: the other PCs refuse what it writes",
                key.public().fingerprint()
            ),
            format!(
                "on a member, run `trinity fleet approve {pc} --key {}`",
                key.public()
            ),
        );
    }
    let untrusted: Vec<String> = keyring
        .keys()
        .iter()
        .filter(|v| matches!(v.standing, KeyStanding::Untrusted { .. }))
        .map(|v| format!("{} {}", v.pc, v.key.fingerprint()))
        .collect();
    if !untrusted.is_empty() {
        r.warn(
            "signatures",
            format!("keys in the tree that nobody this PC trusts approved: {}", untrusted.join(", ")),
            "approve them if they are a member's (`trinity fleet approve`); otherwise someone pushed them: see docs/security.md",
        );
    }
    let refused = trinity_core::trust::set_aside(tree);
    if !refused.is_empty() {
        let latest: Vec<String> = refused
            .iter()
            .take(3)
            .map(|s| format!("{} ({})", s.original, s.reason))
            .collect();
        r.warn(
            "signatures",
            format!("{} file(s) refused for their signature and set aside, latest: {}", refused.len(), latest.join("; ")),
            "they started nothing; if a member wrote them, approve its key and move them back from local/quarantine/",
        );
    }
    if !config.security.require_signatures {
        r.warn(
            "signatures",
            "unsigned files are accepted (security.require_signatures = false)",
            "set it back to true once every PC has a key and is approved",
        );
    }
    if published && untrusted.is_empty() && refused.is_empty() && config.security.require_signatures
    {
        let trusted = keyring
            .keys()
            .iter()
            .filter(|v| {
                matches!(
                    v.standing,
                    KeyStanding::Pinned | KeyStanding::Approved { .. }
                )
            })
            .count();
        r.ok(
            "signatures",
            format!(
                "signing with key {}; {trusted} key(s) trusted",
                key.public().fingerprint()
            ),
        );
    }
}

fn modified_age(path: &Path, now: DateTime<Utc>) -> Option<Duration> {
    let m = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    let t: DateTime<Utc> = m.into();
    (now - t).to_std().ok()
}
