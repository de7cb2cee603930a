//! `start`: release a created container through its monitor (runc start.go), with the
//! `startContainer` hooks before and the `poststart` hooks after (see [`crate::host::hooks`]).

use vessel_protocol::Code;

use crate::host::hooks::{self, HookKind, HookState, HooksError};
use crate::host::state::{StateError, StateStore, Status, MONITOR_SOCKET};
use crate::monitor::control::{self, ControlError, ControlRequest};

/// Errors of [`start`]; the state texts are runc's.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Unknown ID, invalid ID, or store failure.
    #[error(transparent)]
    Store(#[from] StateError),
    /// The container has stopped.
    #[error("cannot start a container that has stopped")]
    StartStopped,
    /// The container is running.
    #[error("cannot start an already running container")]
    StartRunning,
    /// The container is in another state (paused).
    #[error("cannot start a container in the {0} state")]
    StartInState(Status),
    /// The monitor refused or could not be reached.
    #[error("start container")]
    ReleaseWorkload(#[source] ControlError),
    /// A `startContainer` or `poststart` hook failed; the container was stopped.
    #[error(transparent)]
    RunHook(#[from] HooksError),
}

impl StartError {
    /// The kind of failure the monitor reported, for example the guest agent's `NotFound`
    /// ([`ControlError::code`]); `None` for the other errors.
    pub fn code(&self) -> Option<Code> {
        match self {
            StartError::ReleaseWorkload(e) => e.code(),
            _ => None,
        }
    }
}

/// Starts container `id`: only from `created`; records `running`.
///
/// Hooks: `startContainer` runs first, with status `created` (runc runs it inside the container
/// just before the user program; Vessel runs it on the host, see docs/runc-compat.md), then the
/// workload is released, and `poststart` runs with status `running`. A failing hook of either
/// kind stops the container (its monitor is SIGKILLed) and fails `start`, as runc does on a
/// failing poststart hook.
pub fn start(store: &StateStore, id: &str) -> Result<(), StartError> {
    let _lock = store.lock(id)?;
    let mut record = store.load(id)?;
    match record.status() {
        Status::Created => {}
        Status::Stopped => return Err(StartError::StartStopped),
        Status::Running => return Err(StartError::StartRunning),
        other => return Err(StartError::StartInState(other)),
    }
    let created = record.clone();
    let stop_on_failure = |result: Result<(), HooksError>| {
        result.inspect_err(|_| {
            let _ = crate::verbs::delete::kill_monitor(&created);
        })
    };
    let hooks = created.hooks.as_ref();
    let state = HookState::of(&created, "created");
    stop_on_failure(hooks::run(HookKind::StartContainer, hooks, &state, None))?;
    let socket = store.container_dir(id)?.join(MONITOR_SOCKET);
    control::call(&socket, &ControlRequest::Start).map_err(StartError::ReleaseWorkload)?;
    record.status = Status::Running;
    store.save(&record)?;
    let running = HookState::of(&record, "running");
    stop_on_failure(hooks::run(HookKind::Poststart, hooks, &running, None))?;
    Ok(())
}
