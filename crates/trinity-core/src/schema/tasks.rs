//! Tasks, claims and results.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Priority, Schema, v1};
use crate::ids::{HandoffId, PcId, TaskId};

/// `spawn_queue/{task-id}.json`: a unit of work. Immutable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// The task's id (must match the file name).
    pub id: TaskId,
    /// Its priority: critical, high, normal (the default; `medium` ranks the same) or low; the
    /// queue takes higher first, then older.
    #[serde(default)]
    pub priority: Priority,
    /// What to do, for the agent and for people.
    pub description: String,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// Who queued it.
    pub created_by: PcId,
    /// Tasks that must be done first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<TaskId>,
    /// The kind of PC that should take it (`backend`, `frontend`…): a PC that declares
    /// `roles` in its config takes only tasks of its roles or of none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Schema for Task {
    const NAME: &'static str = "task";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 256 * 1024;
    const SIGNED: bool = true;

    fn author(&self) -> Option<&PcId> {
        Some(&self.created_by)
    }

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.description.trim().is_empty() {
            problems.push("description is empty".to_owned());
        }
        if self.dependencies.contains(&self.id) {
            problems.push(format!("task {} depends on itself", self.id));
        }
        if let Some(role) = &self.role
            && (role.is_empty()
                || role.len() > 64
                || !role
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            problems.push(format!(
                "role {role:?} must be 1-64 letters, digits, '-' or '_'"
            ));
        }
        problems
    }
}

/// `claims/{task-id}.json`: who works on a task. Compare-and-swap: the claim that reached the
/// remote first wins; a PC starts work only once its claim is there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// The task (must match the file name).
    pub task_id: TaskId,
    /// The claiming PC.
    pub pc: PcId,
    /// When it claimed.
    pub claimed_at: DateTime<Utc>,
    /// The work's epoch: a reassignment replaces a claim with a higher epoch.
    #[serde(default)]
    pub epoch: u64,
    /// The handoff through which the task arrived, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<HandoffId>,
}

impl Schema for Claim {
    const NAME: &'static str = "claim";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 16 * 1024;
    const SIGNED: bool = true;

    fn author(&self) -> Option<&PcId> {
        Some(&self.pc)
    }
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Finished.
    Completed,
    /// Gave up on it with an error.
    Failed,
    /// Dropped on purpose (superseded, cancelled).
    Abandoned,
}

/// `done/{task-id}.json`: the result of a task. Immutable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// The task (must match the file name).
    pub task_id: TaskId,
    /// The PC that finished it.
    pub pc: PcId,
    /// When.
    pub finished_at: DateTime<Utc>,
    /// How it ended.
    pub outcome: Outcome,
    /// What was done, for people.
    #[serde(default)]
    pub summary: String,
    /// The project commit holding the work, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl Schema for Done {
    const NAME: &'static str = "done record";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 256 * 1024;
    const SIGNED: bool = true;

    fn author(&self) -> Option<&PcId> {
        Some(&self.pc)
    }

    fn check(&self) -> Vec<String> {
        match &self.commit {
            Some(c)
                if !(4..=64).contains(&c.len()) || !c.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                vec![format!("commit {c:?} is not a hexadecimal commit id")]
            }
            _ => Vec::new(),
        }
    }
}
