//! `local/git-sync/state.json`: what git-sync tells the other daemons of this PC.
//!
//! The contract other daemons rely on: **every change made to the tree before `in_sync_at` (by
//! this machine's clock) is on the remote**, merged with whatever the remote had. A daemon that
//! wrote a compare-and-swap file (a claim) at time T waits until `in_sync_at > T`, then reads the
//! file again: if it still holds its version, it won the race.
//!
//! And a second: **git-sync updates the working tree to another commit only while it holds
//! `local/git-sync/checkout.lock` exclusively.** A commit can change several files that only
//! make sense together (a finished task's claim removed, its done record and its submission
//! added); a reader that decides from several files at once holds the lock shared while it reads
//! them ([`hold_checkouts`]) and so sees the tree as of one commit, never half of one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::layout::Tree;
use crate::local::{self, LocalError, LocalState};

/// The state file's contents (its `format_version` is written by [`crate::local`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    /// The process that writes it.
    #[serde(default)]
    pub pid: u32,
    /// When the state was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Every local change made before this moment is on the remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync_at: Option<DateTime<Utc>>,
    /// Every change that was on the remote before this moment is in this tree: the last cycle
    /// that checked the remote and brought in what it had (refreshed at least every few pull
    /// intervals while nothing changes). The coordinator measures other PCs' silence only up to
    /// here: a leader that cannot see the remote declares nobody dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_seen_at: Option<DateTime<Utc>>,
    /// The last successful fetch (or remote ref check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch: Option<DateTime<Utc>>,
    /// The last successful push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push: Option<DateTime<Utc>>,
    /// The remote branch's commit, as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_head: Option<String>,
    /// The local branch's commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_head: Option<String>,
    /// Local commits not yet on the remote.
    #[serde(default)]
    pub commits_ahead: u32,
    /// The last error, if the last cycle failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Pushes rejected because the remote moved (lost compare-and-swap races), in total.
    #[serde(default)]
    pub push_races: u64,
    /// Merges no rule could decide (both versions kept, escalated), in total.
    #[serde(default)]
    pub conflicts: u64,
    /// Files quarantined because they failed validation, in total.
    #[serde(default)]
    pub quarantined: u64,
    /// Cycles run since the daemon started.
    #[serde(default)]
    pub cycles: u64,
    /// Times the local repository was opened afresh after it failed, in total.
    #[serde(default)]
    pub reopens: u64,
    /// Pack consolidations run (bounding the pack files each fetch adds), in total.
    #[serde(default)]
    pub maintenance_runs: u64,
    /// The last pack consolidation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_maintenance: Option<DateTime<Utc>>,
    /// History compactions this PC made, in total.
    #[serde(default)]
    pub compactions: u64,
    /// The last history compaction this PC made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_compaction: Option<DateTime<Utc>>,
}

impl LocalState for SyncState {
    const NAME: &'static str = "git-sync's state";
    const MAX_BYTES: usize = 1024 * 1024;
}

impl SyncState {
    /// The state, `None` when git-sync has not written one. A corrupt file is moved aside and
    /// reported (git-sync writes a new one on its next cycle).
    pub fn read(tree: &Tree) -> Result<Option<Self>, LocalError> {
        local::read(&tree.sync_state_file())
    }

    /// [`SyncState::read`] for the daemons that wait on it: an unreadable state is logged and
    /// taken as "nothing known to be in sync", the safe answer.
    pub fn load(tree: &Tree) -> Option<Self> {
        Self::read(tree)
            .inspect_err(|e| tracing::warn!(error = %e, "cannot read git-sync's state"))
            .ok()
            .flatten()
    }

    /// Writes it atomically.
    pub fn save(&self, tree: &Tree) -> Result<(), LocalError> {
        local::write(&tree.sync_state_file(), self)
    }

    /// True when a change made at `written_at` has reached the remote.
    pub fn has_reached_remote(&self, written_at: DateTime<Utc>) -> bool {
        self.in_sync_at.is_some_and(|t| t > written_at)
    }
}

/// Keeps git-sync from updating the working tree while it lives (a shared hold of
/// `local/git-sync/checkout.lock`, waiting for a checkout under way to end). `None` where no
/// git-sync has ever run on the tree (git-sync creates the file when it starts), or, with a
/// warning, when the lock cannot be taken: the reader then reads as before, unprotected.
pub fn hold_checkouts(tree: &Tree) -> Option<crate::daemon::FileLock> {
    crate::daemon::FileLock::acquire_shared_existing(&tree.sync_checkout_lock_file())
        .inspect_err(|e| tracing::warn!(error = %e, "cannot hold git-sync's checkouts back"))
        .ok()
        .flatten()
}
