//! Typed identifiers.
//!
//! Every id that ends up in a file name of the `.trinity/` tree is one of these types, and each
//! constructor rejects anything that could escape a directory or break a file name on Windows or
//! Linux: empty strings, `..`, path separators, NUL and other control characters, characters
//! Windows forbids, trailing dots or spaces, reserved device names (`CON`, `NUL`, `COM1`, …) and
//! anything longer than [`MAX_ID_LEN`] characters.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest id accepted, in bytes (all accepted characters are ASCII).
pub const MAX_ID_LEN: usize = 64;

/// Time stamps embedded in file names: `20251123T163000Z`.
pub const FILE_TIMESTAMP_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {problem}")]
pub struct IdError {
    /// What kind of id was being parsed ("PC id", "task id", …).
    pub kind: &'static str,
    /// The rejected input (truncated to 80 characters).
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
}

impl IdError {
    fn new(kind: &'static str, value: &str, problem: impl Into<String>) -> Self {
        let value = if value.chars().count() > 80 {
            let mut v: String = value.chars().take(80).collect();
            v.push('…');
            v
        } else {
            value.to_owned()
        };
        Self {
            kind,
            value,
            problem: problem.into(),
        }
    }
}

const WINDOWS_RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM0", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7",
    "COM8", "COM9", "LPT0", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
    "CONIN$", "CONOUT$",
];

/// Checks the rules every file-name component shares. `extra` lists the punctuation allowed
/// besides ASCII letters and digits.
fn check_component(kind: &'static str, s: &str, extra: &[char]) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::new(kind, s, "is empty"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::new(
            kind,
            s,
            format!("is {} bytes long, the limit is {MAX_ID_LEN}", s.len()),
        ));
    }
    if s.contains("..") {
        return Err(IdError::new(kind, s, "contains `..`"));
    }
    for c in s.chars() {
        match c {
            '/' | '\\' => return Err(IdError::new(kind, s, "contains a path separator")),
            '\0' => return Err(IdError::new(kind, s, "contains a NUL character")),
            c if c.is_control() => {
                return Err(IdError::new(kind, s, "contains a control character"));
            }
            c if c.is_ascii_alphanumeric() || extra.contains(&c) => {}
            c => {
                let allowed: String = extra.iter().map(|c| format!(" `{c}`")).collect();
                return Err(IdError::new(
                    kind,
                    s,
                    format!("contains {c:?}; only ASCII letters, digits and{allowed} are allowed"),
                ));
            }
        }
    }
    let first = s.chars().next().unwrap_or('a');
    if !first.is_ascii_alphanumeric() {
        return Err(IdError::new(kind, s, "must start with a letter or a digit"));
    }
    if s.ends_with('.') {
        return Err(IdError::new(kind, s, "must not end with `.`"));
    }
    let stem = s.split('.').next().unwrap_or(s);
    if WINDOWS_RESERVED
        .iter()
        .any(|r| r.eq_ignore_ascii_case(stem))
    {
        return Err(IdError::new(
            kind,
            s,
            "is a reserved device name on Windows",
        ));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an id.
            pub fn new(s: impl AsRef<str>) -> Result<Self, IdError> {
                let s = s.as_ref();
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(s)?;
                Ok(Self(s.to_owned()))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A PC of the fleet: `PC1`. ASCII letters, digits and `-`, at most 64 bytes. No `_`, so
    /// that handoff file names (`handoff_PC1_to_PC2_…`) split unambiguously.
    PcId,
    "PC id",
    |s| check_component("PC id", s, &['-'])
);

string_id!(
    /// A task: `auto-mcp-git-sync`. ASCII letters, digits, `-`, `_` and `.`.
    TaskId,
    "task id",
    |s| check_component("task id", s, &['-', '_', '.'])
);

string_id!(
    /// A wake signal: `20251123T163000Z-PC1-3f9a1c`. Same alphabet as a task id.
    SignalId,
    "signal id",
    |s| check_component("signal id", s, &['-', '_', '.'])
);

string_id!(
    /// An escalation, post-mortem or report: same alphabet as a task id.
    RecordId,
    "record id",
    |s| check_component("record id", s, &['-', '_', '.'])
);

string_id!(
    /// A daemon's name as used for its log and lock files: `git-sync`.
    DaemonName,
    "daemon name",
    |s| check_component("daemon name", s, &['-', '_'])
);

/// Trinity's four daemons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DaemonId {
    /// `git-sync`: keeps the tree in step with the fleet.
    GitSync,
    /// `credit-monitor`: detects exhaustion and hands off.
    CreditMonitor,
    /// `wake-daemon`: accepts handoffs and starts the agent.
    WakeDaemon,
    /// `coordinator`: leads the fleet when it holds the lease.
    Coordinator,
}

impl DaemonId {
    /// Every daemon, in the order they are started.
    pub const ALL: [DaemonId; 4] = [
        DaemonId::GitSync,
        DaemonId::CreditMonitor,
        DaemonId::WakeDaemon,
        DaemonId::Coordinator,
    ];

    /// Its program's name, and the name of its log, lock and service: `git-sync`.
    pub fn as_str(self) -> &'static str {
        match self {
            DaemonId::GitSync => "git-sync",
            DaemonId::CreditMonitor => "credit-monitor",
            DaemonId::WakeDaemon => "wake-daemon",
            DaemonId::Coordinator => "coordinator",
        }
    }

    /// Its name as the files that carry names know it (heartbeats, locks, logs).
    pub fn name(self) -> DaemonName {
        DaemonName(self.as_str().to_owned())
    }
}

impl fmt::Display for DaemonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DaemonId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                IdError::new(
                    "daemon",
                    s,
                    "is not one of git-sync, credit-monitor, wake-daemon, coordinator",
                )
            })
    }
}

impl SignalId {
    /// A fresh id: `{YYYYMMDDTHHMMSSZ}-{from}-{what}-{nonce}`, at most [`MAX_ID_LEN`] bytes.
    /// Ids sort by time; the nonce (process id and a counter) keeps ids made in the same second
    /// apart. `what` is cut to fit and characters outside the alphabet become `-`.
    pub fn generate(from: &PcId, at: DateTime<Utc>, what: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nonce = format!(
            "{:x}{n:x}",
            std::process::id() ^ at.timestamp_subsec_nanos()
        );
        let what: String = what
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let head = format!("{}-{from}", file_timestamp(at));
        let room = MAX_ID_LEN.saturating_sub(head.len() + nonce.len() + 2);
        let what: String = what.chars().take(room).collect();
        let text = if what.is_empty() {
            format!("{head}-{nonce}")
        } else {
            format!("{head}-{what}-{nonce}")
        };
        let text: String = text.chars().take(MAX_ID_LEN).collect();
        Self::new(&text).unwrap_or_else(|_| Self(format!("{}-{nonce}", file_timestamp(at))))
    }
}

impl RecordId {
    /// A fresh id, made like [`SignalId::generate`]: `{YYYYMMDDTHHMMSSZ}-{from}-{what}-{nonce}`.
    pub fn generate(from: &PcId, at: DateTime<Utc>, what: &str) -> Self {
        // The two alphabets are the same, so a signal id is always a valid record id.
        Self(SignalId::generate(from, at, what).0)
    }
}

/// A handoff: `handoff_{FROM}_to_{TO}_{YYYYMMDDTHHMMSSZ}`, the stem of its file name.
///
/// The id carries its parts, so the file name and the file's contents can be checked against
/// each other.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HandoffId {
    text: String,
    from: PcId,
    to: PcId,
    at: DateTime<Utc>,
}

impl HandoffId {
    /// Builds the id of a handoff from `from` to `to` created at `at` (whole seconds are kept).
    /// `from` may equal `to`: finished work submitted for verification, or the coordinator
    /// leader giving work to its own PC (the handoff's contents say which is allowed).
    pub fn from_parts(from: &PcId, to: &PcId, at: DateTime<Utc>) -> Result<Self, IdError> {
        Self::new(format!(
            "handoff_{from}_to_{to}_{}",
            at.format(FILE_TIMESTAMP_FORMAT)
        ))
    }

    /// Parses `handoff_PC1_to_PC2_20251123T163000Z`.
    pub fn new(s: impl AsRef<str>) -> Result<Self, IdError> {
        const KIND: &str = "handoff id";
        let s = s.as_ref();
        if s.len() > 2 * MAX_ID_LEN + 32 {
            return Err(IdError::new(KIND, s, "is too long"));
        }
        let rest = s
            .strip_prefix("handoff_")
            .ok_or_else(|| IdError::new(KIND, s, "must start with `handoff_`"))?;
        let (from, rest) = rest.split_once("_to_").ok_or_else(|| {
            IdError::new(KIND, s, "must look like handoff_{FROM}_to_{TO}_{TIMESTAMP}")
        })?;
        let (to, ts) = rest.rsplit_once('_').ok_or_else(|| {
            IdError::new(KIND, s, "must look like handoff_{FROM}_to_{TO}_{TIMESTAMP}")
        })?;
        let from = PcId::new(from).map_err(|e| IdError::new(KIND, s, e.to_string()))?;
        let to = PcId::new(to).map_err(|e| IdError::new(KIND, s, e.to_string()))?;
        let at = NaiveDateTime::parse_from_str(ts, FILE_TIMESTAMP_FORMAT)
            .map_err(|_| {
                IdError::new(
                    KIND,
                    s,
                    format!("time stamp {ts:?} is not of the form 20251123T163000Z"),
                )
            })?
            .and_utc();
        Ok(Self {
            text: s.to_owned(),
            from,
            to,
            at,
        })
    }

    /// The outgoing PC.
    pub fn from_pc(&self) -> &PcId {
        &self.from
    }

    /// The incoming PC.
    pub fn to_pc(&self) -> &PcId {
        &self.to
    }

    /// When the handoff was created, to the second.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.at
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for HandoffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for HandoffId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl Serialize for HandoffId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for HandoffId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Formats a time stamp the way file names carry it.
pub fn file_timestamp(at: DateTime<Utc>) -> String {
    at.format(FILE_TIMESTAMP_FORMAT).to_string()
}

#[cfg(test)]
mod tests {

    #[test]
    fn generated_signal_ids_are_valid_unique_and_bounded() {
        let at: DateTime<Utc> = "2026-11-21T10:00:00Z".parse().expect("valid time");
        let pc = PcId::new("PC1").expect("valid");
        let a = SignalId::generate(&pc, at, "credit_handoff");
        let b = SignalId::generate(&pc, at, "credit_handoff");
        assert_ne!(a, b);
        assert!(
            a.as_str()
                .starts_with("20261121T100000Z-PC1-credit_handoff-"),
            "{a}"
        );
        let long = PcId::new("P".repeat(60)).expect("valid");
        let c = SignalId::generate(&long, at, "$(rm -rf /) ../x");
        assert!(c.as_str().len() <= MAX_ID_LEN, "{c}");
        let d = SignalId::generate(&pc, at, "$(rm) `x` %PATH% ../y");
        assert!(SignalId::new(d.as_str()).is_ok(), "{d}");
    }
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for s in ["PC1", "pc-2", "DESKTOP-MSMCFH2", "a"] {
            assert!(PcId::new(s).is_ok(), "{s}");
        }
        for s in ["auto-mcp-git-sync", "chunk2-courses", "task_1.v2"] {
            assert!(TaskId::new(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn rejects_escapes_and_bad_names() {
        let long = "a".repeat(MAX_ID_LEN + 1);
        let cases: &[(&str, &str)] = &[
            ("", "is empty"),
            ("..", "`..`"),
            ("../x", "`..`"),
            ("a/b", "path separator"),
            ("a\\b", "path separator"),
            ("a\0b", "NUL"),
            ("a\nb", "control"),
            ("CON", "reserved"),
            ("con", "reserved"),
            ("nul.txt", "reserved"),
            ("LPT1", "reserved"),
            ("x.", "end with"),
            (".hidden", "start with"),
            ("-dash", "start with"),
            ("a b", "only ASCII"),
            ("a:b", "only ASCII"),
            ("é", "only ASCII"),
            (&long, "limit is 64"),
        ];
        for (s, want) in cases {
            let err = TaskId::new(s).expect_err(s);
            assert!(err.to_string().contains(want), "{s:?}: {err}");
        }
        assert!(TaskId::new("a".repeat(MAX_ID_LEN)).is_ok());
    }

    #[test]
    fn pc_ids_have_no_underscore() {
        assert!(PcId::new("PC_1").is_err());
        assert!(PcId::new("PC.1").is_err());
    }

    #[test]
    fn handoff_id_round_trips() {
        let id = HandoffId::new("handoff_PC1_to_PC2_20251123T163000Z").expect("valid");
        assert_eq!(id.from_pc().as_str(), "PC1");
        assert_eq!(id.to_pc().as_str(), "PC2");
        assert_eq!(id.created_at().to_rfc3339(), "2025-11-23T16:30:00+00:00");
        let again =
            HandoffId::from_parts(id.from_pc(), id.to_pc(), id.created_at()).expect("valid");
        assert_eq!(again, id);
    }

    #[test]
    fn a_handoff_id_may_name_one_pc_twice() {
        // Finished work submitted for verification, or the leader giving work to its own PC;
        // whether the contents allow it is the handoff schema's business.
        let id = HandoffId::new("handoff_PC1_to_PC1_20251123T163000Z").expect("valid");
        assert_eq!(id.from_pc(), id.to_pc());
    }

    #[test]
    fn handoff_id_rejects_bad_input() {
        for s in [
            "handoff_PC1_to_PC2",
            "handoff_../x_to_PC2_20251123T163000Z",
            "handoff_PC1_to_PC2_2025-11-23",
            "hand_PC1_to_PC2_20251123T163000Z",
        ] {
            assert!(HandoffId::new(s).is_err(), "{s}");
        }
    }

    #[test]
    fn ids_deserialize_with_validation() {
        let err = serde_json::from_str::<TaskId>("\"../etc\"").expect_err("must reject");
        assert!(err.to_string().contains("`..`"), "{err}");
    }
}
