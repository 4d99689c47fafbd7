//! Read-modify-write of the files a PC owns and several of its daemons update.
//!
//! `heartbeat/{PC}.json` is written by the credit monitor (handoff_initiated, paused), the
//! wake-daemon (handoff_accepted) and every daemon's liveness entry. Each update holds
//! `local/run/heartbeat.lock`, so no daemon overwrites another's change.

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::daemon::FileLock;
use crate::fsio::{self, LoadError, SaveError};
use crate::ids::{DaemonName, PcId};
use crate::layout::Tree;
use crate::schema::{DaemonBeat, Doc, Heartbeat, HeartbeatStatus, InstanceStatus, Schema};

/// Why an owned file could not be updated.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The lock or the write failed.
    #[error(transparent)]
    Io(#[from] fsio::IoError),
    /// The new contents are invalid (a bug in the caller), or the write failed.
    #[error(transparent)]
    Save(#[from] SaveError),
}

/// Loads an owned file; a missing file is `None`, and so is an invalid one (it is quarantined
/// first, so the owner's rewrite never loses it).
fn load_owned<T: Schema>(tree: &Tree, path: &Path, now: DateTime<Utc>) -> Option<Doc<T>> {
    match fsio::load::<T>(path) {
        Ok(doc) => Some(doc),
        Err(e) if e.is_not_found() => None,
        Err(LoadError::Invalid { source, .. }) => {
            tracing::warn!(path = %path.display(), error = %source, "own file is invalid; quarantining it and starting afresh");
            let _ = fsio::quarantine(tree, path, &source.to_string(), now);
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read own file; starting afresh");
            None
        }
    }
}

/// Updates `heartbeat/{pc}.json` under the heartbeat lock: `change` sees the current heartbeat
/// (a fresh `idle` one if there is none) and `timestamp` is set to `now`.
pub fn update_heartbeat(
    tree: &Tree,
    pc: &PcId,
    now: DateTime<Utc>,
    change: impl FnOnce(&mut Heartbeat),
) -> Result<Heartbeat, UpdateError> {
    let _lock = FileLock::acquire(&tree.update_lock_file("heartbeat"))?;
    let path = tree.heartbeat_file(pc);
    let mut doc = load_owned::<Heartbeat>(tree, &path, now)
        .unwrap_or_else(|| Doc::new(Heartbeat::new(pc.clone(), HeartbeatStatus::Idle, now)));
    change(&mut doc.value);
    doc.value.timestamp = now;
    fsio::save(&path, &doc)?;
    Ok(doc.value)
}

/// How often each daemon refreshes its entry in the heartbeat.
pub const BEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Records that `daemon` (started at `started_at`) is alive, in the heartbeat's `daemons` map.
pub fn beat(
    tree: &Tree,
    pc: &PcId,
    daemon: &DaemonName,
    started_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Heartbeat, UpdateError> {
    update_heartbeat(tree, pc, now, |hb| {
        hb.daemons.insert(
            daemon.clone(),
            DaemonBeat {
                pid: std::process::id(),
                started_at,
                updated_at: now,
                version: Some(crate::VERSION.to_owned()),
            },
        );
    })
}

/// Updates `instances/{pc}.json` under the instance lock. `change` sees the current status, if
/// any, and returns the new one (or `None` to leave the file as it is).
pub fn update_instance(
    tree: &Tree,
    pc: &PcId,
    now: DateTime<Utc>,
    change: impl FnOnce(Option<&InstanceStatus>) -> Option<InstanceStatus>,
) -> Result<Option<InstanceStatus>, UpdateError> {
    let _lock = FileLock::acquire(&tree.update_lock_file("instance"))?;
    let path = tree.instance_file(pc);
    let current = load_owned::<InstanceStatus>(tree, &path, now);
    let Some(next) = change(current.as_ref().map(|d| &d.value)) else {
        return Ok(current.map(|d| d.value));
    };
    let doc = match current {
        Some(mut doc) => {
            doc.value = next;
            doc
        }
        None => Doc::new(next),
    };
    fsio::save(&path, &doc)?;
    Ok(Some(doc.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_heartbeat_updates_are_all_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = Tree::new(dir.path());
        let pc = PcId::new("PC1").expect("valid");
        let now: DateTime<Utc> = "2026-11-21T10:00:00Z".parse().expect("valid time");
        std::thread::scope(|s| {
            for i in 0..8 {
                let (tree, pc) = (&tree, &pc);
                s.spawn(move || {
                    let name = DaemonName::new(format!("daemon-{i}")).expect("valid");
                    for _ in 0..10 {
                        beat(tree, pc, &name, now, now).expect("beat");
                    }
                });
            }
        });
        let hb = fsio::load::<Heartbeat>(&tree.heartbeat_file(&pc)).expect("valid heartbeat");
        assert_eq!(hb.value.daemons.len(), 8);
    }

    #[test]
    fn an_invalid_own_file_is_quarantined_not_lost() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = Tree::new(dir.path());
        let pc = PcId::new("PC1").expect("valid");
        let now: DateTime<Utc> = "2026-11-21T10:00:00Z".parse().expect("valid time");
        let path = tree.heartbeat_file(&pc);
        fs_write(&path, b"{ not json");
        let hb = update_heartbeat(&tree, &pc, now, |hb| hb.status = HeartbeatStatus::Active)
            .expect("update");
        assert_eq!(hb.status, HeartbeatStatus::Active);
        let quarantined = std::fs::read_dir(tree.quarantine_dir())
            .expect("quarantine exists")
            .count();
        assert_eq!(quarantined, 2, "the file and its reason note");
    }

    fn fs_write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }
}

/// Why the fleet could not be loaded for a PC.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// `fleet.toml` is missing or invalid.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The PC is not in it.
    #[error("{pc} is not a member of the fleet ({members})")]
    NotMember {
        /// The PC.
        pc: PcId,
        /// The fleet's PCs, for the message.
        members: String,
    },
}

/// `fleet.toml`, checked to have `pc` among its members: what every daemon starts from.
pub fn load_member(tree: &Tree, pc: &PcId) -> Result<crate::schema::Fleet, FleetError> {
    let fleet = fsio::load::<crate::schema::Fleet>(&tree.fleet_file())?.value;
    if !fleet.contains(pc) {
        return Err(FleetError::NotMember {
            pc: pc.clone(),
            members: fleet.pcs_joined(),
        });
    }
    Ok(fleet)
}
