//! Foreground `run`: create, start, forward signals, wait, and delete unless `--keep` (runc
//! run.go, signals.go, utils_linux.go `runner.run`).

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::create::{self, CreateError, CreateOptions};
use crate::delete::{self, DeleteError};
use crate::start::{self, StartError};
use crate::state::StateStore;

/// Errors of [`run`].
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Creating failed.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// Starting failed (the container was destroyed).
    #[error(transparent)]
    Start(#[from] StartError),
    /// Becoming a child subreaper failed.
    #[error("set child subreaper")]
    SetSubreaper(#[source] nix::Error),
    /// Waiting for the monitor failed.
    #[error("wait for container {id}")]
    WaitMonitor {
        /// Container ID.
        id: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// Removing the container afterwards failed.
    #[error(transparent)]
    Delete(#[from] DeleteError),
}

/// `run` options beyond those of `create`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Options of the create step (`detach` false).
    pub create: CreateOptions,
    /// `--keep`: leave the stopped container for `state`/`delete`.
    pub keep: bool,
    /// `--no-subreaper`.
    pub no_subreaper: bool,
}

/// Creates and starts a container (`run -d`, and the first half of a foreground `run`); a
/// container that fails to start is destroyed. Must be called from a single-threaded process.
pub fn create_and_start(
    store: &StateStore,
    opts: &CreateOptions,
) -> Result<create::Created, RunError> {
    let created = create::create(store, opts)?;
    if let Err(e) = start::start(store, &opts.id) {
        let _ = delete::delete(store, &opts.id, true);
        return Err(e.into());
    }
    Ok(created)
}

/// Runs container `opts.create.id` in the foreground and returns its exit status (128+N for
/// signal N). Must be called from a single-threaded process.
pub fn run(store: &StateStore, opts: &RunOptions) -> Result<i32, RunError> {
    if !opts.no_subreaper {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(RunError::SetSubreaper(nix::Error::last()));
        }
    }
    let id = opts.create.id.clone();
    let created = create_and_start(store, &opts.create)?;
    let set = crate::signal::forwarded(&[Signal::SIGWINCH, Signal::SIGURG]);
    let _ = set.thread_block();
    let forward_store = store.clone();
    let forward_id = id.clone();
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            if let Err(e) = crate::kill::kill(&forward_store, &forward_id, sig as i32, false) {
                log::warn!("forward {sig} to container {forward_id}: {e}");
            }
        }
    });
    let status = loop {
        match waitpid(Pid::from_raw(created.pid), None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(source) => return Err(RunError::WaitMonitor { id, source }),
        }
    };
    if !opts.keep {
        delete::delete(store, &id, true)?;
    }
    Ok(status)
}
