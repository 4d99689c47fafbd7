//! Sending a wake signal to another PC (the seed's AUTO_WAKE_DAEMON interface).

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use trinity_core::fsio::{self, SaveError};
use trinity_core::schema::{Fleet, WakeSignal};
use trinity_core::{HandoffId, PcId, SignalId, Tree};

/// Why a signal could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// `fleet.toml` is missing or invalid.
    #[error("cannot read the fleet: {0}")]
    Fleet(#[from] fsio::LoadError),
    /// The addressee is not in the fleet, or is this PC.
    #[error("{0}")]
    Addressee(String),
    /// The signal is invalid (task token, message length, …) or could not be written.
    #[error(transparent)]
    Save(#[from] SaveError),
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The PC to wake.
    pub to: PcId,
    /// A short token: `credit_handoff`, `reactivation`, …
    pub task: String,
    /// Free text for people; never executed.
    pub message: String,
    /// The handoff to accept, if any.
    pub handoff: Option<HandoffId>,
    /// How long the signal stays valid.
    pub expires_in: Option<Duration>,
}

/// Writes `wake/{to}/{id}.json` and returns its path.
pub fn send(
    tree: &Tree,
    from: &PcId,
    out: &Outgoing,
    now: DateTime<Utc>,
) -> Result<PathBuf, SendError> {
    let fleet = fsio::load::<Fleet>(&tree.fleet_file())?.value;
    if !fleet.contains(&out.to) {
        return Err(SendError::Addressee(format!(
            "{} is not a member of the fleet ({})",
            out.to,
            fleet.pcs_joined()
        )));
    }
    if &out.to == from {
        return Err(SendError::Addressee(format!(
            "{from} cannot send a wake signal to itself"
        )));
    }
    let signal = WakeSignal {
        format_version: 1,
        id: SignalId::generate(from, now, &out.task),
        from_pc: from.clone(),
        to_pc: out.to.clone(),
        timestamp: now,
        task: out.task.clone(),
        message: out.message.clone(),
        handoff: out.handoff.clone(),
        expires_at: out
            .expires_in
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| now + d),
        epoch: None,
        leader_epoch: None,
    };
    let path = tree.wake_file(&out.to, &signal.id);
    fsio::create(&path, &signal)?;
    Ok(path)
}
