//! Layered configuration: built-in defaults < TOML file < `TRINITY_*` environment variables.
//!
//! Every daemon reads the same file (`trinity.toml` by default; `--config PATH` or
//! `TRINITY_CONFIG` to change it). Durations are humantime strings ("150ms", "15m").
//! Environment variables use `__` for nesting: `TRINITY_SYNC__PULL_INTERVAL=5s` sets
//! `sync.pull_interval`. `TRINITY_CONFIG`, `TRINITY_LOG`, `TRINITY_FAILPOINT` and the variables the
//! wake-daemon hands the agent are not settings and are skipped.
//! Unknown keys are reported as warnings, never silently ignored and never fatal.
//! `deploy/config/trinity.example.toml` documents every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::PcId;
use crate::layout::Tree;

/// The default config file name, looked up in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "trinity.toml";

/// Environment variables with this prefix are settings.
pub const ENV_PREFIX: &str = "TRINITY_";

/// Environment variables with the prefix that are not settings.
pub const ENV_NOT_SETTINGS: &[&str] = &[
    "TRINITY_CONFIG",
    "TRINITY_LOG",
    "TRINITY_FAILPOINT",
    // What the wake-daemon hands the agent (TRINITY_PC is also the `pc` setting, and agrees).
    "TRINITY_FROM_PC",
    "TRINITY_HANDOFF_FILE",
    "TRINITY_TASK_ID",
    "TRINITY_TASKS_FILE",
    "TRINITY_LAUNCH_ID",
    // What the coordinator hands a verification phase (never TRINITY_PC: a phase that runs a
    // Trinity program must stay the leader's PC).
    "TRINITY_HANDOFF_ID",
    "TRINITY_VERIFY_PC",
    "TRINITY_VERIFY_LEADER",
    "TRINITY_VERIFY_COMMIT",
    // The orchestrators' own (deploy/windows/trinity-orchestrator.bat, deploy/systemd/trinity.sh).
    "TRINITY_SERVICE_USER",
    "TRINITY_SERVICE_PASSWORD",
    "TRINITY_BIN",
    "TRINITY_MODE",
];

/// serde for `Duration` as a humantime string.
pub mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes "1m 30s".
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads "90s", "1m 30s", "150ms".
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    /// Reads a duration as the configuration and the command lines take it ("90s", "1m 30s",
    /// "150ms"); the error names the text and says what was expected.
    pub fn parse(s: &str) -> Result<Duration, String> {
        humantime::parse_duration(s.trim())
            .map_err(|e| format!("{s:?} is not a duration like \"30s\" or \"15m\": {e}"))
    }
}

/// Everything any Trinity program reads from configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// This PC's id in the fleet (`PC1`). Required by the daemons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pc: Option<PcId>,
    /// The state tree (a git clone of the state repository). Relative paths are resolved
    /// against the config file's directory.
    pub state_dir: PathBuf,
    /// The kinds of task this PC takes (`backend`, `frontend`…): with any, it takes only tasks
    /// of these roles or of none; with none, any task.
    pub roles: Vec<String>,
    /// git-sync.
    pub sync: SyncConfig,
    /// credit-monitor.
    pub credit: CreditConfig,
    /// wake-daemon.
    pub wake: WakeConfig,
    /// The agent the wake-daemon launches.
    pub agent: AgentConfig,
    /// How the agent's work travels with a handoff.
    pub work: WorkConfig,
    /// The coordinator: the lease, liveness limits, verification phases, notifications.
    pub coordinator: CoordinatorConfig,
    /// Log files.
    pub logging: LoggingConfig,
    /// Signatures (docs/security.md).
    pub security: SecurityConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            pc: None,
            state_dir: PathBuf::from(".trinity"),
            roles: Vec::new(),
            sync: SyncConfig::default(),
            credit: CreditConfig::default(),
            wake: WakeConfig::default(),
            agent: AgentConfig::default(),
            work: WorkConfig::default(),
            coordinator: CoordinatorConfig::default(),
            logging: LoggingConfig::default(),
            security: SecurityConfig::default(),
        }
    }
}

/// How the state tree is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Through a git remote, by git-sync.
    Git,
    /// Not at all: a single PC, claims are final as soon as they are written.
    None,
}

/// git-sync's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncConfig {
    /// `git` or `none`.
    pub mode: SyncMode,
    /// The state repository: a path to a bare repository, or any URL git understands.
    pub remote: String,
    /// The branch holding the tree.
    pub branch: String,
    /// Quiet time after a file change before committing.
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
    /// How often to check the remote for new commits while anything is in flight: a push or
    /// a handoff of this PC's waiting, an agent at work anywhere in the fleet, or the remote
    /// having just brought work.
    #[serde(with = "humantime_serde")]
    pub pull_interval: Duration,
    /// How often to check it while the fleet is quiet (no agent at work, nothing in flight).
    #[serde(with = "humantime_serde")]
    pub idle_pull_interval: Duration,
    /// The longest any one network operation (a check, a fetch, a push) may take before it is
    /// given up as a network failure.
    #[serde(with = "humantime_serde")]
    pub network_timeout: Duration,
    /// Over ssh (OpenSSH), git-sync's git commands and checks share one connection
    /// (`ControlMaster`, a socket under `local/git-sync/ssh/`). Off: a connection each, as on
    /// Windows, whose OpenSSH cannot share.
    pub share_ssh_connection: bool,
    /// Heartbeats whose status did not change are committed at most this often.
    #[serde(with = "humantime_serde")]
    pub heartbeat_commit_interval: Duration,
    /// The longest wait between retries after a network failure.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// A `.git/index.lock` older than this was left by a crash and is removed.
    #[serde(with = "humantime_serde")]
    pub stale_index_lock: Duration,
    /// When the branch's history passes this many commits, it is compacted: replaced by one
    /// root commit of the same tree, which every PC follows (0: never).
    pub compact_after_commits: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            mode: SyncMode::Git,
            remote: String::new(),
            branch: "trinity".to_owned(),
            debounce: Duration::from_millis(150),
            pull_interval: Duration::from_secs(1),
            idle_pull_interval: Duration::from_secs(10),
            network_timeout: Duration::from_secs(20),
            share_ssh_connection: true,
            heartbeat_commit_interval: Duration::from_secs(60),
            backoff_max: Duration::from_secs(60),
            stale_index_lock: Duration::from_secs(60),
            compact_after_commits: 10_000,
        }
    }
}

/// credit-monitor's rules and timings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CreditConfig {
    /// How often the daemon re-evaluates without new events.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rate limits within `rate_limit_window` that mean EXHAUSTED.
    pub rate_limit_threshold: u32,
    /// The sliding window for rate limits.
    #[serde(with = "humantime_serde")]
    pub rate_limit_window: Duration,
    /// A response slower than this is slow.
    #[serde(with = "humantime_serde")]
    pub slow_response: Duration,
    /// Consecutive slow responses that mean EXHAUSTED.
    pub slow_threshold: u32,
    /// Error rate (0..1) over the recent calls that means EXHAUSTED when exceeded.
    pub error_rate_threshold: f64,
    /// How many recent calls the error rate looks at.
    pub error_window_calls: u32,
    /// The error rate counts only once this many calls are in the window.
    pub error_min_calls: u32,
    /// Utilization (0..1) at or above which the PC is EXHAUSTED before the hard limit.
    pub utilization_threshold: f64,
    /// EXHAUSTED when utilization is projected to reach 1.0 within this lead time.
    #[serde(with = "humantime_serde")]
    pub predictive_lead: Duration,
    /// Fraction of a threshold that means WARNING.
    pub warning_fraction: f64,
    /// Fraction of a threshold that means CRITICAL.
    pub critical_fraction: f64,
    /// How long a PC pauses after handing off.
    #[serde(with = "humantime_serde")]
    pub pause: Duration,
    /// Claude Code's transcripts, tailed for rate-limit and usage-limit messages; empty to
    /// disable. A leading `~` is this user's home directory.
    pub claude_projects_dir: String,
    /// How often the transcripts are read for new lines.
    #[serde(with = "humantime_serde")]
    pub transcript_poll_interval: Duration,
}

impl Default for CreditConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            rate_limit_threshold: 3,
            rate_limit_window: Duration::from_secs(15 * 60),
            slow_response: Duration::from_secs(10),
            slow_threshold: 5,
            error_rate_threshold: 0.30,
            error_window_calls: 20,
            error_min_calls: 10,
            utilization_threshold: 0.95,
            predictive_lead: Duration::from_secs(10 * 60),
            warning_fraction: 0.70,
            critical_fraction: 0.85,
            pause: Duration::from_secs(5 * 60),
            claude_projects_dir: "~/.claude/projects".to_owned(),
            transcript_poll_interval: Duration::from_secs(5),
        }
    }
}

/// wake-daemon's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WakeConfig {
    /// A signal older than this without an `expires_at` is ignored.
    #[serde(with = "humantime_serde")]
    pub signal_ttl: Duration,
    /// How often to look for signals when file events are missed.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long to wait for claims to reach the remote before giving up on them.
    #[serde(with = "humantime_serde")]
    pub claim_timeout: Duration,
    /// When an agent launched earlier still runs: `true` queues the new work for it, `false`
    /// starts a second agent.
    pub queue_when_agent_running: bool,
}

impl Default for WakeConfig {
    fn default() -> Self {
        Self {
            signal_ttl: Duration::from_secs(60 * 60),
            poll_interval: Duration::from_secs(2),
            claim_timeout: Duration::from_secs(60),
            queue_when_agent_running: true,
        }
    }
}

/// The agent command. It comes from this file only, never from the synced tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentConfig {
    /// Program and arguments, run without a shell. The handoff reaches it through the
    /// environment: TRINITY_PC, TRINITY_FROM_PC, TRINITY_HANDOFF_FILE, TRINITY_TASK_ID,
    /// TRINITY_TASKS_FILE.
    pub command: Vec<String>,
    /// The directory the agent runs in (the project checkout); empty for the daemon's own.
    pub workdir: String,
    /// On Windows, open the agent in a console window of its own.
    pub new_console: bool,
}

/// How the agent's work travels with a handoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkConfig {
    /// Where the outgoing PC pushes the snapshot of the agent's checkout (`agent.workdir`): a
    /// remote name or URL; empty for the checked-out branch's upstream remote, else `origin`.
    pub remote: String,
    /// Whether a handoff carries the agent's Claude Code conversation (its session transcript)
    /// through the state repository, so the next PC resumes it. Encrypted to the receiving PC
    /// (the repository holds ciphertext only); never carried in the clear.
    pub carry_conversation: bool,
    /// The largest conversation carried (a bigger one stays behind), in bytes.
    pub conversation_max_bytes: u64,
}

impl Default for WorkConfig {
    fn default() -> Self {
        Self {
            remote: String::new(),
            carry_conversation: true,
            conversation_max_bytes: 8 * 1024 * 1024,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            command: vec![
                "claude".to_owned(),
                "-p".to_owned(),
                "Continue the work handed to this PC: read the handoff file whose path is in the \
                 TRINITY_HANDOFF_FILE environment variable, then resume its current_work and its \
                 task_queue. Report progress with `trinity work progress` and finish a task with \
                 `trinity work done`; `trinity work next` gives the next task."
                    .to_owned(),
                "--output-format".to_owned(),
                "stream-json".to_owned(),
                "--verbose".to_owned(),
                "--permission-mode".to_owned(),
                "acceptEdits".to_owned(),
            ],
            workdir: String::new(),
            new_console: true,
        }
    }
}

/// One verification phase the coordinator runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseConfig {
    /// Its name in results.
    pub name: String,
    /// Program and arguments, run without a shell in the agent's workdir.
    pub command: Vec<String>,
    /// A failure of a critical phase denies the handoff; others escalate.
    #[serde(default)]
    pub critical: bool,
    /// How long the phase may take to start.
    #[serde(with = "humantime_serde", default = "default_start_deadline")]
    pub start_deadline: Duration,
    /// How long it may run.
    #[serde(with = "humantime_serde", default = "default_run_deadline")]
    pub run_deadline: Duration,
}

fn default_start_deadline() -> Duration {
    Duration::from_secs(60)
}

fn default_run_deadline() -> Duration {
    Duration::from_secs(30 * 60)
}

/// coordinator's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoordinatorConfig {
    /// Whether this PC runs the coordinator at all.
    pub enabled: bool,
    /// How often the monitoring cycle runs.
    #[serde(with = "humantime_serde")]
    pub monitor_interval: Duration,
    /// Silence after which a PC is SUSPECT and gets a reactivation wake.
    #[serde(with = "humantime_serde")]
    pub suspect_after: Duration,
    /// Silence after which a PC is DEAD and its work is reassigned.
    #[serde(with = "humantime_serde")]
    pub dead_after: Duration,
    /// How long a leader lease lasts without renewal.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Verify credit-exhaustion handoffs after the fact (work-complete ones always are).
    pub verify_credit_handoffs: bool,
    /// The verification suite, in order.
    pub phases: Vec<PhaseConfig>,
    /// The least test coverage (0..1) a phase may report before the work is denied.
    pub coverage_min: f64,
    /// More medium-severity issues than this over all phases escalate the verdict to a person.
    pub medium_issue_limit: u32,
    /// Where the leader POSTs one short message per handoff, verdict, escalation and dead PC:
    /// an `https://` (or `http://`) URL — an ntfy topic, a Slack, Discord, Teams or Matrix
    /// webhook, any JSON endpoint. Empty: no notifications.
    pub notify_url: String,
    /// The request's shape: `auto` (from the URL's host: Slack, Teams, Discord; ntfy for any
    /// other), `ntfy`, `slack` (also Teams and Matrix), `discord` or `json`.
    pub notify_format: String,
    /// A PEM file of the certificate authorities to trust for `notify_url` instead of the
    /// public ones (a server of one's own). Empty: the public ones.
    pub notify_ca_file: String,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            monitor_interval: Duration::from_secs(30),
            suspect_after: Duration::from_secs(15 * 60),
            dead_after: Duration::from_secs(45 * 60),
            lease_ttl: Duration::from_secs(120),
            verify_credit_handoffs: false,
            phases: Vec::new(),
            coverage_min: 0.0,
            medium_issue_limit: 10,
            notify_url: String::new(),
            notify_format: "auto".to_owned(),
            notify_ca_file: String::new(),
        }
    }
}

/// Log files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggingConfig {
    /// The default filter when `TRINITY_LOG` is not set: `info`, `debug`, `git_sync=debug,info`.
    pub level: String,
    /// A log file is rolled over when it would grow past this many bytes.
    pub max_file_bytes: u64,
    /// Log files kept per daemon, the current one included.
    pub max_files: u32,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            max_file_bytes: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// Signatures: who wrote the files that start or steer work (docs/security.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityConfig {
    /// Refuse unsigned handoffs, wake signals, tasks, claims and done records. Off only while
    /// a fleet moves to signing (some PCs not upgraded yet): files signed wrongly are refused
    /// either way. A PC without a signing key checks nothing (a fleet that does not sign).
    pub require_signatures: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            require_signatures: true,
        }
    }
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing though it was asked for by name.
    #[error("config file {} does not exist", path.display())]
    Missing {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file or a variable could not be parsed or has the wrong type.
    #[error("failed to load configuration{}: {message}", from_file(file.as_deref()))]
    Parse {
        /// The file, if one was read.
        file: Option<PathBuf>,
        /// The parser's message.
        message: String,
    },
    /// Values parse, but make no sense together.
    #[error("invalid configuration{}: {}", from_file(file.as_deref()), problems.join("; "))]
    Invalid {
        /// The file, if one was read.
        file: Option<PathBuf>,
        /// One entry per problem.
        problems: Vec<String>,
    },
}

fn from_file(file: Option<&Path>) -> String {
    file.map(|f| format!(" from {}", f.display()))
        .unwrap_or_default()
}

/// A loaded configuration with what was noticed while loading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration, `state_dir` resolved.
    pub config: Config,
    /// The file read, if there was one.
    pub file: Option<PathBuf>,
    /// Unknown keys and similar non-fatal findings, one sentence each.
    pub warnings: Vec<String>,
}

/// Where configuration comes from. Tests build this by hand; binaries use [`Sources::from_env`].
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The TOML file.
    pub file: Option<PathBuf>,
    /// Whether a missing file is an error (true when the user named it).
    pub file_required: bool,
    /// Environment variables (all of them; only `TRINITY_*` settings are used).
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// The file named by `--config` (if any), else `TRINITY_CONFIG`, else `./trinity.toml`
    /// (optional), plus the process environment.
    pub fn from_env(cli_path: Option<&Path>) -> Self {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let named = cli_path.map(Path::to_owned).or_else(|| {
            env.iter()
                .find(|(k, _)| k == "TRINITY_CONFIG")
                .map(|(_, v)| PathBuf::from(v))
        });
        match named {
            Some(file) => Self {
                file: Some(file),
                file_required: true,
                env,
            },
            None => Self {
                file: Some(PathBuf::from(DEFAULT_CONFIG_FILE)),
                file_required: false,
                env,
            },
        }
    }
}

/// Loads configuration from `sources`.
pub fn load(sources: &Sources) -> Result<Loaded, ConfigError> {
    let defaults =
        config::Config::try_from(&Config::default()).map_err(|e| ConfigError::Parse {
            file: None,
            message: e.to_string(),
        })?;
    let mut builder = config::Config::builder().add_source(defaults);

    let file = match &sources.file {
        Some(path) if path.is_file() => Some(path.clone()),
        Some(path) if sources.file_required => {
            return Err(ConfigError::Missing { path: path.clone() });
        }
        _ => None,
    };
    if let Some(path) = &file {
        builder =
            builder.add_source(config::File::from(path.as_path()).format(config::FileFormat::Toml));
    }
    let parse_err = |message: String| ConfigError::Parse {
        file: file.clone(),
        message,
    };

    for (key, value) in &sources.env {
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_NOT_SETTINGS.contains(&key.as_str()) || rest.is_empty() {
            continue;
        }
        let path = rest
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
            .join(".");
        builder = if path == "agent.command" {
            let list: Vec<String> = if value.trim_start().starts_with('[') {
                serde_json::from_str(value)
                    .map_err(|e| parse_err(format!("{key} is not a JSON list of strings: {e}")))?
            } else {
                value.split_whitespace().map(str::to_owned).collect()
            };
            builder.set_override(path, list)
        } else {
            builder.set_override(path, value.as_str())
        }
        .map_err(|e| parse_err(e.to_string()))?;
    }

    let merged = builder.build().map_err(|e| parse_err(e.to_string()))?;
    let mut unknown = Vec::new();
    let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let de = serde_ignored::Deserializer::new(merged, &mut on_unknown);
    let mut config: Config = serde_path_to_error::deserialize(de)
        .map_err(|e| parse_err(format!("`{}`: {}", e.path(), e.inner())))?;

    let mut warnings: Vec<String> = unknown
        .into_iter()
        .map(|key| format!("unknown configuration key `{key}` is ignored (see deploy/config/trinity.example.toml)"))
        .collect();
    warnings.sort();
    warnings.dedup();

    if config.state_dir.is_relative()
        && let Some(dir) = file
            .as_deref()
            .and_then(Path::parent)
            .filter(|d| !d.as_os_str().is_empty())
    {
        config.state_dir = dir.join(&config.state_dir);
    }
    // The agent's workdir likewise, so every program finds the same project checkout.
    let workdir = PathBuf::from(config.agent.workdir.trim());
    if !config.agent.workdir.trim().is_empty()
        && workdir.is_relative()
        && let Some(dir) = file
            .as_deref()
            .and_then(Path::parent)
            .filter(|d| !d.as_os_str().is_empty())
    {
        config.agent.workdir = dir.join(workdir).to_string_lossy().into_owned();
    }
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid { file, problems });
    }
    Ok(Loaded {
        config,
        file,
        warnings,
    })
}

/// A path from the configuration with a leading `~` expanded to the home directory (`HOME`,
/// else `USERPROFILE`); `None` for an empty setting.
pub fn expand_home(dir: &str) -> Option<PathBuf> {
    let dir = dir.trim();
    if dir.is_empty() {
        return None;
    }
    if let Some(rest) = dir.strip_prefix("~") {
        let home = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE"))?;
        let rest = rest.trim_start_matches(['/', '\\']);
        return Some(PathBuf::from(home).join(rest));
    }
    Some(PathBuf::from(dir))
}

impl Config {
    /// The state tree this configuration points at.
    pub fn tree(&self) -> Tree {
        Tree::new(&self.state_dir)
    }

    /// This PC's id, or an error that says how to set it.
    pub fn require_pc(&self) -> Result<&PcId, ConfigError> {
        self.pc.as_ref().ok_or_else(|| ConfigError::Invalid {
            file: None,
            problems: vec![
                "`pc` is not set: run `trinity init` or set `pc = \"PC1\"` in trinity.toml"
                    .to_owned(),
            ],
        })
    }

    /// Values that parse but make no sense.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let c = &self.credit;
        let zero = |name: &str, v: u32, p: &mut Vec<String>| {
            if v == 0 {
                p.push(format!("{name} must be at least 1"));
            }
        };
        zero(
            "credit.rate_limit_threshold",
            c.rate_limit_threshold,
            &mut p,
        );
        zero("credit.slow_threshold", c.slow_threshold, &mut p);
        zero("credit.error_window_calls", c.error_window_calls, &mut p);
        zero("logging.max_files", self.logging.max_files, &mut p);
        if c.error_min_calls > c.error_window_calls {
            p.push("credit.error_min_calls is larger than credit.error_window_calls".to_owned());
        }
        if self.work.conversation_max_bytes > 16 * 1024 * 1024 {
            p.push("work.conversation_max_bytes is larger than 16 MiB (16777216)".to_owned());
        }
        for (name, v) in [
            ("credit.error_rate_threshold", c.error_rate_threshold),
            ("credit.utilization_threshold", c.utilization_threshold),
            ("credit.warning_fraction", c.warning_fraction),
            ("credit.critical_fraction", c.critical_fraction),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                p.push(format!("{name} is {v}, it must be above 0 and at most 1"));
            }
        }
        if c.warning_fraction >= c.critical_fraction {
            p.push("credit.warning_fraction must be below credit.critical_fraction".to_owned());
        }
        if self.coordinator.suspect_after >= self.coordinator.dead_after {
            p.push(
                "coordinator.suspect_after must be shorter than coordinator.dead_after".to_owned(),
            );
        }
        if !(0.0..=1.0).contains(&self.coordinator.coverage_min) {
            p.push("coordinator.coverage_min must be between 0 and 1".to_owned());
        }
        let url = self.coordinator.notify_url.trim();
        if !url.is_empty() && !url.starts_with("https://") && !url.starts_with("http://") {
            // Not echoed: a webhook URL holds its secret.
            p.push("coordinator.notify_url must start with https:// or http://".to_owned());
        }
        if !matches!(
            self.coordinator.notify_format.trim(),
            "" | "auto" | "ntfy" | "slack" | "teams" | "matrix" | "discord" | "json"
        ) {
            p.push(format!(
                "coordinator.notify_format {:?} is not one of auto, ntfy, slack, discord, json",
                self.coordinator.notify_format
            ));
        }
        if self.sync.branch.trim().is_empty() {
            p.push("sync.branch is empty".to_owned());
        }
        if self.sync.pull_interval.is_zero() {
            p.push("sync.pull_interval must be above 0".to_owned());
        }
        if self.sync.idle_pull_interval < self.sync.pull_interval {
            p.push(
                "sync.idle_pull_interval must not be shorter than sync.pull_interval".to_owned(),
            );
        }
        if self.sync.network_timeout < Duration::from_secs(1) {
            p.push("sync.network_timeout must be at least 1s".to_owned());
        }
        if self.agent.command.is_empty() || self.agent.command[0].trim().is_empty() {
            p.push("agent.command is empty: name the agent program".to_owned());
        }
        for phase in &self.coordinator.phases {
            if phase.command.is_empty() {
                p.push(format!(
                    "coordinator.phases `{}` has an empty command",
                    phase.name
                ));
            }
        }
        if self.logging.max_file_bytes < 4096 {
            p.push("logging.max_file_bytes must be at least 4096".to_owned());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(file: Option<&Path>, env: &[(&str, &str)]) -> Sources {
        Sources {
            file: file.map(Path::to_owned),
            file_required: file.is_some(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn defaults_alone_are_valid() {
        let loaded = load(&sources(None, &[])).expect("defaults load");
        assert_eq!(loaded.config, Config::default());
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trinity.toml");
        std::fs::write(
            &path,
            "pc = \"PC2\"\nstate_dir = \"state\"\n[sync]\npull_interval = \"5s\"\nremote = \"/srv/r.git\"\n[credit]\nrate_limit_window = \"20m\"\n",
        )
        .expect("write");
        let loaded = load(&sources(
            Some(&path),
            &[
                ("TRINITY_SYNC__PULL_INTERVAL", "750ms"),
                ("TRINITY_CREDIT__RATE_LIMIT_THRESHOLD", "4"),
                ("TRINITY_AGENT__COMMAND", "[\"my agent\", \"--flag\"]"),
                ("TRINITY_CONFIG", "ignored"),
                ("TRINITY_LOG", "debug"),
                ("HOME", "/root"),
            ],
        ))
        .expect("load");
        let c = &loaded.config;
        assert_eq!(c.pc.as_ref().map(PcId::as_str), Some("PC2"));
        assert_eq!(
            c.state_dir,
            dir.path().join("state"),
            "relative to the file"
        );
        assert_eq!(c.sync.pull_interval, Duration::from_millis(750));
        assert_eq!(c.sync.remote, "/srv/r.git");
        assert_eq!(c.credit.rate_limit_window, Duration::from_secs(20 * 60));
        assert_eq!(c.credit.rate_limit_threshold, 4);
        assert_eq!(c.agent.command, ["my agent", "--flag"]);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn unknown_keys_are_warned_about() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trinity.toml");
        std::fs::write(&path, "colour = \"blue\"\n[sync]\npul_interval = \"5s\"\n").expect("write");
        let loaded = load(&sources(Some(&path), &[("TRINITY_WAKE__SPEED", "3")])).expect("load");
        let w = loaded.warnings.join("\n");
        for key in ["`colour`", "`sync.pul_interval`", "`wake.speed`"] {
            assert!(w.contains(key), "missing {key} in {w}");
        }
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trinity.toml");
        std::fs::write(&path, "[sync]\npull_interval = \"soon\"\n").expect("write");
        let err = load(&sources(Some(&path), &[])).expect_err("bad duration");
        let msg = err.to_string();
        assert!(
            msg.contains("sync.pull_interval") && msg.contains("not a duration"),
            "{msg}"
        );

        std::fs::write(&path, "pc = \"../PC1\"\n").expect("write");
        let msg = load(&sources(Some(&path), &[]))
            .expect_err("bad pc")
            .to_string();
        assert!(msg.contains("`pc`") && msg.contains("`..`"), "{msg}");

        std::fs::write(&path, "[coordinator]\nsuspect_after = \"1h\"\n").expect("write");
        let msg = load(&sources(Some(&path), &[]))
            .expect_err("inconsistent")
            .to_string();
        assert!(msg.contains("suspect_after must be shorter"), "{msg}");

        let missing = dir.path().join("nope.toml");
        let msg = load(&sources(Some(&missing), &[]))
            .expect_err("missing")
            .to_string();
        assert!(msg.contains("does not exist"), "{msg}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/trinity.example.toml")
    }

    #[test]
    fn the_example_file_holds_the_defaults_and_loads_without_warnings() {
        let sources = Sources {
            file: Some(example_path()),
            file_required: true,
            env: Vec::new(),
        };
        let loaded = load(&sources).expect("the example config loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let mut expected = Config {
            pc: Some(PcId::new("PC1").expect("valid")),
            state_dir: example_path().parent().expect("dir").join(".trinity"),
            ..Config::default()
        };
        expected.sync.remote = "/srv/trinity/state.git".to_owned();
        assert_eq!(
            loaded.config, expected,
            "the example must show the built-in defaults"
        );
    }

    #[test]
    fn the_example_file_mentions_every_key() {
        let text = std::fs::read_to_string(example_path()).expect("read example");
        let mut defaults = Config {
            pc: Some(PcId::new("PC1").expect("valid")),
            ..Config::default()
        };
        defaults.coordinator.phases.push(PhaseConfig {
            name: "x".to_owned(),
            command: vec!["x".to_owned()],
            critical: false,
            start_deadline: default_start_deadline(),
            run_deadline: default_run_deadline(),
        });
        let value = serde_json::to_value(&defaults).expect("serialize");
        let mut keys = Vec::new();
        collect_keys(&value, &mut keys);
        for key in keys {
            let documented = text.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
            });
            assert!(
                documented,
                "deploy/config/trinity.example.toml does not document `{key}`"
            );
        }
    }

    /// The leaf keys of a value: tables are walked, lists of tables too.
    fn collect_keys(v: &serde_json::Value, out: &mut Vec<String>) {
        let Some(map) = v.as_object() else { return };
        for (k, v) in map {
            if v.is_object() {
                collect_keys(v, out);
            } else {
                out.push(k.clone());
                if let serde_json::Value::Array(items) = v {
                    items.iter().for_each(|i| collect_keys(i, out));
                }
            }
        }
    }
}
