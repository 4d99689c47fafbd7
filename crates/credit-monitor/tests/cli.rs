//! The `credit-monitor` program as users run it: recording commands, concurrency, the daemon,
//! replay, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use trinity_core::fsio;
use trinity_core::schema::{CreditLevel, CreditStatus, Handoff, Heartbeat, HeartbeatStatus};
use trinity_core::{PcId, Tree, validate};

#[path = "support/replay.rs"]
mod replay;

const BIN: &str = env!("CARGO_BIN_EXE_credit-monitor");

struct Env {
    t: trinity_testkit::TestTree,
}

impl Env {
    fn new(extra_config: &str) -> Self {
        let t = trinity_testkit::TestTree::builder()
            .config(&format!(
                "[credit]\nclaude_projects_dir = \"\"\n{extra_config}"
            ))
            .build();
        Self { t }
    }

    fn root(&self) -> &Path {
        self.t.root()
    }

    fn tree(&self) -> Tree {
        Tree::new(self.t.state_dir())
    }

    fn cmd(&self) -> Command {
        self.t.command(BIN)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run credit-monitor")
    }

    fn handoffs(&self) -> Vec<PathBuf> {
        let tree = self.tree();
        validate::files_under(&tree.handoff_dir())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !p.starts_with(tree.processed_handoff_dir()))
            .collect()
    }

    fn signals(&self, to: &str) -> Vec<PathBuf> {
        validate::files_under(&self.tree().wake_dir(&PcId::new(to).expect("valid")))
            .unwrap_or_default()
    }
}

use trinity_testkit::describe as text;

#[cfg(unix)]
use trinity_testkit::wait_for;

#[test]
fn seed_test_2_three_recorded_rate_limits_produce_handoff_signal_and_heartbeat() {
    let env = Env::new("");
    for n in 1..=3 {
        let o = env.run(&["--record-rate-limit"]);
        assert!(o.status.success(), "{}", text(&o));
        if n < 3 {
            assert!(env.handoffs().is_empty(), "no handoff before the third");
        }
    }
    let handoffs = env.handoffs();
    assert_eq!(handoffs.len(), 1);
    let h = fsio::load::<Handoff>(&handoffs[0]).expect("valid").value;
    assert_eq!((h.from_pc.as_str(), h.to_pc.as_str()), ("PC1", "PC2"));
    assert_eq!(env.signals("PC2").len(), 1);
    let hb = fsio::load::<Heartbeat>(&env.tree().heartbeat_file(&PcId::new("PC1").expect("valid")))
        .expect("heartbeat")
        .value;
    assert_eq!(hb.status, HeartbeatStatus::HandoffInitiated);
    assert_eq!(hb.to_pc.as_ref().map(PcId::as_str), Some("PC2"));
    // The log says so.
    let log = std::fs::read_to_string(env.tree().logs_dir().join("credit-monitor.log"))
        .expect("log file");
    assert!(
        log.contains("handoff: PC1 → PC2 (credit exhaustion)"),
        "{log}"
    );
}

#[test]
fn force_handoff_hands_off_at_once_and_only_once() {
    let env = Env::new("");
    let o = env.run(&["--force-handoff"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("handoff: PC1 → PC2 (manual)"));
    assert_eq!(env.handoffs().len(), 1);
    let again = env.run(&["--force-handoff"]);
    assert!(!again.status.success(), "paused: {}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("paused"));
    assert_eq!(env.handoffs().len(), 1);
}

#[test]
fn twenty_concurrent_recorders_trigger_exactly_one_handoff() {
    let env = Env::new("");
    let children: Vec<_> = (0..20)
        .map(|_| {
            env.cmd()
                .arg("--record-rate-limit")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for child in children {
        let o = child.wait_with_output().expect("wait");
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(env.handoffs().len(), 1);
    assert_eq!(env.signals("PC2").len(), 1);
    let events = std::fs::read_to_string(env.tree().credit_events_file()).expect("events");
    assert_eq!(events.lines().count(), 20, "every event recorded whole");
}

#[test]
fn a_usage_limit_in_another_time_zone_is_stored_in_utc() {
    let env = Env::new("");
    let o = env.run(&[
        "--record-usage-limit",
        "--reset-at",
        "2099-11-21T18:00:00+09:00",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let credit =
        fsio::load::<CreditStatus>(&env.tree().credit_file(&PcId::new("PC1").expect("valid")))
            .expect("credit")
            .value;
    assert_eq!(credit.level, CreditLevel::Exhausted);
    assert_eq!(credit.rule.as_deref(), Some("usage_limit"));
    assert_eq!(
        credit.exhausted_until.map(|t| t.to_rfc3339()),
        Some("2099-11-21T09:00:00+00:00".to_owned())
    );
    let h = fsio::load::<Handoff>(&env.handoffs()[0])
        .expect("valid")
        .value;
    assert_eq!(h.reason.describe(), "usage limit");
}

#[test]
fn status_shows_every_rule_and_json_parses() {
    let env = Env::new("");
    env.run(&["--record-rate-limit"]);
    env.run(&["--record-slow", "12"]);
    let o = env.run(&["--status"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    for rule in trinity_core::credit::rule::ALL {
        assert!(out.contains(rule), "{rule} missing from:\n{out}");
    }
    assert!(out.contains("PC1: WARNING"), "{out}");
    assert!(out.contains("next PC: PC2"), "{out}");
    let o = env.run(&["--status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["level"], "WARNING");
    assert_eq!(v["rules"].as_array().map(Vec::len), Some(7));
}

/// `--once` evaluates the rules and acts on them, as the daemon's tick does: two rate limits
/// recorded by hand (the third arrives by the events file, as from a transcript) hand off.
#[test]
fn once_evaluates_and_acts_like_the_daemons_tick() {
    let env = Env::new("");
    let o = env.run(&["--once"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("PC1: HEALTHY"),
        "{}",
        text(&o)
    );
    env.run(&["--record-rate-limit"]);
    env.run(&["--record-rate-limit"]);
    let tree = env.tree();
    let line = trinity_core::credit::CreditEvent::new(
        chrono::Utc::now(),
        trinity_core::credit::EventKind::RateLimit,
    )
    .to_line();
    trinity_core::daemon::append_line_locked(&tree.credit_events_file(), &line).expect("event");
    assert!(env.handoffs().is_empty());
    let o = env.run(&["--once"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("handoff: PC1 → PC2"), "{out}");
    assert!(out.contains("PC1: EXHAUSTED"), "{out}");
    assert_eq!(env.handoffs().len(), 1);
    // --once and an action are one or the other.
    let o = env.run(&["--once", "--reset"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot be used with"),
        "{}",
        text(&o)
    );
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let env = Env::new("");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--record-utilization", "1.5"],
            "utilization must be between 0 and 1",
        ),
        (&["--record-usage-limit"], "--reset-at"),
        (
            &["--record-rate-limit", "--record-success"],
            "cannot be used with",
        ),
        (&["--record-slow=-3"], "above 0"),
        (
            &["--record-rate-limit", "--reset-at", "tomorrow"],
            "is not a time",
        ),
        (&["--interval", "soon"], "is not a duration"),
    ];
    for (args, want) in cases {
        let o = env.run(args);
        assert!(!o.status.success(), "{args:?} accepted: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: wanted {want:?} in {err}");
    }
    assert!(
        !env.tree().credit_events_file().exists(),
        "nothing recorded"
    );

    // No pc in the config, and a missing tree.
    let no_pc = Env::new("");
    std::fs::write(
        no_pc.root().join("trinity.toml"),
        "state_dir = \".trinity\"\n",
    )
    .expect("config");
    let o = no_pc.run(&["--record-success"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("`pc` is not set"),
        "{}",
        text(&o)
    );
    let no_tree = Env::new("");
    std::fs::remove_dir_all(no_tree.tree().root()).expect("remove");
    let o = no_tree.run(&["--record-success"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("run `trinity init` first"),
        "{}",
        text(&o)
    );
}

#[test]
fn every_command_has_help() {
    let env = Env::new("");
    for args in [&["--help"][..], &["replay", "--help"]] {
        let o = env.run(args);
        assert!(o.status.success(), "{}", text(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("Usage"));
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/credit")
        .join(name)
}

#[test]
fn replay_finds_no_handoff_in_a_healthy_day_and_the_right_ones_in_an_exhaustion() {
    let env = Env::new("");
    let healthy = fixture("trace-healthy.jsonl");
    let o = env.run(&["replay", healthy.to_str().expect("utf-8"), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(
        lines.iter().all(|l| l.get("handoff").is_none()),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| l["level"] != "EXHAUSTED"), "{lines:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("replayed 9"),
        "{}",
        text(&o)
    );

    let o = env.run(&[
        "replay",
        fixture("trace-exhaustion.jsonl").to_str().expect("utf-8"),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let handoffs: Vec<&serde_json::Value> = lines.iter().filter(|l| l["handoff"] == true).collect();
    assert_eq!(handoffs.len(), 2, "{lines:?}");
    // The first is predictive: utilization rising fast, before the rate limits start.
    let first_exhausted = lines
        .iter()
        .find(|l| l["level"] == "EXHAUSTED")
        .expect("an exhaustion");
    assert_eq!(first_exhausted["rule"], "predictive", "{lines:?}");
    // The second is the slow run after the reset.
    let last_exhausted = lines
        .iter()
        .rev()
        .find(|l| l["level"] == "EXHAUSTED")
        .expect("an exhaustion");
    assert_eq!(last_exhausted["rule"], "slow_responses");

    // A broken trace names the line.
    let bad = env.root().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"ts\":\"2026-11-21T10:00:00Z\",\"kind\":\"success\"}\nnot json\n",
    )
    .expect("write");
    let o = env.run(&["replay", bad.to_str().expect("utf-8")]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bad.jsonl:2"),
        "{}",
        text(&o)
    );
}

#[cfg(unix)]
#[test]
fn the_daemon_reads_transcripts_hands_off_and_stops_cleanly() {
    let env = Env::new("");
    let projects = env.root().join("projects");
    std::fs::create_dir_all(projects.join("p")).expect("mkdir");
    let config = env.root().join("trinity.toml");
    let mut text_cfg = std::fs::read_to_string(&config).expect("config");
    text_cfg = text_cfg.replace(
        "claude_projects_dir = \"\"",
        &format!(
            "claude_projects_dir = {:?}\ntranscript_poll_interval = \"50ms\"",
            projects.display().to_string()
        ),
    );
    std::fs::write(&config, text_cfg).expect("config");
    let mut child = trinity_testkit::spawn(
        env.cmd()
            .args(["--interval", "200ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let pc1 = PcId::new("PC1").expect("valid");
    let tree = env.tree();
    // The daemon announces itself in the heartbeat.
    wait_for("the daemon's heartbeat", || {
        fsio::load::<Heartbeat>(&tree.heartbeat_file(&pc1)).is_ok_and(|h| {
            h.value
                .daemons
                .keys()
                .any(|d| d.as_str() == "credit-monitor")
        })
    });
    // A second daemon on the same tree is refused.
    let second = env.run(&[]);
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr)
            .contains("another credit-monitor is already running"),
        "{}",
        text(&second)
    );
    // Claude Code writes rate-limit errors into a new transcript.
    let line = r#"{"type":"assistant","isApiErrorMessage":true,"error":"rate_limit","message":{"content":[{"type":"text","text":"API Error: 429 rate_limit_error"}]},"timestamp":"TS"}"#;
    let mut body = String::new();
    for _ in 0..3 {
        body.push_str(&line.replace("TS", &chrono::Utc::now().to_rfc3339()));
        body.push('\n');
    }
    std::fs::write(projects.join("p").join("session.jsonl"), body).expect("transcript");
    let status = || {
        fsio::load::<CreditStatus>(&tree.credit_file(&pc1))
            .map(|d| d.value.rate_limit_count)
            .unwrap_or(0)
    };
    // The handoff's files are written one after the other: wait for the last.
    wait_for("the handoff", || {
        env.handoffs().len() == 1 && env.signals("PC2").len() == 1 && status() == 3
    });

    // An event written by another program is seen through the file watcher.
    let more = format!(
        "{{\"ts\":\"{}\",\"kind\":\"rate_limit\"}}\n",
        chrono::Utc::now().to_rfc3339()
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(tree.credit_events_file())
        .expect("open events");
    std::io::Write::write_all(&mut f, more.as_bytes()).expect("append");
    drop(f);
    wait_for("the new event to be evaluated", || status() == 4);
    assert_eq!(env.handoffs().len(), 1, "still one handoff");

    // SIGTERM stops it cleanly.
    let status = trinity_testkit::stop(&mut child);
    assert!(status.success(), "exit status {status:?}");
    let log = std::fs::read_to_string(tree.logs_dir().join("credit-monitor.log")).expect("log");
    assert!(log.contains("credit monitor stopped"), "{log}");
}

fn claude_fixture(case: &str, file: &str) -> PathBuf {
    claude_version_fixture("2.1.332", case, file)
}

fn claude_version_fixture(version: &str, case: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/claude-code")
        .join(version)
        .join(case)
        .join(file)
}

/// Claude Code 2.1.197 writes only the last of a request's three refusals to its transcript;
/// the daemon also reads what the agent printed (`logs/agent.log`, written by the wake-daemon)
/// and counts the three — once each, though both sources report the last. The StopFailure
/// hook's poke makes it read them at once (the poll interval here is an hour).
#[cfg(unix)]
#[test]
fn the_daemon_counts_an_older_claude_s_refusals_from_its_output_when_poked() {
    let env = Env::new("");
    let projects = env.root().join("projects");
    std::fs::create_dir_all(projects.join("p")).expect("mkdir");
    let config = env.root().join("trinity.toml");
    let text_cfg = std::fs::read_to_string(&config).expect("config").replace(
        "claude_projects_dir = \"\"",
        &format!(
            "claude_projects_dir = {:?}\ntranscript_poll_interval = \"1h\"",
            projects.display().to_string()
        ),
    );
    std::fs::write(&config, text_cfg).expect("config");
    let tree = env.tree();
    std::fs::create_dir_all(tree.logs_dir()).expect("logs");
    let mut child = trinity_testkit::spawn(
        env.cmd()
            .args(["--interval", "1h"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let pc1 = PcId::new("PC1").expect("valid");
    // Started: its first (and, with an hour's interval, only) pass has read both sources'
    // ends, so what is written from now on is news.
    wait_for("the daemon's first reading of its sources", || {
        std::fs::read(tree.transcript_state_file()).is_ok()
    });
    // The run, as 2.1.197 wrote it: its transcript and its stream-json output.
    replay::copy_transcript_as_of(
        &claude_version_fixture("2.1.197", "429", "transcript.jsonl"),
        &projects.join("p").join("session.jsonl"),
        chrono::Utc::now(),
    );
    std::fs::copy(
        claude_version_fixture("2.1.197", "429", "stream.jsonl"),
        tree.agent_log_file(),
    )
    .expect("agent.log");
    // Claude Code's StopFailure hook (what it was given, recorded) pokes the monitor.
    let hook = std::fs::read_to_string(claude_version_fixture(
        "2.1.197",
        "429",
        "stop-failure.json",
    ))
    .expect("hook input");
    let trinity = Path::new(BIN).with_file_name("trinity");
    if trinity.is_file() {
        let mut poke = env.t.command(&trinity);
        poke.args(["agent", "stop-failure"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut p = poke.spawn().expect("trinity agent stop-failure");
        std::io::Write::write_all(&mut p.stdin.take().expect("stdin"), hook.as_bytes())
            .expect("hook input");
        let o = p.wait_with_output().expect("wait");
        assert!(o.status.success(), "{}", text(&o));
    } else {
        // Built alone: the hook's file, as `trinity agent stop-failure` writes it.
        fsio::write_atomic(&tree.credit_poke_file(), b"{\"error\":\"rate_limit\"}\n")
            .expect("poke");
    }
    let count = || {
        fsio::load::<CreditStatus>(&tree.credit_file(&pc1))
            .map(|d| d.value.rate_limit_count)
            .unwrap_or(0)
    };
    wait_for("three rate limits and the handoff", || {
        count() == 3 && env.handoffs().len() == 1 && env.signals("PC2").len() == 1
    });
    let status = trinity_testkit::stop(&mut child);
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(count(), 3, "each refusal once");
    let log = std::fs::read_to_string(tree.logs_dir().join("credit-monitor.log")).expect("log");
    assert!(log.contains("Claude Code reported a failed turn"), "{log}");
}

#[test]
fn a_recorded_claude_result_read_from_stdin_hands_off_after_three_refused_attempts() {
    let env = Env::new("");
    let input = std::fs::File::open(claude_fixture("429", "stream.jsonl")).expect("fixture");
    let o = env
        .cmd()
        .arg("--record-from-claude-result")
        .stdin(input)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("handoff: PC1 → PC2"),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("3 × rate_limit"),
        "{}",
        text(&o)
    );
    let handoffs = env.handoffs();
    assert_eq!(handoffs.len(), 1);
    // An idle PC's handoff still carries the key, as the seed's readers expect.
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&handoffs[0]).expect("handoff")).expect("json");
    assert!(
        v.as_object()
            .is_some_and(|o| o.contains_key("current_work"))
            && v["current_work"].is_null(),
        "{v}"
    );
}

#[cfg(unix)]
#[test]
fn wrap_passes_the_output_through_records_as_it_goes_and_keeps_the_exit_code() {
    let env = Env::new("");
    let stream = claude_fixture("429", "stream.jsonl");
    // A stand-in for `claude -p … --output-format stream-json`: prints the recorded run and
    // fails as the CLI did.
    let o = env.run(&[
        "wrap",
        "--",
        "sh",
        "-c",
        "cat \"$0\"; exit 1",
        stream.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        o.stdout,
        std::fs::read(&stream).expect("fixture"),
        "the output passes through untouched"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("credit-monitor: handoff: PC1 → PC2"), "{err}");
    assert_eq!(env.handoffs().len(), 1);
    // A successful run records one success and hands nothing off.
    let env = Env::new("");
    let o = env.run(&[
        "wrap",
        "--",
        "cat",
        claude_fixture("success", "stream.jsonl")
            .to_str()
            .expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1 × success"),
        "{}",
        text(&o)
    );
    assert!(env.handoffs().is_empty());
}

#[test]
fn utilization_reported_with_a_success_counts() {
    let env = Env::new("");
    let o = env.run(&["--record-success", "--utilization", "0.97"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("handoff: PC1 → PC2"),
        "{}",
        text(&o)
    );
}
