//! The test bed's servers serve git for real: a clone, a push and a fetch over ssh and over
//! HTTPS, through the proxy, with the client's own configuration only.
#![cfg(unix)]

use std::path::Path;
use std::process::Command;

use trinity_netbed::{NetRemote, Transport};

fn git(dir: &Path, home: &Path, bed: &NetRemote, args: &[&str]) -> std::process::Output {
    let mut c = Command::new("git");
    for (k, _) in std::env::vars() {
        if k.starts_with("GIT_") {
            c.env_remove(k);
        }
    }
    c.current_dir(dir)
        .env("HOME", home)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .envs(bed.env().iter().map(|(k, v)| (k, v)))
        .args(args)
        .output()
        .expect("git")
}

fn ok(o: std::process::Output) -> String {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Whether the transport's server can run here; CI requires it (`TRINITY_NETBED_REQUIRED`).
pub fn can_run(t: Transport) -> bool {
    if trinity_netbed::available(t) {
        return true;
    }
    assert!(
        std::env::var_os("TRINITY_NETBED_REQUIRED").is_none(),
        "the {t} server is not installed here (sshd: apt-get install openssh-server)"
    );
    eprintln!("SKIPPED: no {t} server on this machine (sshd: apt-get install openssh-server)");
    false
}

fn round_trip(t: Transport) {
    if !can_run(t) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp");
    let root = dir.path();
    let home = root.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let repo = root.join("state.git");
    assert!(
        Command::new("git")
            .args(["init", "-q", "--bare", "-b", "trinity"])
            .arg(&repo)
            .status()
            .expect("git init")
            .success()
    );
    let bed = NetRemote::start(t, &repo, &root.join("bed")).expect("test bed");
    ok(git(root, &home, &bed, &["clone", "-q", bed.url(), "a"]));
    let a = root.join("a");
    std::fs::write(a.join("f.txt"), "one").expect("write");
    ok(git(&a, &home, &bed, &["add", "f.txt"]));
    ok(git(&a, &home, &bed, &["commit", "-q", "-m", "one"]));
    ok(git(
        &a,
        &home,
        &bed,
        &["push", "-q", "origin", "HEAD:trinity"],
    ));
    ok(git(root, &home, &bed, &["clone", "-q", bed.url(), "b"]));
    assert_eq!(
        std::fs::read_to_string(root.join("b").join("f.txt")).expect("cloned"),
        "one"
    );
    let listed = ok(git(root, &home, &bed, &["ls-remote", bed.url()]));
    assert!(listed.contains("refs/heads/trinity"), "{listed}");
    let stats = bed.proxy().stats();
    assert!(stats.connections >= 4, "{stats:?}");
    assert!(stats.bytes_up > 0 && stats.bytes_down > 0, "{stats:?}");
    if t == Transport::Https {
        assert!(bed.http_requests() >= 4);
    }

    // A cut link fails at once; healed, the same clone works again.
    bed.proxy().cut(trinity_netbed::Cut::Refuse);
    let o = git(&a, &home, &bed, &["fetch", "-q", "origin"]);
    assert!(!o.status.success(), "fetch through a cut link");
    bed.proxy().heal();
    ok(git(&a, &home, &bed, &["fetch", "-q", "origin"]));
}

#[test]
fn git_over_ssh_through_the_proxy() {
    round_trip(Transport::Ssh);
}

#[test]
fn git_over_https_through_the_proxy() {
    round_trip(Transport::Https);
}
