//! Pseudo-terminals for processes with `process.terminal`.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

/// Opens a pty pair; returns `(master, slave)`, both close-on-exec.
///
/// # Errors
/// `openpty(3)` failed.
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let pty = nix::pty::openpty(None, None)?;
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
    }
    Ok((pty.master, pty.slave))
}

/// Sets a terminal's window size (`TIOCSWINSZ`); the foreground process group gets SIGWINCH.
///
/// # Errors
/// The ioctl failed.
pub fn set_window_size(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `ws` is a valid winsize that outlives the call; the kernel only reads it.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
