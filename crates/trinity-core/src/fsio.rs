//! File I/O for the tree: atomic writes, bounded reads, validation and quarantine.
//!
//! * Every write goes to a temporary file in the same directory, is flushed to disk, and is then
//!   renamed over the target, so a reader (or git) sees the old file or the new one, never half.
//! * [`write_new`] creates immutable files: it fails instead of replacing an existing file.
//! * Every read is bounded: a file over its schema's size limit is refused unread.
//! * A file that fails validation can be [`quarantine`]d into `local/quarantine/`, with a note
//!   saying why, so that it is never acted upon and never lost.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

use crate::ids::PcId;
use crate::layout::{TEMP_SUFFIX, Tree};
use crate::schema::{self, Doc, Schema, SchemaError};
use crate::trust::{Keyring, Refusal};

/// An I/O failure, with the path and what was being done.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} {}: {source}", path.display())]
pub struct IoError {
    /// What was being done: "write", "read", "rename into place", …
    pub action: &'static str,
    /// The file concerned.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

impl IoError {
    /// The failure to `action` the file at `path`.
    pub fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            action,
            path: path.to_owned(),
            source,
        }
    }

    /// For `map_err`: the failure to `action` the file at `path`.
    pub fn at<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> Self + 'p {
        move |source| Self::new(action, path, source)
    }

    /// True when the file was not there.
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }

    /// True when [`write_new`] found the file already there.
    pub fn is_already_exists(&self) -> bool {
        self.source.kind() == io::ErrorKind::AlreadyExists
    }
}

/// Why a file of the tree could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// It could not be read (missing, permissions, …).
    #[error(transparent)]
    Io(#[from] IoError),
    /// It was read but is not a valid file of its schema.
    #[error("{}: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: SchemaError,
    },
    /// It is valid, but its signature is not believed ([`crate::trust`]).
    #[error("{}: {}{refusal}", path.display(), crate::trust::REFUSED)]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why it is not believed.
        refusal: Refusal,
    },
}

impl LoadError {
    /// True when the file does not exist (often not an error for callers).
    pub fn is_not_found(&self) -> bool {
        matches!(self, LoadError::Io(e) if e.is_not_found())
    }

    /// The signature refusal, when that is what went wrong.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            LoadError::Refused { refusal, .. } => Some(refusal),
            _ => None,
        }
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path_for(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}{TEMP_SUFFIX}", std::process::id()))
}

/// Writes `bytes` into a fresh temporary file beside `path`, synced to disk. Returns its path.
fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf, IoError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| IoError::new("create directory", dir, e))?;
    let temp = temp_path_for(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_data()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(IoError::new("write", &temp, e));
    }
    Ok(temp)
}

/// Makes a rename durable by syncing the directory (a no-op where that is not possible).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Replaces `path` with `bytes` atomically: temporary file, `sync_data`, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let temp = write_temp(path, bytes)?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(IoError::new("rename into place", path, e));
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// Creates `path` with `bytes` atomically, failing with `AlreadyExists` (see
/// [`IoError::is_already_exists`]) if it is already there. For immutable files.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let temp = write_temp(path, bytes)?;
    // A hard link never replaces an existing file, and the new name appears complete.
    let linked = fs::hard_link(&temp, path);
    let _ = fs::remove_file(&temp);
    linked.map_err(|e| IoError::new("create", path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// Reads at most `limit + 1` bytes of `path`, so the caller can tell a file over the limit
/// (the result is longer than `limit`) without reading all of it.
pub fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, IoError> {
    let file = File::open(path).map_err(|e| IoError::new("read", path, e))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| IoError::new("read", path, e))?;
    Ok(bytes)
}

/// Reads and validates a file of schema `T`, keeping unknown fields for a later rewrite.
pub fn load<T: Schema>(path: &Path) -> Result<Doc<T>, LoadError> {
    load_with_bytes(path).map(|(_, doc)| doc)
}

/// [`load`], with the bytes the document was parsed from.
fn load_with_bytes<T: Schema>(path: &Path) -> Result<(Vec<u8>, Doc<T>), LoadError> {
    let bytes = read_bounded(path, T::MAX_BYTES)?;
    if bytes.len() > T::MAX_BYTES {
        let size = fs::metadata(path)
            .map(|m| m.len())
            .unwrap_or(bytes.len() as u64);
        return Err(LoadError::Invalid {
            path: path.to_owned(),
            source: SchemaError::TooLarge {
                schema: T::NAME,
                size,
                limit: T::MAX_BYTES,
            },
        });
    }
    let doc = Doc::parse(&bytes).map_err(|source| LoadError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    Ok((bytes, doc))
}

/// Reads a file of schema `T` and checks its signature with `keyring` ([`crate::trust`]):
/// the document and the member that signed it (`None`: unsigned, and accepted as such).
pub fn load_trusted<T: Schema>(
    path: &Path,
    keyring: &Keyring,
) -> Result<(Doc<T>, Option<PcId>), LoadError> {
    // One read: the bytes checked are the bytes parsed.
    let (bytes, doc) = load_with_bytes::<T>(path)?;
    if !T::SIGNED || !keyring.enabled() {
        return Ok((doc, None));
    }
    let raw: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| LoadError::Invalid {
            path: path.to_owned(),
            source: SchemaError::Syntax {
                encoding: schema::Encoding::Json,
                message: e.to_string(),
            },
        })?;
    match keyring.check_doc(path, &raw, &doc.value) {
        Ok(by) => Ok((doc, by)),
        Err(refusal) => Err(LoadError::Refused {
            path: path.to_owned(),
            refusal,
        }),
    }
}

/// Reads a file of schema `T` if it exists: `Ok(None)` when it does not.
pub fn load_optional<T: Schema>(path: &Path) -> Result<Option<Doc<T>>, LoadError> {
    match load(path) {
        Ok(doc) => Ok(Some(doc)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes a document atomically (replacing the file). An invalid document is refused and
/// nothing is written.
pub fn save<T: Schema>(path: &Path, doc: &Doc<T>) -> Result<(), SaveError> {
    let bytes = doc.to_bytes_for(path).map_err(|source| SaveError::Encode {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, &bytes)?;
    Ok(())
}

/// Creates an immutable file from a value; fails if the file exists.
pub fn create<T: Schema>(path: &Path, value: &T) -> Result<(), SaveError> {
    let bytes = schema::to_bytes_for(value, path).map_err(|source| SaveError::Encode {
        path: path.to_owned(),
        source,
    })?;
    write_new(path, &bytes)?;
    Ok(())
}

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The value could not be encoded, or is invalid.
    #[error("refusing to write {}: {source}", path.display())]
    Encode {
        /// The target file.
        path: PathBuf,
        /// The problem.
        #[source]
        source: SchemaError,
    },
    /// The write itself failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Moves an unreadable or invalid file of the tree into `local/quarantine/`, beside a
/// `.reason.txt` note, and returns its new path. Nothing is deleted.
pub fn quarantine(
    tree: &Tree,
    path: &Path,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<PathBuf, IoError> {
    let dir = tree.quarantine_dir();
    fs::create_dir_all(&dir).map_err(|e| IoError::new("create directory", &dir, e))?;
    let rel = tree.relative(path).unwrap_or_else(|_| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let flat = rel.replace(['/', '\\'], "__");
    let stamp = now.format("%Y%m%dT%H%M%S%.3fZ");
    let mut target = dir.join(format!("{stamp}-{flat}"));
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{stamp}-{n}-{flat}"));
        n += 1;
    }
    fs::rename(path, &target).map_err(|e| IoError::new("move into quarantine", path, e))?;
    let note = format!(
        "original path: {rel}\nquarantined at: {}\nreason: {reason}\n",
        now.to_rfc3339()
    );
    let mut note_path = target.clone().into_os_string();
    note_path.push(".reason.txt");
    write_atomic(Path::new(&note_path), note.as_bytes())?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PcId;
    use crate::schema::{Heartbeat, HeartbeatStatus};

    fn heartbeat() -> Heartbeat {
        Heartbeat::new(
            PcId::new("PC1").expect("valid"),
            HeartbeatStatus::Active,
            DateTime::parse_from_rfc3339("2025-11-23T16:30:00Z")
                .expect("valid")
                .to_utc(),
        )
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("a.json");
        write_atomic(&path, b"one").expect("first write");
        write_atomic(&path, b"two").expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["a.json"]);
    }

    #[test]
    fn write_new_never_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.json");
        write_new(&path, b"first").expect("create");
        let err = write_new(&path, b"second").expect_err("must refuse");
        assert!(err.is_already_exists(), "{err}");
        assert_eq!(fs::read(&path).expect("read"), b"first");
        assert_eq!(
            fs::read_dir(dir.path()).expect("list").count(),
            1,
            "temp file left behind"
        );
    }

    #[test]
    fn load_round_trips_and_reports_problems_with_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("PC1.json");
        save(&path, &Doc::new(heartbeat())).expect("save");
        let doc = load::<Heartbeat>(&path).expect("load");
        assert_eq!(doc.value, heartbeat());

        fs::write(&path, b"{\"pc\":\"PC1\",").expect("write");
        let err = load::<Heartbeat>(&path).expect_err("truncated");
        let msg = err.to_string();
        assert!(
            msg.contains("PC1.json") && msg.contains("not valid JSON"),
            "{msg}"
        );

        assert!(
            load_optional::<Heartbeat>(&dir.path().join("missing.json"))
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn invalid_values_are_never_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("PC1.json");
        let mut bad = heartbeat();
        bad.status = HeartbeatStatus::HandoffInitiated; // without to_pc
        let err = save(&path, &Doc::new(bad.clone())).expect_err("refused");
        assert!(err.to_string().contains("needs to_pc"), "{err}");
        let err = create(&path, &bad).expect_err("refused");
        assert!(err.to_string().contains("refusing to write"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn oversized_files_are_refused_unparsed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("PC1.json");
        fs::write(&path, vec![b' '; Heartbeat::MAX_BYTES + 10]).expect("write");
        let err = load::<Heartbeat>(&path).expect_err("too large");
        assert!(
            err.to_string().contains("over the 65536-byte limit"),
            "{err}"
        );
    }

    #[test]
    fn quarantine_moves_the_file_and_says_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let bad = tree.heartbeat_file(&PcId::new("PC2").expect("valid"));
        fs::create_dir_all(bad.parent().expect("parent")).expect("mkdir");
        fs::write(&bad, b"garbage").expect("write");
        let now = DateTime::parse_from_rfc3339("2025-11-23T16:30:00Z")
            .expect("valid")
            .to_utc();
        let moved = quarantine(&tree, &bad, "not valid JSON", now).expect("quarantine");
        assert!(!bad.exists());
        assert_eq!(fs::read(&moved).expect("read"), b"garbage");
        assert!(moved.starts_with(tree.quarantine_dir()));
        let mut note = moved.clone().into_os_string();
        note.push(".reason.txt");
        let note = fs::read_to_string(note).expect("note");
        assert!(
            note.contains("heartbeat/PC2.json") && note.contains("not valid JSON"),
            "{note}"
        );
    }
}
