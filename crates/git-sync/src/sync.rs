//! One sync cycle: commit local changes, check the remote, fetch and merge what arrived,
//! push; with crash recovery, stale-lock removal and the state file for the other daemons.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use gix::ObjectId;
use serde::{Deserialize, Serialize};
use trinity_core::config::Config;
use trinity_core::fsio::{self, IoError};
use trinity_core::gitcmd::Git;
use trinity_core::layout::{PathClass, TEMP_SUFFIX};
use trinity_core::local::{self, LocalError, LocalState};
use trinity_core::schema::{Escalation, EscalationKind, Fleet, Heartbeat, Lease, Schema};
use trinity_core::syncstate::SyncState;
use trinity_core::{PcId, RecordId, SharedClock, Tree, failpoint, validate};

use crate::link::{Link, LinkError};
use crate::merge::{self, Flat};
use crate::message::{self, Change, ChangeKind};
use crate::repo::{FetchError, ObjectCounts, RepoError, Store};

mod checkout;
mod commit;
mod maintain;
mod remote;

pub use commit::STALE_TEMP_FILE;
pub use maintain::COMPACTION_CHECK_EVERY;
pub use trinity_core::gitcmd::{Failure, classify_failure};

/// Why a cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The local state repository failed (its object database, its references, its index):
    /// nothing to do with the remote.
    #[error("local state repository: {0}")]
    Repo(#[from] RepoError),
    /// Consolidating the repository's pack files failed (the repository is unchanged).
    #[error("repository maintenance failed: {0}")]
    Maintenance(#[source] trinity_core::gitcmd::GitError),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A state file of this machine could not be read or written.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// A name made from valid parts was refused (a bug).
    #[error(transparent)]
    Name(#[from] trinity_core::ids::IdError),
    /// The remote could not be reached or stopped answering (it is retried with backoff;
    /// local commits wait).
    #[error("cannot reach the remote: {0}")]
    Network(String),
    /// The remote refused our credentials (reported, retried only slowly).
    #[error("the remote refused authentication: {0}")]
    Auth(String),
    /// The push was refused for a reason other than a lost race (git's error as it ran).
    #[error("push refused: {0}")]
    Push(#[source] trinity_core::gitcmd::GitError),
}

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// The local commit made, if any.
    pub committed: Option<String>,
    /// Whether anything was fetched.
    pub fetched: bool,
    /// Whether remote changes were merged into the working tree.
    pub merged: bool,
    /// Whether anything was pushed.
    pub pushed: bool,
    /// Files quarantined instead of committed.
    pub quarantined: Vec<String>,
    /// Paths no merge rule decided.
    pub conflicts: Vec<String>,
    /// Pushes lost to a race and retried.
    pub races: u32,
    /// A heartbeat refresh was held back by `heartbeat_commit_interval`.
    pub heartbeat_deferred: bool,
    /// What arrived from the remote was work (a handoff, a signal, a task, a claim…), not
    /// only the fleet's periodic reports (heartbeats, credit, the leader's status pages).
    pub work_arrived: bool,
}

/// What one maintenance run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maintenance {
    /// The object database before.
    pub before: ObjectCounts,
    /// The object database after.
    pub after: ObjectCounts,
    /// How long it took.
    pub took: Duration,
    /// Whether an old history was dropped (after a compaction).
    pub pruned: bool,
}

impl SyncError {
    /// What a failed push means: git's error back for a lost race (fetch, merge and try
    /// again), else the failure — the network, credentials, or a refusal.
    pub(crate) fn lost_race(
        e: trinity_core::gitcmd::GitError,
    ) -> Result<trinity_core::gitcmd::GitError, Self> {
        if e.timed_out() {
            return Err(SyncError::Network(e.to_string()));
        }
        let stderr = e.stderr().to_owned();
        match classify_failure(&format!("{stderr} {e}")) {
            Failure::Race => Ok(e),
            Failure::Auth => Err(SyncError::Auth(stderr)),
            Failure::Network => Err(SyncError::Network(stderr)),
            Failure::Other => Err(SyncError::Push(e)),
        }
    }
}

impl From<LinkError> for SyncError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Network(s) => SyncError::Network(s),
            LinkError::Auth(s) => SyncError::Auth(s),
            LinkError::Local(message) => SyncError::Repo(RepoError {
                action: "store the fetched objects",
                message,
            }),
        }
    }
}

impl Report {
    /// Whether the cycle added objects to the repository (a commit, a fetch, a merge).
    pub fn touched_objects(&self) -> bool {
        self.committed.is_some() || self.fetched || self.merged || self.races > 0
    }
}

/// The sync engine of one tree.
#[derive(Debug)]
pub struct Syncer {
    tree: Tree,
    pc: PcId,
    config: Config,
    clock: SharedClock,
    store: Store,
    git: Git,
    state: SyncState,
    /// The state as last written (the file is rewritten only when it changes).
    saved: Option<SyncState>,
    stats: HashMap<String, (SystemTime, u64, ObjectId)>,
    last_heartbeat_commit: Option<Instant>,
    link: Link,
    /// The remote's branch as the last check saw it (what a fetch asks for).
    remote_seen: Option<ObjectId>,
    /// The branch left an old history behind (a compaction was followed): prune it.
    prune_pending: bool,
    /// The last cycle's local repository failed even when opened afresh (said once).
    repo_failing: bool,
    /// Calls of [`Syncer::maintain_if_due`] since the history's length was last checked.
    since_compaction_check: u32,
    /// No cycle has run yet in this process.
    fresh_start: bool,
}

/// The remote-tracking branch as it was before the latest fetch: the newest remote state the
/// local branch holds, and so the merge base when the remote's history was compacted.
pub const LAST_TRACKING: &str = "refs/trinity/last-tracking";

impl Syncer {
    /// Opens the tree's repository.
    pub fn open(
        tree: Tree,
        pc: PcId,
        config: Config,
        clock: SharedClock,
    ) -> Result<Self, SyncError> {
        let store = Store::open(tree.root(), &config.sync.branch)?;
        // The lock readers hold to keep checkouts back exists from now on, so that none of
        // them reads unprotected during this PC's first checkout.
        trinity_core::daemon::FileLock::create_file(&tree.sync_checkout_lock_file())?;
        let git = Git::in_dir(tree.root());
        let saved = SyncState::read(&tree).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "starting with fresh counters");
            None
        });
        let mut state = saved.clone().unwrap_or_default();
        state.pid = std::process::id();
        let remote_url = git
            .run(["config", "--get", "remote.origin.url"])
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| config.sync.remote.clone());
        let control = tree.sync_ssh_dir();
        let link = Link::new(
            &remote_url,
            tree.root(),
            config.sync.network_timeout,
            config
                .sync
                .share_ssh_connection
                .then_some(control.as_path()),
        );
        Ok(Self {
            tree,
            pc,
            config,
            clock,
            store,
            git,
            state,
            saved,
            stats: HashMap::new(),
            last_heartbeat_commit: None,
            link,
            remote_seen: None,
            prune_pending: false,
            repo_failing: false,
            since_compaction_check: 0,
            fresh_start: true,
        })
    }

    /// The remote's path when it is a repository on this machine (a bare repository on disk
    /// or a share): its refs can be watched, and read without a network round trip.
    pub fn local_remote(&self) -> Option<PathBuf> {
        self.link.local_path().map(Path::to_owned)
    }

    /// The way to the remote (its kind, what it has done).
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Ends the session with the remote (at shutdown).
    pub fn close_link(&mut self) {
        self.link.close();
    }

    /// How stale `remote_seen_at` may be on disk while nothing else changes: five pull
    /// intervals, at most 10 s (the coordinator's silence counts lag by no more).
    fn remote_seen_granularity(&self) -> Duration {
        (self.config.sync.pull_interval * 5).min(Duration::from_secs(10))
    }

    /// The state the other daemons read.
    pub fn state(&self) -> &SyncState {
        &self.state
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Runs one full cycle. `scan` looks at the working tree for local changes (the watcher
    /// fired, or the polling fallback is due). A failure of the local repository makes it open
    /// the repository afresh and try the cycle once more before the failure counts.
    pub fn cycle(&mut self, scan: bool) -> Result<Report, SyncError> {
        let start = self.now();
        let mut report = Report::default();
        let mut result = self.attempt(scan, &mut report);
        if let Err(SyncError::Repo(e)) = &result {
            if self.repo_failing {
                tracing::debug!(error = %e, "the local repository still fails; opening it afresh");
            } else {
                tracing::warn!(error = %e, "the local repository failed; opening it afresh and trying again");
            }
            report = Report::default();
            result = match self.store.reopen() {
                Ok(()) => {
                    self.state.reopens += 1;
                    self.attempt(scan, &mut report)
                }
                Err(e) => Err(e.into()),
            };
        }
        self.repo_failing = matches!(result, Err(SyncError::Repo(_)));
        self.link.end_cycle();
        self.state.cycles += 1;
        self.state.local_head = self.store.head()?.map(|h| h.to_string());
        self.state.remote_head = self.store.tracking()?.map(|h| h.to_string());
        self.state.commits_ahead = self.ahead();
        match &result {
            Ok(()) => {
                self.state.last_error = None;
                if scan && self.state.commits_ahead == 0 {
                    self.state.in_sync_at = Some(start);
                }
                self.state.remote_seen_at = Some(start);
            }
            Err(e) => self.state.last_error = Some(e.to_string()),
        }
        self.save_state()?;
        result.map(|()| report)
    }

    fn attempt(&mut self, scan: bool, report: &mut Report) -> Result<(), SyncError> {
        let index_free = self.clear_stale_locks();
        self.finish_checkout(index_free)?;
        self.cycle_inner(scan, index_free, report)
    }

    /// Commits local changes without touching the remote (while backing off after a network
    /// failure).
    pub fn cycle_local(&mut self, scan: bool) -> Result<Report, SyncError> {
        let mut report = Report::default();
        let index_free = self.clear_stale_locks();
        self.finish_checkout(index_free)?;
        if scan {
            self.commit_local(index_free, &mut report)?;
        }
        self.state.local_head = self.store.head()?.map(|h| h.to_string());
        self.state.commits_ahead = self.ahead();
        self.save_state()?;
        Ok(report)
    }

    fn cycle_inner(
        &mut self,
        scan: bool,
        index_free: bool,
        report: &mut Report,
    ) -> Result<(), SyncError> {
        if scan {
            self.commit_local(index_free, report)?;
        }
        failpoint::hit("sync:committed");
        if self.ahead() > 0 {
            // Something to push: push at once. Accepted, it proves the remote held nothing
            // this PC lacks (a push must be a fast-forward), so no check is needed; refused,
            // the remote moved, and the push fetches, merges and retries. A check first
            // would only add its round trips to every handoff, claim and acceptance.
            return self.push(index_free, report);
        }
        if self.remote_moved()? {
            self.fetch_noting(report)?;
        }
        // Also after a fetch whose merge never happened (a crash in between).
        report.merged = self.merge_remote(index_free, report)?;
        self.push(index_free, report)?;
        Ok(())
    }

    /// Fetches, noting in `report` that it did and whether work arrived.
    fn fetch_noting(&mut self, report: &mut Report) -> Result<(), SyncError> {
        let before = self.store.tracking()?;
        self.fetch()?;
        report.fetched = true;
        report.work_arrived |= self.work_between(before, self.store.tracking()?);
        Ok(())
    }

    /// Whether the remote's history from `old` to `new` changed anything but the fleet's
    /// periodic reports. (A failure to tell counts as work: the cost is only a prompter look.)
    fn work_between(&self, old: Option<ObjectId>, new: Option<ObjectId>) -> bool {
        use trinity_core::layout::FileKind as K;
        let (Ok(a), Ok(b)) = (
            self.store.flatten_commit(old),
            self.store.flatten_commit(new),
        ) else {
            return true;
        };
        let periodic = |path: &str| {
            matches!(
                Tree::classify_relative(path),
                Ok(K::Heartbeat(_)
                    | K::Credit(_)
                    | K::MultiStatus
                    | K::CreditDashboard
                    | K::DashboardHtml
                    | K::Report(_)
                    | K::Lease)
            )
        };
        a.iter()
            .filter(|(p, id)| b.get(*p) != Some(id))
            .chain(b.iter().filter(|(p, _)| !a.contains_key(*p)))
            .any(|(p, _)| !periodic(p))
    }

    fn save_state(&mut self) -> Result<(), SyncError> {
        // The cycle counter alone does not make the file worth rewriting, nor a newer look at
        // an unchanged remote unless the one on disk has grown old.
        if let Some(saved) = &self.saved {
            let mut unchanged = saved.clone();
            unchanged.updated_at = self.state.updated_at;
            unchanged.cycles = self.state.cycles;
            let seen_lately = match (saved.remote_seen_at, self.state.remote_seen_at) {
                (Some(old), Some(new)) => {
                    (new - old).to_std().unwrap_or_default() < self.remote_seen_granularity()
                }
                (old, new) => old == new,
            };
            if seen_lately {
                unchanged.remote_seen_at = self.state.remote_seen_at;
            }
            if unchanged == self.state {
                return Ok(());
            }
        }
        self.state.updated_at = Some(self.now());
        self.state.save(&self.tree)?;
        self.saved = Some(self.state.clone());
        Ok(())
    }

    /// Commits behind the local branch not on the remote-tracking branch (0 or 1 in practice:
    /// local work is squashed into few commits; counted as "is ahead").
    fn ahead(&self) -> u32 {
        match (self.store.head(), self.store.tracking()) {
            (Ok(Some(h)), Ok(Some(t))) if h == t => 0,
            (Ok(Some(h)), Ok(Some(t))) => match self.store.is_ancestor(h, t) {
                Ok(true) => 0,
                _ => 1,
            },
            (Ok(Some(_)), Ok(None)) => 1,
            _ => 0,
        }
    }

    // ---- local changes ----------------------------------------------------------------

    fn fleet(&self) -> Option<Fleet> {
        fsio::load::<Fleet>(&self.tree.fleet_file())
            .ok()
            .map(|d| d.value)
    }

    /// Whether anything is in flight that makes a prompt look at the remote worth its cost: a
    /// commit of this PC's not yet pushed, a handoff or a wake signal not yet taken, or a PC
    /// (this one or another) anywhere but on standby — an agent at work can hand off at any
    /// moment, and the PC it hands to must see it soon. Read from this PC's tree.
    pub fn in_flight(&self) -> bool {
        use trinity_core::schema::InstanceStatus;
        use trinity_core::state::InstanceState;
        if self.state.commits_ahead > 0 {
            return true;
        }
        let has_json = |dir: PathBuf| {
            std::fs::read_dir(dir).is_ok_and(|entries| {
                entries.flatten().any(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.ends_with(".json") && !name.starts_with('.')
                })
            })
        };
        if has_json(self.tree.handoff_dir()) {
            return true;
        }
        if let Ok(pcs) = std::fs::read_dir(self.tree.wake_root())
            && pcs.flatten().any(|d| has_json(d.path()))
        {
            return true;
        }
        let Ok(instances) = std::fs::read_dir(self.tree.instance_dir()) else {
            return false;
        };
        instances.flatten().any(|e| {
            fsio::load::<InstanceStatus>(&e.path())
                .is_ok_and(|d| d.value.state != InstanceState::Standby)
        })
    }

    // ---- the remote ---------------------------------------------------------------------

    /// Whether a held-back heartbeat is due for its commit.
    pub fn heartbeat_due(&self) -> bool {
        self.last_heartbeat_commit
            .is_none_or(|t| t.elapsed() >= self.config.sync.heartbeat_commit_interval)
    }
}

fn short(id: ObjectId) -> String {
    id.to_hex_with_len(8).to_string()
}
