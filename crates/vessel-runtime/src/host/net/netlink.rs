//! A synchronous rtnetlink socket: one request at a time, its answer read to the end (a dump's
//! `NLMSG_DONE`, a change's acknowledgement), with the message types of `netlink-packet-route`.
//! The socket belongs to the network namespace of the thread that opened it, whatever thread
//! uses it later.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Errors of a netlink request.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened, written or read.
    #[error("netlink socket")]
    Socket(#[source] io::Error),
    /// The kernel refused the request.
    #[error("the kernel refused it")]
    Refused(#[source] io::Error),
    /// An answer could not be decoded.
    #[error("decode the kernel's answer: {0}")]
    Decode(String),
}

impl NetlinkError {
    /// The kernel's errno for a refused request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Refused(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// An rtnetlink socket in the current thread's network namespace.
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    ///
    /// # Errors
    /// The socket could not be opened or bound.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Every object a dump request (`Get*` message) returns.
    ///
    /// # Errors
    /// See [`NetlinkError`].
    pub fn dump(
        &mut self,
        message: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(message, NLM_F_REQUEST | NLM_F_DUMP)
    }

    /// The one object a `Get*` request for a single object (by index or name) returns.
    ///
    /// # Errors
    /// See [`NetlinkError`]; [`NetlinkError::Refused`] carries the kernel's errno (`ENODEV`
    /// for no such object).
    pub fn dump_one(
        &mut self,
        message: RouteNetlinkMessage,
    ) -> Result<Option<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(message, NLM_F_REQUEST).map(|mut v| v.pop())
    }

    /// Sends a change (`New*`/`Del*`/`Set*` message) with `flags` added to
    /// `NLM_F_REQUEST | NLM_F_ACK`, and waits for the kernel's acknowledgement.
    ///
    /// # Errors
    /// See [`NetlinkError`]; [`NetlinkError::Refused`] carries the kernel's errno.
    pub fn change(&mut self, message: RouteNetlinkMessage, flags: u16) -> Result<(), NetlinkError> {
        self.exchange(message, NLM_F_REQUEST | NLM_F_ACK | flags)
            .map(drop)
    }

    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(NetlinkError::Socket)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(NetlinkError::Socket)?;
            let mut offset = 0;
            while offset < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(NetlinkError::Decode("a message of length 0".to_owned()));
                }
                offset += len;
                if reply.header.sequence_number != seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(out),
                        Some(_) => return Err(NetlinkError::Refused(e.to_io())),
                    },
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        if !dump {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
