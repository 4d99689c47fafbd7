//! Types shared by several schemas.

use serde::{Deserialize, Serialize};

use crate::ids::TaskId;

/// How urgent a task is. The seed documents use both `normal` (handoff protocol) and
/// `medium` (coordination protocol); both are accepted and rank the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Do first.
    Critical,
    /// Do soon.
    High,
    /// Ordinary work (the seed's handoff protocol).
    #[default]
    Normal,
    /// Ordinary work (the seed's coordination protocol).
    Medium,
    /// When nothing else is waiting.
    Low,
}

impl Priority {
    /// The priority as written in files: `critical`, `high`, `normal`, `medium`, `low`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }

    /// Lower ranks go first: critical 0, high 1, normal/medium 2, low 3.
    pub fn rank(self) -> u8 {
        match self {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Normal | Priority::Medium => 2,
            Priority::Low => 3,
        }
    }
}

/// A task as listed in a handoff's `task_queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRef {
    /// The task's id (its file is `spawn_queue/{id}.json` when it came from the queue).
    pub id: TaskId,
    /// Its priority, which orders the work (default `normal`).
    #[serde(default)]
    pub priority: Priority,
    /// What it is, for the agent and for people.
    #[serde(default)]
    pub description: String,
}

/// The work in progress at the moment of a handoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentWork {
    /// The task being worked on.
    pub task_id: TaskId,
    /// Free text: "50%", "tests written, docs missing".
    #[serde(default)]
    pub progress: String,
    /// Steps already done.
    #[serde(default)]
    pub completed_subtasks: Vec<String>,
    /// The step to take next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_subtask: Option<String>,
    /// The agent's code in progress, when its workdir is a git repository: where the next PC
    /// fetches it from (set by the outgoing PC in a handoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeSnapshot>,
    /// The agent's conversation (a Claude Code session id), when the handoff carries it in
    /// `conversations/{handoff-id}.age` (encrypted to the receiver): the next PC resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The SHA-256 (hex) of `conversations/{handoff-id}.age`, so that the signed handoff vouches
    /// for the carried conversation: a file that does not match is not placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_sha256: Option<String>,
}

impl CurrentWork {
    /// Work on `task_id` with nothing reported yet.
    pub fn new(task_id: TaskId) -> Self {
        Self {
            task_id,
            progress: String::new(),
            completed_subtasks: Vec::new(),
            next_subtask: None,
            code: None,
            session: None,
            conversation_sha256: None,
        }
    }
}

/// The project checkout's state at a handoff: a commit of the working tree (tracked changes and
/// files `.gitignore` does not exclude) on a branch of its own, pushed to the project's remote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeSnapshot {
    /// The project's remote, as a URL or path git understands (empty when there is none).
    #[serde(default)]
    pub repository: String,
    /// The branch the agent was on (absent for a detached HEAD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The commit the work started from (the checkout's HEAD).
    pub base_commit: String,
    /// The commit of the working tree, child of `base_commit`.
    pub wip_commit: String,
    /// The branch holding it on the remote: `refs/heads/trinity/wip/{task}`.
    pub wip_ref: String,
    /// Whether it reached the remote (if not, the next PC starts from what it has).
    pub pushed: bool,
    /// Why it was not pushed, or anything else worth knowing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why work moved from one PC to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffReason {
    /// Rate limits, slow responses or errors crossed a threshold (the seed's reason).
    CreditExhaustion,
    /// The provider's usage limit was reached; it resets at a known time.
    UsageLimit,
    /// The account's spend limit was reached; it resets next month.
    SpendLimit,
    /// The work is finished and waits for the coordinator's verdict.
    WorkComplete,
    /// The coordinator moved the work of a PC it declared dead.
    Reassignment,
    /// An operator forced it (`--force-handoff`).
    Manual,
    /// The coordinator gave a queued task to a PC on standby.
    Assignment,
    /// The coordinator's verification denied finished work: the PC fixes what failed.
    Remediation,
}

impl HandoffReason {
    /// Words for commit messages and logs: "credit exhaustion".
    pub fn describe(self) -> &'static str {
        match self {
            HandoffReason::CreditExhaustion => "credit exhaustion",
            HandoffReason::UsageLimit => "usage limit",
            HandoffReason::SpendLimit => "spend limit",
            HandoffReason::WorkComplete => "work complete",
            HandoffReason::Reassignment => "reassignment",
            HandoffReason::Manual => "manual",
            HandoffReason::Assignment => "assignment",
            HandoffReason::Remediation => "remediation",
        }
    }

    /// Whether only the coordinator leader writes handoffs for this reason.
    pub fn is_coordinators(self) -> bool {
        matches!(
            self,
            HandoffReason::Reassignment | HandoffReason::Assignment | HandoffReason::Remediation
        )
    }
}

/// A PC's credit level, in the seed's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CreditLevel {
    /// Normal operation.
    Healthy,
    /// 70% of a threshold: log, watch closely.
    Warning,
    /// 85% of a threshold: prepare the handoff.
    Critical,
    /// A threshold crossed: hand off now.
    Exhausted,
}

impl CreditLevel {
    /// The level as written in files: `HEALTHY`, `WARNING`, `CRITICAL`, `EXHAUSTED`.
    pub fn as_str(self) -> &'static str {
        match self {
            CreditLevel::Healthy => "HEALTHY",
            CreditLevel::Warning => "WARNING",
            CreditLevel::Critical => "CRITICAL",
            CreditLevel::Exhausted => "EXHAUSTED",
        }
    }
}

impl std::fmt::Display for CreditLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outgoing PC's credit figures, carried in a handoff for diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditSnapshot {
    /// Rate-limit responses in the current window.
    #[serde(default)]
    pub rate_limit_count: u32,
    /// Errors over recent calls, 0..1.
    #[serde(default)]
    pub error_rate: f64,
    /// Mean response time of recent calls, in seconds.
    #[serde(default)]
    pub avg_response_time: f64,
    /// The level when the snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<CreditLevel>,
    /// The rule that decided the level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl CreditSnapshot {
    pub(crate) fn check(&self, at: &str, problems: &mut Vec<String>) {
        super::check_credit_figures(at, self.error_rate, self.avg_response_time, problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_names_are_the_written_ones() {
        for p in [
            Priority::Critical,
            Priority::High,
            Priority::Normal,
            Priority::Medium,
            Priority::Low,
        ] {
            assert_eq!(serde_json::to_value(p).expect("json"), p.as_str());
        }
    }
}
