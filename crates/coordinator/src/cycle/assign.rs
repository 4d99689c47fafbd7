//! Giving work: the best task for each PC on standby, sent as a coordinator-authored handoff
//! with its wake signal (the normal accepting path), and escalations.

use super::*;

impl Coordinator {
    pub(super) fn assign_work(
        &mut self,
        fleet: &Fleet,
        view: &FleetView,
        epoch: u64,
        now: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        self.assigned.retain(|pc, _| {
            view.instances.get(pc).is_none_or(|i| {
                matches!(
                    i.state,
                    InstanceState::Standby | InstanceState::Verification
                )
            })
        });
        let idle: Vec<Idle> = fleet
            .pcs
            .iter()
            .filter(|p| self.can_take_work(view, p, now))
            .map(|p| Idle {
                pc: p.clone(),
                roles: view
                    .heartbeats
                    .get(p)
                    .map(|h| h.roles.clone())
                    .unwrap_or_default(),
                tokens: 0,
            })
            .collect();
        if idle.is_empty() {
            return;
        }
        let taken: BTreeSet<TaskId> = view
            .pending
            .iter()
            .flat_map(|(_, h)| {
                h.task_queue
                    .iter()
                    .map(|t| t.id.clone())
                    .chain(h.current_work.as_ref().map(|w| w.task_id.clone()))
            })
            .collect();
        for (pc, task_id) in coordination::assign(&view.queue, &idle, &taken) {
            let Some(task) = view.queue.tasks.get(&task_id) else {
                continue;
            };
            let h = Handoff {
                format_version: Handoff::FORMAT_VERSION,
                from_pc: self.pc.clone(),
                to_pc: pc.clone(),
                timestamp: now,
                reason: HandoffReason::Assignment,
                task_queue: vec![TaskRef {
                    id: task.id.clone(),
                    priority: task.priority,
                    description: task.description.clone(),
                }],
                current_work: None,
                credit_state: None,
                epoch: None,
                authored_by: Some(self.pc.clone()),
                leader_epoch: Some(epoch),
            };
            match self.send_handoff(
                &h,
                WakeTask::Assignment,
                epoch,
                now,
                &format!("new work: {}", task.id),
            ) {
                Ok(id) => {
                    self.assigned.insert(pc.clone(), now);
                    actions.push(Action::Assigned {
                        task: task.id.clone(),
                        priority: task.priority,
                        to: pc.clone(),
                        handoff: id,
                    });
                }
                Err(e) => tracing::warn!(pc = %pc, task = %task.id, error = %e, "cannot assign"),
            }
        }
    }

    /// Writes a handoff the leader authored and the wake signal that brings it.
    pub(super) fn send_handoff(
        &mut self,
        h: &Handoff,
        task: WakeTask,
        epoch: u64,
        now: DateTime<Utc>,
        message: &str,
    ) -> Result<HandoffId, SaveError> {
        // Handoff ids are to the second: wait for a free one rather than collide.
        let mut h = h.clone();
        let mut id = h.id().ok_or_else(|| bad("cannot name the handoff"))?;
        let mut bump = 0;
        while self.tree.handoff_file(&id).exists() || self.tree.processed_handoff_file(&id).exists()
        {
            bump += 1;
            h.timestamp = now + chrono::Duration::seconds(bump);
            id = h.id().ok_or_else(|| bad("cannot name the handoff"))?;
        }
        fsio::create(&self.tree.handoff_file(&id), &h)?;
        self.announced.insert(id.clone());
        self.signal(
            &h.to_pc,
            task,
            Some(id.clone()),
            h.epoch,
            epoch,
            now,
            message,
        )?;
        Ok(id)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn signal(
        &self,
        to: &PcId,
        task: WakeTask,
        handoff: Option<HandoffId>,
        work_epoch: Option<u64>,
        epoch: u64,
        now: DateTime<Utc>,
        message: &str,
    ) -> Result<(), SaveError> {
        let signal = WakeSignal {
            format_version: WakeSignal::FORMAT_VERSION,
            id: SignalId::generate(&self.pc, now, task.as_str()),
            from_pc: self.pc.clone(),
            to_pc: to.clone(),
            timestamp: now,
            task: task.as_str().to_owned(),
            message: message
                .chars()
                .filter(|c| !c.is_control() || *c == '\n')
                .take(trinity_core::schema::MAX_WAKE_MESSAGE_CHARS)
                .collect(),
            handoff,
            expires_at: None,
            epoch: work_epoch,
            leader_epoch: Some(epoch),
        };
        fsio::create(&self.tree.wake_file(to, &signal.id), &signal)
    }

    pub(super) fn escalate(
        &self,
        kind: EscalationKind,
        summary: String,
        handoff: Option<HandoffId>,
        details: Option<String>,
        now: DateTime<Utc>,
    ) {
        let id = RecordId::generate(&self.pc, now, &format!("{kind:?}").to_ascii_lowercase());
        let e = Escalation {
            format_version: Escalation::FORMAT_VERSION,
            id: id.clone(),
            created_at: now,
            created_by: self.pc.clone(),
            kind,
            summary: summary.clone(),
            handoff,
            paths: Vec::new(),
            details,
        };
        match fsio::create(&self.tree.escalation_file(&id), &e) {
            Ok(()) => {
                tracing::warn!(escalation = %id, %summary, "escalated to a person");
                self.notifier.send("Trinity: a person must decide", summary);
            }
            Err(err) => tracing::error!(error = %err, "cannot write the escalation"),
        }
    }
}
