//! `pause` and `resume` (runc pause.go; libcontainer container_linux.go `Pause`/`Resume`).

use vessel_protocol::Code;

use crate::host::state::{StateError, StateStore, Status, MONITOR_SOCKET};
use crate::monitor::control::{self, ControlError, ControlRequest};

/// Errors of [`pause`] and [`resume`]; the state texts are runc's.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    /// Unknown ID, invalid ID, or store failure.
    #[error(transparent)]
    Store(#[from] StateError),
    /// `pause` outside `running`/`created`.
    #[error("container not running")]
    PauseNotRunning,
    /// `resume` outside `paused`.
    #[error("container not paused")]
    ResumeNotPaused,
    /// The monitor refused or failed.
    #[error("{op} container")]
    Freeze {
        /// `pause` or `resume`.
        op: &'static str,
        /// The cause.
        #[source]
        source: ControlError,
    },
}

impl PauseError {
    /// The kind of failure the monitor reported, for example the guest agent's `NotFound`
    /// ([`ControlError::code`]); `None` for the other errors.
    pub fn code(&self) -> Option<Code> {
        match self {
            PauseError::Freeze { source, .. } => source.code(),
            _ => None,
        }
    }
}

/// Freezes container `id` (from `running` or `created`); `state` then reports `paused`.
pub fn pause(store: &StateStore, id: &str) -> Result<(), PauseError> {
    let _lock = store.lock(id)?;
    let mut record = store.load(id)?;
    let from = record.status();
    if !matches!(from, Status::Running | Status::Created) {
        return Err(PauseError::PauseNotRunning);
    }
    let socket = store.container_dir(id)?.join(MONITOR_SOCKET);
    control::call(&socket, &ControlRequest::Pause).map_err(|source| PauseError::Freeze {
        op: "pause",
        source,
    })?;
    record.status = Status::Paused;
    record.paused_from = Some(from);
    Ok(store.save(&record)?)
}

/// Thaws container `id` (only from `paused`); `state` then reports the status it was paused
/// from: `running`, or `created` for a container paused before `start` (which `start` then
/// runs, as runc's does).
pub fn resume(store: &StateStore, id: &str) -> Result<(), PauseError> {
    let _lock = store.lock(id)?;
    let mut record = store.load(id)?;
    if record.status() != Status::Paused {
        return Err(PauseError::ResumeNotPaused);
    }
    let socket = store.container_dir(id)?.join(MONITOR_SOCKET);
    control::call(&socket, &ControlRequest::Resume).map_err(|source| PauseError::Freeze {
        op: "resume",
        source,
    })?;
    record.status = record.paused_from.take().unwrap_or(Status::Running);
    Ok(store.save(&record)?)
}
