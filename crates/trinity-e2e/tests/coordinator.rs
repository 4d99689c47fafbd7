//! The coordinator with the real programs: three PCs, every daemon running, one bare remote.
//! Work is assigned and verified, a silent PC's work goes to a live one, and when the leader's
//! process is killed another PC takes the lease over.
#![cfg(unix)]

use std::time::Instant;

use trinity_core::fsio;
use trinity_core::schema::{InstanceStatus, Lease, Verdict, Verification};
use trinity_core::{InstanceState, PcId};
use trinity_e2e::World;

const CONFIG: &str = r#"[credit]
claude_projects_dir = ""
interval = "500ms"
[coordinator]
monitor_interval = "1s"
lease_ttl = "5s"
suspect_after = "4s"
dead_after = "8s"
[[coordinator.phases]]
name = "check"
command = ["/bin/sh", "-c", "test -n \"$TRINITY_TASK_ID\" && echo '{\"critical\":0,\"high\":0,\"coverage\":0.9}'"]
critical = true
"#;

/// The test agent finishes its task at once, except `hold-*` tasks, which it keeps.
const AGENT: &str = r#"case "$TRINITY_TASK_ID" in
  ""|hold-*) ;;
  *) "$AGENT_TRINITY" work done --summary "done by $TRINITY_PC" >/dev/null 2>&1 ;;
esac"#;

fn lease(world: &World, seen_by: &str) -> Option<Lease> {
    fsio::load::<Lease>(&world.tree(seen_by).lease_file())
        .ok()
        .map(|d| d.value)
}

/// The lease as it is on the remote: only that one counts.
fn remote_lease(world: &World) -> Option<Lease> {
    let mut c = std::process::Command::new("git");
    trinity_testkit::hermetic(&mut c, &world.root().join("home"));
    let o = c
        .current_dir(world.remote())
        .args(["show", "trinity:coordinator/lease.json"])
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    trinity_core::schema::from_bytes::<Lease>(&o.stdout).ok()
}

fn instance(world: &World, pc: &str) -> Option<InstanceStatus> {
    fsio::load::<InstanceStatus>(&world.tree(pc).instance_file(&PcId::new(pc).expect("valid")))
        .ok()
        .map(|d| d.value)
}

/// The verdicts in `seen_by`'s tree, read as one moment of it: git-sync's checkouts, which
/// replace files, are held back meanwhile.
fn verdicts(world: &World, seen_by: &str) -> Vec<Verification> {
    let tree = world.tree(seen_by);
    let _settled = trinity_core::syncstate::hold_checkouts(&tree);
    std::fs::read_dir(tree.verification_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fsio::load::<Verification>(&e.path()).ok().map(|d| d.value))
        .filter(|v| v.verdict.is_some())
        .collect()
}

#[test]
fn the_coordinator_assigns_verifies_reassigns_and_survives_its_leaders_death() {
    let pcs = ["PC1", "PC2", "PC3"];
    let mut world = World::with_agent(&pcs, CONFIG, AGENT);
    // Only PC2 takes `holder` tasks.
    for p in pcs {
        let roles: &[&str] = if p == "PC2" {
            &["general", "holder"]
        } else {
            &["general"]
        };
        world.set_roles(p, roles);
    }
    world.set_env("TRINITY_SYNC__HEARTBEAT_COMMIT_INTERVAL", "0s");
    world.start_fleet();

    // PC3, the preferred leader, holds the lease, and every PC knows it.
    world.wait("PC3's lease on every PC", || {
        pcs.iter()
            .all(|p| lease(&world, p).is_some_and(|l| l.holder.as_str() == "PC3"))
    });

    // Work in: a dependency chain and a plain task. Each goes to a PC on standby, its agent
    // finishes it, the leader verifies it and the PC goes back to standby.
    for args in [
        &["task", "add", "a-schema", "-d", "the schema", "-p", "high"][..],
        &["task", "add", "b-docs", "-d", "the docs"][..],
        &[
            "task",
            "add",
            "c-api",
            "-d",
            "the API",
            "--depends-on",
            "a-schema",
        ][..],
    ] {
        let o = world.output("trinity", "PC1", args);
        assert!(o.status.success(), "{}", trinity_testkit::describe(&o));
    }
    // The verdicts that satisfied the wait are the ones checked (a second read could meet a
    // file that git-sync is replacing).
    let mut approved = Vec::new();
    world.wait("three approved verdicts", || {
        approved = verdicts(&world, "PC1");
        approved.len() == 3 && approved.iter().all(|v| v.verdict == Some(Verdict::Approve))
    });
    let done: Vec<_> = approved
        .into_iter()
        .filter_map(|v| v.task.map(|t| t.to_string()))
        .collect();
    for t in ["a-schema", "b-docs", "c-api"] {
        assert!(done.contains(&t.to_owned()), "{t} in {done:?}");
        let starts: Vec<String> = world
            .launches()
            .iter()
            .filter(|l| l.var("TRINITY_TASK_ID") == Some(t))
            .map(|l| format!("{}: {}", l.pc, l.env.replace('\n', " ")))
            .collect();
        assert_eq!(
            starts.len(),
            1,
            "one agent start for {t}: {starts:#?}\n{}",
            world.log_tails(400)
        );
    }
    world.wait("every PC back on standby", || {
        pcs.iter()
            .all(|p| instance(&world, p).is_none_or(|i| i.state == InstanceState::Standby))
    });

    // A PC goes silent holding work: after dead_after its work goes to a live PC.
    let o = world.output(
        "trinity",
        "PC1",
        &[
            "task",
            "add",
            "hold-1",
            "-d",
            "long work",
            "--role",
            "holder",
        ],
    );
    assert!(o.status.success(), "{}", trinity_testkit::describe(&o));
    world.wait("PC2 working on hold-1", || {
        world
            .launches()
            .iter()
            .any(|l| l.pc == "PC2" && l.var("TRINITY_TASK_ID") == Some("hold-1"))
            && instance(&world, "PC2").is_some_and(|i| i.state == InstanceState::Active)
    });
    for d in trinity_e2e::ALL_DAEMONS {
        world.kill(d, "PC2");
    }
    let silent = Instant::now();
    world.wait("hold-1 reassigned and started on another PC", || {
        world
            .launches()
            .iter()
            .any(|l| l.pc != "PC2" && l.var("TRINITY_TASK_ID") == Some("hold-1"))
    });
    let reassigned_after = silent.elapsed();
    let postmortems = std::fs::read_dir(world.tree("PC3").postmortem_dir())
        .expect("postmortems")
        .count();
    assert_eq!(postmortems, 1);
    // PC2 comes back: it finds its work taken and does not resume it.
    for d in trinity_e2e::ALL_DAEMONS {
        world.start(d, "PC2");
    }
    world.wait("PC2 standing down", || {
        instance(&world, "PC2").is_some_and(|i| i.state == InstanceState::Standby)
    });
    let on_pc2 = world
        .launches()
        .iter()
        .filter(|l| l.pc == "PC2" && l.var("TRINITY_TASK_ID") == Some("hold-1"))
        .count();
    assert_eq!(on_pc2, 1, "PC2 did not start hold-1 again");

    // The leader's process dies: another PC takes over once the lease goes unrenewed.
    let epoch = remote_lease(&world).expect("lease").epoch;
    world.kill("coordinator", "PC3");
    let killed = Instant::now();
    world.wait("a new leader on the remote", || {
        remote_lease(&world).is_some_and(|l| l.holder.as_str() != "PC3" && l.epoch > epoch)
    });
    let takeover = killed.elapsed();
    let new_leader = remote_lease(&world).expect("lease").holder.to_string();
    // The new leader acts: fresh work is assigned.
    let o = world.output(
        "trinity",
        "PC1",
        &["task", "add", "d-after", "-d", "after the takeover"],
    );
    assert!(o.status.success(), "{}", trinity_testkit::describe(&o));
    // By a leader other than the dead one: on a saturated machine the lease may pass between
    // the two live PCs meanwhile (a leader whose renewals are slow to reach the remote stops).
    world.wait("d-after approved under a new leader", || {
        verdicts(&world, "PC1").iter().any(|v| {
            v.task.as_ref().is_some_and(|t| t.as_str() == "d-after")
                && v.coordinator.as_str() != "PC3"
        })
    });
    // The preferred leader comes back and takes the lease back; the deposed one stops.
    world.start("coordinator", "PC3");
    world.wait("PC3 leading again", || {
        remote_lease(&world).is_some_and(|l| l.holder.as_str() == "PC3")
    });
    world.wait("the deposed leader stopping", || {
        world
            .log(&new_leader, "coordinator")
            .contains("lost the coordinator lease")
    });
    eprintln!(
        "reassigned {:.1} s after the PC went silent (dead_after 8 s); new leader {new_leader} {:.1} s after the leader was killed (lease_ttl 5 s)",
        reassigned_after.as_secs_f64(),
        takeover.as_secs_f64()
    );
    world.stop_all();
    for p in pcs {
        let root = world.tree(p).root().display().to_string();
        let o = world.output("trinity", p, &["validate", &root]);
        assert!(o.status.success(), "{p}: {}", trinity_testkit::describe(&o));
    }
}
