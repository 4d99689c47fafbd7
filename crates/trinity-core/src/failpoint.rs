//! Fault injection for crash tests.
//!
//! `TRINITY_FAILPOINT=name` makes the process abort (as a kill would) when it reaches
//! [`hit`]`("name")`. Crash-recovery tests use it to stop a daemon at an exact step; in normal
//! use the variable is unset and `hit` costs one environment lookup.

/// Aborts the process if `TRINITY_FAILPOINT` names this point.
pub fn hit(name: &str) {
    if std::env::var_os("TRINITY_FAILPOINT").is_some_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
