//! The remote side: is there anything new, fetch, and push (with compare-and-swap races told
//! apart from network and authentication failures).

use super::*;

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

impl Syncer {
    /// A cheap check: has the remote branch moved away from our remote-tracking branch?
    pub(super) fn remote_moved(&mut self) -> Result<bool, SyncError> {
        let tracking = self.store.tracking()?;
        let remote = self.remote_head()?;
        Ok(remote.is_some() && remote != tracking)
    }

    /// The remote branch's commit: read straight from a bare repository on this machine, or
    /// with one request on the session kept open with the remote ([`Link::head`]).
    pub(super) fn remote_head(&mut self) -> Result<Option<ObjectId>, SyncError> {
        let head = self.link.head(&self.config.sync.branch, None)?;
        self.remote_seen = head;
        Ok(head)
    }

    /// A quick look at whether the remote answers (while backing off after a failure):
    /// `deadline` bounds it. Remembers what it saw, so the next cycle's check is answered.
    pub fn probe(&mut self, deadline: Duration) -> Result<(), SyncError> {
        let head = self.link.head(&self.config.sync.branch, Some(deadline))?;
        self.remote_seen = head;
        Ok(())
    }

    pub(super) fn fetch(&mut self) -> Result<(), SyncError> {
        let tracking = self.store.tracking()?;
        if let Some(t) = tracking {
            self.store
                .set_named_ref(LAST_TRACKING, t, "git-sync: before a fetch")?;
        }
        if self.local_remote().is_some() {
            self.store.fetch().map_err(|e| match e {
                FetchError::Local(e) => SyncError::Repo(e),
                remote @ FetchError::Remote { .. } => {
                    crate::link::LinkError::from_text(remote.to_string()).into()
                }
            })?;
        } else {
            let want = self.remote_seen;
            match want {
                // Already here (pushed by this PC, or fetched before a crash): no transfer.
                Some(w) if self.store.has_commit(w) => {}
                _ => {
                    let haves: Vec<ObjectId> = [tracking, self.store.head()?]
                        .into_iter()
                        .flatten()
                        .collect();
                    let moved = self.link.fetch(&self.config.sync.branch, want, &haves)?;
                    if moved {
                        self.state.last_fetch = Some(self.now());
                        failpoint::hit("sync:fetched");
                        return Ok(());
                    }
                }
            }
            if let Some(w) = want {
                self.store.set_tracking(w)?;
            }
        }
        self.state.last_fetch = Some(self.now());
        failpoint::hit("sync:fetched");
        Ok(())
    }

    /// Pushes while the local branch is ahead; a lost race fetches, merges and retries with
    /// jitter for as long as the remote keeps moving (progress).
    pub(super) fn push(&mut self, index_free: bool, report: &mut Report) -> Result<(), SyncError> {
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
                .link
                .git()
                .run(["push", "--porcelain", "--quiet", "origin", &spec])
            {
                Ok(_) => {
                    self.store.set_tracking(head)?;
                    self.state.last_push = Some(self.now());
                    report.pushed = true;
                    tracing::debug!(head = %short(head), "pushed");
                    return Ok(());
                }
                Err(e) => {
                    let lost = SyncError::lost_race(e)?;
                    report.races += 1;
                    self.state.push_races += 1;
                    let before = self.store.tracking()?;
                    std::thread::sleep(jitter(report.races));
                    self.remote_head()?;
                    self.fetch_noting(report)?;
                    let after = self.store.tracking()?;
                    if after == before {
                        stuck += 1;
                        if stuck >= 3 {
                            return Err(SyncError::Push(lost));
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
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_small() {
        for attempt in 0..50 {
            let j = jitter(attempt);
            assert!(j >= Duration::from_millis(20) && j < Duration::from_millis(400));
        }
    }
}
