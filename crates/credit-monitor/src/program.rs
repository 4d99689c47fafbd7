//! The `credit-monitor` program: its command line and how the shell runs it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, TimeZone, Utc};
use clap::{ArgGroup, Parser, Subcommand};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use trinity_core::config::Config;
use trinity_core::credit::{self, CreditEvent, Evaluation, EventKind, ReplayLine, Rules};
use trinity_core::daemon::Start;
use trinity_core::schema::CreditLevel;
use trinity_core::{DaemonId, HandoffId, PcId, SystemClock};
use trinity_runtime::{Flags, Opened, Program};

use crate::daemon::{self, Options};
use crate::transcripts::expand_home;
use crate::{Action, Monitor, StepReport};

/// Watch this PC's API credit and hand the work to the next PC before it runs out.
///
/// Without an action flag it runs as a daemon: it re-evaluates the rules on every new event
/// and every --interval, reads Claude Code's transcripts, and keeps credit/{PC}.json current.
/// With a --record-… flag it appends one event, evaluates at once (the third rate limit hands
/// off inside that very command) and exits. With --once: one evaluation, acted on.
#[derive(Debug, Parser)]
#[command(name = "credit-monitor", version, propagate_version = true)]
#[command(group(ArgGroup::new("action").multiple(false).args([
    "record_success", "record_error", "record_rate_limit", "record_slow", "record_usage_limit",
    "record_spend_limit", "record_overloaded", "record_utilization", "record_from_claude_result",
    "force_handoff", "status", "reset", "once",
])))]
pub struct Cli {
    #[command(flatten)]
    flags: Flags,

    /// Daemon: re-evaluate at least this often [default: credit.interval, 1m]
    #[arg(long, value_name = "DURATION", value_parser = trinity_core::config::humantime_serde::parse)]
    interval: Option<Duration>,

    /// Record a successful call
    #[arg(long)]
    record_success: bool,
    /// Record a failed call (use --status-code)
    #[arg(long)]
    record_error: bool,
    /// Record a rate-limit response (HTTP 429)
    #[arg(long)]
    record_rate_limit: bool,
    /// Record a response that took SECS seconds
    #[arg(long, value_name = "SECS")]
    record_slow: Option<f64>,
    /// Record that the plan's usage limit was reached (needs --reset-at)
    #[arg(long, requires = "reset_at")]
    record_usage_limit: bool,
    /// Record that the account's spend limit was reached (resets on the 1st, UTC)
    #[arg(long)]
    record_spend_limit: bool,
    /// Record an overloaded response (HTTP 529): never a reason to hand off
    #[arg(long)]
    record_overloaded: bool,
    /// Record the provider's utilization, 0..1 (anthropic-ratelimit-unified-*-utilization)
    #[arg(long, value_name = "F")]
    record_utilization: Option<f64>,

    /// Record what a `claude -p --output-format stream-json --verbose` (or `json`) run printed,
    /// read from standard input: every retried attempt and the result
    #[arg(long)]
    record_from_claude_result: bool,

    /// With --record-success: how long the call took, in seconds
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// With --record-error: the HTTP status (429 counts as a rate limit, 529 as overloaded)
    #[arg(long, value_name = "N")]
    status_code: Option<u16>,
    /// With --record-rate-limit: the retry-after header, in seconds
    #[arg(long, value_name = "SECS")]
    retry_after: Option<f64>,
    /// When the limit resets: RFC 3339 with any offset (2026-11-21T18:00:00+09:00) or Unix seconds
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    reset_at: Option<DateTime<Utc>>,
    /// Tokens the call used (with any --record-… flag)
    #[arg(long, value_name = "N")]
    tokens: Option<u64>,
    /// The provider's utilization reported with the call, 0..1 (with any --record-… flag; feeds
    /// the utilization and predictive rules)
    #[arg(long, value_name = "F")]
    utilization: Option<f64>,

    /// Hand off now, whatever the rules say
    #[arg(long)]
    force_handoff: bool,
    /// Start every window afresh and end any pause
    #[arg(long)]
    reset: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the rules over a recorded trace (JSON lines) with the trace's own clock.
    ///
    /// Prints one line per level change and one where a handoff would be triggered, so that
    /// thresholds can be tuned against real history. Thresholds come from the config file.
    Replay {
        /// The trace: one event per line, as in local/credit/events.jsonl
        trace: PathBuf,
        /// Print JSON lines
        #[arg(long)]
        json: bool,
    },
    /// Run a command (`claude -p … --output-format stream-json --verbose`), pass its output
    /// through, and record each API outcome it reports as it happens.
    ///
    /// A rate-limited attempt is recorded the moment Claude Code reports its retry, so the
    /// third one hands off while the command still runs. Exits with the command's exit code.
    Wrap {
        /// The command and its arguments (after `--`)
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return Utc
            .timestamp_opt(secs, 0)
            .single()
            .ok_or_else(|| format!("{s} is not a valid Unix time"));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("{s:?} is not a time like 2026-11-21T18:00:00+09:00 or Unix seconds: {e}")
        })
}

/// What `credit-monitor --status` shows: the rules' evaluation now, the next PC, the pause.
#[derive(Debug, Serialize)]
pub struct MonitorStatus {
    /// This PC.
    pub pc: PcId,
    /// Every rule's verdict.
    #[serde(flatten)]
    pub evaluation: Evaluation,
    /// Where a handoff would go now.
    pub next_pc: Option<PcId>,
    /// The pause after the last handoff.
    pub paused_until: Option<DateTime<Utc>>,
    /// The last handoff this PC wrote.
    pub last_handoff: Option<HandoffId>,
    /// Whether an exhaustion would hand off (not yet handed off).
    pub armed: bool,
    /// Event lines that could not be read.
    #[serde(skip)]
    pub bad_lines: usize,
}

/// The credit monitor, opened.
#[derive(Debug)]
pub struct CreditMonitor {
    monitor: Monitor,
    options: Options,
}

impl Program for CreditMonitor {
    const ID: DaemonId = DaemonId::CreditMonitor;
    type Cli = Cli;
    type Status = MonitorStatus;

    fn flags(cli: &Cli) -> &Flags {
        &cli.flags
    }

    fn before_start(cli: &Cli) -> Option<anyhow::Result<ExitCode>> {
        let Some(Command::Replay { trace, json }) = &cli.command else {
            return None;
        };
        Some(
            trinity_core::daemon::load_config(
                Self::ID.as_str(),
                cli.flags.daemon.config.as_deref(),
            )
            .map_err(anyhow::Error::from)
            .and_then(|loaded| replay(&loaded.config, trace, *json)),
        )
    }

    fn status(start: &Start) -> anyhow::Result<MonitorStatus> {
        let monitor = Monitor::new(
            start.tree.clone(),
            start.pc.clone(),
            start.config.clone(),
            SystemClock::shared(),
        );
        let o = monitor.peek()?;
        Ok(MonitorStatus {
            pc: start.pc.clone(),
            evaluation: o.evaluation,
            next_pc: o.next_pc,
            paused_until: o.state.paused_until,
            last_handoff: o.state.last_handoff,
            armed: o.state.armed,
            bad_lines: o.bad_lines,
        })
    }

    fn print_status(s: &MonitorStatus) -> anyhow::Result<()> {
        let e = &s.evaluation;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}: {}", s.pc, e.level)?;
        writeln!(out, "  reason: {}", e.reason)?;
        for r in &e.rules {
            writeln!(
                out,
                "  {:<15} {:>5.0}%  {:<9} {}",
                r.rule,
                r.fraction * 100.0,
                r.level.as_str(),
                r.reason
            )?;
        }
        if let Some(until) = e.exhausted_until {
            writeln!(out, "  exhausted until {}", until.to_rfc3339())?;
        }
        match &s.next_pc {
            Some(pc) => writeln!(out, "  next PC: {pc}")?,
            None => writeln!(out, "  next PC: none can take over now")?,
        }
        if let Some(until) = s.paused_until.filter(|u| *u > e.at) {
            writeln!(out, "  paused until {}", until.to_rfc3339())?;
        }
        if let Some(h) = &s.last_handoff {
            writeln!(out, "  last handoff: {h}")?;
        }
        if s.bad_lines > 0 {
            writeln!(out, "  {} unreadable event lines skipped", s.bad_lines)?;
        }
        Ok(())
    }

    fn open(cli: Cli, start: Start) -> anyhow::Result<Opened<Self>> {
        let config = start.config.clone();
        let monitor = Monitor::new(start.tree, start.pc, start.config, SystemClock::shared());
        let now = monitor.now();
        let done = |code| Ok(Opened::Done(code));
        if let Some(event) = event_from(&cli, now)? {
            let outcome = monitor.record(&event)?;
            print_outcome(&monitor, &outcome, false);
            return done(ExitCode::SUCCESS);
        }
        if cli.record_from_claude_result {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
                .context("failed to read Claude Code's output from standard input")?;
            let events = crate::claude_output::events(&text, now);
            if events.is_empty() {
                eprintln!(
                    "credit-monitor: no API outcome in the input (expected claude -p output in stream-json or json)"
                );
            }
            for e in &events {
                let outcome = monitor.record(e)?;
                print_outcome(&monitor, &outcome, false);
            }
            eprintln!("credit-monitor: recorded {}", describe_events(&events));
            return done(ExitCode::SUCCESS);
        }
        if let Some(Command::Wrap { command }) = &cli.command {
            return done(wrap(&monitor, command)?);
        }
        if cli.force_handoff {
            let outcome = monitor.force_handoff()?;
            print_outcome(&monitor, &outcome, true);
            return done(match outcome.action {
                Action::HandedOff { .. } => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            });
        }
        if cli.reset {
            let outcome = monitor.reset()?;
            println!(
                "{}: windows reset, level {}",
                monitor.pc(),
                outcome.evaluation.level
            );
            return done(ExitCode::SUCCESS);
        }
        let options = Options {
            interval: cli.interval.unwrap_or(config.credit.interval),
            transcript_poll: config.credit.transcript_poll_interval,
            transcripts: expand_home(&config.credit.claude_projects_dir),
            agent_log: Some(monitor.tree().agent_log_file()),
        };
        Ok(Opened::Daemon(Self { monitor, options }))
    }

    /// One evaluation of the rules, acted on (a handoff when exhausted), then the level.
    fn once(self) -> anyhow::Result<ExitCode> {
        let outcome = self.monitor.step()?;
        print_outcome(&self.monitor, &outcome, false);
        println!("{}: {}", self.monitor.pc(), outcome.evaluation.level);
        Ok(ExitCode::SUCCESS)
    }

    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        Ok(daemon::run(self.monitor, self.options, shutdown).await?)
    }
}

fn event_from(cli: &Cli, now: DateTime<Utc>) -> anyhow::Result<Option<CreditEvent>> {
    let kind = if cli.record_success {
        EventKind::Success
    } else if cli.record_error {
        EventKind::Error
    } else if cli.record_rate_limit {
        EventKind::RateLimit
    } else if cli.record_slow.is_some() {
        EventKind::Slow
    } else if cli.record_usage_limit {
        EventKind::UsageLimit
    } else if cli.record_spend_limit {
        EventKind::SpendLimit
    } else if cli.record_overloaded {
        EventKind::Overloaded
    } else if cli.record_utilization.is_some() {
        EventKind::Utilization
    } else {
        return Ok(None);
    };
    let mut e = CreditEvent::new(now, kind);
    e.duration_s = cli.record_slow.or(cli.duration);
    e.retry_after_s = cli.retry_after;
    e.reset_at = cli.reset_at;
    e.status_code = cli.status_code;
    e.tokens = cli.tokens;
    e.utilization = cli.record_utilization.or(cli.utilization);
    if kind == EventKind::Slow && e.duration_s.is_some_and(|d| d <= 0.0) {
        bail!("--record-slow needs the response time in seconds, above 0");
    }
    if let Err(problem) = e.check() {
        bail!("{problem}");
    }
    Ok(Some(e))
}

/// "3 rate limits, 1 success".
fn describe_events(events: &[CreditEvent]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for e in events {
        let name = e.kind.to_string();
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    if counts.is_empty() {
        return "nothing".to_owned();
    }
    counts
        .iter()
        .map(|(n, c)| format!("{c} × {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `credit-monitor wrap -- COMMAND…`: runs it, passes its standard output through, records.
fn wrap(monitor: &Monitor, command: &[std::ffi::OsString]) -> anyhow::Result<ExitCode> {
    let (program, args) = command.split_first().context("wrap needs a command")?;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {}", program.to_string_lossy()))?;
    let stdout = child.stdout.take().context("the command's output")?;
    let mut reader = crate::claude_output::Reader::new();
    let mut recorded = Vec::new();
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("failed to read the command's output")?;
        writeln!(out, "{line}")?;
        out.flush()?;
        if let Some(e) = reader.line(&line, monitor.now()) {
            let outcome = monitor.record(&e)?;
            // Said on stderr: stdout carries the command's own output untouched.
            if let Some(text) = outcome_text(monitor, &outcome, false) {
                eprintln!("credit-monitor: {text}");
            }
            recorded.push(e);
        }
    }
    let status = child.wait().context("failed to wait for the command")?;
    eprintln!("credit-monitor: recorded {}", describe_events(&recorded));
    Ok(ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1),
    ))
}

fn print_outcome(monitor: &Monitor, outcome: &StepReport, forced: bool) {
    if let Some(text) = outcome_text(monitor, outcome, forced) {
        println!("{text}");
    }
}

/// What an outcome is worth saying, if anything.
fn outcome_text(monitor: &Monitor, outcome: &StepReport, forced: bool) -> Option<String> {
    let e = &outcome.evaluation;
    let pc = monitor.pc();
    Some(match &outcome.action {
        Action::HandedOff { handoff, to } => format!(
            "handoff: {pc} → {to} ({}): {}",
            if forced {
                "manual"
            } else {
                e.handoff_reason().describe()
            },
            monitor.tree().handoff_file(handoff).display()
        ),
        Action::NoTarget { skipped, retry_at } => format!(
            "{pc} is out of credit and no PC can take over ({skipped}); escalated, retrying at {}",
            retry_at.to_rfc3339()
        ),
        Action::Paused(until) => format!(
            "{pc} {}: paused after its handoff until {}",
            e.level,
            until.to_rfc3339()
        ),
        Action::AlreadyHandedOff => {
            format!("{pc} {}: this exhaustion was already handed off", e.level)
        }
        Action::Waiting(until) => format!(
            "{pc} {}: no PC could take over; trying again at {}",
            e.level,
            until.to_rfc3339()
        ),
        Action::None if e.level > CreditLevel::Healthy => format!(
            "{pc} {} ({} {:.0}%): {}",
            e.level,
            e.rule.unwrap_or("-"),
            e.fraction * 100.0,
            e.reason
        ),
        Action::None => return None,
    })
}

fn replay(config: &Config, trace: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let file = std::fs::File::open(trace)
        .with_context(|| format!("failed to open the trace {}", trace.display()))?;
    let mut events = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("failed to read {}", trace.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let event = CreditEvent::parse_line(&line)
            .with_context(|| format!("{}:{}", trace.display(), n + 1))?;
        events.push(event);
    }
    let started = Instant::now();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut changes = 0u64;
    let mut handoffs = 0u64;
    let mut write_err = None;
    let n = credit::replay(Rules::from(&config.credit), &events, |line| {
        match &line {
            ReplayLine::Level { .. } => changes += 1,
            ReplayLine::Handoff { .. } => handoffs += 1,
        }
        let text = if json {
            serde_json::to_string(&line).unwrap_or_default()
        } else {
            match &line {
                ReplayLine::Level {
                    ts,
                    level,
                    rule,
                    fraction,
                } => format!(
                    "{} {:<9} {} {:.0}%",
                    ts.to_rfc3339(),
                    level.as_str(),
                    rule.unwrap_or("-"),
                    fraction * 100.0
                ),
                ReplayLine::Handoff { ts, reason, .. } => {
                    format!("{} HANDOFF   {reason}", ts.to_rfc3339())
                }
            }
        };
        if write_err.is_none()
            && let Err(e) = writeln!(out, "{text}")
        {
            write_err = Some(e);
        }
    });
    out.flush()?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "credit-monitor: replayed {n} events: {changes} level changes, {handoffs} handoffs ({:.0} events/s)",
        n as f64 / secs
    );
    Ok(ExitCode::SUCCESS)
}
