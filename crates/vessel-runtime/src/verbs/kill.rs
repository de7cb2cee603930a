//! `kill`: send a signal to the container's init (runc kill.go).

use std::time::Duration;

use vessel_protocol::Code;

use crate::host::state::{ContainerRecord, StateError, StateStore, Status, MONITOR_SOCKET};
use crate::monitor::control::{self, ControlError, ControlRequest};

/// Errors of [`kill`].
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    /// Unknown ID, invalid ID, or store failure.
    #[error(transparent)]
    Store(#[from] StateError),
    /// The init is gone (runc's text; containerd matches it).
    #[error("container not running")]
    SignalStopped,
    /// The monitor refused or failed to deliver the signal.
    #[error("send signal {signal}")]
    SendSignal {
        /// The signal number.
        signal: i32,
        /// The cause.
        #[source]
        source: ControlError,
    },
}

impl KillError {
    /// The kind of failure the monitor reported, for example the guest agent's `NotFound`
    /// ([`ControlError::code`]); `None` for the other errors.
    pub fn code(&self) -> Option<Code> {
        match self {
            KillError::SendSignal { source, .. } => source.code(),
            _ => None,
        }
    }
}

/// Sends `signal` to container `id`'s init, or to all its processes with `all`. With `all`, a
/// stopped container is not an error (runc swallows `container not running` there).
pub fn kill(store: &StateStore, id: &str, signal: i32, all: bool) -> Result<(), KillError> {
    let record = store.load(id)?;
    let stopped = || {
        if all {
            Ok(())
        } else {
            Err(KillError::SignalStopped)
        }
    };
    if record.status() == Status::Stopped {
        return stopped();
    }
    let socket = store.container_dir(id)?.join(MONITOR_SOCKET);
    match control::call(&socket, &ControlRequest::Signal { signal, all }) {
        Ok(()) => Ok(()),
        // The monitor exited between the status check and the call, or is exiting under it (the
        // guest ended: the agent's connection broke, or the monitor's did): the container is
        // stopped, as a `kill` racing the init's exit finds it under runc. Not when the agent
        // itself answered (an error with a code).
        Err(source) if source.code().is_none() && ends_soon(&record) => {
            log::debug!(
                "kill: the monitor ended during the call: {}",
                vessel_error::chain(&source)
            );
            stopped()
        }
        Err(source) => Err(KillError::SendSignal { signal, source }),
    }
}

/// How long a failed call waits for the monitor to be gone before its error is reported.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Whether the container's monitor is gone, or goes within [`EXIT_GRACE`].
fn ends_soon(record: &ContainerRecord) -> bool {
    record.wait_monitor_gone(EXIT_GRACE, Duration::from_millis(20))
}
