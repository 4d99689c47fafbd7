//! Finished work is verified against exactly the code submitted: PC1's agent leaves its change
//! uncommitted, `trinity work done` snapshots it to the project's remote, and PC2's coordinator
//! runs its phase in a checkout of that commit. Work that fails the phase comes back to PC1 to
//! fix, with what failed, and its agent starts on the fix.
#![cfg(unix)]

use std::path::Path;

use trinity_core::fsio;
use trinity_core::schema::{InstanceStatus, Verdict, Verification};
use trinity_core::{InstanceState, PcId};
use trinity_e2e::World;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

const CONFIG: &str = r#"workdir = "project"
[credit]
claude_projects_dir = ""
[coordinator]
monitor_interval = "1s"
lease_ttl = "3s"
[[coordinator.phases]]
name = "chapter"
command = ["/bin/sh", "-c", "test \"$(git rev-parse HEAD)\" = \"$TRINITY_VERIFY_COMMIT\" && grep -q 'chapter one' README.md"]
critical = true
"#;

fn verdict(world: &World, task: &str) -> Option<Verification> {
    std::fs::read_dir(world.tree("PC1").verification_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fsio::load::<Verification>(&e.path()).ok().map(|d| d.value))
        .find(|v| v.verdict.is_some() && v.task.as_ref().is_some_and(|t| t.as_str() == task))
}

fn instance(world: &World) -> Option<InstanceStatus> {
    fsio::load::<InstanceStatus>(
        &world
            .tree("PC1")
            .instance_file(&PcId::new("PC1").expect("valid")),
    )
    .ok()
    .map(|d| d.value)
}

#[test]
fn finished_work_is_verified_on_its_own_code_and_denied_work_comes_back_to_fix() {
    let mut world = World::new(&["PC1", "PC2"], CONFIG);
    world.set_roles("PC1", &["writer"]);
    world.set_roles("PC2", &["reviewer"]);
    world.set_env("TRINITY_SYNC__HEARTBEAT_COMMIT_INTERVAL", "0s");
    world.project(&[("README.md", "# project\n")]);
    let root = world.root().to_owned();
    for d in ["git-sync", "wake-daemon"] {
        world.start(d, "PC1");
    }
    for d in ["git-sync", "coordinator"] {
        world.start(d, "PC2");
    }
    let trinity = |args: &[&str]| {
        let o = world.output("trinity", "PC1", args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            trinity_testkit::describe(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    world.wait("PC2's lease on PC1", || {
        world.tree("PC1").lease_file().is_file()
    });

    // Good work: the coordinator assigns it, the "agent" (this test) writes and finishes it.
    trinity(&[
        "task",
        "add",
        "t1",
        "-d",
        "Write chapter one",
        "--role",
        "writer",
    ]);
    world.wait("t1 assigned and started on PC1", || {
        world
            .launches()
            .iter()
            .any(|l| l.pc == "PC1" && l.var("TRINITY_TASK_ID") == Some("t1"))
    });
    let project = root.join("PC1/project");
    write(&project.join("README.md"), "# project\n\nchapter one\n");
    let out = trinity(&["work", "done", "--summary", "chapter one written"]);
    assert!(out.contains("submitted for verification"), "{out}");
    world.wait("t1's verdict", || verdict(&world, "t1").is_some());
    let v = verdict(&world, "t1").expect("verdict");
    assert_eq!(v.verdict, Some(Verdict::Approve), "{v:?}");
    // The snapshot is on the project's remote, and the user's checkout is as it was.
    let refs = world.git(
        &root.join("project.git"),
        &["for-each-ref", "--format=%(refname)"],
    );
    assert!(refs.contains("refs/heads/trinity/wip/t1"), "{refs}");
    let status = world.git(&project, &["status", "--porcelain"]);
    assert_eq!(
        status.trim(),
        "M README.md",
        "the agent's change is still uncommitted"
    );
    world.wait("PC1 back on standby", || {
        instance(&world).is_some_and(|i| i.state == InstanceState::Standby)
    });

    // Work that fails the phase: denied, and back to PC1 to fix.
    trinity(&[
        "task",
        "add",
        "t2",
        "-d",
        "Write chapter two",
        "--role",
        "writer",
    ]);
    world.wait("t2 assigned and started on PC1", || {
        world
            .launches()
            .iter()
            .any(|l| l.pc == "PC1" && l.var("TRINITY_TASK_ID") == Some("t2"))
    });
    write(
        &project.join("README.md"),
        "# project\n\nchapter two, but chapter 1 is gone\n",
    );
    trinity(&["work", "done", "--summary", "chapter two"]);
    world.wait("t2's verdict", || verdict(&world, "t2").is_some());
    let v = verdict(&world, "t2").expect("verdict");
    assert_eq!(v.verdict, Some(Verdict::Deny), "{v:?}");
    assert!(
        v.reasons[0].contains("critical phase chapter failed"),
        "{:?}",
        v.reasons
    );
    world.wait("PC1's agent started again on the fix of t2", || {
        world
            .launches()
            .iter()
            .filter(|l| l.pc == "PC1" && l.var("TRINITY_TASK_ID") == Some("t2"))
            .count()
            == 2
    });
    world.wait("PC1 in REMEDIATION", || {
        instance(&world).is_some_and(|i| i.state == InstanceState::Remediation)
    });
    let i = instance(&world).expect("instance");
    let work = i.current_work.expect("the work to fix");
    assert!(
        work.progress.contains("verification denied"),
        "{}",
        work.progress
    );
    // The fix, submitted again, passes.
    write(
        &project.join("README.md"),
        "# project\n\nchapter one\n\nchapter two\n",
    );
    let out = trinity(&["work", "done", "--summary", "chapter two, fixed"]);
    assert!(out.contains("submitted for verification"), "{out}");
    world.wait("the fix approved", || {
        std::fs::read_dir(world.tree("PC1").verification_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fsio::load::<Verification>(&e.path()).ok().map(|d| d.value))
            .filter(|v| v.task.as_ref().is_some_and(|t| t.as_str() == "t2"))
            .any(|v| v.verdict == Some(Verdict::Approve))
    });
    world.wait("PC1 back on standby after the fix", || {
        instance(&world).is_some_and(|i| i.state == InstanceState::Standby)
    });
    world.stop_all();
}
