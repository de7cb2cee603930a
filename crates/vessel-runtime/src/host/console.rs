//! Terminals on the host side (runc docs/terminals.md, utils_linux.go `setupIO`, tty.go).
//!
//! A process with `process.terminal` (or `exec -t`) gets a pty in the guest, allocated by the
//! agent inside the container. On the host, Vessel allocates a second pty ([`HostPty`]) whose
//! master is what the caller gets: sent over `--console-socket` in one `sendmsg`
//! ([`send_master`]) when detached, or copied to and from the caller's own terminal
//! ([`HostConsole`]) in the foreground. The host side's slave is relayed to the guest pty's
//! master over one bidirectional `tty` stream ([`relay_terminal`]). The host pty is raw, so
//! every byte passes unchanged and the guest pty alone does echo, line editing, signals and
//! output processing, as the single pty of runc does.
//!
//! Resizes: the process that holds the slave (the monitor, or an exec relay) is a session leader
//! and makes the slave its controlling terminal ([`make_controlling`]); a `TIOCSWINSZ` on the
//! master then sends it SIGWINCH (the kernel's `pty_resize` signals the slave's foreground
//! process group), and it passes the new size ([`window_size`]) to the agent's `resize_tty`.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use nix::pty::Winsize;
use nix::sys::termios::{self, SetArg, Termios};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The terminal and console-socket settings contradict each other (runc
    /// `checkTerminal`); the message is runc's, then which setting to change.
    #[error("{runc} ({fix})")]
    CheckTerminal {
        /// runc's text.
        runc: &'static str,
        /// The field and flag involved and how to fix them.
        fix: &'static str,
    },
    /// The pty could not be allocated or set up.
    #[error("allocate a pseudo-terminal on the host")]
    OpenPty(#[source] nix::Error),
    /// The console socket could not be connected to.
    #[error("dial unix {}", path.display())]
    ConnectSocket {
        /// The `--console-socket` path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The pty master could not be sent over the console socket.
    #[error("send the pty master over the console socket")]
    SendMaster(#[source] nix::Error),
    /// No terminal was found for a foreground process with a terminal (runc: stderr, stdout,
    /// stdin, then `/dev/tty`, whose error runc prints alone); the message first names the field
    /// and the fixes ([`RUN_NEEDS_A_TERMINAL`], [`EXEC_NEEDS_A_TERMINAL`]).
    #[error("{fix}: open /dev/tty")]
    OpenHostTerminal {
        /// What asked for a terminal and how to do without one.
        fix: &'static str,
        /// The cause (`ENXIO` without a controlling terminal).
        #[source]
        source: io::Error,
    },
    /// The caller's terminal could not be read or set.
    #[error("set the terminal from the stdin to raw mode")]
    SetRaw(#[source] nix::Error),
    /// A window size could not be read or set.
    #[error("{op} the terminal window size")]
    WindowSize {
        /// `read` or `set`.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The receiving end of a console socket got something else than one message with a name
    /// and exactly one fd.
    #[error("receive the pty master: {0}")]
    ReceiveMaster(String),
    /// A relay thread could not be started.
    #[error("start the terminal relay")]
    SpawnRelay(#[source] io::Error),
}

/// runc utils_linux.go `checkTerminal`, for `create`, `run` and `exec`: a detached process with
/// a terminal needs a console socket, and a console socket is only for a detached process with
/// a terminal.
///
/// # Errors
/// [`ConsoleError::CheckTerminal`] with runc's message.
pub fn check_terminal(
    detach: bool,
    terminal: bool,
    console_socket: bool,
) -> Result<(), ConsoleError> {
    if detach && terminal && !console_socket {
        return Err(ConsoleError::CheckTerminal {
            runc: "cannot allocate tty if runc will detach without setting console socket",
            fix: "process.terminal is true: pass --console-socket PATH to receive the pty \
                  master, or set process.terminal to false",
        });
    }
    if (!detach || !terminal) && console_socket {
        return Err(ConsoleError::CheckTerminal {
            runc: "cannot use console socket if runc will not detach or allocate tty",
            fix: "--console-socket is only for a detached process whose process.terminal is \
                  true: leave it out, or set process.terminal to true and detach",
        });
    }
    Ok(())
}

/// A host pty: the master goes to the caller, the slave to the relay.
#[derive(Debug)]
pub struct HostPty {
    /// The master (what the console socket receives).
    pub master: OwnedFd,
    /// The slave, relayed to the guest.
    pub slave: OwnedFd,
    /// The slave's path (`/dev/pts/N`), sent as the name with the master.
    pub name: String,
}

/// A window size, rows by columns (`process.consoleSize` `height` x `width`).
pub type WindowSize = (u16, u16);

/// Allocates a raw, close-on-exec host pty of `size` (left 0x0 when `None`, as runc leaves it
/// without `process.consoleSize`).
///
/// # Errors
/// [`ConsoleError::OpenPty`] when any step fails.
pub fn open_pty(size: Option<WindowSize>) -> Result<HostPty, ConsoleError> {
    let winsize = size.map(|(rows, cols)| Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let pty = nix::pty::openpty(winsize.as_ref(), None).map_err(ConsoleError::OpenPty)?;
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(ConsoleError::OpenPty)?;
    }
    let mut raw = termios::tcgetattr(&pty.slave).map_err(ConsoleError::OpenPty)?;
    termios::cfmakeraw(&mut raw);
    termios::tcsetattr(&pty.slave, SetArg::TCSANOW, &raw).map_err(ConsoleError::OpenPty)?;
    let name = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd()))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "/dev/ptmx".to_owned());
    Ok(HostPty {
        master: pty.master,
        slave: pty.slave,
        name,
    })
}

/// Connects to the caller's `--console-socket` (`AF_UNIX`, `SOCK_STREAM`). runc dials before
/// it starts the container, so a bad path fails the command early.
///
/// # Errors
/// [`ConsoleError::ConnectSocket`].
pub fn connect_socket(path: &Path) -> Result<UnixStream, ConsoleError> {
    UnixStream::connect(path).map_err(|source| ConsoleError::ConnectSocket {
        path: path.to_owned(),
        source,
    })
}

/// Sends `master` over `socket` as runc does (internal/cmsg `SendRawFd`): **one** `sendmsg`
/// whose data is `name` (never empty: a stream socket delivers no control data without data)
/// and whose control part is one `SCM_RIGHTS` message with exactly one fd. No answer is awaited:
/// containerd accepts only after the runtime has exited.
///
/// # Errors
/// [`ConsoleError::SendMaster`].
pub fn send_master(
    socket: &UnixStream,
    name: &str,
    master: BorrowedFd<'_>,
) -> Result<(), ConsoleError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let name = if name.is_empty() { "/dev/ptmx" } else { name };
    let iov = [io::IoSlice::new(name.as_bytes())];
    let fds = [master.as_raw_fd()];
    let sent = sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(ConsoleError::SendMaster)?;
    if sent != name.len() {
        return Err(ConsoleError::SendMaster(nix::Error::EMSGSIZE));
    }
    Ok(())
}

/// The receiving side of a console socket, as containerd and conmon check it (go-runc
/// `recvFd`, conmon `recvfd`): one message with a non-empty name and exactly one `SCM_RIGHTS`
/// fd. Returns the name and the fd. For tests and tools that stand in for a caller.
///
/// # Errors
/// [`ConsoleError::ReceiveMaster`] naming what was wrong.
pub fn receive_master(conn: &UnixStream) -> Result<(String, OwnedFd), ConsoleError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let bad = |m: String| ConsoleError::ReceiveMaster(m);
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 8]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| bad(e.to_string()))?;
    let mut fds = Vec::new();
    let mut other = 0;
    for c in msg.cmsgs().map_err(|e| bad(e.to_string()))? {
        match c {
            ControlMessageOwned::ScmRights(f) => fds.extend(f),
            _ => other += 1,
        }
    }
    let n = msg.bytes;
    // SAFETY: each fd was just received by this process and nothing else owns it.
    let owned: Vec<OwnedFd> = fds
        .iter()
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if other > 0 || owned.len() != 1 {
        return Err(bad(format!(
            "{} fds and {other} other control messages, want exactly one fd",
            owned.len()
        )));
    }
    if n == 0 {
        return Err(bad("empty name".into()));
    }
    let name = String::from_utf8_lossy(&buf[..n]).into_owned();
    Ok((name, owned.into_iter().next().expect("exactly one")))
}

/// The window size of terminal `fd` (`TIOCGWINSZ`), rows by columns.
///
/// # Errors
/// [`ConsoleError::WindowSize`].
pub fn window_size(fd: BorrowedFd<'_>) -> Result<WindowSize, ConsoleError> {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` to the pointer, which is valid and exclusive for
    // the duration of the call; `fd` is an open descriptor borrowed for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == -1 {
        return Err(ConsoleError::WindowSize {
            op: "read",
            source: io::Error::last_os_error(),
        });
    }
    Ok((ws.ws_row, ws.ws_col))
}

/// Sets the window size of terminal `fd` (`TIOCSWINSZ`); on a pty master, the slave's
/// foreground process group gets SIGWINCH if the size changed.
///
/// # Errors
/// [`ConsoleError::WindowSize`].
pub fn set_window_size(fd: BorrowedFd<'_>, (rows, cols): WindowSize) -> Result<(), ConsoleError> {
    let ws = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, valid for the call; `fd` is an
    // open descriptor borrowed for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } == -1 {
        return Err(ConsoleError::WindowSize {
            op: "set",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Makes terminal `fd` the controlling terminal of the calling process, which must be a session
/// leader without one (after `setsid`), so that it gets SIGWINCH when the caller resizes the
/// master, and SIGHUP when the caller closes it.
///
/// # Errors
/// The `TIOCSCTTY` error.
pub fn make_controlling(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal) and no pointer; `fd` is an
    // open descriptor borrowed for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Relays a host pty slave to the guest's `tty` stream of the same process: one thread copies
/// the caller's input (slave -> stream; it ends when the caller closes the master, and then
/// half-closes the stream), one copies the output (stream -> slave) and is returned, to be
/// joined once the process has exited: the caller's output is complete when it ends.
///
/// # Errors
/// [`ConsoleError::SpawnRelay`] when a copy of a descriptor or a thread cannot be made.
pub fn relay_terminal(
    slave: OwnedFd,
    stream: UnixStream,
) -> Result<crate::host::output::OutputRelay, ConsoleError> {
    let input = stream.try_clone().map_err(ConsoleError::SpawnRelay)?;
    let slave_in = File::from(slave.try_clone().map_err(ConsoleError::SpawnRelay)?);
    let slave_out = File::from(slave);
    std::thread::Builder::new()
        .name("tty-input".into())
        .spawn(move || {
            crate::host::output::confine_relay("tty-input");
            // EIO once the master is closed: the caller has gone.
            let _ = vessel_protocol::stdio::relay(slave_in, &input);
            let _ = input.shutdown(std::net::Shutdown::Write);
        })
        .map_err(ConsoleError::SpawnRelay)?;
    crate::host::output::OutputRelay::spawn("tty-output", stream, slave_out)
        .map_err(ConsoleError::SpawnRelay)
}

/// The caller's own terminal, for a foreground `run`/`exec` with a terminal and no console
/// socket (runc tty.go `initHostConsole`): the first of stderr, stdout and stdin that is a
/// terminal, else `/dev/tty`. Raw while the process runs ([`HostConsole::set_raw`]); its
/// settings are restored on drop.
#[derive(Debug)]
pub struct HostConsole {
    fd: OwnedFd,
    saved: Option<Termios>,
}

/// [`HostConsole::find`]'s `fix` for a foreground `run` whose `process.terminal` is true.
pub const RUN_NEEDS_A_TERMINAL: &str = "process.terminal is true but there is no terminal to \
    attach it to: run from a terminal, set process.terminal to false in config.json, or run \
    --detach with --console-socket";

/// [`HostConsole::find`]'s `fix` for a foreground `exec` with a terminal (`--tty`, or
/// `terminal` in the `--process` file).
pub const EXEC_NEEDS_A_TERMINAL: &str = "exec --tty (process.terminal) needs a terminal and \
    there is none: run from a terminal, leave out --tty (or set terminal to false in the \
    --process file), or exec --detach with --console-socket";

impl HostConsole {
    /// Finds the caller's terminal; `fix` (one of [`RUN_NEEDS_A_TERMINAL`],
    /// [`EXEC_NEEDS_A_TERMINAL`]) prefixes the error.
    ///
    /// # Errors
    /// [`ConsoleError::OpenHostTerminal`] when none of the standard streams is a terminal and
    /// there is no controlling terminal (runc: `open /dev/tty: no such device or address`).
    pub fn find(fix: &'static str) -> Result<HostConsole, ConsoleError> {
        let open_error = |source| ConsoleError::OpenHostTerminal { fix, source };
        for fd in [
            io::stderr().as_fd(),
            io::stdout().as_fd(),
            io::stdin().as_fd(),
        ] {
            if nix::unistd::isatty(fd.as_raw_fd()).unwrap_or(false) {
                let fd = fd.try_clone_to_owned().map_err(open_error)?;
                return Ok(HostConsole { fd, saved: None });
            }
        }
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(open_error)?;
        Ok(HostConsole {
            fd: tty.into(),
            saved: None,
        })
    }

    /// The terminal's descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The terminal's window size.
    ///
    /// # Errors
    /// [`ConsoleError::WindowSize`].
    pub fn size(&self) -> Result<WindowSize, ConsoleError> {
        window_size(self.fd.as_fd())
    }

    /// Puts the terminal in raw mode (containerd/console `SetRaw`), remembering the settings.
    ///
    /// # Errors
    /// [`ConsoleError::SetRaw`].
    pub fn set_raw(&mut self) -> Result<(), ConsoleError> {
        let saved = termios::tcgetattr(&self.fd).map_err(ConsoleError::SetRaw)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&self.fd, SetArg::TCSANOW, &raw).map_err(ConsoleError::SetRaw)?;
        self.saved = Some(saved);
        Ok(())
    }
}

impl Drop for HostConsole {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            let _ = termios::tcsetattr(&self.fd, SetArg::TCSANOW, &saved);
        }
    }
}

/// Copies between the caller's stdin/stdout and the host pty master `master` for a foreground
/// process: stdin -> master on a thread that is never joined (stdin may never end), master ->
/// stdout on the returned thread, which ends when every holder of the slave has closed it
/// (`EIO`), that is once the relaying process has delivered all output and exited.
///
/// # Errors
/// [`ConsoleError::SpawnRelay`].
pub fn copy_foreground(master: OwnedFd) -> Result<JoinHandle<()>, ConsoleError> {
    let input = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(ConsoleError::SpawnRelay)?;
    let output = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(ConsoleError::SpawnRelay)?;
    let to_master = File::from(master.try_clone().map_err(ConsoleError::SpawnRelay)?);
    std::thread::Builder::new()
        .name("tty-stdin".into())
        .spawn(move || {
            crate::host::output::confine_relay("tty-stdin");
            let _ = vessel_protocol::stdio::relay(File::from(input), to_master);
        })
        .map_err(ConsoleError::SpawnRelay)?;
    std::thread::Builder::new()
        .name("tty-stdout".into())
        .spawn(move || {
            crate::host::output::confine_relay("tty-stdout");
            let _ = vessel_protocol::stdio::relay(File::from(master), File::from(output));
        })
        .map_err(ConsoleError::SpawnRelay)
}

/// Initial size of a process's terminal from `process.consoleSize` (rows = `height`, columns =
/// `width`), `None` when absent.
pub fn console_size(process: &oci_spec::runtime::Process) -> Option<WindowSize> {
    process
        .console_size()
        .map(|b| (b.height() as u16, b.width() as u16))
}

/// Sets `process.consoleSize` to `(rows, cols)`: a foreground process starts with the size of
/// the caller's terminal (runc resizes to it right after start).
pub fn set_console_size(process: &mut oci_spec::runtime::Process, (rows, cols): WindowSize) {
    let size = oci_spec::runtime::BoxBuilder::default()
        .height(u64::from(rows))
        .width(u64::from(cols))
        .build()
        .expect("a box with both fields set");
    process.set_console_size(Some(size));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn terminal_rules_match_runc() {
        assert!(check_terminal(true, false, false).is_ok());
        assert!(check_terminal(true, true, true).is_ok());
        assert!(check_terminal(false, false, false).is_ok());
        assert!(check_terminal(false, true, false).is_ok());
        let e = check_terminal(true, true, false).unwrap_err().to_string();
        assert_eq!(
            e,
            "cannot allocate tty if runc will detach without setting console socket \
             (process.terminal is true: pass --console-socket PATH to receive the pty master, or \
             set process.terminal to false)"
        );
        let e = check_terminal(false, true, true).unwrap_err().to_string();
        assert_eq!(
            e,
            "cannot use console socket if runc will not detach or allocate tty \
             (--console-socket is only for a detached process whose process.terminal is true: \
             leave it out, or set process.terminal to true and detach)"
        );
        assert!(check_terminal(true, false, true).is_err());
    }

    #[test]
    fn host_pty_is_raw_sized_and_named() {
        let pty = open_pty(Some((31, 101))).unwrap();
        assert!(pty.name.starts_with("/dev/pts/"), "{}", pty.name);
        assert_eq!(window_size(pty.master.as_fd()).unwrap(), (31, 101));
        let t = termios::tcgetattr(&pty.slave).unwrap();
        assert!(!t.local_flags.contains(termios::LocalFlags::ECHO));
        assert!(!t.local_flags.contains(termios::LocalFlags::ICANON));
        assert!(!t.output_flags.contains(termios::OutputFlags::OPOST));
        // Raw: a newline written on the slave arrives unchanged (no \r added), input unechoed.
        let mut slave = File::from(pty.slave.try_clone().unwrap());
        let mut master = File::from(pty.master.try_clone().unwrap());
        slave.write_all(b"a\nb").unwrap();
        let mut got = [0u8; 3];
        master.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"a\nb");
        master.write_all(b"\x03x\r").unwrap();
        let mut got = [0u8; 3];
        slave.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\x03x\r");
        set_window_size(pty.master.as_fd(), (50, 60)).unwrap();
        assert_eq!(window_size(pty.slave.as_fd()).unwrap(), (50, 60));
    }

    #[test]
    fn master_is_sent_in_one_message_with_one_fd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let pty = open_pty(Some((24, 80))).unwrap();
        let socket = connect_socket(&path).unwrap();
        // Sent before anyone accepts, as with containerd.
        send_master(&socket, &pty.name, pty.master.as_fd()).unwrap();
        drop(socket);
        let (conn, _) = listener.accept().unwrap();
        let (name, got) = receive_master(&conn).unwrap();
        assert_eq!(name, pty.name);
        assert_eq!(window_size(got.as_fd()).unwrap(), (24, 80));
        let link = std::fs::read_link(format!("/proc/self/fd/{}", got.as_raw_fd())).unwrap();
        assert!(
            link.to_string_lossy().ends_with("ptmx"),
            "{link:?} is no pty master"
        );
        let err = connect_socket(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().starts_with("dial unix "), "{err}");
        // Two fds in one message are refused by the receiver, as by go-runc.
        let (a, b) = UnixStream::pair().unwrap();
        let fds = [pty.master.as_raw_fd(), pty.slave.as_raw_fd()];
        nix::sys::socket::sendmsg::<()>(
            a.as_raw_fd(),
            &[io::IoSlice::new(b"x")],
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .unwrap();
        let err = receive_master(&b).unwrap_err().to_string();
        assert!(err.contains("2 fds"), "{err}");
    }
}
