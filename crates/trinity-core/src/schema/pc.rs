//! The files each PC owns: heartbeat, credit status, instance status.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CreditLevel, CurrentWork, HandoffReason, Schema, v1};
use crate::ids::{DaemonName, HandoffId, PcId, TaskId};
use crate::state::InstanceState;

/// What a PC is doing, as its heartbeat tells the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeartbeatStatus {
    /// Working.
    Active,
    /// Running, with nothing to do.
    Idle,
    /// Pausing after handing off (see `paused_until`).
    Paused,
    /// Handed its work to `to_pc` (the seed's outgoing heartbeat).
    HandoffInitiated,
    /// Took over `from_pc`'s work (the seed's incoming heartbeat).
    HandoffAccepted,
    /// Out of credit and nobody could take over.
    Exhausted,
    /// Shut down on purpose.
    Stopped,
}

/// One daemon's liveness inside a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonBeat {
    /// The process id.
    pub pid: u32,
    /// When the daemon started.
    pub started_at: DateTime<Utc>,
    /// When it last reported.
    pub updated_at: DateTime<Utc>,
    /// trinity's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `heartbeat/{PC}.json`, owned by the PC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// The PC (must match the file name).
    pub pc: PcId,
    /// What it is doing.
    pub status: HeartbeatStatus,
    /// When this was written, by the PC's clock (peers judge staleness by their own clocks).
    pub timestamp: DateTime<Utc>,
    /// With `handoff_initiated`: the PC that took over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_pc: Option<PcId>,
    /// With `handoff_accepted`: the PC the work came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_pc: Option<PcId>,
    /// Why the last handoff happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<HandoffReason>,
    /// With `handoff_accepted`: how many tasks were received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_received: Option<u32>,
    /// The last handoff this PC sent or accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<HandoffId>,
    /// With `paused`: when the pause ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<DateTime<Utc>>,
    /// The PC's daemons, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub daemons: BTreeMap<DaemonName, DaemonBeat>,
    /// The kinds of task this PC takes (its config's `roles`; none: any), for the
    /// coordinator's assignments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl Heartbeat {
    /// A heartbeat with only its required fields.
    pub fn new(pc: PcId, status: HeartbeatStatus, timestamp: DateTime<Utc>) -> Self {
        Self {
            format_version: 1,
            pc,
            status,
            timestamp,
            to_pc: None,
            from_pc: None,
            reason: None,
            tasks_received: None,
            handoff: None,
            paused_until: None,
            daemons: BTreeMap::new(),
            roles: Vec::new(),
        }
    }
}

impl Schema for Heartbeat {
    const NAME: &'static str = "heartbeat";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 64 * 1024;

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.status {
            HeartbeatStatus::HandoffInitiated if self.to_pc.is_none() => {
                problems.push("status handoff_initiated needs to_pc".to_owned());
            }
            HeartbeatStatus::HandoffAccepted if self.from_pc.is_none() => {
                problems.push("status handoff_accepted needs from_pc".to_owned());
            }
            HeartbeatStatus::Paused if self.paused_until.is_none() => {
                problems.push("status paused needs paused_until".to_owned());
            }
            _ => {}
        }
        if self.to_pc.as_ref() == Some(&self.pc) {
            problems.push(format!("to_pc is the heartbeat's own PC {}", self.pc));
        }
        if self.from_pc.as_ref() == Some(&self.pc) {
            problems.push(format!("from_pc is the heartbeat's own PC {}", self.pc));
        }
        problems
    }
}

/// `credit/{PC}.json`, owned by the PC: its credit monitor's latest evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditStatus {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// The PC (must match the file name).
    pub pc: PcId,
    /// When the evaluation ran.
    pub updated_at: DateTime<Utc>,
    /// The resulting level.
    pub level: CreditLevel,
    /// The rule that decided the level (none when every rule is at zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// That rule's fraction of its threshold (1.0 = threshold reached).
    #[serde(default)]
    pub fraction: f64,
    /// A sentence for people.
    #[serde(default)]
    pub reason: String,
    /// Every rule's fraction of its threshold.
    #[serde(default)]
    pub rules: BTreeMap<String, f64>,
    /// Rate-limit responses in the window.
    #[serde(default)]
    pub rate_limit_count: u32,
    /// Errors over recent calls, 0..1.
    #[serde(default)]
    pub error_rate: f64,
    /// Mean response time of recent calls, in seconds.
    #[serde(default)]
    pub avg_response_time: f64,
    /// Until when this PC must not be chosen as a handoff target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exhausted_until: Option<DateTime<Utc>>,
    /// The PC a handoff would go to now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_pc: Option<PcId>,
    /// Tokens used per UTC day (`YYYY-MM-DD`), the last seven days.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens_by_day: BTreeMap<String, u64>,
}

impl Schema for CreditStatus {
    const NAME: &'static str = "credit status";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 64 * 1024;

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        super::check_credit_figures("", self.error_rate, self.avg_response_time, &mut problems);
        super::check_non_negative("fraction", self.fraction, &mut problems);
        for (rule, fraction) in &self.rules {
            super::check_non_negative(&format!("rules.{rule}"), *fraction, &mut problems);
        }
        if self.tokens_by_day.len() > 14 {
            problems.push(format!(
                "tokens_by_day has {} days, at most 14",
                self.tokens_by_day.len()
            ));
        }
        for day in self.tokens_by_day.keys() {
            if chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").is_err() {
                problems.push(format!("tokens_by_day: `{day}` is not a date (YYYY-MM-DD)"));
            }
        }
        if self.level == CreditLevel::Exhausted && self.rule.is_none() {
            problems.push("level EXHAUSTED needs the rule that decided it".to_owned());
        }
        if self.next_pc.as_ref() == Some(&self.pc) {
            problems.push(format!("next_pc is the PC itself ({})", self.pc));
        }
        problems
    }
}

/// `instances/{PC}.json`, owned by the PC: where it stands in the handoff state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// The PC (must match the file name).
    pub pc: PcId,
    /// Where it stands in the handoff state machine (STANDBY, ACTIVE, HANDOFF_READY, …).
    pub state: InstanceState,
    /// When it entered that state.
    pub since: DateTime<Utc>,
    /// The work in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_work: Option<CurrentWork>,
    /// Tasks this PC holds claims on and has not finished.
    #[serde(default)]
    pub claimed_tasks: Vec<TaskId>,
    /// The handoff that this state is about (the one sent in HANDOFF_READY, verified in
    /// VERIFICATION, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<HandoffId>,
    /// The newest work epoch this PC has accepted.
    #[serde(default)]
    pub epoch: u64,
}

impl Schema for InstanceStatus {
    const NAME: &'static str = "instance status";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 256 * 1024;

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.state == InstanceState::Active
            && self.current_work.is_none()
            && self.claimed_tasks.is_empty()
        {
            problems.push("state ACTIVE needs current_work or claimed_tasks".to_owned());
        }
        if matches!(
            self.state,
            InstanceState::HandoffReady
                | InstanceState::Verification
                | InstanceState::Approved
                | InstanceState::Failed
        ) && self.handoff.is_none()
        {
            problems.push(format!(
                "state {} needs the handoff it is about",
                self.state
            ));
        }
        problems
    }
}
