//! Claude Code's transcripts, and the output of the agents this PC started, as sources of
//! events, so the agent needs no wrapper.
//!
//! Claude Code writes one JSON object per line to `~/.claude/projects/<project>/<session>.jsonl`
//! (formats as recorded from Claude Code 2.1.197 and 2.1.332; fixtures and the script that
//! records them in `tests/fixtures/claude-code/`). The lines that matter:
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
//!   `requestId`; each response is counted once. A line of model `<synthetic>` is Claude Code's
//!   own ("No response requested." when a session is resumed), never a provider's answer.
//!
//! Every other line type (`queue-operation`, `attachment`, `api-request`, `api-request-blob`,
//! `last-prompt`, `cost-state`, …) is skipped, as is any line that is not JSON.
//!
//! **Older versions** (2.1.197) write only the final refusal of a request to the transcript;
//! its retried attempts appear only in the `--output-format stream-json` output, as
//! `{"type": "system", "subtype": "api_retry", "error_status": 429, "session_id": …}` lines and a
//! final `result` with `api_error_status`. The wake-daemon writes the agents' output to
//! `logs/agent.log`, which is read too ([`poll`]). Both sources report the same refusals of a
//! session in the same order, so they are counted per session and source: the n-th refusal of
//! a session is an event once, whichever source reports it first; the other source's n-th
//! adds nothing. (Successes come from the transcripts, one per response; from the output only
//! when no transcripts are read, its `result` summing up the run.)
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

/// How many sessions' refusal counts are remembered.
const SESSIONS: usize = 256;

/// Where a refusal was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A session transcript.
    Transcript,
    /// The agent's stream-json output (`logs/agent.log`).
    Output,
}

/// The refusals of one session each source has reported, and how many became events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRefusals {
    /// The session id.
    pub session: String,
    /// Refusals read from its transcript.
    #[serde(default)]
    pub transcript: u32,
    /// Refusals read from the agent's output.
    #[serde(default)]
    pub output: u32,
    /// Refusals counted as events.
    #[serde(default)]
    pub counted: u32,
}

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
    /// Byte offset of the first unread line of `logs/agent.log`.
    #[serde(default)]
    pub agent_log: Option<u64>,
    /// Refusals per recent session, for counting each once across both sources.
    #[serde(default)]
    pub refusals: VecDeque<SessionRefusals>,
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

    /// Whether a refusal `source` reports for `session` is one not counted yet: the n-th
    /// refusal of a session counts once, whichever source reports it first. Without a session
    /// id it counts.
    pub fn new_refusal(&mut self, session: Option<&str>, source: Source) -> bool {
        let Some(session) = session.filter(|s| !s.is_empty()) else {
            return true;
        };
        let at = match self.refusals.iter().position(|r| r.session == session) {
            Some(i) => i,
            None => {
                self.refusals.push_back(SessionRefusals {
                    session: session.to_owned(),
                    ..SessionRefusals::default()
                });
                while self.refusals.len() > SESSIONS {
                    self.refusals.pop_front();
                }
                self.refusals.len() - 1
            }
        };
        let r = &mut self.refusals[at];
        let seen = match source {
            Source::Transcript => {
                r.transcript += 1;
                r.transcript
            }
            Source::Output => {
                r.output += 1;
                r.output
            }
        };
        if seen > r.counted {
            r.counted = seen;
            true
        } else {
            false
        }
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

/// Reads what is new in every transcript under `dir` and in the agents' output `agent_log`
/// (either may be absent) and returns it as events.
pub fn poll(
    dir: Option<&Path>,
    agent_log: Option<&Path>,
    state: &mut TailState,
    now: DateTime<Utc>,
) -> Vec<CreditEvent> {
    let first_pass = !state.started;
    state.started = true;
    let mut events = Vec::new();
    if let Some(dir) = dir {
        poll_transcripts(dir, first_pass, state, now, &mut events);
    }
    if let Some(log) = agent_log {
        poll_output(log, first_pass, dir.is_none(), state, now, &mut events);
    }
    events
}

/// The complete lines of `file` from `offset` (at most [`MAX_READ_PER_PASS`] bytes), and the
/// offset after them; `None` when it cannot be read.
fn new_lines(file: &Path, offset: u64, len: u64) -> Option<(Vec<u8>, u64)> {
    let end = len.min(offset + MAX_READ_PER_PASS);
    let mut buf = Vec::new();
    File::open(file)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            f.take(end - offset).read_to_end(&mut buf)
        })
        .ok()?;
    // Only complete lines; a partial last line is read next time.
    let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    buf.truncate(complete);
    Some((buf, offset + complete as u64))
}

/// Reads what is new in the agents' stream-json output: refusals (counted once per session
/// with the transcripts), and successes only when `successes` (no transcripts are read).
fn poll_output(
    file: &Path,
    first_pass: bool,
    successes: bool,
    state: &mut TailState,
    now: DateTime<Utc>,
    events: &mut Vec<CreditEvent>,
) {
    let Ok(len) = fs::metadata(file).map(|m| m.len()) else {
        return;
    };
    let offset = match state.agent_log {
        Some(o) if o <= len => o,
        Some(_) => 0, // rotated or truncated: start again
        None if first_pass => len,
        None => 0,
    };
    let Some((buf, next)) = new_lines(file, offset, len) else {
        return;
    };
    for line in buf.split(|&b| b == b'\n') {
        let Some(v) = std::str::from_utf8(line)
            .ok()
            .map(str::trim)
            .filter(|l| l.starts_with('{'))
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
        else {
            continue;
        };
        let Some(e) = crate::claude_output::event_of(&v, now) else {
            continue;
        };
        if e.kind == EventKind::Success {
            if successes {
                events.push(e);
            }
        } else if state.new_refusal(v["session_id"].as_str(), Source::Output) {
            events.push(e);
        }
    }
    state.agent_log = Some(next);
}

fn poll_transcripts(
    dir: &Path,
    first_pass: bool,
    state: &mut TailState,
    now: DateTime<Utc>,
    events: &mut Vec<CreditEvent>,
) {
    let mut files = Vec::new();
    jsonl_files(dir, &mut files, 0);
    files.sort();
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
        let Some((buf, next)) = new_lines(file, offset, len) else {
            continue;
        };
        for line in buf.split(|&b| b == b'\n') {
            if let Some(e) = parse_line(line, state, now) {
                events.push(e);
            }
        }
        state.offsets.insert(file.clone(), next);
    }
    state.offsets.retain(|p, _| files.contains(p));
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
        None => crate::claude_output::kind_of_text(text),
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
    let session = v["sessionId"].as_str();
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
        let e = api_error_event(ts, error["status"].as_u64(), &error["rateLimits"], text);
        return state.new_refusal(session, Source::Transcript).then_some(e);
    }
    let text = text_of(&v);
    if let Some(reset_at) = usage_limit_reset(&text) {
        let mut e = CreditEvent::new(ts, EventKind::UsageLimit);
        e.reset_at = reset_at;
        return state.new_refusal(session, Source::Transcript).then_some(e);
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
        return state.new_refusal(session, Source::Transcript).then_some(e);
    }
    let usage = &v["message"]["usage"];
    // Claude Code's own lines (a resumed session's "No response requested.") are no answer.
    let synthetic = v["message"]["model"].as_str() == Some("<synthetic>");
    if v["type"].as_str() == Some("assistant") && usage.is_object() && !synthetic {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_of_a_session_counts_once_whichever_source_reports_it_first() {
        let mut s = TailState::default();
        let t = Source::Transcript;
        let o = Source::Output;
        // The output first (2.1.197's retries), then the transcript's one line: three.
        let a = Some("a");
        let counted: Vec<bool> = [o, o, o, t]
            .iter()
            .map(|src| s.new_refusal(a, *src))
            .collect();
        assert_eq!(counted, [true, true, true, false]);
        // Interleaved, both reporting all three (2.1.332): three.
        let b = Some("b");
        let counted: Vec<bool> = [t, o, o, t, t, o]
            .iter()
            .map(|src| s.new_refusal(b, *src))
            .collect();
        assert_eq!(counted.iter().filter(|c| **c).count(), 3, "{counted:?}");
        // Sessions are apart; no session id always counts.
        assert!(s.new_refusal(Some("c"), t));
        assert!(s.new_refusal(None, t) && s.new_refusal(None, t));
        // Only the latest sessions are remembered.
        for i in 0..(SESSIONS + 10) {
            s.new_refusal(Some(&format!("s{i}")), t);
        }
        assert_eq!(s.refusals.len(), SESSIONS);
    }
}
