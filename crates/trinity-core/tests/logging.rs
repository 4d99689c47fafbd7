//! `logging::init` end to end: one global subscriber per process, so this file holds one test
//! (nextest and cargo test both run each test file in its own process).

use std::fs;

use trinity_core::DaemonName;
use trinity_core::config::LoggingConfig;
use trinity_core::logging;

#[test]
fn init_writes_the_daemon_log_filtered_and_refuses_a_second_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    let daemon = DaemonName::new("git-sync").expect("valid");
    let cfg = LoggingConfig {
        level: "info".to_owned(),
        max_file_bytes: 4096,
        max_files: 2,
    };

    let bad = logging::init_with_filter(&daemon, &cfg, &logs, Some("git_sync=loud"));
    assert!(
        matches!(bad, Err(logging::LogError::Filter { .. })),
        "{bad:?}"
    );

    let guard = logging::init_with_filter(&daemon, &cfg, &logs, Some("warn")).expect("init");
    assert_eq!(guard.file, logs.join("git-sync.log"));
    tracing::info!("filtered out");
    tracing::warn!(pc = "PC1", "pushed 3 commits");
    for i in 0..200 {
        tracing::warn!(i, "filler line to force a roll-over of the 4 KiB log");
    }
    drop(guard); // flushes the background writer

    let current = fs::read_to_string(logs.join("git-sync.log")).expect("current log");
    let older = fs::read_to_string(logs.join("git-sync.1.log")).expect("rolled log");
    let all = format!("{older}{current}");
    assert!(!all.contains("filtered out"), "info passed a warn filter");
    assert!(
        !logs.join("git-sync.2.log").exists(),
        "max_files = 2 keeps two files"
    );
    assert!(current.len() <= 4096 && older.len() <= 4096);
    assert!(current.contains("filler line"), "{current}");
    assert!(!all.contains('\u{1b}'), "no colour codes in the log file");

    let again = logging::init_with_filter(&daemon, &cfg, &logs, None);
    assert!(
        matches!(again, Err(logging::LogError::AlreadyInitialised)),
        "{again:?}"
    );
}
