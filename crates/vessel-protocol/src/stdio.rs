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
