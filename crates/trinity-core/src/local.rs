//! Per-machine state files under `local/` (never synced): git-sync's state, the credit
//! monitor's trigger and transcript state, the wake-daemon's journal, the agent's tasks file.
//!
//! Each kind of file is a [`LocalState`]: a name for messages, a format version and a size
//! limit, like the synced schemas. Writes are atomic and refuse a value that cannot be encoded
//! (never an empty file in its place). A file that cannot be read as its kind is not taken as
//! absent: it is moved aside to `{file}.corrupt` (nothing deleted) and reported as
//! [`LocalError::Corrupt`]; [`was_quarantined`] lets a journal whose steps must run exactly
//! once keep refusing until someone has looked at it.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::fsio::{self, IoError};

/// A kind of per-machine state file.
pub trait LocalState: Serialize + DeserializeOwned {
    /// What it is, for messages: "git-sync's state", "the wake journal's handoff record".
    const NAME: &'static str;
    /// The `format_version` written into the file, and the newest read. `None` for files
    /// whose top level is not an object (the tasks file, an array that the agent reads),
    /// which carry no version.
    const VERSION: Option<u32> = Some(1);
    /// Files larger than this are refused.
    const MAX_BYTES: usize = 4 * 1024 * 1024;
}

/// Why a local state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The file is not a valid file of its kind; it was moved aside.
    #[error("{name} {} is unreadable ({reason}); moved to {}", path.display(), moved_to.display())]
    Corrupt {
        /// The kind of file.
        name: &'static str,
        /// Where it was.
        path: PathBuf,
        /// Where it is now (for a file set aside earlier: where it still is).
        moved_to: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A journal record that was set aside as corrupt earlier: what it recorded is unknown,
    /// so its steps are not run again until someone has looked at it.
    #[error("{name} {} was set aside as corrupt ({}): what it recorded is not done again; remove that file once it is dealt with", path.display(), moved_to.display())]
    SetAside {
        /// The kind of file.
        name: &'static str,
        /// The record's path (absent now).
        path: PathBuf,
        /// The corrupt copy.
        moved_to: PathBuf,
    },
    /// Written by a newer trinity: left alone.
    #[error("{name} {} has format_version {found}; this trinity reads up to {supported}: upgrade it", path.display())]
    TooNew {
        /// The kind of file.
        name: &'static str,
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u64,
        /// The newest this build reads.
        supported: u32,
    },
    /// The value could not be encoded; nothing was written.
    #[error("cannot encode {name} for {}: {source}", path.display())]
    Encode {
        /// The kind of file.
        name: &'static str,
        /// The target file.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
}

impl LocalError {
    /// True when retrying cannot help until someone acts: the file is corrupt or set aside,
    /// or written by a newer trinity (a failed read or write may pass; an encoding failure is
    /// a bug).
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            LocalError::Corrupt { .. } | LocalError::SetAside { .. } | LocalError::TooNew { .. }
        )
    }
}

/// Where a corrupt `path` is moved: `{path}.corrupt`.
pub fn quarantine_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".corrupt");
    PathBuf::from(name)
}

/// True when a corrupt copy of `path` was set aside and is still there.
pub fn was_quarantined(path: &Path) -> bool {
    quarantine_path(path).exists()
}

/// Reads `path` as a `T`: `Ok(None)` when there is no file. A corrupt file is moved aside and
/// reported; a file from a newer trinity is left alone and reported.
pub fn read<T: LocalState>(path: &Path) -> Result<Option<T>, LocalError> {
    let bytes = match fsio::read_bounded(path, T::MAX_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match decode::<T>(&bytes) {
        Ok(value) => Ok(Some(value)),
        Err(Problem::TooNew(found)) => Err(LocalError::TooNew {
            name: T::NAME,
            path: path.to_owned(),
            found,
            supported: T::VERSION.unwrap_or(0),
        }),
        Err(Problem::Invalid(reason)) => Err(set_aside::<T>(path, reason)),
    }
}

/// [`read`] for a record of steps that must run exactly once: while a corrupt copy set aside
/// earlier is still there, an absent record is [`LocalError::SetAside`], not `None`.
pub fn read_once<T: LocalState>(path: &Path) -> Result<Option<T>, LocalError> {
    match read(path)? {
        None if was_quarantined(path) => Err(LocalError::SetAside {
            name: T::NAME,
            path: path.to_owned(),
            moved_to: quarantine_path(path),
        }),
        found => Ok(found),
    }
}

/// [`read`], with `T::default()` for a missing file.
pub fn read_or_default<T: LocalState + Default>(path: &Path) -> Result<T, LocalError> {
    Ok(read(path)?.unwrap_or_default())
}

/// Writes `value` to `path` atomically, with its format version.
pub fn write<T: LocalState>(path: &Path, value: &T) -> Result<(), LocalError> {
    #[derive(Serialize)]
    struct Versioned<'a, T> {
        format_version: u32,
        #[serde(flatten)]
        value: &'a T,
    }
    let encoded = match T::VERSION {
        Some(format_version) => serde_json::to_vec_pretty(&Versioned {
            format_version,
            value,
        }),
        None => serde_json::to_vec_pretty(value),
    };
    let bytes = encoded.map_err(|source| LocalError::Encode {
        name: T::NAME,
        path: path.to_owned(),
        source,
    })?;
    fsio::write_atomic(path, &bytes)?;
    Ok(())
}

/// Every `*.json` file of kind `T` in `dir` (none when there is no directory), with the
/// problems met on the way: a corrupt file is set aside and reported, never skipped silently.
pub fn read_dir<T: LocalState>(dir: &Path) -> (Vec<T>, Vec<LocalError>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (found, problems);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        match read(&path) {
            Ok(Some(value)) => found.push(value),
            Ok(None) => {}
            Err(e) => problems.push(e),
        }
    }
    (found, problems)
}

enum Problem {
    TooNew(u64),
    Invalid(String),
}

fn decode<T: LocalState>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.len() > T::MAX_BYTES {
        return Err(Problem::Invalid(format!(
            "over the {}-byte limit",
            T::MAX_BYTES
        )));
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Problem::Invalid(e.to_string()))?;
    if let (Some(supported), Some(object)) = (T::VERSION, value.as_object_mut()) {
        // Files written before versions existed have none: version 1.
        let version = match object.remove("format_version") {
            None => 1,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| Problem::Invalid("format_version is not a number".to_owned()))?,
        };
        if version > u64::from(supported) {
            return Err(Problem::TooNew(version));
        }
    }
    T::deserialize(value).map_err(|e| Problem::Invalid(e.to_string()))
}

fn set_aside<T: LocalState>(path: &Path, reason: String) -> LocalError {
    let target = quarantine_path(path);
    // An earlier corrupt copy is kept: this one goes beside it, numbered.
    let mut moved_to = target.clone();
    let mut n = 1;
    while moved_to.exists() {
        let mut name = target.as_os_str().to_owned();
        name.push(format!(".{n}"));
        moved_to = PathBuf::from(name);
        n += 1;
    }
    match std::fs::rename(path, &moved_to) {
        Ok(()) => LocalError::Corrupt {
            name: T::NAME,
            path: path.to_owned(),
            moved_to,
            reason,
        },
        Err(source) => LocalError::Io(IoError::new("move aside the corrupt file", path, source)),
    }
}

/// The agent's tasks file (`TRINITY_TASKS_FILE`, read by the agent): the tasks handed to
/// it, in order. A plain array, without a version, as the agent has always read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TasksFile(pub Vec<crate::schema::TaskRef>);

impl LocalState for TasksFile {
    const NAME: &'static str = "the agent's tasks file";
    const VERSION: Option<u32> = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Counter {
        n: u32,
        #[serde(default)]
        names: BTreeMap<String, u32>,
    }

    impl LocalState for Counter {
        const NAME: &'static str = "a test counter";
        const MAX_BYTES: usize = 200;
    }

    #[test]
    fn round_trips_with_a_version_and_reads_files_without_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.json");
        assert_eq!(read::<Counter>(&path).expect("absent"), None);
        let value = Counter {
            n: 3,
            names: BTreeMap::from([("a".to_owned(), 1)]),
        };
        write(&path, &value).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("\"format_version\": 1"), "{text}");
        assert_eq!(read::<Counter>(&path).expect("read"), Some(value));
        // Written before versions existed.
        std::fs::write(&path, br#"{"n": 7}"#).expect("write");
        assert_eq!(read::<Counter>(&path).expect("read").map(|c| c.n), Some(7));
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_reported_never_taken_as_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.json");
        for (n, body) in [&b"{\"n\": 1"[..], b"{\"n\": \"x\"}", &[b' '; 300]]
            .into_iter()
            .enumerate()
        {
            std::fs::write(&path, body).expect("write");
            let err = read::<Counter>(&path).expect_err("corrupt");
            let LocalError::Corrupt { moved_to, .. } = &err else {
                panic!("{err}");
            };
            assert!(!path.exists());
            assert_eq!(std::fs::read(moved_to).expect("kept"), body, "{err}");
            let expected = if n == 0 {
                "c.json.corrupt".to_owned()
            } else {
                format!("c.json.corrupt.{n}")
            };
            assert!(moved_to.ends_with(&expected), "{}", moved_to.display());
            assert!(was_quarantined(&path));
            assert!(err.to_string().contains("a test counter"), "{err}");
        }
        // Now absent; a record of steps run once stays refused while its copy is there.
        assert_eq!(read::<Counter>(&path).expect("absent"), None);
        let err = read_once::<Counter>(&path).expect_err("set aside");
        assert!(matches!(err, LocalError::SetAside { .. }), "{err}");
        write(&path, &Counter::default()).expect("write");
        assert_eq!(
            read_once::<Counter>(&path).expect("read"),
            Some(Counter::default())
        );
    }

    #[test]
    fn a_newer_file_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.json");
        std::fs::write(&path, br#"{"format_version": 2, "n": 1}"#).expect("write");
        let err = read::<Counter>(&path).expect_err("too new");
        assert!(matches!(err, LocalError::TooNew { found: 2, .. }), "{err}");
        assert!(path.exists() && !was_quarantined(&path));
    }

    #[test]
    fn unversioned_kinds_stay_plain_and_directories_report_their_problems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tasks.json");
        let tasks = TasksFile(vec![crate::schema::TaskRef {
            id: crate::TaskId::new("t-1").expect("id"),
            priority: crate::schema::Priority::default(),
            description: "x".to_owned(),
        }]);
        write(&path, &tasks).expect("write");
        let plain: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert!(plain.is_array(), "{plain}");
        assert_eq!(read::<TasksFile>(&path).expect("read"), Some(tasks));

        std::fs::write(dir.path().join("bad.json"), b"[").expect("write");
        std::fs::write(dir.path().join("other.txt"), b"[").expect("write");
        let (found, problems) = read_dir::<TasksFile>(dir.path());
        assert_eq!((found.len(), problems.len()), (1, 1));
        assert!(dir.path().join("other.txt").exists());
    }
}
