//! The agent's conversation travels (when `work.carry_conversation` is on and the agent is
//! Claude Code): PC1's session transcript goes with the handoff, lands where Claude Code looks
//! for the sessions of PC2's workdir, and PC2's agent is started with `--resume SESSION`. The
//! rate limits in the carried transcript, which made PC1 hand off, do not make PC2 hand off
//! again: they are dated before PC2 took the work over.
#![cfg(unix)]

use std::path::Path;

use trinity_core::code::claude_project_dir;
use trinity_e2e::World;

/// A stand-in for the `claude` program: records its arguments and environment.
const FAKE_CLAUDE: &str = "#!/bin/sh\n{ env | grep '^TRINITY_' | sort; echo \"ARGS=$*\"; } > \"$AGENT_OUT/.$TRINITY_PC-$$.tmp\"\nmv \"$AGENT_OUT/.$TRINITY_PC-$$.tmp\" \"$AGENT_OUT/$TRINITY_PC-$$.env\"\n";

const SESSION: &str = "a6930a5c-fc7c-4dbb-9a0e-0e89dfa58872";

#[test]
fn the_conversation_is_resumed_on_the_next_pc_and_its_old_rate_limits_do_not_count() {
    let mut world = World::new(
        &["PC1", "PC2", "PC3"],
        "workdir = \"project\"\n[credit]\nclaude_projects_dir = \"claude-projects\"\ntranscript_poll_interval = \"200ms\"\npause = \"1s\"\n[work]\ncarry_conversation = true\n",
    );
    let root = world.root().to_owned();
    let claude = root.join("bin/claude");
    std::fs::create_dir_all(claude.parent().expect("bin")).expect("bin");
    std::fs::write(&claude, FAKE_CLAUDE).expect("fake claude");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for pc in ["PC1", "PC2", "PC3"] {
        std::fs::create_dir_all(root.join(pc).join("project")).expect("project");
        let config = root.join(pc).join("trinity.toml");
        let text = std::fs::read_to_string(&config).expect("config");
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("command = ") {
                    format!(
                        "command = [{:?}, \"-p\", \"go on\"]",
                        claude.display().to_string()
                    )
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&config, text + "\n").expect("config");
    }
    // PC1's agent has a session: the recorded transcript of a run refused with three rate
    // limits, dated now.
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../credit-monitor/tests/fixtures/claude-code/2.1.332/429/transcript.jsonl");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let transcript: String = std::fs::read_to_string(recorded)
        .expect("fixture")
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("json line");
            if v.get("timestamp").is_some() {
                v["timestamp"] = serde_json::Value::String(now.clone());
            }
            v.to_string() + "\n"
        })
        .collect();
    let pc1_sessions =
        claude_project_dir(&root.join("PC1/claude-projects"), &root.join("PC1/project"));
    std::fs::create_dir_all(&pc1_sessions).expect("sessions");
    std::fs::write(pc1_sessions.join(format!("{SESSION}.jsonl")), &transcript).expect("session");

    world.start_all();
    let ok = |pc: &str, args: &[&str]| {
        let o = world.output("trinity", pc, args);
        assert!(
            o.status.success(),
            "{pc} {args:?}: {}",
            trinity_testkit::describe(&o)
        );
    };
    ok("PC1", &["task", "add", "t1", "-d", "Write the chapter"]);
    ok("PC1", &["work", "next"]);
    let handoff = world.force_handoff("PC1");
    let id = handoff
        .file_stem()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let h: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&handoff).expect("handoff")).expect("json");
    assert_eq!(h["current_work"]["session"], SESSION, "{h}");
    let sha = h["current_work"]["conversation_sha256"]
        .as_str()
        .expect("the signed handoff names the encrypted conversation");
    assert_eq!(sha.len(), 64, "{h}");
    world.wait("PC2's agent", || {
        world
            .launches()
            .iter()
            .any(|l| l.pc == "PC2" && l.handoff().as_deref() == Some(id.as_str()))
    });
    let launch = world
        .launches()
        .into_iter()
        .find(|l| l.pc == "PC2")
        .expect("PC2's launch");
    assert_eq!(
        launch.var("ARGS"),
        Some(format!("-p go on --resume {SESSION}").as_str()),
        "{}",
        launch.env
    );
    let pc2_session =
        claude_project_dir(&root.join("PC2/claude-projects"), &root.join("PC2/project"))
            .join(format!("{SESSION}.jsonl"));
    assert_eq!(
        std::fs::read_to_string(&pc2_session).expect("placed"),
        transcript
    );
    // The carried file leaves the tree once placed.
    let carried = |pc: &str| {
        world
            .tree(pc)
            .conversations_dir()
            .join(format!("{id}.age"))
            .exists()
    };
    world.wait("the conversation consumed everywhere", || {
        ["PC1", "PC2", "PC3"].iter().all(|pc| !carried(pc))
    });
    // It went through the shared repository encrypted: the remote's whole history has the
    // file, and not one line of the conversation in the clear.
    let history = world.git(&world.remote(), &["log", "-p", "--all", "--text"]);
    assert!(
        history.contains(&format!("conversations/{id}.age")),
        "the conversation went through the repository"
    );
    for line in transcript.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        if let Some(uuid) = v.get("uuid").and_then(|u| u.as_str()) {
            assert!(
                !history.contains(uuid),
                "the remote holds {uuid} in the clear"
            );
        }
    }
    assert!(!history.contains(&transcript.lines().next().expect("a line")[..60]));
    // PC2's credit monitor has read the placed transcript, and its rate limits (before PC2's
    // reset) did not count: PC2 stays healthy and hands nothing off.
    world.wait("PC2's credit monitor to read the session", || {
        std::fs::read_to_string(world.tree("PC2").transcript_state_file())
            .is_ok_and(|t| t.contains(SESSION))
    });
    let o = world.output("credit-monitor", "PC2", &["--status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status json");
    assert_ne!(status["level"], "EXHAUSTED", "{status}");
    let pc2_handoffs = std::fs::read_dir(world.tree("PC2").handoff_dir())
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("handoff_PC2_"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(pc2_handoffs, 0, "PC2 handed off on PC1's old rate limits");
    world.stop_all();
}
