//! A whole rotation through git: PC1 → PC2 → PC3 → PC1, every hop started by recorded rate
//! limits, carried by git-sync, accepted by the wake-daemon, which starts a test agent.
#![cfg(unix)]

use trinity_core::fsio;
use trinity_core::schema::{CreditStatus, HeartbeatStatus, Task};
use trinity_core::{PcId, TaskId};
use trinity_e2e::World;

#[test]
fn a_whole_rotation_through_git() {
    let mut world = World::new(
        &["PC1", "PC2", "PC3"],
        "[credit]\nclaude_projects_dir = \"\"\npause = \"1s\"\nrate_limit_window = \"3s\"\n",
    );
    let pcs = ["PC1", "PC2", "PC3"];
    // One task in the queue, created on PC1.
    let task = r#"{"format_version":1,"id":"task-a","priority":"high","description":"do a","created_at":"2026-11-21T10:00:00Z","created_by":"PC1"}"#;
    // Written through fsio, so PC1 signs it like every task it queues.
    let task = trinity_core::schema::from_bytes::<Task>(task.as_bytes()).expect("task");
    fsio::create(&world.tree("PC1").task_file(&task.id), &task).expect("task");

    for pc in pcs {
        world.start("git-sync", pc);
        world.start("wake-daemon", pc);
    }
    // Every PC sees every other PC's daemons (and the task).
    world.wait("the fleet's heartbeats everywhere", || {
        pcs.iter().all(|seer| {
            pcs.iter().all(|of| world.heartbeat(seer, of).is_some())
                && world
                    .tree(seer)
                    .task_file(&TaskId::new("task-a").expect("valid"))
                    .is_file()
        })
    });

    // PC1 runs out: PC2 takes over and claims the task.
    world.record_rate_limits("PC1");
    world.wait("PC2's agent", || world.launches_on("PC2") == 1);
    world.wait("PC2's claim everywhere", || {
        pcs.iter()
            .all(|pc| world.claim_holder(pc, "task-a").as_deref() == Some("PC2"))
    });
    world.wait("PC1 to see PC2's handoff_accepted heartbeat", || {
        world
            .heartbeat("PC1", "PC2")
            .is_some_and(|h| h.status == HeartbeatStatus::HandoffAccepted)
    });

    // PC2 runs out: PC3 is next.
    world.record_rate_limits("PC2");
    world.wait("PC3's agent", || world.launches_on("PC3") == 1);
    world.wait("PC3's claim everywhere", || {
        pcs.iter()
            .all(|pc| world.claim_holder(pc, "task-a").as_deref() == Some("PC3"))
    });

    // PC3 runs out: PC1's rate limits have left their window (3 s here) and its pause (1 s)
    // is over, so the work comes back to PC1.
    world.wait("PC1's exhaustion to end, as PC3 sees it", || {
        fsio::load::<CreditStatus>(
            &world
                .tree("PC3")
                .credit_file(&PcId::new("PC1").expect("valid")),
        )
        .ok()
        .and_then(|c| c.value.exhausted_until)
        .is_some_and(|u| u < chrono::Utc::now())
    });
    world.record_rate_limits("PC3");
    world.wait("PC1's agent", || world.launches_on("PC1") == 1);
    world.wait("PC1's claim everywhere", || {
        pcs.iter()
            .all(|pc| world.claim_holder(pc, "task-a").as_deref() == Some("PC1"))
    });

    // One agent per hop, nothing twice.
    assert_eq!(
        pcs.map(|pc| world.launches_on(pc)),
        [1, 1, 1],
        "one launch per handoff"
    );
    let pc1 = world
        .launches()
        .into_iter()
        .find(|l| l.pc == "PC1")
        .expect("PC1's launch");
    assert_eq!(pc1.var("TRINITY_FROM_PC"), Some("PC3"), "{}", pc1.env);
    assert_eq!(pc1.var("TRINITY_TASK_ID"), Some("task-a"), "{}", pc1.env);
    world.stop_all();
}
