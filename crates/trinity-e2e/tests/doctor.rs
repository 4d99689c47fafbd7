//! `trinity doctor` on a PC with its daemons running, then with one of them killed and a wake
//! signal left unhandled.
#![cfg(unix)]

use trinity_e2e::World;

#[test]
fn doctor_passes_a_healthy_pc_and_names_what_is_wrong() {
    let mut world = World::new(&["PC1", "PC2"], "[credit]\nclaude_projects_dir = \"\"\n");
    for d in trinity_e2e::ALL_DAEMONS {
        world.start(d, "PC1");
    }
    let doctor = |world: &World| {
        let o = world.output("trinity", "PC1", &["doctor"]);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    // Healthy once every daemon has reported and git-sync is in step.
    world.wait("a healthy doctor", || doctor(&world).0 == Some(0));
    let (_, text) = doctor(&world);
    for line in ["git-sync", "credit-monitor", "wake-daemon", "coordinator"] {
        assert!(
            text.lines()
                .any(|l| l.contains("ok") && l.contains(line) && l.contains("running")),
            "{line} not reported running:\n{text}"
        );
    }
    assert!(
        text.contains("remote") && text.contains("answered"),
        "{text}"
    );

    world.kill("wake-daemon", "PC1");
    let (code, text) = doctor(&world);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("FAIL") && l.contains("wake-daemon") && l.contains("not running")),
        "{text}"
    );
    assert!(text.contains("start it"), "it says how to fix it:\n{text}");

    // A per-machine state file set aside as corrupt is named, with what to do.
    let tree = world.tree("PC1");
    assert!(
        text.lines()
            .any(|l| l.contains("ok") && l.contains("local state")),
        "{text}"
    );
    std::fs::write(tree.credit_state_file(), b"{\"armed\": ").expect("corrupt");
    // The next step of the credit monitor meets it and sets it aside.
    world.output("credit-monitor", "PC1", &["--record-success"]);
    let (code, text) = doctor(&world);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.lines().any(|l| l.contains("FAIL")
            && l.contains("local state")
            && l.contains("local/credit/state.json.corrupt")),
        "{text}"
    );
    world.stop_all();
}
