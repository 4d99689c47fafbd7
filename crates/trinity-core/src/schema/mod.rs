//! The on-disk formats of the `.trinity/` tree.
//!
//! Every file kind is a type implementing [`Schema`]. A file is read into a [`Doc`], which keeps
//! the fields this build does not know (a newer writer's additive fields) so that rewriting the
//! file never drops them. Parsing happens in fixed steps, each with its own error:
//!
//! 1. size: a file over [`Schema::MAX_BYTES`] is refused before it is parsed;
//! 2. syntax: JSON (or TOML for `fleet.toml`), with line and column;
//! 3. version: `format_version` (missing means 1) newer than [`Schema::FORMAT_VERSION`] is refused;
//! 4. types: serde, with the path of the offending field (`task_queue[0].id`);
//! 5. meaning: [`Schema::check`], the rules types cannot express (`from_pc` ≠ `to_pc`, …).
//!
//! This module reads no environment and prints nothing.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

mod common;
mod coordinator;
mod fleet;
mod handoff;
mod pc;
mod tasks;
mod timeline;
mod trust;

pub use common::{
    CodeSnapshot, CreditLevel, CreditSnapshot, CurrentWork, HandoffReason, Priority, TaskRef,
};
pub use coordinator::{
    CreditDashboard, DashboardEntry, Escalation, EscalationKind, HandoffInFlight, InstanceSummary,
    Kpis, Lease, Liveness, MultiInstanceStatus, PhaseResult, PhaseStatus, Verdict, Verification,
};
pub use fleet::Fleet;
pub use handoff::{Handoff, MAX_WAKE_MESSAGE_CHARS, WakeSignal, WakeTask};
pub use pc::{CreditStatus, DaemonBeat, Heartbeat, HeartbeatStatus, InstanceStatus};
pub use tasks::{Claim, Done, Outcome, Task};
pub use timeline::{Phase, Span, Timeline, TimelineEvent};
pub use trust::{KeyRecord, RecipientRecord, Revocation};

/// How a schema's files are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Pretty-printed JSON with a trailing newline.
    Json,
    /// TOML (`fleet.toml`, which people edit by hand).
    Toml,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Json => "JSON",
            Encoding::Toml => "TOML",
        })
    }
}

/// A file format of the tree.
pub trait Schema: Serialize + DeserializeOwned {
    /// A short human name: "handoff", "wake signal", …
    const NAME: &'static str;
    /// The major format version this build writes and the newest it reads.
    const FORMAT_VERSION: u32;
    /// Files larger than this are refused unread.
    const MAX_BYTES: usize;
    /// JSON or TOML.
    const ENCODING: Encoding = Encoding::Json;

    /// Whether files of this schema carry their author's signature (see [`crate::trust`]).
    const SIGNED: bool = false;

    /// The PC that must have signed a file of this schema, where the file names one.
    fn author(&self) -> Option<&crate::ids::PcId> {
        None
    }

    /// Rules the types cannot express. Each string is one problem, worded to follow the file
    /// name ("from_pc and to_pc are both PC1").
    fn check(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The `format_version` default for files written before versions existed.
pub(crate) fn v1() -> u32 {
    1
}

/// Why bytes are not a valid file of a schema. Messages follow a file name:
/// "handoff/x.json: has format_version 3, …".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// Larger than [`Schema::MAX_BYTES`].
    #[error("is {size} bytes, over the {limit}-byte limit for a {schema} file")]
    TooLarge {
        /// The schema's name.
        schema: &'static str,
        /// The file's size.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// Not well-formed JSON or TOML (truncated, binary, …).
    #[error("is not valid {encoding}: {message}")]
    Syntax {
        /// JSON or TOML.
        encoding: Encoding,
        /// The parser's message, with line and column.
        message: String,
    },
    /// Well-formed, but not an object/table at the top.
    #[error("must hold a {encoding} object at the top level")]
    NotObject {
        /// JSON or TOML.
        encoding: Encoding,
    },
    /// `format_version` is not a positive integer.
    #[error("has format_version {found}, which is not a positive integer")]
    BadVersion {
        /// The value found, as JSON.
        found: String,
    },
    /// Written by a newer major version of trinity.
    #[error(
        "has format_version {found}, newer than the {supported} this build reads for a {schema} file; upgrade trinity on this PC"
    )]
    NewerVersion {
        /// The schema's name.
        schema: &'static str,
        /// The version in the file.
        found: u64,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A field is missing or has the wrong type or value.
    #[error("{}{message}", field_prefix(path))]
    Field {
        /// Where in the document (`task_queue[0].id`), empty for the top level.
        path: String,
        /// serde's message.
        message: String,
    },
    /// Types are right, meaning is not.
    #[error("{}", problems.join("; "))]
    Invalid {
        /// One entry per problem.
        problems: Vec<String>,
    },
}

fn field_prefix(path: &str) -> String {
    if path.is_empty() || path == "." {
        String::new()
    } else {
        format!("field `{path}`: ")
    }
}

/// One step into a document: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

fn steps_of(path: &serde_ignored::Path<'_>, out: &mut Vec<Step>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            steps_of(parent, out);
            out.push(Step::Index(*index));
        }
        Path::Map { parent, key } => {
            steps_of(parent, out);
            out.push(Step::Key(key.clone()));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => steps_of(parent, out),
    }
}

fn lookup<'v>(value: &'v Value, steps: &[Step]) -> Option<&'v Value> {
    steps.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.as_object()?.get(k),
        Step::Index(i) => v.as_array()?.get(*i),
    })
}

fn lookup_mut<'v>(value: &'v mut Value, steps: &[Step]) -> Option<&'v mut Value> {
    steps.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.as_object_mut()?.get_mut(k),
        Step::Index(i) => v.as_array_mut()?.get_mut(*i),
    })
}

/// A parsed file: the typed value plus the fields this build did not know, kept so that a
/// rewrite does not drop a newer writer's data.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc<T> {
    /// The typed contents.
    pub value: T,
    unknown: Vec<(Vec<Step>, Value)>,
}

impl<T: Schema> Doc<T> {
    /// A document with no unknown fields (a file this PC creates).
    pub fn new(value: T) -> Self {
        Self {
            value,
            unknown: Vec::new(),
        }
    }

    /// Parses the bytes of a file, running every step listed in the module docs.
    pub fn parse(bytes: &[u8]) -> Result<Self, SchemaError> {
        if bytes.len() > T::MAX_BYTES {
            return Err(SchemaError::TooLarge {
                schema: T::NAME,
                size: bytes.len() as u64,
                limit: T::MAX_BYTES,
            });
        }
        let tree = decode(bytes, T::ENCODING)?;
        let Some(object) = tree.as_object() else {
            return Err(SchemaError::NotObject {
                encoding: T::ENCODING,
            });
        };
        check_version::<T>(object)?;

        let mut ignored: Vec<Vec<Step>> = Vec::new();
        let mut on_unknown = |path: serde_ignored::Path<'_>| {
            let mut steps = Vec::new();
            steps_of(&path, &mut steps);
            ignored.push(steps);
        };
        let de = serde_ignored::Deserializer::new(&tree, &mut on_unknown);
        let value: T = serde_path_to_error::deserialize(de).map_err(|e| SchemaError::Field {
            path: e.path().to_string(),
            message: explain(e.inner().to_string()),
        })?;
        let problems = value.check();
        if !problems.is_empty() {
            return Err(SchemaError::Invalid { problems });
        }
        let unknown = ignored
            .into_iter()
            .filter_map(|steps| lookup(&tree, &steps).map(|v| (steps, v.clone())))
            .collect();
        Ok(Self { value, unknown })
    }

    /// The dotted paths of the unknown fields, for log lines.
    pub fn unknown_fields(&self) -> Vec<String> {
        self.unknown
            .iter()
            .filter(|(steps, _)| {
                !(T::SIGNED
                    && matches!(steps.as_slice(), [Step::Key(k)] if k == crate::trust::SIGNATURE_FIELD))
            })
            .map(|(steps, _)| {
                let mut out = String::new();
                for step in steps {
                    match step {
                        Step::Key(k) if out.is_empty() => out.push_str(k),
                        Step::Key(k) => {
                            out.push('.');
                            out.push_str(k);
                        }
                        Step::Index(i) => out.push_str(&format!("[{i}]")),
                    }
                }
                out
            })
            .collect()
    }

    /// The document as a JSON value: the typed fields, then every unknown field whose parent
    /// still exists and that the typed fields do not now set. A value that fails
    /// [`Schema::check`] is refused: nothing writes a file its readers would reject.
    pub fn to_value(&self) -> Result<Value, SchemaError> {
        let mut value = checked_value(&self.value)?;
        for (steps, extra) in &self.unknown {
            let Some((Step::Key(key), parent)) = steps.split_last() else {
                continue;
            };
            if let Some(Value::Object(map)) = lookup_mut(&mut value, parent) {
                map.entry(key.clone()).or_insert_with(|| extra.clone());
            }
        }
        Ok(value)
    }

    /// The bytes to write: pretty JSON with a trailing newline, or TOML.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SchemaError> {
        let value = self.to_value()?;
        encode(&value, T::ENCODING)
    }

    /// The bytes to write to `path`: [`Doc::to_bytes`], signed by the key of the tree `path`
    /// is in where the schema is signed and that tree has a key ([`crate::trust`]).
    pub fn to_bytes_for(&self, path: &std::path::Path) -> Result<Vec<u8>, SchemaError> {
        sealed::<T>(self.to_value()?, path)
    }
}

/// chrono's parse errors do not say what was expected; add it.
fn explain(message: String) -> String {
    const CHRONO: &[&str] = &[
        "input contains invalid characters",
        "premature end of input",
        "trailing input",
        "input is out of range",
        "input is not enough for unique date and time",
        "no possible date and time matching input",
        "bad or unsupported format string",
    ];
    if CHRONO.iter().any(|m| message.starts_with(m)) {
        format!("{message} (expected an RFC 3339 time such as 2025-11-23T16:30:00Z)")
    } else {
        message
    }
}

/// Serializes a value the way the tree stores it (for files created from scratch). A value
/// that fails [`Schema::check`] is refused.
pub fn to_bytes<T: Schema>(value: &T) -> Result<Vec<u8>, SchemaError> {
    encode(&checked_value(value)?, T::ENCODING)
}

/// [`to_bytes`], signed for `path` like [`Doc::to_bytes_for`].
pub fn to_bytes_for<T: Schema>(value: &T, path: &std::path::Path) -> Result<Vec<u8>, SchemaError> {
    sealed::<T>(checked_value(value)?, path)
}

fn sealed<T: Schema>(mut value: Value, path: &std::path::Path) -> Result<Vec<u8>, SchemaError> {
    if T::SIGNED {
        crate::trust::seal_for_path::<T>(path, &mut value).map_err(|e| SchemaError::Invalid {
            problems: vec![format!("cannot sign it: {e}")],
        })?;
    }
    encode(&value, T::ENCODING)
}

/// The value as JSON, after [`Schema::check`].
fn checked_value<T: Schema>(value: &T) -> Result<Value, SchemaError> {
    let problems = value.check();
    if !problems.is_empty() {
        return Err(SchemaError::Invalid { problems });
    }
    serde_json::to_value(value).map_err(|e| SchemaError::Field {
        path: String::new(),
        message: e.to_string(),
    })
}

/// Parses bytes into a typed value, discarding unknown fields (for read-only use).
pub fn from_bytes<T: Schema>(bytes: &[u8]) -> Result<T, SchemaError> {
    Doc::<T>::parse(bytes).map(|d| d.value)
}

fn decode(bytes: &[u8], encoding: Encoding) -> Result<Value, SchemaError> {
    match encoding {
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| SchemaError::Syntax {
            encoding,
            message: e.to_string(),
        }),
        Encoding::Toml => {
            let text = std::str::from_utf8(bytes).map_err(|e| SchemaError::Syntax {
                encoding,
                message: format!("not UTF-8: {e}"),
            })?;
            let table: toml::Table = toml::from_str(text).map_err(|e| SchemaError::Syntax {
                encoding,
                message: e.message().to_owned()
                    + &e.span()
                        .map(|s| format!(" at byte {}", s.start))
                        .unwrap_or_default(),
            })?;
            serde_json::to_value(table).map_err(|e| SchemaError::Syntax {
                encoding,
                message: e.to_string(),
            })
        }
    }
}

fn encode(value: &Value, encoding: Encoding) -> Result<Vec<u8>, SchemaError> {
    let to_err = |message: String| SchemaError::Field {
        path: String::new(),
        message,
    };
    match encoding {
        Encoding::Json => {
            let mut out = serde_json::to_vec_pretty(value).map_err(|e| to_err(e.to_string()))?;
            out.push(b'\n');
            Ok(out)
        }
        Encoding::Toml => toml::to_string(value)
            .map(String::into_bytes)
            .map_err(|e| to_err(e.to_string())),
    }
}

fn check_version<T: Schema>(object: &Map<String, Value>) -> Result<(), SchemaError> {
    let Some(found) = object.get("format_version") else {
        return Ok(());
    };
    let version = found
        .as_u64()
        .filter(|v| *v >= 1)
        .ok_or_else(|| SchemaError::BadVersion {
            found: found.to_string(),
        })?;
    if version > u64::from(T::FORMAT_VERSION) {
        return Err(SchemaError::NewerVersion {
            schema: T::NAME,
            found: version,
            supported: T::FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Checks the seed's credit figures, which several schemas carry flat: `error_rate` is a
/// fraction and `avg_response_time` a non-negative number of seconds. `at` prefixes the field
/// names in messages ("credit_state", "pcs.PC1"); empty for the top level.
pub(crate) fn check_credit_figures(
    at: &str,
    error_rate: f64,
    avg_response_time: f64,
    problems: &mut Vec<String>,
) {
    let name = |field: &str| {
        if at.is_empty() {
            field.to_owned()
        } else {
            format!("{at}.{field}")
        }
    };
    check_fraction(&name("error_rate"), error_rate, problems);
    check_non_negative(&name("avg_response_time"), avg_response_time, problems);
}

/// A number that must lie in 0..=1.
pub(crate) fn check_fraction(name: &str, value: f64, problems: &mut Vec<String>) {
    if !(0.0..=1.0).contains(&value) {
        problems.push(format!("{name} is {value}, it must be between 0 and 1"));
    }
}

/// A number that must be finite and at least 0.
pub(crate) fn check_non_negative(name: &str, value: f64, problems: &mut Vec<String>) {
    if !value.is_finite() || value < 0.0 {
        problems.push(format!(
            "{name} is {value}, it must be a non-negative number"
        ));
    }
}
