//! Trinity's shared library.
//!
//! The only crate that knows the `.trinity/` tree: its file formats ([`schema`]), its paths and
//! their classes ([`layout`]), the ids that appear in file names ([`ids`]), how files are written
//! and read ([`fsio`]), and the pure decision logic the daemons share ([`state`], [`credit`], [`rotation`]). It also holds
//! configuration ([`config`]), logging ([`logging`]) and the clock ([`clock`]) so that every
//! binary behaves alike.
//!
//! `schema`, `layout`, `ids` and `state` read no environment and print nothing.

pub mod clock;
pub mod code;
pub mod config;
pub mod coordination;
pub mod credit;
pub mod daemon;
pub mod failpoint;
pub mod fsio;
pub mod gitcmd;
pub mod ids;
pub mod layout;
pub mod local;
pub mod logging;
pub mod pcfiles;
pub mod program;
pub mod queue;
pub mod rotation;
pub mod schema;
pub mod seal;
pub mod state;
pub mod syncstate;
pub mod trust;
pub mod validate;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use ids::{DaemonId, DaemonName, HandoffId, IdError, PcId, RecordId, SignalId, TaskId};
pub use layout::{FileKind, PathClass, Tree};
pub use state::InstanceState;

/// trinity's version, as written into heartbeats.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
