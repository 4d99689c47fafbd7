//! Running the verification phases: each a configured command, without a shell, in a checkout
//! of the work, with a start deadline and a run deadline. One run works on its own thread, so
//! a slow suite never blocks the coordinator's cycle.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use trinity_core::config::PhaseConfig;
use trinity_core::coordination::phase_report;
use trinity_core::gitcmd::Git;
use trinity_core::schema::{CodeSnapshot, PhaseResult, PhaseStatus};

/// The most output kept from a phase.
pub const OUTPUT_TAIL_BYTES: u64 = 4096;

/// What one run needs.
#[derive(Debug, Clone)]
pub struct Job {
    /// The phases, in order.
    pub phases: Vec<PhaseConfig>,
    /// Where to run them: the checkout prepared for this work, or the agent's directory.
    pub workdir: Workdir,
    /// Extra environment: TRINITY_HANDOFF_ID, TRINITY_TASK_ID, …
    pub env: Vec<(String, String)>,
    /// Where the phases' output files go.
    pub scratch: PathBuf,
}

/// Where the phases run.
#[derive(Debug, Clone)]
pub enum Workdir {
    /// A directory as it is.
    Plain(PathBuf),
    /// A checkout at `dir` made of the snapshot (cloned on first use, then fetched and checked
    /// out, cleaned of anything the previous run left).
    Snapshot {
        /// The checkout's directory.
        dir: PathBuf,
        /// The work to check out.
        code: CodeSnapshot,
    },
}

/// A run in progress.
#[derive(Debug)]
pub struct Running {
    cancel: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<PhaseResult>>>,
}

impl Running {
    /// Starts `job` on a thread of its own.
    pub fn start(job: Job) -> std::io::Result<Self> {
        let cancel = Arc::new(AtomicBool::new(false));
        let c = cancel.clone();
        let handle = std::thread::Builder::new()
            .name("verify".to_owned())
            .spawn(move || run(&job, &c))?;
        Ok(Self {
            cancel,
            handle: Some(handle),
        })
    }

    /// The results, once every phase ended.
    pub fn try_finish(&mut self) -> Option<Vec<PhaseResult>> {
        if !self.handle.as_ref()?.is_finished() {
            return None;
        }
        let handle = self.handle.take()?;
        Some(handle.join().unwrap_or_else(|_| {
            vec![PhaseResult {
                summary: Some("the verification thread panicked".to_owned()),
                ..PhaseResult::new("verification", PhaseStatus::Failed, false)
            }]
        }))
    }

    /// Stops the run: its running phase is killed, the rest never start.
    pub fn cancel(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Waits for the run to end (after [`Running::cancel`], promptly).
    pub fn wait(mut self) -> Option<Vec<PhaseResult>> {
        self.handle.take()?.join().ok()
    }
}

fn blank(p: &PhaseConfig, status: PhaseStatus, summary: String) -> PhaseResult {
    PhaseResult {
        summary: Some(summary),
        ..PhaseResult::new(p.name.clone(), status, p.critical)
    }
}

/// Runs every phase in order and returns their results (a phase that could not run is
/// `not_started` with why; after a cancel the remaining ones are `not_started` too).
pub fn run(job: &Job, cancel: &AtomicBool) -> Vec<PhaseResult> {
    let dir = match prepare(&job.workdir) {
        Ok(dir) => dir,
        Err(why) => {
            return job
                .phases
                .iter()
                .map(|p| {
                    blank(
                        p,
                        PhaseStatus::NotStarted,
                        format!("the work could not be checked out: {why}"),
                    )
                })
                .collect();
        }
    };
    let _ = std::fs::create_dir_all(&job.scratch);
    let mut out = Vec::new();
    for (i, phase) in job.phases.iter().enumerate() {
        if cancel.load(Ordering::SeqCst) {
            out.push(blank(
                phase,
                PhaseStatus::NotStarted,
                "the verification was stopped".to_owned(),
            ));
            continue;
        }
        out.push(run_phase(phase, &dir, job, i, cancel));
    }
    out
}

fn run_phase(
    phase: &PhaseConfig,
    dir: &Path,
    job: &Job,
    index: usize,
    cancel: &AtomicBool,
) -> PhaseResult {
    let log_path = job.scratch.join(format!("phase-{index}.log"));
    let (mut child, started) = match start_phase(phase, dir, job, &log_path) {
        Ok(running) => running,
        Err(not_started) => return *not_started,
    };
    let (status, ending) = wait_phase(&mut child, started, phase, cancel);
    judge_phase(phase, &log_path, started, status, ending)
}

/// How a phase's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// By itself.
    Exited,
    /// Killed past its run deadline.
    TimedOut,
    /// Killed because the verification was stopped.
    Stopped,
}

/// Starts the phase's command in `dir`, its output into `log_path`; or the result of a phase
/// that did not start (no log, an empty command, a spawn failure, past its start deadline).
fn start_phase(
    phase: &PhaseConfig,
    dir: &Path,
    job: &Job,
    log_path: &Path,
) -> Result<(std::process::Child, Instant), Box<PhaseResult>> {
    let not_started = |why: String| Box::new(blank(phase, PhaseStatus::NotStarted, why));
    let log = File::create(log_path)
        .map_err(|e| not_started(format!("cannot create {}: {e}", log_path.display())))?;
    let err_log = log.try_clone().map_err(|e| not_started(e.to_string()))?;
    let Some((program, args)) = phase.command.split_first() else {
        return Err(not_started("its command is empty".to_owned()));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log);
    for (k, v) in &job.env {
        cmd.env(k, v);
    }
    let asked = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| not_started(format!("cannot start {program}: {e}")))?;
    let started = Instant::now();
    if started - asked > phase.start_deadline {
        let _ = child.kill();
        let _ = child.wait();
        return Err(not_started(format!(
            "took {:.1} s to start, past its start deadline of {}",
            (started - asked).as_secs_f64(),
            humantime::format_duration(phase.start_deadline)
        )));
    }
    Ok((child, started))
}

/// Waits for the phase's process, killing it past its run deadline or when the verification
/// is stopped.
fn wait_phase(
    child: &mut std::process::Child,
    started: Instant,
    phase: &PhaseConfig,
    cancel: &AtomicBool,
) -> (Option<std::process::ExitStatus>, Ending) {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (Some(status), Ending::Exited),
            Ok(None) => {}
            Err(_) => return (None, Ending::Exited),
        }
        let ending = if started.elapsed() > phase.run_deadline {
            Ending::TimedOut
        } else if cancel.load(Ordering::SeqCst) {
            Ending::Stopped
        } else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = child.kill();
        return (child.wait().ok(), ending);
    }
}

/// The phase's result: how it ended, its exit code, and the report its output's last line
/// gives.
fn judge_phase(
    phase: &PhaseConfig,
    log_path: &Path,
    started: Instant,
    status: Option<std::process::ExitStatus>,
    ending: Ending,
) -> PhaseResult {
    let duration = started.elapsed().as_secs_f64();
    let tail = read_tail(log_path);
    let mut result = blank(phase, PhaseStatus::Failed, String::new());
    result.duration_s = Some((duration * 1000.0).round() / 1000.0);
    result.output_tail = tail.clone();
    result.summary = None;
    match ending {
        Ending::TimedOut => {
            result.status = PhaseStatus::TimedOut;
            result.summary = Some(format!(
                "stopped after its run deadline of {}",
                humantime::format_duration(phase.run_deadline)
            ));
            return result;
        }
        Ending::Stopped => {
            result.status = PhaseStatus::NotStarted;
            result.summary = Some("the verification was stopped".to_owned());
            return result;
        }
        Ending::Exited => {}
    }
    result.exit_code = status.and_then(|s| s.code());
    match phase_report(&tail) {
        Ok(Some(r)) => {
            result.critical_issues = r.critical;
            result.high_issues = r.high;
            result.medium_issues = r.medium;
            result.low_issues = r.low;
            result.coverage = r.coverage;
            result.benchmarks_ok = r.benchmarks_ok;
        }
        Ok(None) => {}
        Err(why) => {
            // It meant to report and the report is unreadable: unclear, never a pass.
            result.status = PhaseStatus::Failed;
            result.exit_code = None;
            result.summary = Some(why);
            return result;
        }
    }
    result.status = if result.exit_code == Some(0) {
        PhaseStatus::Passed
    } else {
        PhaseStatus::Failed
    };
    result.summary = Some(match result.exit_code {
        Some(0) => format!("passed in {duration:.1} s"),
        Some(c) => format!("exit code {c} after {duration:.1} s"),
        None => format!("killed by a signal after {duration:.1} s"),
    });
    result
}

/// The last [`OUTPUT_TAIL_BYTES`] of a file, as text, cut at a line start when possible.
fn read_tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(OUTPUT_TAIL_BYTES);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0
        && let Some(i) = text.find('\n')
    {
        return text[i + 1..].to_owned();
    }
    text
}

/// Makes the directory the phases run in.
fn prepare(workdir: &Workdir) -> Result<PathBuf, String> {
    match workdir {
        Workdir::Plain(dir) => {
            if dir.is_dir() {
                Ok(dir.clone())
            } else {
                Err(format!("{} is not a directory", dir.display()))
            }
        }
        Workdir::Snapshot { dir, code } => {
            if code.repository.is_empty() {
                return Err("the snapshot names no repository".to_owned());
            }
            if !dir.join(".git").exists() {
                if let Some(parent) = dir.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                let _ = std::fs::remove_dir_all(dir);
                Git::new()
                    .run([
                        "clone".as_ref(),
                        "--quiet".as_ref(),
                        "--no-checkout".as_ref(),
                        code.repository.as_ref(),
                        dir.as_os_str(),
                    ])
                    .map_err(|e| format!("git clone {}: {e}", code.repository))?;
            }
            let git = Git::in_dir(dir);
            git.run(["fetch", "--quiet", &code.repository, &code.wip_ref])
                .map_err(|e| format!("git fetch {} {}: {e}", code.repository, code.wip_ref))?;
            git.run([
                "checkout",
                "--quiet",
                "--force",
                "--detach",
                &code.wip_commit,
            ])
            .map_err(|e| format!("git checkout {}: {e}", code.wip_commit))?;
            git.run(["clean", "-ffdxq"])
                .map_err(|e| format!("git clean: {e}"))?;
            Ok(dir.clone())
        }
    }
}

// The phases here are shell scripts.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn phase(name: &str, script: &str, critical: bool, run_deadline: Duration) -> PhaseConfig {
        PhaseConfig {
            name: name.to_owned(),
            command: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
            critical,
            start_deadline: Duration::from_secs(10),
            run_deadline,
        }
    }

    fn job(dir: &Path, phases: Vec<PhaseConfig>) -> Job {
        Job {
            phases,
            workdir: Workdir::Plain(dir.to_owned()),
            env: vec![("TRINITY_TASK_ID".to_owned(), "t-1".to_owned())],
            scratch: dir.join("scratch"),
        }
    }

    #[test]
    fn phases_report_by_exit_code_and_a_last_json_line_within_their_deadlines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let long = Duration::from_secs(30);
        let j = job(
            dir.path(),
            vec![
                phase(
                    "env",
                    "test \"$TRINITY_TASK_ID\" = t-1 && echo ok",
                    true,
                    long,
                ),
                phase(
                    "report",
                    "echo working; echo '{\"critical\":0,\"high\":0,\"medium\":2,\"low\":5,\"coverage\":0.83,\"benchmarks_ok\":true}'",
                    false,
                    long,
                ),
                phase("fails", "echo broken >&2; exit 3", true, long),
                phase("slow", "sleep 30", false, Duration::from_millis(200)),
                phase("garbled", "echo '{not json'", false, long),
                PhaseConfig {
                    command: vec!["/nonexistent/program".to_owned()],
                    ..phase("missing", "", false, long)
                },
            ],
        );
        let started = Instant::now();
        let r = run(&j, &AtomicBool::new(false));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the deadline stopped the slow phase"
        );
        assert_eq!(r[0].status, PhaseStatus::Passed, "{:?}", r[0]);
        assert_eq!(r[0].output_tail, "ok\n");
        assert_eq!(r[1].status, PhaseStatus::Passed);
        assert_eq!((r[1].medium_issues, r[1].low_issues), (2, 5));
        assert_eq!(r[1].coverage, Some(0.83));
        assert_eq!(r[2].status, PhaseStatus::Failed);
        assert_eq!(r[2].exit_code, Some(3));
        assert!(r[2].output_tail.contains("broken"));
        assert_eq!(r[3].status, PhaseStatus::TimedOut);
        assert_eq!(r[4].status, PhaseStatus::Failed);
        assert_eq!(r[4].exit_code, None, "an unreadable report is unclear");
        assert_eq!(r[5].status, PhaseStatus::NotStarted);
        assert!(
            r[5].summary
                .as_deref()
                .unwrap_or("")
                .contains("cannot start")
        );
    }

    #[test]
    fn a_cancelled_run_stops_its_phase_and_starts_no_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let long = Duration::from_secs(60);
        let j = job(
            dir.path(),
            vec![
                phase("a", "sleep 30", false, long),
                phase("b", "true", false, long),
            ],
        );
        let mut running = Running::start(j).expect("start");
        let marker = dir.path().join("scratch").join("phase-0.log");
        trinity_testkit::wait_for("the first phase to start", || marker.exists());
        running.cancel();
        let r = running.wait().expect("results");
        assert!(
            r.iter().all(|p| p.status == PhaseStatus::NotStarted),
            "{r:?}"
        );
    }
}
