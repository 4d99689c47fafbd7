//! The credit monitor: records API call outcomes, evaluates the exhaustion rules of
//! [`trinity_core::credit`], keeps `credit/{PC}.json` current, and hands off when the PC is
//! out of credit — exactly once per exhaustion.
//!
//! * [`Monitor::record`] is what `credit-monitor --record-…` runs: append the event, evaluate at
//!   once, act. The whole step holds `local/credit/credit.lock`, so twenty recorders and the
//!   daemon seeing the same exhaustion trigger one handoff between them.
//! * [`state`] holds what both use: the trigger state in `local/credit/state.json`, the
//!   handoff being written, what a step decided, the errors.
//! * [`handoff`] writes the handoff, the wake signal, the heartbeat and the instance state;
//!   its progress is persisted in `local/credit/state.json` before the first file is written,
//!   so a crash in the middle is finished on the next run, never repeated.
//! * [`transcripts`] turns Claude Code's transcript lines into events.
//! * [`daemon::run`] is the long-running loop.

pub mod claude_output;
pub mod daemon;
pub mod handoff;
pub mod monitor;
pub mod program;
pub mod state;
pub mod transcripts;

pub use monitor::{Monitor, StepReport};
pub use state::{Action, MonitorError, TriggerState};
