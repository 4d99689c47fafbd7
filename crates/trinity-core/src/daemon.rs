//! The file-level pieces every Trinity program shares, below the program shell
//! (`trinity-runtime`, which owns the async runtime, watchers, timers and signals): file locks
//! between processes and one instance per tree, appends to shared logs, and the start (the
//! configuration, this PC, its tree).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::fsio::IoError;
use crate::ids::DaemonName;
use crate::layout::Tree;

/// An exclusive lock on a file, held until dropped. The operating system releases it when the
/// process dies, so a lock left by a crashed process is simply taken over.
#[derive(Debug)]
pub struct FileLock {
    /// Held for its lock; closing it releases the lock.
    _file: File,
    path: PathBuf,
}

fn open_lock_file(path: &Path) -> Result<File, IoError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(IoError::at("create directory", dir))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(IoError::at("open lock file", path))
}

impl FileLock {
    /// Waits for the lock.
    pub fn acquire(path: &Path) -> Result<Self, IoError> {
        let file = open_lock_file(path)?;
        file.lock().map_err(IoError::at("lock", path))?;
        Ok(Self {
            _file: file,
            path: path.to_owned(),
        })
    }

    /// Takes the lock if nobody holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>, IoError> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self {
                _file: file,
                path: path.to_owned(),
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => Err(IoError::new("lock", path, source)),
        }
    }

    /// Creates the lock file if it is missing, without taking the lock.
    pub fn create_file(path: &Path) -> Result<(), IoError> {
        open_lock_file(path).map(drop)
    }

    /// Waits for a shared hold of an existing lock file (any number of shared holders, no
    /// exclusive one); `None` when the file does not exist. Never creates it.
    pub fn acquire_shared_existing(path: &Path) -> Result<Option<Self>, IoError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(IoError::new("open lock file", path, e)),
        };
        file.lock_shared().map_err(IoError::at("lock", path))?;
        Ok(Some(Self {
            _file: file,
            path: path.to_owned(),
        }))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why a daemon could not start on a tree.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Another process holds the tree.
    #[error("another {daemon} is already running on {}{}", tree.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    AlreadyRunning {
        /// The daemon.
        daemon: DaemonName,
        /// The tree's root.
        tree: PathBuf,
        /// The other process, when its pid could be read.
        pid: Option<u32>,
    },
    /// The lock file could not be used.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Proof that this process is the only `daemon` on the tree (`local/run/{daemon}.lock`, which
/// also records the pid in `local/run/{daemon}.pid`).
#[derive(Debug)]
pub struct InstanceLock {
    _lock: FileLock,
    pid_file: PathBuf,
}

impl InstanceLock {
    /// Takes the tree for `daemon`, or says who has it.
    pub fn acquire(tree: &Tree, daemon: &DaemonName) -> Result<Self, InstanceError> {
        let path = tree.lock_file(daemon);
        let pid_file = tree.pid_file(daemon);
        match FileLock::try_acquire(&path)? {
            Some(lock) => {
                let _ = crate::fsio::write_atomic(
                    &pid_file,
                    format!("{}\n", std::process::id()).as_bytes(),
                );
                Ok(Self {
                    _lock: lock,
                    pid_file,
                })
            }
            None => {
                let pid = read_pid(&pid_file);
                Err(InstanceError::AlreadyRunning {
                    daemon: daemon.clone(),
                    tree: tree.root().to_owned(),
                    pid,
                })
            }
        }
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.pid_file);
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    let mut s = String::new();
    let mut f = File::open(path).ok()?;
    f.seek(SeekFrom::Start(0)).ok()?;
    f.take(32).read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// Appends one line to a file under `lock`, as a single write. Safe with many concurrent
/// writers: the lock serialises them, and a reader never sees a half line unless the machine
/// crashed mid-write (readers skip a line that does not parse).
pub fn append_line(path: &Path, line: &str, lock: &Path) -> Result<(), IoError> {
    let _guard = FileLock::acquire(lock)?;
    append_line_locked(path, line)
}

/// [`append_line`] for a caller that already holds the lock.
pub fn append_line_locked(path: &Path, line: &str) -> Result<(), IoError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(IoError::at("create directory", dir))?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(IoError::at("open for appending", path))?;
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    f.write_all(&bytes).map_err(IoError::at("append to", path))
}

/// Why a daemon's program could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is missing, invalid, or lacks `pc`.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The state tree is not there.
    #[error("the state tree {} does not exist: run `trinity init` first", .0.display())]
    NoTree(std::path::PathBuf),
}

/// What every daemon program starts from: the configuration (warnings printed as
/// `{program}: warning: …`), the directory of the file it came from, this PC and its tree
/// (which must exist).
#[derive(Debug)]
pub struct Start {
    /// The configuration.
    pub config: crate::config::Config,
    /// The directory of the config file, if one was read.
    pub config_dir: Option<std::path::PathBuf>,
    /// This PC.
    pub pc: crate::ids::PcId,
    /// The state tree.
    pub tree: Tree,
}

/// Loads the configuration the way every daemon does.
pub fn load_config(
    program: &str,
    path: Option<&Path>,
) -> Result<crate::config::Loaded, crate::config::ConfigError> {
    let loaded = crate::config::load(&crate::config::Sources::from_env(path))?;
    for warning in &loaded.warnings {
        eprintln!("{program}: warning: {warning}");
    }
    Ok(loaded)
}

/// [`load_config`], then `pc` and an existing state tree.
pub fn start(program: &str, path: Option<&Path>) -> Result<Start, StartError> {
    let loaded = load_config(program, path)?;
    let pc = loaded.config.require_pc()?.clone();
    let tree = loaded.config.tree();
    if !tree.root().is_dir() {
        return Err(StartError::NoTree(tree.root().to_owned()));
    }
    let config_dir = loaded
        .file
        .as_deref()
        .and_then(Path::parent)
        // `trinity.toml` given bare has the empty path as parent: the current directory.
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.to_owned()));
    Ok(Start {
        config: loaded.config,
        config_dir,
        pc,
        tree,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_instance_is_refused_and_the_lock_is_released_on_drop() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = Tree::new(dir.path());
        let name = DaemonName::new("git-sync").expect("valid");
        let first = InstanceLock::acquire(&tree, &name).expect("first");
        let err = InstanceLock::acquire(&tree, &name).expect_err("second refused");
        let text = err.to_string();
        assert!(
            text.contains("another git-sync is already running"),
            "{text}"
        );
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        InstanceLock::acquire(&tree, &name).expect("free again");
    }

    /// The checkout lock's semantics, on every platform (the Windows build runs it under
    /// wine): readers share it, and git-sync's exclusive hold waits for every reader to go.
    #[test]
    fn checkouts_are_held_back_by_any_number_of_readers_and_only_while_they_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = Tree::new(dir.path());
        let path = tree.sync_checkout_lock_file();
        assert!(
            crate::syncstate::hold_checkouts(&tree).is_none(),
            "no git-sync ever ran: nothing to hold"
        );
        assert!(!path.exists(), "a reader never creates the lock file");
        FileLock::create_file(&path).expect("create");
        let first = crate::syncstate::hold_checkouts(&tree).expect("held");
        let second = crate::syncstate::hold_checkouts(&tree).expect("held by a second reader");
        assert!(FileLock::try_acquire(&path).expect("try").is_none());
        drop(first);
        assert!(FileLock::try_acquire(&path).expect("try").is_none());
        drop(second);
        let checkout = FileLock::try_acquire(&path)
            .expect("try")
            .expect("free once the readers are gone");
        drop(checkout);
    }

    #[test]
    fn concurrent_appends_never_interleave() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("events.jsonl");
        let lock = dir.path().join("events.lock");
        std::thread::scope(|s| {
            for t in 0..8 {
                let (file, lock) = (&file, &lock);
                s.spawn(move || {
                    for i in 0..50 {
                        let line = format!("{t}-{i}-{}", "x".repeat(1000));
                        append_line(file, &line, lock).expect("append");
                    }
                });
            }
        });
        let text = fs::read_to_string(&file).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 400);
        assert!(lines.iter().all(|l| l.len() > 1000 && l.ends_with('x')));
    }
}
