//! What the wake-daemon does for the coordinator: take a verdict on submitted work, refuse a
//! deposed leader's late files, and stand down from work the coordinator gave to another PC
//! while this one was silent.

use trinity_core::fsio;
use trinity_core::schema::{
    HeartbeatStatus, InstanceStatus, Lease, Verdict, Verification, WakeSignal,
};
use trinity_core::{InstanceState, TaskId, pcfiles, state};

use crate::receive::{Receiver, WakeError};

impl Receiver {
    /// Why a file from the coordinator leader at `leader_epoch` must be ignored: the lease
    /// this PC knows has a higher epoch (the writer was deposed). `None`: it counts.
    pub(crate) fn deposed_leader(&self, leader_epoch: Option<u64>) -> Option<String> {
        let epoch = leader_epoch?;
        // A lease not signed by its holder deposes nobody.
        let keyring = self.keyring().ok()?;
        let lease = fsio::load_trusted::<Lease>(&self.tree.lease_file(), &keyring)
            .ok()?
            .0
            .value;
        (lease.epoch > epoch).then(|| {
            format!(
                "written by a deposed coordinator (epoch {epoch}; {} leads at epoch {})",
                lease.holder, lease.epoch
            )
        })
    }

    /// Takes the coordinator's verdict on work this PC submitted: archives the submission and
    /// moves this PC's state (APPROVE: standby, ready for the next assignment; DENY: FAILED,
    /// until the remediation arrives; ESCALATE: VERIFICATION, until a person decides).
    /// Returns what happened, for the journal.
    pub(crate) fn take_verdict(&self, signal: &WakeSignal) -> Result<String, WakeError> {
        let Some(id) = signal.handoff.clone() else {
            return Ok("a verdict signal naming no submission; nothing to do".to_owned());
        };
        let now = self.now();
        let path = self.tree.verification_file(&id);
        let verification = match fsio::load_trusted::<Verification>(&path, &self.keyring()?) {
            Ok((doc, _)) => doc.value,
            Err(e) => {
                tracing::warn!(submission = %id, error = %e, "a verdict signal without a readable verification record");
                return Ok(format!(
                    "verdict on {id}: no readable verification record ({e})"
                ));
            }
        };
        let Some(verdict) = verification.verdict else {
            return Ok(format!(
                "verdict on {id}: the verification has no verdict yet"
            ));
        };
        // The submission is consumed by this PC (it is its TO).
        let pending = self.tree.handoff_file(&id);
        if pending.is_file() {
            let archived = self.tree.processed_handoff_file(&id);
            let bytes = fsio::read_bounded(&pending, 2 * 1024 * 1024)?;
            match fsio::write_new(&archived, &bytes) {
                Ok(()) => {}
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e.into()),
            }
            std::fs::remove_file(&pending).map_err(fsio::IoError::at(
                "remove the archived submission",
                &pending,
            ))?;
        }
        let target = match verdict {
            Verdict::Approve => InstanceState::Standby,
            Verdict::Deny => InstanceState::Failed,
            Verdict::Escalate => InstanceState::Verification,
        };
        let mut moved = None;
        pcfiles::update_instance(&self.tree, &self.pc, now, |current| {
            let current = current?;
            if current.handoff.as_ref() != Some(&id) {
                return None;
            }
            let path = state::path(current.state, target)?;
            if path.is_empty() {
                return None;
            }
            moved = Some((current.state, path.clone()));
            Some(InstanceStatus {
                state: target,
                since: now,
                ..current.clone()
            })
        })?;
        if verdict == Verdict::Approve {
            pcfiles::update_heartbeat(&self.tree, &self.pc, now, |hb| {
                if matches!(
                    hb.status,
                    HeartbeatStatus::Active | HeartbeatStatus::HandoffAccepted
                ) {
                    hb.status = HeartbeatStatus::Idle;
                }
            })?;
        }
        let word = format!("{verdict:?}").to_uppercase();
        match moved {
            Some((from, path)) => {
                let steps: Vec<&str> = path.iter().map(|s| s.as_str()).collect();
                tracing::info!(submission = %id, verdict = %word, from = %from, via = %steps.join(" → "), reasons = %verification.reasons.join("; "), "the coordinator's verdict");
                Ok(format!(
                    "verdict on {id}: {word}; {from} → {}",
                    steps.join(" → ")
                ))
            }
            None => {
                tracing::info!(submission = %id, verdict = %word, "the coordinator's verdict (this PC has moved on)");
                Ok(format!("verdict on {id}: {word}"))
            }
        }
    }

    /// When the coordinator gave this PC's work to another PC (its claims now name that PC),
    /// this PC does not resume it: the work leaves its instance file, and with nothing left
    /// it stands by for new work.
    pub(crate) fn withdraw_lost_work(&self) -> Result<(), WakeError> {
        let Ok(doc) = fsio::load::<InstanceStatus>(&self.tree.instance_file(&self.pc)) else {
            return Ok(());
        };
        let inst = doc.value;
        if !matches!(
            inst.state,
            InstanceState::Active | InstanceState::Remediation
        ) {
            return Ok(());
        }
        let taken_by = |task: &TaskId| {
            fsio::load::<trinity_core::schema::Claim>(&self.tree.claim_file(task))
                .ok()
                .map(|d| d.value)
                .filter(|c| c.pc != self.pc)
        };
        let held: std::collections::BTreeSet<&TaskId> = inst
            .claimed_tasks
            .iter()
            .chain(inst.current_work.as_ref().map(|w| &w.task_id))
            .collect();
        let lost: Vec<(TaskId, String)> = held
            .into_iter()
            .filter_map(|t| {
                taken_by(t).map(|c| (t.clone(), format!("{} (epoch {})", c.pc, c.epoch)))
            })
            .collect();
        if lost.is_empty() {
            return Ok(());
        }
        let now = self.now();
        for (task, holder) in &lost {
            tracing::warn!(task = %task, now_with = %holder, "this PC's work was reassigned while it was silent; not resuming it");
        }
        let lost_ids: Vec<&TaskId> = lost.iter().map(|(t, _)| t).collect();
        pcfiles::update_instance(&self.tree, &self.pc, now, |current| {
            let mut next = current?.clone();
            next.claimed_tasks.retain(|t| !lost_ids.contains(&t));
            if next
                .current_work
                .as_ref()
                .is_some_and(|w| lost_ids.contains(&&w.task_id))
            {
                next.current_work = None;
            }
            if next.claimed_tasks.is_empty() && next.current_work.is_none() {
                next.state = InstanceState::Standby;
                next.since = now;
            }
            Some(next)
        })?;
        pcfiles::update_heartbeat(&self.tree, &self.pc, now, |hb| {
            if matches!(
                hb.status,
                HeartbeatStatus::Active | HeartbeatStatus::HandoffAccepted
            ) {
                hb.status = HeartbeatStatus::Idle;
                hb.from_pc = None;
                hb.tasks_received = None;
            }
        })?;
        Ok(())
    }
}
