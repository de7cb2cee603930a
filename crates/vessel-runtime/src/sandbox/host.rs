//! **Test double**: a sandbox that runs `process.args` directly on the host, with no VM, no
//! namespaces and no isolation, so the lifecycle (monitor, pid-file, exit codes, state) can be
//! tested on a machine whose `/dev/kvm` cannot boot a guest.
//!
//! Selected only by `VESSEL_TEST_SANDBOX=host` (see [`super::select`]); never the default. The
//! process runs on the host's root with `process.cwd`, `process.env` and `process.args`; the
//! bundle's rootfs, user, mounts and resources are ignored. Like runc's `runc init`, the child is
//! forked at create and blocks on a pipe until `start`; it dies with the monitor
//! (`PR_SET_PDEATHSIG`), so killing the monitor leaves nothing running.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::{Sandbox, SandboxError, WorkloadExit, WorkloadIo};
use crate::host::bundle::Bundle;

/// `PATH` used when `process.env` has none (runc's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The host test double; see the module documentation.
#[derive(Debug, Default)]
pub struct HostSandbox {
    /// PID of the workload once forked, 0 before.
    child: AtomicI32,
    /// Write end of the pipe the workload waits on until `start`.
    start_pipe: Mutex<Option<OwnedFd>>,
}

impl HostSandbox {
    /// A sandbox with no container yet.
    pub fn new() -> HostSandbox {
        HostSandbox::default()
    }

    fn child(&self) -> Result<Pid, SandboxError> {
        match self.child.load(Ordering::SeqCst) {
            0 => Err(SandboxError::InvalidState("no container has been created")),
            pid => Ok(Pid::from_raw(pid)),
        }
    }

    fn send(&self, signal: Option<Signal>, group: bool) -> Result<(), SandboxError> {
        let pid = self.child()?;
        let res = if group {
            killpg(pid, signal)
        } else {
            kill(pid, signal)
        };
        res.map_err(|source| SandboxError::Sys {
            op: "signal the workload",
            source,
        })
    }
}

/// Finds `program` as `execvp` would, in `path` (a `PATH` value).
fn resolve(program: &str, path: &str) -> Option<PathBuf> {
    let executable = |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok();
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file() && executable(p))
}

fn cstring(bytes: &[u8]) -> Result<CString, SandboxError> {
    CString::new(bytes).map_err(|_| SandboxError::Sys {
        op: "convert an argument with a NUL byte",
        source: Errno::EINVAL,
    })
}

impl Sandbox for HostSandbox {
    fn kind(&self) -> &'static str {
        "host"
    }

    fn boot(&self) -> Result<(), SandboxError> {
        Ok(())
    }

    fn create_container(
        &self,
        _id: &str,
        bundle: &Bundle,
        io: WorkloadIo,
    ) -> Result<(), SandboxError> {
        let WorkloadIo::Stdio(stdio) = io else {
            return Err(SandboxError::Unsupported("process.terminal", "host"));
        };
        let process = bundle
            .spec
            .process()
            .as_ref()
            .ok_or(SandboxError::InvalidState("bundle has no process"))?;
        let args = process.args().clone().unwrap_or_default();
        let env = process.env().clone().unwrap_or_default();
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        let program = args.first().cloned().unwrap_or_default();
        let exe = resolve(&program, path).ok_or(SandboxError::FindExecutable(program))?;
        let exe = cstring(exe.as_os_str().as_bytes())?;
        let argv = args
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = env
            .iter()
            .map(|e| cstring(e.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let cwd = cstring(process.cwd().as_os_str().as_bytes())?;
        let (start_r, start_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| {
                SandboxError::Sys {
                    op: "create the start pipe",
                    source,
                }
            })?;
        let parent = nix::unistd::getpid();
        // SAFETY: the monitor calls `create_container` before it starts any other thread, so the
        // child is a copy of a single-threaded process and may run ordinary code until `execve`.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and no pointers.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                if nix::unistd::getppid() != parent {
                    std::process::exit(1);
                }
                // The monitor blocks the signals it forwards; the workload must not inherit that.
                let _ = nix::sys::signal::SigSet::all().thread_unblock();
                let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
                for (fd, target) in [(&stdio.stdin, 0), (&stdio.stdout, 1), (&stdio.stderr, 2)] {
                    if nix::unistd::dup2(fd.as_raw_fd(), target).is_err() {
                        std::process::exit(1);
                    }
                }
                drop(start_w);
                let mut byte = [0u8; 1];
                loop {
                    match nix::unistd::read(start_r.as_raw_fd(), &mut byte) {
                        Ok(1) => break,
                        Err(Errno::EINTR) => continue,
                        // EOF: the monitor went away without starting us.
                        _ => std::process::exit(1),
                    }
                }
                if nix::unistd::chdir(cwd.as_c_str()).is_err() {
                    std::process::exit(127);
                }
                let _ = nix::unistd::execve(&exe, &argv, &envp);
                std::process::exit(127);
            }
            Ok(ForkResult::Parent { child }) => {
                self.child.store(child.as_raw(), Ordering::SeqCst);
                *self.start_pipe.lock().expect("start pipe lock") = Some(start_w);
                Ok(())
            }
            Err(source) => Err(SandboxError::Sys {
                op: "fork the workload",
                source,
            }),
        }
    }

    fn start(&self) -> Result<(), SandboxError> {
        let pipe = self
            .start_pipe
            .lock()
            .expect("start pipe lock")
            .take()
            .ok_or(SandboxError::InvalidState(
                "the container was already started",
            ))?;
        nix::unistd::write(&pipe, &[1]).map_err(|source| SandboxError::Sys {
            op: "release the workload",
            source,
        })?;
        Ok(())
    }

    fn signal(&self, signal: i32, all: bool) -> Result<(), SandboxError> {
        let sig = match signal {
            0 => None,
            n => Some(Signal::try_from(n).map_err(|source| SandboxError::Sys {
                op: "convert the signal number",
                source,
            })?),
        };
        self.send(sig, all)
    }

    fn wait(&self) -> Result<WorkloadExit, SandboxError> {
        let pid = self.child()?;
        loop {
            match waitpid(pid, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(WorkloadExit::Exited(code)),
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    return Ok(WorkloadExit::Signaled(sig as i32))
                }
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(source) => {
                    return Err(SandboxError::Sys {
                        op: "wait for the workload",
                        source,
                    })
                }
            }
        }
    }

    fn pause(&self) -> Result<(), SandboxError> {
        self.send(Some(Signal::SIGSTOP), true)
    }

    fn resume(&self) -> Result<(), SandboxError> {
        self.send(Some(Signal::SIGCONT), true)
    }

    fn resize_terminal(&self, _rows: u16, _cols: u16) -> Result<(), SandboxError> {
        Err(SandboxError::Unsupported("process.terminal", "host"))
    }

    fn shutdown(&self) -> Result<(), SandboxError> {
        match self.send(Some(Signal::SIGKILL), true) {
            Err(SandboxError::Sys {
                source: Errno::ESRCH,
                ..
            }) => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_execvp() {
        assert_eq!(
            resolve("sh", "/nonexistent:/bin"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(resolve("/bin/sh", ""), Some(PathBuf::from("/bin/sh")));
        assert_eq!(resolve("no-such-program-xyz", DEFAULT_PATH), None);
        assert_eq!(resolve("/etc/passwd", ""), None);
    }
}
