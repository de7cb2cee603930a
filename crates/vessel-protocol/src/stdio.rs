//! Standard I/O streams.
//!
//! Standard I/O never travels inside control messages. For each stream it wants, the host opens
//! a new vsock connection to the guest's [`crate::STDIO_PORT`] and sends one frame holding a JSON
//! [`StdioHeader`]. The agent answers with one frame holding a JSON `Result<(), RemoteError>`
//! (`{"Ok":null}` or `{"Err":{...}}`); after an `Ok`, the connection carries raw bytes only:
//!
//! - `stdin`: host -> guest. When the host shuts down its write side, the agent closes the
//!   process's stdin (the process reads EOF). `CloseStdin` on the control channel does the same.
//! - `stdout`, `stderr`: guest -> host, in order, then EOF when every holder of the process's
//!   pipe has closed it (normally: the process and its children have exited).
//! - `tty`: both directions over the pseudo-terminal master the agent allocated because
//!   `process.terminal` was set; output ends with EOF when the terminal is hung up.
//!
//! Output a process writes before the host attaches stays in its pipe (the process blocks once
//! the pipe is full), so nothing is lost or reordered whatever the attach timing. Each stream
//! can be attached at most once.

use serde::{Deserialize, Serialize};

/// Which stream of a process a stdio connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// The process's standard input (host -> guest).
    Stdin,
    /// The process's standard output (guest -> host).
    Stdout,
    /// The process's standard error (guest -> host).
    Stderr,
    /// The process's terminal, both directions (only when it was started with a terminal).
    Tty,
}

/// The first and only framed message on a stdio connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioHeader {
    /// The container id.
    pub container_id: String,
    /// The exec id, or `None` for the container's init process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_id: Option<String>,
    /// The stream wanted.
    pub stream: StreamKind,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{read_message, write_message};
    use crate::RemoteError;

    #[test]
    fn header_and_ack_round_trip() {
        let h = StdioHeader {
            container_id: "c1".into(),
            exec_id: Some("e1".into()),
            stream: StreamKind::Stderr,
        };
        let mut buf = Vec::new();
        write_message(&mut buf, &h).unwrap();
        let ack: Result<(), RemoteError> = Ok(());
        write_message(&mut buf, &ack).unwrap();
        buf.extend_from_slice(b"raw bytes");
        let mut r = std::io::Cursor::new(buf);
        let back: StdioHeader = read_message(&mut r).unwrap().unwrap();
        assert_eq!(back, h);
        let ack: Result<(), RemoteError> = read_message(&mut r).unwrap().unwrap();
        assert!(ack.is_ok());
        assert_eq!(&r.get_ref()[r.position() as usize..], b"raw bytes");
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            r#"{"container_id":"c1","exec_id":"e1","stream":"stderr"}"#
        );
    }
}

/// Size of the buffer [`relay`] copies through, in bytes.
pub const RELAY_BUFFER: usize = 64 * 1024;

/// Copies a standard stream from `from` to `to` until EOF or an error, forwarding every read at
/// once with plain `read`/`write` calls; returns the bytes copied.
///
/// Used on both ends of a stdio stream instead of `std::io::copy`, whose Linux fast path moves
/// socket-to-pipe and pipe-to-socket data with `splice(2)`: on a live container that held a
/// detached workload's output back from a caller's pipe (containerd's fifo, conmon's pipe) until
/// the workload exited, while a caller reading a regular file saw it at once.
///
/// # Errors
/// The first read or write error other than `EINTR`.
pub fn relay(mut from: impl std::io::Read, mut to: impl std::io::Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; RELAY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
        total += n as u64;
    }
}

#[cfg(test)]
mod relay_tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn relay_forwards_each_chunk_before_eof() {
        let (mut writer, reader) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mut out, pipe_w) = std::io::pipe().unwrap();
        let t = std::thread::spawn(move || relay(reader, pipe_w).unwrap());
        writer.write_all(b"first\n").unwrap();
        let mut got = [0u8; 6];
        // The first line must arrive while the writer is still open (no wait for EOF).
        out.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"first\n");
        writer.write_all(b"second\n").unwrap();
        drop(writer);
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "second\n");
        assert_eq!(t.join().unwrap(), 13);
    }
}
