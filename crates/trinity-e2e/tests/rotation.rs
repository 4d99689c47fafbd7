//! A whole rotation through git: PC1 → PC2 → PC3 → PC1, every hop started by recorded rate
//! limits, carried by git-sync, accepted by the wake-daemon, which starts a test agent.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use trinity_core::fsio;
use trinity_core::schema::{Claim, CreditStatus, Heartbeat, HeartbeatStatus};
use trinity_core::{PcId, TaskId, Tree};

/// The workspace's programs, next to this test's executable (`target/<profile>/`).
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace, or scripts/test.sh)",
        path.display()
    );
    path
}

struct World {
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Drop for World {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

impl World {
    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self, program: &str, pc: &str) -> Command {
        let mut c = Command::new(bin(program));
        trinity_testkit::hermetic(&mut c, &self.root().join("home"))
            .current_dir(self.root().join(pc))
            .env("TRINITY_CONFIG", self.root().join(pc).join("trinity.toml"))
            .env("AGENT_OUT", self.root().join("agents"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn tree(&self, pc: &str) -> Tree {
        Tree::new(self.root().join(pc).join(".trinity"))
    }

    fn launches(&self, pc: &str) -> usize {
        std::fs::read_dir(self.root().join("agents"))
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("{pc}-"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    fn wait(&self, what: &str, ok: impl Fn() -> bool) {
        trinity_testkit::wait_for(what, ok);
    }

    fn record_rate_limits(&self, pc: &str) {
        for _ in 0..3 {
            let s = self
                .cmd("credit-monitor", pc)
                .arg("--record-rate-limit")
                .status()
                .expect("credit-monitor");
            assert!(s.success());
        }
    }

    fn claim_holder(&self, pc: &str, task: &str) -> Option<String> {
        fsio::load::<Claim>(&self.tree(pc).claim_file(&TaskId::new(task).expect("valid")))
            .ok()
            .map(|c| c.value.pc.to_string())
    }

    fn heartbeat(&self, seen_by: &str, of: &str) -> Option<Heartbeat> {
        fsio::load::<Heartbeat>(
            &self
                .tree(seen_by)
                .heartbeat_file(&PcId::new(of).expect("valid")),
        )
        .ok()
        .map(|d| d.value)
    }
}

#[test]
fn a_whole_rotation_through_git() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("home")).expect("home");
    std::fs::create_dir_all(dir.path().join("agents")).expect("agents");
    let agent = dir.path().join("agent.sh");
    std::fs::write(
        &agent,
        "#!/bin/sh\nenv | grep '^TRINITY_' | sort > \"$AGENT_OUT/$TRINITY_PC-$$.env\"\n",
    )
    .expect("agent");
    let mut world = World {
        dir,
        children: Vec::new(),
    };
    let pcs = ["PC1", "PC2", "PC3"];
    for pc in pcs {
        std::fs::create_dir_all(world.root().join(pc)).expect("pc dir");
        let remote = world.root().join("remote.git");
        let mut init = world.cmd("trinity", pc);
        init.args([
            "init",
            "--pc",
            pc,
            "--remote",
            remote.to_str().expect("utf-8"),
        ]);
        if pc == "PC1" {
            init.args([
                "--create-remote",
                "--fleet",
                "PC1,PC2,PC3",
                "--coordinator",
                "PC3",
            ]);
        }
        assert!(init.status().expect("trinity init").success(), "init {pc}");
        let config = world.root().join(pc).join("trinity.toml");
        let mut text = std::fs::read_to_string(&config).expect("config");
        text.push_str(&format!(
            "[agent]\ncommand = [\"/bin/sh\", {:?}]\nnew_console = false\n[credit]\nclaude_projects_dir = \"\"\npause = \"1s\"\nrate_limit_window = \"3s\"\n",
            agent.display().to_string()
        ));
        std::fs::write(&config, text).expect("config");
    }
    // One task in the queue, created on PC1.
    let task = r#"{"format_version":1,"id":"task-a","priority":"high","description":"do a","created_at":"2026-11-21T10:00:00Z","created_by":"PC1"}"#;
    let queue = world.tree("PC1").spawn_queue_dir();
    std::fs::create_dir_all(&queue).expect("queue");
    std::fs::write(queue.join("task-a.json"), task).expect("task");

    for pc in pcs {
        let gs = world.cmd("git-sync", pc).spawn().expect("git-sync");
        world.children.push(gs);
        let wd = world.cmd("wake-daemon", pc).spawn().expect("wake-daemon");
        world.children.push(wd);
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
    world.wait("PC2's agent", || world.launches("PC2") == 1);
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
    world.wait("PC3's agent", || world.launches("PC3") == 1);
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
    world.wait("PC1's agent", || world.launches("PC1") == 1);
    world.wait("PC1's claim everywhere", || {
        pcs.iter()
            .all(|pc| world.claim_holder(pc, "task-a").as_deref() == Some("PC1"))
    });

    // One agent per hop, nothing twice.
    assert_eq!(
        pcs.map(|pc| world.launches(pc)),
        [1, 1, 1],
        "one launch per handoff"
    );
    let pc1_env = || {
        std::fs::read_dir(world.root().join("agents"))
            .expect("agents")
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("PC1-"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .unwrap_or_default()
    };
    world.wait("PC1's agent to write its environment", || {
        !pc1_env().is_empty()
    });
    let env = pc1_env();
    assert!(env.contains("TRINITY_FROM_PC=PC3"), "{env}");
    assert!(env.contains("TRINITY_TASK_ID=task-a"), "{env}");
}
