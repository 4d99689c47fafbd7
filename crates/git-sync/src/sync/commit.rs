//! The local side: what a kill left behind, the scan of the working tree, and the commit of
//! local changes.

use super::*;

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

impl Syncer {
    /// Removes git lock files left by a crash. Reference locks are only ever taken by git-sync
    /// (the only program that writes this repository, one instance at a time): at start-up
    /// every one found was left by a crashed predecessor and is removed at once, later only
    /// when older than `sync.stale_index_lock`. `index.lock` may also be held by a person's
    /// `git status`, so it is removed only when that old. Returns false when a fresh
    /// `index.lock` is held by another git process.
    pub(super) fn clear_stale_locks(&mut self) -> bool {
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

    /// The working tree's synced files, by path, with their blob ids (hashing only files whose
    /// size or time changed since the last scan).
    pub(super) fn scan(&mut self) -> Result<Flat<ObjectId>, SyncError> {
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
    pub(super) fn defer_heartbeat(&self, rel: &str, old: Option<ObjectId>, new: &[u8]) -> bool {
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

    pub(super) fn commit_local(
        &mut self,
        index_free: bool,
        report: &mut Report,
    ) -> Result<(), SyncError> {
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
                Err(e) => return Err(IoError::at("read", &path)(e).into()),
            };
            if self.defer_heartbeat(rel, old, &bytes) {
                report.heartbeat_deferred = true;
                continue;
            }
            if matches!(
                Tree::classify_relative(rel),
                Ok(trinity_core::layout::FileKind::Heartbeat(_))
            ) {
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
}
