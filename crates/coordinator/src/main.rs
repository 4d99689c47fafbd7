//! `coordinator`: leads the fleet when it holds the lease; follows, ready to take over, when not.

fn main() -> std::process::ExitCode {
    trinity_runtime::main::<coordinator::program::CoordinatorProgram>()
}
