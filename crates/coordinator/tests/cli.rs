//! The `coordinator` program itself: what `--once` says while it waits, and that it gives up.

use std::time::{Duration, Instant};

use trinity_testkit::{TestTree, describe};

const BIN: &str = env!("CARGO_BIN_EXE_coordinator");

#[test]
fn once_without_git_sync_says_what_it_waits_for_and_gives_up_after_the_lease_ttl() {
    // The lease is taken through git, but no git-sync runs to push it.
    let t = TestTree::builder()
        .pc("PC3")
        .config("[sync]\nremote = \"/nowhere/state.git\"\n[coordinator]\nlease_ttl = \"3s\"\n")
        .build();
    let started = Instant::now();
    let o = t.command(BIN).arg("--once").output().expect("coordinator");
    let took = started.elapsed();
    assert!(!o.status.success(), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("waiting for git-sync to push the lease")
            && err.contains("is git-sync running?")
            && err.contains("giving up after 3s"),
        "{}",
        describe(&o)
    );
    assert!(
        err.contains("gave up after 3s waiting for git-sync"),
        "{}",
        describe(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("it has not reached the remote yet"),
        "{}",
        describe(&o)
    );
    // Bounded by the lease's ttl (not the hour it used to be): well under the test deadline.
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn once_without_git_is_done_at_once() {
    // sync.mode = "none": the lease file is final as soon as it is written.
    let t = TestTree::builder().pc("PC3").build();
    let o = t.command(BIN).arg("--once").output().expect("coordinator");
    assert!(o.status.success(), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("leading (epoch 1)"),
        "{}",
        describe(&o)
    );
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("waiting for"),
        "{}",
        describe(&o)
    );
}
