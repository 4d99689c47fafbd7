//! Logging: one call gives stderr plus a rolling log file per daemon.
//!
//! `logs/<daemon>.log` is always the current file, so it can be tailed by name (`trinity logs
//! git-sync -f`, or `Get-Content -Wait` on Windows). When it would grow past
//! `logging.max_file_bytes` it becomes `<daemon>.1.log`, the older ones shift up, and only
//! `logging.max_files` files are kept. The filter comes from `TRINITY_LOG` when set (same syntax
//! as `RUST_LOG`), else from `logging.level`; the file watcher (`notify`) says only warnings and
//! errors unless the filter names it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LoggingConfig;
use crate::ids::DaemonName;

/// The environment variable holding the log filter.
pub const LOG_ENV: &str = "TRINITY_LOG";

/// A size-limited log file that rolls over, keeping a fixed number of old files.
#[derive(Debug)]
pub struct RollingFile {
    dir: PathBuf,
    name: DaemonName,
    max_bytes: u64,
    max_files: u32,
    file: Option<File>,
    written: u64,
}

impl RollingFile {
    /// A log `dir/<name>.log` of at most `max_bytes` per file and `max_files` files.
    pub fn new(dir: impl Into<PathBuf>, name: &DaemonName, max_bytes: u64, max_files: u32) -> Self {
        Self {
            dir: dir.into(),
            name: name.clone(),
            max_bytes: max_bytes.max(1),
            max_files: max_files.max(1),
            file: None,
            written: 0,
        }
    }

    /// The current file: `<dir>/<name>.log`.
    pub fn current_path(&self) -> PathBuf {
        crate::layout::log_file_in(&self.dir, &self.name, 0)
    }

    /// The `n`-th older file: `<dir>/<name>.<n>.log`.
    pub fn archive_path(&self, n: u32) -> PathBuf {
        crate::layout::log_file_in(&self.dir, &self.name, n.max(1))
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            fs::create_dir_all(&self.dir)?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.current_path())?;
            self.written = file.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some(file);
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("log file not open"))
    }

    fn roll(&mut self) {
        self.file = None;
        // Shift <name>.(k).log to (k+1), dropping the oldest. A failure (a file held open by a
        // reader on Windows) only delays the roll: logging goes on in the current file.
        let keep = self.max_files - 1;
        if keep == 0 {
            let _ = fs::remove_file(self.current_path());
            return;
        }
        let _ = fs::remove_file(self.archive_path(keep));
        for k in (1..keep).rev() {
            let from = self.archive_path(k);
            if from.exists() {
                let _ = fs::rename(&from, self.archive_path(k + 1));
            }
        }
        let _ = fs::rename(self.current_path(), self.archive_path(1));
    }
}

impl Write for RollingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.open()?;
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            self.roll();
            self.open()?;
        }
        let n = self.open()?.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// Keeps the background log writer alive; drop it last (hold it in `main`).
#[derive(Debug)]
pub struct LogGuard {
    _worker: tracing_appender::non_blocking::WorkerGuard,
    /// The current log file.
    pub file: PathBuf,
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filter in `TRINITY_LOG` or `logging.level` does not parse.
    #[error("invalid log filter {filter:?}: {message}")]
    Filter {
        /// The filter text.
        filter: String,
        /// The parser's message.
        message: String,
    },
    /// The logs directory cannot be created.
    #[error("failed to create log directory {}: {source}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A global subscriber is already installed.
    #[error("logging is already initialised in this process")]
    AlreadyInitialised,
}

/// Starts logging for `daemon`: stderr plus `logs_dir/<daemon>.log`.
pub fn init(
    daemon: &DaemonName,
    cfg: &LoggingConfig,
    logs_dir: &Path,
) -> Result<LogGuard, LogError> {
    init_with_filter(
        daemon,
        cfg,
        logs_dir,
        std::env::var(LOG_ENV).ok().as_deref(),
    )
}

/// Log lines waiting for the writer thread, at most. The queue is a ring allocated whole and
/// touched slot by slot as lines go round it, so its size is memory a long-running daemon ends
/// up holding: tracing-appender's default of 128,000 lines grew each daemon's resident memory
/// by up to 4 MB over its first hours (docs/benchmarks.md). Beyond this many, a line waits
/// for room instead of being dropped.
pub const LOG_BUFFER_LINES: usize = 2048;

fn file_writer<W: io::Write + Send + 'static>(
    w: W,
) -> (
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .lossy(false)
        .finish(w)
}

/// The file watcher's own messages only from warnings up, unless the filter names it: at
/// `info` it said "unable to remove watch descriptor" for every directory git removed under
/// `.git`, more than half of git-sync's log over an hour's soak.
fn quiet_watcher(filter: &str) -> String {
    if filter.contains("notify") {
        filter.to_owned()
    } else {
        format!("{filter},notify=warn")
    }
}

/// [`init`] with the filter given instead of read from `TRINITY_LOG` (`None`: `cfg.level`).
pub fn init_with_filter(
    daemon: &DaemonName,
    cfg: &LoggingConfig,
    logs_dir: &Path,
    filter: Option<&str>,
) -> Result<LogGuard, LogError> {
    let filter_text = quiet_watcher(&filter.map_or_else(|| cfg.level.clone(), str::to_owned));
    let filter = |text: &str| {
        EnvFilter::try_new(text).map_err(|e| LogError::Filter {
            filter: text.to_owned(),
            message: e.to_string(),
        })
    };
    let stderr_filter = filter(&filter_text)?;
    let file_filter = filter(&filter_text)?;
    fs::create_dir_all(logs_dir).map_err(|source| LogError::Dir {
        dir: logs_dir.to_owned(),
        source,
    })?;
    let rolling = RollingFile::new(logs_dir, daemon, cfg.max_file_bytes, cfg.max_files);
    let file = rolling.current_path();
    let (writer, worker) = file_writer(rolling);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
                .with_writer(io::stderr)
                .with_filter(stderr_filter),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(writer)
                .with_filter(file_filter),
        )
        .try_init()
        .map_err(|_| LogError::AlreadyInitialised)?;
    Ok(LogGuard {
        _worker: worker,
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchers_chatter_is_left_out_unless_asked_for() {
        assert_eq!(quiet_watcher("info"), "info,notify=warn");
        assert_eq!(
            quiet_watcher("git_sync=debug,info"),
            "git_sync=debug,info,notify=warn"
        );
        assert_eq!(quiet_watcher("notify=debug,info"), "notify=debug,info");
        for text in ["info", "git_sync=debug,info", "warn"] {
            EnvFilter::try_new(quiet_watcher(text)).expect("a filter tracing takes");
        }
    }

    #[test]
    fn rolls_over_and_keeps_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = DaemonName::new("git-sync").expect("valid");
        let mut log = RollingFile::new(dir.path(), &name, 100, 3);
        let line = [b'x'; 39];
        for i in 0..20u8 {
            let mut l = line.to_vec();
            l[0] = b'a' + i;
            l.push(b'\n');
            log.write_all(&l).expect("write");
        }
        log.flush().expect("flush");
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["git-sync.1.log", "git-sync.2.log", "git-sync.log"]);
        for n in &names {
            let len = fs::metadata(dir.path().join(n)).expect("meta").len();
            assert!(len <= 100, "{n} is {len} bytes");
        }
        // The newest line is in the current file, the one before it in .1.
        let current = fs::read_to_string(log.current_path()).expect("read");
        assert!(
            current
                .lines()
                .last()
                .expect("a line")
                .starts_with((b'a' + 19) as char)
        );
    }

    #[test]
    fn appends_to_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = DaemonName::new("wake-daemon").expect("valid");
        fs::write(dir.path().join("wake-daemon.log"), b"old\n").expect("write");
        let mut log = RollingFile::new(dir.path(), &name, 1000, 2);
        log.write_all(b"new\n").expect("write");
        log.flush().expect("flush");
        assert_eq!(
            fs::read_to_string(log.current_path()).expect("read"),
            "old\nnew\n"
        );
    }

    #[test]
    fn a_burst_larger_than_the_buffer_loses_no_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = DaemonName::new("git-sync").expect("valid");
        let rolling = RollingFile::new(dir.path(), &daemon, 1 << 30, 2);
        let path = rolling.current_path();
        let (mut writer, guard) = file_writer(rolling);
        let lines = LOG_BUFFER_LINES * 10;
        for i in 0..lines {
            io::Write::write_all(&mut writer, format!("line {i}\n").as_bytes()).expect("write");
        }
        drop(guard);
        let text = fs::read_to_string(&path).expect("log");
        assert_eq!(text.lines().count(), lines);
        assert_eq!(
            text.lines().last(),
            Some(format!("line {}", lines - 1).as_str())
        );
    }
}
