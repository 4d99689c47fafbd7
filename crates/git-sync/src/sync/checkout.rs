//! Bringing the fleet's changes in: the merge by path class, following a compacted history,
//! and the journaled update of the working tree.

use super::*;

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

impl Syncer {
    /// Merges the remote-tracking branch into the local one and updates the working tree.
    /// Returns whether anything changed locally.
    pub(super) fn merge_remote(
        &mut self,
        index_free: bool,
        report: &mut Report,
    ) -> Result<bool, SyncError> {
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
    pub(super) fn three_way(
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
    pub(super) fn follow_compaction(
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
    pub(super) fn holds_lease(&self, flat: &Flat<ObjectId>) -> bool {
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
    pub(super) fn finish_checkout(&mut self, index_free: bool) -> Result<(), SyncError> {
        let path = self.tree.sync_checkout_file();
        let Some(pending) = local::read::<PendingCheckout>(&path)? else {
            return Ok(());
        };
        let to = ObjectId::from_hex(pending.to.as_bytes()).map_err(|e| {
            SyncError::Repo(RepoError {
                action: "read the pending checkout record",
                message: format!("{}: bad object id: {e}", path.display()),
            })
        })?;
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
        {
            // Readers that decide from several files hold this shared: they see the tree as of
            // one commit or the other, never half of the update.
            let _exclusive =
                trinity_core::daemon::FileLock::acquire(&self.tree.sync_checkout_lock_file())?;
            self.apply(&from_flat, &to_flat)?;
        }
        failpoint::hit("sync:checked-out");
        if index_free {
            self.store.write_index(to_tree)?;
        }
        std::fs::remove_file(&path).map_err(IoError::at("remove", &path))?;
        Ok(())
    }

    /// Makes the working tree go from `from` to `to`, leaving alone files changed locally since
    /// (they are committed on the next cycle) — except compare-and-swap files, where the
    /// remote's version has won.
    pub(super) fn apply(
        &mut self,
        from: &Flat<ObjectId>,
        to: &Flat<ObjectId>,
    ) -> Result<(), SyncError> {
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
                    Err(e) => return Err(IoError::at("remove", &path)(e).into()),
                },
            }
        }
        Ok(())
    }

    /// Keeps our side of an undecidable path under `local/conflicts/` and raises an escalation.
    pub(super) fn keep_conflict(&mut self, c: &merge::Conflict<ObjectId>) -> Result<(), SyncError> {
        let now = self.now();
        let stamp = trinity_core::ids::file_timestamp(now);
        let keep = self.tree.conflict_copy_file(&stamp, &c.path);
        if let Some(ours) = c.ours {
            let bytes = self.store.blob(ours)?;
            fsio::write_atomic(&keep, &bytes)?;
        }
        self.state.conflicts += 1;
        let id = RecordId::new(format!(
            "{stamp}-merge-{}-{}",
            self.pc, self.state.conflicts
        ))?;
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
                "The remote's version is in the tree; {}'s is in {} on that PC.",
                self.pc,
                keep.strip_prefix(self.tree.root())
                    .unwrap_or(&keep)
                    .display()
            )),
        };
        let path = self.tree.escalation_file(&id);
        if let Err(e) = fsio::create(&path, &escalation) {
            tracing::error!(error = %e, "cannot write the merge escalation");
        }
        tracing::error!(path = %c.path, why = %c.why, escalation = %id, "merge conflict no rule decides: kept both versions and escalated");
        Ok(())
    }
}
