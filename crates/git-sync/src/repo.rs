//! The state tree's repository, through gix: trees flattened to maps, blobs, commits, refs,
//! fetch, and an index kept in step with the branch so `git status` stays clean.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::ObjectId;
use gix::bstr::ByteSlice;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::refs::{FullName, Target};

use crate::merge::Flat;

/// A gix failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action}: {message}")]
pub struct RepoError {
    /// What was being done.
    pub action: &'static str,
    /// gix's message.
    pub message: String,
}

fn err(action: &'static str) -> impl FnOnce(gix::Error) -> RepoError {
    move |e| RepoError {
        action,
        message: format!("{e:#}"),
    }
}

fn err_any<E: std::fmt::Display>(action: &'static str) -> impl FnOnce(E) -> RepoError {
    move |e| RepoError {
        action,
        message: e.to_string(),
    }
}

/// The repository of one state tree.
pub struct Store {
    repo: gix::Repository,
    branch: FullName,
    tracking: FullName,
    workdir: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("workdir", &self.workdir)
            .field("branch", &self.branch)
            .finish()
    }
}

impl Store {
    /// Opens the repository whose working tree is `workdir`, syncing `branch` with `origin`.
    pub fn open(workdir: &Path, branch: &str) -> Result<Self, RepoError> {
        let mut repo = gix::open(workdir).map_err(err_any("open the state repository"))?;
        repo.object_cache_size_if_unset(512 * 1024);
        let branch_name: FullName = format!("refs/heads/{branch}")
            .try_into()
            .map_err(err_any("name the branch"))?;
        let tracking: FullName = format!("refs/remotes/origin/{branch}")
            .try_into()
            .map_err(err_any("name the remote-tracking branch"))?;
        Ok(Self {
            repo,
            branch: branch_name,
            tracking,
            workdir: workdir.to_owned(),
        })
    }

    /// The `.git` directory.
    pub fn git_dir(&self) -> &Path {
        self.repo.git_dir()
    }

    fn ref_id(&self, name: &FullName) -> Result<Option<ObjectId>, RepoError> {
        match self
            .repo
            .try_find_reference(name.as_ref())
            .map_err(err_any("read a reference"))?
        {
            Some(mut r) => Ok(Some(
                r.peel_to_id()
                    .map_err(err_any("resolve a reference"))?
                    .detach(),
            )),
            None => Ok(None),
        }
    }

    /// The local branch's commit.
    pub fn head(&self) -> Result<Option<ObjectId>, RepoError> {
        self.ref_id(&self.branch)
    }

    /// The remote-tracking branch's commit (as of the last fetch).
    pub fn tracking(&self) -> Result<Option<ObjectId>, RepoError> {
        self.ref_id(&self.tracking)
    }

    /// The tree of a commit.
    pub fn tree_of(&self, commit: ObjectId) -> Result<ObjectId, RepoError> {
        let c = self
            .repo
            .find_commit(commit)
            .map_err(err_any("read a commit"))?;
        Ok(c.tree_id()
            .map_err(err_any("read a commit's tree"))?
            .detach())
    }

    /// Every blob of a tree, by path.
    pub fn flatten(&self, tree: ObjectId) -> Result<Flat<ObjectId>, RepoError> {
        let tree = self.repo.find_tree(tree).map_err(err_any("read a tree"))?;
        let mut recorder = gix::traverse::tree::Recorder::default();
        tree.traverse()
            .breadthfirst(&mut recorder)
            .map_err(err_any("walk a tree"))?;
        Ok(recorder
            .records
            .into_iter()
            .filter(|e| e.mode.is_blob())
            .map(|e| (e.filepath.to_str_lossy().into_owned(), e.oid))
            .collect())
    }

    /// The flattened tree of a commit (empty for none).
    pub fn flatten_commit(&self, commit: Option<ObjectId>) -> Result<Flat<ObjectId>, RepoError> {
        match commit {
            Some(c) => self.flatten(self.tree_of(c)?),
            None => Ok(Flat::new()),
        }
    }

    /// A blob's bytes.
    pub fn blob(&self, id: ObjectId) -> Result<Vec<u8>, RepoError> {
        let mut blob = self.repo.find_blob(id).map_err(err_any("read a blob"))?;
        Ok(blob.take_data())
    }

    /// Stores bytes as a blob.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<ObjectId, RepoError> {
        Ok(self
            .repo
            .write_blob(bytes)
            .map_err(err("write a blob"))?
            .detach())
    }

    /// The id `bytes` would have as a blob, without storing it.
    pub fn hash_blob(&self, bytes: &[u8]) -> ObjectId {
        gix::objs::compute_hash(self.repo.object_hash(), gix::objs::Kind::Blob, bytes)
            .unwrap_or_else(|_| ObjectId::null(self.repo.object_hash()))
    }

    /// A tree equal to `flat` (built by editing `start`, the tree `flat` was derived from).
    pub fn write_tree(
        &self,
        start: Option<ObjectId>,
        start_flat: &Flat<ObjectId>,
        flat: &Flat<ObjectId>,
    ) -> Result<ObjectId, RepoError> {
        let base = start.unwrap_or_else(|| ObjectId::empty_tree(self.repo.object_hash()));
        let mut editor = self
            .repo
            .edit_tree(base)
            .map_err(err("start editing a tree"))?;
        for (path, old) in start_flat {
            if !flat.contains_key(path) {
                editor
                    .remove(path.as_str())
                    .map_err(err("remove a path from a tree"))?;
            } else if flat.get(path) == Some(old) {
                continue;
            }
        }
        for (path, id) in flat {
            if start_flat.get(path) != Some(id) {
                editor
                    .upsert(path.as_str(), gix::object::tree::EntryKind::Blob, *id)
                    .map_err(err("add a path to a tree"))?;
            }
        }
        Ok(editor.write().map_err(err("write a tree"))?.detach())
    }

    /// Writes a commit object (no reference is moved).
    pub fn commit(
        &self,
        who: &str,
        message: &str,
        tree: ObjectId,
        parents: &[ObjectId],
    ) -> Result<ObjectId, RepoError> {
        let time = gix::date::Time::now_utc();
        let mut buf = gix::date::parse::TimeBuf::default();
        let sig = gix::actor::SignatureRef {
            name: who.into(),
            email: "trinity@trinity.invalid".into(),
            time: time.to_str(&mut buf),
        };
        let commit = self
            .repo
            .new_commit_as(sig, sig, message, tree, parents.iter().copied())
            .map_err(err("write a commit"))?;
        Ok(commit.id)
    }

    /// Moves the local branch from `expected` to `new` (atomically, failing if it moved).
    pub fn set_head(
        &self,
        new: ObjectId,
        expected: Option<ObjectId>,
        why: &str,
    ) -> Result<(), RepoError> {
        self.set_ref(&self.branch, new, expected, why)
    }

    /// Moves the remote-tracking branch (after a push).
    pub fn set_tracking(&self, new: ObjectId) -> Result<(), RepoError> {
        self.set_ref(&self.tracking, new, None, "git-sync: pushed")
    }

    fn set_ref(
        &self,
        name: &FullName,
        new: ObjectId,
        expected: Option<ObjectId>,
        why: &str,
    ) -> Result<(), RepoError> {
        let expected = match expected {
            Some(id) => PreviousValue::MustExistAndMatch(Target::Object(id)),
            None => PreviousValue::Any,
        };
        self.repo
            .edit_reference(RefEdit {
                change: Change::Update {
                    log: LogChange {
                        mode: RefLog::AndReference,
                        force_create_reflog: false,
                        message: why.into(),
                    },
                    expected,
                    new: Target::Object(new),
                },
                name: name.clone(),
                deref: false,
            })
            .map_err(err("move a branch"))?;
        Ok(())
    }

    /// The best common ancestor of two commits.
    pub fn merge_base(&self, a: ObjectId, b: ObjectId) -> Result<Option<ObjectId>, RepoError> {
        Ok(self
            .repo
            .merge_base(a, b)
            .map_err(err("find the merge base"))?
            .map(|id| id.detach()))
    }

    /// True when `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: ObjectId, descendant: ObjectId) -> Result<bool, RepoError> {
        if ancestor == descendant {
            return Ok(true);
        }
        Ok(self.merge_base(ancestor, descendant)? == Some(ancestor))
    }

    /// Fetches `origin` (gix; refspecs from the repository's config). Returns the
    /// remote-tracking commit afterwards.
    pub fn fetch(&self) -> Result<Option<ObjectId>, RepoError> {
        let remote = self
            .repo
            .find_remote("origin")
            .map_err(err_any("find the remote `origin`"))?;
        let interrupt = AtomicBool::new(false);
        remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(err_any("connect to the remote"))?
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(err_any("list the remote's branches"))?
            .receive(gix::progress::Discard, &interrupt)
            .map_err(err_any("fetch"))?;
        self.tracking()
    }

    /// Rewrites `.git/index` from `tree`, with file stats for the working files whose contents
    /// match, so `git status` is clean and fast.
    pub fn write_index(&self, tree: ObjectId) -> Result<(), RepoError> {
        let mut index = self
            .repo
            .index_from_tree(&tree)
            .map_err(err("build the index"))?;
        let hash = self.repo.object_hash();
        for (entry, path) in index.entries_mut_with_paths() {
            let Ok(rel) = gix::path::from_bstr(path) else {
                continue;
            };
            let file = self.workdir.join(rel);
            let Ok(meta) = gix::index::fs::Metadata::from_path_no_follow(&file) else {
                continue;
            };
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            if gix::objs::compute_hash(hash, gix::objs::Kind::Blob, &bytes).ok() == Some(entry.id)
                && let Ok(stat) = gix::index::entry::Stat::from_fs(&meta)
            {
                entry.stat = stat;
            }
        }
        index.remove_tree();
        index
            .write(gix::index::write::Options::default())
            .map_err(err_any("write the index"))?;
        Ok(())
    }
}
