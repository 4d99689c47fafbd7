//! The fleet over a real network remote: the state repository behind a loopback sshd or HTTPS
//! server, reached through the test bed's fault proxy with a WAN's latency (25 ms each way, a
//! 50 ms round trip). A whole rotation over ssh, a handoff over HTTPS with a credential helper,
//! and partitions — a black hole and a refusing server — that lose nothing.
//!
//! Skipped (with a note) where sshd is not installed, unless `TRINITY_NETBED_REQUIRED` is set
//! (CI installs it and sets it).
#![cfg(unix)]

use std::time::{Duration, Instant};

use trinity_core::schema::HeartbeatStatus;
use trinity_e2e::{Cut, Transport, World};

/// A round trip of 50 ms.
const LATENCY: Duration = Duration::from_millis(25);

/// Every PC sees every PC's heartbeat.
fn wait_for_heartbeats(world: &World) {
    let pcs = world.pcs();
    world.wait("the fleet's heartbeats everywhere", || {
        pcs.iter()
            .all(|seer| pcs.iter().all(|of| world.heartbeat(seer, of).is_some()))
    });
}

/// Waits until every PC's tree equals every other's.
fn wait_for_equal_trees(world: &World) {
    let pcs = world.pcs();
    world.wait("the trees to converge", || {
        let first = world.files(&pcs[0]);
        pcs[1..].iter().all(|pc| world.files(pc) == first)
    });
}

fn assert_nothing_quarantined(world: &World) {
    for pc in world.pcs() {
        let held: Vec<_> = std::fs::read_dir(world.tree(&pc).quarantine_dir())
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(held.is_empty(), "{pc} quarantined {held:?}");
    }
}

#[test]
fn a_rotation_over_ssh_shares_one_connection_per_pc() {
    let pcs = ["PC1", "PC2", "PC3"];
    let Some(mut world) = World::over(
        Transport::Ssh,
        &pcs,
        "[credit]\nclaude_projects_dir = \"\"\npause = \"1s\"\n",
    ) else {
        return;
    };
    let net = world.net().expect("network");
    net.proxy().set_latency(LATENCY, LATENCY);
    world.start_all();
    wait_for_heartbeats(&world);

    // Around the ring: each hop started by a forced handoff, carried over ssh.
    let mut holder = "PC1".to_owned();
    for (i, next) in ["PC2", "PC3", "PC1"].iter().enumerate() {
        let handoff = world.force_handoff(&holder);
        let id = handoff
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .expect("handoff id");
        world.wait(&format!("{next}'s agent (hop {i})"), || {
            world
                .launches()
                .iter()
                .any(|l| l.handoff().as_deref() == Some(id.as_str()) && l.pc == *next)
        });
        world.wait(&format!("{holder} to see {next}'s acceptance"), || {
            world.heartbeat(&holder, next).is_some_and(|h| {
                h.status == HeartbeatStatus::HandoffAccepted
                    && h.handoff.as_ref().map(|x| x.to_string()) == Some(id.clone())
            })
        });
        holder = (*next).to_owned();
    }
    assert_eq!(
        pcs.map(|pc| world.launches_on(pc)),
        [1, 1, 1],
        "one launch per handoff"
    );
    wait_for_equal_trees(&world);

    // Checks of the remote go over each PC's shared connection: the quick checks of a fleet
    // with work in flight open no new connection. (Counted by the proxy, over some twenty
    // checks per PC.)
    let net = world.net().expect("network");
    let before = net.proxy().stats().connections;
    let checks_before = state_cycles(&world);
    world.wait("ten more checks of the remote by every PC", || {
        let now = state_cycles(&world);
        now.iter().zip(&checks_before).all(|(a, b)| *a >= b + 10)
    });
    let opened = net.proxy().stats().connections - before;
    assert!(
        opened <= 1,
        "{opened} new connections for {} checks",
        state_cycles(&world).iter().sum::<u64>() - checks_before.iter().sum::<u64>()
    );
    assert_nothing_quarantined(&world);
    world.stop_all();
}

/// Each PC's git-sync cycles so far (from its state file).
fn state_cycles(world: &World) -> Vec<u64> {
    world
        .pcs()
        .iter()
        .map(|pc| {
            trinity_core::syncstate::SyncState::read(&world.tree(pc))
                .ok()
                .flatten()
                .map_or(0, |s| s.cycles)
        })
        .collect()
}

#[test]
fn a_handoff_over_https_with_a_credential_helper() {
    let pcs = ["PC1", "PC2"];
    let Some(mut world) = World::over(
        Transport::Https,
        &pcs,
        "[credit]\nclaude_projects_dir = \"\"\npause = \"1s\"\n",
    ) else {
        return;
    };
    world
        .net()
        .expect("network")
        .proxy()
        .set_latency(LATENCY, LATENCY);
    world.start_all();
    wait_for_heartbeats(&world);
    let handoff = world.force_handoff("PC1");
    let id = handoff
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .expect("handoff id");
    world.wait("PC2's agent", || {
        world
            .launches()
            .iter()
            .any(|l| l.handoff().as_deref() == Some(id.as_str()))
    });
    world.wait("PC1 to see PC2's acceptance", || {
        world
            .heartbeat("PC1", "PC2")
            .is_some_and(|h| h.status == HeartbeatStatus::HandoffAccepted)
    });
    // The checks were answered over HTTP (kept-alive POSTs): many more requests than
    // connections.
    let net = world.net().expect("network");
    let (requests, connections) = (net.http_requests(), net.proxy().stats().connections);
    assert!(
        requests > 2 * connections,
        "{requests} requests over {connections} connections"
    );
    wait_for_equal_trees(&world);
    assert_nothing_quarantined(&world);
    world.stop_all();
}

#[test]
fn partitions_lose_nothing_and_the_link_s_return_is_noticed() {
    let pcs = ["PC1", "PC2"];
    let Some(mut world) = World::over(Transport::Ssh, &pcs, "") else {
        return;
    };
    world
        .net()
        .expect("network")
        .proxy()
        .set_latency(LATENCY, LATENCY);
    for pc in pcs {
        world.start("git-sync", pc);
    }
    world.wait("both trees cloned and in sync", || {
        pcs.iter().all(|pc| {
            trinity_core::syncstate::SyncState::read(&world.tree(pc))
                .ok()
                .flatten()
                .is_some_and(|s| s.in_sync_at.is_some())
        })
    });
    for (round, how) in [Cut::Blackhole, Cut::Refuse].into_iter().enumerate() {
        world.net().expect("network").proxy().cut(how);
        // PC1 goes on working meanwhile: five tasks.
        let tasks: Vec<String> = (0..5).map(|i| format!("t{round}-{i}")).collect();
        for t in &tasks {
            let o = world.output("trinity", "PC1", &["task", "add", t, "--description", "x"]);
            assert!(o.status.success(), "{}", trinity_testkit::describe(&o));
        }
        // Both PCs notice the outage: their sync fails (and backs off).
        world.wait(&format!("the {how:?} to be noticed on both PCs"), || {
            pcs.iter().all(|pc| {
                trinity_core::syncstate::SyncState::read(&world.tree(pc))
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.last_error.is_some())
            })
        });
        // The outage itself goes on for 6 s after it was noticed (a length of the scenario,
        // not a wait for a result): nothing may cross it, and its end must be noticed.
        std::thread::sleep(Duration::from_secs(6));
        let task_file = |pc: &str, t: &str| {
            world
                .tree(pc)
                .task_file(&trinity_core::TaskId::new(t).expect("valid"))
        };
        assert!(
            tasks.iter().all(|t| !task_file("PC2", t).exists()),
            "nothing crosses a cut link"
        );
        world.net().expect("network").proxy().heal();
        let healed = Instant::now();
        world.wait(&format!("PC1's tasks on PC2 after the {how:?}"), || {
            tasks.iter().all(|t| task_file("PC2", t).is_file())
        });
        eprintln!(
            "{how:?}: the tasks written during the outage reached PC2 {:?} after the link returned",
            healed.elapsed()
        );
        assert!(
            world
                .log("PC1", "git-sync")
                .contains("the remote is reachable again"),
            "{}",
            world.log_tails(20)
        );
    }
    wait_for_equal_trees(&world);
    assert_nothing_quarantined(&world);
    world.stop_all();
    for pc in pcs {
        world.git(world.tree(pc).root(), &["fsck", "--no-progress"]);
    }
}
