//! git-sync: keeps this PC's `.trinity/` tree in step with the fleet through git.

pub mod daemon;
pub mod link;
pub mod merge;
pub mod message;
pub mod program;
pub mod repo;
pub mod sync;
