//! What the leader did in a cycle, typed. Its words — the leader's log lines, `coordinator
//! --once`, the fleet status's last action — come from `Display`.

use std::fmt;

use trinity_core::schema::{Priority, Verdict};
use trinity_core::{HandoffId, PcId, TaskId};

/// One thing the leader did.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Gave a queued task to a PC on standby.
    Assigned {
        /// The task.
        task: TaskId,
        /// Its priority.
        priority: Priority,
        /// The PC.
        to: PcId,
        /// The assignment handoff.
        handoff: HandoffId,
    },
    /// Started verifying finished work.
    Verifying {
        /// The submission.
        handoff: HandoffId,
        /// How many phases run.
        phases: usize,
    },
    /// Finished verifying.
    Verified {
        /// The submission.
        handoff: HandoffId,
        /// The verdict.
        verdict: Verdict,
        /// Why.
        reasons: Vec<String>,
    },
    /// Told the PC that submitted the work its verdict.
    Told {
        /// The PC.
        to: PcId,
        /// The submission.
        handoff: HandoffId,
        /// The verdict.
        verdict: Verdict,
        /// On DENY: what became of the fix.
        fix: Fix,
    },
    /// Woke a PC that went silent.
    Woke {
        /// The PC.
        pc: PcId,
        /// For how long it was silent, for people.
        silent: String,
    },
    /// Declared a PC dead.
    Dead {
        /// The PC.
        pc: PcId,
        /// For how long it was silent, for people.
        silent: String,
        /// What became of its work.
        work: DeadWork,
    },
}

/// What became of the fix of work denied by verification.
#[derive(Debug, Clone, PartialEq)]
pub enum Fix {
    /// Not a DENY: nothing to fix.
    None,
    /// The submission named no task.
    NoTask,
    /// A remediation was already asked for.
    AlreadyAsked,
    /// The task went back to the PC in a remediation handoff.
    SentBack {
        /// The task.
        task: TaskId,
        /// The remediation handoff.
        remediation: HandoffId,
    },
}

/// What became of a dead PC's work.
#[derive(Debug, Clone, PartialEq)]
pub enum DeadWork {
    /// It held none.
    Nothing,
    /// Reassigned to a live PC.
    Reassigned {
        /// The tasks.
        tasks: Vec<TaskId>,
        /// The PC.
        to: PcId,
    },
    /// Nobody could take it: escalated.
    Escalated,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Assigned {
                task,
                priority,
                to,
                handoff,
            } => write!(
                f,
                "assigned {task} ({} priority) to {to} ({handoff})",
                priority.as_str()
            ),
            Action::Verifying { handoff, phases } => {
                write!(f, "verifying {handoff} ({phases} phase(s))")
            }
            Action::Verified {
                handoff,
                verdict,
                reasons,
            } => write!(f, "verified {handoff}: {verdict} — {}", reasons.join("; ")),
            Action::Told {
                to,
                handoff,
                verdict,
                fix,
            } => {
                write!(f, "told {to} the verdict on {handoff}: {verdict}")?;
                match fix {
                    Fix::None => Ok(()),
                    Fix::NoTask => f.write_str(" (no task to fix)"),
                    Fix::AlreadyAsked => f.write_str(" (the fix was already asked for)"),
                    Fix::SentBack { task, remediation } => {
                        write!(f, "; the fix of {task} goes back to it ({remediation})")
                    }
                }
            }
            Action::Woke { pc, silent } => write!(
                f,
                "{pc} is SUSPECT (silent for {silent}): sent a reactivation wake"
            ),
            Action::Dead { pc, silent, work } => match work {
                DeadWork::Nothing => {
                    write!(f, "{pc} is DEAD (silent for {silent}); it held no work")
                }
                DeadWork::Reassigned { tasks, to } => write!(
                    f,
                    "{pc} is DEAD (silent for {silent}): reassigned {} to {to}",
                    tasks
                        .iter()
                        .map(TaskId::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                DeadWork::Escalated => {
                    write!(f, "{pc} is DEAD: nobody can take its work; escalated")
                }
            },
        }
    }
}
