//! The process's terminal, allocated inside the container as runc does.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use oci_spec::runtime::Process;
use vessel_protocol::write_message;

use super::protocol::send_fds_with;
use super::{step, SetupError, SetupReport};

/// Allocates the process's terminal inside the container, as runc does: a pty from the
/// container's `/dev/ptmx`, its slave as fds 0-2 and controlling terminal of a new session,
/// sized from `process.consoleSize`; the master goes to the agent ([`SetupReport::Console`]).
/// Returns the slave's path.
pub(super) fn setup_terminal(sock: &mut File, p: &Process) -> Result<PathBuf, SetupError> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| step("open /dev/ptmx in the container")(e.into()))?;
    nix::pty::grantpt(&master).map_err(|e| step("grantpt")(e.into()))?;
    nix::pty::unlockpt(&master).map_err(|e| step("unlockpt")(e.into()))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| step("ptsname")(e.into()))?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)
        .map_err(step(format!("open terminal {name}")))?;
    if let Some(size) = p.console_size() {
        crate::tty::set_window_size(slave.as_raw_fd(), size.height() as u16, size.width() as u16)
            .map_err(step("set process.consoleSize"))?;
    }
    // The report and the master go in ONE sendmsg: the setup parent writes to this socket too
    // (`Forked`), and a separate fd-carrying byte could land after its frame.
    let mut frame = Vec::new();
    write_message(&mut frame, &SetupReport::Console)
        .map_err(|e| SetupError::ExchangeMessage(io::Error::other(e)))?;
    send_fds_with(sock.as_raw_fd(), &frame, &[master.as_raw_fd()])
        .map_err(SetupError::ExchangeMessage)?;
    drop(master);
    nix::unistd::setsid().map_err(|e| step("setsid")(e.into()))?;
    for fd in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), fd).map_err(|e| step("dup2 terminal")(e.into()))?;
    }
    drop(slave);
    // SAFETY: TIOCSCTTY takes an integer argument; fd 0 is the open terminal.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } == -1 {
        return Err(step("make the terminal the controlling tty")(
            io::Error::last_os_error(),
        ));
    }
    Ok(PathBuf::from(name))
}
