//! The pieces every daemon is made of, below the program shell (`trinity-runtime`): file locks
//! between processes and one instance per tree, appends to shared logs, the start (the
//! configuration, this PC, its tree), the one-thread runtime stopped by a signal or a token that
//! tests and the Windows service cancel, file watchers and timers, alerts said once, and
//! giving freed memory back.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

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

/// A token cancelled on Ctrl-C, SIGTERM (Unix) or Ctrl-Break (Windows). Call inside a tokio
/// runtime. Tests make a plain [`CancellationToken`] and cancel it themselves.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stop requested; finishing the current step");
        t.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(windows)]
async fn wait_for_signal() {
    match tokio::signal::windows::ctrl_break() {
        Ok(mut brk) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = brk.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(any(unix, windows)))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
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

/// Runs a daemon's async loop until Ctrl-C, Ctrl-Break or SIGTERM or, given a token (a Windows
/// service's: the service control manager cancels it), until that token is cancelled. On one
/// thread: a daemon's loop handles one event at a time and does its file and git work inline,
/// so no worker thread is ever started or handed over (that churn made memory creep up over
/// hours).
pub fn run_with<F, Fut, T>(shutdown: Option<CancellationToken>, run: F) -> std::io::Result<T>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(async {
        let token = shutdown.unwrap_or_else(shutdown_on_signals);
        run(token).await
    }))
}

/// Watches each of `dirs` (recursively where its flag says so) and sends `()` for every event
/// that `wanted` accepts. The watcher stops when dropped. Where watching cannot be set up (no
/// inotify watches left, a directory missing, …) the error comes back and the channel stays
/// silent: the daemon's timers carry on alone (so it does, with an error, when `dirs` is empty).
pub fn watch(
    dirs: &[(&Path, bool)],
    wanted: impl Fn(&notify::Event) -> bool + Send + 'static,
) -> (
    notify::Result<notify::RecommendedWatcher>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    use notify::Watcher;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    if dirs.is_empty() {
        // No watcher (and no thread of its own) for nothing.
        return (Err(notify::Error::generic("nothing to watch")), rx);
    }
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res
            && wanted(&event)
        {
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| {
        for (dir, recursive) in dirs {
            let mode = if *recursive {
                notify::RecursiveMode::Recursive
            } else {
                notify::RecursiveMode::NonRecursive
            };
            w.watch(dir, mode)?;
        }
        Ok(w)
    });
    (watcher, rx)
}

/// A timer that ticks every `period`, at once first, and skips the ticks it missed while the
/// daemon was busy.
pub fn ticker(period: std::time::Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    t
}

/// Hands the memory the allocator holds free back to the operating system. glibc keeps freed
/// blocks in its arenas and returns only a free tail, so a long-lived daemon whose bursts of
/// work (a fetch, a repack, a compaction) free memory in the middle of its heap keeps that
/// memory resident for good: git-sync's resident memory rose by a third over an hour's soak
/// while its live heap stayed under 2 MB (docs/benchmarks.md). Cheap (a walk of the free
/// lists); call it after such a burst. Does nothing where the allocator is not glibc's.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::trim();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
// SAFETY: `malloc_trim` takes no pointer and is thread-safe (it locks each arena in turn); it
// only gives whole free pages back with `madvise`/`sbrk`, so no live allocation is touched.
#[allow(unsafe_code)]
mod glibc {
    unsafe extern "C" {
        safe fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }

    pub(super) fn trim() {
        malloc_trim(0);
    }
}

/// Problems only an operator can fix (a fleet file without this PC, a journal record set
/// aside as corrupt): a loop that meets them on every pass says each one once, and again only
/// after it went away and came back.
#[derive(Debug, Default)]
pub struct OperatorAlerts {
    last_pass: std::collections::BTreeSet<String>,
    this_pass: std::collections::BTreeSet<String>,
}

impl OperatorAlerts {
    /// Notes a problem met in this pass; true when it is new (so to be logged).
    pub fn note(&mut self, message: String) -> bool {
        let new = !self.last_pass.contains(&message);
        self.this_pass.insert(message);
        new
    }

    /// Ends a pass: problems not met in it are forgotten.
    pub fn end_pass(&mut self) {
        self.last_pass = std::mem::take(&mut self.this_pass);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_reports_the_changes_its_filter_wants_and_nothing_without_directories() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let (watcher, mut rx) = watch(&[(dir.path(), false)], |e| {
                e.paths
                    .iter()
                    .any(|p| p.extension().is_some_and(|x| x == "json"))
            });
            let _watcher = watcher.expect("watching a directory");
            fs::write(dir.path().join("ignored.txt"), "x").expect("write");
            fs::write(dir.path().join("wanted.json"), "{}").expect("write");
            // The filter sees every event; the .json file's reaches the channel.
            let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await;
            assert_eq!(got.expect("an event within 10 s"), Some(()));

            let (none, mut closed) = watch(&[], |_| true);
            assert!(none.is_err(), "nothing to watch is an error");
            assert_eq!(closed.recv().await, None, "its channel is closed at once");

            // A ticker ticks at once, then every period, skipping what it missed.
            let mut t = ticker(std::time::Duration::from_secs(3600));
            tokio::time::timeout(std::time::Duration::from_secs(10), t.tick())
                .await
                .expect("the first tick is immediate");
            assert_eq!(
                t.missed_tick_behavior(),
                tokio::time::MissedTickBehavior::Skip
            );
        });
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn releasing_free_memory_gives_freed_pages_back() {
        fn anon_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").expect("status");
            let line = status
                .lines()
                .find(|l| l.starts_with("RssAnon:"))
                .expect("RssAnon");
            line.split_whitespace()
                .nth(1)
                .expect("kB")
                .parse()
                .expect("number")
        }
        // 64 MB in blocks small enough to come from the heap, not their own mappings; one
        // block kept at the end pins the heap's top, so freeing the rest returns nothing by
        // itself: the freed pages stay resident until they are released.
        let mut blocks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![i as u8; 4096]).collect();
        let pin = vec![1u8; 4096];
        blocks.clear();
        blocks.shrink_to_fit();
        let before = anon_kib();
        release_free_memory();
        let after = anon_kib();
        assert_eq!(pin[0], 1);
        assert!(
            after + 32 * 1024 < before,
            "resident anonymous memory {before} KiB -> {after} KiB"
        );
    }

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

    #[test]
    fn operator_alerts_are_said_once_and_again_after_they_went_away() {
        let mut alerts = OperatorAlerts::default();
        assert!(alerts.note("a".to_owned()));
        assert!(alerts.note("b".to_owned()));
        alerts.end_pass();
        assert!(!alerts.note("a".to_owned()));
        alerts.end_pass();
        // "b" went away for a pass; "a" is still there.
        assert!(alerts.note("b".to_owned()));
        assert!(!alerts.note("a".to_owned()));
        alerts.end_pass();
        alerts.end_pass();
        assert!(alerts.note("a".to_owned()));
    }
}
