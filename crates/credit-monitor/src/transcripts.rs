//! Claude Code's transcripts as a source of events, so the agent needs no wrapper.
//!
//! Claude Code writes one JSON object per line to `~/.claude/projects/<project>/<session>.jsonl`
//! (format as recorded from Claude Code 2.1.332; fixtures and the script that records them in
//! `tests/fixtures/claude-code/`). The lines that matter:
//!
//! * `"type": "system", "subtype": "api_error"` — one per failed attempt that Claude Code
//!   retries: `error.status` (429 a rate limit, 529 overloaded, anything else an error),
//!   `error.requestId`, and `error.rateLimits` — `{"rateLimitType": "five_hour",
//!   "resetsAt": <unix seconds>}` when the provider sent its unified usage-limit headers, which
//!   makes it a usage limit that resets then. Counted once per line `uuid`.
//! * `"isApiErrorMessage": true` on an `assistant` line — the final attempt, shown to the user:
//!   `apiErrorStatus` says which (older versions: the text, where
//!   `Claude AI usage limit reached|<unix seconds>` is a usage limit that resets then). Not
//!   counted again when a `system` line already counted its `requestId`.
//! * `"type": "assistant"` with `message.usage` — a successful call and its tokens. Claude Code
//!   writes one line per content block of a response, all with the same `message.id` and
//!   `requestId`; each response is counted once.
//!
//! Every other line type (`queue-operation`, `attachment`, `api-request`, `api-request-blob`,
//! `last-prompt`, `cost-state`, …) is skipped, as is any line that is not JSON.
//!
//! Offsets are kept in `local/credit/transcripts.json`; only complete lines are read. Files
//! that exist when the monitor first starts are read from their end (their past is not news).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use trinity_core::credit::{CreditEvent, EventKind};
use trinity_core::local::{self, LocalError, LocalState};

/// How many response ids are remembered for de-duplication.
const SEEN_IDS: usize = 10_000;

/// The most read from one file in one pass (the rest is read on the next).
const MAX_READ_PER_PASS: u64 = 8 * 1024 * 1024;

/// Where each transcript was read up to, persisted between runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TailState {
    /// Byte offset of the first unread line, per file.
    #[serde(default)]
    pub offsets: BTreeMap<PathBuf, u64>,
    /// Recently counted responses (`message.id` + `requestId`).
    #[serde(default)]
    pub seen: VecDeque<String>,
    /// True once a first pass has been made (files found later are read from their start).
    #[serde(default)]
    pub started: bool,
}

impl LocalState for TailState {
    const NAME: &'static str = "the transcripts' read positions";
    const MAX_BYTES: usize = 16 * 1024 * 1024;
}

impl TailState {
    /// Loads the state, or an empty one (a corrupt one is set aside and reported: reading
    /// starts again at each file's end, so nothing is counted twice).
    pub fn load(path: &Path) -> Self {
        local::read(path)
            .inspect_err(|e| tracing::warn!(error = %e, "starting the transcripts afresh"))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Saves the state atomically.
    pub fn save(&self, path: &Path) -> Result<(), LocalError> {
        local::write(path, self)
    }

    fn remember(&mut self, key: String) -> bool {
        if self.seen.contains(&key) {
            return false;
        }
        self.seen.push_back(key);
        while self.seen.len() > SEEN_IDS {
            self.seen.pop_front();
        }
        true
    }
}

/// Expands a leading `~` to the home directory.
pub fn expand_home(dir: &str) -> Option<PathBuf> {
    trinity_core::config::expand_home(dir)
}

fn jsonl_files(dir: &Path, out: &mut Vec<PathBuf>, depth: u32) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() && depth < 4 => jsonl_files(&path, out, depth + 1),
            Ok(t) if t.is_file() && path.extension().is_some_and(|e| e == "jsonl") => {
                out.push(path);
            }
            _ => {}
        }
    }
}

/// Reads what is new in every transcript under `dir` and returns it as events.
pub fn poll(dir: &Path, state: &mut TailState, now: DateTime<Utc>) -> Vec<CreditEvent> {
    let mut files = Vec::new();
    jsonl_files(dir, &mut files, 0);
    files.sort();
    let first_pass = !state.started;
    state.started = true;
    let mut events = Vec::new();
    for file in &files {
        let Ok(len) = fs::metadata(file).map(|m| m.len()) else {
            continue;
        };
        let offset = match state.offsets.get(file) {
            Some(&o) if o <= len => o,
            Some(_) => 0, // truncated or replaced: start again
            None if first_pass => len,
            None => 0,
        };
        let end = len.min(offset + MAX_READ_PER_PASS);
        let mut buf = Vec::new();
        let read = File::open(file).and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            f.take(end - offset).read_to_end(&mut buf)
        });
        if read.is_err() {
            continue;
        }
        // Only complete lines; a partial last line is read next time.
        let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in buf[..complete].split(|&b| b == b'\n') {
            if let Some(e) = parse_line(line, state, now) {
                events.push(e);
            }
        }
        state.offsets.insert(file.clone(), offset + complete as u64);
    }
    state.offsets.retain(|p, _| files.contains(p));
    events
}

fn text_of(v: &Value) -> String {
    let content = &v["message"]["content"];
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The reset time in "usage limit reached|1763740800".
fn usage_limit_reset(text: &str) -> Option<Option<DateTime<Utc>>> {
    let lower = text.to_ascii_lowercase();
    let at = lower.find("usage limit reached")?;
    let rest = &text[at + "usage limit reached".len()..];
    let epoch = rest
        .strip_prefix('|')
        .map(|r| {
            r.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|d| d.parse::<i64>().ok())
        .and_then(|s| Utc.timestamp_opt(s, 0).single());
    Some(epoch)
}

/// A failed API call as an event: a usage limit when the provider said when it resets, else by
/// HTTP status (429 a rate limit, 529 overloaded, others an error), else by the text.
fn api_error_event(
    ts: DateTime<Utc>,
    status: Option<u64>,
    rate_limits: &Value,
    text: &str,
) -> CreditEvent {
    if let Some(reset) = rate_limits["resetsAt"]
        .as_i64()
        .and_then(|s| Utc.timestamp_opt(s, 0).single())
    {
        let mut e = CreditEvent::new(ts, EventKind::UsageLimit);
        e.reset_at = Some(reset);
        return e;
    }
    let status = status.and_then(|s| u16::try_from(s).ok());
    let kind = match status {
        Some(429) => EventKind::RateLimit,
        Some(529) => EventKind::Overloaded,
        Some(_) => EventKind::Error,
        None => {
            let lower = text.to_ascii_lowercase();
            if lower.contains("rate_limit") || lower.contains("rate limit") || lower.contains("429")
            {
                EventKind::RateLimit
            } else if lower.contains("overloaded") || lower.contains("529") {
                EventKind::Overloaded
            } else {
                EventKind::Error
            }
        }
    };
    let mut e = CreditEvent::new(ts, kind);
    if kind == EventKind::Error {
        e.status_code = status;
    }
    e
}

/// One transcript line as an event, if it is one.
pub fn parse_line(line: &[u8], state: &mut TailState, now: DateTime<Utc>) -> Option<CreditEvent> {
    let line = std::str::from_utf8(line).ok()?.trim();
    if line.is_empty() {
        return None;
    }
    let v: Value = serde_json::from_str(line).ok()?;
    let ts = v["timestamp"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(now, |t| t.with_timezone(&Utc));
    if v["type"].as_str() == Some("system") && v["subtype"].as_str() == Some("api_error") {
        let uuid = v["uuid"].as_str().unwrap_or("");
        if !uuid.is_empty() && !state.remember(format!("uuid:{uuid}")) {
            return None;
        }
        let error = &v["error"];
        if let Some(request) = error["requestId"].as_str() {
            state.remember(format!("request:{request}"));
        }
        let text = error["formatted"]
            .as_str()
            .or_else(|| error["message"].as_str())
            .unwrap_or("");
        return Some(api_error_event(
            ts,
            error["status"].as_u64(),
            &error["rateLimits"],
            text,
        ));
    }
    let text = text_of(&v);
    if let Some(reset_at) = usage_limit_reset(&text) {
        let mut e = CreditEvent::new(ts, EventKind::UsageLimit);
        e.reset_at = reset_at;
        return Some(e);
    }
    if v["isApiErrorMessage"].as_bool() == Some(true) {
        if let Some(request) = v["requestId"].as_str()
            && !state.remember(format!("request:{request}"))
        {
            return None;
        }
        let mut e = api_error_event(ts, v["apiErrorStatus"].as_u64(), &Value::Null, &text);
        if v["error"].as_str() == Some("rate_limit") {
            e.kind = EventKind::RateLimit;
        }
        return Some(e);
    }
    let usage = &v["message"]["usage"];
    if v["type"].as_str() == Some("assistant") && usage.is_object() {
        let id = v["message"]["id"].as_str().unwrap_or("");
        let request = v["requestId"].as_str().unwrap_or("");
        if (!id.is_empty() || !request.is_empty()) && !state.remember(format!("{id}/{request}")) {
            return None;
        }
        let mut e = CreditEvent::new(ts, EventKind::Success);
        e.tokens = Some(crate::claude_output::usage_tokens(usage));
        return Some(e);
    }
    None
}
