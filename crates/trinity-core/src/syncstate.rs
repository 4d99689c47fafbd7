//! `local/git-sync/state.json`: what git-sync tells the other daemons of this PC.
//!
//! The contract other daemons rely on: **every change made to the tree before `in_sync_at` (by
//! this machine's clock) is on the remote**, merged with whatever the remote had. A daemon that
//! wrote a compare-and-swap file (a claim) at time T waits until `in_sync_at > T`, then reads the
//! file again: if it still holds its version, it won the race.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fsio;
use crate::layout::Tree;

/// The state file's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    /// Format version of this local file.
    #[serde(default = "one")]
    pub format_version: u32,
    /// The process that writes it.
    #[serde(default)]
    pub pid: u32,
    /// When the state was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Every local change made before this moment is on the remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync_at: Option<DateTime<Utc>>,
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

fn one() -> u32 {
    1
}

impl Default for SyncState {
    fn default() -> Self {
        Self {
            format_version: one(),
            pid: 0,
            updated_at: None,
            in_sync_at: None,
            last_fetch: None,
            last_push: None,
            remote_head: None,
            local_head: None,
            commits_ahead: 0,
            last_error: None,
            push_races: 0,
            conflicts: 0,
            quarantined: 0,
            cycles: 0,
            reopens: 0,
            maintenance_runs: 0,
            last_maintenance: None,
            compactions: 0,
            last_compaction: None,
        }
    }
}

impl SyncState {
    /// The state, or `None` when git-sync has not written one (or it is unreadable).
    pub fn load(tree: &Tree) -> Option<Self> {
        let bytes = fsio::read_bounded(&tree.sync_state_file(), 1024 * 1024).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes it atomically.
    pub fn save(&self, tree: &Tree) -> Result<(), fsio::IoError> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        fsio::write_atomic(&tree.sync_state_file(), &bytes)
    }

    /// True when a change made at `written_at` has reached the remote.
    pub fn has_reached_remote(&self, written_at: DateTime<Utc>) -> bool {
        self.in_sync_at.is_some_and(|t| t > written_at)
    }
}
