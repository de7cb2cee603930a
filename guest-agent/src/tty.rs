//! Terminal window sizes for processes with `process.terminal` (the pty itself is allocated
//! by the setup process inside the container, see `container::setup`).

use std::io;
use std::os::fd::RawFd;

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
