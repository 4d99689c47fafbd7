//! `trinity demo`: a whole fleet on one machine — a local bare repository, three PCs (or
//! `--pcs N`), each with its own state tree, configuration and the four real daemons — playing
//! the seed's scenarios with a stand-in agent, every step checked in the files.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use trinity_core::fsio;
use trinity_core::schema::{Claim, Handoff, InstanceStatus, Lease, Verdict, Verification};
use trinity_core::{DaemonId, InstanceState, PcId, TaskId, Tree};

/// How long one step may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Run a whole fleet on this machine and watch it work.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How many PCs (3 to 9)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(3..=9))]
    pcs: u8,
    /// Keep the demo's directory (state trees, logs, dashboard) afterwards
    #[arg(long)]
    keep: bool,
    /// Where to make the demo's directory [default: a new temporary directory]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Where the daemon programs are [default: beside this `trinity`]
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
}

/// The stand-in agent the demo's wake-daemons start (hidden: `trinity demo-agent`).
#[derive(Debug, Args)]
pub(crate) struct DemoAgentArgs {
    /// Be the demo's verification phase instead: check the finished task's result
    #[arg(long)]
    verify: bool,
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    let bin_dir = match args.bin_dir {
        Some(d) => d,
        None => exe
            .parent()
            .map(Path::to_owned)
            .context("this program has no directory")?,
    };
    for d in DaemonId::ALL {
        let p = bin_dir.join(format!("{d}{}", std::env::consts::EXE_SUFFIX));
        if !p.is_file() {
            bail!(
                "{} is missing: the demo runs the real daemons. Build them (cargo build --release --workspace) \
                 or install them (see README.md), or point --bin-dir at them",
                p.display()
            );
        }
    }
    let (temp, dir) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            if std::fs::read_dir(d)?.next().is_some() {
                bail!(
                    "{} is not empty: give an empty or new directory",
                    d.display()
                );
            }
            (None, std::path::absolute(d)?)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("trinity-demo-")
                .tempdir()
                .context("cannot make a temporary directory")?;
            let p = t.path().to_owned();
            (Some(t), p)
        }
    };
    let pcs: Vec<String> = (1..=args.pcs).map(|i| format!("PC{i}")).collect();
    let mut demo = Demo {
        dir: dir.clone(),
        exe,
        bin_dir,
        pcs,
        children: BTreeMap::new(),
        start: Instant::now(),
        step: 0,
        total: 10,
    };
    println!(
        "Trinity demo: {} PCs sharing one bare git repository, each running the real daemons ({}).",
        demo.pcs.len(),
        DaemonId::ALL.map(DaemonId::as_str).join(", ")
    );
    println!("Directory: {}\n", dir.display());
    let result = demo.play();
    demo.stop_all();
    match result {
        Ok(()) => {
            println!();
            let _ = demo.trinity_inherit("PC1", &["status"]);
            let leader_pc = demo.pcs.last().cloned().unwrap_or_default();
            println!(
                "\nDashboard: {}",
                demo.tree(&leader_pc).dashboard_html_file().display()
            );
            println!(
                "Logs:      {} (one per daemon; `trinity logs NAME` with that PC's config)",
                demo.tree("PC1").logs_dir().display()
            );
            println!(
                "\nEvery step was observed in the files: the demo passed in {:.1} s.",
                demo.start.elapsed().as_secs_f64()
            );
            if args.keep || args.dir.is_some() {
                if let Some(t) = temp {
                    let kept = t.keep();
                    println!("Kept {}.", kept.display());
                } else {
                    println!("Kept {}.", dir.display());
                }
            } else {
                println!("(The directory is removed now; run with --keep to look around.)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("\nThe demo FAILED at step {}: {e:#}", demo.step);
            eprintln!("{}", demo.log_tails(15));
            if let Some(t) = temp {
                let kept = t.keep();
                eprintln!("Kept {} for a look.", kept.display());
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

struct Demo {
    dir: PathBuf,
    exe: PathBuf,
    bin_dir: PathBuf,
    pcs: Vec<String>,
    children: BTreeMap<(String, String), Child>,
    start: Instant,
    step: usize,
    total: usize,
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl Demo {
    /// The scenarios in order: the fleet up, work queued and verified, the three handoff
    /// tests around the ring, a PC gone silent and back, the fleet in step.
    fn play(&mut self) -> anyhow::Result<()> {
        let pcs = self.pcs.clone();
        let leader = pcs[pcs.len() - 1].clone();
        self.start_fleet(&leader)?;
        let holder = self.queue_and_verify(&pcs[0])?;
        let holder = self.round_the_ring(holder)?;
        self.silence_and_return(holder, &leader)?;
        self.begin("", "all PCs in step");
        self.wait("the fleet in sync", || Ok(self.in_sync()))?;
        self.say("", "every PC's tree is at the remote's head");
        Ok(())
    }

    /// Every PC initialised and its four daemons started; the preferred leader's lease on the
    /// remote.
    fn start_fleet(&mut self, leader: &str) -> anyhow::Result<()> {
        let pcs = self.pcs.clone();
        self.begin("", &format!("setting up {} (trinity init)", pcs.join(", ")));
        self.set_up()?;
        if let Some((first, others)) = pcs.split_first() {
            self.say(
                first,
                &format!(
                    "founded the fleet's trust and approved the keys of {}: every handoff, signal and task is signed",
                    others.join(", ")
                ),
            );
        }
        for pc in &pcs {
            for d in DaemonId::ALL {
                self.start_daemon(d.as_str(), pc)?;
            }
        }
        self.wait("the preferred leader's lease on the remote", || {
            Ok(self
                .remote_lease()?
                .is_some_and(|l| l.holder.as_str() == leader))
        })?;
        let epoch = self.remote_lease()?.map_or(0, |l| l.epoch);
        self.say(
            leader,
            &format!("leads the fleet (lease epoch {epoch}, on the remote)"),
        );
        Ok(())
    }

    /// Three tasks queued, two assigned; intro finished and verified; chapter (after intro)
    /// assigned. Returns chapter's holder.
    fn queue_and_verify(&mut self, first: &str) -> anyhow::Result<String> {
        self.begin(
            "",
            "queueing work: intro (high), chapter (after intro), appendix (low)",
        );
        for [task, description, option, value] in [
            ["intro", "Write the introduction", "-p", "high"],
            [
                "chapter",
                "Write the first chapter",
                "--depends-on",
                "intro",
            ],
            ["appendix", "Write the appendix", "-p", "low"],
        ] {
            self.trinity(
                first,
                &["task", "add", task, "-d", description, option, value],
            )?;
        }
        self.wait("intro and appendix assigned and started", || {
            Ok(self.agent_pc("intro").is_some() && self.agent_pc("appendix").is_some())
        })?;
        let intro_pc = self.agent_pc("intro").unwrap_or_default();
        let appendix_pc = self.agent_pc("appendix").unwrap_or_default();
        self.say(
            &intro_pc,
            "was given intro by the coordinator; its agent starts",
        );
        self.say(&appendix_pc, "was given appendix; chapter waits for intro");

        self.begin(
            &intro_pc,
            "finishes intro: `trinity work done` submits it for verification",
        );
        self.wait("intro's verdict", || Ok(self.verdict("intro").is_some()))?;
        let v = self.verdict("intro").context("intro's verdict")?;
        if v.verdict != Some(Verdict::Approve) {
            bail!("intro was not approved: {:?}", v.reasons);
        }
        self.say(
            v.coordinator.as_str(),
            &format!("verified intro: APPROVE — {}", v.reasons.join("; ")),
        );
        self.wait(&format!("{intro_pc} back on standby"), || {
            Ok(self
                .instance(&intro_pc)
                .is_some_and(|i| i.state == InstanceState::Standby))
        })?;
        self.say(
            &intro_pc,
            "took the verdict: APPROVED → HANDOFF_COMPLETE → STANDBY",
        );

        self.begin("", "intro is done, so chapter is assigned");
        self.wait("chapter assigned", || {
            Ok(self.claim_holder("chapter").is_some())
        })?;
        let holder = self.claim_holder("chapter").unwrap_or_default();
        self.wait(&format!("{holder}'s agent on chapter"), || {
            Ok(self.agent_runs(&holder, "chapter") >= 1)
        })?;
        self.say(&holder, "works on chapter (its agent reports progress)");
        Ok(holder)
    }

    /// Tests 1 to 3: a forced handoff, three rate limits, and the rest of the ring back to where
    /// chapter started. Returns chapter's holder.
    fn round_the_ring(&mut self, mut holder: String) -> anyhow::Result<String> {
        let pcs = self.pcs.clone();
        // Test 1: a forced handoff.
        let ring_start = holder.clone();
        self.begin(
            &holder,
            "Test 1 — forced handoff (credit-monitor --force-handoff)",
        );
        let out = self.program("credit-monitor", &holder, &["--force-handoff"])?;
        holder = self.follow_handoff(&holder, &out, "chapter")?;

        // Test 2: three rate limits.
        self.begin(
            &holder,
            "Test 2 — three rate limits (credit-monitor --record-rate-limit ×3)",
        );
        let mut out = String::new();
        for _ in 0..3 {
            out = self.program("credit-monitor", &holder, &["--record-rate-limit"])?;
        }
        holder = self.follow_handoff(&holder, &out, "chapter")?;

        // Test 3: round the ring back to where chapter started.
        self.begin(
            &holder,
            &format!("Test 3 — the full rotation, back to {ring_start}"),
        );
        let mut hops = 0;
        while holder != ring_start {
            let from = holder.clone();
            // The next PC may still be pausing after its own handoff.
            let out = self.retry_handoff(&from)?;
            holder = self.follow_handoff(&from, &out, "chapter")?;
            hops += 1;
            if hops > pcs.len() {
                bail!("chapter went round more than once without reaching {ring_start}");
            }
        }
        self.say(&holder, "has chapter back: the rotation is complete");
        let first_pc = pcs[0].clone();
        self.wait(&format!("{holder}'s state on every PC"), || {
            Ok(self.instance_seen_by(&first_pc, &holder).is_some_and(|i| {
                i.state == InstanceState::Active
                    && i.current_work
                        .as_ref()
                        .is_some_and(|w| w.task_id.as_str() == "chapter")
            }))
        })?;
        Ok(holder)
    }

    /// Chapter's holder goes silent (its daemons killed): its work is reassigned and resumed
    /// elsewhere; it comes back and does not resume it.
    fn silence_and_return(&mut self, holder: String, leader: &str) -> anyhow::Result<()> {
        let pcs = self.pcs.clone();
        let first_pc = pcs[0].clone();
        let chapter_runs = self.agent_runs_anywhere("chapter");
        // A PC goes silent.
        let silent = holder.clone();
        self.begin(
            &silent,
            "goes silent (all four daemons killed) while holding chapter",
        );
        for d in DaemonId::ALL {
            self.kill(d.as_str(), &silent);
        }
        let watcher = pcs
            .iter()
            .find(|p| **p != silent)
            .cloned()
            .unwrap_or_default();
        if silent == leader {
            self.wait("another PC taking the coordinator lease", || {
                Ok(self
                    .remote_lease()?
                    .is_some_and(|l| l.holder.as_str() != silent))
            })?;
            let l = self.remote_lease()?.context("lease")?;
            self.say(
                l.holder.as_str(),
                &format!("took the coordinator lease over (epoch {})", l.epoch),
            );
        }
        self.wait("the silent PC's work reassigned and resumed", || {
            Ok(self.claim_holder("chapter").is_some_and(|h| h != silent)
                && self.agent_runs_anywhere("chapter") > chapter_runs
                && self.postmortems(&watcher) >= 1)
        })?;
        let heir = self.claim_holder("chapter").unwrap_or_default();
        self.say(
            &heir,
            &format!("was given {silent}'s work by the coordinator (post-mortem written); its agent resumes chapter"),
        );

        self.begin(&silent, "comes back");
        for d in DaemonId::ALL {
            self.start_daemon(d.as_str(), &silent)?;
        }
        let runs_before = self.agent_runs(&silent, "chapter");
        self.wait(&format!("{silent} standing down"), || {
            Ok(self.instance(&silent).is_some_and(|i| {
                i.current_work
                    .as_ref()
                    .is_none_or(|w| w.task_id.as_str() != "chapter")
            }))
        })?;
        if self.agent_runs(&silent, "chapter") != runs_before {
            bail!("{silent} started chapter again after it came back");
        }
        self.say(&silent, "finds its work reassigned and does not resume it");
        self.wait("the fleet's view of both", || {
            Ok(self.instance_seen_by(&first_pc, &silent).is_some_and(|i| {
                i.current_work
                    .as_ref()
                    .is_none_or(|w| w.task_id.as_str() != "chapter")
            }) && self
                .instance_seen_by(&first_pc, &heir)
                .is_some_and(|i| i.claimed_tasks.iter().any(|t| t.as_str() == "chapter")))
        })?;
        Ok(())
    }

    // ---- steps and output ----

    fn begin(&mut self, pc: &str, what: &str) {
        self.step += 1;
        self.total = self.total.max(self.step);
        self.line(pc, what, true);
    }

    fn say(&self, pc: &str, what: &str) {
        self.line(pc, what, false);
    }

    fn line(&self, pc: &str, what: &str, head: bool) {
        let t = self.start.elapsed().as_secs_f64();
        let step = if head {
            format!("{:>2}/{}", self.step, self.total)
        } else {
            "    ".to_owned()
        };
        let mark = if head { "▶" } else { " " };
        println!("[{t:>5.1}s] {step} {mark} {pc:<4} {what}");
        let _ = std::io::stdout().flush();
    }

    fn wait(&self, what: &str, mut ok: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if ok()? {
                return Ok(());
            }
            if start.elapsed() > STEP_TIMEOUT {
                bail!(
                    "gave up waiting for {what} after {} s",
                    STEP_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // ---- processes ----

    fn program_path(&self, name: &str) -> PathBuf {
        self.bin_dir
            .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
    }

    fn config(&self, pc: &str) -> PathBuf {
        self.dir.join(pc).join("trinity.toml")
    }

    fn command(&self, program: &Path, pc: &str) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.dir.join(pc))
            .env("TRINITY_CONFIG", self.config(pc))
            .env("AGENT_DEMO_DIR", &self.dir)
            // Every change is committed at once and the remote watched closely: a demo
            // fleet is quick.
            .env("TRINITY_SYNC__HEARTBEAT_COMMIT_INTERVAL", "0s")
            .env("TRINITY_SYNC__PULL_INTERVAL", "1s")
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null());
        c
    }

    fn trinity(&self, pc: &str, args: &[&str]) -> anyhow::Result<String> {
        self.run_capture(&self.exe.clone(), pc, args)
    }

    fn trinity_inherit(&self, pc: &str, args: &[&str]) -> anyhow::Result<()> {
        let status = self.command(&self.exe, pc).args(args).status()?;
        if !status.success() {
            bail!("trinity {} failed", args.join(" "));
        }
        Ok(())
    }

    fn program(&self, name: &str, pc: &str, args: &[&str]) -> anyhow::Result<String> {
        self.run_capture(&self.program_path(name), pc, args)
    }

    fn run_capture(&self, program: &Path, pc: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(program, pc)
            .args(args)
            .output()
            .with_context(|| format!("cannot run {}", program.display()))?;
        if !out.status.success() {
            bail!(
                "{} {} (as {pc}) failed: {}{}",
                program
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn start_daemon(&mut self, name: &str, pc: &str) -> anyhow::Result<()> {
        let child = self
            .command(&self.program_path(name), pc)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {name} for {pc}"))?;
        self.children
            .insert((pc.to_owned(), name.to_owned()), child);
        Ok(())
    }

    fn kill(&mut self, name: &str, pc: &str) {
        if let Some(mut c) = self.children.remove(&(pc.to_owned(), name.to_owned())) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop_all(&mut self) {
        let children = std::mem::take(&mut self.children);
        for mut c in children.into_values() {
            stop(&mut c);
        }
    }

    fn set_up(&self) -> anyhow::Result<()> {
        let remote = self.dir.join("remote.git");
        let remote_s = remote.to_str().context("the demo's path is not UTF-8")?;
        let fleet = self.pcs.join(",");
        let leader = self.pcs.last().cloned().unwrap_or_default();
        for (i, pc) in self.pcs.iter().enumerate() {
            std::fs::create_dir_all(self.dir.join(pc))?;
            let mut args = vec!["init", "--pc", pc.as_str(), "--remote", remote_s];
            if i == 0 {
                args.extend([
                    "--create-remote",
                    "--fleet",
                    &fleet,
                    "--coordinator",
                    &leader,
                ]);
            }
            self.trinity(pc, &args)?;
            let t = |s: &str| toml::Value::String(s.to_owned()).to_string();
            let exe = self
                .exe
                .to_str()
                .context("the program's path is not UTF-8")?;
            let extra = format!(
                "\n# The demo: quick timings, and a stand-in agent.\n\
                 [credit]\nclaude_projects_dir = \"\"\ninterval = \"500ms\"\npause = \"1s\"\n\
                 [wake]\npoll_interval = \"500ms\"\n\
                 [agent]\ncommand = [{exe}, \"demo-agent\"]\nnew_console = false\n\
                 [coordinator]\nmonitor_interval = \"1s\"\nlease_ttl = \"5s\"\nsuspect_after = \"4s\"\ndead_after = \"8s\"\n\
                 [[coordinator.phases]]\nname = \"result-recorded\"\ncommand = [{exe}, \"demo-agent\", \"--verify\"]\ncritical = true\n",
                exe = t(exe),
            );
            let path = self.config(pc);
            let mut text = std::fs::read_to_string(&path)?;
            text.push_str(&extra);
            std::fs::write(&path, text)?;
        }
        self.approve_keys()
    }

    /// The first PC founded the fleet's trust at `init`: it approves the others' keys, and
    /// git-sync brings the approvals to every PC before any daemon starts.
    fn approve_keys(&self) -> anyhow::Result<()> {
        let Some((founder, others)) = self.pcs.split_first() else {
            return Ok(());
        };
        for pc in others {
            let key = trinity_core::trust::SigningKey::load(&self.tree(pc))?
                .with_context(|| format!("{pc} has no signing key after init"))?;
            let key = key.public().to_string();
            self.trinity(founder, &["fleet", "approve", pc, "--key", &key])?;
        }
        for pc in &self.pcs {
            self.program("git-sync", pc, &["--once"])?;
        }
        Ok(())
    }

    // ---- observations ----

    fn tree(&self, pc: &str) -> Tree {
        Tree::new(self.dir.join(pc).join(".trinity"))
    }

    fn remote_lease(&self) -> anyhow::Result<Option<Lease>> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(self.dir.join("remote.git"))
            .args(["show", "trinity:coordinator/lease.json"])
            .stderr(Stdio::null())
            .output()
            .context("cannot run git")?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(trinity_core::schema::from_bytes::<Lease>(&out.stdout).ok())
    }

    /// Who holds a task, as the first PC sees it (its tree is synced like any other).
    fn claim_holder(&self, task: &str) -> Option<String> {
        let id = TaskId::new(task).ok()?;
        fsio::load::<Claim>(&self.tree(&self.pcs[0]).claim_file(&id))
            .ok()
            .map(|d| d.value.pc.to_string())
    }

    fn instance(&self, pc: &str) -> Option<InstanceStatus> {
        self.instance_seen_by(pc, pc)
    }

    /// `pc`'s instance as `seen_by`'s tree has it.
    fn instance_seen_by(&self, seen_by: &str, pc: &str) -> Option<InstanceStatus> {
        let id = PcId::new(pc).ok()?;
        fsio::load::<InstanceStatus>(&self.tree(seen_by).instance_file(&id))
            .ok()
            .map(|d| d.value)
    }

    /// How many times the stand-in agent started on `task`, on any PC.
    fn agent_runs_anywhere(&self, task: &str) -> usize {
        self.pcs.iter().map(|p| self.agent_runs(p, task)).sum()
    }

    fn verdict(&self, task: &str) -> Option<Verification> {
        let dir = self.tree(&self.pcs[0]).verification_dir();
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|e| fsio::load::<Verification>(&e.path()).ok().map(|d| d.value))
            .find(|v| v.verdict.is_some() && v.task.as_ref().is_some_and(|t| t.as_str() == task))
    }

    fn postmortems(&self, seen_by: &str) -> usize {
        std::fs::read_dir(self.tree(seen_by).postmortem_dir())
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// How many times the stand-in agent started on `pc` for `task` (its own log).
    fn agent_runs(&self, pc: &str, task: &str) -> usize {
        std::fs::read_to_string(self.dir.join("agents.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                let mut w = l.split_whitespace().skip(1);
                w.next() == Some(pc) && w.next() == Some(task)
            })
            .count()
    }

    /// The PC where the stand-in agent first started on `task`.
    fn agent_pc(&self, task: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join("agents.log"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let mut w = l.split_whitespace().skip(1);
                let pc = w.next()?;
                (w.next() == Some(task)).then(|| pc.to_owned())
            })
    }

    fn in_sync(&self) -> bool {
        let Ok(out) = Command::new("git")
            .arg("--git-dir")
            .arg(self.dir.join("remote.git"))
            .args(["rev-parse", "trinity"])
            .output()
        else {
            return false;
        };
        let head = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        self.pcs.iter().all(|pc| {
            Command::new("git")
                .arg("-C")
                .arg(self.tree(pc).root())
                .args(["rev-parse", "HEAD"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == head)
        })
    }

    /// After a handoff from `from`: the archived handoff, the claim and the agent on the
    /// receiving PC. Returns the new holder.
    fn follow_handoff(&mut self, from: &str, out: &str, task: &str) -> anyhow::Result<String> {
        let path = out
            .lines()
            .rev()
            .find_map(|l| {
                l.trim()
                    .rsplit(": ")
                    .next()
                    .filter(|p| p.ends_with(".json"))
            })
            .map(PathBuf::from)
            .with_context(|| format!("{from} handed nothing off: {out}"))?;
        let h = fsio::load::<Handoff>(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .value;
        let id = h.id().context("the handoff has no id")?;
        let to = h.to_pc.to_string();
        self.say(
            from,
            &format!("wrote {id} ({}), woke {to} and pauses", h.reason.describe()),
        );
        let runs = self.agent_runs(&to, task);
        self.wait(&format!("{to} accepting {id}"), || {
            Ok(self.tree(&to).processed_handoff_file(&id).is_file()
                && self.claim_holder(task).as_deref() == Some(to.as_str())
                && self.agent_runs(&to, task) > runs)
        })?;
        let progress = self
            .instance(&to)
            .and_then(|i| i.current_work)
            .map(|w| w.progress)
            .unwrap_or_default();
        self.say(
            &to,
            &format!(
                "accepted it: claimed {task}, its agent resumes{}",
                if progress.is_empty() {
                    String::new()
                } else {
                    format!(" from {progress}")
                }
            ),
        );
        Ok(to)
    }

    fn retry_handoff(&self, from: &str) -> anyhow::Result<String> {
        let start = Instant::now();
        loop {
            let out = self.program("credit-monitor", from, &["--force-handoff"])?;
            if out.contains("handoff:") {
                return Ok(out);
            }
            if start.elapsed() > STEP_TIMEOUT {
                bail!("{from} found nobody to hand off to: {out}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for pc in &self.pcs {
            for d in DaemonId::ALL {
                let path = self.tree(pc).log_file(&d.name());
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if text.is_empty() {
                    continue;
                }
                let all: Vec<&str> = text.lines().collect();
                out.push_str(&format!("---- {pc} {d} ({}) ----\n", path.display()));
                for l in &all[all.len().saturating_sub(lines)..] {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// Asks a daemon to stop (SIGTERM on Unix, so it finishes its cycle), then makes sure.
fn stop(child: &mut Child) {
    #[cfg(unix)]
    {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The stand-in agent: records its start, reports progress on its task, and finishes `intro`
/// (so that a verified `work done` is part of the demo); other tasks stay in progress, which
/// is what the handoffs move around.
pub(crate) fn agent(args: DemoAgentArgs) -> anyhow::Result<ExitCode> {
    if args.verify {
        return verify();
    }
    let pc = std::env::var("TRINITY_PC").unwrap_or_default();
    let task = std::env::var("TRINITY_TASK_ID").unwrap_or_default();
    let handoff = std::env::var("TRINITY_HANDOFF_FILE").unwrap_or_default();
    let dir = std::env::var_os("AGENT_DEMO_DIR").map(PathBuf::from);
    let mut runs = 0;
    if let Some(dir) = &dir {
        let log = dir.join("agents.log");
        runs = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some(task.as_str()))
            .count();
        let line = format!(
            "{} {pc} {} {}\n",
            chrono::Utc::now().to_rfc3339(),
            if task.is_empty() { "-" } else { &task },
            Path::new(&handoff)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        f.write_all(line.as_bytes())?;
    }
    if task.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe()?;
    // Its API call, as Claude Code's transcript would report it: a success and its tokens
    // (the dashboard counts them per PC and day).
    let tokens = (18_000 + 7_000 * runs).to_string();
    let _ =
        Command::new(exe.with_file_name(format!("credit-monitor{}", std::env::consts::EXE_SUFFIX)))
            .args(["--record-success", "--duration", "2.5", "--tokens", &tokens])
            .stdout(Stdio::null())
            .status();
    let pct = ((runs + 1) * 20).min(90).to_string();
    let note = format!("worked on {pc}");
    let _ = Command::new(&exe)
        .args([
            "work",
            "progress",
            "--task",
            &task,
            "--progress",
            &pct,
            "--note",
            &note,
        ])
        .stdout(Stdio::null())
        .status();
    if task == "intro" {
        let _ = Command::new(&exe)
            .args([
                "work",
                "done",
                "--task",
                &task,
                "--summary",
                &format!("written on {pc}"),
            ])
            .stdout(Stdio::null())
            .status();
    }
    Ok(ExitCode::SUCCESS)
}

/// The demo's verification phase (run by the coordinator, in the leader's environment): the
/// finished task has a valid done record saying it was completed. Reports as phases do, with
/// a last line of JSON.
fn verify() -> anyhow::Result<ExitCode> {
    let task = std::env::var("TRINITY_TASK_ID").context("TRINITY_TASK_ID is not set")?;
    let (_, tree) = crate::load_tree(None)?;
    let id = TaskId::new(&task).map_err(|e| anyhow::anyhow!("{e}"))?;
    let done = fsio::load::<trinity_core::schema::Done>(&tree.done_file(&id));
    match done {
        Ok(d) if d.value.outcome == trinity_core::schema::Outcome::Completed => {
            println!("{task}: completed by {} — {}", d.value.pc, d.value.summary);
            println!(
                "{{\"critical\":0,\"high\":0,\"medium\":0,\"low\":0,\"coverage\":1.0,\"benchmarks_ok\":true}}"
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(d) => {
            println!("{task}: its result says {:?}", d.value.outcome);
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            println!("{task}: no readable result: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
