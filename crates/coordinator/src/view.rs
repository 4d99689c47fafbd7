//! What the leader reads each cycle: every PC's heartbeat, instance and credit files, the
//! handoffs waiting and archived, the queue and the verification records, with each PC's
//! liveness by the leader's clock — `FleetView`, the input of every rule and report.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use trinity_core::config::SyncMode;
use trinity_core::coordination;
use trinity_core::fsio;
use trinity_core::queue::QueueView;
use trinity_core::schema::{
    CreditStatus, Fleet, Handoff, Heartbeat, InstanceStatus, Liveness, Verification,
};
use trinity_core::syncstate::SyncState;
use trinity_core::trust::Keyring;
use trinity_core::{HandoffId, PcId, Tree};

use crate::cycle::Coordinator;
use crate::cycle::read_verifications;

/// Everything the leader reads in one cycle.
#[derive(Debug, Default)]
pub struct FleetView {
    /// Heartbeats by PC.
    pub heartbeats: BTreeMap<PcId, Heartbeat>,
    /// Instance states by PC.
    pub instances: BTreeMap<PcId, InstanceStatus>,
    /// Credit by PC.
    pub credit: BTreeMap<PcId, CreditStatus>,
    /// Handoffs waiting for their receiver.
    pub pending: Vec<(HandoffId, Handoff)>,
    /// Handoffs archived so far.
    pub processed: u64,
    /// The archived handoffs of the last day (by the time in their ids).
    pub recent_processed: Vec<HandoffId>,
    /// Tasks, claims and done records.
    pub queue: QueueView,
    /// Verification results by handoff.
    pub verifications: BTreeMap<HandoffId, Verification>,
    /// Liveness by PC, by the leader's clock.
    pub liveness: BTreeMap<PcId, (Liveness, Option<DateTime<Utc>>)>,
}

impl Coordinator {
    /// The keys this PC believes now (fails closed: see [`Keyring::open_or_closed`]).
    pub fn keyring(&self, now: DateTime<Utc>) -> Keyring {
        Keyring::open_or_closed(&self.tree, self.config.security.require_signatures, now)
    }

    /// Reads the fleet's files and judges liveness, as of one commit: git-sync's checkouts are
    /// held back while it reads (a PC's finished work is never seen half-arrived — its claim
    /// gone but its done record and submission not there yet — and assigned again).
    pub fn read(&mut self, fleet: &Fleet, now: DateTime<Utc>) -> FleetView {
        let _settled = trinity_core::syncstate::hold_checkouts(&self.tree);
        let mut view = FleetView::default();
        let c = &self.config.coordinator;
        // Silence counts only up to the last moment this PC saw the remote: a leader whose own
        // sync lags or is cut off (network, an overloaded machine) declares nobody dead for it.
        let observed_until = match self.config.sync.mode {
            SyncMode::Git => SyncState::load(&self.tree)
                .and_then(|s| s.remote_seen_at)
                .map(|t| t.min(now)),
            SyncMode::None => Some(now),
        };
        for pc in &fleet.pcs {
            let hb_path = self.tree.heartbeat_file(pc);
            let in_path = self.tree.instance_file(pc);
            let cr_path = self.tree.credit_file(pc);
            let read = |p: &Path| fsio::read_bounded(p, 256 * 1024).ok();
            let (hb, inst, cr) = (read(&hb_path), read(&in_path), read(&cr_path));
            let fp = (hb.is_some() || inst.is_some() || cr.is_some()).then(|| {
                coordination::fingerprint(&[
                    hb.as_deref().unwrap_or(b""),
                    inst.as_deref().unwrap_or(b""),
                    cr.as_deref().unwrap_or(b""),
                ])
            });
            let seen = self.watch.observe(pc, fp, now);
            let live = if pc == self.pc() {
                Liveness::Alive
            } else {
                match observed_until {
                    Some(until) => {
                        coordination::liveness(seen, until, c.suspect_after, c.dead_after)
                    }
                    None => Liveness::Unknown,
                }
            };
            view.liveness.insert(pc.clone(), (live, seen));
            if let Some(v) = hb.and_then(|b| trinity_core::schema::from_bytes::<Heartbeat>(&b).ok())
            {
                view.heartbeats.insert(pc.clone(), v);
            }
            if let Some(v) =
                inst.and_then(|b| trinity_core::schema::from_bytes::<InstanceStatus>(&b).ok())
            {
                view.instances.insert(pc.clone(), v);
            }
            if let Some(v) =
                cr.and_then(|b| trinity_core::schema::from_bytes::<CreditStatus>(&b).ok())
            {
                view.credit.insert(pc.clone(), v);
            }
        }
        let keyring = self.keyring(now);
        view.pending = read_pending(&self.tree, &keyring);
        let archived = handoff_files(&self.tree.processed_handoff_dir());
        view.processed = archived.len() as u64;
        let horizon = now - trinity_core::schema::Timeline::KEEP;
        view.recent_processed = archived
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| id.created_at() >= horizon)
            .collect();
        view.queue = self.queue.read(&self.tree, &keyring);
        for r in &view.queue.refused {
            if self.refused.insert(r.clone()) {
                tracing::warn!(file = %r, "left out of the queue: not signed by a member this PC trusts; nothing is done with it");
            }
        }
        view.verifications = read_verifications(&self.tree);
        view
    }
}

/// The handoffs in `handoff/` (not archived), oldest first.
pub fn read_pending(tree: &Tree, keyring: &Keyring) -> Vec<(HandoffId, Handoff)> {
    let mut out: Vec<(HandoffId, Handoff)> = handoff_files(&tree.handoff_dir())
        .into_iter()
        .filter_map(
            |(id, path)| match fsio::load_trusted::<Handoff>(&path, keyring) {
                Ok((doc, _)) => Some((id, doc.value)),
                Err(e) => {
                    // Its receiver's wake-daemon refuses it and sets it aside; nobody acts on it.
                    tracing::debug!(error = %e, "a pending handoff left out");
                    None
                }
            },
        )
        .collect();
    out.sort_by_key(|(id, _)| (id.created_at(), id.clone()));
    out
}

/// The handoff files in `dir` (`handoff/` or `handoff/processed/`) with their ids: every
/// `*.json` file named by a valid handoff id.
pub(crate) fn handoff_files(dir: &Path) -> Vec<(HandoffId, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let id = HandoffId::new(p.file_stem()?.to_str()?).ok()?;
            Some((id, p))
        })
        .collect()
}
