//! The virtio-net device (virtio 1.2, 5.1): two queues (0 RX, 1 TX), config space with the MAC
//! and the link status (5.1.4), feature negotiation, and the moves between the queues and the
//! host end, a [`NetBackend`] (in Vessel a [`super::Tap`]).
//!
//! - TX: each chain is checked and gathered ([`read_tx`]), then written to the backend with its
//!   header as is; the chain goes back with used length 0 whatever happens. A backend that
//!   cannot take a frame now (`EAGAIN`, in practice never for a tap: its send buffer is
//!   unlimited) or refuses it (`EINVAL` for a header the kernel rejects) drops it, as a full
//!   NIC queue would, and the guest's TCP retransmits; no frame is held back, so no EPOLLOUT
//!   wait exists. At most [`TX_BURST`] chains per pass: the kick is re-signalled for the rest,
//!   so one busy guest does not hold the device thread.
//! - RX: a frame is read from the backend only when it can go somewhere. It is scattered over
//!   RX chains: with `VIRTIO_NET_F_MRG_RXBUF` over as many chains as it needs, `num_buffers`
//!   in the first chain's header telling how many; without it into one chain, and a frame that
//!   chain cannot hold is dropped. When the RX queue runs dry mid-frame the chains already taken
//!   are kept for it and the backend's fd is taken out of the device's epoll set
//!   ([`Net::event_fd`]), so a readable tap with no buffers to fill does not wake the VMM's
//!   level-triggered device thread again and again; a kick on the RX queue puts it back.
//! - Malformed chains (wrong direction, outside guest memory, too short or too long) are given
//!   back with used length 0 and counted in [`NetStats::bad_chains`]; the log notes the 1st,
//!   2nd, 4th, 8th ... so a hostile guest cannot flood it.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::packet::{
    parse_rx, read_tx, write_rx, ChainError, RxChain, HDR_LEN, MAX_PACKET_LEN, NUM_BUFFERS_OFFSET,
};
use crate::virtio::{
    VirtioDevice, VirtioError, VirtioInterrupt, INT_USED_RING, VIRTIO_F_VERSION_1,
};

/// virtio device ID of a network card.
pub const NET_DEVICE_ID: u32 = 1;
/// RX queue index.
pub const RX_QUEUE: usize = 0;
/// TX queue index.
pub const TX_QUEUE: usize = 1;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE; 2];
/// Most TX chains one pass takes before yielding the device thread.
pub const TX_BURST: usize = QUEUE_SIZE as usize;
/// Most frames one pass moves from the backend before yielding the device thread.
pub const RX_BURST: usize = 64;

/// Feature bits of virtio-net (virtio 1.2, 5.1.3).
pub mod features {
    /// The device handles packets with a partial checksum (guest to host).
    pub const VIRTIO_NET_F_CSUM: u64 = 1 << 0;
    /// The driver handles packets with a partial checksum (host to guest).
    pub const VIRTIO_NET_F_GUEST_CSUM: u64 = 1 << 1;
    /// The driver can receive TCPv4 GSO packets.
    pub const VIRTIO_NET_F_GUEST_TSO4: u64 = 1 << 7;
    /// The driver can receive TCPv6 GSO packets.
    pub const VIRTIO_NET_F_GUEST_TSO6: u64 = 1 << 8;
    /// The device can receive TCPv4 GSO packets.
    pub const VIRTIO_NET_F_HOST_TSO4: u64 = 1 << 11;
    /// The device can receive TCPv6 GSO packets.
    pub const VIRTIO_NET_F_HOST_TSO6: u64 = 1 << 12;
    /// The device has a MAC address in its config space.
    pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
    /// The driver can merge RX buffers: a frame may span several chains (`num_buffers`).
    pub const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;
    /// The config space's `status` field is valid.
    pub const VIRTIO_NET_F_STATUS: u64 = 1 << 16;
}
use features::*;

/// What the device offers: a modern device with a fixed MAC and link status, mergeable RX
/// buffers, and checksum and TCP segmentation offload both ways. Not offered: `F_MTU` (the
/// agent sets the guest's MTU; without it Linux allows up to 65535), UFO/USO, ECN, the control
/// queue and multiqueue.
pub const OFFERED_FEATURES: u64 = VIRTIO_F_VERSION_1
    | VIRTIO_NET_F_MAC
    | VIRTIO_NET_F_STATUS
    | VIRTIO_NET_F_MRG_RXBUF
    | VIRTIO_NET_F_CSUM
    | VIRTIO_NET_F_GUEST_CSUM
    | VIRTIO_NET_F_GUEST_TSO4
    | VIRTIO_NET_F_GUEST_TSO6
    | VIRTIO_NET_F_HOST_TSO4
    | VIRTIO_NET_F_HOST_TSO6;

/// `status` bit: the link is up (5.1.4).
pub const VIRTIO_NET_S_LINK_UP: u16 = 1;
/// Bytes of config space: `mac[6]` and `status` (`max_virtqueue_pairs` exists only with MQ).
pub const CONFIG_LEN: usize = 8;

/// The `TUN_F_*` offloads the tap may use for frames going to a guest that acked `acked`: a
/// partial checksum only if the driver takes them (`GUEST_CSUM`), TSO segments only if it also
/// takes those (each needs `GUEST_CSUM` too, as the kernel's `TUNSETOFFLOAD` does).
pub fn tap_offloads(acked: u64) -> u32 {
    if acked & VIRTIO_NET_F_GUEST_CSUM == 0 {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    if acked & VIRTIO_NET_F_GUEST_TSO4 != 0 {
        flags |= libc::TUN_F_TSO4;
    }
    if acked & VIRTIO_NET_F_GUEST_TSO6 != 0 {
        flags |= libc::TUN_F_TSO6;
    }
    flags
}

/// The host end of a virtio-net device: whole packets, each a 12-byte `virtio_net_hdr_v1` and
/// an Ethernet frame.
pub trait NetBackend: Send {
    /// Reads one packet into `buf` (sized [`MAX_PACKET_LEN`]); `WouldBlock` when none waits.
    fn read_packet(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one packet; `WouldBlock` when it cannot be taken now.
    fn write_packet(&mut self, packet: &[u8]) -> io::Result<usize>;
    /// Sets the `TUN_F_*` offloads the backend may use in packets it gives (see
    /// [`tap_offloads`]).
    fn set_offloads(&mut self, flags: u32) -> io::Result<()>;
    /// A descriptor that is readable while [`Self::read_packet`] has a packet; `None` once
    /// closed.
    fn ready_fd(&self) -> Option<RawFd>;
    /// Closes the host end; later I/O fails.
    fn close(&mut self);
}

/// Counters of one device (monotonic while it lives).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames written to the backend.
    pub tx_frames: u64,
    /// TX frames the backend did not take.
    pub tx_dropped: u64,
    /// Frames given to the guest.
    pub rx_frames: u64,
    /// Frames from the backend the guest could not be given (too short, or bigger than its
    /// buffers).
    pub rx_dropped: u64,
    /// Malformed chains given back unused.
    pub bad_chains: u64,
}

struct Active {
    mem: GuestMemoryMmap,
    irq: Arc<VirtioInterrupt>,
    queues: Vec<Queue>,
}

/// The virtio-net device over backend `B`.
pub struct Net<B: NetBackend> {
    mac: [u8; 6],
    backend: B,
    acked: u64,
    active: Option<Active>,
    /// Signalled by a guest kick of queue `i` (non-blocking; see [`super::event_handler`]).
    pub(super) queue_evts: Vec<EventFd>,
    /// Holds the backend's fd while frames may be read (see the module doc).
    epoll: Epoll,
    rx_armed: bool,
    /// The backend failed for good (not `WouldBlock`): never watched again.
    backend_failed: bool,
    /// A frame read from the backend and not yet delivered: `rx_buf[..rx_len]`.
    rx_buf: Vec<u8>,
    rx_len: usize,
    /// RX chains taken from the queue for the pending or next frame, in order.
    rx_chains: Vec<RxChain>,
    tx_buf: Vec<u8>,
    stats: NetStats,
}

impl<B: NetBackend> Net<B> {
    /// A device with MAC `mac` over `backend`.
    pub fn new(mac: [u8; 6], backend: B) -> io::Result<Self> {
        let queue_evts = QUEUE_SIZES
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<io::Result<_>>()?;
        Ok(Self {
            mac,
            backend,
            acked: 0,
            active: None,
            queue_evts,
            epoll: Epoll::new()?,
            rx_armed: false,
            backend_failed: false,
            rx_buf: vec![0; MAX_PACKET_LEN],
            rx_len: 0,
            rx_chains: Vec::new(),
            tx_buf: vec![0; MAX_PACKET_LEN],
            stats: NetStats::default(),
        })
    }

    /// The MAC address in config space.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked
    }

    /// The counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The backend (tests inspect it).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The fd the VMM's device thread watches for RX: readable while the backend has a frame
    /// and the device has somewhere to put it (the backend's fd is in this epoll set only then).
    pub fn event_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// True between a successful activation and the next reset.
    pub fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    /// Whether the backend's fd is being watched.
    pub fn rx_armed(&self) -> bool {
        self.rx_armed
    }

    /// Handles a notification of queue `index` (from an ioeventfd or a QueueNotify write).
    pub fn process_queue(&mut self, index: usize) {
        match index {
            TX_QUEUE => self.process_tx(),
            RX_QUEUE => {
                // New buffers: frames may flow again.
                self.arm_rx(true);
                self.process_rx();
            }
            _ => {}
        }
    }

    /// Gives each TX chain's packet to the backend (at most [`TX_BURST`]); see the module doc.
    pub fn process_tx(&mut self) {
        let Some(Active { mem, irq, queues }) = &mut self.active else {
            return;
        };
        let q = &mut queues[TX_QUEUE];
        let mut used = 0usize;
        while used < TX_BURST {
            let Some(chain) = q.pop_descriptor_chain(&*mem) else {
                break;
            };
            let head = chain.head_index();
            match read_tx(chain, &mut self.tx_buf) {
                Ok(n) => match self.backend.write_packet(&self.tx_buf[..n]) {
                    Ok(_) => self.stats.tx_frames += 1,
                    Err(e) => {
                        self.stats.tx_dropped += 1;
                        if self.stats.tx_dropped.is_power_of_two() {
                            log::warn!(
                                "virtio-net: tx frame dropped ({} so far): {e}",
                                self.stats.tx_dropped
                            );
                        }
                    }
                },
                Err(e) => note_bad_chain(&mut self.stats, "tx", head, &e),
            }
            if let Err(e) = q.add_used(&*mem, head, 0) {
                log::warn!("virtio-net: cannot return tx chain {head}: {e}");
            }
            used += 1;
        }
        if used > 0 {
            irq.signal(INT_USED_RING);
        }
        if used == TX_BURST {
            // Possibly more: come back after the other sources had their turn.
            let _ = self.queue_evts[TX_QUEUE].write(1);
        }
    }

    /// Moves frames from the backend into RX chains (at most [`RX_BURST`]); see the module doc.
    pub fn process_rx(&mut self) {
        if self.active.is_none() {
            self.arm_rx(false);
            return;
        }
        let mut signal = false;
        for _ in 0..RX_BURST {
            if self.rx_len == 0 {
                match self.backend.read_packet(&mut self.rx_buf) {
                    Ok(n) if n < HDR_LEN => {
                        self.stats.rx_dropped += 1;
                        continue;
                    }
                    Ok(n) => self.rx_len = n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // A tap whose interface was deleted reads EBADFD and polls EPOLLERR
                        // forever: stop watching it rather than spin.
                        log::error!("virtio-net: backend read failed, no more rx: {e}");
                        self.backend_failed = true;
                        self.arm_rx(false);
                        break;
                    }
                }
            }
            match self.deliver(&mut signal) {
                Delivery::Done => {
                    self.rx_len = 0;
                    self.stats.rx_frames += 1;
                }
                Delivery::Dropped => {
                    self.rx_len = 0;
                    self.stats.rx_dropped += 1;
                }
                Delivery::NoBuffers => {
                    self.arm_rx(false);
                    break;
                }
            }
        }
        if signal {
            if let Some(a) = &self.active {
                a.irq.signal(INT_USED_RING);
            }
        }
    }

    /// Puts the pending frame into RX chains, taking more from the queue as needed.
    fn deliver(&mut self, signal: &mut bool) -> Delivery {
        let Some(Active { mem, queues, .. }) = &mut self.active else {
            return Delivery::NoBuffers;
        };
        let q = &mut queues[RX_QUEUE];
        let mergeable = self.acked & VIRTIO_NET_F_MRG_RXBUF != 0;
        let max_chains = if mergeable { usize::from(q.size()) } else { 1 };
        let need = self.rx_len;
        let mut have: usize = self
            .rx_chains
            .iter()
            .take(max_chains)
            .map(|c| c.capacity)
            .fold(0, usize::saturating_add);
        while have < need {
            if self.rx_chains.len() >= max_chains {
                // Even a full ring's worth of buffers (or, unmerged, the one chain) is too
                // small: the frame goes, the chains stay for the next one.
                return Delivery::Dropped;
            }
            let Some(chain) = q.pop_descriptor_chain(&*mem) else {
                return Delivery::NoBuffers;
            };
            let head = chain.head_index();
            match parse_rx(chain) {
                Ok(c) => {
                    have = have.saturating_add(c.capacity);
                    self.rx_chains.push(c);
                }
                Err(e) => {
                    note_bad_chain(&mut self.stats, "rx", head, &e);
                    if let Err(e) = q.add_used(&*mem, head, 0) {
                        log::warn!("virtio-net: cannot return rx chain {head}: {e}");
                    }
                    *signal = true;
                }
            }
        }
        // How many chains the frame takes, then write and return them in order.
        let mut count = 0usize;
        let mut left = need;
        while left > 0 {
            let Some(c) = self.rx_chains.get(count) else {
                break;
            };
            left = left.saturating_sub(c.capacity);
            count += 1;
        }
        let num_buffers = u16::try_from(count).unwrap_or(u16::MAX);
        self.rx_buf[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2]
            .copy_from_slice(&num_buffers.to_le_bytes());
        let mut done = 0usize;
        let mut failed = false;
        let mut used = Vec::with_capacity(count);
        for c in self.rx_chains.drain(..count) {
            let n = if failed {
                0
            } else {
                match write_rx(&*mem, &c, &self.rx_buf[done..need]) {
                    Ok(n) => n,
                    Err(e) => {
                        note_bad_chain(&mut self.stats, "rx", c.head, &e);
                        failed = true;
                        0
                    }
                }
            };
            done += n;
            // `n` is at most MAX_PACKET_LEN.
            used.push((c.head, n as u32));
        }
        if let Err(e) = add_used_at_once(q, &*mem, &used) {
            log::warn!("virtio-net: cannot return {} rx chain(s): {e}", used.len());
        }
        *signal = true;
        if failed {
            Delivery::Dropped
        } else {
            Delivery::Done
        }
    }

    /// Puts the backend's fd into the device's epoll set (`on`) or takes it out. Removal, not
    /// an empty event mask: epoll reports EPOLLERR and EPOLLHUP whatever the mask.
    fn arm_rx(&mut self, on: bool) {
        let on = on && self.active.is_some() && !self.backend_failed;
        if on == self.rx_armed {
            return;
        }
        let Some(fd) = self.backend.ready_fd() else {
            self.rx_armed = false;
            return;
        };
        let r = if on {
            self.epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, 0))
        } else {
            self.epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default())
        };
        match r {
            Ok(()) => self.rx_armed = on,
            Err(e) => log::warn!("virtio-net: cannot change the backend's epoll entry: {e}"),
        }
    }

    /// Closes the backend (the tap goes away) and stops watching it. The device is not used
    /// afterwards.
    pub fn close(&mut self) {
        self.arm_rx(false);
        self.backend_failed = true;
        self.backend.close();
    }
}

/// Outcome of [`Net::deliver`].
enum Delivery {
    Done,
    Dropped,
    NoBuffers,
}

fn note_bad_chain(stats: &mut NetStats, queue: &str, head: u16, e: &ChainError) {
    stats.bad_chains += 1;
    if stats.bad_chains.is_power_of_two() {
        log::warn!(
            "virtio-net: dropping malformed {queue} chain {head} ({} so far): {e}",
            stats.bad_chains
        );
    }
}

impl<B: NetBackend> VirtioDevice for Net<B> {
    fn device_type(&self) -> u32 {
        NET_DEVICE_ID
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        OFFERED_FEATURES
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features & OFFERED_FEATURES;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut cfg = [0u8; CONFIG_LEN];
        cfg[..6].copy_from_slice(&self.mac);
        cfg[6..8].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| cfg.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    /// The MAC is read-only with VERSION_1 (5.1.4.2): writes are ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::debug!(
            "virtio-net: ignoring a {}-byte config write at {offset:#x}",
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        irq: Arc<VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), VirtioError> {
        if queues.len() != QUEUE_SIZES.len() {
            return Err(VirtioError::QueueCount {
                want: QUEUE_SIZES.len(),
                got: queues.len(),
            });
        }
        for (index, q) in queues.iter().enumerate() {
            if !q.is_valid(&mem) {
                return Err(VirtioError::InvalidQueue { index });
            }
        }
        let offloads = tap_offloads(self.acked);
        if let Err(e) = self.backend.set_offloads(offloads) {
            // The device still works: the backend then gives plain frames, which suit any
            // driver.
            log::warn!("virtio-net: cannot set offloads {offloads:#x}: {e}");
        }
        self.active = Some(Active { mem, irq, queues });
        self.arm_rx(true);
        Ok(())
    }

    fn reset(&mut self) {
        self.arm_rx(false);
        self.active = None;
        self.acked = 0;
        self.rx_len = 0;
        self.rx_chains.clear();
        if let Err(e) = self.backend.set_offloads(0) {
            log::warn!("virtio-net: cannot clear offloads: {e}");
        }
    }

    fn queue_notify(&mut self, index: u16) {
        self.process_queue(index.into());
    }
}

/// Puts `used` (head, length) into `q`'s used ring and only then moves the ring's index past all
/// of them, so that the driver never sees part of a merged frame: Linux reads the first buffer's
/// `num_buffers` and drops the frame (`rx error: N buffers out of M missing`, counted as a length
/// error) when the rest is not in the used ring yet, which `add_used` per chain allowed while the
/// guest polled on another vCPU. Without `VIRTIO_F_EVENT_IDX` (not offered) the queue's count of
/// added entries is not needed for notification.
pub(super) fn add_used_at_once(
    q: &mut Queue,
    mem: &GuestMemoryMmap,
    used: &[(u16, u32)],
) -> Result<(), virtio_queue::Error> {
    use std::sync::atomic::Ordering;
    use vm_memory::{Address, Bytes, GuestAddress};
    const HEADER: u64 = 4;
    const ELEMENT: u64 = 8;
    let size = q.size();
    let ring = GuestAddress(q.used_ring());
    let mut next = std::num::Wrapping(q.next_used());
    for &(head, len) in used {
        if head >= size {
            return Err(virtio_queue::Error::InvalidDescriptorIndex);
        }
        let slot = u64::from(next.0 % size);
        let addr = ring
            .checked_add(HEADER + slot * ELEMENT)
            .ok_or(virtio_queue::Error::AddressOverflow)?;
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&elem, addr)
            .map_err(virtio_queue::Error::GuestMemory)?;
        next += std::num::Wrapping(1);
    }
    let idx = ring
        .checked_add(2)
        .ok_or(virtio_queue::Error::AddressOverflow)?;
    // Release: the elements above are visible before the index that publishes them.
    mem.store(next.0.to_le(), idx, Ordering::Release)
        .map_err(virtio_queue::Error::GuestMemory)?;
    q.set_next_used(next.0);
    Ok(())
}
