//! What `claude -p` prints, as credit events: for users who run Claude Code non-interactively
//! (`credit-monitor --record-from-claude-result`, `credit-monitor wrap -- claude -p …`), so that a
//! wrapper needs no parsing of its own.
//!
//! Format as recorded from Claude Code 2.1.332 (`tests/fixtures/claude-code/`):
//!
//! * `--output-format stream-json --verbose`: one JSON object a line. Each retried attempt is
//!   `{"type": "system", "subtype": "api_retry", "error_status": 429, "error": "rate_limit", …}`;
//!   the run ends with `{"type": "result", "is_error": …, "api_error_status": 429,
//!   "api_error_type": "rate_limit_error", "usage": {…}, "duration_api_ms": …}`.
//! * `--output-format json`: only that `result` object (its retried attempts are not reported).
//!
//! 429 is a rate limit, 529 overloaded (never a reason to hand off), any other status an error;
//! a result without an error is a success with its tokens and API time. Older versions
//! (2.1.197) leave the status out of some results (`"result": "API Error: Repeated 529
//! Overloaded errors…"`): the text tells then. Lines of other types, and text that is not JSON,
//! are ignored.

use chrono::{DateTime, Utc};
use serde_json::Value;
use trinity_core::credit::{CreditEvent, EventKind};

/// Reads one line (or a whole `--output-format json` document) of Claude Code's output.
#[derive(Debug, Default)]
pub struct Reader {
    pending: String,
}

impl Reader {
    /// A reader with nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// The event one line of output stands for, if any. A JSON document spread over several
    /// lines (pretty-printed) is gathered until it parses.
    pub fn line(&mut self, line: &str, now: DateTime<Utc>) -> Option<CreditEvent> {
        let trimmed = line.trim();
        if self.pending.is_empty() && !trimmed.starts_with('{') {
            return None;
        }
        self.pending.push_str(line);
        self.pending.push('\n');
        match serde_json::from_str::<Value>(&self.pending) {
            Ok(v) => {
                self.pending.clear();
                event_of(&v, now)
            }
            Err(e) if e.is_eof() && self.pending.len() < 16 * 1024 * 1024 => None,
            Err(_) => {
                self.pending.clear();
                None
            }
        }
    }
}

/// Every event in a whole output.
pub fn events(text: &str, now: DateTime<Utc>) -> Vec<CreditEvent> {
    let mut reader = Reader::new();
    text.lines().filter_map(|l| reader.line(l, now)).collect()
}

/// The tokens an API `usage` object counts: input, output, and cache writes and reads.
pub fn usage_tokens(usage: &Value) -> u64 {
    [
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ]
    .iter()
    .filter_map(|k| usage[*k].as_u64())
    .sum()
}

/// An API error known only by its text: a rate limit, an overload, or an error.
pub fn kind_of_text(text: &str) -> EventKind {
    let lower = text.to_ascii_lowercase();
    if lower.contains("rate_limit") || lower.contains("rate limit") || lower.contains("429") {
        EventKind::RateLimit
    } else if lower.contains("overloaded") || lower.contains("529") {
        EventKind::Overloaded
    } else {
        EventKind::Error
    }
}

fn by_text(now: DateTime<Utc>, text: &str) -> CreditEvent {
    CreditEvent::new(now, kind_of_text(text))
}

fn by_status(now: DateTime<Utc>, status: Option<u64>) -> CreditEvent {
    let status = status.and_then(|s| u16::try_from(s).ok());
    let kind = match status {
        Some(429) => EventKind::RateLimit,
        Some(529) => EventKind::Overloaded,
        _ => EventKind::Error,
    };
    let mut e = CreditEvent::new(now, kind);
    if kind == EventKind::Error {
        e.status_code = status;
    }
    e
}

/// The event one parsed line of output stands for, if any.
pub fn event_of(v: &Value, now: DateTime<Utc>) -> Option<CreditEvent> {
    match (v["type"].as_str(), v["subtype"].as_str()) {
        (Some("system"), Some("api_retry")) => {
            let mut e = by_status(now, v["error_status"].as_u64());
            if e.kind == EventKind::Error && v["error"].as_str() == Some("rate_limit") {
                e.kind = EventKind::RateLimit;
            }
            Some(e)
        }
        (Some("result"), _) => {
            if v["is_error"].as_bool() == Some(true) {
                let status = v["api_error_status"].as_u64();
                if status.is_none() && v["api_error_type"].is_null() {
                    // Older versions (2.1.197) name no status for some API errors ("API Error:
                    // Repeated 529 Overloaded errors…"): the text tells. Any other error is
                    // the run's (a tool, a turn limit), not the API's.
                    let text = v["result"].as_str().unwrap_or("");
                    return text.starts_with("API Error").then(|| by_text(now, text));
                }
                let mut e = by_status(now, status);
                if v["api_error_type"].as_str() == Some("rate_limit_error") {
                    e.kind = EventKind::RateLimit;
                    e.status_code = None;
                }
                return Some(e);
            }
            let mut e = CreditEvent::new(now, EventKind::Success);
            e.tokens = Some(usage_tokens(&v["usage"]));
            e.duration_s = v["duration_api_ms"]
                .as_f64()
                .filter(|ms| *ms > 0.0)
                .map(|ms| ms / 1000.0);
            Some(e)
        }
        _ => None,
    }
}
