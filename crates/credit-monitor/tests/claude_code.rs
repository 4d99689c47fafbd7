//! What the real Claude Code CLI writes, replayed through the credit monitor's sources and the
//! rules, for every supported version.
//!
//! The fixtures under `tests/fixtures/claude-code/<version>/` were recorded by
//! `scripts/record-claude-fixtures.sh`: the CLI run with `-p "say hi"` against a loopback stub
//! of the API that answered every request with 429 (with and without the unified usage-limit
//! headers), 529, 500, or successfully; at most two retries (`CLAUDE_CODE_MAX_RETRIES=2`), so
//! three requests for every refusal; and a session killed mid-request, then resumed. The
//! monitor reads both the transcript and the CLI's stream-json output (what the wake-daemon
//! writes to `logs/agent.log`), as the daemon does.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use credit_monitor::transcripts::{self, TailState};
use trinity_core::config::CreditConfig;
use trinity_core::credit::{self, CreditEvent, EventKind, Rules};
use trinity_core::schema::CreditLevel;

#[path = "support/replay.rs"]
mod replay;

/// Every version the monitor supports, oldest first (docs/credit-monitor.md).
const VERSIONS: [&str; 2] = ["2.1.197", "2.1.332"];

fn fixture(version: &str, case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/claude-code")
        .join(version)
        .join(case)
}

/// Which of a recorded run's files the monitor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// The transcript and the agent's output, as the daemon does.
    Both,
    /// Only the transcript.
    Transcript,
    /// Only the output (no transcripts directory).
    Output,
}

/// The events the monitor makes of a recorded run, read as the daemon reads a session that
/// appears while it runs.
fn tail(version: &str, case: &str, read: Read) -> Vec<CreditEvent> {
    let dir = tempfile::tempdir().expect("temp");
    let projects = dir.path().join("projects");
    let log = dir.path().join("agent.log");
    std::fs::create_dir_all(&projects).expect("projects");
    let (transcripts, output) = match read {
        Read::Both => (Some(projects.as_path()), Some(log.as_path())),
        Read::Transcript => (Some(projects.as_path()), None),
        Read::Output => (None, Some(log.as_path())),
    };
    let mut state = TailState::default();
    // Read at the time of the recording: the output's lines carry no time and are stamped
    // with it, as the daemon stamps them when it reads them.
    let now = replay::recorded_at(&fixture(version, case).join("transcript.jsonl"))
        .unwrap_or_else(Utc::now);
    assert!(transcripts::poll(transcripts, output, &mut state, now).is_empty());
    let project = projects.join("-work-project");
    std::fs::create_dir_all(&project).expect("project dir");
    std::fs::copy(
        fixture(version, case).join("transcript.jsonl"),
        project.join("session.jsonl"),
    )
    .expect("copy");
    std::fs::copy(fixture(version, case).join("stream.jsonl"), &log).expect("copy");
    let events = transcripts::poll(transcripts, output, &mut state, now);
    // Read again: nothing is counted twice.
    assert!(transcripts::poll(transcripts, output, &mut state, now).is_empty());
    events
}

fn requests(version: &str, case: &str) -> usize {
    std::fs::read_to_string(fixture(version, case).join("requests.txt"))
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
fn every_refused_attempt_is_a_rate_limit_once_and_three_hand_off() {
    for v in VERSIONS {
        assert_eq!(
            requests(v, "429"),
            3,
            "{v}: the stub refused three requests"
        );
        let events = tail(v, "429", Read::Both);
        assert_eq!(kinds(&events), [EventKind::RateLimit; 3], "{v}");
        let e = evaluate(&events);
        assert_eq!(e.level, CreditLevel::Exhausted, "{v}");
        assert_eq!(e.rule, Some(credit::rule::RATE_LIMIT), "{v}");
        // Either source alone tells the whole story, or (2.1.197's transcript) less of it.
        assert_eq!(tail(v, "429", Read::Output).len(), 3, "{v}");
    }
    // 2.1.197 writes only the last refusal of a request to its transcript: without the
    // output, three refusals of one request were one rate limit and no handoff happened.
    assert_eq!(tail("2.1.197", "429", Read::Transcript).len(), 1);
    assert_eq!(tail("2.1.332", "429", Read::Transcript).len(), 3);
}

#[test]
fn the_unified_limit_headers_are_a_usage_limit_with_its_reset_time() {
    // 2.1.332 writes the provider's usage-limit headers to its transcript.
    let v = "2.1.332";
    let events = tail(v, "429-unified", Read::Both);
    assert_eq!(events.len(), requests(v, "429-unified"));
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
    // 2.1.197 does not: three rate limits, which hand off too (the reset time unknown).
    let old = tail("2.1.197", "429-unified", Read::Both);
    assert_eq!(kinds(&old), [EventKind::RateLimit; 3]);
    assert_eq!(evaluate(&old).level, CreditLevel::Exhausted);
}

#[test]
fn overloaded_attempts_never_fire_a_rule() {
    for v in VERSIONS {
        let events = tail(v, "529", Read::Both);
        assert_eq!(kinds(&events), [EventKind::Overloaded; 3], "{v}");
        assert_eq!(evaluate(&events).level, CreditLevel::Healthy, "{v}");
    }
}

#[test]
fn server_errors_are_errors_with_their_status() {
    for v in VERSIONS {
        let events = tail(v, "500", Read::Both);
        assert_eq!(kinds(&events), [EventKind::Error; 3], "{v}");
        assert!(events.iter().all(|e| e.status_code == Some(500)), "{v}");
    }
}

#[test]
fn a_successful_answer_is_one_success_with_its_tokens() {
    for v in VERSIONS {
        let events = tail(v, "success", Read::Both);
        assert_eq!(kinds(&events), [EventKind::Success], "{v}");
        assert_eq!(events[0].tokens, Some(17), "{v}");
        // Without transcripts, the output's result is the success.
        let alone = tail(v, "success", Read::Output);
        assert_eq!(kinds(&alone), [EventKind::Success], "{v}");
    }
}

#[test]
fn a_resumed_session_s_synthetic_line_is_no_answer() {
    for v in VERSIONS {
        let text = std::fs::read_to_string(fixture(v, "resumed").join("transcript.jsonl"))
            .expect("transcript");
        assert!(
            text.contains("No response requested.") && text.contains("<synthetic>"),
            "{v}: the fixture holds Claude Code's own line"
        );
        // One provider answer (the resumed turn's), not two.
        let events = tail(v, "resumed", Read::Both);
        assert_eq!(kinds(&events), [EventKind::Success], "{v}");
        assert_eq!(requests(v, "resumed"), 1, "{v}");
    }
}

#[test]
fn the_stop_failure_hook_names_the_rate_limit() {
    for v in VERSIONS {
        let hook: serde_json::Value = serde_json::from_slice(
            &std::fs::read(fixture(v, "429").join("stop-failure.json")).expect("hook input"),
        )
        .expect("json");
        assert_eq!(hook["hook_event_name"], "StopFailure", "{v}");
        assert_eq!(hook["error"], "rate_limit", "{v}");
        assert!(hook["session_id"].as_str().is_some(), "{v}");
    }
}

fn from_output(version: &str, case: &str) -> Vec<CreditEvent> {
    let text =
        std::fs::read_to_string(fixture(version, case).join("stream.jsonl")).expect("stream");
    credit_monitor::claude_output::events(&text, Utc::now())
}

#[test]
fn the_stream_json_output_tells_the_same_story() {
    for v in VERSIONS {
        assert_eq!(
            kinds(&from_output(v, "429")),
            [EventKind::RateLimit; 3],
            "{v}"
        );
        assert_eq!(
            kinds(&from_output(v, "429-unified")),
            [EventKind::RateLimit; 3],
            "{v}"
        );
        assert_eq!(
            kinds(&from_output(v, "529")),
            [EventKind::Overloaded; 3],
            "{v}"
        );
        let errors = from_output(v, "500");
        assert_eq!(kinds(&errors), [EventKind::Error; 3], "{v}");
        assert!(errors.iter().all(|e| e.status_code == Some(500)), "{v}");
        let ok = from_output(v, "success");
        assert_eq!(kinds(&ok), [EventKind::Success], "{v}");
        assert_eq!(ok[0].tokens, Some(17), "{v}");
    }
}

#[test]
fn the_json_output_is_one_result() {
    // `--output-format json` prints the result object alone, possibly pretty-printed.
    for v in VERSIONS {
        let last = std::fs::read_to_string(fixture(v, "429").join("stream.jsonl"))
            .expect("stream")
            .lines()
            .last()
            .expect("a result line")
            .to_owned();
        let value: serde_json::Value = serde_json::from_str(&last).expect("json");
        let pretty = serde_json::to_string_pretty(&value).expect("pretty");
        let events = credit_monitor::claude_output::events(&pretty, Utc::now());
        assert_eq!(kinds(&events), [EventKind::RateLimit], "{v}");
    }
}
