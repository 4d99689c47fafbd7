//! The leader's timeline (`dashboards/timeline.json`): each PC's phase every cycle, and the
//! handoffs and verdicts between them, kept for the last day. A new leader carries on the one
//! it finds in the tree.

use trinity_core::schema::{Timeline, TimelineEvent};

use super::*;

impl Coordinator {
    /// Records this cycle's view in the timeline (the reports write it).
    pub(super) fn track(&mut self, fleet: &Fleet, view: &FleetView, now: DateTime<Utc>) {
        let tree = &self.tree;
        let me = &self.pc;
        let timeline = self.timeline.get_or_insert_with(|| {
            let path = tree.timeline_file();
            if !path.exists() {
                return Timeline::new(me.clone(), now);
            }
            match fsio::load::<Timeline>(&path) {
                Ok(doc) => doc.value.carry_on(me.clone()),
                Err(e) => {
                    tracing::warn!(error = %e, "the timeline in the tree is unreadable; starting a new one");
                    Timeline::new(me.clone(), now)
                }
            }
        });
        for pc in &fleet.pcs {
            let liveness = view.liveness.get(pc).map_or(Liveness::Unknown, |(l, _)| *l);
            let phase = coordination::phase_of(
                liveness,
                view.heartbeats.get(pc),
                view.instances.get(pc),
                view.credit.get(pc),
                now,
            );
            timeline.observe(pc, phase, now);
        }
        // PCs that left the fleet: their last span ends now.
        let gone: Vec<PcId> = timeline
            .pcs
            .keys()
            .filter(|pc| !fleet.pcs.contains(pc))
            .cloned()
            .collect();
        for pc in gone {
            timeline.observe(&pc, None, now);
        }
        let horizon = now - Timeline::KEEP;
        let known: BTreeSet<HandoffId> = timeline.handoffs().into_iter().cloned().collect();
        let mut handoffs: Vec<(HandoffId, HandoffReason)> = view
            .pending
            .iter()
            .filter(|(id, _)| !known.contains(id))
            .map(|(id, h)| (id.clone(), h.reason))
            .collect();
        for id in &view.recent_processed {
            if id.created_at() < horizon || known.contains(id) || self.unreadable.contains(id) {
                continue;
            }
            // Read once: an archived handoff never changes.
            match fsio::load::<Handoff>(&tree.processed_handoff_file(id)) {
                Ok(doc) => handoffs.push((id.clone(), doc.value.reason)),
                Err(_) => {
                    self.unreadable.insert(id.clone());
                }
            }
        }
        for (id, reason) in handoffs {
            timeline.record(TimelineEvent {
                at: id.created_at(),
                handoff: id,
                reason,
                verdict: None,
            });
        }
        for v in view.verifications.values() {
            if let (Some(verdict), Some(at)) = (v.verdict, v.finished_at)
                && at >= horizon
            {
                let reason = view
                    .pending
                    .iter()
                    .find(|(id, _)| id == &v.handoff_id)
                    .map_or(HandoffReason::WorkComplete, |(_, h)| h.reason);
                timeline.record(TimelineEvent {
                    at,
                    handoff: v.handoff_id.clone(),
                    reason,
                    verdict: Some(verdict),
                });
            }
        }
        timeline.prune(now);
        self.unreadable.retain(|id| id.created_at() >= horizon);
    }
}
