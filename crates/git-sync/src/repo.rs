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

/// Index slots of the object database: how many pack indices the handle can know at once. The
/// table is sized when the repository is opened and never grows, so it must stay well above
/// [`MAX_PACKS`] plus the packs a burst of fetches adds before maintenance runs (every fetch adds
/// one; a cycle that keeps losing push races fetches once per round).
pub const INDEX_SLOTS: usize = 256;

/// Past this many pack files, the daemon consolidates them (`git repack`) between two cycles.
pub const MAX_PACKS: usize = 16;

/// Past this many loose objects (one per blob, tree and commit this PC writes), the daemon packs
/// them between two cycles.
pub const MAX_LOOSE_OBJECTS: usize = 2000;

/// A failed fetch.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The remote could not be reached or stopped answering.
    #[error("failed to {action}: {message}")]
    Remote {
        /// What was being done.
        action: &'static str,
        /// gix's message.
        message: String,
    },
    /// This repository failed (its object database, its references).
    #[error(transparent)]
    Local(#[from] RepoError),
}

/// True when a failure while receiving a pack came from the connection, not from this
/// repository.
fn is_transport_failure(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "connection",
        "broken pipe",
        "early eof",
        "unexpected end",
        "unexpectedeof",
        "timed out",
        "could not read from remote",
        "transport",
        "remote end hung up",
    ]
    .iter()
    .any(|n| m.contains(n))
}

fn open_repo(workdir: &Path) -> Result<gix::Repository, RepoError> {
    let options = gix::open::Options::default().object_store_slots(
        gix::odb::store::init::Slots::AsNeededByDiskState {
            multiplier: 2.0,
            minimum: INDEX_SLOTS,
        },
    );
    let mut repo =
        gix::open_opts(workdir, options).map_err(err_any("open the state repository"))?;
    repo.object_cache_size_if_unset(512 * 1024);
    Ok(repo)
}

/// The object database's files on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectCounts {
    /// Pack files (counted by their `.idx`).
    pub packs: usize,
    /// Loose objects.
    pub loose: usize,
    /// Bytes of packs and loose objects together.
    pub bytes: u64,
}

impl ObjectCounts {
    /// Counts `objects_dir` (a repository's `objects/`); unreadable parts count as empty.
    pub fn read(objects_dir: &Path) -> Self {
        let mut out = Self::default();
        let Ok(dirs) = std::fs::read_dir(objects_dir) else {
            return out;
        };
        for dir in dirs.flatten() {
            let name = dir.file_name();
            let name = name.to_string_lossy();
            let is_pack = name == "pack";
            let is_fanout = name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if !is_pack && !is_fanout {
                continue;
            }
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for file in files.flatten() {
                let Ok(meta) = file.metadata() else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let file_name = file.file_name();
                let file_name = file_name.to_string_lossy();
                if is_pack {
                    if file_name.ends_with(".idx") {
                        out.packs += 1;
                    }
                } else if !file_name.starts_with("tmp") {
                    out.loose += 1;
                }
                out.bytes += meta.len();
            }
        }
        out
    }

    /// Whether maintenance is due: too many packs or loose objects.
    pub fn needs_maintenance(&self) -> bool {
        self.packs > MAX_PACKS || self.loose > MAX_LOOSE_OBJECTS
    }
}

/// The repository of one state tree. Its gix handle can be closed (so that maintenance can
/// replace pack files that an open handle would keep mapped, which Windows refuses to delete)
/// and opened again.
pub struct Store {
    repo: Option<gix::Repository>,
    branch: FullName,
    tracking: FullName,
    workdir: PathBuf,
    git_dir: PathBuf,
    hash: gix::hash::Kind,
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
        let repo = open_repo(workdir)?;
        let git_dir = repo.git_dir().to_owned();
        let hash = repo.object_hash();
        let branch_name: FullName = format!("refs/heads/{branch}")
            .try_into()
            .map_err(err_any("name the branch"))?;
        let tracking: FullName = format!("refs/remotes/origin/{branch}")
            .try_into()
            .map_err(err_any("name the remote-tracking branch"))?;
        Ok(Self {
            repo: Some(repo),
            branch: branch_name,
            tracking,
            workdir: workdir.to_owned(),
            git_dir,
            hash,
        })
    }

    /// Drops the gix handle: its caches, and the pack files it keeps open and mapped.
    pub fn close(&mut self) {
        self.repo = None;
    }

    /// Opens the repository afresh: a new object database that sees exactly the packs on disk
    /// now (after maintenance, or after an object-database error).
    pub fn reopen(&mut self) -> Result<(), RepoError> {
        self.repo = None;
        self.repo = Some(open_repo(&self.workdir)?);
        Ok(())
    }

    fn repo(&self) -> Result<&gix::Repository, RepoError> {
        self.repo.as_ref().ok_or(RepoError {
            action: "use the state repository",
            message: "it is closed for maintenance".to_owned(),
        })
    }

    /// The `.git` directory.
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// What the object database holds on disk: pack files, loose objects and their bytes.
    pub fn objects_on_disk(&self) -> ObjectCounts {
        ObjectCounts::read(&self.git_dir.join("objects"))
    }

    fn ref_id(&self, name: &FullName) -> Result<Option<ObjectId>, RepoError> {
        match self
            .repo()?
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
            .repo()?
            .find_commit(commit)
            .map_err(err_any("read a commit"))?;
        Ok(c.tree_id()
            .map_err(err_any("read a commit's tree"))?
            .detach())
    }

    /// Every blob of a tree, by path.
    pub fn flatten(&self, tree: ObjectId) -> Result<Flat<ObjectId>, RepoError> {
        let tree = self
            .repo()?
            .find_tree(tree)
            .map_err(err_any("read a tree"))?;
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
        let mut blob = self.repo()?.find_blob(id).map_err(err_any("read a blob"))?;
        Ok(blob.take_data())
    }

    /// Stores bytes as a blob.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<ObjectId, RepoError> {
        Ok(self
            .repo()?
            .write_blob(bytes)
            .map_err(err("write a blob"))?
            .detach())
    }

    /// The id `bytes` would have as a blob, without storing it.
    pub fn hash_blob(&self, bytes: &[u8]) -> ObjectId {
        gix::objs::compute_hash(self.hash, gix::objs::Kind::Blob, bytes)
            .unwrap_or_else(|_| ObjectId::null(self.hash))
    }

    /// A tree equal to `flat` (built by editing `start`, the tree `flat` was derived from).
    pub fn write_tree(
        &self,
        start: Option<ObjectId>,
        start_flat: &Flat<ObjectId>,
        flat: &Flat<ObjectId>,
    ) -> Result<ObjectId, RepoError> {
        let base = start.unwrap_or_else(|| ObjectId::empty_tree(self.hash));
        let mut editor = self
            .repo()?
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
            .repo()?
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

    /// A reference of git-sync's own (`refs/trinity/…`), if set.
    pub fn named_ref(&self, name: &str) -> Result<Option<ObjectId>, RepoError> {
        let name: FullName = name.try_into().map_err(err_any("name a reference"))?;
        self.ref_id(&name)
    }

    /// Sets a reference of git-sync's own to `id`.
    pub fn set_named_ref(&self, name: &str, id: ObjectId, why: &str) -> Result<(), RepoError> {
        let name: FullName = name.try_into().map_err(err_any("name a reference"))?;
        self.set_ref(&name, id, None, why)
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
        self.repo()?
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

    /// Whether the object database holds `id` (a commit fetched or made here).
    pub fn has_commit(&self, id: ObjectId) -> bool {
        self.repo().is_ok_and(|r| r.has_object(id))
    }

    /// The best common ancestor of two commits.
    pub fn merge_base(&self, a: ObjectId, b: ObjectId) -> Result<Option<ObjectId>, RepoError> {
        Ok(self
            .repo()?
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
    /// remote-tracking commit afterwards. A failure to talk to the remote is told apart from a
    /// failure of this repository to take what arrived (writing the pack, refreshing the object
    /// database, moving the remote-tracking branch).
    pub fn fetch(&self) -> Result<Option<ObjectId>, FetchError> {
        let remote = self
            .repo()?
            .find_remote("origin")
            .map_err(err_any("find the remote `origin`"))?;
        let interrupt = AtomicBool::new(false);
        let remote_err = |action: &'static str| {
            move |e: gix::Error| FetchError::Remote {
                action,
                message: format!("{e:#}"),
            }
        };
        remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(remote_err("connect to the remote"))?
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(remote_err("list the remote's branches"))?
            .receive(gix::progress::Discard, &interrupt)
            .map_err(|e| {
                let message = format!("{e:#}");
                if is_transport_failure(&message) {
                    FetchError::Remote {
                        action: "receive the remote's objects",
                        message,
                    }
                } else {
                    FetchError::Local(RepoError {
                        action: "store the fetched objects",
                        message,
                    })
                }
            })?;
        Ok(self.tracking()?)
    }

    /// Rewrites `.git/index` from `tree`, with file stats for the working files whose contents
    /// match, so `git status` is clean and fast.
    pub fn write_index(&self, tree: ObjectId) -> Result<(), RepoError> {
        let mut index = self
            .repo()?
            .index_from_tree(&tree)
            .map_err(err("build the index"))?;
        let hash = self.hash;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_object_database_failure_is_not_a_transport_failure() {
        for local in [
            "The object database has too few index slots, current=32, needed=1",
            "failed to open pack .git/objects/pack/pack-1.pack: No such file or directory",
            "An object with id 0123 could not be found",
        ] {
            assert!(!is_transport_failure(local), "{local}");
        }
        for remote in [
            "Connection reset by peer",
            "early EOF",
            "the remote end hung up unexpectedly",
            "fatal: Could not read from remote repository.",
        ] {
            assert!(is_transport_failure(remote), "{remote}");
        }
    }

    #[test]
    fn object_counts_see_packs_and_loose_objects() {
        let dir = tempfile::tempdir().expect("temp");
        let objects = dir.path();
        std::fs::create_dir_all(objects.join("pack")).expect("pack dir");
        std::fs::create_dir_all(objects.join("ab")).expect("fanout");
        std::fs::create_dir_all(objects.join("info")).expect("info");
        for i in 0..3 {
            std::fs::write(objects.join(format!("pack/pack-{i}.idx")), b"i").expect("idx");
            std::fs::write(objects.join(format!("pack/pack-{i}.pack")), b"pp").expect("pack");
        }
        std::fs::write(objects.join("ab/cdef"), b"loose").expect("loose");
        std::fs::write(objects.join("ab/tmp_obj_x"), b"t").expect("temp object");
        std::fs::write(objects.join("info/packs"), b"x").expect("info");
        let c = ObjectCounts::read(objects);
        assert_eq!((c.packs, c.loose), (3, 1));
        assert_eq!(c.bytes, 3 + 6 + 5 + 1);
        assert!(!c.needs_maintenance());
        let many = ObjectCounts {
            packs: MAX_PACKS + 1,
            ..c
        };
        assert!(many.needs_maintenance());
    }
}
