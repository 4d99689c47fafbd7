//! `credit-monitor`: records API call outcomes, detects credit exhaustion, hands off once.

fn main() -> std::process::ExitCode {
    trinity_runtime::main::<credit_monitor::program::CreditMonitor>()
}
