//! Verification: finished work checked out at the submitted commit, the phases run on a
//! thread with deadlines, the verdict decided by the rules and delivered to the PC (with a
//! remediation handoff for a DENY).

use super::*;

impl Coordinator {
    pub(super) fn verify_submissions(
        &mut self,
        view: &mut FleetView,
        epoch: u64,
        now: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        // Finished runs first.
        let ids: Vec<HandoffId> = self.runs.keys().cloned().collect();
        for id in ids {
            let Some(results) = self.runs.get_mut(&id).and_then(|r| r.running.try_finish()) else {
                continue;
            };
            let Some(run) = self.runs.remove(&id) else {
                continue;
            };
            if run.epoch != epoch {
                continue;
            }
            let v = self.decide(run.record, results, now);
            if let Some(verdict) = v.verdict {
                actions.push(Action::Verified {
                    handoff: id.clone(),
                    verdict,
                    reasons: v.reasons.clone(),
                });
            }
            view.verifications.insert(id, v);
        }
        let mut submissions: Vec<(HandoffId, Handoff)> = view
            .pending
            .iter()
            .filter(|(_, h)| h.reason == HandoffReason::WorkComplete)
            .cloned()
            .collect();
        if self.config.coordinator.verify_credit_handoffs {
            submissions.extend(self.credit_handoffs_to_verify(view));
        }
        for (id, h) in submissions {
            match view.verifications.get(&id) {
                Some(v) if v.verdict.is_some() => {
                    // A credit handoff verified after the fact: the verdict is a record (and
                    // an escalation when unclear); the work already moved on.
                    if h.reason != HandoffReason::WorkComplete {
                        continue;
                    }
                    if !self.delivered.contains(&id) {
                        let v = v.clone();
                        match self.deliver(&id, &h, &v, view, epoch, now) {
                            Ok(told) => {
                                self.delivered.insert(id.clone());
                                actions.push(told);
                            }
                            Err(e) => {
                                tracing::warn!(handoff = %id, error = %e, "cannot deliver the verdict; retrying next cycle")
                            }
                        }
                    }
                }
                _ if self.runs.contains_key(&id) => {}
                _ => {
                    if let Some(record) = self.start_verification(&id, &h, epoch, now) {
                        actions.push(Action::Verifying {
                            handoff: id.clone(),
                            phases: record.phases.len(),
                        });
                        view.verifications.insert(id, record);
                    }
                }
            }
        }
    }

    /// Credit handoffs (pending, or archived since this PC leads) without a verification.
    pub(super) fn credit_handoffs_to_verify(&self, view: &FleetView) -> Vec<(HandoffId, Handoff)> {
        let is_credit = |h: &Handoff| {
            matches!(
                h.reason,
                HandoffReason::CreditExhaustion
                    | HandoffReason::UsageLimit
                    | HandoffReason::SpendLimit
                    | HandoffReason::Manual
            )
        };
        let mut out: Vec<(HandoffId, Handoff)> = view
            .pending
            .iter()
            .filter(|(id, h)| is_credit(h) && !view.verifications.contains_key(id))
            .cloned()
            .collect();
        let since = self
            .leading_since
            .map(|t| t - chrono::Duration::minutes(10));
        if let Some(since) = since {
            for (id, path) in handoff_files(&self.tree.processed_handoff_dir()) {
                if id.created_at() < since || view.verifications.contains_key(&id) {
                    continue;
                }
                if let Ok(doc) = fsio::load::<Handoff>(&path)
                    && is_credit(&doc.value)
                {
                    out.push((id, doc.value));
                }
            }
        }
        out
    }

    pub(super) fn start_verification(
        &mut self,
        id: &HandoffId,
        h: &Handoff,
        epoch: u64,
        now: DateTime<Utc>,
    ) -> Option<Verification> {
        let phases = self.config.coordinator.phases.clone();
        let task = h.current_work.as_ref().map(|w| w.task_id.clone());
        let record = Verification {
            format_version: Verification::FORMAT_VERSION,
            handoff_id: id.clone(),
            pc: h.from_pc.clone(),
            task: task.clone(),
            coordinator: self.pc.clone(),
            epoch,
            started_at: now,
            finished_at: None,
            phases: phases
                .iter()
                .map(|p| PhaseResult::new(p.name.clone(), PhaseStatus::Pending, p.critical))
                .collect(),
            verdict: None,
            reasons: Vec::new(),
        };
        if phases.is_empty() {
            // Nothing to run: decide now.
            return Some(self.decide(record, Vec::new(), now));
        }
        if let Err(e) = fsio::save(&self.tree.verification_file(id), &Doc::new(record.clone())) {
            tracing::warn!(error = %e, "cannot write the verification record");
            return None;
        }
        let code = h
            .current_work
            .as_ref()
            .and_then(|w| w.code.clone())
            .filter(|c| c.pushed && !c.repository.is_empty());
        let workdir = match code {
            Some(code) => Workdir::Snapshot {
                dir: self.tree.verify_checkout_dir(),
                code,
            },
            None => Workdir::Plain(self.plain_workdir()),
        };
        let mut env = vec![
            ("TRINITY_HANDOFF_ID".to_owned(), id.to_string()),
            ("TRINITY_VERIFY_PC".to_owned(), h.from_pc.to_string()),
            ("TRINITY_VERIFY_LEADER".to_owned(), self.pc.to_string()),
        ];
        if let Some(t) = &task {
            env.push(("TRINITY_TASK_ID".to_owned(), t.to_string()));
        }
        if let Some(c) = h.current_work.as_ref().and_then(|w| w.code.as_ref()) {
            env.push(("TRINITY_VERIFY_COMMIT".to_owned(), c.wip_commit.clone()));
        }
        let job = verify::Job {
            phases,
            workdir,
            env,
            scratch: self.tree.verify_run_dir(id),
        };
        match Running::start(job) {
            Ok(running) => {
                self.runs.insert(
                    id.clone(),
                    Run {
                        epoch,
                        record: record.clone(),
                        running,
                    },
                );
                Some(record)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the verification thread");
                None
            }
        }
    }

    pub(super) fn plain_workdir(&self) -> PathBuf {
        let configured = self.config.agent.workdir.trim();
        if !configured.is_empty() {
            return PathBuf::from(configured);
        }
        self.config_dir
            .clone()
            .unwrap_or_else(|| self.tree.root().to_owned())
    }

    /// Judges the results, writes the verdict, escalates when a person must decide.
    pub(super) fn decide(
        &mut self,
        mut record: Verification,
        results: Vec<PhaseResult>,
        now: DateTime<Utc>,
    ) -> Verification {
        let c = &self.config.coordinator;
        let (verdict, reasons) = coordination::verdict(
            &results,
            Criteria {
                coverage_min: c.coverage_min,
                medium_issue_limit: c.medium_issue_limit,
            },
        );
        record.phases = results;
        record.finished_at = Some(now.max(record.started_at));
        record.verdict = Some(verdict);
        record.reasons = reasons;
        if let Err(e) = fsio::save(
            &self.tree.verification_file(&record.handoff_id),
            &Doc::new(record.clone()),
        ) {
            tracing::error!(error = %e, "cannot write the verdict");
        }
        let task = record
            .task
            .as_ref()
            .map(|t| format!(" (task {t})"))
            .unwrap_or_default();
        if verdict == Verdict::Escalate {
            self.escalate(
                EscalationKind::Verification,
                format!(
                    "decide on {}'s work{task}: {}",
                    record.pc,
                    record.reasons.first().cloned().unwrap_or_default()
                ),
                Some(record.handoff_id.clone()),
                Some(format!(
                    "The verification of {} was unclear. Read verification/{}.json; then either \
                     accept the work as done, or tell {} what to fix.\n\n{}",
                    record.handoff_id,
                    record.handoff_id,
                    record.pc,
                    record.reasons.join("\n")
                )),
                now,
            );
        }
        self.notifier.send(
            format!("Trinity: {} {}", verdict.as_str(), record.pc),
            format!("{}{task}: {}", record.handoff_id, record.reasons.join("; ")),
        );
        record
    }

    /// Tells the submitting PC the verdict; on DENY also gives it the work back to fix.
    pub(super) fn deliver(
        &mut self,
        id: &HandoffId,
        h: &Handoff,
        v: &Verification,
        view: &FleetView,
        epoch: u64,
        now: DateTime<Utc>,
    ) -> Result<Action, SaveError> {
        let verdict = v.verdict.unwrap_or(Verdict::Escalate);
        let to = &h.from_pc;
        let told = |fix| Action::Told {
            to: to.clone(),
            handoff: id.clone(),
            verdict,
            fix,
        };
        self.signal(
            to,
            WakeTask::Verdict,
            Some(id.clone()),
            None,
            epoch,
            now,
            &format!("{}: {}", verdict.as_str(), v.reasons.join("; ")),
        )?;
        if verdict != Verdict::Deny {
            return Ok(told(Fix::None));
        }
        let Some(work) = h.current_work.clone() else {
            return Ok(told(Fix::NoTask));
        };
        let finished = v.finished_at.unwrap_or(v.started_at);
        // The task is not done after all: its result goes (the leader consumes done records).
        match std::fs::remove_file(self.tree.done_file(&work.task_id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(task = %work.task_id, error = %e, "cannot withdraw the done record")
            }
        }
        if remediation_exists(&self.tree, view, to, &work.task_id, finished) {
            return Ok(told(Fix::AlreadyAsked));
        }
        let task = view.queue.tasks.get(&work.task_id);
        let fix = CurrentWork {
            task_id: work.task_id.clone(),
            progress: format!("verification denied: {}", v.reasons.join("; ")),
            completed_subtasks: work.completed_subtasks.clone(),
            next_subtask: Some(format!(
                "fix what verification found (verification/{id}.json): {}",
                v.reasons.first().cloned().unwrap_or_default()
            )),
            code: None,
            session: None,
            conversation_sha256: None,
        };
        let remediation = Handoff {
            format_version: Handoff::FORMAT_VERSION,
            from_pc: self.pc.clone(),
            to_pc: to.clone(),
            timestamp: now,
            reason: HandoffReason::Remediation,
            task_queue: vec![TaskRef {
                id: work.task_id.clone(),
                priority: task.map(|t| t.priority).unwrap_or_default(),
                description: task.map(|t| t.description.clone()).unwrap_or_default(),
            }],
            current_work: Some(fix),
            credit_state: None,
            epoch: None,
            authored_by: Some(self.pc.clone()),
            leader_epoch: Some(epoch),
        };
        let rid = self.send_handoff(
            &remediation,
            WakeTask::Remediation,
            epoch,
            now,
            "verification denied your work: fix it",
        )?;
        Ok(told(Fix::SentBack {
            task: work.task_id,
            remediation: rid,
        }))
    }
}

pub(crate) fn read_verifications(tree: &Tree) -> BTreeMap<HandoffId, Verification> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(tree.verification_dir()) else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        if let Ok(doc) = fsio::load::<Verification>(&path) {
            out.insert(doc.value.handoff_id.clone(), doc.value);
        }
    }
    out
}

/// Whether a remediation of `task` for `to` was written at or after `since` (pending or
/// archived): a new leader must not ask for the same fix twice.
fn remediation_exists(
    tree: &Tree,
    view: &FleetView,
    to: &PcId,
    task: &TaskId,
    since: DateTime<Utc>,
) -> bool {
    let is_it = |h: &Handoff| {
        h.reason == HandoffReason::Remediation
            && &h.to_pc == to
            && h.timestamp >= since - chrono::Duration::seconds(1)
            && h.task_queue.iter().any(|t| &t.id == task)
    };
    if view.pending.iter().any(|(_, h)| is_it(h)) {
        return true;
    }
    handoff_files(&tree.processed_handoff_dir())
        .into_iter()
        .any(|(id, path)| {
            id.to_pc() == to
                && id.created_at() >= since - chrono::Duration::seconds(1)
                && fsio::load::<Handoff>(&path).is_ok_and(|d| is_it(&d.value))
        })
}
