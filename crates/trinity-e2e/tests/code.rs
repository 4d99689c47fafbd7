//! The agent's code travels with its work around the ring: PC1's uncommitted change and new
//! file are in PC2's project checkout before PC2's agent starts; PC1's checkout is left as it
//! was; PC2's own uncommitted change is set aside on a ref, not lost; PC2's further work and
//! progress reach PC3 together with PC1's; with the project's remote gone the handoff still
//! goes out.
#![cfg(unix)]

use std::path::Path;

use trinity_e2e::World;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn handoff_id(path: &Path) -> String {
    path.file_stem()
        .expect("name")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn the_code_in_progress_travels_and_nothing_local_is_lost() {
    let mut world = World::new(
        &["PC1", "PC2", "PC3"],
        "workdir = \"project\"\n[credit]\nclaude_projects_dir = \"\"\npause = \"1s\"\n",
    );
    // The project: a bare repository and a clone on every PC.
    world.project(&[
        ("README.md", "# project\n"),
        ("src/lib.txt", "lib v1\n"),
        (".gitignore", "*.log\n"),
    ]);
    let root = world.root().to_owned();
    world.start_all();
    let trinity = |pc: &str, args: &[&str]| {
        let o = world.output("trinity", pc, args);
        assert!(
            o.status.success(),
            "{pc} {args:?}: {}",
            trinity_testkit::describe(&o)
        );
    };
    trinity("PC1", &["task", "add", "t1", "-d", "Write the chapter"]);
    trinity("PC1", &["work", "next"]);
    trinity("PC1", &["work", "progress", "--progress", "40"]);
    // PC1's agent worked: a change, a new file, and a log file .gitignore excludes.
    let p1 = root.join("PC1/project");
    write(
        &p1.join("README.md"),
        "# project\n\nchapter one, half done\n",
    );
    write(&p1.join("notes/new.txt"), "a new file\n");
    write(&p1.join("debug.log"), "noise\n");
    let p1_head = world.git(&p1, &["rev-parse", "HEAD"]);
    // PC2 has an uncommitted change of its own.
    let p2 = root.join("PC2/project");
    write(&p2.join("src/lib.txt"), "lib v1 with PC2's local edit\n");
    write(&p2.join("scratch.txt"), "PC2's scratch\n");

    let handoff = world.force_handoff("PC1");
    let id = handoff_id(&handoff);
    let h: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&handoff).expect("handoff")).expect("json");
    let code = &h["current_work"]["code"];
    assert_eq!(code["pushed"], true, "{h}");
    assert_eq!(code["wip_ref"], "refs/heads/trinity/wip/t1", "{h}");
    assert_eq!(code["branch"], "main", "{h}");
    assert_eq!(code["base_commit"].as_str(), Some(p1_head.trim()), "{h}");
    world.wait("PC2's agent for the handoff", || {
        world
            .launches()
            .iter()
            .any(|l| l.pc == "PC2" && l.handoff().as_deref() == Some(id.as_str()))
    });
    // PC2's checkout holds PC1's work, on a branch of its own.
    assert_eq!(
        std::fs::read_to_string(p2.join("README.md")).expect("readme"),
        "# project\n\nchapter one, half done\n"
    );
    assert_eq!(
        std::fs::read_to_string(p2.join("notes/new.txt")).expect("new file"),
        "a new file\n"
    );
    assert!(
        !p2.join("debug.log").exists(),
        "ignored files do not travel"
    );
    assert_eq!(
        world.git(&p2, &["symbolic-ref", "--short", "HEAD"]).trim(),
        "trinity/work/t1"
    );
    assert_eq!(
        world.git(&p2, &["rev-parse", "HEAD"]).trim(),
        code["wip_commit"].as_str().expect("wip commit")
    );
    // PC2's own change was set aside, not lost.
    let saved = world.git(
        &p2,
        &["for-each-ref", "--format=%(refname)", "refs/trinity/saved/"],
    );
    let saved = saved.lines().next().expect("a saved ref").to_owned();
    assert_eq!(
        world.git(&p2, &["show", &format!("{saved}:src/lib.txt")]),
        "lib v1 with PC2's local edit\n"
    );
    assert_eq!(
        world.git(&p2, &["show", &format!("{saved}:scratch.txt")]),
        "PC2's scratch\n"
    );
    // PC1's checkout is as its agent left it: branch, HEAD, changes.
    assert_eq!(
        world.git(&p1, &["symbolic-ref", "--short", "HEAD"]).trim(),
        "main"
    );
    assert_eq!(world.git(&p1, &["rev-parse", "HEAD"]), p1_head);
    let status = world.git(&p1, &["status", "--porcelain"]);
    assert!(
        status.contains(" M README.md") && status.contains("?? notes/"),
        "{status}"
    );

    // PC2's agent goes on, on the branch it was handed: a change, and progress. The next hop
    // carries PC1's work and PC2's together to PC3.
    write(&p2.join("src/lib.txt"), "lib v2, written on PC2\n");
    trinity(
        "PC2",
        &[
            "work",
            "progress",
            "--progress",
            "70",
            "--done",
            "chapter one",
        ],
    );
    world.wait("PC1's pause to end, as PC2 sees it", || {
        world
            .heartbeat("PC2", "PC1")
            .and_then(|h| h.paused_until)
            .is_none_or(|u| u < chrono::Utc::now())
    });
    let handoff = world.force_handoff("PC2");
    let id = handoff_id(&handoff);
    let h: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&handoff).expect("handoff")).expect("json");
    assert_eq!(h["to_pc"], "PC3", "{h}");
    assert_eq!(h["current_work"]["progress"], "70%", "{h}");
    assert_eq!(
        h["current_work"]["completed_subtasks"][0], "chapter one",
        "{h}"
    );
    assert_eq!(h["current_work"]["code"]["pushed"], true, "{h}");
    world.wait("PC3's agent", || {
        world
            .launches()
            .iter()
            .any(|l| l.pc == "PC3" && l.handoff().as_deref() == Some(id.as_str()))
    });
    let p3 = root.join("PC3/project");
    assert_eq!(
        std::fs::read_to_string(p3.join("README.md")).expect("readme"),
        "# project\n\nchapter one, half done\n",
        "PC1's change, carried on"
    );
    assert_eq!(
        std::fs::read_to_string(p3.join("src/lib.txt")).expect("lib"),
        "lib v2, written on PC2\n",
        "PC2's change"
    );
    assert!(p3.join("notes/new.txt").is_file());

    // The project's remote goes away: the next handoff (PC3 → PC1) still goes out, and says
    // why its code stayed behind.
    std::fs::rename(root.join("project.git"), root.join("project.gone")).expect("rename");
    write(&p3.join("README.md"), "# project\n\nchapter one, done\n");
    world.wait("PC1's pause to end, as PC3 sees it", || {
        world
            .heartbeat("PC3", "PC1")
            .and_then(|h| h.paused_until)
            .is_none_or(|u| u < chrono::Utc::now())
    });
    let handoff = world.force_handoff("PC3");
    let id = handoff_id(&handoff);
    let h: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&handoff).expect("handoff")).expect("json");
    assert_eq!(h["current_work"]["code"]["pushed"], false, "{h}");
    assert!(
        h["current_work"]["code"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("push to origin failed")),
        "{h}"
    );
    world.wait("the next agent, without the code", || {
        world
            .launches()
            .iter()
            .any(|l| l.handoff().as_deref() == Some(id.as_str()))
    });
    world.stop_all();
}
