//! Failure detection: each PC's silence by the leader's own clock, a reactivation wake-up when
//! it is suspect, and when it is dead its work reassigned (a higher work epoch) with a
//! post-mortem.

use super::*;

impl Coordinator {
    pub(super) fn watch_liveness(
        &mut self,
        fleet: &Fleet,
        view: &FleetView,
        epoch: u64,
        now: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        for pc in &fleet.pcs {
            let Some((live, seen)) = view.liveness.get(pc).cloned() else {
                continue;
            };
            match live {
                // Nothing known (never seen, or this PC cannot see the remote): no change.
                Liveness::Unknown => {}
                Liveness::Alive => {
                    if self.woken.remove(pc) {
                        tracing::info!(pc = %pc, "a suspect PC is alive again");
                    }
                    self.buried.remove(pc);
                }
                Liveness::Suspect => {
                    if self.woken.insert(pc.clone()) {
                        let silent = silent_text(seen, now);
                        match self.signal(pc, WakeTask::Reactivation, None, None, epoch, now, &format!("{pc} has been silent for {silent}; the coordinator asks it to report")) {
                            Ok(()) => actions.push(Action::Woke { pc: pc.clone(), silent }),
                            Err(e) => tracing::warn!(pc = %pc, error = %e, "cannot send a reactivation wake"),
                        }
                    }
                }
                Liveness::Dead => {
                    if self.buried.insert(pc.clone()) {
                        self.woken.remove(pc);
                        self.reassign(fleet, view, pc, seen, epoch, now, actions);
                    }
                }
            }
        }
    }

    /// Whether `pc` can be given work: alive, with credit, not pausing, on standby, with no
    /// handoff on its way to it and no unfinished claim.
    pub(super) fn can_take_work(&self, view: &FleetView, pc: &PcId, now: DateTime<Utc>) -> bool {
        if view.liveness.get(pc).map(|l| l.0) != Some(Liveness::Alive) {
            return false;
        }
        if let Some(hb) = view.heartbeats.get(pc) {
            match hb.status {
                HeartbeatStatus::Exhausted | HeartbeatStatus::Stopped => return false,
                HeartbeatStatus::Paused if hb.paused_until.is_none_or(|u| u > now) => {
                    return false;
                }
                _ => {}
            }
        } else {
            return false;
        }
        if let Some(c) = view.credit.get(pc)
            && (c.level == CreditLevel::Exhausted || c.exhausted_until.is_some_and(|u| u > now))
        {
            return false;
        }
        // On standby; or waiting for a person's decision on escalated work, which need not
        // keep the PC idle.
        if let Some(i) = view.instances.get(pc) {
            let escalated = i.state == InstanceState::Verification
                && i.handoff
                    .as_ref()
                    .and_then(|h| view.verifications.get(h))
                    .is_some_and(|v| v.verdict == Some(Verdict::Escalate));
            if i.state != InstanceState::Standby && !escalated {
                return false;
            }
        }
        if view.pending.iter().any(|(_, h)| &h.to_pc == pc) {
            return false;
        }
        if view
            .queue
            .claims
            .values()
            .any(|c| &c.pc == pc && !view.queue.done.contains_key(&c.task_id))
        {
            return false;
        }
        // Given work lately and not ACTIVE yet: its wake-daemon is still accepting it.
        if let Some(at) = self.assigned.get(pc)
            && (now - *at).to_std().unwrap_or_default() < self.config.wake.claim_timeout * 2
        {
            return false;
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn reassign(
        &mut self,
        fleet: &Fleet,
        view: &FleetView,
        dead: &PcId,
        seen: Option<DateTime<Utc>>,
        epoch: u64,
        now: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        let silent = silent_text(seen, now);
        let inst = view.instances.get(dead);
        let current = inst.and_then(|i| i.current_work.as_ref().map(|w| &w.task_id));
        let coordination::Reassignment { tasks, work_epoch } =
            coordination::reassignment(dead, &view.queue, &view.pending, current);
        let last_work = inst.and_then(|i| i.current_work.clone());
        let hb_time = view.heartbeats.get(dead).map(|h| h.timestamp);
        let target = if tasks.is_empty() {
            None
        } else {
            fleet
                .successors(dead)
                .find(|p| self.can_take_work(view, p, now))
                .or_else(|| {
                    fleet.successors(dead).find(|p| {
                        view.liveness.get(*p).map(|l| l.0) == Some(Liveness::Alive)
                            && view
                                .credit
                                .get(*p)
                                .is_none_or(|c| c.level != CreditLevel::Exhausted)
                    })
                })
                .cloned()
        };
        let mut outcome = String::new();
        if tasks.is_empty() {
            outcome.push_str("It held no unfinished work: nothing was reassigned.");
            actions.push(Action::Dead {
                pc: dead.clone(),
                silent: silent.clone(),
                work: DeadWork::Nothing,
            });
        } else if let Some(to) = target {
            let current_work = last_work
                .clone()
                .filter(|w| tasks.iter().any(|t| t.id == w.task_id));
            let h = Handoff {
                format_version: Handoff::FORMAT_VERSION,
                from_pc: dead.clone(),
                to_pc: to.clone(),
                timestamp: now,
                reason: HandoffReason::Reassignment,
                task_queue: tasks.clone(),
                current_work,
                credit_state: None,
                epoch: Some(work_epoch),
                authored_by: Some(self.pc.clone()),
                leader_epoch: Some(epoch),
            };
            match self.send_handoff(
                &h,
                WakeTask::Reassignment,
                epoch,
                now,
                &format!("{dead} went silent; its work is yours"),
            ) {
                Ok(id) => {
                    let list: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
                    outcome = format!(
                        "Its work ({}) was reassigned to {to} at work epoch {work_epoch} by {id}.",
                        list.join(", ")
                    );
                    actions.push(Action::Dead {
                        pc: dead.clone(),
                        silent: silent.clone(),
                        work: DeadWork::Reassigned {
                            tasks: tasks.iter().map(|t| t.id.clone()).collect(),
                            to: to.clone(),
                        },
                    });
                    self.assigned.insert(to.clone(), now);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot write the reassignment");
                    self.buried.remove(dead);
                    return;
                }
            }
        } else {
            let list: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
            outcome = format!(
                "No live PC with credit could take its work ({}): escalated.",
                list.join(", ")
            );
            self.escalate(
                EscalationKind::StaleInstance,
                format!("{dead} is dead and no live PC with credit can take its work"),
                None,
                Some(outcome.clone()),
                now,
            );
            actions.push(Action::Dead {
                pc: dead.clone(),
                silent: silent.clone(),
                work: DeadWork::Escalated,
            });
        }
        let pm = report::postmortem(
            dead,
            now,
            seen,
            hb_time,
            inst,
            last_work.as_ref(),
            &outcome,
            &self.pc,
            epoch,
        );
        if let Ok(id) = RecordId::new(format!("{dead}-{}", trinity_core::ids::file_timestamp(now)))
            && let Err(e) = fsio::write_new(&self.tree.postmortem_file(&id), pm.as_bytes())
        {
            tracing::warn!(error = %e, "cannot write the post-mortem");
        }
        self.notifier.send(
            format!("Trinity: {dead} is dead"),
            format!("Silent for {silent}. {outcome}"),
        );
    }
}

fn silent_text(seen: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    seen.and_then(|s| (now - s).to_std().ok())
        .map(trinity_core::clock::human_duration)
        .unwrap_or_else(|| "ever".to_owned())
}
