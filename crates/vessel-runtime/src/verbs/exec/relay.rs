//! The exec relay (module documentation of `exec`): it starts the process in the guest, relays
//! its stdio and the signals it receives, reports the process's status as its own, and forks
//! the guard that kills the guest process if the relay dies first. It also registers itself
//! for `ps`.

use std::io::Write;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::Process;
use vessel_error::chain;
use vessel_protocol::{
    open_stdio, ExecProcess, Request, StdioConfig, StdioHeader, StreamKind, STDIO_PORT,
};

use super::RELAYS_DIR;
use crate::host::console;
use crate::host::state::{StateError, StateStore};
use crate::verbs::guest::{AgentAddress, GuestError};

/// The relay: see the module documentation. Returns its exit status.
pub(super) fn relay_main(
    id: &str,
    process: &Process,
    address: &AgentAddress,
    relays: &Path,
    report: OwnedFd,
    terminal: Option<OwnedFd>,
) -> i32 {
    let mut report = std::fs::File::from(report);
    // Its own session: the caller's terminal signals reach `vessel exec`, which forwards them.
    let _ = nix::unistd::setsid();
    let forwarded = crate::host::signal::forwarded(&[]);
    let _ = forwarded.thread_block();
    let me = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let exec_id = format!("exec-{me}-{nanos}");
    let guard = match spawn_guard(id, &exec_id, address) {
        Ok(g) => g,
        Err(e) => {
            let _ = writeln!(report, "error: start the exec guard: {e}");
            return 255;
        }
    };
    let done = |guard: &OwnedFd| {
        let _ = nix::unistd::write(guard, b"x");
    };
    let started = (|| -> Result<(), GuestError> {
        let mut client = address.client()?;
        client
            .exec(ExecProcess {
                container_id: id.to_owned(),
                exec_id: exec_id.clone(),
                process: process.clone(),
                stdio: StdioConfig::default(),
            })
            .map_err(|e| {
                let op = "exec the process in the guest";
                match crate::sandbox::refusal(op, e) {
                    Ok(reason) => GuestError::StartProcess(reason),
                    Err(source) => GuestError::CallAgent { op, source },
                }
            })?;
        Ok(())
    })();
    if let Err(e) = started {
        done(&guard);
        let _ = writeln!(report, "error: {}", chain(&e));
        return 255;
    }
    let target = Target {
        id,
        exec_id: &exec_id,
        address,
    };
    let status = match terminal {
        Some(slave) => relay_terminal_process(&target, relays, &mut report, forwarded, slave),
        None => relay_process(id, &exec_id, address, relays, &mut report, forwarded),
    };
    done(&guard);
    let _ = std::fs::remove_file(relays.join(me.to_string()));
    status
}

/// Relays stdio and signals of a started exec process and waits for it.
fn relay_process(
    id: &str,
    exec_id: &str,
    address: &AgentAddress,
    relays: &Path,
    report: &mut std::fs::File,
    forwarded: SigSet,
) -> i32 {
    let open = |stream| -> Result<UnixStream, GuestError> {
        let mut s = address.connect(STDIO_PORT)?;
        let header = StdioHeader {
            container_id: id.to_owned(),
            exec_id: Some(exec_id.to_owned()),
            stream,
        };
        open_stdio(&mut s, &header).map_err(|source| GuestError::CallAgent {
            op: "open a stdio stream of the exec process",
            source,
        })?;
        Ok(s)
    };
    let streams = (|| {
        Ok::<_, GuestError>((
            open(StreamKind::Stdin)?,
            open(StreamKind::Stdout)?,
            open(StreamKind::Stderr)?,
            address.client()?,
        ))
    })();
    let (input, output, errors, mut waiter) = match streams {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(report, "error: {}", chain(&e));
            kill_guest(address, id, exec_id);
            return 255;
        }
    };
    register(relays);
    let dup = |fd: i32| {
        nix::unistd::dup(fd).map(|fd| {
            // SAFETY: `dup` returned a new descriptor that nothing else owns.
            unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        })
    };
    let (Ok(stdin), Ok(stdout), Ok(stderr)) = (dup(0), dup(1), dup(2)) else {
        let _ = writeln!(report, "error: duplicate the standard streams");
        kill_guest(address, id, exec_id);
        return 255;
    };
    std::thread::spawn(move || {
        crate::host::output::confine_relay("stdin-relay");
        let _ = vessel_protocol::stdio::relay(stdin, &input);
        let _ = input.shutdown(Shutdown::Write);
    });
    let relays =
        crate::host::output::OutputRelay::spawn("stdout-relay", output, stdout).and_then(|out| {
            Ok([
                out,
                crate::host::output::OutputRelay::spawn("stderr-relay", errors, stderr)?,
            ])
        });
    let Ok(outputs) = relays else {
        let _ = writeln!(report, "error: spawn the output relays");
        kill_guest(address, id, exec_id);
        return 255;
    };
    {
        let (address, id, exec_id) = (address.clone(), id.to_owned(), exec_id.to_owned());
        std::thread::spawn(move || {
            while let Ok(sig) = forwarded.wait() {
                signal_guest(&address, &id, &exec_id, sig as i32);
            }
        });
    }
    let _ = writeln!(report, "started");
    let status = waiter.wait(id, Some(exec_id));
    crate::host::output::finish_all(outputs);
    exit_code(exec_id, status)
}

/// The exit code of a foreground exec whose wait ended with `status`: the process's own (code,
/// or 128+N for a signal); 137, a SIGKILL, when the agent closed the connection instead, which
/// it does only when the microVM ended (the monitor killed, the guest shut down) and with it
/// every process in it, as the kernel SIGKILLs runc's exec'd processes when the container's init
/// dies (its PID namespace ends: runc exec then exits 137 too); 255 for other failures.
fn exit_code(
    exec_id: &str,
    status: Result<vessel_protocol::ExitStatus, vessel_protocol::client::ClientError>,
) -> i32 {
    match status {
        Ok(s) => s.runc_code(),
        Err(vessel_protocol::client::ClientError::CloseConnection { .. }) => {
            log::info!("exec process {exec_id}: the microVM ended under it; reporting it killed");
            128 + Signal::SIGKILL as i32
        }
        Err(e) => {
            log::error!("wait for exec process {exec_id}: {}", chain(&e));
            255
        }
    }
}

/// The guest process a relay stands for.
struct Target<'a> {
    id: &'a str,
    exec_id: &'a str,
    address: &'a AgentAddress,
}

/// Like [`relay_process`] for a process with a terminal: the host pty slave (made the relay's
/// controlling terminal, so that a resize of the master arrives as SIGWINCH) is relayed to the
/// guest pty over one `tty` stream; the caller's fds 0-2 are not kept (a caller that captures
/// the runtime's output, like go-runc, would otherwise wait for the relay).
fn relay_terminal_process(
    t: &Target<'_>,
    relays: &Path,
    report: &mut std::fs::File,
    forwarded: SigSet,
    slave: OwnedFd,
) -> i32 {
    let set_up = (|| -> Result<_, String> {
        let mut stream = t.address.connect(STDIO_PORT).map_err(|e| chain(&e))?;
        let header = StdioHeader {
            container_id: t.id.to_owned(),
            exec_id: Some(t.exec_id.to_owned()),
            stream: StreamKind::Tty,
        };
        open_stdio(&mut stream, &header).map_err(|e| {
            chain(&GuestError::CallAgent {
                op: "open the terminal stream of the exec process",
                source: e,
            })
        })?;
        let waiter = t.address.client().map_err(|e| chain(&e))?;
        console::make_controlling(slave.as_fd())
            .map_err(|e| format!("make the host pty the relay's controlling terminal: {e}"))?;
        let sizes = slave.try_clone().map_err(|e| e.to_string())?;
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("open /dev/null: {e}"))?;
        for fd in 0..=2 {
            nix::unistd::dup2(null.as_raw_fd(), fd)
                .map_err(|e| format!("redirect fd {fd} to /dev/null: {e}"))?;
        }
        let output = console::relay_terminal(slave, stream).map_err(|e| chain(&e))?;
        Ok((waiter, sizes, output))
    })();
    let (mut waiter, sizes, output) = match set_up {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(report, "error: {e}");
            kill_guest(t.address, t.id, t.exec_id);
            return 255;
        }
    };
    register(relays);
    {
        let (address, id, exec_id) = (t.address.clone(), t.id.to_owned(), t.exec_id.to_owned());
        std::thread::spawn(move || {
            while let Ok(sig) = forwarded.wait() {
                if sig == Signal::SIGWINCH {
                    resize_guest(&address, &id, &exec_id, &sizes);
                } else {
                    signal_guest(&address, &id, &exec_id, sig as i32);
                }
            }
        });
    }
    let _ = writeln!(report, "started");
    let status = waiter.wait(t.id, Some(t.exec_id));
    crate::host::output::finish_all([output]);
    exit_code(t.exec_id, status)
}

/// Passes the host pty's new size (after a SIGWINCH) to the guest pty of an exec process.
fn resize_guest(address: &AgentAddress, id: &str, exec_id: &str, slave: &OwnedFd) {
    let resized = console::window_size(slave.as_fd())
        .map_err(|e| chain(&e))
        .and_then(|(rows, cols)| {
            let mut client = address.client().map_err(|e| chain(&e))?;
            client
                .call_done(Request::ResizeTty {
                    container_id: id.to_owned(),
                    exec_id: Some(exec_id.to_owned()),
                    rows,
                    cols,
                })
                .map_err(|e| chain(&e))
        });
    if let Err(e) = resized {
        log::warn!("resize the terminal of {exec_id}: {e}");
    }
}

fn register(relays: &Path) {
    let me = std::process::id();
    if let Ok(stat) = crate::host::procfs::stat(me as i32) {
        let _ = std::fs::create_dir_all(relays);
        let _ = std::fs::write(relays.join(me.to_string()), stat.start_time.to_string());
    }
}

/// The live exec relays of container `id` (host PIDs), for `ps --format json`.
pub fn relay_pids(store: &StateStore, id: &str) -> Result<Vec<i32>, StateError> {
    let dir = store.container_dir(id)?.join(RELAYS_DIR);
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().parse::<i32>();
        let start = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        match (pid, start) {
            (Ok(pid), Some(start)) if crate::host::procfs::is_alive(pid, start) => pids.push(pid),
            _ => {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

fn signal_guest(address: &AgentAddress, id: &str, exec_id: &str, signal: i32) {
    let sent = address.client().and_then(|mut c| {
        c.call_done(Request::Signal {
            container_id: id.to_owned(),
            exec_id: Some(exec_id.to_owned()),
            signal,
            all: false,
        })
        .map_err(|source| GuestError::CallAgent {
            op: "signal the exec process",
            source,
        })
    });
    if let Err(e) = sent {
        log::warn!("forward signal {signal} to {exec_id}: {}", chain(&e));
    }
}

fn kill_guest(address: &AgentAddress, id: &str, exec_id: &str) {
    signal_guest(address, id, exec_id, libc::SIGKILL);
}

/// Forks the guard (the relay is still single-threaded here) and returns the write end of its
/// pipe: one byte means "done, exit quietly"; EOF without it means the relay died, and the guard
/// kills the guest process.
fn spawn_guard(id: &str, exec_id: &str, address: &AgentAddress) -> nix::Result<OwnedFd> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the relay is single-threaded at this point (no thread has been spawned since the
    // fork that made it), so the child may run ordinary Rust code.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(write);
            // A session of its own: when the relay (a session leader with a terminal) dies,
            // the kernel sends SIGHUP to the terminal's foreground group, which must not
            // include the guard.
            let _ = nix::unistd::setsid();
            // Keep none of the caller's fds (they would delay its EOF) nor the report pipe.
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                for fd in 0..=2 {
                    let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
                }
            }
            let keep = read.as_raw_fd();
            let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect();
            for fd in fds.into_iter().filter(|&fd| fd > 2 && fd != keep) {
                let _ = nix::unistd::close(fd);
            }
            let mut byte = [0u8];
            let n = nix::unistd::read(read.as_raw_fd(), &mut byte).unwrap_or(0);
            if n == 0 {
                kill_guest(address, id, exec_id);
            }
            std::process::exit(0);
        }
        ForkResult::Parent { .. } => Ok(write),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreground_exec_reports_its_status_or_a_kill_when_the_vm_ends() {
        use vessel_protocol::client::ClientError;
        use vessel_protocol::ExitStatus;
        assert_eq!(exit_code("e", Ok(ExitStatus::Code(3))), 3);
        assert_eq!(exit_code("e", Ok(ExitStatus::Signal(15))), 143);
        // The agent closed the wait: the microVM ended, the process with it.
        let closed = ClientError::CloseConnection {
            during: "waiting for a response",
        };
        assert_eq!(exit_code("e", Err(closed)), 137);
        let refused =
            ClientError::ExchangeFrame(vessel_protocol::FrameError::CheckMagic { found: *b"HTTP" });
        assert_eq!(exit_code("e", Err(refused)), 255);
    }
}
