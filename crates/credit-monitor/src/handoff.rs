//! Writing the outgoing handoff: the handoff file, the wake signal for the next PC, the
//! heartbeat `handoff_initiated`, the instance state HANDOFF_READY, then the pause.
//!
//! The plan (the handoff and the signal, fully built) is saved in `local/credit/state.json`
//! before the first file is written, and each step is idempotent, so a crash anywhere is
//! finished by the next run and never produces a second handoff.

use std::collections::BTreeSet;

use chrono::{DateTime, Timelike, Utc};
use trinity_core::config::Config;
use trinity_core::credit::Evaluation;
use trinity_core::fsio::{self, SaveError};
use trinity_core::queue::{QueueView, TaskState};
use trinity_core::rotation::Choice;
use trinity_core::schema::{
    CreditSnapshot, Escalation, EscalationKind, Handoff, HandoffReason, HeartbeatStatus,
    InstanceStatus, Schema, Task, TaskRef, WakeSignal, WakeTask,
};
use trinity_core::trust::Keyring;
use trinity_core::{InstanceState, PcId, RecordId, SignalId, TaskId, Tree, pcfiles, state};

use crate::state::{
    self as trigger, Action, HandoffStep, MonitorError, PendingHandoff, TriggerState,
};

/// The PC whose handoff is written: its tree, its name and its configuration.
#[derive(Debug, Clone, Copy)]
pub struct Station<'a> {
    /// The state tree.
    pub tree: &'a Tree,
    /// This PC.
    pub pc: &'a PcId,
    /// Its configuration.
    pub config: &'a Config,
}

/// Decides and writes a handoff for this exhaustion (or an escalation when nobody can take
/// over). The caller holds the credit lock and saves `state` afterwards.
pub(crate) fn start(
    m: &Station<'_>,
    state: &mut TriggerState,
    evaluation: &Evaluation,
    choice: &Choice,
    reason: HandoffReason,
    now: DateTime<Utc>,
) -> Result<Action, MonitorError> {
    // Whole seconds: the handoff's file name carries its timestamp to the second.
    let now = now.with_nanosecond(0).unwrap_or(now);
    let Some(to) = choice.next.clone() else {
        return no_target(m, state, evaluation, choice, now);
    };
    if !choice.skipped.is_empty() {
        tracing::info!(skipped = %choice.skipped_text(), "passed over PCs that cannot take over");
    }
    if choice.next_unknown {
        tracing::warn!(pc = %to, "handing off to a PC that has never sent a heartbeat");
    }
    let instance = fsio::load::<InstanceStatus>(&m.tree.instance_file(m.pc))
        .ok()
        .map(|d| d.value);
    let mut current_work = instance.as_ref().and_then(|i| i.current_work.clone());
    let mut carry = None;
    if let Some(work) = current_work.as_mut() {
        work.code = snapshot_code(m, &work.task_id);
        work.conversation_sha256 = None;
        carry = conversation_to_carry(m, work.session.as_deref());
    }
    let task_queue = task_queue(
        m.tree,
        m.pc,
        m.config,
        current_work.as_ref().map(|w| &w.task_id),
    );
    let mut handoff = Handoff {
        format_version: Handoff::FORMAT_VERSION,
        from_pc: m.pc.clone(),
        to_pc: to.clone(),
        timestamp: now,
        reason,
        task_queue,
        current_work,
        credit_state: Some(CreditSnapshot {
            rate_limit_count: evaluation.rate_limit_count,
            error_rate: evaluation.error_rate,
            avg_response_time: evaluation.avg_response_time,
            level: Some(evaluation.level),
            rule: evaluation.rule.map(str::to_owned),
        }),
        epoch: None,
        authored_by: None,
        leader_epoch: None,
    };
    let id = handoff.id().ok_or(MonitorError::PendingWithoutId)?;
    let mut conversation = None;
    if let (Some((session, source)), Some(work)) = (carry, handoff.current_work.as_mut()) {
        match seal_conversation(m, &to, &source, &id, now) {
            Ok(sha256) => {
                work.session = Some(session);
                work.conversation_sha256 = Some(sha256);
                conversation = Some(m.tree.outbox_file(&id));
            }
            Err(e) => {
                tracing::warn!(error = %e, "the conversation stays on this PC; the next PC starts a new one from the handoff")
            }
        }
    }
    let signal = WakeSignal {
        format_version: WakeSignal::FORMAT_VERSION,
        id: SignalId::generate(m.pc, now, WakeTask::CreditHandoff.as_str()),
        from_pc: m.pc.clone(),
        to_pc: to.clone(),
        timestamp: now,
        task: WakeTask::CreditHandoff.as_str().to_owned(),
        message: format!(
            "Taking over from {} due to {}: {}",
            m.pc,
            reason.describe(),
            evaluation.reason
        )
        .chars()
        .take(trinity_core::schema::MAX_WAKE_MESSAGE_CHARS)
        .collect(),
        handoff: Some(id.clone()),
        expires_at: None,
        epoch: None,
        leader_epoch: None,
    };
    let pause = chrono::Duration::from_std(m.config.credit.pause).unwrap_or_default();
    state.armed = false;
    state.escalated = false;
    state.no_target_until = None;
    state.last_handoff = Some(id.clone());
    state.paused_until = Some(now + pause);
    state.pending = Some(PendingHandoff {
        handoff,
        signal,
        done: HandoffStep::Planned,
        conversation,
    });
    // The plan is on disk before the first file of the tree is written.
    trigger::save(m.tree, state)?;
    finish(m, state, now)?;
    Ok(Action::HandedOff { handoff: id, to })
}

/// The agent's code in progress, when `agent.workdir` is a git repository: committed aside and
/// pushed to the project's remote, so the next PC continues from it. Never stops the handoff.
fn snapshot_code(
    m: &Station<'_>,
    task: &trinity_core::TaskId,
) -> Option<trinity_core::schema::CodeSnapshot> {
    let workdir = m.config.agent.workdir.trim();
    if workdir.is_empty() {
        return None;
    }
    match trinity_core::code::snapshot(
        std::path::Path::new(workdir),
        task,
        m.pc,
        &m.config.work.remote,
    ) {
        Ok(snap) => {
            if snap.pushed {
                tracing::info!(task = %task, commit = %snap.wip_commit, to = %snap.wip_ref, repository = %snap.repository, "the agent's code goes with the handoff");
            } else {
                tracing::warn!(task = %task, commit = %snap.wip_commit, why = snap.note.as_deref().unwrap_or(""), "the agent's code could not be pushed; the next PC starts from what it has");
            }
            Some(snap)
        }
        Err(e) => {
            tracing::warn!(task = %task, error = %e, "the agent's code stays on this PC");
            None
        }
    }
}

/// The agent's Claude Code session to carry, when `work.carry_conversation` is on, the agent
/// is Claude Code and its workdir has a session: (session id, transcript). A transcript over
/// `work.conversation_max_bytes` stays behind.
fn conversation_to_carry(
    m: &Station<'_>,
    known: Option<&str>,
) -> Option<(String, std::path::PathBuf)> {
    let work = &m.config.work;
    let workdir = m.config.agent.workdir.trim();
    if !work.carry_conversation
        || workdir.is_empty()
        || !trinity_core::code::is_claude(&m.config.agent.command)
    {
        return None;
    }
    let projects = crate::transcripts::expand_home(&m.config.credit.claude_projects_dir)?;
    let dir = trinity_core::code::claude_project_dir(&projects, std::path::Path::new(workdir));
    // The session the agent's Stop hook recorded (`trinity agent checkpoint`), else the newest.
    let recorded = known
        .filter(|s| trinity_core::code::is_session_id(s))
        .map(|s| (s.to_owned(), dir.join(format!("{s}.jsonl"))))
        .filter(|(_, p)| p.is_file());
    let (session, path) = recorded.or_else(|| trinity_core::code::newest_session(&dir))?;
    let size = std::fs::metadata(&path)
        .map(|m| m.len())
        .unwrap_or(u64::MAX);
    if size > work.conversation_max_bytes {
        tracing::warn!(session = %session, size, limit = work.conversation_max_bytes, "the conversation is larger than work.conversation_max_bytes; it stays on this PC");
        return None;
    }
    Some((session, path))
}

/// Encrypts the transcript to `to` (its recipient, signed with a key this PC trusts) into
/// `local/credit/outbox/{id}.age`; returns the ciphertext's SHA-256 for the signed handoff.
/// Nothing is carried in the clear: a receiver without a believed recipient gets none.
fn seal_conversation(
    m: &Station<'_>,
    to: &PcId,
    source: &std::path::Path,
    id: &trinity_core::HandoffId,
    now: DateTime<Utc>,
) -> Result<String, trinity_core::seal::SealError> {
    let keyring = Keyring::open_or_closed(m.tree, m.config.security.require_signatures, now);
    let recipient = trinity_core::seal::recipient_of(m.tree, &keyring, to)?;
    let limit = usize::try_from(m.config.work.conversation_max_bytes).unwrap_or(usize::MAX);
    let plaintext = fsio::read_bounded(source, limit)?;
    let sealed = trinity_core::seal::encrypt(&recipient, &plaintext)?;
    fsio::write_atomic(&m.tree.outbox_file(id), &sealed)?;
    Ok(trinity_core::seal::sha256_hex(&sealed))
}

/// Copies the encrypted transcript into the tree before the handoff file, so the next PC
/// finds both.
fn carry_conversation(m: &Station<'_>, sealed: &std::path::Path, id: &trinity_core::HandoffId) {
    let target = m.tree.sealed_conversation_file(id);
    match std::fs::read(sealed) {
        Ok(bytes) => match fsio::write_new(&target, &bytes) {
            Ok(()) => {
                tracing::info!(bytes = bytes.len(), file = %target.display(), "the conversation goes with the handoff, encrypted to its receiver");
                let _ = std::fs::remove_file(sealed);
            }
            Err(e) if e.is_already_exists() => {}
            Err(e) => tracing::warn!(error = %e, "cannot carry the conversation"),
        },
        Err(_) if target.is_file() => {}
        Err(e) => {
            tracing::warn!(error = %e, source = %sealed.display(), "cannot read the conversation")
        }
    }
}

fn tolerate_existing(result: Result<(), SaveError>) -> Result<(), MonitorError> {
    match result {
        Ok(()) => Ok(()),
        Err(SaveError::Io(e)) if e.is_already_exists() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes whatever steps of the pending handoff are not done yet.
pub(crate) fn finish(
    m: &Station<'_>,
    state: &mut TriggerState,
    now: DateTime<Utc>,
) -> Result<(), MonitorError> {
    let Some(mut pending) = state.pending.clone() else {
        return Ok(());
    };
    let h = pending.handoff.clone();
    let signal = pending.signal.clone();
    let Some(id) = h.id() else {
        state.pending = None;
        return Err(MonitorError::PendingWithoutId);
    };
    let paused_until = state.paused_until;
    let conversation = pending.conversation.clone();
    let mut step = |n: HandoffStep,
                    state: &mut TriggerState,
                    f: &mut dyn FnMut() -> Result<(), MonitorError>|
     -> Result<(), MonitorError> {
        if pending.done < n {
            f()?;
            pending.done = n;
            state.pending = Some(pending.clone());
            trigger::save(m.tree, state)?;
        }
        Ok(())
    };
    step(HandoffStep::HandoffFile, state, &mut || {
        if let Some(source) = &conversation {
            carry_conversation(m, source, &id);
        }
        tolerate_existing(fsio::create(&m.tree.handoff_file(&id), &h))
    })?;
    step(HandoffStep::WakeSignal, state, &mut || {
        tolerate_existing(fsio::create(
            &m.tree.wake_file(&signal.to_pc, &signal.id),
            &signal,
        ))
    })?;
    step(HandoffStep::Heartbeat, state, &mut || {
        pcfiles::update_heartbeat(m.tree, m.pc, now, |hb| {
            hb.status = HeartbeatStatus::HandoffInitiated;
            hb.to_pc = Some(h.to_pc.clone());
            hb.from_pc = None;
            hb.tasks_received = None;
            hb.reason = Some(h.reason);
            hb.handoff = Some(id.clone());
            hb.paused_until = paused_until;
        })
        .map(|_| ())
        .map_err(MonitorError::from)
    })?;
    step(HandoffStep::InstanceState, state, &mut || {
        pcfiles::update_instance(m.tree, m.pc, now, |current| {
            let current = current?;
            let from = current.state;
            if state::transition(from, InstanceState::HandoffReady).is_err() {
                tracing::info!(state = %from, "instance state left as it is (no work in progress to hand over)");
                return None;
            }
            let mut next = current.clone();
            next.state = InstanceState::HandoffReady;
            next.since = now;
            next.handoff = Some(id.clone());
            Some(next)
        })
        .map(|_| ())
        .map_err(MonitorError::from)
    })?;
    tracing::info!(
        handoff = %id,
        from = %h.from_pc,
        to = %h.to_pc,
        reason = h.reason.describe(),
        tasks = h.task_queue.len(),
        "handoff: {} → {} ({})",
        h.from_pc,
        h.to_pc,
        h.reason.describe()
    );
    state.pending = None;
    trigger::save(m.tree, state)?;
    Ok(())
}

/// Every PC is out of credit or unavailable: write an escalation (once per exhaustion), wake
/// nobody, and wait until the earliest moment one might take over.
fn no_target(
    m: &Station<'_>,
    state: &mut TriggerState,
    evaluation: &Evaluation,
    choice: &Choice,
    now: DateTime<Utc>,
) -> Result<Action, MonitorError> {
    let pause = chrono::Duration::from_std(m.config.credit.pause).unwrap_or_default();
    let mine = evaluation.exhausted_until;
    let retry_at = choice
        .retry_at
        .into_iter()
        .chain(mine)
        .filter(|t| *t > now)
        .min()
        .unwrap_or(now + pause);
    let skipped = choice.skipped_text();
    if !state.escalated {
        let id = RecordId::new(format!(
            "{}-all-exhausted-{}",
            trinity_core::ids::file_timestamp(now),
            m.pc
        ))?;
        let escalation = Escalation {
            format_version: Escalation::FORMAT_VERSION,
            id: id.clone(),
            created_at: now,
            created_by: m.pc.clone(),
            kind: EscalationKind::AllExhausted,
            summary: format!(
                "{} is out of credit ({}) and no PC can take over; nobody was woken",
                m.pc, evaluation.reason
            ),
            handoff: None,
            paths: Vec::new(),
            details: Some(format!(
                "{skipped}. {} tries again at {}.",
                m.pc,
                retry_at.to_rfc3339()
            )),
        };
        tolerate_existing(fsio::create(&m.tree.escalation_file(&id), &escalation))?;
        pcfiles::update_heartbeat(m.tree, m.pc, now, |hb| {
            hb.status = HeartbeatStatus::Exhausted;
        })?;
        tracing::warn!(escalation = %id, %skipped, retry_at = %retry_at.to_rfc3339(), "out of credit and no PC can take over; escalated");
        state.escalated = true;
    }
    state.no_target_until = Some(retry_at);
    Ok(Action::NoTarget { skipped, retry_at })
}

/// This PC's claimed-but-unfinished tasks (the current one first), then the tasks ready to be
/// taken (unclaimed, their dependencies done) in the order work is taken. Tasks still blocked
/// by a dependency are not carried: no PC can work on them yet, and the PC taking over would
/// otherwise claim them away from everyone else.
pub fn task_queue(
    tree: &Tree,
    pc: &PcId,
    config: &Config,
    current: Option<&TaskId>,
) -> Vec<TaskRef> {
    let keyring = Keyring::open_or_closed(tree, config.security.require_signatures, Utc::now());
    let view = QueueView::read(tree, &keyring);
    for problem in &view.refused {
        tracing::warn!(error = %problem, "leaving out a task file whose signature is not believed");
    }
    for problem in &view.unreadable {
        tracing::warn!(error = %problem, "skipping an unreadable file");
    }
    let task_ref = |t: &Task| TaskRef {
        id: t.id.clone(),
        priority: t.priority,
        description: t.description.clone(),
    };
    let describe = |id: &TaskId| {
        view.tasks.get(id).map_or_else(
            || TaskRef {
                id: id.clone(),
                priority: Default::default(),
                description: String::new(),
            },
            task_ref,
        )
    };
    let unfinished = |id: &TaskId| !view.done.contains_key(id);
    let mut queue: Vec<TaskRef> = current
        .filter(|t| unfinished(t))
        .map(describe)
        .into_iter()
        .collect();
    let mine: BTreeSet<&TaskId> = view
        .claims
        .values()
        .filter(|c| &c.pc == pc && unfinished(&c.task_id) && Some(&c.task_id) != current)
        .map(|c| &c.task_id)
        .collect();
    queue.extend(mine.into_iter().map(describe));
    let carried: BTreeSet<TaskId> = queue.iter().map(|t| t.id.clone()).collect();
    queue.extend(
        view.listing()
            .into_iter()
            .filter(|(t, s)| *s == TaskState::Queued && !carried.contains(&t.id))
            .map(|(t, _)| task_ref(t)),
    );
    queue
}

/// After the next PC accepted this PC's handoff (archived it into `handoff/processed/`), this
/// PC's part is over: HANDOFF_READY → HANDOFF_COMPLETE → STANDBY. Returns whether it moved.
pub fn settle_outgoing(m: &Station<'_>, now: DateTime<Utc>) -> Result<bool, MonitorError> {
    let Ok(doc) = trinity_core::fsio::load::<InstanceStatus>(&m.tree.instance_file(m.pc)) else {
        return Ok(false);
    };
    let inst = doc.value;
    let Some(id) = inst.handoff.clone() else {
        return Ok(false);
    };
    if inst.state != InstanceState::HandoffReady
        || id.from_pc() != m.pc
        || id.to_pc() == m.pc
        || m.tree.handoff_file(&id).exists()
        || !m.tree.processed_handoff_file(&id).exists()
    {
        return Ok(false);
    }
    let mut moved = false;
    pcfiles::update_instance(m.tree, m.pc, now, |current| {
        let current = current?;
        if current.state != InstanceState::HandoffReady || current.handoff.as_ref() != Some(&id) {
            return None;
        }
        moved = true;
        Some(InstanceStatus {
            state: InstanceState::Standby,
            since: now,
            current_work: None,
            claimed_tasks: Vec::new(),
            ..current.clone()
        })
    })?;
    if moved {
        tracing::info!(handoff = %id, to = %id.to_pc(), "the next PC took the work over: HANDOFF_READY → HANDOFF_COMPLETE → STANDBY");
    }
    Ok(moved)
}
