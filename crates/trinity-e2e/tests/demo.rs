//! The README's main command: `trinity demo` plays a whole fleet on this machine and exits 0
//! only when every step was observed in the files.
#![cfg(unix)]

use std::process::Command;

#[test]
fn the_demo_runs_every_scenario_and_passes() {
    let home = tempfile::tempdir().expect("home");
    let dir = tempfile::tempdir().expect("dir");
    let demo_dir = dir.path().join("demo");
    let mut cmd = Command::new(trinity_e2e::bin("trinity"));
    trinity_testkit::hermetic(&mut cmd, home.path());
    let out = cmd
        .args(["demo", "--dir"])
        .arg(&demo_dir)
        .output()
        .expect("trinity demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", trinity_testkit::describe(&out));
    for step in [
        "leads the fleet",
        "verified intro: APPROVE",
        "Test 1 — forced handoff",
        "Test 2 — three rate limits",
        "Test 3 — the full rotation",
        "the rotation is complete",
        "goes silent",
        "'s work by the coordinator",
        "does not resume it",
        "Every step was observed in the files",
    ] {
        assert!(
            text.contains(step),
            "the demo did not show {step:?}:\n{text}"
        );
    }
    // What it claims is in the files it kept.
    let page = demo_dir.join("PC3/.trinity/dashboards/CREDIT_DASHBOARD.html");
    assert!(
        page.is_file()
            || demo_dir
                .join("PC1/.trinity/dashboards/CREDIT_DASHBOARD.html")
                .is_file()
    );
    let postmortems = std::fs::read_dir(demo_dir.join("PC1/.trinity/postmortems"))
        .expect("postmortems")
        .count();
    assert_eq!(postmortems, 1);
}
