//! A small synchronous rtnetlink client: one `NETLINK_ROUTE` socket, one request at a time, each
//! answered by the kernel's acknowledgement (or by the messages of a dump), with the kernel's
//! errno kept as an [`io::Error`] so that it reads `File exists (os error 17)`.
//!
//! A netlink socket acts in the network namespace its creator was in when it was opened, for
//! its whole life, whichever thread uses it later: open it in the namespace to work on.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Errors of a netlink exchange.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened, bound or connected.
    #[error("open a NETLINK_ROUTE socket")]
    OpenSocket(#[source] io::Error),
    /// `send` failed.
    #[error("send a netlink request")]
    SendRequest(#[source] io::Error),
    /// `recv` failed.
    #[error("receive the kernel's netlink answer")]
    ReceiveAnswer(#[source] io::Error),
    /// The answer is not a netlink route message this crate understands.
    #[error("decode the kernel's netlink answer: {reason}")]
    DecodeAnswer {
        /// What was wrong with it.
        reason: String,
    },
    /// The kernel refused the request; the error is its errno.
    #[error(transparent)]
    Kernel(io::Error),
}

impl NetlinkError {
    /// The kernel's errno, for an error the kernel answered.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// One `NETLINK_ROUTE` socket of the namespace it was opened in.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    ///
    /// # Errors
    /// [`NetlinkError::OpenSocket`] when `socket`, `bind` or `connect` fails.
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::OpenSocket)?;
        socket.bind_auto().map_err(NetlinkError::OpenSocket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::OpenSocket)?;
        // Errors come back with the request's header only, not the whole request.
        let _ = socket.set_cap_ack(true);
        Ok(Netlink { socket, seq: 0 })
    }

    /// Sends `msg` with `NLM_F_ACK` and `flags` and waits for the acknowledgement; returns the
    /// messages the kernel sent before it (the answer of a `GET`).
    ///
    /// # Errors
    /// [`NetlinkError::Kernel`] with the errno the kernel answered, or a transport error.
    pub fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK | flags)
    }

    /// Sends `msg` as a dump request and returns every message of the dump.
    ///
    /// # Errors
    /// As [`Netlink::request`].
    pub fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_DUMP)
    }

    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(NetlinkError::SendRequest)?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .map_err(NetlinkError::ReceiveAnswer)?;
            let mut rest = &data[..];
            while !rest.is_empty() {
                let (payload, len, seq) = decode(rest)?;
                rest = rest.get(len..).unwrap_or_default();
                if seq != self.seq {
                    // An answer to an earlier request we gave up on: not ours.
                    continue;
                }
                match payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(out),
                    NetlinkPayload::Error(e) => return Err(NetlinkError::Kernel(e.to_io())),
                    NetlinkPayload::Done(d) if d.code < 0 => {
                        return Err(NetlinkError::Kernel(io::Error::from_raw_os_error(-d.code)))
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Overrun(_) => {
                        return Err(NetlinkError::DecodeAnswer {
                            reason: "the kernel reported an overrun".into(),
                        })
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The first message of `data`: its payload, its aligned length and its sequence number.
fn decode(data: &[u8]) -> Result<(NetlinkPayload<RouteNetlinkMessage>, usize, u32), NetlinkError> {
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(data).map_err(|e| {
        NetlinkError::DecodeAnswer {
            reason: e.to_string(),
        }
    })?;
    let len = msg.header.length as usize;
    if len == 0 {
        return Err(NetlinkError::DecodeAnswer {
            reason: "a message of length 0".into(),
        });
    }
    // Messages are padded to 4 bytes (NLMSG_ALIGN).
    Ok((msg.payload, (len + 3) & !3, msg.header.sequence_number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, ErrorMessage};
    use std::num::NonZeroI32;

    fn frame(payload: NetlinkPayload<RouteNetlinkMessage>, seq: u32) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut m = NetlinkMessage::new(header, payload);
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    #[test]
    fn a_kernel_error_frame_decodes_to_its_errno_and_reads_as_the_os_error() {
        let mut e = ErrorMessage::default();
        e.code = NonZeroI32::new(-libc::EEXIST);
        assert!(e.buffer_len() > 0);
        let buf = frame(NetlinkPayload::Error(e), 7);
        let (payload, len, seq) = decode(&buf).unwrap();
        assert_eq!((len % 4, seq), (0, 7));
        let NetlinkPayload::Error(e) = payload else {
            panic!("not an error: {payload:?}")
        };
        let err = NetlinkError::Kernel(e.to_io());
        assert_eq!(err.errno(), Some(libc::EEXIST));
        assert_eq!(err.to_string(), "File exists (os error 17)");
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        for data in [&[0u8; 3][..], &[0xff; 16][..]] {
            assert!(matches!(
                decode(data),
                Err(NetlinkError::DecodeAnswer { .. })
            ));
        }
    }
}
