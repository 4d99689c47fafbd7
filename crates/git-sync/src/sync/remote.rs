//! The remote side: is there anything new, fetch, and push (with compare-and-swap races told
//! apart from network and authentication failures).

use super::*;

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

impl Syncer {
    /// A cheap check: has the remote branch moved away from our remote-tracking branch?
    pub(super) fn remote_moved(&mut self) -> Result<bool, SyncError> {
        let tracking = self.store.tracking()?;
        let remote = self.remote_head()?;
        Ok(remote.is_some() && remote != tracking)
    }

    /// The remote branch's commit: read straight from a bare repository on this machine, or
    /// with `git ls-remote` for a URL.
    pub(super) fn remote_head(&mut self) -> Result<Option<ObjectId>, SyncError> {
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
                // The branch names its commit: read the id, never the object. Peeling would
                // open the remote's object database and keep its pack files mapped (every
                // push adds one): memory that grew with the remote, and files a Windows share
                // could not delete.
                Ok(Some(mut r)) => Ok(match r.try_id() {
                    Some(id) => Some(id.detach()),
                    None => r.peel_to_id().ok().map(|id| id.detach()),
                }),
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

    pub(super) fn fetch(&mut self) -> Result<(), SyncError> {
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
