//! The acceptance steps in-process, on a `ManualClock`: each pass of the `Receiver` and what
//! its journal says after it, with no daemon process (only the agent is a real process).
#![cfg(unix)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use trinity_core::config::{Config, SyncMode};
use trinity_core::credit::{CreditEvent, EventKind};
use trinity_core::schema::{
    CurrentWork, Handoff, HandoffReason, Heartbeat, HeartbeatStatus, InstanceStatus, Priority,
    TaskRef, WakeSignal, WakeTask,
};
use trinity_core::syncstate::SyncState;
use trinity_core::{HandoffId, InstanceState, ManualClock, PcId, SignalId, TaskId, Tree, fsio};
use wake_daemon::journal::{Journal, Step};
use wake_daemon::receive::Receiver;

fn pc(s: &str) -> PcId {
    PcId::new(s).expect("valid id")
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
        .expect("valid")
        .to_utc()
}

struct Setup {
    t: trinity_testkit::TestTree,
    tree: Tree,
    clock: ManualClock,
    receiver: Receiver,
}

/// PC2 of the fleet, syncing through git (so claims wait for `in_sync_at`); its agent is
/// `true`, started and gone.
fn setup() -> Setup {
    let t = trinity_testkit::TestTree::builder().pc("PC2").build();
    let tree = Tree::new(t.state_dir());
    let clock = ManualClock::new(t0());
    let mut config = Config::default();
    config.sync.mode = SyncMode::Git;
    config.agent.command = vec!["true".to_owned()];
    config.agent.new_console = false;
    let receiver = Receiver::new(
        tree.clone(),
        pc("PC2"),
        config,
        None,
        Arc::new(clock.clone()),
    );
    Setup {
        t,
        tree,
        clock,
        receiver,
    }
}

fn handoff_to_pc2(tree: &Tree, at: DateTime<Utc>) -> HandoffId {
    let task = |id: &str| TaskRef {
        id: TaskId::new(id).expect("valid"),
        priority: Priority::High,
        description: format!("do {id}"),
    };
    let h = Handoff {
        format_version: 1,
        from_pc: pc("PC1"),
        to_pc: pc("PC2"),
        timestamp: at,
        reason: HandoffReason::CreditExhaustion,
        task_queue: vec![task("task-a"), task("task-b")],
        current_work: Some(CurrentWork::new(TaskId::new("task-a").expect("valid"))),
        credit_state: None,
        epoch: None,
        authored_by: None,
        leader_epoch: None,
    };
    let id = h.id().expect("id");
    fsio::create(&tree.handoff_file(&id), &h).expect("handoff");
    let signal = WakeSignal {
        format_version: 1,
        id: SignalId::new("sig-1").expect("valid"),
        from_pc: pc("PC1"),
        to_pc: pc("PC2"),
        timestamp: at,
        task: WakeTask::CreditHandoff.as_str().to_owned(),
        message: "over to you".to_owned(),
        handoff: Some(id.clone()),
        expires_at: None,
        epoch: None,
        leader_epoch: None,
    };
    fsio::create(&tree.wake_file(&pc("PC2"), &signal.id), &signal).expect("signal");
    id
}

fn in_sync_at(tree: &Tree, at: DateTime<Utc>) {
    SyncState {
        in_sync_at: Some(at),
        ..SyncState::default()
    }
    .save(tree)
    .expect("sync state");
}

#[test]
fn each_step_is_journaled_and_claims_wait_for_the_remote_by_the_injected_clock() {
    let s = setup();
    let journal = Journal::new(s.tree.clone());
    let id = handoff_to_pc2(&s.tree, t0());

    // First pass: archived, claims written at t0, and nothing is known to be on the remote.
    let report = s.receiver.process().expect("pass");
    assert_eq!(report.waiting, vec![id.clone()]);
    assert!(report.launched.is_empty());
    let record = journal.handoff(&id).expect("read").expect("record");
    assert_eq!(record.step, Step::ClaimsWritten { at: t0() });
    assert!(s.tree.processed_handoff_file(&id).is_file());
    assert!(!s.tree.handoff_file(&id).exists());

    // git-sync says "in sync" as of the claims' own moment: not after them, still waiting.
    in_sync_at(&s.tree, t0());
    s.clock.advance(Duration::from_secs(1));
    let report = s.receiver.process().expect("pass");
    assert_eq!(report.waiting, vec![id.clone()]);

    // In sync after the claims were written: both tasks are ours; the rest runs to the end.
    in_sync_at(&s.tree, t0() + chrono::Duration::milliseconds(500));
    s.clock.advance(Duration::from_secs(1));
    let report = s.receiver.process().expect("pass");
    assert!(report.waiting.is_empty(), "{report:?}");
    assert_eq!(report.launched.len(), 1);
    let record = journal.handoff(&id).expect("read").expect("record");
    assert_eq!(record.step, Step::Done);
    assert_eq!(record.won.len(), 2);
    assert!(record.lost.is_empty());
    let instance = fsio::load::<InstanceStatus>(&s.tree.instance_file(&pc("PC2")))
        .expect("instance")
        .value;
    assert_eq!(instance.state, InstanceState::Active);
    assert_eq!(instance.since, t0() + chrono::Duration::seconds(2));
    let hb = fsio::load::<Heartbeat>(&s.tree.heartbeat_file(&pc("PC2")))
        .expect("heartbeat")
        .value;
    assert_eq!(hb.status, HeartbeatStatus::HandoffAccepted);
    assert_eq!(hb.tasks_received, Some(2));
    // The credit monitor is asked to start afresh, stamped by the injected clock.
    let events = std::fs::read_to_string(s.tree.credit_events_file()).expect("events");
    let reset = CreditEvent::parse_line(events.lines().last().expect("a line")).expect("event");
    assert_eq!(
        (reset.kind, reset.ts),
        (EventKind::Reset, t0() + chrono::Duration::seconds(2))
    );
    let agent = journal.agent().expect("read").expect("agent record");
    assert_eq!(agent.handoff, id);
    assert_eq!(agent.started_at, t0() + chrono::Duration::seconds(2));

    // Nothing is done twice.
    s.clock.advance(Duration::from_secs(1));
    let report = s.receiver.process().expect("pass");
    assert!(report.launched.is_empty() && report.waiting.is_empty());
    assert!(s.t.root().is_dir());
}

/// From the moment a handoff leaves `handoff/`, the PC's claims say it is busy: they are
/// written before the archive. (Before, a coordinator reading between the archive and the
/// claims saw the PC with no pending handoff and no claim — idle — and could give it more
/// work.) Shown by an archive that fails: the claims are there already, the handoff still
/// waits (it was once removed here without its copy: the failure to create `processed/` was
/// taken for "archived already"), and the next pass finishes.
#[test]
fn the_claims_are_written_before_the_handoff_is_archived() {
    let s = setup();
    let journal = Journal::new(s.tree.clone());
    let id = handoff_to_pc2(&s.tree, t0());
    let processed = s.tree.processed_handoff_dir();
    std::fs::create_dir_all(processed.parent().expect("parent")).expect("handoff dir");
    std::fs::write(&processed, "in the way").expect("a file where the archive goes");

    let first = s.receiver.process();
    assert!(first.is_err(), "the archive cannot be written: {first:?}");
    for task in ["task-a", "task-b"] {
        let claim = fsio::load::<trinity_core::schema::Claim>(
            &s.tree.claim_file(&TaskId::new(task).expect("valid")),
        )
        .expect("claimed before the archive")
        .value;
        assert_eq!(claim.pc, pc("PC2"));
    }
    assert!(s.tree.handoff_file(&id).is_file(), "not archived yet");
    let record = journal.handoff(&id).expect("read").expect("record");
    assert_eq!(record.step, Step::Received);

    std::fs::remove_file(&processed).expect("out of the way");
    s.clock.advance(Duration::from_secs(1));
    s.receiver.process().expect("pass");
    assert!(s.tree.processed_handoff_file(&id).is_file());
    assert!(!s.tree.handoff_file(&id).exists());
    let record = journal.handoff(&id).expect("read").expect("record");
    assert_eq!(
        record.step,
        Step::ClaimsWritten {
            at: t0() + chrono::Duration::seconds(1)
        }
    );
}

#[test]
fn a_pass_acts_by_the_injected_clock() {
    use wake_daemon::daemon::pass;
    let s = setup();
    let mut alerts = trinity_runtime::OperatorAlerts::default();
    s.clock.advance(Duration::from_secs(30));
    // A signal file: a pass over the signals (here a handoff whose claims wait for the remote).
    let id = handoff_to_pc2(&s.tree, t0());
    pass(&s.receiver, &mut alerts);
    let journal = Journal::new(s.tree.clone());
    let record = journal.handoff(&id).expect("read").expect("record");
    assert_eq!(
        record.step,
        Step::ClaimsWritten {
            at: t0() + chrono::Duration::seconds(30)
        }
    );
}
