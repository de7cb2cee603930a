//! `delete`: runc's rules exactly (runc delete.go, man/runc-delete.8.md).
//!
//! - stopped: remove the state directory;
//! - created: SIGKILL and remove, no `--force` needed;
//! - running or paused: refused without `--force`;
//! - `--force`: SIGKILL, probe every 100 ms up to 100 times, then remove, or fail with
//!   `container init still running`;
//! - unknown ID: a leftover `<root>/<id>` is removed anyway; exit 0 with `--force`;
//! - a container whose `create` still runs its create hooks does not exist yet (runc has no
//!   state.json then): `container does not exist`, exit 0 with `--force`, and the create goes
//!   on untouched; the record of a `create` killed outright during the guest's boot or its
//!   hooks (status `creating`, nobody holding the lock) is a leftover: its monitor is killed,
//!   its network redirects, pod entries, cgroup and directory removed, no hooks run, and it is
//!   reported as not existing.
//!
//! Once the container's resources are gone, its `poststop` hooks run with status `stopped`;
//! a failing one is logged as a warning and the others still run (spec runtime.md; runc logs
//! the error and `delete` still succeeds).

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::host::hooks::{self, HookKind, HookState};
use crate::host::procfs;
use crate::host::state::{ContainerRecord, StateError, StateStore, Status};

/// Errors of [`delete`].
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// Unknown ID, invalid ID, or store failure.
    #[error(transparent)]
    Store(#[from] StateError),
    /// Running or paused without `--force` (runc's text).
    #[error("cannot delete container {id} that is not stopped: {status}")]
    DeleteLive {
        /// Container ID.
        id: String,
        /// Its status.
        status: Status,
    },
    /// The container's host cgroup could not be removed.
    #[error(transparent)]
    RemoveCgroup(#[from] crate::host::cgroup::CgroupError),
    /// The monitor survived SIGKILL for 10 s (runc's text).
    #[error("container init still running")]
    KillInit,
}

/// How often, and how many times, a killed init is probed (runc delete.go `killContainer`).
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
const PROBE_COUNT: u32 = 100;

/// Deletes container `id` following runc's rules (module documentation).
pub fn delete(store: &StateStore, id: &str, force: bool) -> Result<(), DeleteError> {
    let _lock = match store.lock(id) {
        Ok(lock) => Some(lock),
        Err(StateError::FindContainer) if force => return Ok(()),
        Err(StateError::FindContainer) => return Err(StateError::FindContainer.into()),
        Err(e) => return Err(e.into()),
    };
    let missing = || {
        if force {
            Ok(())
        } else {
            Err(StateError::FindContainer.into())
        }
    };
    let record = match store.load_any(id) {
        Ok(r) if r.status == Status::Creating => {
            // We hold the lock, so the create that recorded this is gone (killed outright
            // during the guest's boot or its hooks): the container never existed, but its
            // monitor may still run.
            kill_monitor(&r)?;
            remove_network_leftovers(store, id);
            if let Some(sandbox) = &r.pod {
                crate::sandbox::pod::release(store, sandbox, id);
            }
            if let Some(cgroup) = &r.cgroup {
                crate::host::cgroup::remove(cgroup)?;
            }
            store.remove(id)?;
            return missing();
        }
        Ok(r) => r,
        Err(StateError::FindContainer) => {
            // An aborted create can leave a directory without state.json: remove it anyway,
            // and the host cgroup it had made, if it had named one (killed between making the
            // cgroup and recording its monitor; a monitor still in it is killed).
            if let Some(cgroup) = made_cgroup(store, id) {
                crate::host::cgroup::remove(&cgroup)?;
            }
            store.remove(id)?;
            return missing();
        }
        Err(e) => return Err(e.into()),
    };
    let status = record.status();
    match status {
        Status::Stopped if !force => {}
        Status::Created => kill_monitor(&record)?,
        _ if force => kill_monitor(&record)?,
        _ => {
            return Err(DeleteError::DeleteLive {
                id: id.to_owned(),
                status,
            })
        }
    }
    // The monitor is gone: the redirects it added in a namespace someone else keeps (a monitor
    // killed before its own clean-up), its cgroup (children first), then the state directory.
    remove_network_leftovers(store, id);
    // A member of another container's pod: out of that VM's guest and share.
    if let Some(sandbox) = &record.pod {
        crate::sandbox::pod::release(store, sandbox, id);
    }
    if let Some(cgroup) = &record.cgroup {
        crate::host::cgroup::remove(cgroup)?;
    }
    store.remove(id)?;
    let state = HookState::of(&record, "stopped");
    hooks::run_warn(HookKind::Poststop, record.hooks.as_ref(), &state, None);
    Ok(())
}

/// The host cgroup an aborted create named in the container's directory
/// ([`crate::host::state::CGROUP_FILE`]), if any.
fn made_cgroup(store: &StateStore, id: &str) -> Option<crate::host::cgroup::CgroupRecord> {
    let path = store
        .container_dir(id)
        .ok()?
        .join(crate::host::state::CGROUP_FILE);
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Takes off the tc redirects recorded in the state directory ([`crate::host::net::WIRED_FILE`])
/// if the monitor left them; failures are logged: the namespace may be gone.
fn remove_network_leftovers(store: &StateStore, id: &str) {
    let Ok(dir) = store.container_dir(id) else {
        return;
    };
    let Ok(bytes) = std::fs::read(dir.join(crate::host::net::WIRED_FILE)) else {
        return;
    };
    match serde_json::from_slice::<crate::host::net::Leftovers>(&bytes) {
        Ok(left) => {
            if let Err(e) = left.remove() {
                log::warn!(
                    "container {id}: remove the network redirects in {}: {}",
                    left.netns.display(),
                    vessel_error::chain(&e)
                );
            }
        }
        Err(e) => log::warn!(
            "container {id}: unreadable {}: {e}",
            crate::host::net::WIRED_FILE
        ),
    }
}

/// SIGKILLs the monitor (the VM dies with it) and waits until it is gone or a zombie.
pub(crate) fn kill_monitor(record: &ContainerRecord) -> Result<(), DeleteError> {
    let alive = || procfs::is_alive(record.monitor_pid, record.monitor_start_time);
    if !alive() {
        return Ok(());
    }
    let _ = kill(Pid::from_raw(record.monitor_pid), Signal::SIGKILL);
    if record.wait_monitor_gone(PROBE_INTERVAL * PROBE_COUNT, PROBE_INTERVAL) {
        Ok(())
    } else {
        Err(DeleteError::KillInit)
    }
}
