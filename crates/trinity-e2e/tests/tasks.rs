//! Work put in on one PC is seen by every PC: `trinity task add` on PC3, carried by git-sync,
//! listed with its state by `trinity task list` on PC1 and PC2.
#![cfg(unix)]

use std::process::Stdio;

use trinity_e2e::World;

#[test]
fn a_task_added_on_one_pc_is_listed_on_every_pc() {
    let mut world = World::new(&["PC1", "PC2", "PC3"], "");
    for pc in ["PC1", "PC2", "PC3"] {
        world.start("git-sync", pc);
    }
    let trinity = |pc: &str, args: &[&str]| {
        world
            .cmd("trinity", pc)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("trinity")
    };
    let o = trinity(
        "PC3",
        &[
            "task",
            "add",
            "intro",
            "-d",
            "Write the intro",
            "-p",
            "high",
        ],
    );
    assert!(o.status.success(), "{}", trinity_testkit::describe(&o));
    let o = trinity(
        "PC3",
        &[
            "task",
            "add",
            "courses",
            "-d",
            "Courses",
            "--depends-on",
            "intro",
        ],
    );
    assert!(o.status.success(), "{}", trinity_testkit::describe(&o));
    for pc in ["PC1", "PC2"] {
        world.wait(&format!("both tasks listed on {pc}"), || {
            let o = trinity(pc, &["task", "list", "--json"]);
            let rows: serde_json::Value =
                serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
            rows.as_array().is_some_and(|r| {
                r.len() == 2
                    && r[0]["id"] == "intro"
                    && r[0]["state"]["state"] == "queued"
                    && r[1]["id"] == "courses"
                    && r[1]["state"]["state"] == "blocked"
                    && r[1]["created_by"] == "PC3"
            })
        });
    }
    // A duplicate is refused on another PC too, once it has the task.
    let o = trinity("PC1", &["task", "add", "intro", "-d", "again"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("task intro already exists"));
    world.stop_all();
}
