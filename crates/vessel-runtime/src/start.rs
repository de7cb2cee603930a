//! `start`: release a created container through its monitor (runc start.go).

use crate::control::{self, ControlError, ControlRequest};
use crate::state::{StateError, StateStore, Status, MONITOR_SOCKET};

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
}

/// Starts container `id`: only from `created`; records `running`.
pub fn start(store: &StateStore, id: &str) -> Result<(), StartError> {
    let _lock = store.lock(id)?;
    let mut record = store.load(id)?;
    match record.status() {
        Status::Created => {}
        Status::Stopped => return Err(StartError::StartStopped),
        Status::Running => return Err(StartError::StartRunning),
        other => return Err(StartError::StartInState(other)),
    }
    let socket = store.container_dir(id)?.join(MONITOR_SOCKET);
    control::call(&socket, &ControlRequest::Start).map_err(StartError::ReleaseWorkload)?;
    record.status = Status::Running;
    store.save(&record)?;
    Ok(())
}
