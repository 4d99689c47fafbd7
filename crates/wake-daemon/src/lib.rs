//! The wake-daemon: receives the wake signals addressed to this PC, accepts the handoffs they
//! point at, claims the work, and launches the agent — exactly once per handoff.
//!
//! * [`receive::Receiver::process`] handles every pending signal, oldest first. Each signal
//!   is validated (schema, addressee, sender, expiry, duplicates) before anything is done.
//! * Accepting a handoff is a journaled sequence of steps ([`journal::Step`]) in
//!   `local/wake/handoffs/{id}.json`: archive, claim, wait for the claims to reach the remote,
//!   instance ACTIVE, credit reset, launch, heartbeat. A crash at any point resumes where it
//!   stopped; the launch is guarded by a launch id the agent carries in its environment, so a
//!   restart finds an agent it already started instead of starting another.
//! * [`agent`] starts the agent from local configuration only, as an argument vector without a
//!   shell, the handoff passed in environment variables.
//! * [`send`] writes a wake signal for another PC (the seed's AUTO_WAKE_DAEMON interface).

pub mod agent;
mod coordinated;
pub mod daemon;
pub mod journal;
pub mod program;
pub mod receive;
pub mod send;

pub use receive::{Receiver, Report, WakeError};
