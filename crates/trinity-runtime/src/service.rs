//! Running a daemon as a Windows service.
//!
//! Started by the service control manager (`sc create … binPath= "git-sync.exe --service
//! --config …"`), a daemon program calls [`serve`] with the body of its work: the body runs
//! with a shutdown token that the manager's Stop and Shutdown requests cancel, so the daemon
//! finishes its current step and stops cleanly, as it does on Ctrl-C in a console. The exit
//! status goes back to the manager (a failure triggers the recovery actions the orchestrator
//! sets: restart after 5 s). Everywhere else `--service` is refused with a message.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

/// The options every daemon takes (flattened into its command line).
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// The configuration file [default: ./trinity.toml]
    #[arg(long, global = true, env = "TRINITY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Run as a Windows service (the service control manager starts it so; see
    /// deploy/windows/trinity-orchestrator.bat)
    #[arg(long, hide = true)]
    pub service: bool,
}

/// A daemon program's `main`: parses its command line `C` (which flattens [`DaemonArgs`],
/// found by `args`), then runs `run` in the console (no token: Ctrl-C stops it) or, with
/// `--service`, under the Windows service control manager (its Stop request cancels the
/// token). An error is printed as `{program}: error: …` with its causes, and exits 1.
pub fn daemon_main<C, E>(
    program: &'static str,
    args: fn(&C) -> &DaemonArgs,
    run: fn(C, Option<CancellationToken>) -> Result<ExitCode, E>,
) -> ExitCode
where
    C: clap::Parser + Send + 'static,
    E: std::fmt::Display + 'static,
{
    let cli = C::parse();
    let finish = move |result: Result<ExitCode, E>| match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{program}: error: {err:#}");
            ExitCode::FAILURE
        }
    };
    if !args(&cli).service {
        return finish(run(cli, None));
    }
    if serve(
        program,
        Box::new(move |token| finish(run(cli, Some(token))) == ExitCode::SUCCESS),
    ) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The body of a service: runs until the token is cancelled; `true` when it ended well.
pub type Body = Box<dyn FnOnce(CancellationToken) -> bool + Send>;

/// Runs `body` as the Windows service `name`. Returns whether it ended well. Blocks until the
/// service stops.
#[cfg(windows)]
pub fn serve(name: &str, body: Body) -> bool {
    windows::serve(name, body)
}

/// Not on Windows: says so.
#[cfg(not(windows))]
pub fn serve(name: &str, _body: Body) -> bool {
    eprintln!(
        "{name}: --service is for a Windows service started by the service control manager; \
         on Linux use the systemd units (deploy/systemd/trinity.sh) or run {name} without it"
    );
    false
}

#[cfg(windows)]
mod windows {
    use std::sync::{Mutex, PoisonError};
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;
    use windows_service::service::{
        ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus,
        ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
    use windows_service::service_dispatcher;

    use super::Body;

    /// What the service thread runs, handed over from `serve` (the manager calls the entry
    /// point on a thread of its own, without arguments of ours).
    static PENDING: Mutex<Option<(String, Body)>> = Mutex::new(None);
    static OUTCOME: Mutex<Option<bool>> = Mutex::new(None);

    // SAFETY: the macro generates the `extern "system"` entry point the service control
    // manager calls; its only unsafe step is reading the argument vector the manager passes,
    // which windows-service does as the Windows documentation prescribes.
    #[allow(unsafe_code)]
    mod entry {
        windows_service::define_windows_service!(ffi_service_main, service_main);

        fn service_main(_arguments: Vec<std::ffi::OsString>) {
            super::service_main();
        }

        pub(super) fn main() -> extern "system" fn(u32, *mut *mut u16) {
            ffi_service_main
        }
    }

    pub(super) fn serve(name: &str, body: Body) -> bool {
        *PENDING.lock().unwrap_or_else(PoisonError::into_inner) = Some((name.to_owned(), body));
        if let Err(e) = service_dispatcher::start(name, entry::main()) {
            eprintln!(
                "{name}: cannot connect to the service control manager ({e}). --service is only \
                 for a program started as a Windows service (trinity-orchestrator.bat install); \
                 in a console run {name} without it"
            );
            return false;
        }
        OUTCOME
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or(false)
    }

    fn status(state: ServiceState, ok: bool) -> ServiceStatus {
        ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: if state == ServiceState::Running {
                ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
            } else {
                ServiceControlAccept::empty()
            },
            exit_code: ServiceExitCode::Win32(if ok { 0 } else { 1 }),
            checkpoint: 0,
            wait_hint: Duration::from_secs(if state == ServiceState::StopPending {
                30
            } else {
                0
            }),
            process_id: None,
        }
    }

    fn service_main() {
        let Some((name, body)) = PENDING
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let token = CancellationToken::new();
        let stop = token.clone();
        let handler = move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                stop.cancel();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let handle = match service_control_handler::register(&name, handler) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("{name}: cannot register with the service control manager: {e}");
                return;
            }
        };
        let _ = handle.set_service_status(status(ServiceState::Running, true));
        let ok = body(token);
        *OUTCOME.lock().unwrap_or_else(PoisonError::into_inner) = Some(ok);
        let _ = handle.set_service_status(status(ServiceState::Stopped, ok));
    }
}
