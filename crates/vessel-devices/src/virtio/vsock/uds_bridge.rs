//! The vsock device's Unix socket for other host processes (Firecracker's convention): a client
//! connects, writes `CONNECT <port>\n`, and its stream becomes a host-initiated connection to
//! that guest port, greeted with `OK <local port>\n` once the guest answers (the greeting is the
//! [`super::muxer::Muxer`]'s). Bytes the client sends after its line are kept for the guest.
//!
//! The listener and the clients that have not finished their line sit in the muxer's epoll set,
//! under tokens the muxer hands out; the muxer calls `UdsBridge::accept` and
//! `UdsBridge::read_line` when they become readable.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::host::ConnectRequest;

/// Longest `CONNECT <port>\n` line accepted on the Unix socket.
const MAX_CONNECT_LINE: usize = 32;

/// A Unix-socket client that has not finished its `CONNECT <port>\n` line.
struct UdsPending {
    stream: UnixStream,
    line: Vec<u8>,
}

/// Where a client's `CONNECT` line stands after [`UdsBridge::read_line`].
pub(super) enum LineRead {
    /// No full line yet: the client stays registered.
    Waiting,
    /// The client hung up, failed or sent a bad or overlong line: it is closed and deregistered.
    Closed,
    /// A full line: the client is deregistered and its stream goes to the guest port.
    Connect {
        /// The connection to start, its stream the client's.
        req: ConnectRequest,
        /// What the client sent after its line.
        early: Vec<u8>,
    },
}

/// The listener and the clients still sending their `CONNECT` line.
#[derive(Default)]
pub(super) struct UdsBridge {
    listener: Option<UnixListener>,
    pending: HashMap<u64, UdsPending>,
}

impl UdsBridge {
    /// Serves clients accepted on `listener`, watched on `epoll` under `token`.
    pub(super) fn set_listener(
        &mut self,
        epoll: &Epoll,
        listener: UnixListener,
        token: u64,
    ) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        epoll.ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, token),
        )?;
        self.listener = Some(listener);
        Ok(())
    }

    /// Accepts every waiting client and watches each on `epoll` under a token from
    /// `alloc_token`; returns the tokens of the clients now waited on. A client that cannot be
    /// watched is closed.
    pub(super) fn accept(
        &mut self,
        epoll: &Epoll,
        mut alloc_token: impl FnMut() -> u64,
    ) -> Vec<u64> {
        let mut tokens = Vec::new();
        loop {
            let Some(l) = &self.listener else {
                return tokens;
            };
            match l.accept() {
                Ok((stream, _)) => {
                    let token = alloc_token();
                    if stream.set_nonblocking(true).is_err()
                        || epoll
                            .ctl(
                                ControlOperation::Add,
                                stream.as_raw_fd(),
                                EpollEvent::new(EventSet::IN, token),
                            )
                            .is_err()
                    {
                        continue;
                    }
                    tokens.push(token);
                    self.pending.insert(
                        token,
                        UdsPending {
                            stream,
                            line: Vec::new(),
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return tokens,
                Err(e) => {
                    log::warn!("vsock unix socket accept failed: {e}");
                    return tokens;
                }
            }
        }
    }

    /// Reads more of client `token`'s `CONNECT <port>\n` line; once the line is settled, takes
    /// the client off `epoll` and says what became of it.
    pub(super) fn read_line(&mut self, epoll: &Epoll, token: u64) -> LineRead {
        let Some(p) = self.pending.get_mut(&token) else {
            return LineRead::Waiting;
        };
        let mut buf = [0u8; 64];
        let done = match p.stream.read(&mut buf) {
            Ok(0) => Some(None),
            Ok(n) => {
                p.line.extend_from_slice(&buf[..n]);
                match p.line.iter().position(|&b| b == b'\n') {
                    Some(i) => Some(parse_connect(&p.line[..i]).map(|port| (port, i))),
                    None if p.line.len() > MAX_CONNECT_LINE => Some(None),
                    None => None,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(_) => Some(None),
        };
        let Some(outcome) = done else {
            return LineRead::Waiting;
        };
        let p = self.pending.remove(&token).expect("present above");
        let _ = epoll.ctl(
            ControlOperation::Delete,
            p.stream.as_raw_fd(),
            EpollEvent::default(),
        );
        match outcome {
            Some((port, nl)) => LineRead::Connect {
                early: p.line[nl + 1..].to_vec(),
                req: ConnectRequest {
                    port,
                    stream: p.stream,
                    reply: None,
                },
            },
            None => LineRead::Closed,
        }
    }
}

/// Parses `CONNECT <port>` (trailing `\r` tolerated).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    s.strip_prefix("CONNECT ")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 1024"), Some(1024));
        assert_eq!(parse_connect(b"CONNECT 52\r"), Some(52));
        assert_eq!(parse_connect(b"CONNECT x"), None);
        assert_eq!(parse_connect(b"connect 1"), None);
        assert_eq!(parse_connect(b"CONNECT 99999999999"), None);
    }
}
