//! The vsock connection multiplexer: every guest <-> host stream connection, its state machine
//! and its credit-based flow control (virtio 1.2, 5.10.6.3 and 5.10.6.6), with each connection
//! spliced to a non-blocking host `UnixStream`.
//!
//! Flow control, per connection:
//! - towards the host, bytes from the guest wait in `to_host` until the host stream takes them;
//!   we advertise `buf_alloc` = [`BUF_ALLOC`] and `fwd_cnt` = bytes handed to the host, and send a
//!   CREDIT_UPDATE whenever a quarter of the buffer has been forwarded since the last report. A
//!   guest that overruns its credit gets a RST.
//! - towards the guest, we read from the host stream only while the guest's credit
//!   (`peer_buf_alloc - (tx_cnt - peer_fwd_cnt)`) is positive and the RX backlog is short.
//!
//! All host sockets are in one epoll set whose fd the VMM's event loop watches, the Unix socket
//! of [`super::uds_bridge`] and its clients included.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::host::{ConnectRequest, Shared};
use super::packet::{op, Packet, VsockHeader, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::uds_bridge::{LineRead, UdsBridge};

/// The host's CID.
pub const HOST_CID: u64 = 2;
/// Receive buffer we advertise per connection, bytes.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// First local port for host-initiated connections.
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// Data packets queued for the guest before we stop reading host streams.
pub const RX_BACKLOG: usize = 64;
/// Packets of any kind queued for the guest before control replies are dropped.
pub const RX_HARD_LIMIT: usize = 4096;
/// Largest payload read from a host stream at once.
const READ_CHUNK: usize = 64 * 1024;
/// Guest-initiated connections open at once; beyond it a guest's REQUEST gets RST, so a guest
/// cannot exhaust the VMM's file descriptors (each connection holds a socket pair).
pub const MAX_GUEST_CONNECTIONS: usize = 256;

const TOKEN_WAKE: u64 = 0;
const TOKEN_UDS: u64 = 1;
const FIRST_TOKEN: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// We sent REQUEST and wait for RESPONSE.
    Connecting,
    Established,
}

struct Conn {
    stream: UnixStream,
    token: u64,
    state: State,
    reply: Option<SyncSender<io::Result<u32>>>,
    local_port: u32,
    peer_port: u32,
    /// Guest -> host bytes not yet written to the stream.
    to_host: VecDeque<u8>,
    /// Leading bytes of `to_host` that are ours (the `OK` greeting), not guest data.
    uncounted: usize,
    /// Host -> guest bytes read early (before the connection was up, or after a hangup).
    from_host: VecDeque<u8>,
    fwd_cnt: u32,
    last_fwd_sent: u32,
    rx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    tx_cnt: u32,
    /// The host end will send nothing more.
    host_eof: bool,
    /// The host end is gone entirely (hangup): deregistered from epoll.
    host_gone: bool,
    guest_no_send: bool,
    guest_no_recv: bool,
    shutdown_sent: bool,
    wrote_shutdown: bool,
    credit_requested: bool,
    interest: EventSet,
}

impl Conn {
    fn new(stream: UnixStream, token: u64, state: State, local_port: u32, peer_port: u32) -> Self {
        Self {
            stream,
            token,
            state,
            reply: None,
            local_port,
            peer_port,
            to_host: VecDeque::new(),
            uncounted: 0,
            from_host: VecDeque::new(),
            fwd_cnt: 0,
            last_fwd_sent: 0,
            rx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            host_eof: false,
            host_gone: false,
            guest_no_send: false,
            guest_no_recv: false,
            shutdown_sent: false,
            wrote_shutdown: false,
            credit_requested: false,
            interest: EventSet::empty(),
        }
    }

    /// Bytes the guest can still take: `peer_buf_alloc - (tx_cnt - peer_fwd_cnt)`.
    fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }
}

enum Token {
    Conn((u32, u32)),
    Uds,
}

/// What the muxer decided about a connection after an event.
enum Verdict {
    Keep,
    /// Send RST to the guest and forget the connection.
    Reset,
    /// Forget the connection (the guest already knows).
    Drop,
}

/// All vsock connections of one device.
pub struct Muxer {
    guest_cid: u64,
    shared: Arc<Shared>,
    epoll: Epoll,
    conns: HashMap<(u32, u32), Conn>,
    tokens: HashMap<u64, Token>,
    next_token: u64,
    next_local_port: u32,
    rx: VecDeque<Packet>,
    uds: UdsBridge,
}

impl Muxer {
    /// A muxer for guest `guest_cid` serving requests from `shared`.
    pub(crate) fn new(guest_cid: u32, shared: Arc<Shared>) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            shared.wake.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_WAKE),
        )?;
        Ok(Self {
            guest_cid: u64::from(guest_cid),
            shared,
            epoll,
            conns: HashMap::new(),
            tokens: HashMap::new(),
            next_token: FIRST_TOKEN,
            next_local_port: FIRST_LOCAL_PORT,
            rx: VecDeque::new(),
            uds: UdsBridge::default(),
        })
    }

    /// Serves Firecracker-style `CONNECT <port>\n` clients accepted on `listener`.
    pub fn set_uds_listener(&mut self, listener: UnixListener) -> io::Result<()> {
        self.uds.set_listener(&self.epoll, listener, TOKEN_UDS)
    }

    /// The epoll fd that becomes readable when [`Self::handle_events`] has work.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// True when packets wait for guest RX buffers.
    pub fn has_rx(&self) -> bool {
        !self.rx.is_empty()
    }

    /// Packets waiting for guest RX buffers (bounded: see [`RX_HARD_LIMIT`]).
    pub fn rx_backlog(&self) -> usize {
        self.rx.len()
    }

    /// Takes the next packet for the guest.
    pub fn pop_rx(&mut self) -> Option<Packet> {
        self.rx.pop_front()
    }

    /// Puts back the unsent rest of a packet.
    pub fn push_front_rx(&mut self, p: Packet) {
        self.rx.push_front(p);
    }

    /// Handles every ready host socket and request without blocking.
    pub fn handle_events(&mut self) {
        let mut events = [EpollEvent::default(); 32];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("vsock epoll_wait failed: {e}");
                    return;
                }
            };
            if n == 0 {
                return;
            }
            for ev in &events[..n] {
                self.dispatch(ev.data(), ev.event_set());
            }
        }
    }

    /// Called after the guest consumed RX packets: streams paused on the backlog may resume.
    pub fn rx_drained(&mut self) {
        let keys: Vec<(u32, u32)> = self.conns.keys().copied().collect();
        for k in keys {
            self.pump(k);
        }
    }

    /// Drops every connection (driver reset); waiting connectors are told `ConnectionReset`.
    pub fn reset(&mut self) {
        let keys: Vec<(u32, u32)> = self.conns.keys().copied().collect();
        for k in keys {
            self.remove(k, io::ErrorKind::ConnectionReset);
        }
        self.rx.clear();
    }

    fn dispatch(&mut self, token: u64, ev: EventSet) {
        match token {
            TOKEN_WAKE => {
                let _ = self.shared.wake.read();
                let reqs = std::mem::take(
                    &mut *self
                        .shared
                        .requests
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()),
                );
                for r in reqs {
                    self.host_connect(r, false, Vec::new());
                }
            }
            TOKEN_UDS => self.accept_uds(),
            t => match self.tokens.get(&t) {
                Some(Token::Conn(k)) => {
                    let k = *k;
                    self.conn_event(k, ev);
                }
                Some(Token::Uds) => self.uds_line(t),
                None => {}
            },
        }
    }

    fn alloc_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    fn alloc_local_port(&mut self) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = if p == u32::MAX {
                FIRST_LOCAL_PORT
            } else {
                p + 1
            };
            if !self.conns.keys().any(|(l, _)| *l == p) {
                return p;
            }
        }
    }

    fn queue(&mut self, p: Packet, control: bool) {
        if control && self.rx.len() >= RX_HARD_LIMIT {
            log::warn!("vsock: rx backlog full, dropping {:?}", p.hdr);
            return;
        }
        self.rx.push_back(p);
    }

    /// A packet from us to the guest on connection `c`, carrying our current credit.
    fn packet(guest_cid: u64, c: &mut Conn, op: u16, flags: u32, payload: Vec<u8>) -> Packet {
        c.last_fwd_sent = c.fwd_cnt;
        c.tx_cnt = c.tx_cnt.wrapping_add(payload.len() as u32);
        Packet {
            hdr: VsockHeader {
                src_cid: HOST_CID,
                dst_cid: guest_cid,
                src_port: c.local_port,
                dst_port: c.peer_port,
                len: payload.len() as u32,
                type_: TYPE_STREAM,
                op,
                flags,
                buf_alloc: BUF_ALLOC,
                fwd_cnt: c.fwd_cnt,
            },
            payload,
        }
    }

    /// A RST answering guest packet `h` that belongs to no connection.
    fn rst_reply(&mut self, h: &VsockHeader) {
        let p = Packet {
            hdr: VsockHeader {
                src_cid: HOST_CID,
                dst_cid: self.guest_cid,
                src_port: h.dst_port,
                dst_port: h.src_port,
                type_: TYPE_STREAM,
                op: op::RST,
                ..Default::default()
            },
            payload: Vec::new(),
        };
        self.queue(p, true);
    }

    fn register(&mut self, stream: &UnixStream, token: u64) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        self.epoll.ctl(
            ControlOperation::Add,
            stream.as_raw_fd(),
            EpollEvent::new(EventSet::empty(), token),
        )
    }

    fn host_connect(&mut self, req: ConnectRequest, greeting: bool, early: Vec<u8>) {
        let local = self.alloc_local_port();
        let token = self.alloc_token();
        if let Err(e) = self.register(&req.stream, token) {
            if let Some(r) = req.reply {
                let _ = r.send(Err(e));
            }
            return;
        }
        let mut c = Conn::new(req.stream, token, State::Connecting, local, req.port);
        c.reply = req.reply;
        c.from_host.extend(early);
        if greeting {
            c.uncounted = usize::MAX; // marks "greet on RESPONSE"; fixed up then
        }
        let p = Self::packet(self.guest_cid, &mut c, op::REQUEST, 0, Vec::new());
        self.tokens.insert(token, Token::Conn((local, req.port)));
        self.conns.insert((local, req.port), c);
        self.queue(p, true);
    }

    /// Accepts the Unix socket's waiting clients ([`UdsBridge::accept`]).
    fn accept_uds(&mut self) {
        let next_token = &mut self.next_token;
        let tokens = self.uds.accept(&self.epoll, || {
            let t = *next_token;
            *next_token += 1;
            t
        });
        for t in tokens {
            self.tokens.insert(t, Token::Uds);
        }
    }

    /// Reads more of a `CONNECT <port>\n` line; on a full line, starts the connection.
    fn uds_line(&mut self, token: u64) {
        match self.uds.read_line(&self.epoll, token) {
            LineRead::Waiting => {}
            LineRead::Closed => {
                self.tokens.remove(&token);
            }
            LineRead::Connect { req, early } => {
                self.tokens.remove(&token);
                self.host_connect(req, true, early);
            }
        }
    }

    fn accept_guest(&mut self, h: &VsockHeader) {
        let guest_initiated = self
            .conns
            .keys()
            .filter(|(local, _)| *local < FIRST_LOCAL_PORT)
            .count();
        if guest_initiated >= MAX_GUEST_CONNECTIONS {
            log::warn!(
                "vsock: refusing a guest connection to port {}: {MAX_GUEST_CONNECTIONS} open",
                h.dst_port
            );
            self.rst_reply(h);
            return;
        }
        let sender = self
            .shared
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&h.dst_port)
            .cloned();
        let Some(sender) = sender else {
            self.rst_reply(h);
            return;
        };
        let Ok((ours, theirs)) = UnixStream::pair() else {
            self.rst_reply(h);
            return;
        };
        let token = self.alloc_token();
        if self.register(&ours, token).is_err() || sender.send(theirs).is_err() {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                ours.as_raw_fd(),
                EpollEvent::default(),
            );
            self.rst_reply(h);
            return;
        }
        let key = (h.dst_port, h.src_port);
        let mut c = Conn::new(ours, token, State::Established, h.dst_port, h.src_port);
        c.peer_buf_alloc = h.buf_alloc;
        c.peer_fwd_cnt = h.fwd_cnt;
        let p = Self::packet(self.guest_cid, &mut c, op::RESPONSE, 0, Vec::new());
        self.tokens.insert(token, Token::Conn(key));
        self.conns.insert(key, c);
        self.queue(p, true);
        self.update_interest(key);
    }

    /// Handles one packet the guest sent on its TX queue.
    pub fn on_guest_packet(&mut self, pkt: Packet) {
        let h = pkt.hdr;
        if h.src_cid != self.guest_cid || h.dst_cid != HOST_CID {
            log::debug!(
                "vsock: dropping packet with cids {} -> {}",
                h.src_cid,
                h.dst_cid
            );
            return;
        }
        if h.type_ != TYPE_STREAM {
            if h.op != op::RST {
                self.rst_reply(&h);
            }
            return;
        }
        let key = (h.dst_port, h.src_port);
        let Some(c) = self.conns.get_mut(&key) else {
            match h.op {
                op::REQUEST => self.accept_guest(&h),
                op::RST => {}
                _ => self.rst_reply(&h),
            }
            return;
        };
        c.peer_buf_alloc = h.buf_alloc;
        c.peer_fwd_cnt = h.fwd_cnt;
        c.credit_requested = false;
        let verdict = match (h.op, c.state) {
            (op::RESPONSE, State::Connecting) => {
                c.state = State::Established;
                if let Some(r) = c.reply.take() {
                    let _ = r.send(Ok(c.local_port));
                }
                if c.uncounted == usize::MAX {
                    let hello = format!("OK {}\n", c.local_port).into_bytes();
                    c.uncounted = hello.len();
                    for b in hello.into_iter().rev() {
                        c.to_host.push_front(b);
                    }
                }
                Verdict::Keep
            }
            (op::RW, State::Established) => {
                let len = pkt.payload.len();
                if c.host_gone || c.guest_no_send {
                    Verdict::Reset
                } else if c.to_host.len() - c.uncounted.min(c.to_host.len()) + len
                    > BUF_ALLOC as usize
                {
                    log::warn!(
                        "vsock: guest port {} overran its credit of {BUF_ALLOC} bytes",
                        c.peer_port
                    );
                    Verdict::Reset
                } else {
                    c.rx_cnt = c.rx_cnt.wrapping_add(len as u32);
                    c.to_host.extend(pkt.payload);
                    Verdict::Keep
                }
            }
            (op::CREDIT_UPDATE, State::Established) => Verdict::Keep,
            (op::CREDIT_REQUEST, State::Established) => {
                // Through `queue`: a guest that asks again and again while it offers no RX
                // buffers must not grow the backlog without bound.
                let p = Self::packet(self.guest_cid, c, op::CREDIT_UPDATE, 0, Vec::new());
                self.queue(p, true);
                Verdict::Keep
            }
            (op::SHUTDOWN, State::Established) => {
                c.guest_no_send |= h.flags & SHUTDOWN_SEND != 0;
                c.guest_no_recv |= h.flags & SHUTDOWN_RCV != 0;
                Verdict::Keep
            }
            (op::RST, _) => {
                if let Some(r) = c.reply.take() {
                    let _ = r.send(Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("guest refused vsock port {}", c.peer_port),
                    )));
                }
                Verdict::Drop
            }
            _ => Verdict::Reset,
        };
        self.settle(key, verdict);
    }

    fn conn_event(&mut self, key: (u32, u32), ev: EventSet) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if ev.intersects(EventSet::HANG_UP | EventSet::ERROR) && !c.host_gone {
            // The host end is closed: keep what it wrote, stop watching it.
            drain_into(&mut c.stream, &mut c.from_host);
            c.host_eof = true;
            c.host_gone = true;
            c.to_host.clear();
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                c.stream.as_raw_fd(),
                EpollEvent::default(),
            );
            if c.state == State::Connecting {
                self.settle(key, Verdict::Reset);
                return;
            }
        }
        self.settle(key, Verdict::Keep);
    }

    /// Flushes, pumps and re-arms a connection, or removes it per `verdict`.
    fn settle(&mut self, key: (u32, u32), verdict: Verdict) {
        let verdict = match verdict {
            Verdict::Keep => self.flush(key),
            v => v,
        };
        match verdict {
            Verdict::Keep => {
                self.pump(key);
                self.update_interest(key);
            }
            Verdict::Reset => {
                if let Some(c) = self.conns.get_mut(&key) {
                    let p = Self::packet(self.guest_cid, c, op::RST, 0, Vec::new());
                    self.queue(p, true);
                }
                self.remove(key, io::ErrorKind::ConnectionRefused);
            }
            Verdict::Drop => self.remove(key, io::ErrorKind::ConnectionRefused),
        }
    }

    /// Writes pending guest bytes to the host stream and reports forwarded credit.
    fn flush(&mut self, key: (u32, u32)) -> Verdict {
        let Some(c) = self.conns.get_mut(&key) else {
            return Verdict::Drop;
        };
        while !c.to_host.is_empty() && !c.host_gone {
            let (a, _) = c.to_host.as_slices();
            match c.stream.write(a) {
                Ok(0) => break,
                Ok(n) => {
                    c.to_host.drain(..n);
                    let ours = n.min(c.uncounted);
                    c.uncounted -= ours;
                    c.fwd_cnt = c.fwd_cnt.wrapping_add((n - ours) as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Verdict::Reset,
            }
        }
        if c.state == State::Established && c.fwd_cnt.wrapping_sub(c.last_fwd_sent) >= BUF_ALLOC / 4
        {
            // Bounded like `queue`'s control packets: a guest that sends data and takes no RX
            // buffers must not grow the backlog; a later update carries the newer count.
            let p = Self::packet(self.guest_cid, c, op::CREDIT_UPDATE, 0, Vec::new());
            if self.rx.len() < RX_HARD_LIMIT {
                self.rx.push_back(p);
            }
        }
        if c.to_host.is_empty() && c.guest_no_send && !c.wrote_shutdown && !c.host_gone {
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
            c.wrote_shutdown = true;
        }
        if c.guest_no_send && c.guest_no_recv && (c.to_host.is_empty() || c.host_gone) {
            return Verdict::Reset;
        }
        Verdict::Keep
    }

    /// Moves host bytes to the guest while it has credit and the backlog is short.
    fn pump(&mut self, key: (u32, u32)) {
        let guest_cid = self.guest_cid;
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.state != State::Established || c.guest_no_recv {
            return;
        }
        let mut buf = Vec::new();
        while self.rx.len() < RX_BACKLOG {
            let credit = c.peer_credit() as usize;
            if credit == 0 {
                if !c.credit_requested && (!c.from_host.is_empty() || !c.host_eof) {
                    c.credit_requested = true;
                    let p = Self::packet(guest_cid, c, op::CREDIT_REQUEST, 0, Vec::new());
                    self.rx.push_back(p);
                }
                break;
            }
            let max = credit.min(READ_CHUNK);
            let payload = if !c.from_host.is_empty() {
                let n = max.min(c.from_host.len());
                c.from_host.drain(..n).collect()
            } else if !c.host_eof {
                buf.resize(max, 0);
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        c.host_eof = true;
                        break;
                    }
                    Ok(n) => buf[..n].to_vec(),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        c.host_eof = true;
                        break;
                    }
                }
            } else {
                break;
            };
            let p = Self::packet(guest_cid, c, op::RW, 0, payload);
            self.rx.push_back(p);
        }
        if c.host_eof && c.from_host.is_empty() && !c.shutdown_sent {
            c.shutdown_sent = true;
            let flags = if c.host_gone {
                SHUTDOWN_SEND | SHUTDOWN_RCV
            } else {
                SHUTDOWN_SEND
            };
            let p = Self::packet(guest_cid, c, op::SHUTDOWN, flags, Vec::new());
            self.rx.push_back(p);
        }
    }

    fn update_interest(&mut self, key: (u32, u32)) {
        let backlog_ok = self.rx.len() < RX_BACKLOG;
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.host_gone {
            return;
        }
        let mut want = EventSet::empty();
        if c.state == State::Established
            && !c.host_eof
            && !c.guest_no_recv
            && c.peer_credit() > 0
            && backlog_ok
        {
            want |= EventSet::IN;
        }
        if !c.to_host.is_empty() {
            want |= EventSet::OUT;
        }
        if want != c.interest {
            c.interest = want;
            let _ = self.epoll.ctl(
                ControlOperation::Modify,
                c.stream.as_raw_fd(),
                EpollEvent::new(want, c.token),
            );
        }
    }

    fn remove(&mut self, key: (u32, u32), kind: io::ErrorKind) {
        if let Some(c) = self.conns.remove(&key) {
            self.tokens.remove(&c.token);
            if !c.host_gone {
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    c.stream.as_raw_fd(),
                    EpollEvent::default(),
                );
            }
            if let Some(r) = c.reply {
                let _ = r.send(Err(io::Error::new(
                    kind,
                    format!("vsock connection to guest port {} closed", c.peer_port),
                )));
            }
        }
    }
}

/// Reads everything currently readable from `s` into `out` (bounded by the socket buffer).
fn drain_into(s: &mut UnixStream, out: &mut VecDeque<u8>) {
    let mut buf = [0u8; 16 * 1024];
    while out.len() < 4 << 20 {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => out.extend(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
