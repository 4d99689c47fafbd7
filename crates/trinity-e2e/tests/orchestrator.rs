//! `deploy/systemd/trinity.sh`, the Linux orchestrator, for real: its verbs in process mode
//! (no systemd user session here) start, report, restart one, follow a log and stop the four
//! daemons of a PC.
#![cfg(unix)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

use trinity_e2e::World;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd/trinity.sh")
}

fn orchestrator(world: &World, args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    trinity_testkit::hermetic(&mut c, &world.root().join("home"));
    let bin_dir = trinity_e2e::bin("trinity")
        .parent()
        .expect("bin dir")
        .to_owned();
    c.arg(script())
        .args(args)
        .current_dir(world.root().join("PC1"))
        .env("TRINITY_CONFIG", world.root().join("PC1/trinity.toml"))
        .env("TRINITY_BIN", bin_dir)
        .env("TRINITY_MODE", "process")
        .env("AGENT_OUT", world.root().join("agents"));
    c
}

fn run(world: &World, args: &[&str]) -> (bool, String) {
    let o = orchestrator(world, args).output().expect("trinity.sh");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn pids(world: &World) -> Vec<(String, String)> {
    let (_, out) = run(world, &["status"]);
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next()?.to_owned();
            let state = w.collect::<Vec<_>>().join(" ");
            Some((name, state))
        })
        .collect()
}

/// Stops what the orchestrator started, even when the test fails half-way (its daemons are
/// not the test's children).
struct StopOnDrop<'a>(&'a World);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = orchestrator(self.0, &["stop"]).output();
    }
}

#[test]
fn the_linux_orchestrator_starts_restarts_one_follows_a_log_and_stops() {
    let world = World::new(&["PC1", "PC2"], "[credit]\nclaude_projects_dir = \"\"\n");
    let _stop = StopOnDrop(&world);
    let (ok, out) = run(&world, &["install"]);
    assert!(ok, "{out}");
    assert!(out.contains("background processes"), "{out}");
    let (ok, out) = run(&world, &["start"]);
    assert!(ok, "{out}");
    for d in trinity_e2e::ALL_DAEMONS {
        assert!(out.contains(&format!("started {d}")), "{out}");
    }
    world.wait("every daemon running and healthy", || {
        world
            .output("trinity", "PC1", &["doctor", "--offline"])
            .status
            .success()
    });
    let before = pids(&world);
    assert!(
        before.iter().all(|(_, s)| s.starts_with("running")),
        "{before:?}"
    );

    // Restart one: only its pid changes.
    let (ok, out) = run(&world, &["restart", "wake-daemon"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("stopped wake-daemon") && out.contains("started wake-daemon"),
        "{out}"
    );
    let after = pids(&world);
    for ((name, a), (_, b)) in before.iter().zip(after.iter()) {
        if name == "wake-daemon" {
            assert_ne!(a, b, "wake-daemon has a new pid");
        } else {
            assert_eq!(a, b, "{name} was left alone");
        }
    }
    world.wait("the restarted wake-daemon healthy", || {
        world
            .output("trinity", "PC1", &["doctor", "--offline"])
            .status
            .success()
    });

    // Follow a log: the lines are there, and it keeps running until stopped.
    let mut follow = trinity_testkit::spawn(
        orchestrator(&world, &["logs", "git-sync"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut stdout = follow.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let text = reader.join().expect("reader");
    assert!(text.contains("git_sync"), "{text}");
    assert!(follow.try_wait().expect("wait").is_none(), "logs follows");
    let _ = follow.kill();
    let _ = follow.wait();

    // Mistakes are named.
    let (ok, out) = run(&world, &["restart"]);
    assert!(
        !ok && out.contains("restart needs a daemon's name"),
        "{out}"
    );
    let (ok, out) = run(&world, &["start", "nope"]);
    assert!(!ok && out.contains("unknown daemon 'nope'"), "{out}");

    let (ok, out) = run(&world, &["stop"]);
    assert!(ok, "{out}");
    assert!(
        pids(&world).iter().all(|(_, s)| s == "stopped"),
        "{:?}",
        pids(&world)
    );
    let o = world.output("trinity", "PC1", &["doctor", "--offline"]);
    assert!(!o.status.success(), "the doctor sees them stopped");
    let (ok, out) = run(&world, &["uninstall"]);
    assert!(ok, "{out}");
}

/// `scripts/install.sh --from DIR DEST` copies the five programs and the Linux orchestrator.
#[test]
fn install_copies_the_five_programs_and_the_orchestrator() {
    let dest = tempfile::tempdir().expect("dest");
    let bin_dir = trinity_e2e::bin("trinity")
        .parent()
        .expect("bin dir")
        .to_owned();
    let home = tempfile::tempdir().expect("home");
    let mut c = Command::new("sh");
    trinity_testkit::hermetic(&mut c, home.path());
    let o = c
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install.sh"))
        .arg("--from")
        .arg(&bin_dir)
        .arg(dest.path().join("bin"))
        .output()
        .expect("install.sh");
    assert!(o.status.success(), "{}", trinity_testkit::describe(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("trinity 0."), "{out}");
    for p in [
        "trinity",
        "git-sync",
        "credit-monitor",
        "wake-daemon",
        "coordinator",
        "trinity.sh",
    ] {
        assert!(dest.path().join("bin").join(p).is_file(), "{p} installed");
    }
}
