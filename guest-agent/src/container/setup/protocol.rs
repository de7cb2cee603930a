//! Between the agent and the setup process: the request, the reports, and the stdio fds and
//! pty master that travel with them (`SCM_RIGHTS`), as the module documentation of `setup`
//! describes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxSeccomp, Process};
use serde::{Deserialize, Serialize};
use vessel_protocol::{read_message, write_message, CreateContainer, RemoteError};

/// The byte the agent sends to let a prepared process `execve`.
pub const START: u8 = b'S';

/// What the setup process is asked to build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SetupRequest {
    /// A container's init process, in new namespaces.
    Create {
        /// The container.
        config: Box<CreateContainer>,
        /// The container's cgroup directory, if the agent manages one.
        cgroup: Option<PathBuf>,
    },
    /// An additional process in the namespaces of `init_pid`.
    Exec {
        /// Agent-namespace PID of the container's init.
        init_pid: i32,
        /// The process.
        process: Box<Process>,
        /// The container's `linux.seccomp`, applied to exec'd processes too (as runc does).
        seccomp: Option<LinuxSeccomp>,
        /// The container's cgroup directory.
        cgroup: Option<PathBuf>,
    },
}

/// What the setup and container processes report back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SetupReport {
    /// The container process exists; PID in the agent's PID namespace.
    Forked {
        /// The PID.
        pid: i32,
    },
    /// A new user namespace exists: the agent writes its id maps, then sends one byte
    /// (1 = written).
    MapIds,
    /// The process has a terminal: the pty master follows as one byte with `SCM_RIGHTS`.
    Console,
    /// Everything is set up; the process waits for [`START`].
    Ready,
    /// Setup (or the `execve`) failed.
    Failed(RemoteError),
}

/// Receives one byte carrying exactly `want` fds (`SCM_RIGHTS`) on socket `sock`.
pub(super) fn receive_fds(sock: RawFd, want: usize) -> io::Result<Vec<OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut out = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in this process for us.
                out.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if out.len() != want {
        return Err(io::Error::other(format!(
            "expected {want} fds, got {}",
            out.len()
        )));
    }
    Ok(out)
}

pub(super) fn report(sock: &mut File, r: &SetupReport) {
    // Nothing more can be done if the agent is gone: the process exits after this anyway.
    let _ = write_message(sock, r);
}

/// Sends `fds` with one byte (`SCM_RIGHTS`) on socket `sock`.
fn send_fds(sock: RawFd, fds: &[RawFd]) -> io::Result<()> {
    send_fds_with(sock, &[0u8], fds)
}

/// Sends `data` and `fds` (`SCM_RIGHTS`) in one `sendmsg` on socket `sock`: on a Unix stream
/// socket the kernel keeps one such message whole, never interleaved with another writer's.
pub(super) fn send_fds_with(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [io::IoSlice::new(data)];
    let n = sendmsg::<()>(
        sock,
        &iov,
        &[ControlMessage::ScmRights(fds)],
        MsgFlags::empty(),
        None,
    )?;
    if n != data.len() {
        return Err(io::Error::other(format!(
            "sent {n} of {} bytes with the fds",
            data.len()
        )));
    }
    Ok(())
}

/// Reads from a setup socket with `recvmsg`, keeping the fds that arrive with the bytes (a
/// [`SetupReport::Console`] carries the pty master). A plain `read` would close them.
struct FdReader<'a> {
    sock: &'a UnixStream,
    fds: &'a mut Vec<OwnedFd>,
}

impl Read for FdReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        let mut iov = [io::IoSliceMut::new(buf)];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let msg = recvmsg::<()>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let n = msg.bytes;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel just installed `fd` in this process for us.
                    self.fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Ok(n)
    }
}

/// Agent side: spawns the setup process and hands it `stdio` and `req`. Returns the socket to
/// read [`SetupReport`]s from, and the setup process's PID.
///
/// # Errors
/// The spawn or the hand-over failed.
pub fn spawn(exe: &Path, stdio: [OwnedFd; 3], req: &SetupRequest) -> io::Result<(UnixStream, u32)> {
    let (mut ours, theirs) = UnixStream::pair()?;
    let child = std::process::Command::new(exe)
        .arg("__setup")
        .stdin(OwnedFd::from(theirs))
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let raw: Vec<RawFd> = stdio.iter().map(AsRawFd::as_raw_fd).collect();
    send_fds(ours.as_raw_fd(), &raw)?;
    drop(stdio);
    write_message(&mut ours, req).map_err(io::Error::other)?;
    ours.flush()?;
    Ok((ours, child.id()))
}

/// Reads the next report; `None` at EOF. Fds that came with it (the pty master of a
/// [`SetupReport::Console`]) are appended to `fds`.
///
/// # Errors
/// A broken or garbled stream.
pub fn read_report(sock: &UnixStream, fds: &mut Vec<OwnedFd>) -> io::Result<Option<SetupReport>> {
    read_message(&mut FdReader { sock, fds }).map_err(io::Error::other)
}

/// Sends [`START`].
///
/// # Errors
/// The process is gone.
pub fn send_start(sock: &mut UnixStream) -> io::Result<()> {
    sock.write_all(&[START])
}

#[cfg(test)]
mod tests {
    use super::*;
    use vessel_protocol::Code;

    #[test]
    fn reports_arrive_whole_with_the_fds_sent_with_them() {
        let (agent, setup) = UnixStream::pair().unwrap();
        let mut frame = Vec::new();
        write_message(&mut frame, &SetupReport::Console).unwrap();
        let (pty, _keep) = UnixStream::pair().unwrap();
        send_fds_with(setup.as_raw_fd(), &frame, &[pty.as_raw_fd()]).unwrap();
        let mut setup = File::from(OwnedFd::from(setup));
        report(&mut setup, &SetupReport::Forked { pid: 42 });
        let failed = RemoteError::new(Code::InvalidArgument, "process.cwd: /x is not a directory");
        report(&mut setup, &SetupReport::Failed(failed.clone()));
        drop(setup);

        let mut fds = Vec::new();
        let first = read_report(&agent, &mut fds).unwrap();
        assert!(matches!(first, Some(SetupReport::Console)), "{first:?}");
        assert_eq!(fds.len(), 1, "the pty master comes with its report");
        let second = read_report(&agent, &mut fds).unwrap();
        assert!(
            matches!(second, Some(SetupReport::Forked { pid: 42 })),
            "{second:?}"
        );
        match read_report(&agent, &mut fds).unwrap() {
            Some(SetupReport::Failed(e)) => assert_eq!(e, failed),
            other => panic!("{other:?}"),
        }
        assert!(read_report(&agent, &mut fds).unwrap().is_none(), "EOF");
        assert_eq!(fds.len(), 1);
    }

    #[test]
    fn the_stdio_hand_over_carries_exactly_three_fds() {
        let (agent, setup) = UnixStream::pair().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        send_fds_with(agent.as_raw_fd(), &[0], &[a.as_raw_fd(), b.as_raw_fd()]).unwrap();
        let e = receive_fds(setup.as_raw_fd(), 3).unwrap_err();
        assert_eq!(e.to_string(), "expected 3 fds, got 2");
        let (c, _) = UnixStream::pair().unwrap();
        send_fds_with(
            agent.as_raw_fd(),
            &[0],
            &[a.as_raw_fd(), b.as_raw_fd(), c.as_raw_fd()],
        )
        .unwrap();
        assert_eq!(receive_fds(setup.as_raw_fd(), 3).unwrap().len(), 3);
    }
}
