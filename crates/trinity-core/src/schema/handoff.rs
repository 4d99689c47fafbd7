//! The handoff file and the wake signal.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CreditSnapshot, CurrentWork, HandoffReason, Schema, TaskRef, v1};
use crate::ids::{HandoffId, PcId, SignalId};

/// `handoff/handoff_{FROM}_to_{TO}_{TS}.json`: the work state a PC hands to the next one.
/// Immutable; the receiving PC archives it into `handoff/processed/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// The outgoing PC.
    pub from_pc: PcId,
    /// The incoming PC.
    pub to_pc: PcId,
    /// When the handoff was written.
    pub timestamp: DateTime<Utc>,
    /// Why.
    pub reason: HandoffReason,
    /// Tasks to claim: the outgoing PC's unfinished claims, then the unclaimed queue.
    #[serde(default)]
    pub task_queue: Vec<TaskRef>,
    /// The work in progress, to resume first; always written, `null` when the PC was idle
    /// (readers written for the seed's format find the key).
    #[serde(default)]
    pub current_work: Option<CurrentWork>,
    /// The outgoing PC's credit figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_state: Option<CreditSnapshot>,
    /// Set on coordinator-authored reassignments: the work's new epoch. A PC ignores work whose
    /// epoch is older than the newest it has seen for the same tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Who wrote the file when it is not `from_pc` (the coordinator leader, for assignments,
    /// remediations and reassignments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authored_by: Option<PcId>,
    /// On files the coordinator leader writes: its lease epoch. A PC ignores a leader's file
    /// whose epoch is older than the lease it knows (a deposed leader's late write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_epoch: Option<u64>,
}

impl Handoff {
    /// The id this handoff's file must be named by.
    pub fn id(&self) -> Option<HandoffId> {
        HandoffId::from_parts(&self.from_pc, &self.to_pc, self.timestamp).ok()
    }
}

impl Schema for Handoff {
    const NAME: &'static str = "handoff";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 1024 * 1024;
    const SIGNED: bool = true;

    fn author(&self) -> Option<&PcId> {
        Some(self.authored_by.as_ref().unwrap_or(&self.from_pc))
    }

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        // One PC on both ends: finished work submitted for verification, or the leader giving
        // work to its own PC.
        if self.from_pc == self.to_pc
            && self.reason != super::HandoffReason::WorkComplete
            && self.authored_by.is_none()
        {
            problems.push(format!("from_pc and to_pc are both {}", self.from_pc));
        }
        if self.reason.is_coordinators()
            && (self.authored_by.is_none() || self.leader_epoch.is_none())
        {
            problems.push(format!(
                "{} handoffs are written by the coordinator leader: authored_by and leader_epoch are required",
                self.reason.describe()
            ));
        }
        let mut seen = HashSet::new();
        for task in &self.task_queue {
            if !seen.insert(&task.id) {
                problems.push(format!("task {} is listed twice in task_queue", task.id));
            }
        }
        if let Some(credit) = &self.credit_state {
            credit.check("credit_state", &mut problems);
        }
        if self.reason == super::HandoffReason::Reassignment && self.epoch.is_none() {
            problems.push("a reassignment must carry an epoch".to_owned());
        }
        problems
    }
}

/// The longest `message` a wake signal may carry, in characters.
pub const MAX_WAKE_MESSAGE_CHARS: usize = 2000;

/// `wake/{TO}/{signal-id}.json`: tells a PC to wake up and, usually, to accept a handoff.
/// Immutable; consumed (deleted) by the PC it is addressed to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WakeSignal {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// Unique id; also the file name.
    pub id: SignalId,
    /// The sender.
    pub from_pc: PcId,
    /// The PC to wake.
    pub to_pc: PcId,
    /// When it was sent.
    pub timestamp: DateTime<Utc>,
    /// A short token saying what for: `credit_handoff`, `reactivation`, `reassignment`.
    pub task: String,
    /// Free text for people. Never executed, never spliced into a command.
    #[serde(default)]
    pub message: String,
    /// The handoff to accept, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<HandoffId>,
    /// After this moment the signal is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The work's epoch, for coordinator reassignments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// On signals from the coordinator leader: its lease epoch (see [`Handoff::leader_epoch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_epoch: Option<u64>,
}

/// What a wake signal is for: the `task` token of [`WakeSignal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WakeTask {
    /// Accept a credit handoff (`credit_handoff`).
    CreditHandoff,
    /// Say you are alive (`reactivation`), from the coordinator.
    Reactivation,
    /// Accept work of a PC declared dead (`reassignment`), from the coordinator.
    Reassignment,
    /// Accept a task given to a PC on standby (`assignment`), from the coordinator.
    Assignment,
    /// Fix what verification found (`remediation`), from the coordinator.
    Remediation,
    /// Read the verdict on submitted work (`verdict`), from the coordinator.
    Verdict,
}

impl WakeTask {
    /// Every token, in the order above.
    pub const ALL: [WakeTask; 6] = [
        WakeTask::CreditHandoff,
        WakeTask::Reactivation,
        WakeTask::Reassignment,
        WakeTask::Assignment,
        WakeTask::Remediation,
        WakeTask::Verdict,
    ];

    /// The token as written in signals.
    pub fn as_str(self) -> &'static str {
        match self {
            WakeTask::CreditHandoff => "credit_handoff",
            WakeTask::Reactivation => "reactivation",
            WakeTask::Reassignment => "reassignment",
            WakeTask::Assignment => "assignment",
            WakeTask::Remediation => "remediation",
            WakeTask::Verdict => "verdict",
        }
    }

    /// The task named by `token`, if it is one of these.
    pub fn parse(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == token)
    }

    /// Whether the leader may send it to its own PC.
    pub fn may_be_sent_to_self(self) -> bool {
        matches!(
            self,
            WakeTask::Assignment
                | WakeTask::Remediation
                | WakeTask::Verdict
                | WakeTask::Reassignment
        )
    }
}

impl Schema for WakeSignal {
    const NAME: &'static str = "wake signal";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 16 * 1024;
    const SIGNED: bool = true;

    fn author(&self) -> Option<&PcId> {
        Some(&self.from_pc)
    }

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.from_pc == self.to_pc
            && !WakeTask::parse(&self.task).is_some_and(WakeTask::may_be_sent_to_self)
        {
            problems.push(format!("from_pc and to_pc are both {}", self.from_pc));
        }
        let task_ok = !self.task.is_empty()
            && self.task.len() <= 64
            && self
                .task
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !task_ok {
            problems.push(format!(
                "task {:?} must be 1 to 64 characters of a-z, 0-9, `_` and `-`",
                self.task.chars().take(80).collect::<String>()
            ));
        }
        let chars = self.message.chars().count();
        if chars > MAX_WAKE_MESSAGE_CHARS {
            problems.push(format!(
                "message is {chars} characters long, the limit is {MAX_WAKE_MESSAGE_CHARS}"
            ));
        }
        if self
            .message
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            problems.push("message contains control characters".to_owned());
        }
        if let Some(expires) = self.expires_at
            && expires <= self.timestamp
        {
            problems.push("expires_at is not after timestamp".to_owned());
        }
        if let Some(handoff) = &self.handoff
            && handoff.to_pc() != &self.to_pc
        {
            problems.push(format!(
                "handoff {handoff} is for {}, but the signal is addressed to {}",
                handoff.to_pc(),
                self.to_pc
            ));
        }
        problems
    }
}
