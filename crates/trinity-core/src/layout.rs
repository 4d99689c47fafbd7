//! The `.trinity/` tree: every path, and the class of every path.
//!
//! Daemons ask a [`Tree`] for paths (`tree.handoff_file(&id)`) and never build them by hand.
//! [`Tree::classify`] maps any path back to its [`FileKind`] and [`PathClass`]; git-sync's merge
//! rules and `trinity validate` are driven by it. A path that fits no class is an error: the
//! layout has no room for files nobody owns.
//!
//! This module reads no environment and prints nothing.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::ids::{DaemonName, HandoffId, IdError, PcId, RecordId, SignalId, TaskId};

/// Who may write a path, and so how git-sync merges it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathClass {
    /// Written only by this PC: in a merge, the owner's version wins.
    Owned(PcId),
    /// Written only by the current coordinator leader: in a merge, the version with the higher
    /// lease epoch wins (the leader's).
    Leader,
    /// Created once under a unique name, never modified; only `consumer` may archive or delete
    /// it. In a merge both sides agree, or the consumer's archive/delete wins.
    Immutable {
        /// Who may archive or delete it.
        consumer: Consumer,
    },
    /// Several PCs may create it at once; the version that reached the remote first wins.
    CompareAndSwap,
    /// Never synced (git-ignored): per-machine state and logs.
    Local,
}

impl fmt::Display for PathClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathClass::Owned(pc) => write!(f, "owned by {pc}"),
            PathClass::Leader => f.write_str("owned by the coordinator leader"),
            PathClass::Immutable { consumer } => write!(f, "immutable, consumed by {consumer}"),
            PathClass::CompareAndSwap => f.write_str("compare-and-swap"),
            PathClass::Local => f.write_str("local, not synced"),
        }
    }
}

/// Who may archive or delete an immutable file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Consumer {
    /// That PC.
    Pc(PcId),
    /// The coordinator leader.
    Leader,
    /// Nobody: kept for good.
    Nobody,
}

impl fmt::Display for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Consumer::Pc(pc) => write!(f, "{pc}"),
            Consumer::Leader => f.write_str("the coordinator leader"),
            Consumer::Nobody => f.write_str("nobody"),
        }
    }
}

/// What a path of the tree holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `fleet.toml`.
    Fleet,
    /// `.gitignore` at the root.
    GitIgnore,
    /// `heartbeat/{PC}.json`.
    Heartbeat(PcId),
    /// `credit/{PC}.json`.
    Credit(PcId),
    /// `instances/{PC}.json`.
    Instance(PcId),
    /// `handoff/{id}.json`, waiting for its receiver.
    Handoff(HandoffId),
    /// `handoff/processed/{id}.json`, archived by its receiver.
    ProcessedHandoff(HandoffId),
    /// `conversations/{handoff-id}.jsonl`: the agent's conversation carried with a handoff, in
    /// the clear (a fleet that does not sign).
    Conversation(HandoffId),
    /// `conversations/{handoff-id}.age`: the same, encrypted to the receiver.
    SealedConversation(HandoffId),
    /// `recipients/{PC}.json`: the key a PC's carried conversations are encrypted to.
    Recipient(PcId),
    /// `wake/{TO}/{id}.json`.
    Wake(PcId, SignalId),
    /// `spawn_queue/{id}.json`.
    Task(TaskId),
    /// `claims/{id}.json`.
    Claim(TaskId),
    /// `done/{id}.json`.
    Done(TaskId),
    /// `coordinator/lease.json`.
    Lease,
    /// `status/multi-instance-status.json`.
    MultiStatus,
    /// `verification/{handoff-id}.json`.
    Verification(HandoffId),
    /// `dashboards/credit_status.json`.
    CreditDashboard,
    /// `dashboards/CREDIT_DASHBOARD.html`.
    DashboardHtml,
    /// `dashboards/timeline.json`.
    Timeline,
    /// `escalations/{id}.json`.
    Escalation(RecordId),
    /// `keys/{PC}.json`: a PC's public key, signed by the member that approved it.
    Key(PcId),
    /// `revoked/{PC}-{fingerprint}-{BY}.json`: a key revoked by PC `BY`.
    Revocation(RecordId),
    /// `postmortems/{id}.md`.
    Postmortem(RecordId),
    /// `reports/{id}.md`, `reports/{id}.json` or `reports/instance-logs/{PC}-{YYYYMMDD}.md`.
    Report(RecordId),
    /// Anything under `local/` or `logs/`, or a temporary file of an atomic write.
    Local,
}

impl FileKind {
    /// The path class of this kind of file.
    pub fn class(&self) -> PathClass {
        match self {
            FileKind::Fleet
            | FileKind::GitIgnore
            | FileKind::Claim(_)
            | FileKind::Lease
            | FileKind::Key(_) => PathClass::CompareAndSwap,
            FileKind::Heartbeat(pc)
            | FileKind::Credit(pc)
            | FileKind::Instance(pc)
            | FileKind::Recipient(pc) => PathClass::Owned(pc.clone()),
            FileKind::Handoff(id)
            | FileKind::Conversation(id)
            | FileKind::SealedConversation(id) => PathClass::Immutable {
                consumer: Consumer::Pc(id.to_pc().clone()),
            },
            FileKind::Wake(to, _) => PathClass::Immutable {
                consumer: Consumer::Pc(to.clone()),
            },
            FileKind::ProcessedHandoff(_) | FileKind::Done(_) | FileKind::Escalation(_) => {
                PathClass::Immutable {
                    consumer: Consumer::Leader,
                }
            }
            FileKind::Task(_) => PathClass::Immutable {
                consumer: Consumer::Leader,
            },
            FileKind::Postmortem(_) | FileKind::Revocation(_) => PathClass::Immutable {
                consumer: Consumer::Nobody,
            },
            FileKind::MultiStatus
            | FileKind::Verification(_)
            | FileKind::CreditDashboard
            | FileKind::DashboardHtml
            | FileKind::Timeline
            | FileKind::Report(_) => PathClass::Leader,
            FileKind::Local => PathClass::Local,
        }
    }

    /// A short name for messages: "heartbeat", "handoff", …
    pub fn name(&self) -> &'static str {
        match self {
            FileKind::Fleet => "fleet",
            FileKind::GitIgnore => "gitignore",
            FileKind::Heartbeat(_) => "heartbeat",
            FileKind::Credit(_) => "credit status",
            FileKind::Instance(_) => "instance status",
            FileKind::Handoff(_) => "handoff",
            FileKind::Conversation(_) => "conversation",
            FileKind::SealedConversation(_) => "encrypted conversation",
            FileKind::Recipient(_) => "recipient",
            FileKind::ProcessedHandoff(_) => "processed handoff",
            FileKind::Wake(..) => "wake signal",
            FileKind::Task(_) => "task",
            FileKind::Claim(_) => "claim",
            FileKind::Done(_) => "done record",
            FileKind::Lease => "coordinator lease",
            FileKind::MultiStatus => "multi-instance status",
            FileKind::Verification(_) => "verification result",
            FileKind::CreditDashboard => "credit dashboard",
            FileKind::DashboardHtml => "dashboard page",
            FileKind::Timeline => "timeline",
            FileKind::Escalation(_) => "escalation",
            FileKind::Key(_) => "key",
            FileKind::Revocation(_) => "revocation",
            FileKind::Postmortem(_) => "post-mortem",
            FileKind::Report(_) => "report",
            FileKind::Local => "local file",
        }
    }
}

/// A path the layout has no place for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Outside the tree's root.
    #[error("{path} is outside the state tree {root}")]
    Outside {
        /// The path.
        path: PathBuf,
        /// The tree's root.
        root: PathBuf,
    },
    /// Inside the tree, but in no path class.
    #[error("{path} has no place in the state tree layout: {why}")]
    Unknown {
        /// The path, relative to the root, with `/` separators.
        path: String,
        /// What was expected there.
        why: String,
    },
}

/// Where the temporary files of atomic writes start: `.{name}.{pid}.{n}.tmp`.
pub const TEMP_SUFFIX: &str = ".tmp";

/// The directories at a tree's root that are never synced: git's own, and this machine's.
pub const UNSYNCED_DIRS: &[&str] = &[".git", "local", "logs"];

/// Whether a path relative to the tree's root (`/`-separated) is synced: not the root itself,
/// not under [`UNSYNCED_DIRS`], not an atomic write's temporary file. The one answer used by
/// classification, the validators' walk and git-sync's watcher.
pub fn is_synced(rel: &str) -> bool {
    let first = rel.split('/').next().unwrap_or_default();
    // Temporary files are git-ignored (`*.tmp`, see [`GITIGNORE`]), whatever their name.
    let temp = rel.ends_with(TEMP_SUFFIX);
    !(rel.is_empty() || UNSYNCED_DIRS.contains(&first) || temp)
}

/// A daemon's log file in the directory of logs `dir`: `{daemon}.log` (`n` = 0, the current
/// one) or `{daemon}.{n}.log` (the `n`-th older one). The one naming rule for logs, used by
/// [`Tree::log_file`] and the rolling writer.
pub fn log_file_in(dir: &Path, daemon: &DaemonName, n: u32) -> PathBuf {
    if n == 0 {
        dir.join(format!("{daemon}.log"))
    } else {
        dir.join(format!("{daemon}.{n}.log"))
    }
}

/// The fleet's file at the tree's root: `fleet.toml`.
pub const FLEET_FILE: &str = "fleet.toml";

/// The tree's `.gitignore`, at its root.
pub const GITIGNORE_FILE: &str = ".gitignore";

/// The directories synced to every PC, in the order `trinity status` reads them.
pub const SYNCED_DIRS: &[&str] = &[
    "heartbeat",
    "credit",
    "instances",
    "handoff",
    "conversations",
    "wake",
    "spawn_queue",
    "claims",
    "done",
    "coordinator",
    "status",
    "verification",
    "dashboards",
    "escalations",
    "postmortems",
    "reports",
    "keys",
    "revoked",
    "recipients",
];

/// The `.gitignore` every tree carries.
pub const GITIGNORE: &str = "# Per-machine state and logs are never synced.\n/local/\n/logs/\n# Temporary files of atomic writes.\n*.tmp\n";

/// The `.trinity/` tree rooted at one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    root: PathBuf,
}

impl Tree {
    /// The tree at `root` (nothing is read or created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `fleet.toml`.
    pub fn fleet_file(&self) -> PathBuf {
        self.root.join(FLEET_FILE)
    }

    /// `.gitignore`.
    pub fn gitignore_file(&self) -> PathBuf {
        self.root.join(GITIGNORE_FILE)
    }

    /// `heartbeat/`.
    pub fn heartbeat_dir(&self) -> PathBuf {
        self.root.join("heartbeat")
    }

    /// `heartbeat/{PC}.json`.
    pub fn heartbeat_file(&self, pc: &PcId) -> PathBuf {
        self.heartbeat_dir().join(format!("{pc}.json"))
    }

    /// `credit/`.
    pub fn credit_dir(&self) -> PathBuf {
        self.root.join("credit")
    }

    /// `credit/{PC}.json`.
    pub fn credit_file(&self, pc: &PcId) -> PathBuf {
        self.credit_dir().join(format!("{pc}.json"))
    }

    /// `instances/`.
    pub fn instance_dir(&self) -> PathBuf {
        self.root.join("instances")
    }

    /// `instances/{PC}.json`.
    pub fn instance_file(&self, pc: &PcId) -> PathBuf {
        self.instance_dir().join(format!("{pc}.json"))
    }

    /// `handoff/`.
    pub fn handoff_dir(&self) -> PathBuf {
        self.root.join("handoff")
    }

    /// `handoff/{id}.json`.
    pub fn handoff_file(&self, id: &HandoffId) -> PathBuf {
        self.handoff_dir().join(format!("{id}.json"))
    }

    /// `handoff/processed/`.
    pub fn processed_handoff_dir(&self) -> PathBuf {
        self.handoff_dir().join("processed")
    }

    /// `handoff/processed/{id}.json`.
    pub fn processed_handoff_file(&self, id: &HandoffId) -> PathBuf {
        self.processed_handoff_dir().join(format!("{id}.json"))
    }

    /// `conversations/`.
    pub fn conversations_dir(&self) -> PathBuf {
        self.root.join("conversations")
    }

    /// `conversations/{handoff-id}.jsonl`: the agent's conversation carried with a handoff.
    pub fn conversation_file(&self, id: &HandoffId) -> PathBuf {
        self.conversations_dir().join(format!("{id}.jsonl"))
    }

    /// `conversations/{handoff-id}.age`: the conversation encrypted to the receiver.
    pub fn sealed_conversation_file(&self, id: &HandoffId) -> PathBuf {
        self.conversations_dir().join(format!("{id}.age"))
    }

    /// `recipients/`: the keys conversations are encrypted to.
    pub fn recipients_dir(&self) -> PathBuf {
        self.root.join("recipients")
    }

    /// `recipients/{PC}.json`: the key `pc`'s carried conversations are encrypted to, signed
    /// by `pc`.
    pub fn recipient_file(&self, pc: &PcId) -> PathBuf {
        self.recipients_dir().join(format!("{pc}.json"))
    }

    /// `local/trust/age.key`: this PC's private key for the conversations carried to it.
    pub fn age_identity_file(&self) -> PathBuf {
        self.trust_local_dir().join("age.key")
    }

    /// `local/credit/outbox/{handoff-id}.age`: a conversation encrypted for a handoff being
    /// written (copied into the tree with it).
    pub fn outbox_file(&self, id: &HandoffId) -> PathBuf {
        self.credit_local_dir()
            .join("outbox")
            .join(format!("{id}.age"))
    }

    /// `wake/`.
    pub fn wake_root(&self) -> PathBuf {
        self.root.join("wake")
    }

    /// `wake/{PC}/`.
    pub fn wake_dir(&self, to: &PcId) -> PathBuf {
        self.wake_root().join(to.as_str())
    }

    /// `wake/{PC}/{id}.json`.
    pub fn wake_file(&self, to: &PcId, id: &SignalId) -> PathBuf {
        self.wake_dir(to).join(format!("{id}.json"))
    }

    /// `spawn_queue/`.
    pub fn spawn_queue_dir(&self) -> PathBuf {
        self.root.join("spawn_queue")
    }

    /// `spawn_queue/{id}.json`.
    pub fn task_file(&self, id: &TaskId) -> PathBuf {
        self.spawn_queue_dir().join(format!("{id}.json"))
    }

    /// `claims/`.
    pub fn claims_dir(&self) -> PathBuf {
        self.root.join("claims")
    }

    /// `claims/{id}.json`.
    pub fn claim_file(&self, id: &TaskId) -> PathBuf {
        self.claims_dir().join(format!("{id}.json"))
    }

    /// `done/`.
    pub fn done_dir(&self) -> PathBuf {
        self.root.join("done")
    }

    /// `done/{id}.json`.
    pub fn done_file(&self, id: &TaskId) -> PathBuf {
        self.done_dir().join(format!("{id}.json"))
    }

    /// `coordinator/lease.json`.
    pub fn lease_file(&self) -> PathBuf {
        self.coordinator_dir().join("lease.json")
    }

    /// `coordinator/`: the lease.
    pub fn coordinator_dir(&self) -> PathBuf {
        self.root.join("coordinator")
    }

    /// `status/multi-instance-status.json`.
    pub fn multi_status_file(&self) -> PathBuf {
        self.root.join("status").join("multi-instance-status.json")
    }

    /// `verification/{handoff-id}.json`.
    pub fn verification_file(&self, id: &HandoffId) -> PathBuf {
        self.verification_dir().join(format!("{id}.json"))
    }

    /// `verification/`: the leader's verification records.
    pub fn verification_dir(&self) -> PathBuf {
        self.root.join("verification")
    }

    /// `dashboards/credit_status.json`.
    pub fn credit_dashboard_file(&self) -> PathBuf {
        self.root.join("dashboards").join("credit_status.json")
    }

    /// `dashboards/CREDIT_DASHBOARD.html`.
    pub fn dashboard_html_file(&self) -> PathBuf {
        self.root.join("dashboards").join("CREDIT_DASHBOARD.html")
    }

    /// `local/conflicts/{stamp}-{path with / as __}`: our side of a merge no rule decides.
    pub fn conflict_copy_file(&self, stamp: &str, rel: &str) -> PathBuf {
        self.conflicts_dir()
            .join(format!("{stamp}-{}", rel.replace('/', "__")))
    }

    /// `dashboards/timeline.json`.
    pub fn timeline_file(&self) -> PathBuf {
        self.root.join("dashboards").join("timeline.json")
    }

    /// `escalations/`.
    pub fn escalation_dir(&self) -> PathBuf {
        self.root.join("escalations")
    }

    /// `escalations/{id}.json`.
    pub fn escalation_file(&self, id: &RecordId) -> PathBuf {
        self.escalation_dir().join(format!("{id}.json"))
    }

    /// `postmortems/{id}.md`.
    pub fn postmortem_file(&self, id: &RecordId) -> PathBuf {
        self.postmortem_dir().join(format!("{id}.md"))
    }

    /// `postmortems/`: what the leader found about each PC that died.
    pub fn postmortem_dir(&self) -> PathBuf {
        self.root.join("postmortems")
    }

    /// `reports/`.
    pub fn reports_dir(&self) -> PathBuf {
        self.root.join("reports")
    }

    /// `reports/{id}.md`: a report for people (the integration status, a weekly KPI review).
    pub fn report_file(&self, id: &RecordId) -> PathBuf {
        self.reports_dir().join(format!("{id}.md"))
    }

    /// `reports/instance-logs/{PC}-{YYYYMMDD}.md`: what a PC did that day.
    pub fn instance_log_file(&self, pc: &PcId, day: chrono::NaiveDate) -> PathBuf {
        self.reports_dir()
            .join("instance-logs")
            .join(format!("{pc}-{}.md", day.format("%Y%m%d")))
    }

    /// `.git/`: the tree's own repository (git-sync's business alone).
    pub fn git_dir(&self) -> PathBuf {
        self.root.join(".git")
    }

    /// `local/`: per-machine state, never synced.
    pub fn local_dir(&self) -> PathBuf {
        self.root.join("local")
    }

    /// `keys/`: the fleet's published public keys.
    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// `keys/{PC}.json`: a PC's public key, signed by the member that approved it.
    pub fn key_file(&self, pc: &PcId) -> PathBuf {
        self.keys_dir().join(format!("{pc}.json"))
    }

    /// `revoked/`: revoked keys.
    pub fn revoked_dir(&self) -> PathBuf {
        self.root.join("revoked")
    }

    /// `revoked/{PC}-{fingerprint}-{BY}.json`: PC `BY`'s revocation of a key of `pc`.
    pub fn revocation_file(&self, pc: &PcId, fingerprint: &str, by: &PcId) -> PathBuf {
        self.revoked_dir()
            .join(format!("{pc}-{fingerprint}-{by}.json"))
    }

    /// `local/trust/`: this PC's signing key and pinned keys.
    pub fn trust_local_dir(&self) -> PathBuf {
        self.local_dir().join("trust")
    }

    /// `local/trust/signing.key`: this PC's private signing key (readable by its user only).
    pub fn signing_key_file(&self) -> PathBuf {
        self.trust_local_dir().join("signing.key")
    }

    /// `local/trust/pins.json`: the keys this PC believes on its own authority.
    pub fn pins_file(&self) -> PathBuf {
        self.trust_local_dir().join("pins.json")
    }

    /// `local/quarantine/`: files that failed validation, moved aside.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.local_dir().join("quarantine")
    }

    /// `local/credit/events.jsonl`: the credit monitor's event log.
    pub fn credit_events_file(&self) -> PathBuf {
        self.credit_local_dir().join("events.jsonl")
    }

    /// `local/credit/`: the credit monitor's own files.
    pub fn credit_local_dir(&self) -> PathBuf {
        self.local_dir().join("credit")
    }

    /// `local/credit/state.json`: the credit monitor's trigger state (armed, pause, a handoff
    /// in progress), persisted so a restart never hands off twice.
    pub fn credit_state_file(&self) -> PathBuf {
        self.credit_local_dir().join("state.json")
    }

    /// `local/credit/credit.lock`: held while an event is appended and the rules are acted on,
    /// so that concurrent recorders and the daemon trigger at most one handoff.
    pub fn credit_lock_file(&self) -> PathBuf {
        self.credit_local_dir().join("credit.lock")
    }

    /// `local/credit/transcripts.json`: how far the credit monitor has read each transcript.
    pub fn transcript_state_file(&self) -> PathBuf {
        self.credit_local_dir().join("transcripts.json")
    }

    /// `local/credit/poke.json`: written by Claude Code's `StopFailure` hook (`trinity agent
    /// stop-failure`) when a turn failed, so the credit monitor reads its sources at once.
    pub fn credit_poke_file(&self) -> PathBuf {
        self.credit_local_dir().join("poke.json")
    }

    /// `local/git-sync/state.json`: what git-sync tells the other daemons.
    pub fn sync_state_file(&self) -> PathBuf {
        self.sync_local_dir().join("state.json")
    }

    /// `local/git-sync/`: git-sync's own files.
    pub fn sync_local_dir(&self) -> PathBuf {
        self.local_dir().join("git-sync")
    }

    /// `local/git-sync/checkout.json`: a working-tree update in progress.
    pub fn sync_checkout_file(&self) -> PathBuf {
        self.sync_local_dir().join("checkout.json")
    }

    /// `local/git-sync/checkout.lock`: held exclusively by git-sync while it updates the working
    /// tree to another commit, shared by readers that decide from several files at once
    /// ([`crate::syncstate::hold_checkouts`]).
    pub fn sync_checkout_lock_file(&self) -> PathBuf {
        self.sync_local_dir().join("checkout.lock")
    }

    /// `local/git-sync/ssh/`: the socket of git-sync's shared ssh connection (OpenSSH's
    /// `ControlPath`; never synced).
    pub fn sync_ssh_dir(&self) -> PathBuf {
        self.sync_local_dir().join("ssh")
    }

    /// `local/conflicts/`: the losing side of merges no rule could decide.
    pub fn conflicts_dir(&self) -> PathBuf {
        self.local_dir().join("conflicts")
    }

    /// `local/wake/`: the wake-daemon's journal.
    pub fn wake_journal_dir(&self) -> PathBuf {
        self.local_dir().join("wake")
    }

    /// `local/wake/signals/`: the wake-daemon's signal records.
    pub fn wake_signal_journal_dir(&self) -> PathBuf {
        self.wake_journal_dir().join("signals")
    }

    /// `local/wake/signals/{id}.json`: what the wake-daemon did with a signal (idempotency by
    /// signal id).
    pub fn wake_signal_journal(&self, id: &SignalId) -> PathBuf {
        self.wake_signal_journal_dir().join(format!("{id}.json"))
    }

    /// `local/wake/handoffs/`: the acceptances in progress.
    pub fn wake_handoff_journal_dir(&self) -> PathBuf {
        self.wake_journal_dir().join("handoffs")
    }

    /// `local/wake/handoffs/{id}.json`: how far the acceptance of a handoff has gone.
    pub fn wake_handoff_journal(&self, id: &HandoffId) -> PathBuf {
        self.wake_handoff_journal_dir().join(format!("{id}.json"))
    }

    /// `local/wake/handoffs/finished/`: the acceptances finished (out of every pass's way).
    pub fn wake_finished_journal_dir(&self) -> PathBuf {
        self.wake_handoff_journal_dir().join("finished")
    }

    /// `local/wake/handoffs/finished/{id}.json`: a finished acceptance.
    pub fn wake_finished_journal(&self, id: &HandoffId) -> PathBuf {
        self.wake_finished_journal_dir().join(format!("{id}.json"))
    }

    /// `local/wake/tasks/{id}.json`: the tasks handed to the agent for a handoff
    /// (`TRINITY_TASKS_FILE`).
    pub fn wake_tasks_file(&self, id: &HandoffId) -> PathBuf {
        self.wake_journal_dir()
            .join("tasks")
            .join(format!("{id}.json"))
    }

    /// `local/wake/epochs.json`: the newest work epoch seen per task.
    pub fn wake_epochs_file(&self) -> PathBuf {
        self.wake_journal_dir().join("epochs.json")
    }

    /// `local/wake/agent.json`: the agent this daemon launched last (pid, launch id).
    pub fn agent_file(&self) -> PathBuf {
        self.wake_journal_dir().join("agent.json")
    }

    /// `local/coordinator/checkout/`: where the leader checks out submitted code to verify it.
    pub fn verify_checkout_dir(&self) -> PathBuf {
        self.local_dir().join("coordinator").join("checkout")
    }

    /// `local/coordinator/runs/{id}/`: a verification's scratch space (its phases' output).
    pub fn verify_run_dir(&self, id: &HandoffId) -> PathBuf {
        self.local_dir()
            .join("coordinator")
            .join("runs")
            .join(id.as_str())
    }

    /// `logs/agent.log`: the agent's output (the agents this PC started), never synced.
    pub fn agent_log_file(&self) -> PathBuf {
        self.logs_dir().join("agent.log")
    }

    /// `local/run/{name}.lock`: the lock taken while updating this PC's own `name` file
    /// ("heartbeat", "instance"), shared by every daemon of the PC.
    pub fn update_lock_file(&self, name: &str) -> PathBuf {
        self.local_dir().join("run").join(format!("{name}.lock"))
    }

    /// `local/run/{daemon}.lock`: one running instance per daemon and tree.
    pub fn lock_file(&self, daemon: &DaemonName) -> PathBuf {
        self.local_dir().join("run").join(format!("{daemon}.lock"))
    }

    /// `local/run/{daemon}.pid`: the process id of the daemon holding the lock.
    pub fn pid_file(&self, daemon: &DaemonName) -> PathBuf {
        self.local_dir().join("run").join(format!("{daemon}.pid"))
    }

    /// `logs/`: one log file per daemon, never synced.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// `logs/{daemon}.log`: the daemon's current log file.
    pub fn log_file(&self, daemon: &DaemonName) -> PathBuf {
        log_file_in(&self.logs_dir(), daemon, 0)
    }

    /// The path relative to the root with `/` separators, for messages, commits and
    /// [`Tree::classify_relative`]. Works on paths that do not exist.
    pub fn relative(&self, path: &Path) -> Result<String, LayoutError> {
        let outside = || LayoutError::Outside {
            path: path.to_owned(),
            root: self.root.clone(),
        };
        let rel = if path.is_absolute() || path.starts_with(&self.root) {
            path.strip_prefix(&self.root).map_err(|_| outside())?
        } else {
            path
        };
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(s) => parts.push(s.to_str().ok_or_else(outside)?.to_owned()),
                Component::CurDir => {}
                _ => return Err(outside()),
            }
        }
        Ok(parts.join("/"))
    }

    /// The kind (and so the class) of a path inside the tree.
    pub fn classify(&self, path: &Path) -> Result<FileKind, LayoutError> {
        let rel = self.relative(path)?;
        Self::classify_relative(&rel)
    }

    /// The kind of a path given relative to the root with `/` separators (as git lists paths).
    pub fn classify_relative(rel: &str) -> Result<FileKind, LayoutError> {
        let unknown = |why: &str| LayoutError::Unknown {
            path: rel.to_owned(),
            why: why.to_owned(),
        };
        let id_err = |e: IdError| LayoutError::Unknown {
            path: rel.to_owned(),
            why: e.to_string(),
        };
        let parts: Vec<&str> = rel.split('/').collect();
        if parts.len() > 1 && !is_synced(rel) && parts[0] != ".git" {
            return Ok(FileKind::Local);
        }
        match parts.as_slice() {
            ["fleet.toml"] => Ok(FileKind::Fleet),
            [".gitignore"] => Ok(FileKind::GitIgnore),
            ["heartbeat", f]
            | ["credit", f]
            | ["instances", f]
            | ["keys", f]
            | ["recipients", f] => {
                let stem = f
                    .strip_suffix(".json")
                    .ok_or_else(|| unknown("expected {PC}.json"))?;
                let pc = PcId::new(stem).map_err(id_err)?;
                Ok(match parts[0] {
                    "heartbeat" => FileKind::Heartbeat(pc),
                    "credit" => FileKind::Credit(pc),
                    "keys" => FileKind::Key(pc),
                    "recipients" => FileKind::Recipient(pc),
                    _ => FileKind::Instance(pc),
                })
            }
            ["handoff", f] => {
                let stem = f
                    .strip_suffix(".json")
                    .ok_or_else(|| unknown("expected handoff_{FROM}_to_{TO}_{TS}.json"))?;
                Ok(FileKind::Handoff(HandoffId::new(stem).map_err(id_err)?))
            }
            ["handoff", "processed", f] => {
                let stem = f
                    .strip_suffix(".json")
                    .ok_or_else(|| unknown("expected handoff_{FROM}_to_{TO}_{TS}.json"))?;
                Ok(FileKind::ProcessedHandoff(
                    HandoffId::new(stem).map_err(id_err)?,
                ))
            }
            ["conversations", f] => {
                if let Some(stem) = f.strip_suffix(".age") {
                    return Ok(FileKind::SealedConversation(
                        HandoffId::new(stem).map_err(id_err)?,
                    ));
                }
                let stem = f
                    .strip_suffix(".jsonl")
                    .ok_or_else(|| unknown("expected {handoff-id}.age or {handoff-id}.jsonl"))?;
                Ok(FileKind::Conversation(
                    HandoffId::new(stem).map_err(id_err)?,
                ))
            }
            ["wake", to, f] => {
                let to = PcId::new(to).map_err(id_err)?;
                let stem = f
                    .strip_suffix(".json")
                    .ok_or_else(|| unknown("expected wake/{PC}/{signal-id}.json"))?;
                Ok(FileKind::Wake(to, SignalId::new(stem).map_err(id_err)?))
            }
            ["spawn_queue" | "claims" | "done", f] => {
                let stem = f
                    .strip_suffix(".json")
                    .ok_or_else(|| unknown("expected {task-id}.json"))?;
                let id = TaskId::new(stem).map_err(id_err)?;
                Ok(match parts[0] {
                    "spawn_queue" => FileKind::Task(id),
                    "claims" => FileKind::Claim(id),
                    _ => FileKind::Done(id),
                })
            }
            ["coordinator", "lease.json"] => Ok(FileKind::Lease),
            ["status", "multi-instance-status.json"] => Ok(FileKind::MultiStatus),
            ["verification", f] => {
                let stem = f
                    .strip_suffix(".json")
                    .ok_or_else(|| unknown("expected {handoff-id}.json"))?;
                Ok(FileKind::Verification(
                    HandoffId::new(stem).map_err(id_err)?,
                ))
            }
            ["dashboards", "credit_status.json"] => Ok(FileKind::CreditDashboard),
            ["dashboards", "CREDIT_DASHBOARD.html"] => Ok(FileKind::DashboardHtml),
            ["dashboards", "timeline.json"] => Ok(FileKind::Timeline),
            ["revoked", f] => {
                let stem = f
                    .strip_suffix(".json")
                    .ok_or_else(|| unknown("expected {PC}-{fingerprint}-{BY}.json"))?;
                Ok(FileKind::Revocation(RecordId::new(stem).map_err(id_err)?))
            }
            ["escalations", f] => {
                let stem = f
                    .strip_suffix(".json")
                    .ok_or_else(|| unknown("expected {id}.json"))?;
                Ok(FileKind::Escalation(RecordId::new(stem).map_err(id_err)?))
            }
            ["postmortems", f] => {
                let stem = f
                    .strip_suffix(".md")
                    .ok_or_else(|| unknown("expected {id}.md"))?;
                Ok(FileKind::Postmortem(RecordId::new(stem).map_err(id_err)?))
            }
            ["reports", f] | ["reports", "instance-logs", f] => {
                let stem = f
                    .strip_suffix(".md")
                    .or_else(|| f.strip_suffix(".json"))
                    .ok_or_else(|| unknown("expected {id}.md or {id}.json"))?;
                Ok(FileKind::Report(RecordId::new(stem).map_err(id_err)?))
            }
            _ => Err(unknown(
                "no file of the layout lives here (see docs/protocol.md)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc(s: &str) -> PcId {
        PcId::new(s).expect("valid")
    }

    #[test]
    fn every_path_the_tree_hands_out_classifies_back() {
        let tree = Tree::new("/state");
        let hid = HandoffId::new("handoff_PC1_to_PC2_20251123T163000Z").expect("valid");
        let task = TaskId::new("chunk2-courses").expect("valid");
        let rec = RecordId::new("20251123T163000Z-PC1-all_exhausted").expect("valid");
        let sig = SignalId::new("20251123T163000Z-PC1-0001").expect("valid");
        let cases = [
            (
                tree.fleet_file(),
                FileKind::Fleet,
                PathClass::CompareAndSwap,
            ),
            (
                tree.gitignore_file(),
                FileKind::GitIgnore,
                PathClass::CompareAndSwap,
            ),
            (
                tree.heartbeat_file(&pc("PC1")),
                FileKind::Heartbeat(pc("PC1")),
                PathClass::Owned(pc("PC1")),
            ),
            (
                tree.credit_file(&pc("PC2")),
                FileKind::Credit(pc("PC2")),
                PathClass::Owned(pc("PC2")),
            ),
            (
                tree.instance_file(&pc("PC3")),
                FileKind::Instance(pc("PC3")),
                PathClass::Owned(pc("PC3")),
            ),
            (
                tree.handoff_file(&hid),
                FileKind::Handoff(hid.clone()),
                PathClass::Immutable {
                    consumer: Consumer::Pc(pc("PC2")),
                },
            ),
            (
                tree.conversation_file(&hid),
                FileKind::Conversation(hid.clone()),
                PathClass::Immutable {
                    consumer: Consumer::Pc(pc("PC2")),
                },
            ),
            (
                tree.processed_handoff_file(&hid),
                FileKind::ProcessedHandoff(hid.clone()),
                PathClass::Immutable {
                    consumer: Consumer::Leader,
                },
            ),
            (
                tree.wake_file(&pc("PC2"), &sig),
                FileKind::Wake(pc("PC2"), sig.clone()),
                PathClass::Immutable {
                    consumer: Consumer::Pc(pc("PC2")),
                },
            ),
            (
                tree.task_file(&task),
                FileKind::Task(task.clone()),
                PathClass::Immutable {
                    consumer: Consumer::Leader,
                },
            ),
            (
                tree.claim_file(&task),
                FileKind::Claim(task.clone()),
                PathClass::CompareAndSwap,
            ),
            (
                tree.done_file(&task),
                FileKind::Done(task.clone()),
                PathClass::Immutable {
                    consumer: Consumer::Leader,
                },
            ),
            (
                tree.lease_file(),
                FileKind::Lease,
                PathClass::CompareAndSwap,
            ),
            (
                tree.multi_status_file(),
                FileKind::MultiStatus,
                PathClass::Leader,
            ),
            (
                tree.verification_file(&hid),
                FileKind::Verification(hid.clone()),
                PathClass::Leader,
            ),
            (
                tree.credit_dashboard_file(),
                FileKind::CreditDashboard,
                PathClass::Leader,
            ),
            (
                tree.dashboard_html_file(),
                FileKind::DashboardHtml,
                PathClass::Leader,
            ),
            (tree.timeline_file(), FileKind::Timeline, PathClass::Leader),
            (
                tree.escalation_file(&rec),
                FileKind::Escalation(rec.clone()),
                PathClass::Immutable {
                    consumer: Consumer::Leader,
                },
            ),
            (
                tree.postmortem_file(&rec),
                FileKind::Postmortem(rec.clone()),
                PathClass::Immutable {
                    consumer: Consumer::Nobody,
                },
            ),
            (
                tree.reports_dir().join("weekly.md"),
                FileKind::Report(RecordId::new("weekly").expect("valid")),
                PathClass::Leader,
            ),
            (tree.credit_events_file(), FileKind::Local, PathClass::Local),
            (tree.sync_state_file(), FileKind::Local, PathClass::Local),
            (tree.sync_checkout_file(), FileKind::Local, PathClass::Local),
            (
                tree.sync_ssh_dir().join("0123abcd"),
                FileKind::Local,
                PathClass::Local,
            ),
            (
                tree.sync_checkout_lock_file(),
                FileKind::Local,
                PathClass::Local,
            ),
            (tree.credit_state_file(), FileKind::Local, PathClass::Local),
            (
                tree.transcript_state_file(),
                FileKind::Local,
                PathClass::Local,
            ),
            (tree.credit_poke_file(), FileKind::Local, PathClass::Local),
            (tree.wake_epochs_file(), FileKind::Local, PathClass::Local),
            (tree.agent_file(), FileKind::Local, PathClass::Local),
            (
                tree.wake_finished_journal(
                    &HandoffId::new("handoff_PC1_to_PC2_20251123T163000Z").expect("valid"),
                ),
                FileKind::Local,
                PathClass::Local,
            ),
            (
                tree.quarantine_dir().join("x.json"),
                FileKind::Local,
                PathClass::Local,
            ),
            (
                tree.log_file(&DaemonName::new("git-sync").expect("valid")),
                FileKind::Local,
                PathClass::Local,
            ),
            (
                tree.heartbeat_dir().join(".PC1.json.42.0.tmp"),
                FileKind::Local,
                PathClass::Local,
            ),
        ];
        for (path, kind, class) in cases {
            let got = tree
                .classify(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(got, kind, "{}", path.display());
            assert_eq!(got.class(), class, "{}", path.display());
        }
    }

    #[test]
    fn one_answer_to_what_is_synced() {
        for rel in [
            "fleet.toml",
            "heartbeat/PC1.json",
            "handoff/processed/h.json",
            ".gitignore",
        ] {
            assert!(is_synced(rel), "{rel}");
        }
        for rel in [
            "",
            ".git/index",
            "local/credit/state.json",
            "logs/git-sync.log",
            "claims/.x.json.1.0.tmp",
            "spawn_queue/t.json.soak.tmp",
        ] {
            assert!(!is_synced(rel), "{rel}");
        }
    }

    #[test]
    fn unknown_paths_are_errors() {
        let tree = Tree::new("/state");
        for rel in [
            "notes.txt",
            "heartbeat/PC1.txt",
            "heartbeat/sub/PC1.json",
            "heartbeat/PC_1.json",
            "handoff/handoff_PC1_to_20251123T163000Z.json",
            "handoff/random.json",
            "wake/PC2.json",
            "claims/CON.json",
            "coordinator/other.json",
            "local",
        ] {
            let err = Tree::classify_relative(rel).expect_err(rel);
            assert!(
                err.to_string()
                    .contains(rel.split('/').next().unwrap_or(rel)),
                "{rel}: {err}"
            );
        }
        let outside = tree
            .classify(Path::new("/elsewhere/heartbeat/PC1.json"))
            .expect_err("outside");
        assert!(matches!(outside, LayoutError::Outside { .. }));
        let escape = tree
            .classify(Path::new("/state/../etc/passwd"))
            .expect_err("escape");
        assert!(matches!(escape, LayoutError::Outside { .. }));
    }

    #[test]
    fn relative_paths_are_accepted() {
        let tree = Tree::new("/state");
        assert_eq!(
            tree.classify(Path::new("heartbeat/PC1.json"))
                .expect("valid"),
            FileKind::Heartbeat(pc("PC1"))
        );
    }
}
