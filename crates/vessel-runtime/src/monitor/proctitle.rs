//! The monitor's name in `ps`, `top` and `pgrep`: the monitor is forked from `vessel create`
//! (or `run`) without an `exec`, so it would otherwise show that command line for the whole life
//! of the container.
//!
//! - The command name (`/proc/<pid>/comm`, `ps -e`, `top`) becomes `vessel:<id>`, cut to the
//!   kernel's 15 bytes (`TASK_COMM_LEN`), with `prctl(PR_SET_NAME)`.
//! - The command line (`/proc/<pid>/cmdline`, `ps -f`, `pgrep -f`) becomes
//!   `vessel-monitor <id>`: a new argument block, pointed to with `prctl(PR_SET_MM_ARG_START /
//!   PR_SET_MM_ARG_END)`, which needs `CAP_SYS_RESOURCE` (proc(5), prctl(2)). Without it (an
//!   unprivileged caller) the command line stays as it was; that is logged at debug level and is
//!   not an error.

use std::ffi::CString;

/// Errors of [`set`].
#[derive(Debug, thiserror::Error)]
pub enum ProctitleError {
    /// `PR_SET_NAME` failed.
    #[error("set the command name to {name:?}")]
    SetName {
        /// The name asked for.
        name: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// `PR_SET_MM_ARG_START`/`PR_SET_MM_ARG_END` failed (`EPERM` without `CAP_SYS_RESOURCE`).
    #[error("point the command line at {cmdline:?}")]
    SetCmdline {
        /// The command line asked for, arguments separated by spaces.
        cmdline: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
}

/// The kernel's limit on a command name, without its NUL (`TASK_COMM_LEN` - 1).
const COMM_MAX: usize = 15;

/// The command name of container `id`'s monitor: `vessel:<id>`, cut to [`COMM_MAX`] bytes
/// (container IDs are ASCII: `id::validate`).
pub fn monitor_comm(id: &str) -> String {
    let mut name = format!("vessel:{id}");
    let mut end = name.len().min(COMM_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

/// The command line of container `id`'s monitor: `vessel-monitor`, then the ID.
pub fn monitor_args(id: &str) -> [String; 2] {
    ["vessel-monitor".to_owned(), id.to_owned()]
}

/// Names the calling process after container `id`'s monitor: [`monitor_comm`] as its command
/// name and [`monitor_args`] as its command line. Call it from the single-threaded, freshly
/// forked monitor (the command name is per thread; threads started later inherit it).
///
/// # Errors
/// [`ProctitleError::SetName`], or [`ProctitleError::SetCmdline`] (the command name is set by
/// then) when the process lacks `CAP_SYS_RESOURCE`.
pub fn set(id: &str) -> Result<(), ProctitleError> {
    let comm = monitor_comm(id);
    let name = CString::new(comm.clone()).map_err(|_| ProctitleError::SetName {
        name: comm.clone(),
        source: nix::Error::EINVAL,
    })?;
    nix::sys::prctl::set_name(&name)
        .map_err(|source| ProctitleError::SetName { name: comm, source })?;
    let args = monitor_args(id);
    set_cmdline(&args).map_err(|source| ProctitleError::SetCmdline {
        cmdline: args.join(" "),
        source,
    })
}

/// Points the kernel's argument block of this process at a new, never freed buffer holding
/// `args`, each followed by a NUL (the layout `/proc/<pid>/cmdline` reads).
fn set_cmdline(args: &[String]) -> Result<(), nix::Error> {
    let mut block = Vec::new();
    for arg in args {
        if arg.as_bytes().contains(&0) {
            return Err(nix::Error::EINVAL);
        }
        block.extend_from_slice(arg.as_bytes());
        block.push(0);
    }
    // Leaked: the kernel keeps reading it for as long as the process lives.
    let block: &'static [u8] = Box::leak(block.into_boxed_slice());
    let start = block.as_ptr() as libc::c_ulong;
    let end = start + block.len() as libc::c_ulong;
    // The kernel keeps arg_start <= arg_end after each call, so the order depends on where the
    // new block lies relative to the old one (usually below it: the heap is below the stack).
    set_mm(libc::PR_SET_MM_ARG_START, start)
        .and_then(|()| set_mm(libc::PR_SET_MM_ARG_END, end))
        .or_else(|_| {
            set_mm(libc::PR_SET_MM_ARG_END, end)?;
            set_mm(libc::PR_SET_MM_ARG_START, start)
        })
}

/// `prctl(PR_SET_MM, option, value, 0, 0)`.
fn set_mm(option: libc::c_int, value: libc::c_ulong) -> Result<(), nix::Error> {
    // SAFETY: PR_SET_MM with PR_SET_MM_ARG_START/END only records `value` as an address in this
    // process's mm (the kernel checks it lies in a mapping) and dereferences nothing here; the
    // addresses passed point into a leaked buffer that stays valid for the process's lifetime,
    // so later reads of /proc/<pid>/cmdline see initialised memory.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            option as libc::c_ulong,
            value,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(nix::Error::last())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_is_cut_to_the_kernel_limit() {
        assert_eq!(monitor_comm("c1"), "vessel:c1");
        assert_eq!(monitor_comm("abcdefgh"), "vessel:abcdefgh");
        assert_eq!(
            monitor_comm("3f2a9c0d1e2b4a5c6d7e8f90a1b2c3d4"),
            "vessel:3f2a9c0d"
        );
        assert_eq!(monitor_args("c1"), ["vessel-monitor", "c1"]);
    }
}
