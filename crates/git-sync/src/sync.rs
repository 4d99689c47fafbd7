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
use trinity_core::gitcmd::{self, Git, GitError};
use trinity_core::layout::{PathClass, TEMP_SUFFIX};
use trinity_core::local::{self, LocalError, LocalState};
use trinity_core::schema::{Escalation, EscalationKind, Fleet, Heartbeat, Lease, Schema};
use trinity_core::syncstate::SyncState;
use trinity_core::{PcId, RecordId, SharedClock, Tree, failpoint, validate};

use crate::merge::{self, Flat};
use crate::message::{self, Change, ChangeKind};
use crate::repo::{FetchError, ObjectCounts, RepoError, Store};

/// Why a cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The local state repository failed (its object database, its references, its index):
    /// nothing to do with the remote.
    #[error("local state repository: {0}")]
    Repo(#[from] RepoError),
    /// Consolidating the repository's pack files failed (the repository is unchanged).
    #[error("repository maintenance failed: {0}")]
    Maintenance(String),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A state file of this machine could not be read or written.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// The remote could not be reached (it is retried with backoff; local commits wait).
    #[error("cannot reach the remote: {0}")]
    Network(String),
    /// The remote refused our credentials (reported, retried only slowly).
    #[error("the remote refused authentication: {0}")]
    Auth(String),
    /// The push was refused for a reason other than a lost race.
    #[error("push refused: {0}")]
    Push(String),
}

impl SyncError {
    /// Network and authentication failures back off; the others are retried at once.
    pub fn backs_off(&self) -> bool {
        matches!(self, SyncError::Network(_) | SyncError::Auth(_))
    }
}

/// What a failed push or fetch means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Somebody pushed first: a lost compare-and-swap.
    Race,
    /// The remote is unreachable.
    Network,
    /// Credentials refused.
    Auth,
    /// Anything else.
    Other,
}

/// Classifies git's (or gix's) error text.
pub fn classify_failure(stderr: &str) -> Failure {
    let s = stderr.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| s.contains(n));
    if any(&[
        "fetch first",
        "non-fast-forward",
        "updates were rejected",
        "failed to update ref",
        "[rejected]",
        "cannot lock ref",
        "stale info",
    ]) {
        Failure::Race
    } else if any(&[
        "authentication failed",
        "permission denied",
        "terminal prompts disabled",
        "could not read username",
        "access denied",
        "403",
        "401",
    ]) {
        Failure::Auth
    } else if any(&[
        "could not read from remote",
        "does not appear to be a git repository",
        "unable to access",
        "could not resolve host",
        "connection refused",
        "connection timed out",
        "network is unreachable",
        "no such file or directory",
        "not a git repository",
        "failed to connect",
        "could not open",
        "repository not found",
        "does not exist",
    ]) {
        Failure::Network
    } else {
        Failure::Other
    }
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

impl Report {
    /// Whether the cycle added objects to the repository (a commit, a fetch, a merge).
    pub fn touched_objects(&self) -> bool {
        self.committed.is_some() || self.fetched || self.merged || self.races > 0
    }
}

/// `local/git-sync/checkout.json`: a working-tree update in progress (the branch has moved
/// from `from` to `to`, the files may not all have followed).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingCheckout {
    from: Option<String>,
    to: String,
}

impl LocalState for PendingCheckout {
    const NAME: &'static str = "git-sync's checkout record";
    const MAX_BYTES: usize = 4096;
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
    remote_repo: Option<gix::Repository>,
    remote_url: String,
    /// The branch left an old history behind (a compaction was followed): prune it.
    prune_pending: bool,
    /// Calls of [`Syncer::maintain_if_due`] since the history's length was last checked.
    since_compaction_check: u32,
    /// No cycle has run yet in this process.
    fresh_start: bool,
}

/// An atomic write's temporary file lives milliseconds; one older than this was left by a
/// process killed mid-write, and git-sync removes it (it is never synced).
pub const STALE_TEMP_FILE: Duration = Duration::from_secs(600);

fn remove_if_stale_temp(path: &Path) {
    let age = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| m.elapsed().ok());
    if age.is_some_and(|a| a > STALE_TEMP_FILE) {
        match std::fs::remove_file(path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed a temporary file left by a write that was killed")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale temporary file")
            }
        }
    }
}

/// Every `*.lock` file under `dir` (the repository's `refs/`), recursively.
fn collect_locks(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => collect_locks(&path, out),
            Ok(_) if path.extension().is_some_and(|x| x == "lock") => out.push(path),
            _ => {}
        }
    }
}

/// The remote-tracking branch as it was before the latest fetch: the newest remote state the
/// local branch holds, and so the merge base when the remote's history was compacted.
pub const LAST_TRACKING: &str = "refs/trinity/last-tracking";

/// The history's length is checked (against `sync.compact_after_commits`) on the first and
/// then every this many calls of [`Syncer::maintain_if_due`].
pub const COMPACTION_CHECK_EVERY: u32 = 100;

/// A PC that is not the fleet's coordinator compacts only once the history has grown this much
/// past `compact_after_commits` (so one PC does it, and any PC if the coordinator is gone).
const NON_COORDINATOR_SLACK: f64 = 1.5;

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> IoError + 'a {
    move |source| IoError {
        action,
        path: path.to_owned(),
        source,
    }
}

impl Syncer {
    /// Opens the tree's repository.
    pub fn open(
        tree: Tree,
        pc: PcId,
        config: Config,
        clock: SharedClock,
    ) -> Result<Self, SyncError> {
        let store = Store::open(tree.root(), &config.sync.branch)?;
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
            remote_repo: None,
            remote_url,
            prune_pending: false,
            since_compaction_check: 0,
            fresh_start: true,
        })
    }

    /// The remote's path when it is a repository on this machine (a bare repository on disk
    /// or a share): its refs can be watched, and read without a network round trip.
    pub fn local_remote(&self) -> Option<PathBuf> {
        let url = self
            .remote_url
            .strip_prefix("file://")
            .unwrap_or(&self.remote_url);
        if !gitcmd::is_local_path(url) {
            return None;
        }
        Some(if Path::new(url).is_absolute() {
            PathBuf::from(url)
        } else {
            self.tree.root().join(url)
        })
    }

    /// The state the other daemons read.
    pub fn state(&self) -> &SyncState {
        &self.state
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Removes git lock files left by a crash. Reference locks are only ever taken by git-sync
    /// (the only program that writes this repository, one instance at a time): at start-up
    /// every one found was left by a crashed predecessor and is removed at once, later only
    /// when older than `sync.stale_index_lock`. `index.lock` may also be held by a person's
    /// `git status`, so it is removed only when that old. Returns false when a fresh
    /// `index.lock` is held by another git process.
    fn clear_stale_locks(&mut self) -> bool {
        let git_dir = self.store.git_dir().to_owned();
        let fresh_start = std::mem::take(&mut self.fresh_start);
        let mut index_free = true;
        let mut locks = vec![
            git_dir.join("index.lock"),
            git_dir.join("HEAD.lock"),
            git_dir.join("packed-refs.lock"),
        ];
        collect_locks(&git_dir.join("refs"), &mut locks);
        for lock in locks {
            let Ok(meta) = std::fs::metadata(&lock) else {
                continue;
            };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .unwrap_or_default();
            let is_index = lock.ends_with("index.lock");
            if age > self.config.sync.stale_index_lock || (fresh_start && !is_index) {
                match std::fs::remove_file(&lock) {
                    Ok(()) => {
                        tracing::warn!(lock = %lock.display(), age = %humantime::format_duration(Duration::from_secs(age.as_secs())), "removed a stale git lock left by a crash")
                    }
                    Err(e) => {
                        tracing::warn!(lock = %lock.display(), error = %e, "cannot remove a stale git lock")
                    }
                }
            } else if is_index {
                tracing::info!(lock = %lock.display(), "the git index is locked by another git process; leaving it alone");
                index_free = false;
            }
        }
        index_free
    }

    /// Runs one full cycle. `scan` looks at the working tree for local changes (the watcher
    /// fired, or the polling fallback is due). A failure of the local repository makes it open
    /// the repository afresh and try the cycle once more before the failure counts.
    pub fn cycle(&mut self, scan: bool) -> Result<Report, SyncError> {
        let start = self.now();
        let mut report = Report::default();
        let mut result = self.attempt(scan, &mut report);
        if let Err(SyncError::Repo(e)) = &result {
            tracing::warn!(error = %e, "the local repository failed; opening it afresh and trying again");
            report = Report::default();
            result = match self.store.reopen() {
                Ok(()) => {
                    self.state.reopens += 1;
                    self.attempt(scan, &mut report)
                }
                Err(e) => Err(e.into()),
            };
        }
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

    /// The object database's files on disk now.
    pub fn objects_on_disk(&self) -> ObjectCounts {
        self.store.objects_on_disk()
    }

    /// Whether the repository has gathered enough pack files or loose objects for
    /// [`Syncer::maintain`] to be due.
    pub fn needs_maintenance(&self) -> bool {
        self.objects_on_disk().needs_maintenance()
    }

    /// Between two cycles: compacts the history when it is due (checked on the first call and
    /// every [`COMPACTION_CHECK_EVERY`] calls), then runs [`Syncer::maintain`] when pack files
    /// or loose objects have piled up or an old history is left to prune; logs what it did.
    pub fn maintain_if_due(&mut self) -> Result<Option<Maintenance>, SyncError> {
        let check = self.since_compaction_check == 0;
        self.since_compaction_check = (self.since_compaction_check + 1) % COMPACTION_CHECK_EVERY;
        if check {
            self.compact_if_due()?;
        }
        if !self.prune_pending && !self.needs_maintenance() {
            return Ok(None);
        }
        let m = self.maintain()?;
        tracing::info!(
            packs_before = m.before.packs,
            packs_after = m.after.packs,
            loose_before = m.before.loose,
            loose_after = m.after.loose,
            bytes_before = m.before.bytes,
            bytes_after = m.after.bytes,
            pruned = m.pruned,
            took_ms = m.took.as_millis() as u64,
            "consolidated the repository's pack files"
        );
        Ok(Some(m))
    }

    /// Consolidates pack files and loose objects (`git repack`, geometric, so its cost follows
    /// what is new rather than the whole history), with the gix handle closed meanwhile so no
    /// pack stays mapped, then opens the repository afresh. After a compaction it also drops
    /// the old history (reflogs expired, everything repacked, unreachable objects pruned).
    /// Call it between cycles: git writes the new pack before it deletes the old ones, so a
    /// kill at any moment loses nothing.
    pub fn maintain(&mut self) -> Result<Maintenance, SyncError> {
        let before = self.store.objects_on_disk();
        let started = Instant::now();
        let prune = self.prune_pending;
        self.store.close();
        let repacked = if prune {
            self.prune_history()
        } else {
            self.repack()
        };
        let reopened = self.store.reopen();
        repacked?;
        reopened?;
        self.prune_pending = false;
        let after = self.store.objects_on_disk();
        self.state.maintenance_runs += 1;
        self.state.last_maintenance = Some(self.now());
        self.save_state()?;
        Ok(Maintenance {
            before,
            after,
            took: started.elapsed(),
            pruned: prune,
        })
    }

    /// Drops everything the branches no longer reach: the history a compaction replaced.
    fn prune_history(&self) -> Result<(), SyncError> {
        let run = |args: &[&str]| {
            self.git
                .run(args)
                .map(drop)
                .map_err(|e| SyncError::Maintenance(format!("{} {e}", e.stderr())))
        };
        run(&["reflog", "expire", "--expire=now", "--all"])?;
        run(&["repack", "-a", "-d", "-l", "-q"])?;
        run(&["prune", "--expire=now"])
    }

    /// Replaces the branch's history by one root commit of the same tree when the history has
    /// passed `sync.compact_after_commits` (half as much again on a PC that is not the fleet's
    /// coordinator), so the repository a PC holds and a joining PC clones stays small. Only
    /// when this PC is in step with the remote; the push is a compare-and-swap
    /// (`--force-with-lease` on the commit it replaces), so a change pushed meanwhile by another
    /// PC is never lost: the compaction just waits for a later check. Every other PC follows
    /// it on its next fetch ([`Syncer::follow_compaction`]). Returns the commits folded.
    pub fn compact_if_due(&mut self) -> Result<Option<u64>, SyncError> {
        let limit = self.config.sync.compact_after_commits;
        if limit == 0 {
            return Ok(None);
        }
        let (Some(head), Some(tracking)) = (self.store.head()?, self.store.tracking()?) else {
            return Ok(None);
        };
        if head != tracking {
            return Ok(None);
        }
        let count: u64 = self
            .git
            .run(["rev-list", "--count", &head.to_string()])
            .map_err(|e| SyncError::Maintenance(format!("{} {e}", e.stderr())))?
            .trim()
            .parse()
            .unwrap_or(0);
        let coordinator = self.fleet().is_some_and(|f| f.coordinator == self.pc);
        let threshold = if coordinator {
            limit
        } else {
            (limit as f64 * NON_COORDINATOR_SLACK) as u64
        };
        if count <= threshold || self.remote_head()? != Some(head) {
            return Ok(None);
        }
        let branch = self.config.sync.branch.clone();
        let tree = self.store.tree_of(head)?;
        let msg = format!(
            "compact: {count} commits of history folded into one\n\nTrinity-Compacts: {head}\n"
        );
        let root = self
            .store
            .commit(&format!("trinity {}", self.pc), &msg, tree, &[])?;
        failpoint::hit("compact:committed");
        let lease = format!("--force-with-lease=refs/heads/{branch}:{head}");
        let spec = format!("{root}:refs/heads/{branch}");
        if let Err(e) = self
            .git
            .run(["push", "--porcelain", "--quiet", &lease, "origin", &spec])
        {
            return match classify_failure(&format!("{} {e}", e.stderr())) {
                Failure::Race => {
                    tracing::info!(
                        "the remote moved while compacting; the compaction waits for a later check"
                    );
                    Ok(None)
                }
                Failure::Auth => Err(SyncError::Auth(e.stderr().to_owned())),
                Failure::Network => Err(SyncError::Network(e.stderr().to_owned())),
                Failure::Other => Err(SyncError::Push(e.stderr().to_owned())),
            };
        }
        failpoint::hit("compact:pushed");
        self.store.set_tracking(root)?;
        self.store.set_head(root, Some(head), "git-sync: compact")?;
        self.store
            .set_named_ref(LAST_TRACKING, root, "git-sync: compacted")?;
        failpoint::hit("compact:refs-moved");
        self.prune_pending = true;
        self.state.compactions += 1;
        self.state.last_compaction = Some(self.now());
        self.state.local_head = Some(root.to_string());
        self.state.remote_head = Some(root.to_string());
        self.save_state()?;
        tracing::info!(commits = count, root = %short(root), "compacted the fleet's history into one commit");
        Ok(Some(count))
    }

    fn repack(&self) -> Result<(), SyncError> {
        let geometric = self.git.run(["repack", "-d", "-l", "-q", "--geometric=2"]);
        match geometric {
            Ok(_) => Ok(()),
            // git older than 2.33 has no geometric repacking: consolidate everything instead.
            Err(e) if e.stderr().contains("geometric") => self
                .git
                .run(["repack", "-a", "-d", "-l", "-q"])
                .map(drop)
                .map_err(|e| SyncError::Maintenance(format!("{} {e}", e.stderr()))),
            Err(e) => Err(SyncError::Maintenance(format!("{} {e}", e.stderr()))),
        }
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
        if self.remote_moved()? {
            self.fetch()?;
            report.fetched = true;
            failpoint::hit("sync:fetched");
        }
        // Also after a fetch whose merge never happened (a crash in between).
        report.merged = self.merge_remote(index_free, report)?;
        self.push(index_free, report)?;
        Ok(())
    }

    fn save_state(&mut self) -> Result<(), SyncError> {
        // The cycle counter alone does not make the file worth rewriting.
        if let Some(saved) = &self.saved {
            let mut unchanged = saved.clone();
            unchanged.updated_at = self.state.updated_at;
            unchanged.cycles = self.state.cycles;
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

    /// The working tree's synced files, by path, with their blob ids (hashing only files whose
    /// size or time changed since the last scan).
    fn scan(&mut self) -> Result<Flat<ObjectId>, SyncError> {
        let files = validate::synced_files(&self.tree)?;
        let mut out = Flat::new();
        let mut seen = HashMap::with_capacity(files.len());
        for path in files {
            let Ok(rel) = self.tree.relative(&path) else {
                continue;
            };
            if rel.ends_with(TEMP_SUFFIX) {
                remove_if_stale_temp(&path);
                continue;
            }
            if rel == ".git" || rel.starts_with(".git/") {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let len = meta.len();
            let id = match self.stats.get(&rel) {
                Some(&(m, l, id)) if m == mtime && l == len => id,
                _ => {
                    let Ok(bytes) = std::fs::read(&path) else {
                        continue;
                    };
                    self.store.hash_blob(&bytes)
                }
            };
            seen.insert(rel.clone(), (mtime, len, id));
            out.insert(rel, id);
        }
        self.stats = seen;
        Ok(out)
    }

    /// True when only a heartbeat's time stamps changed and its last commit is recent.
    fn defer_heartbeat(&self, rel: &str, old: Option<ObjectId>, new: &[u8]) -> bool {
        let own = self.tree.relative(&self.tree.heartbeat_file(&self.pc));
        if own.as_deref().ok() != Some(rel) {
            return false;
        }
        let Some(old) = old else {
            return false;
        };
        let recent = self
            .last_heartbeat_commit
            .is_some_and(|t| t.elapsed() < self.config.sync.heartbeat_commit_interval);
        if !recent {
            return false;
        }
        let Ok(old) = self.store.blob(old) else {
            return false;
        };
        let (Ok(a), Ok(b)) = (
            trinity_core::schema::from_bytes::<Heartbeat>(&old),
            trinity_core::schema::from_bytes::<Heartbeat>(new),
        ) else {
            return false;
        };
        let key = |h: &Heartbeat| {
            (
                h.status,
                h.to_pc.clone(),
                h.from_pc.clone(),
                h.handoff.clone(),
                h.paused_until,
                h.tasks_received,
                h.daemons.keys().cloned().collect::<Vec<_>>(),
            )
        };
        key(&a) == key(&b)
    }

    fn commit_local(&mut self, index_free: bool, report: &mut Report) -> Result<(), SyncError> {
        let head = self.store.head()?;
        let head_tree = head.map(|h| self.store.tree_of(h)).transpose()?;
        let head_flat = match head_tree {
            Some(t) => self.store.flatten(t)?,
            None => Flat::new(),
        };
        let work = self.scan()?;
        let fleet = self.fleet();
        let mut next = head_flat.clone();
        let mut changes = Vec::new();
        let mut heartbeat_in = false;
        let now = self.now();
        for (rel, id) in &work {
            let old = head_flat.get(rel).copied();
            if old == Some(*id) {
                continue;
            }
            let path = self.tree.root().join(rel);
            if !path.is_file() {
                // Removed since the scan: the next scan sees the deletion.
                continue;
            }
            if let Err(problem) = validate::validate_file(&self.tree, &path, fleet.as_ref()) {
                if !path.is_file() {
                    continue;
                }
                let reason = problem.message;
                tracing::warn!(path = %rel, %reason, "quarantined a file instead of committing it");
                if let Err(e) = fsio::quarantine(&self.tree, &path, &reason, now) {
                    tracing::error!(path = %rel, error = %e, "cannot quarantine a file");
                }
                self.state.quarantined += 1;
                report.quarantined.push(rel.clone());
                continue;
            }
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read", &path)(e).into()),
            };
            if self.defer_heartbeat(rel, old, &bytes) {
                report.heartbeat_deferred = true;
                continue;
            }
            if rel.starts_with("heartbeat/") {
                heartbeat_in = true;
            }
            let written = self.store.write_blob(&bytes)?;
            next.insert(rel.clone(), written);
            changes.push(Change {
                path: rel.clone(),
                kind: if old.is_some() {
                    ChangeKind::Modified
                } else {
                    ChangeKind::Added
                },
                content: Some(bytes),
            });
        }
        for rel in head_flat.keys() {
            if !work.contains_key(rel) && !report.quarantined.contains(rel) {
                next.remove(rel);
                changes.push(Change {
                    path: rel.clone(),
                    kind: ChangeKind::Deleted,
                    content: None,
                });
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let tree = self.store.write_tree(head_tree, &head_flat, &next)?;
        let msg = message::message(&changes);
        let commit =
            self.store
                .commit(&format!("trinity {}", self.pc), &msg, tree, head.as_slice())?;
        self.store.set_head(commit, head, "git-sync: commit")?;
        failpoint::hit("sync:head-moved");
        if heartbeat_in {
            self.last_heartbeat_commit = Some(Instant::now());
        }
        if index_free {
            self.store.write_index(tree)?;
        }
        tracing::info!(commit = %short(commit), files = changes.len(), "{}", msg.lines().next().unwrap_or_default());
        report.committed = Some(commit.to_string());
        Ok(())
    }

    // ---- the remote ---------------------------------------------------------------------

    /// A cheap check: has the remote branch moved away from our remote-tracking branch?
    fn remote_moved(&mut self) -> Result<bool, SyncError> {
        let tracking = self.store.tracking()?;
        let remote = self.remote_head()?;
        Ok(remote.is_some() && remote != tracking)
    }

    /// The remote branch's commit: read straight from a bare repository on this machine, or
    /// with `git ls-remote` for a URL.
    fn remote_head(&mut self) -> Result<Option<ObjectId>, SyncError> {
        let branch = &self.config.sync.branch;
        if let Some(path) = self.local_remote() {
            if self.remote_repo.is_none() {
                match gix::open(&path) {
                    Ok(r) => self.remote_repo = Some(r),
                    Err(e) => {
                        return Err(SyncError::Network(format!(
                            "{} is not a git repository: {e}",
                            path.display()
                        )));
                    }
                }
            }
            let Some(repo) = &self.remote_repo else {
                return Ok(None);
            };
            if !path.exists() {
                self.remote_repo = None;
                return Err(SyncError::Network(format!(
                    "{} does not exist",
                    path.display()
                )));
            }
            let name = format!("refs/heads/{branch}");
            return match repo.try_find_reference(name.as_str()) {
                Ok(Some(mut r)) => Ok(r.peel_to_id().ok().map(|id| id.detach())),
                Ok(None) => Ok(None),
                Err(e) => {
                    self.remote_repo = None;
                    Err(SyncError::Network(e.to_string()))
                }
            };
        }
        let out = self
            .git
            .run(["ls-remote", "origin", &format!("refs/heads/{branch}")])
            .map_err(|e| remote_error(&e))?;
        Ok(out
            .split_whitespace()
            .next()
            .and_then(|h| ObjectId::from_hex(h.as_bytes()).ok()))
    }

    fn fetch(&mut self) -> Result<(), SyncError> {
        if let Some(t) = self.store.tracking()? {
            self.store
                .set_named_ref(LAST_TRACKING, t, "git-sync: before a fetch")?;
        }
        let url = &self.remote_url;
        let http = url.starts_with("http://") || url.starts_with("https://");
        if http {
            // gix is built without an HTTP transport here; the git program fetches over HTTP.
            let branch = &self.config.sync.branch;
            self.git
                .run([
                    "fetch",
                    "--quiet",
                    "origin",
                    &format!("+refs/heads/{branch}:refs/remotes/origin/{branch}"),
                ])
                .map_err(|e| remote_error(&e))?;
        } else {
            self.store.fetch().map_err(|e| match e {
                FetchError::Local(e) => SyncError::Repo(e),
                remote @ FetchError::Remote { .. } => {
                    let text = remote.to_string();
                    match classify_failure(&text) {
                        Failure::Auth => SyncError::Auth(text),
                        _ => SyncError::Network(text),
                    }
                }
            })?;
        }
        self.state.last_fetch = Some(self.now());
        Ok(())
    }

    /// Merges the remote-tracking branch into the local one and updates the working tree.
    /// Returns whether anything changed locally.
    fn merge_remote(&mut self, index_free: bool, report: &mut Report) -> Result<bool, SyncError> {
        let Some(theirs) = self.store.tracking()? else {
            return Ok(false);
        };
        let ours = self.store.head()?;
        let mut followed_compaction = false;
        let (new_head, message) = match ours {
            None => (theirs, None),
            Some(o) if o == theirs => return Ok(false),
            Some(o) if self.store.is_ancestor(theirs, o)? => return Ok(false),
            Some(o) if self.store.is_ancestor(o, theirs)? => (theirs, None),
            Some(o) => match self.store.merge_base(o, theirs)? {
                Some(base) => {
                    let base_flat = self.store.flatten_commit(Some(base))?;
                    let (commit, msg) =
                        self.three_way(&base_flat, o, theirs, &[o, theirs], report)?;
                    (commit, Some(msg))
                }
                // No common history: the fleet compacted its history while our branch was
                // still on the old one. Our own changes are carried onto the new history.
                None => {
                    followed_compaction = true;
                    self.follow_compaction(o, theirs, report)?
                }
            },
        };
        // The working tree follows the branch; the intent is on disk first, so a crash between
        // moving the branch and updating the files is finished on the next run.
        let pending = PendingCheckout {
            from: ours.map(|o| o.to_string()),
            to: new_head.to_string(),
        };
        local::write(&self.tree.sync_checkout_file(), &pending)?;
        failpoint::hit("sync:checkout-planned");
        self.store.set_head(new_head, ours, "git-sync: merge")?;
        failpoint::hit("sync:merged");
        if followed_compaction {
            // The old history is no longer needed as a merge base: let it go.
            self.store
                .set_named_ref(LAST_TRACKING, theirs, "git-sync: followed a compaction")?;
            self.prune_pending = true;
        }
        self.finish_checkout(index_free)?;
        tracing::info!(
            head = %short(new_head),
            kind = if message.is_some() { "merge" } else { "fast-forward" },
            "brought in the fleet's changes"
        );
        Ok(true)
    }

    /// Merges `o` and `theirs` against `base_flat` by the path-class rules and writes the
    /// merge commit with `parents`.
    fn three_way(
        &mut self,
        base_flat: &Flat<ObjectId>,
        o: ObjectId,
        theirs: ObjectId,
        parents: &[ObjectId],
        report: &mut Report,
    ) -> Result<(ObjectId, String), SyncError> {
        let ours_tree = self.store.tree_of(o)?;
        let ours_flat = self.store.flatten(ours_tree)?;
        let theirs_flat = self.store.flatten_commit(Some(theirs))?;
        let leader = self.holds_lease(&theirs_flat);
        let merged = merge::merge(base_flat, &ours_flat, &theirs_flat, &self.pc, leader);
        for (path, side) in &merged.decided {
            tracing::info!(%path, ?side, "both sides changed a file; decided by its path class");
        }
        for conflict in &merged.conflicts {
            self.keep_conflict(conflict)?;
            report.conflicts.push(conflict.path.clone());
        }
        let tree = self
            .store
            .write_tree(Some(ours_tree), &ours_flat, &merged.tree)?;
        let msg = format!(
            "merge: {} from the fleet{}\n",
            if merged.decided.is_empty() {
                "changes".to_owned()
            } else {
                format!("{} decided by path class", merged.decided.len())
            },
            if merged.conflicts.is_empty() {
                String::new()
            } else {
                format!(", {} kept aside", merged.conflicts.len())
            }
        );
        let commit = self
            .store
            .commit(&format!("trinity {}", self.pc), &msg, tree, parents)?;
        Ok((commit, msg))
    }

    /// Our branch `o` and the remote's `theirs` share no history: the remote's was compacted.
    /// The base of the merge is the newest remote state our branch holds (what the
    /// remote-tracking branch was before the fetch that brought the new history, as recorded
    /// in [`LAST_TRACKING`]); with nothing of ours on top of it, we simply take the new history.
    /// The result's only parent is `theirs`, so the old history is left behind.
    fn follow_compaction(
        &mut self,
        o: ObjectId,
        theirs: ObjectId,
        report: &mut Report,
    ) -> Result<(ObjectId, Option<String>), SyncError> {
        let last = self.store.named_ref(LAST_TRACKING)?;
        let base = match last {
            Some(l) => self.store.merge_base(o, l)?,
            None => None,
        };
        let ours_flat = self.store.flatten_commit(Some(o))?;
        let base_flat = match base {
            Some(b) => {
                let base_flat = self.store.flatten_commit(Some(b))?;
                if base_flat == ours_flat {
                    tracing::info!(theirs = %short(theirs), "the fleet compacted its history; following it");
                    return Ok((theirs, None));
                }
                base_flat
            }
            None => {
                // No record of what we had of the remote: let the path-class rules decide every
                // path on which the two sides differ (our own files stay ours, the rest theirs).
                tracing::warn!(
                    "the fleet compacted its history and the last remote state this PC merged is unknown; every differing file is decided by its path class"
                );
                let theirs_flat = self.store.flatten_commit(Some(theirs))?;
                let unknown = ObjectId::null(theirs.kind());
                ours_flat
                    .keys()
                    .chain(theirs_flat.keys())
                    .map(|p| (p.clone(), unknown))
                    .collect()
            }
        };
        let (commit, msg) = self.three_way(&base_flat, o, theirs, &[theirs], report)?;
        tracing::info!(theirs = %short(theirs), "the fleet compacted its history; carried this PC's unpushed changes onto it");
        Ok((commit, Some(msg)))
    }

    /// Whether this PC holds the coordinator lease in `flat` (decides leader-owned files).
    fn holds_lease(&self, flat: &Flat<ObjectId>) -> bool {
        let lease = self
            .tree
            .relative(&self.tree.lease_file())
            .unwrap_or_default();
        flat.get(&lease)
            .and_then(|id| self.store.blob(*id).ok())
            .and_then(|b| trinity_core::schema::from_bytes::<Lease>(&b).ok())
            .is_some_and(|l| l.holder == self.pc)
    }

    /// Finishes a working-tree update recorded in `local/git-sync/checkout.json`.
    fn finish_checkout(&mut self, index_free: bool) -> Result<(), SyncError> {
        let path = self.tree.sync_checkout_file();
        let Some(pending) = local::read::<PendingCheckout>(&path)? else {
            return Ok(());
        };
        let to = ObjectId::from_hex(pending.to.as_bytes())
            .map_err(|e| SyncError::Push(format!("bad checkout record: {e}")))?;
        let from = pending
            .from
            .as_deref()
            .and_then(|f| ObjectId::from_hex(f.as_bytes()).ok());
        let head = self.store.head()?;
        if head != Some(to) {
            // The branch never moved: nothing to finish.
            let _ = std::fs::remove_file(&path);
            return Ok(());
        }
        let from_flat = self.store.flatten_commit(from)?;
        let to_tree = self.store.tree_of(to)?;
        let to_flat = self.store.flatten(to_tree)?;
        self.apply(&from_flat, &to_flat)?;
        failpoint::hit("sync:checked-out");
        if index_free {
            self.store.write_index(to_tree)?;
        }
        std::fs::remove_file(&path).map_err(io("remove", &path))?;
        Ok(())
    }

    /// Makes the working tree go from `from` to `to`, leaving alone files changed locally since
    /// (they are committed on the next cycle) — except compare-and-swap files, where the
    /// remote's version has won.
    fn apply(&mut self, from: &Flat<ObjectId>, to: &Flat<ObjectId>) -> Result<(), SyncError> {
        let paths: std::collections::BTreeSet<&String> = from.keys().chain(to.keys()).collect();
        for rel in paths {
            let (f, t) = (from.get(rel), to.get(rel));
            if f == t {
                continue;
            }
            let path = self.tree.root().join(rel);
            let current = std::fs::read(&path).ok().map(|b| self.store.hash_blob(&b));
            if current.as_ref() == t {
                continue;
            }
            let cas = trinity_core::Tree::classify_relative(rel)
                .map(|k| k.class() == PathClass::CompareAndSwap)
                .unwrap_or(false);
            if current.as_ref() != f {
                if !cas {
                    tracing::info!(path = %rel, "kept a local change made during the merge; it is committed next");
                    continue;
                }
                tracing::info!(path = %rel, "a compare-and-swap file changed here and on the remote; the remote's version won");
            }
            match t {
                Some(id) => {
                    let bytes = self.store.blob(*id)?;
                    fsio::write_atomic(&path, &bytes)?;
                }
                None => match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("remove", &path)(e).into()),
                },
            }
        }
        Ok(())
    }

    /// Keeps our side of an undecidable path under `local/conflicts/` and raises an escalation.
    fn keep_conflict(&mut self, c: &merge::Conflict<ObjectId>) -> Result<(), SyncError> {
        let now = self.now();
        let stamp = trinity_core::ids::file_timestamp(now);
        let flat = c.path.replace('/', "__");
        if let Some(ours) = c.ours {
            let bytes = self.store.blob(ours)?;
            let keep = self.tree.conflicts_dir().join(format!("{stamp}-{flat}"));
            fsio::write_atomic(&keep, &bytes)?;
        }
        self.state.conflicts += 1;
        let id = RecordId::new(format!(
            "{stamp}-merge-{}-{}",
            self.pc, self.state.conflicts
        ))
        .map_err(|e| SyncError::Push(e.to_string()))?;
        let escalation = Escalation {
            format_version: Escalation::FORMAT_VERSION,
            id: id.clone(),
            created_at: now,
            created_by: self.pc.clone(),
            kind: EscalationKind::MergeConflict,
            summary: format!(
                "{} changed on {} and on the remote and no rule decides: {}",
                c.path, self.pc, c.why
            ),
            handoff: None,
            paths: vec![c.path.clone()],
            details: Some(format!(
                "The remote's version is in the tree; {}'s is in local/conflicts/{stamp}-{flat} on that PC.",
                self.pc
            )),
        };
        let path = self.tree.escalation_file(&id);
        if let Err(e) = fsio::create(&path, &escalation) {
            tracing::error!(error = %e, "cannot write the merge escalation");
        }
        tracing::error!(path = %c.path, why = %c.why, escalation = %id, "merge conflict no rule decides: kept both versions and escalated");
        Ok(())
    }

    /// Pushes while the local branch is ahead; a lost race fetches, merges and retries with
    /// jitter for as long as the remote keeps moving (progress).
    fn push(&mut self, index_free: bool, report: &mut Report) -> Result<(), SyncError> {
        let branch = self.config.sync.branch.clone();
        let mut stuck = 0;
        loop {
            let Some(head) = self.store.head()? else {
                return Ok(());
            };
            let tracking = self.store.tracking()?;
            if tracking == Some(head)
                || tracking.is_some_and(|t| self.store.is_ancestor(head, t).unwrap_or(false))
            {
                return Ok(());
            }
            failpoint::hit("sync:pushing");
            let spec = format!("refs/heads/{branch}:refs/heads/{branch}");
            match self
                .git
                .run(["push", "--porcelain", "--quiet", "origin", &spec])
            {
                Ok(_) => {
                    self.store.set_tracking(head)?;
                    self.state.last_push = Some(self.now());
                    report.pushed = true;
                    tracing::debug!(head = %short(head), "pushed");
                    return Ok(());
                }
                Err(e) => match classify_failure(&format!("{} {e}", e.stderr())) {
                    Failure::Race => {
                        report.races += 1;
                        self.state.push_races += 1;
                        let before = self.store.tracking()?;
                        std::thread::sleep(jitter(report.races));
                        self.fetch()?;
                        let after = self.store.tracking()?;
                        if after == before {
                            stuck += 1;
                            if stuck >= 3 {
                                return Err(SyncError::Push(e.stderr().to_owned()));
                            }
                        } else {
                            stuck = 0;
                        }
                        tracing::info!(
                            attempt = report.races,
                            "lost a push race; merging and retrying"
                        );
                        self.merge_remote(index_free, report)?;
                    }
                    Failure::Auth => return Err(SyncError::Auth(e.stderr().to_owned())),
                    Failure::Network => return Err(SyncError::Network(e.stderr().to_owned())),
                    Failure::Other => return Err(SyncError::Push(e.stderr().to_owned())),
                },
            }
        }
    }

    /// Whether a held-back heartbeat is due for its commit.
    pub fn heartbeat_due(&self) -> bool {
        self.last_heartbeat_commit
            .is_none_or(|t| t.elapsed() >= self.config.sync.heartbeat_commit_interval)
    }
}

fn remote_error(e: &GitError) -> SyncError {
    let text = format!("{} {e}", e.stderr());
    match classify_failure(&text) {
        Failure::Auth => SyncError::Auth(e.stderr().to_owned()),
        _ => SyncError::Network(e.stderr().to_owned()),
    }
}

/// 20–120 ms, growing a little with the attempt, different per process.
fn jitter(attempt: u32) -> Duration {
    let seed = u64::from(std::process::id())
        .wrapping_mul(6364136223846793005)
        .wrapping_add(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| u64::from(d.subsec_nanos()))
                .unwrap_or(0),
        );
    let spread = 100 + 20 * u64::from(attempt.min(10));
    Duration::from_millis(20 + seed % spread)
}

fn short(id: ObjectId) -> String {
    id.to_hex_with_len(8).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_fetch_failures_are_told_apart() {
        for (text, want) in [
            (
                " ! [rejected]        trinity -> trinity (fetch first)",
                Failure::Race,
            ),
            (
                "! [rejected] trinity -> trinity (non-fast-forward)",
                Failure::Race,
            ),
            (
                "! [remote rejected] trinity -> trinity (failed to update ref)",
                Failure::Race,
            ),
            (
                "fatal: '/srv/x.git' does not appear to be a git repository\nfatal: Could not read from remote repository.",
                Failure::Network,
            ),
            (
                "ssh: connect to host example.com port 22: Connection refused",
                Failure::Network,
            ),
            (
                "fatal: unable to access 'https://example.com/x.git/': Could not resolve host: example.com",
                Failure::Network,
            ),
            (
                "git@github.com: Permission denied (publickey).",
                Failure::Auth,
            ),
            (
                "fatal: could not read Username for 'https://example.com': terminal prompts disabled",
                Failure::Auth,
            ),
            ("remote: hook declined", Failure::Other),
        ] {
            assert_eq!(classify_failure(text), want, "{text}");
        }
    }

    #[test]
    fn jitter_stays_small() {
        for attempt in 0..50 {
            let j = jitter(attempt);
            assert!(j >= Duration::from_millis(20) && j < Duration::from_millis(400));
        }
    }
}
