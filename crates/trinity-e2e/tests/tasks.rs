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
    let trinity = |pc: &str, args: &[&str]| world.output("trinity", pc, args);
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

/// Two PCs ask for work at once and one task is queued: exactly one wins it (the claim that
/// reached the remote first); the other is told there is nothing to do. The winner's progress
/// then travels with its handoff.
#[test]
fn two_pcs_racing_for_one_task_one_wins_and_its_progress_travels_with_the_handoff() {
    let mut world = World::new(
        &["PC1", "PC2", "PC3"],
        "[credit]\nclaude_projects_dir = \"\"\npause = \"1s\"\n",
    );
    world.start_all();
    let trinity = |pc: &str, args: &[&str]| world.output("trinity", pc, args);
    let o = trinity(
        "PC3",
        &["task", "add", "only", "-d", "The one task", "-p", "high"],
    );
    assert!(o.status.success(), "{}", trinity_testkit::describe(&o));
    for pc in ["PC1", "PC2"] {
        world.wait(&format!("the task on {pc}"), || {
            world
                .tree(pc)
                .task_file(&trinity_core::TaskId::new("only").expect("id"))
                .is_file()
        });
    }
    let racers: Vec<_> = ["PC1", "PC2"]
        .iter()
        .map(|pc| {
            world
                .cmd("trinity", pc)
                .args(["work", "next", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("work next")
        })
        .collect();
    let results: Vec<_> = racers
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    let codes: Vec<Option<i32>> = results.iter().map(|o| o.status.code()).collect();
    let winners: Vec<usize> = (0..2).filter(|i| codes[*i] == Some(0)).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one wins: {:?}\n{}\n{}",
        codes,
        trinity_testkit::describe(&results[0]),
        trinity_testkit::describe(&results[1])
    );
    let (winner, loser) = if winners[0] == 0 {
        ("PC1", "PC2")
    } else {
        ("PC2", "PC1")
    };
    assert_eq!(
        codes[usize::from(winner == "PC1")],
        Some(3),
        "the other has nothing to do"
    );
    world.wait("the winner's claim everywhere", || {
        ["PC1", "PC2", "PC3"]
            .iter()
            .all(|pc| world.claim_holder(pc, "only").as_deref() == Some(winner))
    });
    // The loser cannot report on the winner's task.
    let o = trinity(
        loser,
        &["work", "progress", "--task", "only", "--progress", "10"],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("claimed by {winner}")),
        "{}",
        trinity_testkit::describe(&o)
    );
    // The winner reports progress, then runs out of credit: the handoff carries the work.
    let o = trinity(
        winner,
        &[
            "work",
            "progress",
            "--progress",
            "50%",
            "--done",
            "outline",
            "--next",
            "module1",
        ],
    );
    assert!(o.status.success(), "{}", trinity_testkit::describe(&o));
    let handoff = world.force_handoff(winner);
    let h: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&handoff).expect("handoff")).expect("json");
    assert_eq!(h["current_work"]["task_id"], "only", "{h}");
    assert_eq!(h["current_work"]["progress"], "50%", "{h}");
    assert_eq!(h["current_work"]["completed_subtasks"][0], "outline", "{h}");
    assert_eq!(h["current_work"]["next_subtask"], "module1", "{h}");
    world.stop_all();
}
