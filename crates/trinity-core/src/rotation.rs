//! Who takes over: the next PC in rotation order that can.
//!
//! Pure: the caller gathers a [`PeerView`] of every other PC (from its heartbeat and credit
//! files, with "last seen" measured by the caller's own clock) and [`choose_next`] decides.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ids::PcId;
use crate::schema::{CreditLevel, Fleet, HeartbeatStatus};

/// What this PC knows of another.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerView {
    /// When its heartbeat last changed, by this PC's clock; `None` if it never had one.
    pub last_seen: Option<DateTime<Utc>>,
    /// Its heartbeat status.
    pub status: Option<HeartbeatStatus>,
    /// Its pause, from the heartbeat.
    pub paused_until: Option<DateTime<Utc>>,
    /// Its credit level, from `credit/{PC}.json`.
    pub credit_level: Option<CreditLevel>,
    /// Until when it is out of credit, from `credit/{PC}.json`.
    pub exhausted_until: Option<DateTime<Utc>>,
}

/// Why a PC was passed over.
#[derive(Debug, Clone, PartialEq)]
pub enum Skip {
    /// Its heartbeat has not changed for this long.
    Stale(Duration),
    /// It is pausing after its own handoff.
    Paused(DateTime<Utc>),
    /// It is out of credit (until when, if known).
    Exhausted(Option<DateTime<Utc>>),
    /// Its daemons were stopped on purpose.
    Stopped,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::Stale(age) => write!(
                f,
                "silent for {}",
                humantime::format_duration(Duration::from_secs(age.as_secs()))
            ),
            Skip::Paused(until) => write!(f, "paused until {}", until.to_rfc3339()),
            Skip::Exhausted(Some(until)) => write!(f, "out of credit until {}", until.to_rfc3339()),
            Skip::Exhausted(None) => f.write_str("out of credit"),
            Skip::Stopped => f.write_str("stopped"),
        }
    }
}

/// The decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The PC to hand off to, if any can take over.
    pub next: Option<PcId>,
    /// True when `next` has never sent a heartbeat (it is tried, but the log says so).
    pub next_unknown: bool,
    /// The PCs passed over before `next` (or all of them), with why.
    pub skipped: Vec<(PcId, Skip)>,
    /// When none can take over: the earliest moment one might (end of a pause or of an
    /// exhaustion), if any is known.
    pub retry_at: Option<DateTime<Utc>>,
}

impl Choice {
    /// "PC2 paused until …; PC3 out of credit", for logs and escalations.
    pub fn skipped_text(&self) -> String {
        self.skipped
            .iter()
            .map(|(pc, why)| format!("{pc} {why}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Why `view` cannot take over at `now`, if it cannot.
pub fn skip_reason(view: &PeerView, now: DateTime<Utc>, stale_after: Duration) -> Option<Skip> {
    if view.status == Some(HeartbeatStatus::Stopped) {
        return Some(Skip::Stopped);
    }
    if let Some(seen) = view.last_seen {
        let age = (now - seen).to_std().unwrap_or_default();
        if age > stale_after {
            return Some(Skip::Stale(age));
        }
    }
    if let Some(until) = view.paused_until.filter(|u| *u > now) {
        return Some(Skip::Paused(until));
    }
    // A known end of the exhaustion decides; without one, the level (or an `exhausted`
    // heartbeat) does. A credit file that says EXHAUSTED until a moment now past is stale.
    let exhausted = match view.exhausted_until {
        Some(until) => until > now,
        None => view.credit_level == Some(CreditLevel::Exhausted),
    } || view.status == Some(HeartbeatStatus::Exhausted);
    exhausted.then(|| Skip::Exhausted(view.exhausted_until.filter(|u| *u > now)))
}

/// The next PC after `me` in rotation order that can take over.
pub fn choose_next(
    fleet: &Fleet,
    me: &PcId,
    views: &BTreeMap<PcId, PeerView>,
    now: DateTime<Utc>,
    stale_after: Duration,
) -> Choice {
    let unknown = PeerView::default();
    let mut skipped = Vec::new();
    for pc in fleet.successors(me) {
        let view = views.get(pc).unwrap_or(&unknown);
        match skip_reason(view, now, stale_after) {
            Some(why) => skipped.push((pc.clone(), why)),
            None => {
                return Choice {
                    next: Some(pc.clone()),
                    next_unknown: view.last_seen.is_none(),
                    skipped,
                    retry_at: None,
                };
            }
        }
    }
    let retry_at = skipped
        .iter()
        .filter_map(|(_, why)| match why {
            Skip::Paused(u) | Skip::Exhausted(Some(u)) => Some(*u),
            _ => None,
        })
        .min();
    Choice {
        next: None,
        next_unknown: false,
        skipped,
        retry_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc(s: &str) -> PcId {
        PcId::new(s).expect("valid id")
    }

    fn fleet() -> Fleet {
        Fleet::new(vec![pc("PC1"), pc("PC2"), pc("PC3")], pc("PC3"))
    }

    fn now() -> DateTime<Utc> {
        "2026-11-21T10:00:00Z".parse().expect("valid time")
    }

    fn alive() -> PeerView {
        PeerView {
            last_seen: Some(now() - chrono::Duration::seconds(30)),
            status: Some(HeartbeatStatus::Idle),
            ..PeerView::default()
        }
    }

    const STALE: Duration = Duration::from_secs(15 * 60);

    #[test]
    fn the_next_in_rotation_order_wraps_around() {
        let views = BTreeMap::from([(pc("PC1"), alive()), (pc("PC2"), alive())]);
        let c = choose_next(&fleet(), &pc("PC1"), &views, now(), STALE);
        assert_eq!(c.next, Some(pc("PC2")));
        let c = choose_next(&fleet(), &pc("PC3"), &views, now(), STALE);
        assert_eq!(c.next, Some(pc("PC1")));
        assert!(c.skipped.is_empty());
    }

    #[test]
    fn stale_paused_and_exhausted_pcs_are_skipped() {
        let stale = PeerView {
            last_seen: Some(now() - chrono::Duration::minutes(16)),
            ..alive()
        };
        let views = BTreeMap::from([(pc("PC2"), stale), (pc("PC3"), alive())]);
        let c = choose_next(&fleet(), &pc("PC1"), &views, now(), STALE);
        assert_eq!(c.next, Some(pc("PC3")));
        assert!(matches!(c.skipped[..], [(ref p, Skip::Stale(_))] if *p == pc("PC2")));

        let until = now() + chrono::Duration::minutes(3);
        let paused = PeerView {
            paused_until: Some(until),
            ..alive()
        };
        let exhausted = PeerView {
            exhausted_until: Some(now() + chrono::Duration::hours(2)),
            ..alive()
        };
        let views = BTreeMap::from([(pc("PC2"), paused), (pc("PC3"), exhausted)]);
        let c = choose_next(&fleet(), &pc("PC1"), &views, now(), STALE);
        assert_eq!(c.next, None);
        assert_eq!(c.retry_at, Some(until));
        assert!(
            c.skipped_text().contains("PC2 paused until"),
            "{}",
            c.skipped_text()
        );
    }

    #[test]
    fn a_pause_or_exhaustion_that_has_ended_does_not_count() {
        let over = PeerView {
            paused_until: Some(now() - chrono::Duration::seconds(1)),
            exhausted_until: Some(now()),
            ..alive()
        };
        let views = BTreeMap::from([(pc("PC2"), over)]);
        let c = choose_next(&fleet(), &pc("PC1"), &views, now(), STALE);
        assert_eq!(c.next, Some(pc("PC2")));
    }

    #[test]
    fn an_exhaustion_whose_end_has_passed_is_over_even_if_the_file_still_says_exhausted() {
        let stale = PeerView {
            credit_level: Some(CreditLevel::Exhausted),
            exhausted_until: Some(now() - chrono::Duration::seconds(5)),
            ..alive()
        };
        let views = BTreeMap::from([(pc("PC2"), stale)]);
        let c = choose_next(&fleet(), &pc("PC1"), &views, now(), STALE);
        assert_eq!(c.next, Some(pc("PC2")));
    }

    #[test]
    fn a_pc_never_heard_from_is_tried_and_flagged() {
        let c = choose_next(&fleet(), &pc("PC1"), &BTreeMap::new(), now(), STALE);
        assert_eq!(c.next, Some(pc("PC2")));
        assert!(c.next_unknown);
    }

    #[test]
    fn stopped_and_exhausted_heartbeats_are_skipped() {
        let stopped = PeerView {
            status: Some(HeartbeatStatus::Stopped),
            ..alive()
        };
        let out = PeerView {
            credit_level: Some(CreditLevel::Exhausted),
            ..alive()
        };
        let views = BTreeMap::from([(pc("PC2"), stopped), (pc("PC3"), out)]);
        let c = choose_next(&fleet(), &pc("PC1"), &views, now(), STALE);
        assert_eq!(c.next, None);
        assert_eq!(c.retry_at, None);
        assert_eq!(c.skipped.len(), 2);
    }
}
