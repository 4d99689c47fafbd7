//! What the real Claude Code CLI writes, replayed through the transcript tailer and the rules.
//!
//! The fixtures under `tests/fixtures/claude-code/<version>/` were recorded by
//! `scripts/record-claude-fixtures.sh`: the CLI run with `-p "say hi"` against a loopback stub
//! of the API that answered every request with 429 (with and without the unified usage-limit
//! headers), 529, 500, or successfully; at most two retries (`CLAUDE_CODE_MAX_RETRIES=2`), so
//! three requests for every refusal.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use credit_monitor::transcripts::{self, TailState};
use trinity_core::config::CreditConfig;
use trinity_core::credit::{self, CreditEvent, EventKind, Rules};
use trinity_core::schema::CreditLevel;

const VERSION: &str = "2.1.332";

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/claude-code")
        .join(VERSION)
        .join(case)
}

/// The events the tailer makes of a recorded transcript, read as the daemon reads a session
/// that appears while it runs.
fn tail(case: &str) -> Vec<CreditEvent> {
    let dir = tempfile::tempdir().expect("temp");
    let mut state = TailState::default();
    let now = Utc::now();
    assert!(transcripts::poll(dir.path(), &mut state, now).is_empty());
    let project = dir.path().join("-work-project");
    std::fs::create_dir_all(&project).expect("project dir");
    std::fs::copy(
        fixture(case).join("transcript.jsonl"),
        project.join("session.jsonl"),
    )
    .expect("copy");
    let events = transcripts::poll(dir.path(), &mut state, now);
    // Read again: nothing is counted twice.
    assert!(transcripts::poll(dir.path(), &mut state, now).is_empty());
    events
}

fn requests(case: &str) -> usize {
    std::fs::read_to_string(fixture(case).join("requests.txt"))
        .expect("requests.txt")
        .trim()
        .parse()
        .expect("a count")
}

fn kinds(events: &[CreditEvent]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

fn evaluate(events: &[CreditEvent]) -> credit::Evaluation {
    let mut m = credit::Tracker::new(Rules::from(&CreditConfig::default()));
    for e in events {
        m.ingest(e);
    }
    let last: DateTime<Utc> = events.iter().map(|e| e.ts).max().expect("events");
    m.evaluate(last)
}

#[test]
fn every_refused_attempt_is_a_rate_limit_and_three_hand_off() {
    let events = tail("429");
    assert_eq!(requests("429"), 3, "the stub refused three requests");
    assert_eq!(kinds(&events), [EventKind::RateLimit; 3]);
    let e = evaluate(&events);
    assert_eq!(e.level, CreditLevel::Exhausted);
    assert_eq!(e.rule, Some(credit::rule::RATE_LIMIT));
}

#[test]
fn the_unified_limit_headers_are_a_usage_limit_with_its_reset_time() {
    let events = tail("429-unified");
    assert_eq!(events.len(), requests("429-unified"));
    let reset = events
        .iter()
        .find(|e| e.kind == EventKind::UsageLimit)
        .and_then(|e| e.reset_at)
        .expect("a usage limit with its reset time");
    // The stub announced a reset one hour after it started.
    let first = events.iter().map(|e| e.ts).min().expect("events");
    let ahead = (reset - first).num_minutes();
    assert!((55..=61).contains(&ahead), "resets {ahead} min ahead");
    let e = evaluate(&events);
    assert_eq!(e.level, CreditLevel::Exhausted);
    assert_eq!(e.rule, Some(credit::rule::USAGE_LIMIT));
    assert_eq!(e.exhausted_until, Some(reset));
}

#[test]
fn overloaded_attempts_never_fire_a_rule() {
    let events = tail("529");
    assert_eq!(kinds(&events), [EventKind::Overloaded; 3]);
    assert_eq!(evaluate(&events).level, CreditLevel::Healthy);
}

#[test]
fn server_errors_are_errors_with_their_status() {
    let events = tail("500");
    assert_eq!(kinds(&events), [EventKind::Error; 3]);
    assert!(events.iter().all(|e| e.status_code == Some(500)));
}

#[test]
fn a_successful_answer_is_one_success_with_its_tokens() {
    let events = tail("success");
    assert_eq!(kinds(&events), [EventKind::Success]);
    assert_eq!(events[0].tokens, Some(17));
}

fn from_output(case: &str) -> Vec<CreditEvent> {
    let text = std::fs::read_to_string(fixture(case).join("stream.jsonl")).expect("stream");
    credit_monitor::claude_output::events(&text, Utc::now())
}

#[test]
fn the_stream_json_output_tells_the_same_story() {
    assert_eq!(kinds(&from_output("429")), [EventKind::RateLimit; 3]);
    assert_eq!(
        kinds(&from_output("429-unified")),
        [EventKind::RateLimit; 3]
    );
    assert_eq!(kinds(&from_output("529")), [EventKind::Overloaded; 3]);
    let errors = from_output("500");
    assert_eq!(kinds(&errors), [EventKind::Error; 3]);
    assert!(errors.iter().all(|e| e.status_code == Some(500)));
    let ok = from_output("success");
    assert_eq!(kinds(&ok), [EventKind::Success]);
    assert_eq!(ok[0].tokens, Some(17));
}

#[test]
fn the_json_output_is_one_result() {
    // `--output-format json` prints the result object alone, possibly pretty-printed.
    let last = std::fs::read_to_string(fixture("429").join("stream.jsonl"))
        .expect("stream")
        .lines()
        .last()
        .expect("a result line")
        .to_owned();
    let value: serde_json::Value = serde_json::from_str(&last).expect("json");
    let pretty = serde_json::to_string_pretty(&value).expect("pretty");
    let events = credit_monitor::claude_output::events(&pretty, Utc::now());
    assert_eq!(kinds(&events), [EventKind::RateLimit]);
}
