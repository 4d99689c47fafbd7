//! The coordinator's files: lease, verification results, fleet status, dashboard, escalations.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CreditLevel, HandoffReason, Schema, v1};
use crate::ids::{HandoffId, PcId, RecordId, TaskId};
use crate::state::InstanceState;

/// `coordinator/lease.json`: who leads. Compare-and-swap through git push; the epoch rises by
/// one at every change of holder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// The leader.
    pub holder: PcId,
    /// Rises by one with every new holder; never goes down.
    pub epoch: u64,
    /// When the holder took the lease.
    pub acquired_at: DateTime<Utc>,
    /// When the holder last renewed it.
    pub renewed_at: DateTime<Utc>,
    /// When it lapses unless renewed.
    pub expires_at: DateTime<Utc>,
}

impl Schema for Lease {
    const NAME: &'static str = "coordinator lease";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 16 * 1024;
    const SIGNED: bool = true;

    fn author(&self) -> Option<&PcId> {
        Some(&self.holder)
    }

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.epoch == 0 {
            problems.push("epoch must be at least 1".to_owned());
        }
        if self.renewed_at < self.acquired_at {
            problems.push("renewed_at is before acquired_at".to_owned());
        }
        if self.expires_at <= self.renewed_at {
            problems.push("expires_at is not after renewed_at".to_owned());
        }
        problems
    }
}

/// How one verification phase went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    /// Not started yet.
    Pending,
    /// Running.
    Running,
    /// Exit code 0, no critical or high issues.
    Passed,
    /// Ran and reported failure.
    Failed,
    /// Did not start within its start deadline.
    NotStarted,
    /// Ran past its run deadline and was stopped.
    TimedOut,
}

/// One phase of a verification run (a configured command).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseResult {
    /// The phase's configured name.
    pub name: String,
    /// How it went.
    pub status: PhaseStatus,
    /// Whether a failure of this phase is critical (DENY) rather than ambiguous (ESCALATE).
    #[serde(default)]
    pub critical: bool,
    /// The command's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// How long it ran, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Critical issues it reported.
    #[serde(default)]
    pub critical_issues: u32,
    /// High-severity issues it reported.
    #[serde(default)]
    pub high_issues: u32,
    /// Medium-severity issues it reported.
    #[serde(default)]
    pub medium_issues: u32,
    /// Low-severity issues it reported.
    #[serde(default)]
    pub low_issues: u32,
    /// Test coverage it reported, 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// Whether the benchmarks it ran held (false: a regression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benchmarks_ok: Option<bool>,
    /// A line for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The last lines of its output (stdout and stderr), at most 4 KiB.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_tail: String,
}

impl PhaseResult {
    /// A phase in `status` with nothing measured yet.
    pub fn new(name: impl Into<String>, status: PhaseStatus, critical: bool) -> Self {
        Self {
            name: name.into(),
            status,
            critical,
            exit_code: None,
            duration_s: None,
            critical_issues: 0,
            high_issues: 0,
            medium_issues: 0,
            low_issues: 0,
            coverage: None,
            benchmarks_ok: None,
            summary: None,
            output_tail: String::new(),
        }
    }
}

/// The coordinator's decision on a handoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Every phase passed with no critical or high issues.
    Approve,
    /// A critical failure.
    Deny,
    /// Mixed or unclear results: a person decides.
    Escalate,
}

impl Verdict {
    /// The verdict in the seed's words: `APPROVE`, `DENY`, `ESCALATE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "APPROVE",
            Verdict::Deny => "DENY",
            Verdict::Escalate => "ESCALATE",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `verification/{handoff-id}.json`, owned by the coordinator leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// The handoff verified (must match the file name).
    pub handoff_id: HandoffId,
    /// The PC whose work is verified.
    pub pc: PcId,
    /// The finished task, for a work-complete submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskId>,
    /// The leader that ran it.
    pub coordinator: PcId,
    /// The leader's lease epoch.
    pub epoch: u64,
    /// When verification started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Each phase, in order.
    #[serde(default)]
    pub phases: Vec<PhaseResult>,
    /// The decision, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Why, one reason a line.
    #[serde(default)]
    pub reasons: Vec<String>,
}

impl Schema for Verification {
    const NAME: &'static str = "verification result";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 1024 * 1024;
    const SIGNED: bool = true;

    fn author(&self) -> Option<&PcId> {
        Some(&self.coordinator)
    }

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(finished) = self.finished_at
            && finished < self.started_at
        {
            problems.push("finished_at is before started_at".to_owned());
        }
        if let Some(verdict) = self.verdict {
            if self.finished_at.is_none() {
                problems.push("a verdict needs finished_at".to_owned());
            }
            if self.reasons.is_empty() {
                problems.push("a verdict needs at least one reason".to_owned());
            }
            let all_passed = self.phases.iter().all(|p| {
                p.status == PhaseStatus::Passed && p.critical_issues == 0 && p.high_issues == 0
            });
            if verdict == Verdict::Approve && !all_passed {
                problems.push("verdict APPROVE but not every phase passed cleanly".to_owned());
            }
        }
        for phase in &self.phases {
            if let Some(c) = phase.coverage {
                super::check_fraction(&format!("phases.{}.coverage", phase.name), c, &mut problems);
            }
            if let Some(d) = phase.duration_s {
                super::check_non_negative(
                    &format!("phases.{}.duration_s", phase.name),
                    d,
                    &mut problems,
                );
            }
        }
        problems
    }
}

/// How alive a PC looks to the coordinator, judged by the coordinator's own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Its files changed recently.
    Alive,
    /// Silent for a while; a reactivation wake was sent.
    Suspect,
    /// Silent past the hard limit; its work is reassigned.
    Dead,
    /// Never seen.
    Unknown,
}

/// One PC's line in the fleet status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSummary {
    /// Alive, suspect or dead by how long the leader saw none of its files change.
    pub liveness: Liveness,
    /// Its state-machine state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<InstanceState>,
    /// The task it works on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_task: Option<TaskId>,
    /// The level its `credit/{PC}.json` gives, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_level: Option<CreditLevel>,
    /// When the coordinator last saw one of its files change (coordinator's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change_seen: Option<DateTime<Utc>>,
    /// Seconds since then, when the status was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_for_s: Option<f64>,
    /// The PC a handoff from it would go to now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_pc: Option<PcId>,
}

/// A handoff on its way, and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoffInFlight {
    /// The handoff.
    pub id: HandoffId,
    /// Why it was written.
    pub reason: HandoffReason,
    /// Where it stands: `waiting_for_receiver`, `verifying`, `approved`, `denied`,
    /// `escalated`.
    pub phase: String,
}

/// The seed's key performance indicators.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Kpis {
    /// Handoffs seen.
    #[serde(default)]
    pub handoffs: u64,
    /// Median time from HANDOFF_READY to APPROVED, in seconds (target under 15 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_cycle_time_median_s: Option<f64>,
    /// Share of verifications approved automatically (target over 0.95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_approval_rate: Option<f64>,
    /// Share of verifications with critical integration failures (target under 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration_issue_rate: Option<f64>,
    /// Share of handoffs escalated to a person (target under 0.10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_rate: Option<f64>,
}

/// `status/multi-instance-status.json`, owned by the coordinator leader: the fleet at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiInstanceStatus {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// When the leader wrote it.
    pub updated_at: DateTime<Utc>,
    /// The leader.
    pub coordinator: PcId,
    /// The leader's lease epoch.
    pub epoch: u64,
    /// Every PC of the fleet.
    #[serde(default)]
    pub instances: BTreeMap<PcId, InstanceSummary>,
    /// Handoffs written but not yet archived by their receiver.
    #[serde(default)]
    pub pending_handoffs: Vec<HandoffId>,
    /// Handoffs in flight and their phase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handoffs: Vec<HandoffInFlight>,
    /// When the leader last acted on its own (approved, denied, reassigned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_autonomous_action: Option<DateTime<Utc>>,
    /// What that action was, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<String>,
    /// The seed's indicators from the verification records (cycle time, approval rate, …).
    #[serde(default)]
    pub kpis: Kpis,
}

impl Schema for MultiInstanceStatus {
    const NAME: &'static str = "multi-instance status";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 1024 * 1024;

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let k = &self.kpis;
        for (name, v) in [
            ("kpis.auto_approval_rate", k.auto_approval_rate),
            ("kpis.integration_issue_rate", k.integration_issue_rate),
            ("kpis.escalation_rate", k.escalation_rate),
        ] {
            if let Some(v) = v {
                super::check_fraction(name, v, &mut problems);
            }
        }
        problems
    }
}

/// One PC's line on the credit dashboard (the seed's format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardEntry {
    /// Its credit level.
    pub status: CreditLevel,
    /// Rate-limit responses in the window.
    #[serde(default)]
    pub rate_limit_count: u32,
    /// Errors over recent calls, 0..1.
    #[serde(default)]
    pub error_rate: f64,
    /// Mean response time, seconds.
    #[serde(default)]
    pub avg_response_time: f64,
    /// Where a handoff would go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_pc: Option<PcId>,
}

/// `dashboards/credit_status.json`, owned by the coordinator leader (the seed's format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditDashboard {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// Every PC's credit.
    pub pcs: BTreeMap<PcId, DashboardEntry>,
    /// When it was written.
    pub last_update: DateTime<Utc>,
}

impl Schema for CreditDashboard {
    const NAME: &'static str = "credit dashboard";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 256 * 1024;

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (pc, entry) in &self.pcs {
            super::check_credit_figures(
                &format!("pcs.{pc}"),
                entry.error_rate,
                entry.avg_response_time,
                &mut problems,
            );
        }
        problems
    }
}

/// What needs a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationKind {
    /// Every PC is out of credit; nobody was woken.
    AllExhausted,
    /// git-sync met a change no merge rule decides; both versions were kept.
    MergeConflict,
    /// Verification results were mixed or unclear.
    Verification,
    /// A PC went silent and its work could not be reassigned.
    StaleInstance,
    /// Anything else.
    Other,
}

/// `escalations/{id}.json`: something a person must decide. Immutable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// Unique id (must match the file name).
    pub id: RecordId,
    /// When it was raised.
    pub created_at: DateTime<Utc>,
    /// Who raised it.
    pub created_by: PcId,
    /// What kind of problem.
    pub kind: EscalationKind,
    /// One line for people.
    pub summary: String,
    /// The handoff concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<HandoffId>,
    /// Tree paths concerned, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// More text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

impl Schema for Escalation {
    const NAME: &'static str = "escalation";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 256 * 1024;

    fn check(&self) -> Vec<String> {
        if self.summary.trim().is_empty() {
            vec!["summary is empty".to_owned()]
        } else {
            Vec::new()
        }
    }
}
