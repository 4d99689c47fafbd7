//! Accepting a handoff, step by step, each step journaled before the next: claim its tasks and
//! archive the handoff, wait for the claims to reach the remote, take the work over
//! (instance, credit, code, conversation), then launch.

use super::*;

impl Receiver {
    /// Runs the handoff's remaining steps as far as they can go now.
    pub(super) fn advance(
        &self,
        mut record: HandoffRecord,
        report: &mut Report,
    ) -> Result<Progress, WakeError> {
        let id = record.id.clone();
        let mut fresh_launch = false;
        loop {
            let next = match &record.step {
                Step::Done => return Ok(Progress::Done),
                Step::Refused { reason } => return Ok(Progress::Refused(reason.clone())),
                Step::Received => self.archive(&id)?,
                Step::Archived => {
                    let h = self.handoff(&id)?;
                    self.write_claims(&h)?;
                    Step::ClaimsWritten { at: self.now() }
                }
                Step::ClaimsWritten { at } => {
                    let at = *at;
                    if !self.claims_settled(&mut record, at, report)? {
                        return Ok(Progress::Waiting);
                    }
                    Step::Claimed
                }
                Step::Claimed => {
                    let h = self.handoff(&id)?;
                    self.activate(&h, &record.won)?;
                    Step::InstanceWritten
                }
                Step::InstanceWritten => {
                    // A PC taking over from one out of credit starts its windows afresh; work
                    // the coordinator gives a PC leaves its own credit as it is.
                    let h = self.handoff(&id)?;
                    if !matches!(
                        h.reason,
                        HandoffReason::Assignment | HandoffReason::Remediation
                    ) {
                        trinity_core::credit::request_reset(&self.tree, self.now())?;
                    }
                    Step::CreditReset
                }
                Step::CreditReset => {
                    let h = self.handoff(&id)?;
                    self.restore_code(&h);
                    self.place_conversation(&h, &id);
                    let next = self.prepare_launch(&h, &record.won)?;
                    fresh_launch = matches!(next, Step::Launching { .. });
                    next
                }
                Step::Launching { launch_id } => {
                    let launch_id = launch_id.clone();
                    // Only a launch journaled by an earlier run can have a process already.
                    match (!fresh_launch).then(|| agent::find(&launch_id)).flatten() {
                        Some(pid) => {
                            tracing::info!(pid, "found the agent started before a restart");
                            Step::Launched {
                                pid: Some(pid),
                                how: "started before a restart".to_owned(),
                            }
                        }
                        None => self.launch(&self.handoff(&id)?, &record.won, launch_id, report)?,
                    }
                }
                Step::Launched { .. }
                    if record.won.is_empty() && self.handoff(&id)?.reason.is_coordinators() =>
                {
                    // Nothing was taken over: the heartbeat says what the PC really does.
                    Step::Done
                }
                Step::Launched { .. } => {
                    self.announce_accepted(&id, record.won.len())?;
                    Step::Done
                }
            };
            let name = next.as_str();
            record.step = next;
            self.journal.save_handoff(&record)?;
            failpoint::hit(&format!("wake:{name}"));
        }
    }

    /// Whether the claims written at `at` reached the remote (none to write counts), and then
    /// which were won and which lost to another PC (in the record). While they wait, the
    /// handoff is reported waiting, with a warning once past `wake.claim_timeout`.
    fn claims_settled(
        &self,
        record: &mut HandoffRecord,
        at: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<bool, WakeError> {
        let id = record.id.clone();
        let h = self.handoff(&id)?;
        if !task_ids(&h).is_empty() && !self.claims_synced(at) {
            let waited = (self.now() - at).to_std().unwrap_or_default();
            if waited > self.config.wake.claim_timeout && !record.warned_slow_sync {
                tracing::warn!(handoff = %id, waited = %trinity_core::clock::human_duration(waited), "claims have not reached the remote yet; is git-sync running?");
                record.warned_slow_sync = true;
                self.journal.save_handoff(record)?;
            }
            if !report.waiting.contains(&id) {
                report.waiting.push(id);
            }
            return Ok(false);
        }
        let (won, lost) = self.check_claims(&h);
        for task in &lost {
            tracing::warn!(handoff = %id, task = %task, "lost the claim on a task to another PC; dropping it");
        }
        record.won = won;
        record.lost = lost;
        Ok(true)
    }

    /// The heartbeat says the work was taken: a handoff accepted from another PC, or (work the
    /// leader gave its own PC) just work.
    fn announce_accepted(&self, id: &HandoffId, tasks: usize) -> Result<(), WakeError> {
        let h = self.handoff(id)?;
        let tasks = tasks as u32;
        pcfiles::update_heartbeat(&self.tree, &self.pc, self.now(), |hb| {
            hb.status = if h.from_pc == self.pc {
                HeartbeatStatus::Active
            } else {
                HeartbeatStatus::HandoffAccepted
            };
            hb.from_pc = Some(h.from_pc.clone()).filter(|p| *p != self.pc);
            hb.to_pc = None;
            hb.tasks_received = Some(tasks);
            hb.reason = Some(h.reason);
            hb.handoff = Some(id.clone());
            hb.paused_until = None;
        })?;
        tracing::info!(handoff = %id, from = %h.from_pc, tasks_received = tasks, "handoff accepted");
        Ok(())
    }

    /// The handoff's contents, from `handoff/processed/` once archived.
    pub(super) fn handoff(&self, id: &HandoffId) -> Result<Handoff, WakeError> {
        let path = self.tree.processed_handoff_file(id);
        Ok(fsio::load::<Handoff>(&path)?.value)
    }

    /// Validates the handoff file and moves it to `handoff/processed/`: the next step,
    /// [`Step::Archived`], or [`Step::Refused`] with the reason.
    pub(super) fn archive(&self, id: &HandoffId) -> Result<Step, WakeError> {
        let refuse = |reason: String| Ok(Step::Refused { reason });
        let pending = self.tree.handoff_file(id);
        let archived = self.tree.processed_handoff_file(id);
        let source = if pending.is_file() {
            pending.clone()
        } else if archived.is_file() {
            archived.clone()
        } else {
            return refuse(format!("its handoff file handoff/{id}.json does not exist"));
        };
        let fleet = self.fleet()?;
        if let Err(problem) = validate::validate_file(&self.tree, &source, Some(&fleet)) {
            if source == pending {
                fsio::quarantine(&self.tree, &pending, &problem.message, self.now())?;
            }
            return refuse(format!("its handoff file is invalid: {}", problem.message));
        }
        let h = match fsio::load_trusted::<Handoff>(&source, &self.keyring()?) {
            Ok((d, _)) => d.value,
            Err(e @ LoadError::Refused { .. }) => {
                if source == pending {
                    fsio::quarantine(&self.tree, &pending, &e.to_string(), self.now())?;
                }
                return refuse(e.to_string());
            }
            Err(e) => return refuse(e.to_string()),
        };
        if h.to_pc != self.pc {
            return refuse(format!("the handoff is for {}, not {}", h.to_pc, self.pc));
        }
        if let Some(reason) = self.deposed_leader(h.leader_epoch) {
            return refuse(reason);
        }
        // Epochs: work reassigned by the coordinator carries a newer epoch; anything older
        // than the newest seen for its tasks is stale.
        let mut epochs = self.journal.epochs()?;
        let epoch = h.epoch.unwrap_or(0);
        let tasks = task_ids(&h);
        if let Some((task, newest)) = tasks
            .iter()
            .filter_map(|t| epochs.0.get(t).map(|e| (t, *e)))
            .find(|(_, e)| *e > epoch)
        {
            return refuse(format!(
                "its epoch {epoch} is older than epoch {newest} already seen for task {task}"
            ));
        }
        // The claims before the archive: from the moment the handoff leaves `handoff/`, this
        // PC's claims say it is busy (a coordinator reading in between would see a PC with no
        // pending handoff and no claim, idle, and give it more work). Written again, as a
        // no-op, in the next step.
        self.write_claims(&h)?;
        if source == pending {
            let bytes = fsio::read_bounded(&pending, 2 * 1024 * 1024)?;
            match fsio::write_new(&archived, &bytes) {
                Ok(()) => {}
                // Archived by an earlier pass — and only then: "already exists" also comes from a
                // file standing where the `processed/` directory belongs, and the pending handoff
                // must not be removed without its copy.
                Err(e) if e.is_already_exists() && archived.is_file() => {}
                Err(e) => return Err(e.into()),
            }
            std::fs::remove_file(&pending)
                .map_err(IoError::at("remove the archived handoff", &pending))?;
        }
        for t in tasks {
            let e = epochs.0.entry(t).or_insert(epoch);
            *e = (*e).max(epoch);
        }
        self.journal.save_epochs(&epochs)?;
        Ok(Step::Archived)
    }

    /// Writes a claim for every task of the handoff that nobody else holds. A claim held by the
    /// PC handing over (or, for a reassignment, by anyone at an older epoch) is taken over.
    pub(super) fn write_claims(&self, h: &Handoff) -> Result<(), WakeError> {
        let now = self.now();
        let epoch = h.epoch.unwrap_or(0);
        for task in task_ids(h) {
            let path = self.tree.claim_file(&task);
            let ours = Claim {
                format_version: 1,
                task_id: task.clone(),
                pc: self.pc.clone(),
                claimed_at: now,
                epoch,
                handoff: h.id(),
            };
            match fsio::load::<Claim>(&path) {
                Err(e) if e.is_not_found() => match fsio::create(&path, &ours) {
                    Ok(()) => {}
                    Err(SaveError::Io(e)) if e.is_already_exists() => {}
                    Err(e) => return Err(e.into()),
                },
                Ok(doc) => {
                    let c = doc.value;
                    let takeover = c.pc == h.from_pc
                        || (h.reason == HandoffReason::Reassignment && c.epoch < epoch);
                    if c.pc == self.pc {
                        if c.epoch < epoch {
                            fsio::save(&path, &Doc::new(ours))?;
                        }
                    } else if takeover {
                        fsio::save(
                            &path,
                            &Doc::new(Claim {
                                epoch: epoch.max(c.epoch),
                                ..ours
                            }),
                        )?;
                    } else {
                        tracing::info!(task = %task, holder = %c.pc, "task already claimed by another PC");
                    }
                }
                Err(e) => {
                    tracing::warn!(task = %task, error = %e, "unreadable claim; leaving it to git-sync");
                }
            }
        }
        Ok(())
    }

    /// Checks out the code the outgoing PC pushed (current_work.code) in the agent's workdir,
    /// setting this checkout's uncommitted changes aside first. Never stops the handoff: on
    /// failure the agent starts on what this PC has. Safe to run again after a crash.
    pub(super) fn restore_code(&self, h: &Handoff) {
        let Some(work) = &h.current_work else {
            return;
        };
        let Some(snap) = &work.code else {
            return;
        };
        let Some(dir) = agent::workdir(&self.config.agent.workdir, self.config_dir.as_deref())
        else {
            tracing::info!(task = %work.task_id, "the handoff carries code, but agent.workdir is not set; not checked out");
            return;
        };
        if !snap.pushed {
            tracing::warn!(task = %work.task_id, why = snap.note.as_deref().unwrap_or(""), "the outgoing PC could not push its code; starting from what this PC has");
        }
        match trinity_core::code::restore(&dir, &work.task_id, snap, &self.pc, self.now()) {
            Ok(r) => {
                if let Some(saved) = &r.set_aside {
                    tracing::warn!(dir = %dir.display(), saved = %saved, "set this checkout's uncommitted changes aside (git log -p {saved} shows them)");
                }
                tracing::info!(task = %work.task_id, branch = %r.branch, commit = %snap.wip_commit, "checked out the code handed over");
            }
            Err(e) => {
                tracing::warn!(task = %work.task_id, error = %e, "could not check out the code handed over; starting from what this PC has");
            }
        }
    }

    /// Where Claude Code looks for the sessions of the agent's workdir on this PC.
    pub(super) fn session_file(&self, session: &str) -> Option<PathBuf> {
        if !trinity_core::code::is_session_id(session) {
            return None;
        }
        let projects = trinity_core::config::expand_home(&self.config.credit.claude_projects_dir)?;
        let workdir = agent::workdir(&self.config.agent.workdir, self.config_dir.as_deref())
            .or_else(|| std::env::current_dir().ok())?;
        let workdir = if workdir.is_absolute() {
            workdir
        } else {
            std::env::current_dir().ok()?.join(workdir)
        };
        Some(
            trinity_core::code::claude_project_dir(&projects, &workdir)
                .join(format!("{session}.jsonl")),
        )
    }

    /// Puts the conversation carried with the handoff where Claude Code looks for the session
    /// (never over a file already there) and removes it from the tree. An encrypted one
    /// (`conversations/{id}.age`) is placed only when it is the file the signed handoff names
    /// and decrypts with this PC's key; one in the clear only where this PC does not check
    /// signatures (nothing vouches for it otherwise).
    pub(super) fn place_conversation(&self, h: &Handoff, id: &HandoffId) {
        let sealed = self.tree.sealed_conversation_file(id);
        let clear = self.tree.conversation_file(id);
        let limit = trinity_core::validate::MAX_CONVERSATION_BYTES + 64 * 1024;
        let work = h.current_work.as_ref();
        let bytes: Option<Result<Vec<u8>, String>> = if sealed.is_file() {
            Some(match work.and_then(|w| w.conversation_sha256.as_deref()) {
                Some(sha) => trinity_core::seal::open_file(&self.tree, &sealed, sha, limit)
                    .map_err(|e| e.to_string()),
                None => Err("the handoff names no conversation".to_owned()),
            })
        } else if clear.is_file() {
            Some(match self.keyring() {
                Ok(k) if !k.enabled() => {
                    fsio::read_bounded(&clear, limit).map_err(|e| e.to_string())
                }
                _ => Err(
                    "a conversation in the clear is not placed where files are signed".to_owned(),
                ),
            })
        } else {
            None
        };
        let Some(bytes) = bytes else {
            return;
        };
        let session = work.and_then(|w| w.session.as_deref());
        if let Some(dest) = session.and_then(|s| self.session_file(s)) {
            if dest.exists() {
                tracing::info!(file = %dest.display(), "the conversation is already here");
            } else {
                let placed = bytes.and_then(|bytes| {
                    if let Some(dir) = dest.parent() {
                        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                    }
                    fsio::write_atomic(&dest, &bytes).map_err(|e| e.to_string())
                });
                match placed {
                    Ok(()) => {
                        tracing::info!(file = %dest.display(), "placed the conversation handed over")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot place the conversation; the agent starts a new one")
                    }
                }
            }
        }
        for carried in [sealed, clear] {
            if let Err(e) = std::fs::remove_file(&carried)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(error = %e, file = %carried.display(), "cannot remove the carried conversation");
            }
        }
    }

    /// Whether claims written at `at` have reached the remote (at once without git).
    pub(super) fn claims_synced(&self, at: DateTime<Utc>) -> bool {
        match self.config.sync.mode {
            SyncMode::None => true,
            SyncMode::Git => SyncState::load(&self.tree).is_some_and(|s| s.has_reached_remote(at)),
        }
    }

    /// The tasks whose claims are ours after syncing, and those another PC holds.
    pub(super) fn check_claims(&self, h: &Handoff) -> (Vec<TaskId>, Vec<TaskId>) {
        let mut won = Vec::new();
        let mut lost = Vec::new();
        for task in task_ids(h) {
            match fsio::load::<Claim>(&self.tree.claim_file(&task)) {
                Ok(c) if c.value.pc == self.pc => won.push(task),
                _ => lost.push(task),
            }
        }
        (won, lost)
    }

    /// `instances/{PC}.json` ACTIVE with the handoff's work.
    pub(super) fn activate(&self, h: &Handoff, won: &[TaskId]) -> Result<(), WakeError> {
        let now = self.now();
        let current_work = h.current_work.clone().filter(|w| won.contains(&w.task_id));
        if won.is_empty() && current_work.is_none() {
            tracing::info!(handoff = ?h.id(), "the handoff carried no work this PC holds; instance state unchanged");
            return Ok(());
        }
        let id = h.id();
        let target = if h.reason == HandoffReason::Remediation {
            InstanceState::Remediation
        } else {
            InstanceState::Active
        };
        pcfiles::update_instance(&self.tree, &self.pc, now, |current| {
            let from = current.map_or(InstanceState::Standby, |c| c.state);
            if let Some(path) = state::path(from, target)
                && path.len() > 1
            {
                let steps: Vec<&str> = path.iter().map(|s| s.as_str()).collect();
                tracing::info!(from = %from, via = %steps.join(" → "), "new work: the previous handoff is complete");
            }
            let mut claimed: BTreeSet<TaskId> = current
                .filter(|c| c.state == InstanceState::Active)
                .map(|c| c.claimed_tasks.iter().cloned().collect())
                .unwrap_or_default();
            claimed.extend(won.iter().cloned());
            Some(InstanceStatus {
                format_version: 1,
                pc: self.pc.clone(),
                state: target,
                since: now,
                current_work: current_work
                    .or_else(|| current.and_then(|c| c.current_work.clone()))
                    .or_else(|| {
                        // Nothing in progress: the first task received is the current work.
                        won.first()
                            .map(|t| trinity_core::schema::CurrentWork::new(t.clone()))
                    }),
                claimed_tasks: claimed.into_iter().collect(),
                handoff: id.clone(),
                epoch: current.map_or(0, |c| c.epoch).max(h.epoch.unwrap_or(0)),
            })
        })?;
        Ok(())
    }
}

/// The handoff's tasks: its queue, and its current work's task if the queue lacks it.
fn task_ids(h: &Handoff) -> Vec<TaskId> {
    let mut ids: Vec<TaskId> = Vec::new();
    if let Some(w) = &h.current_work {
        ids.push(w.task_id.clone());
    }
    for t in &h.task_queue {
        if !ids.contains(&t.id) {
            ids.push(t.id.clone());
        }
    }
    ids
}
