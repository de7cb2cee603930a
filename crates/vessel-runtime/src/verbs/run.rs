//! Foreground `run`: create, start, forward signals, wait, and delete unless `--keep` (runc
//! run.go, signals.go, utils_linux.go `runner.run`).

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::AsFd;

use crate::host::bundle::Bundle;
use crate::host::console::{self, ConsoleError, HostConsole};
use crate::host::state::StateStore;
use crate::verbs::create::{self, CreateError, CreateOptions};
use crate::verbs::delete::{self, DeleteError};
use crate::verbs::start::{self, StartError};

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
    /// The caller's terminal could not be used for the container's terminal.
    #[error(transparent)]
    Console(#[from] ConsoleError),
}

impl RunError {
    /// The terminating signal that stopped the create step during its hooks
    /// ([`CreateError::interrupted`]).
    pub fn interrupted(&self) -> Option<Signal> {
        match self {
            RunError::Create(e) => e.interrupted(),
            _ => None,
        }
    }
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
///
/// With `process.terminal` (runc tty.go, signals.go): the caller's terminal ([`HostConsole`])
/// gives the initial size, is raw while the container runs and restored afterwards; stdin and
/// stdout are copied to and from the host pty master, and SIGWINCH resizes the master to the
/// caller's terminal (the monitor passes that on to the guest).
pub fn run(store: &StateStore, opts: &RunOptions) -> Result<i32, RunError> {
    if !opts.no_subreaper {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(RunError::SetSubreaper(nix::Error::last()));
        }
    }
    let id = opts.create.id.clone();
    let mut create_opts = opts.create.clone();
    let mut host = None;
    let terminal = Bundle::load(&create_opts.bundle)
        .map_err(CreateError::from)?
        .terminal();
    // runc checks the terminal settings before it looks for the caller's terminal.
    console::check_terminal(
        create_opts.detach,
        terminal,
        create_opts.console_socket.is_some(),
    )?;
    if terminal {
        let console = HostConsole::find(console::RUN_NEEDS_A_TERMINAL)?;
        create_opts.terminal_size = console.size().ok().filter(|&(r, c)| r > 0 && c > 0);
        host = Some(console);
    }
    let created = create_and_start(store, &create_opts)?;
    // Blocked before any thread exists, so that only the forwarding thread receives them;
    // SIGWINCH is never forwarded, only used to resize a terminal.
    let mut set = crate::host::signal::forwarded(&[Signal::SIGWINCH, Signal::SIGURG]);
    if host.is_some() {
        set.add(Signal::SIGWINCH);
    }
    let _ = set.thread_block();
    let mut output = None;
    let mut master = None;
    if let (Some(console), Some(m)) = (host.as_mut(), created.console) {
        let copied = console.set_raw().and_then(|()| {
            console::copy_foreground(m.try_clone().map_err(ConsoleError::SpawnRelay)?)
        });
        match copied {
            Ok(handle) => output = Some(handle),
            Err(e) => {
                let _ = delete::delete(store, &id, true);
                return Err(e.into());
            }
        }
        master = Some(m);
    }
    let forward_store = store.clone();
    let forward_id = id.clone();
    let resize = master.zip(host.as_ref().and_then(|h| h.fd().try_clone_to_owned().ok()));
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            if sig == Signal::SIGWINCH {
                if let Some((master, host)) = &resize {
                    // Errors are ignored, as runc does: the terminal may be going away.
                    if let Ok(size) = console::window_size(host.as_fd()) {
                        let _ = console::set_window_size(master.as_fd(), size);
                    }
                }
                continue;
            }
            if let Err(e) = crate::verbs::kill::kill(&forward_store, &forward_id, sig as i32, false)
            {
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
    // The monitor held the last copy of the slave: the output ends once it is all copied.
    if let Some(output) = output {
        let _ = output.join();
    }
    drop(host);
    if !opts.keep {
        delete::delete(store, &id, true)?;
    }
    Ok(status)
}
