//! `dashboards/timeline.json`: what each PC was doing over the last day, and the handoffs and
//! verdicts between them, as the coordinator leader saw it. The dashboard page draws it; a new
//! leader reads it and carries it on, so the picture survives a change of leader.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{HandoffReason, Schema, Verdict, v1};
use crate::ids::{HandoffId, PcId};

/// What a PC was doing, as the leader saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Its agent works.
    Active,
    /// Running, with nothing to do (or waiting for a verdict).
    Standby,
    /// Paused after handing its work off, until `until`.
    Paused,
    /// Out of credit, until `until` when known.
    Exhausted,
    /// Its files stopped changing: suspected dead.
    Silent,
    /// Declared dead; its work was reassigned.
    Dead,
    /// Shut down on purpose.
    Stopped,
}

impl Phase {
    /// Every phase, in the legend's order.
    pub const ALL: [Phase; 7] = [
        Phase::Active,
        Phase::Standby,
        Phase::Paused,
        Phase::Exhausted,
        Phase::Silent,
        Phase::Dead,
        Phase::Stopped,
    ];

    /// The word in the file and on the page: `active`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Active => "active",
            Phase::Standby => "standby",
            Phase::Paused => "paused",
            Phase::Exhausted => "exhausted",
            Phase::Silent => "silent",
            Phase::Dead => "dead",
            Phase::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stretch of one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// What the PC was doing over the span.
    pub phase: Phase,
    /// When the leader first saw it.
    pub from: DateTime<Utc>,
    /// When it ended; none while it lasts (until the file's `updated_at`, as far as anyone
    /// knows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    /// For `paused` and `exhausted`: when the PC expects to work again (a usage limit's
    /// reset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

/// A handoff (its id names sender, receiver and time), or the leader's verdict on one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// When: the handoff's creation, or the verdict's.
    pub at: DateTime<Utc>,
    /// The handoff (its id names sender, receiver and time of creation).
    pub handoff: HandoffId,
    /// Why it was written (a reassignment, an assignment, a usage limit…).
    pub reason: HandoffReason,
    /// Present on a verdict event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

/// `dashboards/timeline.json`, owned by the coordinator leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// When the leader last looked: open spans last at least until then.
    pub updated_at: DateTime<Utc>,
    /// The leader that wrote it.
    pub coordinator: PcId,
    /// Each PC's spans, oldest first; only the last may be open.
    #[serde(default)]
    pub pcs: BTreeMap<PcId, Vec<Span>>,
    /// Handoffs and verdicts, oldest first.
    #[serde(default)]
    pub events: Vec<TimelineEvent>,
    /// PCs whose open span was carried on from the file, with the time it was last seen.
    #[serde(skip)]
    carried: BTreeMap<PcId, DateTime<Utc>>,
}

impl Timeline {
    /// How far back the timeline keeps spans and events (the page shows the last 24 hours).
    pub const KEEP: Duration = Duration::hours(26);
    /// The most spans kept per PC (a PC flapping every cycle must not grow the file).
    pub const MAX_SPANS: usize = 400;
    /// The most events kept.
    pub const MAX_EVENTS: usize = 400;

    /// An empty timeline.
    pub fn new(coordinator: PcId, now: DateTime<Utc>) -> Self {
        Self {
            format_version: Self::FORMAT_VERSION,
            updated_at: now,
            coordinator,
            pcs: BTreeMap::new(),
            events: Vec::new(),
            carried: BTreeMap::new(),
        }
    }

    /// A timeline written by an earlier leader (or by this PC before a restart), carried on by
    /// `coordinator`. A phase that still holds goes on; one that changed meanwhile ends where
    /// that leader last wrote the file — the time nobody saw stays blank.
    pub fn carry_on(mut self, coordinator: PcId) -> Self {
        let end = self.updated_at;
        self.carried = self
            .pcs
            .iter()
            .filter(|(_, spans)| spans.last().is_some_and(|s| s.to.is_none()))
            .map(|(pc, _)| (pc.clone(), end))
            .collect();
        self.coordinator = coordinator;
        self
    }

    /// Records what `pc` does at `now` (`None`: nothing known of it). A change of phase closes
    /// the open span and opens another; the same phase extends it (with the latest `until`).
    pub fn observe(
        &mut self,
        pc: &PcId,
        seen: Option<(Phase, Option<DateTime<Utc>>)>,
        now: DateTime<Utc>,
    ) {
        let carried = self.carried.remove(pc);
        let spans = self.pcs.entry(pc.clone()).or_default();
        let open = spans.last_mut().filter(|s| s.to.is_none());
        match (open, seen) {
            // The same phase goes on; a new reset time (an estimate that moved) replaces the
            // old one.
            (Some(s), Some((phase, until))) if s.phase == phase => s.until = until,
            (open, seen) => {
                if let Some(s) = open {
                    s.to = Some(carried.unwrap_or(now).max(s.from));
                }
                if let Some((phase, until)) = seen {
                    spans.push(Span {
                        phase,
                        from: now,
                        to: None,
                        until,
                    });
                }
            }
        }
        if spans.len() > Self::MAX_SPANS {
            let excess = spans.len() - Self::MAX_SPANS;
            spans.drain(..excess);
        }
        if spans.is_empty() {
            self.pcs.remove(pc);
        }
        self.updated_at = self.updated_at.max(now);
    }

    /// Adds an event unless it is there already (a handoff once, its verdict once).
    pub fn record(&mut self, event: TimelineEvent) -> bool {
        let known = self
            .events
            .iter()
            .any(|e| e.handoff == event.handoff && e.verdict.is_some() == event.verdict.is_some());
        if known {
            return false;
        }
        let at = self.events.partition_point(|e| e.at <= event.at);
        self.events.insert(at, event);
        if self.events.len() > Self::MAX_EVENTS {
            let excess = self.events.len() - Self::MAX_EVENTS;
            self.events.drain(..excess);
        }
        true
    }

    /// The handoffs already recorded (their verdicts aside).
    pub fn handoffs(&self) -> BTreeSet<&HandoffId> {
        self.events
            .iter()
            .filter(|e| e.verdict.is_none())
            .map(|e| &e.handoff)
            .collect()
    }

    /// Drops what ended before `now - KEEP`.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        let horizon = now - Self::KEEP;
        for spans in self.pcs.values_mut() {
            spans.retain(|s| s.to.is_none_or(|to| to >= horizon));
        }
        self.pcs.retain(|_, spans| !spans.is_empty());
        self.events.retain(|e| e.at >= horizon);
    }
}

impl Schema for Timeline {
    const NAME: &'static str = "timeline";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 1024 * 1024;

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (pc, spans) in &self.pcs {
            if spans.len() > Self::MAX_SPANS {
                problems.push(format!(
                    "pcs.{pc} has {} spans, at most {}",
                    spans.len(),
                    Self::MAX_SPANS
                ));
            }
            for (i, s) in spans.iter().enumerate() {
                match s.to {
                    Some(to) if to < s.from => problems.push(format!(
                        "pcs.{pc}[{i}] ends ({to}) before it starts ({})",
                        s.from
                    )),
                    None if i + 1 != spans.len() => {
                        problems.push(format!("pcs.{pc}[{i}] is open but not the last span"));
                    }
                    _ => {}
                }
                if i > 0 && s.from < spans[i - 1].from {
                    problems.push(format!("pcs.{pc}[{i}] starts before the span before it"));
                }
            }
        }
        if self.events.len() > Self::MAX_EVENTS {
            problems.push(format!(
                "{} events, at most {}",
                self.events.len(),
                Self::MAX_EVENTS
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc(s: &str) -> PcId {
        PcId::new(s).expect("pc")
    }

    fn t(min: i64) -> DateTime<Utc> {
        "2026-12-01T00:00:00Z"
            .parse::<DateTime<Utc>>()
            .expect("time")
            + Duration::minutes(min)
    }

    #[test]
    fn a_phase_lasts_until_it_changes_and_nothing_known_closes_it() {
        let mut tl = Timeline::new(pc("PC3"), t(0));
        let p1 = pc("PC1");
        tl.observe(&p1, Some((Phase::Active, None)), t(0));
        tl.observe(&p1, Some((Phase::Active, None)), t(5));
        tl.observe(&p1, Some((Phase::Paused, Some(t(60)))), t(10));
        tl.observe(&p1, Some((Phase::Paused, Some(t(60)))), t(11));
        // A reset time that moves (a rolling estimate) is the same pause, told anew.
        tl.observe(&p1, Some((Phase::Paused, Some(t(90)))), t(12));
        tl.observe(&p1, None, t(20));
        let spans = &tl.pcs[&p1];
        let got: Vec<_> = spans
            .iter()
            .map(|s| (s.phase, s.from, s.to, s.until))
            .collect();
        assert_eq!(
            got,
            [
                (Phase::Active, t(0), Some(t(10)), None),
                (Phase::Paused, t(10), Some(t(20)), Some(t(90))),
            ]
        );
        assert!(tl.check().is_empty(), "{:?}", tl.check());
    }

    #[test]
    fn a_new_leader_carries_on_what_still_holds_and_leaves_the_unseen_blank() {
        let mut tl = Timeline::new(pc("PC3"), t(0));
        let (p1, p2) = (pc("PC1"), pc("PC2"));
        tl.observe(&p1, Some((Phase::Active, None)), t(0));
        tl.observe(&p2, Some((Phase::Active, None)), t(0));
        tl.observe(&p1, Some((Phase::Active, None)), t(3));
        let mut carried = tl.carry_on(pc("PC2"));
        assert_eq!(carried.coordinator, pc("PC2"));
        // PC1 still works: one span. PC2 went on standby meanwhile: its work ends where the
        // earlier leader last looked (3), the standby starts when the new one looks (30).
        carried.observe(&p1, Some((Phase::Active, None)), t(30));
        carried.observe(&p2, Some((Phase::Standby, None)), t(30));
        carried.observe(&p2, Some((Phase::Active, None)), t(40));
        let spans = |pc: &PcId| -> Vec<_> {
            carried.pcs[pc]
                .iter()
                .map(|s| (s.phase, s.from, s.to))
                .collect()
        };
        assert_eq!(spans(&p1), [(Phase::Active, t(0), None)]);
        assert_eq!(
            spans(&p2),
            [
                (Phase::Active, t(0), Some(t(3))),
                (Phase::Standby, t(30), Some(t(40))),
                (Phase::Active, t(40), None),
            ]
        );
    }

    #[test]
    fn it_stays_bounded_over_days_of_flapping() {
        let mut tl = Timeline::new(pc("PC3"), t(0));
        let p1 = pc("PC1");
        // Two days of a phase change every 30 s: 5,760 spans seen.
        for i in 0..5_760 {
            let phase = if i % 2 == 0 {
                Phase::Active
            } else {
                Phase::Silent
            };
            let now = t(0) + Duration::seconds(30 * i);
            tl.observe(&p1, Some((phase, None)), now);
            let id = HandoffId::from_parts(&p1, &pc("PC2"), now).expect("id");
            tl.record(TimelineEvent {
                at: now,
                handoff: id,
                reason: HandoffReason::UsageLimit,
                verdict: None,
            });
            tl.prune(now);
        }
        assert_eq!(tl.pcs[&p1].len(), Timeline::MAX_SPANS);
        assert_eq!(tl.events.len(), Timeline::MAX_EVENTS);
        assert!(tl.check().is_empty());
        let bytes = super::super::to_bytes(&tl).expect("encode");
        assert!(bytes.len() < Timeline::MAX_BYTES, "{} bytes", bytes.len());
    }

    #[test]
    fn an_event_is_recorded_once_in_time_order() {
        let mut tl = Timeline::new(pc("PC3"), t(0));
        let id = |m| HandoffId::from_parts(&pc("PC1"), &pc("PC2"), t(m)).expect("id");
        let ev = |m, verdict| TimelineEvent {
            at: t(m),
            handoff: id(m),
            reason: HandoffReason::WorkComplete,
            verdict,
        };
        assert!(tl.record(ev(5, None)));
        assert!(tl.record(ev(1, None)));
        assert!(!tl.record(ev(5, None)));
        assert!(tl.record(ev(5, Some(Verdict::Approve))));
        let order: Vec<_> = tl.events.iter().map(|e| e.at).collect();
        assert_eq!(order, [t(1), t(5), t(5)]);
        assert_eq!(tl.handoffs().len(), 2);
        tl.prune(t(5) + Timeline::KEEP);
        assert_eq!(tl.events.len(), 2);
    }
}
