//! Keeping the repository small: pack consolidation between cycles, and the history
//! compaction every PC follows.

use super::*;

/// The history's length is checked (against `sync.compact_after_commits`) on the first and
/// then every this many calls of [`Syncer::maintain_if_due`].
pub const COMPACTION_CHECK_EVERY: u32 = 100;

/// A PC that is not the fleet's coordinator compacts only once the history has grown this much
/// past `compact_after_commits` (so one PC does it, and any PC if the coordinator is gone).
const NON_COORDINATOR_SLACK: f64 = 1.5;

impl Syncer {
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
    pub(super) fn prune_history(&self) -> Result<(), SyncError> {
        let run = |args: &[&str]| self.git.run(args).map(drop).map_err(SyncError::Maintenance);
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
            .map_err(SyncError::Maintenance)?
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
        if let Err(e) =
            self.link
                .git()
                .run(["push", "--porcelain", "--quiet", &lease, "origin", &spec])
        {
            SyncError::lost_race(e)?;
            tracing::info!(
                "the remote moved while compacting; the compaction waits for a later check"
            );
            return Ok(None);
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

    pub(super) fn repack(&self) -> Result<(), SyncError> {
        let geometric = self.git.run(["repack", "-d", "-l", "-q", "--geometric=2"]);
        match geometric {
            Ok(_) => Ok(()),
            // git older than 2.33 has no geometric repacking: consolidate everything instead.
            Err(e) if e.stderr().contains("geometric") => self
                .git
                .run(["repack", "-a", "-d", "-l", "-q"])
                .map(drop)
                .map_err(SyncError::Maintenance),
            Err(e) => Err(SyncError::Maintenance(e)),
        }
    }
}
