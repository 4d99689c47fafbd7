//! The lease: who leads, by compare-and-swap through git.
//!
//! A coordinator writes `coordinator/lease.json` to take or renew the lease, then waits until
//! git-sync reports that every change made before the write is on the remote
//! ([`SyncState::has_reached_remote`]) and reads the file again: if it still holds its own
//! version, its push won and it leads. A lost race shows as the other PC's lease coming back
//! in the merge (the remote's version of a compare-and-swap file wins). Only a lease that
//! reached the remote counts.
//!
//! A leader stops acting at once when the lease file names someone else or a higher epoch,
//! and also when it could not get a renewal onto the remote within `lease_ttl` (it may be cut
//! off: the others will take over after `lease_ttl` by their own clocks).

use std::time::Duration;

use chrono::{DateTime, Utc};
use trinity_core::config::SyncMode;
use trinity_core::coordination::{LeaseAction, LeaseSeen, fingerprint, lease_action};
use trinity_core::fsio::{self, SaveError};
use trinity_core::schema::{Doc, Lease, Schema};
use trinity_core::syncstate::SyncState;
use trinity_core::trust::Keyring;
use trinity_core::{PcId, SharedClock, Tree};

/// What the lease keeper concluded in one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// This PC leads with this epoch.
    Leading {
        /// The lease epoch.
        epoch: u64,
    },
    /// This PC wrote a lease and waits for it to reach the remote.
    Claiming {
        /// The epoch it claims.
        epoch: u64,
    },
    /// Another PC leads (or nobody yet).
    Following {
        /// The holder, when there is a lease.
        holder: Option<PcId>,
        /// Its epoch (0 when there is no lease).
        epoch: u64,
    },
}

impl std::fmt::Display for Standing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Standing::Leading { epoch } => write!(f, "leading (epoch {epoch})"),
            Standing::Claiming { epoch } => write!(
                f,
                "claimed the lease (epoch {epoch}); it has not reached the remote yet"
            ),
            Standing::Following {
                holder: Some(h),
                epoch,
            } => write!(f, "following {h} (epoch {epoch})"),
            Standing::Following { holder: None, .. } => f.write_str("no leader yet"),
        }
    }
}

/// Something worth a log line that happened to the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// This PC began leading.
    Won {
        /// The epoch.
        epoch: u64,
        /// Why it took the lease.
        why: String,
    },
    /// This PC stopped leading.
    Lost {
        /// The epoch it held.
        epoch: u64,
        /// Why.
        why: String,
    },
}

#[derive(Debug, Clone)]
struct Pending {
    lease: Lease,
    written_at: DateTime<Utc>,
    /// A moment after the file was in place (the clock read after the write): the lease is on
    /// the remote once git-sync is in sync past it. Not `written_at`, the step's moment, taken
    /// before the write — a git-sync cycle begun in between would not have seen the file, yet
    /// would count as having pushed it, and two PCs could both believe they lead.
    in_place_at: DateTime<Utc>,
    why: String,
    renewal: bool,
}

/// Keeps this PC's view of the lease and acts on it.
#[derive(Debug)]
pub struct LeaseKeeper {
    tree: Tree,
    me: PcId,
    ttl: Duration,
    wait_for_remote: bool,
    clock: SharedClock,
    seen: Option<(Option<u64>, DateTime<Utc>)>,
    pending: Option<Pending>,
    /// The epoch held and when its last renewal was confirmed on the remote.
    leading: Option<(u64, DateTime<Utc>)>,
    /// Refuse an unsigned lease (`security.require_signatures`).
    require_signatures: bool,
}

impl LeaseKeeper {
    /// A keeper for `me`; `sync` decides whether leases must reach a remote first; `clock` is
    /// read after each write of the lease.
    pub fn new(tree: Tree, me: PcId, ttl: Duration, sync: SyncMode, clock: SharedClock) -> Self {
        Self {
            tree,
            me,
            ttl,
            wait_for_remote: sync != SyncMode::None,
            clock,
            seen: None,
            pending: None,
            leading: None,
            require_signatures: true,
        }
    }

    /// Whether the lease read from `path` is signed by its holder with a key this PC believes
    /// (docs/security.md): a forged lease deposes nobody.
    fn believed(
        &self,
        path: &std::path::Path,
        bytes: &[u8],
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<(), trinity_core::trust::Refusal> {
        let raw: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
        Keyring::open_or_closed(&self.tree, self.require_signatures, now)
            .check_doc(path, &raw, lease)
            .map(|_| ())
    }

    /// Sets `security.require_signatures` (on unless said otherwise).
    pub fn require_signatures(mut self, required: bool) -> Self {
        self.require_signatures = required;
        self
    }

    /// The epoch this PC leads with, if it leads.
    pub fn leading(&self) -> Option<u64> {
        self.leading.map(|(e, _)| e)
    }

    /// Reads the lease, decides, writes it if needed. `preferred` is fleet.toml's coordinator.
    pub fn step(&mut self, preferred: &PcId, now: DateTime<Utc>) -> (Standing, Vec<LeaseEvent>) {
        let mut events = Vec::new();
        let path = self.tree.lease_file();
        let (lease, fp) = match fsio::read_bounded(&path, 64 * 1024) {
            Ok(bytes) => {
                let fp = fingerprint(&[&bytes]);
                match trinity_core::schema::from_bytes::<Lease>(&bytes) {
                    Ok(l) => match self.believed(&path, &bytes, &l, now) {
                        Ok(()) => (Some(l), Some(fp)),
                        Err(refusal) => {
                            tracing::warn!(%refusal, "the lease is not signed by its holder; treating it as absent");
                            (None, Some(fp))
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "the lease file is invalid; treating it as absent");
                        (None, Some(fp))
                    }
                }
            }
            Err(e) if e.is_not_found() => (None, None),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the lease file");
                return (self.standing(lease_holder(None)), events);
            }
        };
        match &self.seen {
            Some((old, _)) if *old == fp => {}
            _ => self.seen = Some((fp, now)),
        }
        let unchanged_since = self.seen.as_ref().map_or(now, |(_, at)| *at);

        // A deposed leader stops at once.
        if let Some((epoch, confirmed)) = self.leading {
            let ours = lease
                .as_ref()
                .is_some_and(|l| l.holder == self.me && l.epoch == epoch);
            if !ours {
                let why = match &lease {
                    Some(l) => format!("{} holds the lease now (epoch {})", l.holder, l.epoch),
                    None => "the lease file is gone".to_owned(),
                };
                events.push(LeaseEvent::Lost { epoch, why });
                self.leading = None;
                self.pending = None;
            } else if (now - confirmed).to_std().unwrap_or_default() >= self.ttl {
                events.push(LeaseEvent::Lost {
                    epoch,
                    why: format!(
                        "no renewal reached the remote within lease_ttl ({})",
                        humantime::format_duration(self.ttl)
                    ),
                });
                self.leading = None;
            }
        }

        // A lease written earlier: did it reach the remote, and is it still ours?
        if let Some(p) = self.pending.clone() {
            let reached = !self.wait_for_remote
                || SyncState::load(&self.tree).is_some_and(|s| s.has_reached_remote(p.in_place_at));
            let still_ours = lease
                .as_ref()
                .is_some_and(|l| l.holder == self.me && l.epoch == p.lease.epoch);
            if !still_ours {
                tracing::info!(epoch = p.lease.epoch, "another PC's lease won the race");
                self.pending = None;
            } else if reached {
                self.pending = None;
                if self.leading.is_none() {
                    events.push(LeaseEvent::Won {
                        epoch: p.lease.epoch,
                        why: p.why.clone(),
                    });
                }
                self.leading = Some((p.lease.epoch, p.written_at));
            } else {
                return (self.standing(lease_holder(lease.as_ref())), events);
            }
        }

        let seen = LeaseSeen {
            lease: lease.as_ref(),
            unchanged_since,
        };
        let mut action = lease_action(&self.me, preferred, seen, now, self.ttl);
        // Its own lease, but this process does not lead yet (it was restarted): renew it to
        // confirm it, rather than wait for the renewal to fall due.
        if action == LeaseAction::Hold && self.leading.is_none() {
            action = LeaseAction::Renew;
        }
        match action {
            LeaseAction::Hold | LeaseAction::Follow { .. } => {}
            LeaseAction::Renew => {
                if let Some(l) = &lease {
                    let renewed = Lease {
                        renewed_at: now.max(l.acquired_at),
                        expires_at: now.max(l.acquired_at) + chrono_ttl(self.ttl),
                        ..l.clone()
                    };
                    self.write(renewed, now, "renewal".to_owned(), true);
                    if !self.wait_for_remote {
                        return self.step_after_write(preferred, now, events);
                    }
                }
            }
            LeaseAction::Take { epoch, why } => {
                let new = Lease {
                    format_version: Lease::FORMAT_VERSION,
                    holder: self.me.clone(),
                    epoch,
                    acquired_at: now,
                    renewed_at: now,
                    expires_at: now + chrono_ttl(self.ttl),
                };
                tracing::info!(epoch, why, "taking the coordinator lease");
                self.write(new, now, why.to_owned(), false);
                if !self.wait_for_remote {
                    // No remote: the file is the truth at once.
                    return self.step_after_write(preferred, now, events);
                }
            }
        }
        (self.standing(lease_holder(lease.as_ref())), events)
    }

    fn step_after_write(
        &mut self,
        preferred: &PcId,
        now: DateTime<Utc>,
        mut events: Vec<LeaseEvent>,
    ) -> (Standing, Vec<LeaseEvent>) {
        let (standing, more) = self.step(preferred, now);
        events.extend(more);
        (standing, events)
    }

    fn write(&mut self, lease: Lease, now: DateTime<Utc>, why: String, renewal: bool) {
        match fsio::save(&self.tree.lease_file(), &Doc::new(lease.clone())) {
            Ok(()) => {
                self.pending = Some(Pending {
                    lease,
                    written_at: now,
                    in_place_at: self.clock.now().max(now),
                    why,
                    renewal,
                });
            }
            Err(SaveError::Io(e)) => tracing::warn!(error = %e, "cannot write the lease"),
            Err(e) => tracing::error!(error = %e, "the lease is invalid (a bug)"),
        }
    }

    fn standing(&self, holder: (Option<PcId>, u64)) -> Standing {
        if let Some((epoch, _)) = self.leading {
            Standing::Leading { epoch }
        } else if let Some(p) = &self.pending
            && p.lease.holder == self.me
            && !p.renewal
        {
            Standing::Claiming {
                epoch: p.lease.epoch,
            }
        } else {
            Standing::Following {
                holder: holder.0,
                epoch: holder.1,
            }
        }
    }
}

fn lease_holder(lease: Option<&Lease>) -> (Option<PcId>, u64) {
    lease.map_or((None, 0), |l| (Some(l.holder.clone()), l.epoch))
}

fn chrono_ttl(ttl: Duration) -> chrono::Duration {
    chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(120))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc(s: &str) -> PcId {
        PcId::new(s).expect("valid")
    }

    /// The keepers' clock, at the start of every test's time line: each step's `now` (given
    /// explicitly) is later, so a write's moment is the step's.
    fn clock() -> SharedClock {
        std::sync::Arc::new(trinity_core::ManualClock::new(t(0)))
    }

    fn t(s: i64) -> DateTime<Utc> {
        "2026-01-01T00:00:00Z"
            .parse::<DateTime<Utc>>()
            .expect("time")
            + chrono::Duration::seconds(s)
    }

    const TTL: Duration = Duration::from_secs(120);

    #[test]
    fn on_one_shared_folder_the_preferred_pc_leads_and_a_follower_takes_over_after_the_ttl() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let mut pc3 = LeaseKeeper::new(tree.clone(), pc("PC3"), TTL, SyncMode::None, clock());
        let mut pc1 = LeaseKeeper::new(tree.clone(), pc("PC1"), TTL, SyncMode::None, clock());

        let (s, ev) = pc3.step(&pc("PC3"), t(0));
        assert_eq!(s, Standing::Leading { epoch: 1 });
        assert!(matches!(ev[0], LeaseEvent::Won { epoch: 1, .. }));
        let (s, _) = pc1.step(&pc("PC3"), t(0));
        assert_eq!(
            s,
            Standing::Following {
                holder: Some(pc("PC3")),
                epoch: 1
            }
        );
        // PC3 renews while alive: the file changes, PC1 keeps following.
        for k in 1..10 {
            let (s, _) = pc3.step(&pc("PC3"), t(k * 40));
            assert_eq!(s, Standing::Leading { epoch: 1 });
            let (s, _) = pc1.step(&pc("PC3"), t(k * 40 + 1));
            assert!(matches!(s, Standing::Following { .. }), "{s:?}");
        }
        // PC3 goes silent at t=360: PC1 takes over 120 s after it last saw a change.
        let (s, _) = pc1.step(&pc("PC3"), t(400));
        assert!(matches!(s, Standing::Following { .. }));
        let (s, ev) = pc1.step(&pc("PC3"), t(361 + 120));
        assert_eq!(s, Standing::Leading { epoch: 2 });
        assert!(matches!(ev[0], LeaseEvent::Won { epoch: 2, .. }));
        // PC3 comes back: it sees it was deposed and stops at once, then takes the lease back
        // as the preferred leader with a higher epoch.
        let (s, ev) = pc3.step(&pc("PC3"), t(500));
        assert!(
            ev.iter()
                .any(|e| matches!(e, LeaseEvent::Lost { epoch: 1, .. })),
            "{ev:?}"
        );
        assert_eq!(s, Standing::Leading { epoch: 3 });
        let (s, ev) = pc1.step(&pc("PC3"), t(501));
        assert!(matches!(ev[0], LeaseEvent::Lost { epoch: 2, .. }));
        assert!(matches!(s, Standing::Following { epoch: 3, .. }));
    }

    #[test]
    fn with_a_remote_a_lease_counts_only_once_git_sync_pushed_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let mut pc3 = LeaseKeeper::new(tree.clone(), pc("PC3"), TTL, SyncMode::Git, clock());
        let (s, _) = pc3.step(&pc("PC3"), t(0));
        assert_eq!(s, Standing::Claiming { epoch: 1 });
        let (s, _) = pc3.step(&pc("PC3"), t(5));
        assert_eq!(s, Standing::Claiming { epoch: 1 });
        let state = SyncState {
            in_sync_at: Some(t(6)),
            ..SyncState::default()
        };
        state.save(&tree).expect("save");
        let (s, ev) = pc3.step(&pc("PC3"), t(7));
        assert_eq!(s, Standing::Leading { epoch: 1 });
        assert_eq!(ev.len(), 1);
        // Renewals that never reach the remote: after the ttl the leader stops by itself.
        let (s, _) = pc3.step(&pc("PC3"), t(60));
        assert_eq!(s, Standing::Leading { epoch: 1 });
        let (s, ev) = pc3.step(&pc("PC3"), t(121));
        assert!(
            ev.iter().any(|e| matches!(e, LeaseEvent::Lost { .. })),
            "{ev:?}"
        );
        assert!(!matches!(s, Standing::Leading { .. }));
    }

    #[test]
    fn a_restarted_leader_confirms_its_own_lease_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let mut first = LeaseKeeper::new(tree.clone(), pc("PC1"), TTL, SyncMode::None, clock());
        let (s, _) = first.step(&pc("PC1"), t(0));
        assert_eq!(s, Standing::Leading { epoch: 1 });
        drop(first);
        let mut again = LeaseKeeper::new(tree.clone(), pc("PC1"), TTL, SyncMode::None, clock());
        let (s, ev) = again.step(&pc("PC1"), t(5));
        assert_eq!(
            s,
            Standing::Leading { epoch: 1 },
            "same epoch: nobody took over"
        );
        assert!(matches!(ev[0], LeaseEvent::Won { epoch: 1, .. }));
    }

    #[test]
    fn a_lost_race_leaves_the_other_pcs_lease() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let mut pc3 = LeaseKeeper::new(tree.clone(), pc("PC3"), TTL, SyncMode::Git, clock());
        pc3.step(&pc("PC3"), t(0));
        // The merge brings PC2's lease (it reached the remote first).
        let other = Lease {
            format_version: 1,
            holder: pc("PC2"),
            epoch: 1,
            acquired_at: t(0),
            renewed_at: t(0),
            expires_at: t(120),
        };
        fsio::save(&tree.lease_file(), &Doc::new(other)).expect("save");
        SyncState {
            in_sync_at: Some(t(2)),
            ..SyncState::default()
        }
        .save(&tree)
        .expect("save");
        let (s, ev) = pc3.step(&pc("PC3"), t(3));
        assert!(ev.is_empty(), "{ev:?}");
        // PC3 is the preferred leader: it claims again, with a higher epoch.
        assert_eq!(s, Standing::Claiming { epoch: 2 });
    }
}
