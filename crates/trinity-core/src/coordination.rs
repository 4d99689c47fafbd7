//! The coordinator's decisions, as pure functions: who leads, who is alive, what a verification
//! run means, which PC gets which task, and the KPIs.
//!
//! Every rule that depends on time takes `now` and the moments the caller observed (by its own
//! clock), so tests run the 45-minute rules in microseconds. The coordinator daemon gathers the
//! inputs from the tree and acts on the answers; nothing here reads a file.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ids::{HandoffId, PcId, TaskId};
use crate::queue::{QueueView, TaskState, role_fits};
use crate::schema::{
    CreditLevel, CreditStatus, Handoff, HandoffReason, Heartbeat, HeartbeatStatus, InstanceStatus,
    Kpis, Lease, Liveness, Phase, PhaseResult, PhaseStatus, TaskRef, Verdict, Verification,
};
use crate::state::InstanceState;

/// What a coordinator should do about the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAction {
    /// It holds the lease and the renewal is not due.
    Hold,
    /// It holds the lease; write it again with a fresh `renewed_at`.
    Renew,
    /// Take the lease with this epoch.
    Take {
        /// The new epoch: one above the last one seen.
        epoch: u64,
        /// Why, for the log.
        why: &'static str,
    },
    /// Someone else leads; do nothing a leader does.
    Follow {
        /// The leader.
        holder: PcId,
    },
}

/// What the coordinator observed of the lease.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSeen<'a> {
    /// The lease file's contents, if there is one.
    pub lease: Option<&'a Lease>,
    /// When the observer last saw the lease file change (or first looked, when it has not
    /// changed since), by the observer's clock.
    pub unchanged_since: DateTime<Utc>,
}

/// Decides what `me` does about the lease. A lease lapses when it has not changed for `ttl`
/// by the observer's own clock (never by the holder's time stamps: clocks skew). The preferred
/// leader takes a missing lease at once and takes the lease back from any other holder; the
/// others take a missing lease only after watching for `ttl`, so the preferred one wins when
/// it is alive. The holder renews every `ttl / 3`.
pub fn lease_action(
    me: &PcId,
    preferred: &PcId,
    seen: LeaseSeen<'_>,
    now: DateTime<Utc>,
    ttl: Duration,
) -> LeaseAction {
    let waited = (now - seen.unchanged_since).to_std().unwrap_or_default();
    let lapsed = waited >= ttl;
    match seen.lease {
        None if me == preferred => LeaseAction::Take {
            epoch: 1,
            why: "there is no lease and this PC is the preferred leader",
        },
        None if lapsed => LeaseAction::Take {
            epoch: 1,
            why: "there is no lease and the preferred leader has not taken it",
        },
        None => LeaseAction::Follow {
            holder: preferred.clone(),
        },
        Some(lease) if &lease.holder == me => {
            let since = (now - lease.renewed_at).to_std().unwrap_or_default();
            if since >= ttl / 3 {
                LeaseAction::Renew
            } else {
                LeaseAction::Hold
            }
        }
        Some(lease) if lapsed => LeaseAction::Take {
            epoch: lease.epoch + 1,
            why: "the lease has not been renewed within lease_ttl",
        },
        Some(lease) if me == preferred => LeaseAction::Take {
            epoch: lease.epoch + 1,
            why: "this PC is the preferred leader and is back",
        },
        Some(lease) => LeaseAction::Follow {
            holder: lease.holder.clone(),
        },
    }
}

/// How alive a PC looks: by the time since the observer last saw one of its files change.
pub fn liveness(
    last_change_seen: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    suspect_after: Duration,
    dead_after: Duration,
) -> Liveness {
    let Some(seen) = last_change_seen else {
        return Liveness::Unknown;
    };
    let silent = (now - seen).to_std().unwrap_or_default();
    if silent >= dead_after {
        Liveness::Dead
    } else if silent >= suspect_after {
        Liveness::Suspect
    } else {
        Liveness::Alive
    }
}

/// What a PC is doing, for the dashboard's timeline: from its liveness (as the leader judges
/// it) and its own files. Silence and death come first (its files may be hours old); then a
/// deliberate stop, exhaustion (until its reset when known), a pause after a handoff, and
/// whether its agent works. `None` when nothing is known of it.
pub fn phase_of(
    liveness: Liveness,
    heartbeat: Option<&Heartbeat>,
    instance: Option<&InstanceStatus>,
    credit: Option<&CreditStatus>,
    now: DateTime<Utc>,
) -> Option<(Phase, Option<DateTime<Utc>>)> {
    match liveness {
        Liveness::Dead => return Some((Phase::Dead, None)),
        Liveness::Suspect => return Some((Phase::Silent, None)),
        Liveness::Alive | Liveness::Unknown => {}
    }
    let future = |t: Option<DateTime<Utc>>| t.filter(|t| *t > now);
    let status = heartbeat.map(|h| h.status);
    let paused_until = future(heartbeat.and_then(|h| h.paused_until));
    let exhausted_until = future(credit.and_then(|c| c.exhausted_until));
    if status == Some(HeartbeatStatus::Stopped) {
        return Some((Phase::Stopped, None));
    }
    if credit.is_some_and(|c| c.level == CreditLevel::Exhausted)
        || status == Some(HeartbeatStatus::Exhausted)
    {
        return Some((Phase::Exhausted, exhausted_until.or(paused_until)));
    }
    if matches!(
        status,
        Some(HeartbeatStatus::Paused | HeartbeatStatus::HandoffInitiated)
    ) {
        return Some((Phase::Paused, paused_until.or(exhausted_until)));
    }
    if let Some(i) = instance {
        return Some(match i.state {
            InstanceState::Active | InstanceState::Remediation => (Phase::Active, None),
            InstanceState::Standby
            | InstanceState::HandoffReady
            | InstanceState::Verification
            | InstanceState::Approved
            | InstanceState::Failed
            | InstanceState::HandoffComplete => (Phase::Standby, None),
        });
    }
    match status? {
        HeartbeatStatus::Active | HeartbeatStatus::HandoffAccepted => Some((Phase::Active, None)),
        _ => Some((Phase::Standby, None)),
    }
}

/// The bounds a verdict is judged by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criteria {
    /// The least coverage a phase may report.
    pub coverage_min: f64,
    /// More medium issues than this (over all phases) escalate.
    pub medium_issue_limit: u32,
}

/// The verdict on a verification run, with its reasons (one line each), by the seed's
/// criteria. DENY: a critical phase failed, a critical issue, a regressed benchmark, coverage
/// below the minimum. ESCALATE (a person decides): a phase that did not start or ran past its
/// deadline, ended without an exit code, failed without being critical, high issues, medium
/// issues over the limit. APPROVE: everything passed cleanly.
pub fn verdict(phases: &[PhaseResult], criteria: Criteria) -> (Verdict, Vec<String>) {
    let mut deny = Vec::new();
    let mut escalate = Vec::new();
    let mut medium = 0u32;
    for p in phases {
        let name = &p.name;
        match p.status {
            PhaseStatus::Failed if p.critical => {
                deny.push(format!("critical phase {name} failed{}", exit_text(p)));
            }
            PhaseStatus::Failed if p.exit_code.is_none() => {
                escalate.push(format!("phase {name} ended without an exit code"));
            }
            PhaseStatus::Failed => {
                escalate.push(format!("phase {name} failed{}", exit_text(p)));
            }
            PhaseStatus::TimedOut => escalate.push(format!("phase {name} ran past its deadline")),
            PhaseStatus::NotStarted => {
                escalate.push(format!("phase {name} did not start within its deadline"));
            }
            PhaseStatus::Pending | PhaseStatus::Running => {
                escalate.push(format!("phase {name} has no result"));
            }
            PhaseStatus::Passed => {}
        }
        if p.critical_issues > 0 {
            deny.push(format!(
                "phase {name} reported {} critical issue(s)",
                p.critical_issues
            ));
        }
        if p.high_issues > 0 {
            escalate.push(format!(
                "phase {name} reported {} high-severity issue(s)",
                p.high_issues
            ));
        }
        if p.benchmarks_ok == Some(false) {
            deny.push(format!("phase {name} reported a benchmark regression"));
        }
        if let Some(c) = p.coverage
            && c < criteria.coverage_min
        {
            deny.push(format!(
                "phase {name} reported coverage {:.0}%, below the minimum {:.0}%",
                c * 100.0,
                criteria.coverage_min * 100.0
            ));
        }
        medium += p.medium_issues;
    }
    if medium > criteria.medium_issue_limit {
        escalate.push(format!(
            "{medium} medium-severity issues, more than the limit {}",
            criteria.medium_issue_limit
        ));
    }
    if !deny.is_empty() {
        deny.extend(escalate);
        return (Verdict::Deny, deny);
    }
    if !escalate.is_empty() {
        return (Verdict::Escalate, escalate);
    }
    let reason = if phases.is_empty() {
        "no verification phases are configured ([[coordinator.phases]]): approved unchecked"
            .to_owned()
    } else {
        format!(
            "all {} phase(s) passed with no critical or high issues",
            phases.len()
        )
    };
    (Verdict::Approve, vec![reason])
}

fn exit_text(p: &PhaseResult) -> String {
    p.exit_code
        .map(|c| format!(" (exit code {c})"))
        .unwrap_or_default()
}

/// What a phase said about itself in its last line of output, when that line is a JSON
/// object: `{"critical":0,"high":0,"medium":2,"low":5,"coverage":0.83,"benchmarks_ok":true}`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct PhaseReport {
    /// Critical issues.
    pub critical: u32,
    /// High-severity issues.
    pub high: u32,
    /// Medium-severity issues.
    pub medium: u32,
    /// Low-severity issues.
    pub low: u32,
    /// Coverage, 0..1.
    pub coverage: Option<f64>,
    /// Whether the benchmarks held.
    pub benchmarks_ok: Option<bool>,
}

/// Reads the report from a phase's output: its last non-empty line, when it is a JSON object.
/// `Err` when the line looks like JSON (starts with `{`) but is not a valid report: the phase
/// meant to report and the report is unreadable.
pub fn phase_report(output: &str) -> Result<Option<PhaseReport>, String> {
    let Some(last) = output.lines().map(str::trim).rfind(|l| !l.is_empty()) else {
        return Ok(None);
    };
    if !last.starts_with('{') {
        return Ok(None);
    }
    serde_json::from_str::<PhaseReport>(last)
        .map(Some)
        .map_err(|e| format!("its last line looks like a JSON report but is not one: {e}"))
}

/// A PC that could take work now.
#[derive(Debug, Clone, PartialEq)]
pub struct Idle {
    /// The PC on standby, with nothing claimed and nothing on its way to it.
    pub pc: PcId,
    /// Its roles (none: any task).
    pub roles: Vec<String>,
    /// Tokens it used recently (for `least-used`).
    pub tokens: u64,
}

/// The work of a PC declared dead, to be handed to a live one.
#[derive(Debug, Clone, PartialEq)]
pub struct Reassignment {
    /// Its unfinished tasks: its claims (the work in progress first, then by priority and
    /// age), then the work on its way to it that it never accepted.
    pub tasks: Vec<TaskRef>,
    /// The work epoch the reassignment carries: above every claim it takes over, so the dead
    /// PC's late claims lose.
    pub work_epoch: u64,
}

/// What of `dead`'s work goes to another PC: the tasks it claimed and did not finish, and the
/// tasks of handoffs addressed to it that it never accepted (nobody else would ever take them)
/// — leaving out tasks already on their way in another reassignment, finished ones, and those
/// another PC holds. `current` is the task it was working on.
pub fn reassignment(
    dead: &PcId,
    queue: &QueueView,
    pending: &[(HandoffId, Handoff)],
    current: Option<&TaskId>,
) -> Reassignment {
    let in_flight: BTreeSet<&TaskId> = pending
        .iter()
        .filter(|(_, h)| h.reason == HandoffReason::Reassignment)
        .flat_map(|(_, h)| h.task_queue.iter().map(|t| &t.id))
        .collect();
    let mut claims: Vec<_> = queue
        .claims
        .values()
        .filter(|c| &c.pc == dead && !queue.done.contains_key(&c.task_id))
        .collect();
    claims.sort_by_key(|c| {
        let task = queue.tasks.get(&c.task_id);
        (
            Some(&c.task_id) != current,
            task.map_or(u8::MAX, |t| t.priority.rank()),
            task.map(|t| t.created_at),
            c.task_id.clone(),
        )
    });
    let mut tasks: Vec<TaskRef> = claims
        .iter()
        .filter(|c| !in_flight.contains(&c.task_id))
        .map(|c| match queue.tasks.get(&c.task_id) {
            Some(t) => TaskRef {
                id: t.id.clone(),
                priority: t.priority,
                description: t.description.clone(),
            },
            None => TaskRef {
                id: c.task_id.clone(),
                priority: Default::default(),
                description: String::new(),
            },
        })
        .collect();
    for (_, h) in pending
        .iter()
        .filter(|(_, h)| &h.to_pc == dead && h.reason != HandoffReason::WorkComplete)
    {
        for t in &h.task_queue {
            if !in_flight.contains(&t.id)
                && !queue.done.contains_key(&t.id)
                && !tasks.iter().any(|x| x.id == t.id)
                && queue.claims.get(&t.id).is_none_or(|c| &c.pc == dead)
            {
                tasks.push(t.clone());
            }
        }
    }
    Reassignment {
        tasks,
        work_epoch: claims.iter().map(|c| c.epoch).max().unwrap_or(0) + 1,
    }
}

/// Which PC gets which task: each idle PC, in the given order, gets the best queued task that
/// fits its roles — priority, then age (dependencies done, unclaimed, not in `taken`).
pub fn assign(queue: &QueueView, idle: &[Idle], taken: &BTreeSet<TaskId>) -> Vec<(PcId, TaskId)> {
    let ready: Vec<_> = queue
        .listing()
        .into_iter()
        .filter(|(t, s)| *s == TaskState::Queued && !taken.contains(&t.id))
        .map(|(t, _)| t)
        .collect();
    let mut given = BTreeSet::new();
    let mut out = Vec::new();
    for pc in idle {
        if let Some(task) = ready
            .iter()
            .find(|t| !given.contains(&t.id) && role_fits(t, &pc.roles))
        {
            given.insert(task.id.clone());
            out.push((pc.pc.clone(), task.id.clone()));
        }
    }
    out
}

/// The key performance indicators, from the verification records and the number of handoffs
/// seen. Cycle time: from the submission (the handoff's time stamp) to an APPROVE.
pub fn kpis(verifications: &[Verification], handoffs: u64) -> Kpis {
    let decided: Vec<&Verification> = verifications
        .iter()
        .filter(|v| v.verdict.is_some())
        .collect();
    let n = decided.len() as f64;
    let share = |f: &dyn Fn(&Verification) -> bool| {
        (n > 0.0).then(|| decided.iter().filter(|v| f(v)).count() as f64 / n)
    };
    let mut cycle: Vec<f64> = decided
        .iter()
        .filter(|v| v.verdict == Some(Verdict::Approve))
        .filter_map(|v| {
            let end = v.finished_at?;
            Some((end - v.handoff_id.created_at()).num_milliseconds() as f64 / 1000.0)
        })
        .filter(|s| *s >= 0.0)
        .collect();
    cycle.sort_by(f64::total_cmp);
    let median = match cycle.len() {
        0 => None,
        k if k % 2 == 1 => Some(cycle[k / 2]),
        k => Some((cycle[k / 2 - 1] + cycle[k / 2]) / 2.0),
    };
    Kpis {
        handoffs,
        handoff_cycle_time_median_s: median,
        auto_approval_rate: share(&|v| v.verdict == Some(Verdict::Approve)),
        integration_issue_rate: share(&|v| {
            v.verdict == Some(Verdict::Deny)
                && v.phases.iter().any(|p| {
                    (p.critical && p.status == PhaseStatus::Failed) || p.critical_issues > 0
                })
        }),
        escalation_rate: share(&|v| v.verdict == Some(Verdict::Escalate)),
    }
}

/// The seed's KPI targets, with whether each is met: (name, value text, target text, met).
pub fn kpi_checks(k: &Kpis) -> Vec<(&'static str, String, &'static str, Option<bool>)> {
    let pct = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{:.1}%", v * 100.0));
    vec![
        (
            "handoff cycle time (ready → approved, median)",
            k.handoff_cycle_time_median_s
                .map_or("n/a".to_owned(), |s| format!("{:.1} min", s / 60.0)),
            "< 15 min",
            k.handoff_cycle_time_median_s.map(|s| s < 15.0 * 60.0),
        ),
        (
            "auto-approval rate",
            pct(k.auto_approval_rate),
            "> 95%",
            k.auto_approval_rate.map(|r| r > 0.95),
        ),
        (
            "critical integration failures",
            pct(k.integration_issue_rate),
            "< 5%",
            k.integration_issue_rate.map(|r| r < 0.05),
        ),
        (
            "escalations",
            pct(k.escalation_rate),
            "< 10%",
            k.escalation_rate.map(|r| r < 0.10),
        ),
    ]
}

/// Observes when each PC's files last changed, by the observer's clock: feed it a fingerprint
/// of each PC's files on every look.
#[derive(Debug, Clone, Default)]
pub struct ChangeWatch {
    seen: BTreeMap<PcId, (u64, DateTime<Utc>)>,
}

impl ChangeWatch {
    /// Records this look at `pc`'s files (`fingerprint` of their contents; `None`: it has none).
    /// Returns when they last changed. The first look counts as a change: a new observer gives
    /// every PC the full grace period.
    pub fn observe(
        &mut self,
        pc: &PcId,
        fingerprint: Option<u64>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let fp = fingerprint?;
        match self.seen.get_mut(pc) {
            Some((old, at)) if *old == fp => Some(*at),
            Some(entry) => {
                *entry = (fp, now);
                Some(now)
            }
            None => {
                self.seen.insert(pc.clone(), (fp, now));
                Some(now)
            }
        }
    }

    /// When `pc`'s files last changed, if ever seen.
    pub fn last_change(&self, pc: &PcId) -> Option<DateTime<Utc>> {
        self.seen.get(pc).map(|(_, at)| *at)
    }
}

/// A stable 64-bit fingerprint of some bytes (FNV-1a): the same on every run and platform.
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Priority, Task};

    fn pc(s: &str) -> PcId {
        PcId::new(s).expect("valid")
    }

    fn t0() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().expect("time")
    }

    fn lease(holder: &str, epoch: u64, renewed: DateTime<Utc>) -> Lease {
        Lease {
            format_version: 1,
            holder: pc(holder),
            epoch,
            acquired_at: renewed,
            renewed_at: renewed,
            expires_at: renewed + chrono::Duration::seconds(120),
        }
    }

    const TTL: Duration = Duration::from_secs(120);

    #[test]
    fn a_dead_pcs_work_is_its_unfinished_claims_then_what_it_never_accepted() {
        use crate::schema::{Claim, Done, Outcome, Priority, Task};
        let t = |m: i64| t0() + chrono::Duration::minutes(m);
        let id = |s: &str| TaskId::new(s).expect("task");
        let mut q = QueueView::default();
        for (name, priority, minute) in [
            ("api", Priority::Medium, 0),
            ("ui", Priority::High, 1),
            ("web", Priority::High, 2),
            ("docs", Priority::Critical, 3),
            ("db", Priority::Low, 4),
        ] {
            q.tasks.insert(
                id(name),
                Task {
                    format_version: 1,
                    id: id(name),
                    description: format!("do {name}"),
                    priority,
                    created_at: t(minute),
                    created_by: pc("PC1"),
                    dependencies: Vec::new(),
                    role: None,
                },
            );
        }
        let claim = |task: &str, who: &str, epoch: u64| Claim {
            format_version: 1,
            task_id: id(task),
            pc: pc(who),
            claimed_at: t(10),
            epoch,
            handoff: None,
        };
        for c in [
            claim("api", "PC2", 2),
            claim("web", "PC2", 5),
            claim("ui", "PC2", 1),
            claim("docs", "PC2", 9),
            claim("db", "PC3", 1),
        ] {
            q.claims.insert(c.task_id.clone(), c);
        }
        q.done.insert(
            id("docs"),
            Done {
                format_version: 1,
                task_id: id("docs"),
                pc: pc("PC2"),
                finished_at: t(20),
                outcome: Outcome::Completed,
                summary: String::new(),
                commit: None,
            },
        );
        let handoff = |to: &str, reason, tasks: &[&str]| {
            let h = Handoff {
                format_version: 1,
                from_pc: pc("PC3"),
                to_pc: pc(to),
                timestamp: t(30),
                reason,
                task_queue: tasks
                    .iter()
                    .map(|n| TaskRef {
                        id: id(n),
                        priority: Priority::Medium,
                        description: String::new(),
                    })
                    .collect(),
                current_work: None,
                credit_state: None,
                epoch: None,
                authored_by: None,
                leader_epoch: None,
            };
            (h.id().expect("id"), h)
        };
        let pending = [
            // "ui" is on its way to PC1 already (an earlier reassignment).
            handoff("PC1", HandoffReason::Reassignment, &["ui"]),
            // Given to PC2, never accepted: "cli" goes too, "db" is PC3's.
            handoff("PC2", HandoffReason::Assignment, &["cli", "db"]),
        ];
        let r = reassignment(&pc("PC2"), &q, &pending, Some(&id("api")));
        let ids: Vec<&str> = r.tasks.iter().map(|t| t.id.as_str()).collect();
        // The work in progress first, then by priority; done and in-flight work left out.
        assert_eq!(ids, ["api", "web", "cli"]);
        assert_eq!(r.tasks[0].description, "do api");
        // Above every unfinished claim it held (web's 5).
        assert_eq!(r.work_epoch, 6);
        // Nothing for a PC that held nothing.
        assert!(reassignment(&pc("PC9"), &q, &[], None).tasks.is_empty());
    }

    #[test]
    fn a_pcs_phase_for_the_timeline() {
        let now = t0();
        let later = now + chrono::Duration::minutes(40);
        let hb = |status, paused_until| Heartbeat {
            paused_until,
            ..Heartbeat::new(pc("PC1"), status, now)
        };
        let inst = |state| InstanceStatus {
            format_version: 1,
            pc: pc("PC1"),
            state,
            since: now,
            current_work: None,
            claimed_tasks: Vec::new(),
            handoff: None,
            epoch: 0,
        };
        let credit = |level: &str, until: Option<DateTime<Utc>>| -> CreditStatus {
            let mut v = serde_json::json!({
                "pc": "PC1", "updated_at": now, "level": level, "rule": "usage_limit",
            });
            if let Some(u) = until {
                v["exhausted_until"] = serde_json::json!(u);
            }
            serde_json::from_value(v).expect("credit")
        };
        use HeartbeatStatus as H;
        use InstanceState as I;
        let alive = Liveness::Alive;
        let active = hb(H::Active, None);
        let working = inst(I::Active);
        assert_eq!(phase_of(Liveness::Unknown, None, None, None, now), None);
        assert_eq!(
            phase_of(Liveness::Dead, Some(&active), Some(&working), None, now),
            Some((Phase::Dead, None))
        );
        assert_eq!(
            phase_of(Liveness::Suspect, Some(&active), None, None, now),
            Some((Phase::Silent, None))
        );
        assert_eq!(
            phase_of(alive, Some(&active), Some(&working), None, now),
            Some((Phase::Active, None))
        );
        assert_eq!(
            phase_of(
                alive,
                Some(&hb(H::Idle, None)),
                Some(&inst(I::Approved)),
                None,
                now
            ),
            Some((Phase::Standby, None))
        );
        assert_eq!(
            phase_of(alive, Some(&hb(H::Idle, None)), None, None, now),
            Some((Phase::Standby, None))
        );
        let exhausted = credit("EXHAUSTED", Some(later));
        assert_eq!(
            phase_of(alive, Some(&active), Some(&working), Some(&exhausted), now),
            Some((Phase::Exhausted, Some(later)))
        );
        // A reset time already past is no countdown.
        assert_eq!(
            phase_of(alive, None, None, Some(&exhausted), later),
            Some((Phase::Exhausted, None))
        );
        assert_eq!(
            phase_of(
                alive,
                Some(&hb(H::Paused, Some(later))),
                Some(&inst(I::HandoffComplete)),
                Some(&credit("WARNING", None)),
                now
            ),
            Some((Phase::Paused, Some(later)))
        );
        assert_eq!(
            phase_of(
                alive,
                Some(&hb(H::Stopped, None)),
                Some(&working),
                None,
                now
            ),
            Some((Phase::Stopped, None))
        );
    }

    #[test]
    fn the_preferred_leader_takes_a_missing_lease_at_once_others_wait() {
        let seen = LeaseSeen {
            lease: None,
            unchanged_since: t0(),
        };
        assert!(matches!(
            lease_action(&pc("PC3"), &pc("PC3"), seen, t0(), TTL),
            LeaseAction::Take { epoch: 1, .. }
        ));
        assert_eq!(
            lease_action(&pc("PC1"), &pc("PC3"), seen, t0(), TTL),
            LeaseAction::Follow { holder: pc("PC3") }
        );
        let later = t0() + chrono::Duration::seconds(120);
        assert!(matches!(
            lease_action(&pc("PC1"), &pc("PC3"), seen, later, TTL),
            LeaseAction::Take { epoch: 1, .. }
        ));
    }

    #[test]
    fn a_lease_lapses_by_the_observers_clock_not_the_holders_stamps() {
        // The holder's stamps say "renewed just now" (its clock runs ahead), but the file has
        // not changed for the observer in two minutes: it lapsed.
        let l = lease("PC3", 7, t0() + chrono::Duration::hours(1));
        let seen = LeaseSeen {
            lease: Some(&l),
            unchanged_since: t0(),
        };
        let at = |s| t0() + chrono::Duration::seconds(s);
        assert_eq!(
            lease_action(&pc("PC1"), &pc("PC3"), seen, at(119), TTL),
            LeaseAction::Follow { holder: pc("PC3") }
        );
        assert!(matches!(
            lease_action(&pc("PC1"), &pc("PC3"), seen, at(120), TTL),
            LeaseAction::Take { epoch: 8, .. }
        ));
    }

    #[test]
    fn the_holder_renews_every_third_of_the_ttl_and_the_preferred_one_takes_back() {
        let l = lease("PC1", 3, t0());
        let seen = LeaseSeen {
            lease: Some(&l),
            unchanged_since: t0(),
        };
        let at = |s| t0() + chrono::Duration::seconds(s);
        assert_eq!(
            lease_action(&pc("PC1"), &pc("PC3"), seen, at(39), TTL),
            LeaseAction::Hold
        );
        assert_eq!(
            lease_action(&pc("PC1"), &pc("PC3"), seen, at(40), TTL),
            LeaseAction::Renew
        );
        assert!(matches!(
            lease_action(&pc("PC3"), &pc("PC3"), seen, at(1), TTL),
            LeaseAction::Take { epoch: 4, .. }
        ));
        assert_eq!(
            lease_action(&pc("PC2"), &pc("PC3"), seen, at(1), TTL),
            LeaseAction::Follow { holder: pc("PC1") }
        );
    }

    #[test]
    fn liveness_goes_alive_suspect_dead_by_silence() {
        let s = Duration::from_secs(15 * 60);
        let d = Duration::from_secs(45 * 60);
        let at = |m| t0() + chrono::Duration::minutes(m);
        assert_eq!(liveness(None, at(0), s, d), Liveness::Unknown);
        assert_eq!(liveness(Some(t0()), at(14), s, d), Liveness::Alive);
        assert_eq!(liveness(Some(t0()), at(15), s, d), Liveness::Suspect);
        assert_eq!(liveness(Some(t0()), at(44), s, d), Liveness::Suspect);
        assert_eq!(liveness(Some(t0()), at(45), s, d), Liveness::Dead);
    }

    #[test]
    fn change_watch_measures_silence_from_the_last_change_it_saw() {
        let mut w = ChangeWatch::default();
        let p = pc("PC1");
        let at = |m| t0() + chrono::Duration::minutes(m);
        assert_eq!(w.observe(&p, None, at(0)), None);
        assert_eq!(w.observe(&p, Some(1), at(0)), Some(at(0)));
        assert_eq!(w.observe(&p, Some(1), at(10)), Some(at(0)));
        assert_eq!(w.observe(&p, Some(2), at(20)), Some(at(20)));
        assert_eq!(w.last_change(&p), Some(at(20)));
        assert_ne!(fingerprint(&[b"a", b"b"]), fingerprint(&[b"ab"]));
    }

    fn phase(name: &str, status: PhaseStatus, critical: bool) -> PhaseResult {
        PhaseResult {
            exit_code: match status {
                PhaseStatus::Passed => Some(0),
                PhaseStatus::Failed => Some(1),
                _ => None,
            },
            duration_s: Some(1.0),
            ..PhaseResult::new(name, status, critical)
        }
    }

    const C: Criteria = Criteria {
        coverage_min: 0.8,
        medium_issue_limit: 3,
    };

    #[test]
    fn every_verdict_path() {
        use PhaseStatus::*;
        let ok = phase("unit", Passed, true);
        assert_eq!(verdict(std::slice::from_ref(&ok), C).0, Verdict::Approve);
        assert_eq!(verdict(&[], C).0, Verdict::Approve);
        assert!(verdict(&[], C).1[0].contains("no verification phases"));

        let cases: Vec<(PhaseResult, Verdict, &str)> = vec![
            (
                phase("int", Failed, true),
                Verdict::Deny,
                "critical phase int failed (exit code 1)",
            ),
            (
                PhaseResult {
                    critical_issues: 2,
                    ..ok.clone()
                },
                Verdict::Deny,
                "2 critical issue(s)",
            ),
            (
                PhaseResult {
                    benchmarks_ok: Some(false),
                    ..ok.clone()
                },
                Verdict::Deny,
                "benchmark regression",
            ),
            (
                PhaseResult {
                    coverage: Some(0.5),
                    ..ok.clone()
                },
                Verdict::Deny,
                "coverage 50%, below the minimum 80%",
            ),
            (
                phase("lint", Failed, false),
                Verdict::Escalate,
                "phase lint failed",
            ),
            (
                phase("slow", TimedOut, true),
                Verdict::Escalate,
                "ran past its deadline",
            ),
            (
                phase("gone", NotStarted, true),
                Verdict::Escalate,
                "did not start",
            ),
            (
                PhaseResult {
                    exit_code: None,
                    ..phase("killed", Failed, false)
                },
                Verdict::Escalate,
                "without an exit code",
            ),
            (
                PhaseResult {
                    high_issues: 1,
                    ..ok.clone()
                },
                Verdict::Escalate,
                "1 high-severity issue",
            ),
            (
                PhaseResult {
                    medium_issues: 4,
                    ..ok.clone()
                },
                Verdict::Escalate,
                "4 medium-severity issues, more than the limit 3",
            ),
        ];
        for (p, want, reason) in cases {
            let (got, reasons) = verdict(&[ok.clone(), p.clone()], C);
            assert_eq!(got, want, "{p:?}");
            assert!(
                reasons.iter().any(|r| r.contains(reason)),
                "{reasons:?} lacks {reason:?}"
            );
        }
        // Coverage at the minimum passes; medium issues at the limit pass.
        let edge = PhaseResult {
            coverage: Some(0.8),
            medium_issues: 3,
            ..ok.clone()
        };
        assert_eq!(verdict(&[edge], C).0, Verdict::Approve);
        // A denial lists the unclear findings too.
        let (v, reasons) = verdict(&[phase("a", Failed, true), phase("b", TimedOut, false)], C);
        assert_eq!(v, Verdict::Deny);
        assert_eq!(reasons.len(), 2);
    }

    #[test]
    fn phase_reports_come_from_the_last_line() {
        let r = phase_report("running…\n{\"critical\":0,\"high\":1,\"medium\":2,\"low\":5,\"coverage\":0.83,\"benchmarks_ok\":true}\n\n")
            .expect("valid")
            .expect("some");
        assert_eq!(r.high, 1);
        assert_eq!(r.coverage, Some(0.83));
        assert_eq!(phase_report("42 tests passed\n"), Ok(None));
        assert_eq!(phase_report(""), Ok(None));
        assert!(phase_report("{\"critical\": \"many\"}").is_err());
    }

    fn task(id: &str, priority: Priority, minute: i64, role: Option<&str>, deps: &[&str]) -> Task {
        Task {
            format_version: 1,
            id: TaskId::new(id).expect("valid"),
            description: format!("do {id}"),
            priority,
            created_at: t0() + chrono::Duration::minutes(minute),
            created_by: pc("PC1"),
            dependencies: deps
                .iter()
                .map(|d| TaskId::new(d).expect("valid"))
                .collect(),
            role: role.map(str::to_owned),
        }
    }

    #[test]
    fn assignment_by_priority_dependencies_age_and_role() {
        let mut q = QueueView::default();
        for t in [
            task("old-normal", Priority::Normal, 0, None, &[]),
            task("new-normal", Priority::Normal, 5, None, &[]),
            task(
                "critical-blocked",
                Priority::Critical,
                1,
                None,
                &["old-normal"],
            ),
            task("high-frontend", Priority::High, 2, Some("frontend"), &[]),
        ] {
            q.tasks.insert(t.id.clone(), t);
        }
        let idle = |p: &str, roles: &[&str]| Idle {
            pc: pc(p),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            tokens: 0,
        };
        let got = assign(
            &q,
            &[
                idle("PC1", &["backend"]),
                idle("PC2", &["frontend"]),
                idle("PC3", &[]),
            ],
            &BTreeSet::new(),
        );
        let got: Vec<(String, String)> = got
            .into_iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("PC1".to_owned(), "old-normal".to_owned()),
                ("PC2".to_owned(), "high-frontend".to_owned()),
                ("PC3".to_owned(), "new-normal".to_owned()),
            ]
        );
        // Tasks already on their way are not given twice.
        let taken = BTreeSet::from([TaskId::new("old-normal").expect("valid")]);
        let got = assign(&q, &[idle("PC1", &[])], &taken);
        assert_eq!(got[0].1.as_str(), "high-frontend");
    }
}
