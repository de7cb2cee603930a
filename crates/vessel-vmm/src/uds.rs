//! Unix sockets at paths of any length: bind and connect `AF_UNIX` stream sockets whose path is
//! longer than `sockaddr_un.sun_path` can hold.
//!
//! `sun_path` is 108 bytes on Linux, so a socket path carries at most 107 bytes plus its NUL
//! (unix(7), "Address format"); std refuses longer ones with `path must be shorter than
//! SUN_LEN`. runc accepts container IDs up to 255 characters (NAME_MAX) under any `--root`, so
//! `<root>/<id>/monitor.sock` and `<root>/<id>/vsock.sock` often do not fit (Docker's root
//! `/var/run/docker/runtime-runc/moby` plus a 64-character ID already makes 109 bytes).
//!
//! Past the limit, [`bind`] and [`connect`] open the socket's parent directory
//! (`O_PATH | O_DIRECTORY | O_CLOEXEC`) and use `/proc/self/fd/<fd>/<name>` instead. The kernel
//! resolves the magic link to the directory itself, so the socket file is created in (bind) or
//! looked up in (connect) the real directory, and deleting that directory deletes it. The
//! directory fd is held only for the duration of the call. Paths that fit go to the kernel
//! unchanged, so `/proc` is needed only for long paths.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Size of `sockaddr_un.sun_path` on Linux in bytes, the terminating NUL included (unix(7)):
/// a path given to `bind`/`connect` directly has at most `SUN_PATH_LEN - 1` bytes.
pub const SUN_PATH_LEN: usize = 108;

/// Binds a listening `AF_UNIX` stream socket at `path`, whatever the length of `path`; the
/// socket file appears at `path` itself.
///
/// # Errors
/// The `io::Error` of `open(2)` on the parent directory (long paths only) or of
/// `socket`/`bind`/`listen` (for example `AddrInUse` when `path` exists); `InvalidInput` when
/// `path` has no file name or the file name alone is too long for `sun_path`. The error does not
/// carry `path`: callers name it.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    with_reachable_path(path, |p| UnixListener::bind(p))
}

/// Connects an `AF_UNIX` stream socket to the listener at `path`, whatever the length of `path`.
///
/// # Errors
/// As [`bind`], with the errors of `connect(2)` (`NotFound` when no socket file is there,
/// `ConnectionRefused` when nothing listens on it).
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    with_reachable_path(path, |p| UnixStream::connect(p))
}

/// Whether `path` fits in `sun_path` with its NUL.
fn fits(path: &Path) -> bool {
    path.as_os_str().len() < SUN_PATH_LEN
}

/// Calls `op` with `path`, or, when `path` is too long for `sun_path`, with
/// `/proc/self/fd/<fd>/<name>` where `fd` is its parent directory, open until `op` returns.
fn with_reachable_path<T>(path: &Path, op: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if fits(path) {
        return op(path);
    }
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket path has no file name",
        )
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // std adds O_CLOEXEC; O_PATH needs only search permission on the directory.
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(parent)?;
    let mut short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    short.push(name);
    if !fits(&short) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the socket file name is {} bytes; even through /proc/self/fd it does not fit in sun_path ({} bytes with the NUL)",
                name.len(),
                SUN_PATH_LEN
            ),
        ));
    }
    let result = op(&short);
    drop(dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::FileTypeExt;

    /// A directory under a fresh tempdir whose socket path `<dir>/<name>` is longer than
    /// `sun_path` holds (about 200 bytes).
    fn long_dir(tmp: &Path) -> PathBuf {
        let dir = tmp.join("d".repeat(120)).join("e".repeat(60));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn binds_and_connects_past_sun_path_and_the_file_lands_in_the_real_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = long_dir(tmp.path());
        let path = dir.join("monitor.sock");
        assert!(path.as_os_str().len() > SUN_PATH_LEN, "{}", path.display());
        // What std alone does with it: the bug this module fixes.
        assert!(UnixListener::bind(&path).is_err());

        let listener = bind(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"pong").unwrap();
            buf
        });
        let mut client = connect(&path).unwrap();
        client.write_all(b"ping").unwrap();
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"pong");
        assert_eq!(&server.join().unwrap(), b"ping");

        // No fd of the parent directory stays open.
        let fds = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
            .filter(|target| target == &dir)
            .count();
        assert_eq!(fds, 0);

        // Removing the directory removes the socket with it.
        std::fs::remove_dir_all(tmp.path().join("d".repeat(120))).unwrap();
        assert!(!path.exists());
        assert_eq!(connect(&path).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn short_paths_go_to_the_kernel_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.sock");
        assert!(fits(&path));
        let listener = bind(&path).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(addr.as_pathname(), Some(path.as_path()));
        connect(&path).unwrap();
    }

    #[test]
    fn a_long_path_to_nothing_or_in_use_keeps_the_kernels_answer() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = long_dir(tmp.path());
        let path = dir.join("vsock.sock");
        assert_eq!(connect(&path).unwrap_err().kind(), io::ErrorKind::NotFound);
        let _listener = bind(&path).unwrap();
        assert_eq!(bind(&path).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        let missing = tmp.path().join("x".repeat(120)).join("s.sock");
        assert_eq!(bind(&missing).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_file_name_too_long_even_through_proc_is_refused_as_invalid_input() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("n".repeat(200));
        let err = bind(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("200 bytes"), "{err}");
    }
}
