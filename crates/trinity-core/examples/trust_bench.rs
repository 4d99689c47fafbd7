//! What signatures and encryption cost on a handoff's path: writing a signed handoff and a
//! signed wake signal (the key read from disk each time, as the writers do), working out the
//! keyring (as every reader does, per pass) with 3 and 100 PCs' keys, checking a handoff, and
//! sealing and opening a conversation.
//!
//! `cargo run --release -p trinity-core --example trust_bench [ROUNDS]`

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use trinity_core::schema::{
    CurrentWork, Handoff, HandoffReason, KeyRecord, Priority, Schema, TaskRef, WakeSignal,
};
use trinity_core::trust::{Keyring, Pin, PinSource, Pins, SigningKey};
use trinity_core::{PcId, SignalId, TaskId, Tree, fsio, seal};

fn pc(s: &str) -> PcId {
    PcId::new(s).expect("pc")
}

fn stats(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{name:<52} median {:>9.3} ms   p95 {:>9.3} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.95).as_secs_f64() * 1e3
    );
}

/// A tree for PC2 with its key, PC1 pinned, and `n` PCs' keys approved by PC1.
fn tree(n: usize) -> (tempfile::TempDir, Tree, SigningKey) {
    let dir = tempfile::tempdir().expect("dir");
    let tree = Tree::new(dir.path());
    let pc1 = SigningKey::from_seed(pc("PC1"), [1; 32]);
    let pc2 = SigningKey::from_seed(pc("PC2"), [2; 32]);
    pc2.save(&tree).expect("key");
    let pin = |k: &SigningKey, source| Pin {
        pc: k.pc().clone(),
        key: k.public(),
        source,
        pinned_at: Utc::now(),
    };
    Pins {
        keys: vec![pin(&pc1, PinSource::Given), pin(&pc2, PinSource::Own)],
    }
    .save(&tree)
    .expect("pins");
    for i in 2..=n {
        let k = SigningKey::from_seed(pc(&format!("PC{i}")), [i as u8; 32]);
        let mut v = serde_json::to_value(KeyRecord {
            format_version: 1,
            pc: k.pc().clone(),
            public_key: k.public(),
            approved_at: Utc::now(),
            approved_by: pc("PC1"),
        })
        .expect("json");
        pc1.sign(KeyRecord::NAME, k.pc().as_str(), &mut v);
        let path = tree.key_file(k.pc());
        std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
        std::fs::write(&path, serde_json::to_vec_pretty(&v).expect("json")).expect("write");
    }
    (dir, tree, pc1)
}

fn handoff(i: usize) -> Handoff {
    Handoff {
        format_version: 1,
        from_pc: pc("PC1"),
        to_pc: pc("PC2"),
        timestamp: Utc::now() + chrono::Duration::seconds(i as i64),
        reason: HandoffReason::CreditExhaustion,
        task_queue: (0..10)
            .map(|t| TaskRef {
                id: TaskId::new(format!("task-{t}")).expect("id"),
                priority: Priority::High,
                description: "write the chapter about the parser and its tests".into(),
            })
            .collect(),
        current_work: Some(CurrentWork::new(TaskId::new("task-0").expect("id"))),
        credit_state: None,
        epoch: None,
        authored_by: None,
        leader_epoch: None,
    }
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    println!("{rounds} rounds each");

    // Writing: the same files with and without a key in the tree (fsync included).
    for signed in [false, true] {
        let (_d, tree, _) = tree(3);
        if !signed {
            std::fs::remove_file(tree.signing_key_file()).expect("unsigned tree");
        }
        let mut times = Vec::new();
        for i in 0..rounds {
            let h = handoff(i);
            let id = h.id().expect("id");
            let signal = WakeSignal {
                format_version: 1,
                id: SignalId::new(format!("s{i}")).expect("id"),
                from_pc: pc("PC1"),
                to_pc: pc("PC2"),
                timestamp: h.timestamp,
                task: "credit_handoff".into(),
                message: "over to you".into(),
                handoff: Some(id.clone()),
                expires_at: None,
                epoch: None,
                leader_epoch: None,
            };
            let t = Instant::now();
            fsio::create(&tree.handoff_file(&id), &h).expect("handoff");
            fsio::create(&tree.wake_file(&pc("PC2"), &signal.id), &signal).expect("signal");
            times.push(t.elapsed());
        }
        let what = if signed { "signed" } else { "unsigned" };
        stats(
            &format!("write handoff + wake signal ({what}, fsync'd)"),
            times,
        );
    }

    for n in [3, 100] {
        let (_d, tree, pc1) = tree(n);
        let mut times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let ring = Keyring::open(&tree, true, Utc::now()).expect("ring");
            times.push(t.elapsed());
            assert!(ring.trusted_key_of(&pc(&format!("PC{n}"))).is_some());
        }
        stats(&format!("work out the keyring ({n} PCs' keys)"), times);

        let ring = Keyring::open(&tree, true, Utc::now()).expect("ring");
        let h = handoff(0);
        let id = h.id().expect("id");
        let mut v: Value = serde_json::to_value(&h).expect("json");
        pc1.sign(Handoff::NAME, id.as_str(), &mut v);
        let path = tree.handoff_file(&id);
        std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
        std::fs::write(&path, serde_json::to_vec_pretty(&v).expect("json")).expect("write");
        let mut times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let (_, by) = fsio::load_trusted::<Handoff>(&path, &ring).expect("believed");
            times.push(t.elapsed());
            assert_eq!(by, Some(pc("PC1")));
        }
        stats(&format!("read + check a signed handoff ({n} PCs)"), times);
    }

    let (_d, tree, _) = tree(3);
    let recipient = seal::identity(&tree).expect("identity").to_public();
    let line = "{\"type\":\"assistant\",\"message\":{\"content\":\"a line of the agent's conversation, of the usual length\"}}\n";
    let conversation = line.repeat((1 << 20) / line.len());
    let mut enc = Vec::new();
    let mut dec = Vec::new();
    for _ in 0..rounds.min(50) {
        let t = Instant::now();
        let sealed = seal::encrypt(&recipient, conversation.as_bytes()).expect("seal");
        enc.push(t.elapsed());
        let t = Instant::now();
        let plain = seal::decrypt(&tree, &sealed).expect("open");
        dec.push(t.elapsed());
        assert_eq!(plain.len(), conversation.len());
    }
    stats("encrypt a 1 MiB conversation", enc);
    stats("decrypt it (identity read from disk)", dec);
}
