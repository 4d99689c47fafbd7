//! The instance state machine (the seed's "Asynchronous Handoff Protocols").
//!
//! ```text
//! STANDBY ──assign──▶ ACTIVE ──work done / credit out──▶ HANDOFF_READY ──▶ VERIFICATION
//!    ▲                  │                                   ▲    │             │     │
//!    │            withdrawn (reassigned)                    │    │ accepted    ▼     ▼
//!    ├──────────────────┘                          fixes done    │ unverified APPROVED FAILED
//!    │                                                      │    ▼             │     │
//!    └──────────────── HANDOFF_COMPLETE ◀───────────────────┼────┘◀────────────┘     │
//!                                                           └──── REMEDIATION ◀──────┘
//! ```
//!
//! [`transition`] is the one place that decides whether a move is legal. Staying in the same
//! state is always allowed (rewriting a status file is idempotent).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where an instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceState {
    /// Waiting for work.
    Standby,
    /// Working.
    Active,
    /// Stopped working and wrote a handoff.
    HandoffReady,
    /// The coordinator is verifying the handoff.
    Verification,
    /// The coordinator approved it.
    Approved,
    /// The coordinator denied it.
    Failed,
    /// The next instance took the work over.
    HandoffComplete,
    /// Fixing what verification found.
    Remediation,
}

impl InstanceState {
    /// Every state, in the order of the seed's diagram.
    pub const ALL: [InstanceState; 8] = [
        InstanceState::Standby,
        InstanceState::Active,
        InstanceState::HandoffReady,
        InstanceState::Verification,
        InstanceState::Approved,
        InstanceState::Failed,
        InstanceState::HandoffComplete,
        InstanceState::Remediation,
    ];

    /// The name as written in files: `HANDOFF_READY`.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Standby => "STANDBY",
            InstanceState::Active => "ACTIVE",
            InstanceState::HandoffReady => "HANDOFF_READY",
            InstanceState::Verification => "VERIFICATION",
            InstanceState::Approved => "APPROVED",
            InstanceState::Failed => "FAILED",
            InstanceState::HandoffComplete => "HANDOFF_COMPLETE",
            InstanceState::Remediation => "REMEDIATION",
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a legal move happens: the label of the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Same state again (idempotent rewrite).
    Stay,
    /// STANDBY → ACTIVE: work assigned or a handoff accepted.
    Assign,
    /// ACTIVE → HANDOFF_READY: work complete, or credit exhausted.
    Ready,
    /// HANDOFF_READY → VERIFICATION: the coordinator began verifying.
    BeginVerification,
    /// VERIFICATION → APPROVED.
    Approve,
    /// VERIFICATION → FAILED.
    Deny,
    /// APPROVED → HANDOFF_COMPLETE: the next instance took the work.
    Transfer,
    /// HANDOFF_READY → HANDOFF_COMPLETE: a credit-exhaustion handoff, accepted by the next PC
    /// before (or without) verification — speed matters more than the verdict there.
    TransferUnverified,
    /// FAILED → REMEDIATION.
    Remediate,
    /// REMEDIATION → HANDOFF_READY: fixes done.
    Resubmit,
    /// HANDOFF_COMPLETE → STANDBY.
    Rest,
    /// ACTIVE → STANDBY: the work was taken away (reassigned after this PC was declared dead,
    /// or its claim lost a race).
    Withdraw,
}

/// A move the state machine forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an instance cannot go from {from} to {to}")]
pub struct IllegalTransition {
    /// The current state.
    pub from: InstanceState,
    /// The requested state.
    pub to: InstanceState,
}

/// Decides whether `from → to` is legal, and names the edge.
pub fn transition(from: InstanceState, to: InstanceState) -> Result<Edge, IllegalTransition> {
    use InstanceState::*;
    let edge = match (from, to) {
        (a, b) if a == b => Edge::Stay,
        (Standby, Active) => Edge::Assign,
        (Active, HandoffReady) => Edge::Ready,
        (HandoffReady, Verification) => Edge::BeginVerification,
        (Verification, Approved) => Edge::Approve,
        (Verification, Failed) => Edge::Deny,
        (Approved, HandoffComplete) => Edge::Transfer,
        (HandoffReady, HandoffComplete) => Edge::TransferUnverified,
        (Failed, Remediation) => Edge::Remediate,
        (Remediation, HandoffReady) => Edge::Resubmit,
        (HandoffComplete, Standby) => Edge::Rest,
        (Active, Standby) => Edge::Withdraw,
        _ => return Err(IllegalTransition { from, to }),
    };
    Ok(edge)
}

/// The shortest chain of legal moves from `from` to `to` (the states after `from`, ending with
/// `to`); empty when they are equal, `None` when `to` cannot be reached.
pub fn path(from: InstanceState, to: InstanceState) -> Option<Vec<InstanceState>> {
    use std::collections::VecDeque;
    let mut prev: Vec<Option<InstanceState>> = vec![None; InstanceState::ALL.len()];
    let index = |s: InstanceState| InstanceState::ALL.iter().position(|x| *x == s).unwrap_or(0);
    let mut queue = VecDeque::from([from]);
    let mut seen = vec![false; InstanceState::ALL.len()];
    seen[index(from)] = true;
    while let Some(s) = queue.pop_front() {
        if s == to {
            let mut out = Vec::new();
            let mut cur = s;
            while cur != from {
                out.push(cur);
                cur = prev[index(cur)]?;
            }
            out.reverse();
            return Some(out);
        }
        for next in InstanceState::ALL {
            if next != s && transition(s, next).is_ok() && !seen[index(next)] {
                seen[index(next)] = true;
                prev[index(next)] = Some(s);
                queue.push_back(next);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::InstanceState::*;
    use super::*;

    /// Every legal edge, with its label. Everything not listed here must be refused.
    const LEGAL: &[(InstanceState, InstanceState, Edge)] = &[
        (Standby, Active, Edge::Assign),
        (Active, HandoffReady, Edge::Ready),
        (HandoffReady, Verification, Edge::BeginVerification),
        (Verification, Approved, Edge::Approve),
        (Verification, Failed, Edge::Deny),
        (Approved, HandoffComplete, Edge::Transfer),
        (HandoffReady, HandoffComplete, Edge::TransferUnverified),
        (Failed, Remediation, Edge::Remediate),
        (Remediation, HandoffReady, Edge::Resubmit),
        (HandoffComplete, Standby, Edge::Rest),
        (Active, Standby, Edge::Withdraw),
    ];

    #[test]
    fn every_legal_edge_is_allowed() {
        for &(from, to, edge) in LEGAL {
            assert_eq!(transition(from, to), Ok(edge), "{from} → {to}");
        }
    }

    #[test]
    fn paths_follow_legal_edges() {
        assert_eq!(path(Standby, Active), Some(vec![Active]));
        assert_eq!(path(Active, Active), Some(vec![]));
        assert_eq!(
            path(HandoffReady, Active),
            Some(vec![HandoffComplete, Standby, Active])
        );
        assert_eq!(
            path(Verification, Active),
            Some(vec![Approved, HandoffComplete, Standby, Active])
        );
        for from in InstanceState::ALL {
            let p = path(from, Active).expect("ACTIVE is reachable from everywhere");
            let mut cur = from;
            for s in p {
                assert!(transition(cur, s).is_ok(), "{cur} → {s}");
                cur = s;
            }
        }
    }

    #[test]
    fn staying_is_allowed() {
        for s in InstanceState::ALL {
            assert_eq!(transition(s, s), Ok(Edge::Stay), "{s}");
        }
    }

    #[test]
    fn every_other_edge_is_refused() {
        let mut refused = 0;
        for from in InstanceState::ALL {
            for to in InstanceState::ALL {
                if from == to || LEGAL.iter().any(|&(f, t, _)| f == from && t == to) {
                    continue;
                }
                let err = transition(from, to).expect_err("must be refused");
                assert_eq!(err, IllegalTransition { from, to });
                assert_eq!(
                    err.to_string(),
                    format!("an instance cannot go from {from} to {to}")
                );
                refused += 1;
            }
        }
        // 8 × 8 pairs, minus 8 stays, minus the legal edges.
        assert_eq!(refused, 64 - 8 - LEGAL.len());
    }

    #[test]
    fn the_seed_cycles_are_walkable() {
        let happy = [
            Standby,
            Active,
            HandoffReady,
            Verification,
            Approved,
            HandoffComplete,
            Standby,
        ];
        let fix = [
            HandoffReady,
            Verification,
            Failed,
            Remediation,
            HandoffReady,
        ];
        for path in [&happy[..], &fix[..]] {
            for pair in path.windows(2) {
                assert!(
                    transition(pair[0], pair[1]).is_ok(),
                    "{} → {}",
                    pair[0],
                    pair[1]
                );
            }
        }
    }

    #[test]
    fn names_match_serde() {
        for s in InstanceState::ALL {
            let json = serde_json::to_string(&s).expect("serializes");
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
    }
}
