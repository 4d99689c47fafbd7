//! The coordinator: one PC of the fleet leads, by a lease taken through git. The leader assigns
//! queued tasks to PCs on standby, verifies finished work and gives the verdict, notices PCs
//! that went silent and gives their work to a live one, and reports on the fleet.
//!
//! Every PC may run it; the others follow, watching the lease, ready to take over. The rules
//! are pure functions in [`trinity_core::coordination`]; this crate gathers their inputs from
//! the tree, acts on their answers, and runs the verification phases.

pub mod cycle;
pub mod daemon;
pub mod leader;
pub mod notifications;
pub mod page;
pub mod program;
pub mod report;
pub mod verify;
pub mod view;

pub use cycle::{Coordinator, CycleReport};
