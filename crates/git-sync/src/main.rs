//! `git-sync`: keeps this PC's `.trinity/` tree in step with the fleet through git.

fn main() -> std::process::ExitCode {
    trinity_runtime::main::<git_sync::program::GitSync>()
}
