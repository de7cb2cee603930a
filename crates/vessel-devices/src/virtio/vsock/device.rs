//! The vsock device: three queues (0 RX, 1 TX, 2 event; virtio 1.2, 5.10.2), config space with
//! the guest CID (5.10.4), and the glue between the queues and the [`Muxer`].

use std::io;
use std::os::fd::RawFd;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::host::{Shared, VsockHandle};
use super::muxer::Muxer;
use super::packet::{read_tx, write_rx};
use crate::virtio::{
    VirtioDevice, VirtioError, VirtioInterrupt, INT_USED_RING, VIRTIO_F_VERSION_1,
};

/// virtio device ID of vsock.
pub const VSOCK_DEVICE_ID: u32 = 19;
/// Queue indexes.
pub const RX_QUEUE: usize = 0;
/// TX queue index.
pub const TX_QUEUE: usize = 1;
/// Event queue index.
pub const EVENT_QUEUE: usize = 2;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];

struct Active {
    mem: GuestMemoryMmap,
    irq: Arc<VirtioInterrupt>,
    queues: Vec<Queue>,
}

/// The virtio-vsock device.
pub struct Vsock {
    cid: u64,
    shared: Arc<Shared>,
    muxer: Muxer,
    active: Option<Active>,
    /// Signalled by a guest kick of queue `i` (non-blocking; see [`super::event_handler`]).
    pub(super) queue_evts: Vec<EventFd>,
}

impl Vsock {
    /// A device for guest CID `cid`.
    pub fn new(cid: u32) -> io::Result<Self> {
        let shared = Shared::new()?;
        let queue_evts = QUEUE_SIZES
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<io::Result<_>>()?;
        Ok(Self {
            cid: u64::from(cid),
            muxer: Muxer::new(cid, shared.clone())?,
            shared,
            active: None,
            queue_evts,
        })
    }

    /// The host-side API (Clone + Send).
    pub fn handle(&self) -> VsockHandle {
        VsockHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves `CONNECT <port>\n` clients on `listener`.
    pub fn set_uds_listener(&mut self, listener: UnixListener) -> io::Result<()> {
        self.muxer.set_uds_listener(listener)
    }

    /// Fd that becomes readable when host sockets or requests need [`Self::process_backend`].
    pub fn backend_fd(&self) -> RawFd {
        self.muxer.epoll_fd()
    }

    /// True between a successful activation and the next reset.
    pub fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    /// The muxer (tests inspect connection counts).
    pub fn muxer(&self) -> &Muxer {
        &self.muxer
    }

    /// Marks the VM as gone: `connect` fails from now on and blocked `accept`s return
    /// `NotConnected`.
    pub fn close(&self) {
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Handles a notification of queue `index` (from an ioeventfd or a QueueNotify write).
    pub fn process_queue(&mut self, index: usize) {
        match index {
            TX_QUEUE => {
                self.process_tx();
                self.process_rx();
            }
            RX_QUEUE => self.process_rx(),
            _ => {}
        }
    }

    /// Handles ready host sockets and host requests, then fills RX buffers.
    pub fn process_backend(&mut self) {
        self.muxer.handle_events();
        self.process_rx();
    }

    /// Consumes every TX chain; malformed ones are logged and returned unread.
    pub fn process_tx(&mut self) {
        let Some(a) = &mut self.active else { return };
        let Active { mem, irq, queues } = a;
        let q = &mut queues[TX_QUEUE];
        let mut used = false;
        while let Some(chain) = q.pop_descriptor_chain(&*mem) {
            let head = chain.head_index();
            match read_tx(chain) {
                Ok(pkt) => self.muxer.on_guest_packet(pkt),
                Err(e) => log::warn!("vsock: dropping tx chain {head}: {e}"),
            }
            if let Err(e) = q.add_used(&*mem, head, 0) {
                log::warn!("vsock: cannot return tx chain {head}: {e}");
            }
            used = true;
        }
        if used {
            irq.signal(INT_USED_RING);
        }
    }

    /// Moves queued packets into the guest's RX buffers while both exist.
    pub fn process_rx(&mut self) {
        // Draining may queue more (credit updates, data): go again while buffers last. A loop,
        // not recursion: a guest that keeps adding buffers must not deepen the stack.
        while self.process_rx_once() && self.muxer.has_rx() && self.rx_has_buffers() {}
    }

    /// One pass over the RX queue; whether any chain was used.
    fn process_rx_once(&mut self) -> bool {
        let Some(a) = &mut self.active else {
            return false;
        };
        let Active { mem, irq, queues } = a;
        let q = &mut queues[RX_QUEUE];
        let mut used = false;
        while self.muxer.has_rx() {
            let Some(chain) = q.pop_descriptor_chain(&*mem) else {
                break;
            };
            let head = chain.head_index();
            let mut pkt = self.muxer.pop_rx().expect("has_rx");
            let len = match write_rx(chain, &pkt) {
                Ok((len, n)) => {
                    if n < pkt.payload.len() {
                        pkt.payload.drain(..n);
                        self.muxer.push_front_rx(pkt);
                    }
                    len
                }
                Err(e) => {
                    log::warn!("vsock: unusable rx chain {head}: {e}");
                    self.muxer.push_front_rx(pkt);
                    0
                }
            };
            if let Err(e) = q.add_used(&*mem, head, len) {
                log::warn!("vsock: cannot return rx chain {head}: {e}");
            }
            used = true;
        }
        if used {
            irq.signal(INT_USED_RING);
            self.muxer.rx_drained();
        }
        used
    }

    fn rx_has_buffers(&mut self) -> bool {
        let Some(a) = &mut self.active else {
            return false;
        };
        let Active { mem, queues, .. } = a;
        let q = &queues[RX_QUEUE];
        q.avail_idx(&*mem, std::sync::atomic::Ordering::Acquire)
            .map(|idx| idx.0 != q.next_avail())
            .unwrap_or(false)
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VSOCK_DEVICE_ID
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cfg = self.cid.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| cfg.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

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
        self.active = Some(Active { mem, irq, queues });
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.muxer.reset();
    }

    fn queue_notify(&mut self, index: u16) {
        self.process_queue(index.into());
    }
}
