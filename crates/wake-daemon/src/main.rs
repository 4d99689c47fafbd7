//! `wake-daemon`: accepts the handoffs addressed to this PC and starts the agent.

fn main() -> std::process::ExitCode {
    trinity_runtime::main::<wake_daemon::program::WakeDaemon>()
}
