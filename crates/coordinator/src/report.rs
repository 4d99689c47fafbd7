//! What the leader writes for people and for the other PCs: the fleet status, the credit
//! dashboard (JSON and a self-contained HTML page), post-mortems, and the reports under
//! `reports/` (integration status, daily instance logs, the weekly KPI review).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use trinity_core::PcId;
use trinity_core::coordination;
use trinity_core::schema::{
    CreditDashboard, CurrentWork, DashboardEntry, Fleet, HandoffInFlight, HandoffReason,
    InstanceStatus, InstanceSummary, MultiInstanceStatus, Schema, Verdict,
};

use crate::view::FleetView;

/// The fleet status the leader publishes.
pub fn status(
    fleet: &Fleet,
    view: &FleetView,
    me: &PcId,
    epoch: u64,
    now: DateTime<Utc>,
) -> MultiInstanceStatus {
    let mut instances = BTreeMap::new();
    for pc in &fleet.pcs {
        let (liveness, seen) = view
            .liveness
            .get(pc)
            .cloned()
            .unwrap_or((trinity_core::schema::Liveness::Unknown, None));
        let inst = view.instances.get(pc);
        let credit = view.credit.get(pc);
        instances.insert(
            pc.clone(),
            InstanceSummary {
                liveness,
                state: inst.map(|i| i.state),
                current_task: inst.and_then(|i| i.current_work.as_ref().map(|w| w.task_id.clone())),
                credit_level: credit.map(|c| c.level),
                last_change_seen: seen,
                silent_for_s: seen
                    .map(|s| ((now - s).num_milliseconds().max(0) as f64 / 1000.0).round()),
                next_pc: credit.and_then(|c| c.next_pc.clone()),
            },
        );
    }
    let handoffs = view
        .pending
        .iter()
        .map(|(id, h)| HandoffInFlight {
            id: id.clone(),
            reason: h.reason,
            phase: match (h.reason, view.verifications.get(id).and_then(|v| v.verdict)) {
                (HandoffReason::WorkComplete, None) => {
                    if view.verifications.contains_key(id) {
                        "verifying"
                    } else {
                        "ready"
                    }
                }
                (_, Some(Verdict::Approve)) => "approved",
                (_, Some(Verdict::Deny)) => "denied",
                (_, Some(Verdict::Escalate)) => "escalated",
                _ => "waiting_for_receiver",
            }
            .to_owned(),
        })
        .collect();
    let verifications: Vec<_> = view.verifications.values().cloned().collect();
    MultiInstanceStatus {
        format_version: MultiInstanceStatus::FORMAT_VERSION,
        updated_at: now,
        coordinator: me.clone(),
        epoch,
        instances,
        pending_handoffs: view.pending.iter().map(|(id, _)| id.clone()).collect(),
        handoffs,
        last_autonomous_action: None,
        last_action: None,
        kpis: coordination::kpis(&verifications, view.processed + view.pending.len() as u64),
    }
}

/// The seed's credit dashboard.
pub fn dashboard(fleet: &Fleet, view: &FleetView, now: DateTime<Utc>) -> CreditDashboard {
    let mut pcs = BTreeMap::new();
    for pc in &fleet.pcs {
        let Some(c) = view.credit.get(pc) else {
            continue;
        };
        pcs.insert(
            pc.clone(),
            DashboardEntry {
                status: c.level,
                rate_limit_count: c.rate_limit_count,
                error_rate: c.error_rate,
                avg_response_time: c.avg_response_time,
                next_pc: c.next_pc.clone(),
            },
        );
    }
    CreditDashboard {
        format_version: CreditDashboard::FORMAT_VERSION,
        pcs,
        last_update: now,
    }
}

/// `reports/integration-status.md`: what waits for the coordinator and the latest verdicts.
pub fn integration_status(status: &MultiInstanceStatus, view: &FleetView) -> String {
    let mut out = String::from("# Integration status\n\n");
    let _ = writeln!(
        out,
        "Updated {} by {} (epoch {}).\n",
        status.updated_at.to_rfc3339(),
        status.coordinator,
        status.epoch
    );
    out.push_str("## Pending coordination\n\n");
    if status.handoffs.is_empty() {
        out.push_str("Nothing is waiting.\n");
    }
    for h in &status.handoffs {
        let _ = writeln!(out, "- `{}` ({}): {}", h.id, h.reason.describe(), h.phase);
    }
    out.push_str("\n## Latest verification results\n\n");
    let mut latest: Vec<_> = view.verifications.values().collect();
    latest.sort_by_key(|v| std::cmp::Reverse(v.started_at));
    if latest.is_empty() {
        out.push_str("None yet.\n");
    }
    for v in latest.iter().take(20) {
        let verdict = v.verdict.map_or("running", Verdict::as_str);
        let task = v
            .task
            .as_ref()
            .map(|t| format!(" task `{t}`"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "- {} — {}{task} from {}: **{verdict}** — {}",
            v.started_at.format("%Y-%m-%d %H:%M"),
            v.handoff_id,
            v.pc,
            v.reasons.join("; ")
        );
    }
    out
}

/// `reports/kpi-YYYY-Www.md`: the week's KPI review against the seed's targets.
pub fn kpi_week(status: &MultiInstanceStatus, now: DateTime<Utc>) -> String {
    let mut out = format!("# KPI review, week {}\n\n", now.format("%G-W%V"));
    let _ = writeln!(out, "Updated {}.\n", now.to_rfc3339());
    out.push_str("| indicator | value | target | met |\n|---|---|---|---|\n");
    for (name, value, target, met) in coordination::kpi_checks(&status.kpis) {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "n/a",
        };
        let _ = writeln!(out, "| {name} | {value} | {target} | {met} |");
    }
    let _ = writeln!(out, "\nHandoffs seen: {}.", status.kpis.handoffs);
    out
}

/// `reports/instance-logs/{PC}-{YYYYMMDD}.md`: each PC's day from the records.
pub fn instance_logs(fleet: &Fleet, view: &FleetView, now: DateTime<Utc>) -> Vec<(PcId, String)> {
    let day = now.date_naive();
    let mut out = Vec::new();
    for pc in &fleet.pcs {
        let mut text = format!("# {pc} — {}\n\n", day.format("%Y-%m-%d"));
        let _ = writeln!(text, "Updated {}.\n", now.to_rfc3339());
        if let Some(i) = view.instances.get(pc) {
            let _ = writeln!(
                text,
                "State: {} since {}{}.\n",
                i.state,
                i.since.format("%H:%M"),
                work_text(i.current_work.as_ref())
            );
        }
        text.push_str("## Finished\n\n");
        let mut any = false;
        for d in view.queue.done.values() {
            if &d.pc == pc && d.finished_at.date_naive() == day {
                any = true;
                let _ = writeln!(
                    text,
                    "- {} `{}` ({:?}): {}",
                    d.finished_at.format("%H:%M"),
                    d.task_id,
                    d.outcome,
                    d.summary
                );
            }
        }
        if !any {
            text.push_str("Nothing.\n");
        }
        text.push_str("\n## Handoffs in flight\n\n");
        let mut any = false;
        for (id, h) in &view.pending {
            if &h.from_pc == pc || &h.to_pc == pc {
                any = true;
                let dir = if &h.from_pc == pc { "out" } else { "in" };
                let _ = writeln!(text, "- {dir}: `{id}` ({})", h.reason.describe());
            }
        }
        if !any {
            text.push_str("None.\n");
        }
        text.push_str("\n## Verdicts\n\n");
        let mut any = false;
        for v in view.verifications.values() {
            if &v.pc == pc
                && v.started_at.date_naive() == day
                && let Some(verdict) = v.verdict
            {
                any = true;
                let _ = writeln!(
                    text,
                    "- `{}`: {} — {}",
                    v.handoff_id,
                    verdict.as_str(),
                    v.reasons.join("; ")
                );
            }
        }
        if !any {
            text.push_str("None.\n");
        }
        out.push((pc.clone(), text));
    }
    out
}

fn work_text(w: Option<&CurrentWork>) -> String {
    match w {
        Some(w) if w.progress.is_empty() => format!(", working on `{}`", w.task_id),
        Some(w) => format!(", working on `{}` ({})", w.task_id, w.progress),
        None => String::new(),
    }
}

/// A post-mortem of a PC declared dead.
#[allow(clippy::too_many_arguments)]
pub fn postmortem(
    dead: &PcId,
    now: DateTime<Utc>,
    last_change_seen: Option<DateTime<Utc>>,
    last_heartbeat: Option<DateTime<Utc>>,
    instance: Option<&InstanceStatus>,
    last_work: Option<&CurrentWork>,
    outcome: &str,
    coordinator: &PcId,
    epoch: u64,
) -> String {
    let t = |d: Option<DateTime<Utc>>| d.map_or("never".to_owned(), |d| d.to_rfc3339());
    let mut out = format!("# {dead} declared dead\n\n");
    let _ = writeln!(
        out,
        "- declared: {} by {coordinator} (lease epoch {epoch})",
        now.to_rfc3339()
    );
    let _ = writeln!(
        out,
        "- last change of its files seen by the coordinator: {}",
        t(last_change_seen)
    );
    let _ = writeln!(
        out,
        "- its last heartbeat said (its own clock): {}",
        t(last_heartbeat)
    );
    if let Some(i) = instance {
        let _ = writeln!(
            out,
            "- its last state: {} since {}",
            i.state,
            i.since.to_rfc3339()
        );
    }
    match last_work {
        Some(w) => {
            let _ = writeln!(
                out,
                "- its last work: `{}` — {}{}",
                w.task_id,
                if w.progress.is_empty() {
                    "no progress reported"
                } else {
                    &w.progress
                },
                w.next_subtask
                    .as_ref()
                    .map(|n| format!("; next: {n}"))
                    .unwrap_or_default()
            );
        }
        None => out.push_str("- its last work: none\n"),
    }
    let _ = writeln!(out, "\n## What happened to its work\n\n{outcome}");
    out.push_str(
        "\nWhen it comes back, it finds its claims held by the PC that took the work over and \
         does not resume it; the coordinator gives it new work.\n",
    );
    out
}

/// A report's text without the parts that change every cycle (time stamps, silence ages), to
/// tell a real change from a new time stamp.
pub fn without_times(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let l = l.trim_start();
            !(l.starts_with("\"updated_at\"")
                || l.starts_with("\"last_update\"")
                || l.starts_with("\"silent_for_s\"")
                || l.starts_with("\"last_change_seen\"")
                || l.starts_with("Updated ")
                || l.starts_with("<p id=\"updated\">"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_stamps_alone_are_no_change() {
        let a = "{\n  \"updated_at\": \"1\",\n  \"x\": 1\n}";
        let b = "{\n  \"updated_at\": \"2\",\n  \"x\": 1\n}";
        let c = "{\n  \"updated_at\": \"2\",\n  \"x\": 2\n}";
        assert_eq!(without_times(a), without_times(b));
        assert_ne!(without_times(a), without_times(c));
    }
}
