//! Recorded transcripts replayed at the time they were recorded, or as if written now (their
//! time stamps moved): the rules' windows are minutes long, and a recording is older than that
//! the next day.
// Each test file uses part of it.
#![allow(dead_code)]

use chrono::{DateTime, SecondsFormat, Utc};
use std::path::Path;

/// When a recorded transcript's last line was written.
pub(crate) fn recorded_at(transcript: &Path) -> Option<DateTime<Utc>> {
    let text = std::fs::read_to_string(transcript).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("timestamp")?.as_str()?.parse().ok())
        .max()
}

/// Copies the transcript `from` to `to` with every `timestamp` moved by the same amount, the
/// last one to `now`.
pub(crate) fn copy_transcript_as_of(from: &Path, to: &Path, now: DateTime<Utc>) {
    let text = std::fs::read_to_string(from).expect("read the recorded transcript");
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let mut raw: Vec<&str> = Vec::new();
    for line in text.lines() {
        raw.push(line);
        lines.push(serde_json::from_str(line).unwrap_or(serde_json::Value::Null));
    }
    let time = |v: &serde_json::Value| -> Option<DateTime<Utc>> {
        v.get("timestamp")?.as_str()?.parse().ok()
    };
    let Some(last) = lines.iter().filter_map(time).max() else {
        std::fs::copy(from, to).expect("copy the transcript");
        return;
    };
    let shift = now - last;
    let mut out = String::new();
    for (v, line) in lines.iter_mut().zip(raw) {
        match time(v) {
            Some(t) => {
                v["timestamp"] = serde_json::Value::String(
                    (t + shift).to_rfc3339_opts(SecondsFormat::Millis, true),
                );
                out.push_str(&v.to_string());
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    std::fs::write(to, out).expect("write the transcript");
}
