//! Test support: a fake backend whose packets the test queues and inspects, and a minimal
//! virtio driver writing real split-ring descriptor chains into a `GuestMemoryMmap` (virtio
//! 1.2, 2.7), so the device is driven through its queues exactly as a guest drives it,
//! malformed chains included. Compiled for tests and for the `fuzzing` feature (the
//! `net_queues` fuzz target drives the device through it).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::device::{Net, NetBackend, OFFERED_FEATURES, RX_QUEUE, TX_QUEUE};
use super::packet::{HDR_LEN, NUM_BUFFERS_OFFSET};
use crate::irq::IrqLine;
use crate::virtio::{VirtioDevice, VirtioInterrupt};

/// `VRING_DESC_F_NEXT`.
pub const F_NEXT: u16 = 1;
/// `VRING_DESC_F_WRITE`.
pub const F_WRITE: u16 = 2;
/// Size of the driver's queues.
pub const QSIZE: u16 = 256;
/// Guest memory size.
pub const MEM_SIZE: usize = 16 << 20;
/// First guest address [`Driver::alloc`] hands out (below it: the rings).
pub const DATA_START: u64 = 0x10_0000;
/// The MAC the tests give the device.
pub const MAC: [u8; 6] = [0x02, 0x76, 0, 0, 0, 1];

/// What the fake backend holds, shared with the test.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Packets waiting to be read by the device, oldest first.
    pub rx: VecDeque<Vec<u8>>,
    /// Packets the device wrote, oldest first.
    pub tx: Vec<Vec<u8>>,
    /// Every `set_offloads` call's flags.
    pub offloads: Vec<u32>,
    /// `read_packet` calls so far (a spinning device shows up here).
    pub reads: usize,
    /// When set, `write_packet` fails with this error kind.
    pub tx_error: Option<io::ErrorKind>,
    /// `close` was called.
    pub closed: bool,
}

/// A backend in memory; its fd (an eventfd) is readable while packets wait in `rx`.
#[derive(Clone)]
pub struct FakeBackend {
    /// The shared state.
    pub state: Arc<Mutex<FakeState>>,
    ready: Arc<EventFd>,
}

impl FakeBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            ready: Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd")),
        }
    }

    /// Queues `packet` (header and frame) for the device.
    pub fn push(&self, packet: Vec<u8>) {
        self.lock().rx.push_back(packet);
        self.ready.write(1).expect("eventfd write");
    }

    /// Locks the shared state.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for FakeBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl NetBackend for FakeBackend {
    fn read_packet(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.lock();
        s.reads += 1;
        let Some(p) = s.rx.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        if s.rx.is_empty() {
            let _ = self.ready.read();
        }
        let n = p.len().min(buf.len());
        buf[..n].copy_from_slice(&p[..n]);
        Ok(n)
    }

    fn write_packet(&mut self, packet: &[u8]) -> io::Result<usize> {
        let mut s = self.lock();
        if let Some(k) = s.tx_error {
            return Err(k.into());
        }
        s.tx.push(packet.to_vec());
        Ok(packet.len())
    }

    fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
        self.lock().offloads.push(flags);
        Ok(())
    }

    fn ready_fd(&self) -> Option<RawFd> {
        Some(self.ready.as_raw_fd())
    }

    fn close(&mut self) {
        self.lock().closed = true;
    }
}

/// A 12-byte header (all zero: no offload) followed by `frame`.
pub fn packet(frame: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; HDR_LEN];
    p.extend_from_slice(frame);
    p
}

/// A frame of `len` bytes whose content depends on `seed` and the position.
pub fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Drives a [`Net`] (over a [`FakeBackend`] unless told otherwise) the way the Linux driver
/// does.
pub struct Driver<B: NetBackend = FakeBackend> {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The device under test.
    pub dev: Net<B>,
    /// Its interrupt.
    pub irq: Arc<VirtioInterrupt>,
    next_desc: [u16; 2],
    avail_idx: [u16; 2],
    used_seen: [u16; 2],
    data_next: u64,
    /// RX chains offered and not yet returned: head -> (address, size) of the single buffer.
    pub rx_bufs: HashMap<u16, (u64, u32)>,
}

fn base(q: usize) -> u64 {
    0x1_0000 * (q as u64 + 1)
}

impl Driver<FakeBackend> {
    /// Memory, a device over a fake backend that negotiated every offered feature, both
    /// queues activated.
    pub fn new() -> Self {
        Self::with_features(OFFERED_FEATURES)
    }

    /// As [`Self::new`], the driver accepting `features` only.
    pub fn with_features(features: u64) -> Self {
        Self::with_backend(FakeBackend::new(), features)
    }

    /// The fake backend (shared with the device).
    pub fn fake(&self) -> &FakeBackend {
        self.dev.backend()
    }
}

impl<B: NetBackend> Driver<B> {
    /// Memory and a device over `backend` whose driver accepted `features`, both queues
    /// activated.
    pub fn with_backend(backend: B, features: u64) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let mut dev = Net::new(MAC, backend).unwrap();
        dev.ack_features(features);
        let irq = VirtioInterrupt::new(Box::new(IrqLine::new().unwrap()));
        let queues = (0..2).map(Self::queue).collect();
        dev.activate(mem.clone(), irq.clone(), queues).unwrap();
        Self {
            mem,
            dev,
            irq,
            next_desc: [0; 2],
            avail_idx: [0; 2],
            used_seen: [0; 2],
            data_next: DATA_START,
            rx_bufs: HashMap::new(),
        }
    }

    /// Queue `q` as the driver configured it.
    pub fn queue(q: usize) -> Queue {
        let mut queue = Queue::new(QSIZE).unwrap();
        queue.set_size(QSIZE);
        let b = base(q);
        queue.set_desc_table_address(Some(b as u32), Some(0));
        queue.set_avail_ring_address(Some((b + 0x1000) as u32), Some(0));
        queue.set_used_ring_address(Some((b + 0x2000) as u32), Some(0));
        queue.set_ready(true);
        queue
    }

    /// Guest memory bytes [`Self::alloc`] can still hand out.
    pub fn free_bytes(&self) -> u64 {
        MEM_SIZE as u64 - self.data_next
    }

    /// Copies `bytes` into a fresh guest buffer; returns its address.
    pub fn alloc(&mut self, bytes: &[u8]) -> u64 {
        let a = self.data_next;
        self.mem.write_slice(bytes, GuestAddress(a)).unwrap();
        self.data_next += (bytes.len() as u64).max(1).next_multiple_of(16);
        a
    }

    /// Writes raw descriptors `(addr, len, flags, next)` at the next free table slots and
    /// publishes the first as a chain head. Returns the head index.
    pub fn add_raw(&mut self, q: usize, descs: &[(u64, u32, u16, u16)]) -> u16 {
        let head = self.next_desc[q];
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let slot = (head + i as u16) % QSIZE;
            let d = base(q) + u64::from(slot) * 16;
            self.mem.write_obj(addr, GuestAddress(d)).unwrap();
            self.mem.write_obj(len, GuestAddress(d + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
            self.mem.write_obj(next, GuestAddress(d + 14)).unwrap();
        }
        self.next_desc[q] = (head + descs.len() as u16) % QSIZE;
        let avail = base(q) + 0x1000;
        let idx = self.avail_idx[q];
        self.mem
            .write_obj(head, GuestAddress(avail + 4 + u64::from(idx % QSIZE) * 2))
            .unwrap();
        self.avail_idx[q] = idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx[q], GuestAddress(avail + 2))
            .unwrap();
        head
    }

    /// Publishes a well-formed chain of `(addr, len, writable)` buffers.
    pub fn add_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc[q];
        let n = bufs.len();
        let descs: Vec<(u64, u32, u16, u16)> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(a, l, w))| {
                let mut f = if w { F_WRITE } else { 0 };
                if i + 1 < n {
                    f |= F_NEXT;
                }
                (a, l, f, (head + i as u16 + 1) % QSIZE)
            })
            .collect();
        self.add_raw(q, &descs)
    }

    /// New used entries `(id, len)` of queue `q` since the last call.
    pub fn used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let used = base(q) + 0x2000;
        let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen[q] != idx {
            let e = used + 4 + u64::from(self.used_seen[q] % QSIZE) * 8;
            out.push((
                self.mem.read_obj(GuestAddress(e)).unwrap(),
                self.mem.read_obj(GuestAddress(e + 4)).unwrap(),
            ));
            self.used_seen[q] = self.used_seen[q].wrapping_add(1);
        }
        out
    }

    /// Puts `packet` on the TX queue split at `splits` (offsets into it) and kicks TX.
    pub fn send(&mut self, packet: &[u8], splits: &[usize]) -> u16 {
        let mut bufs = Vec::new();
        let mut start = 0;
        for &end in splits.iter().chain(std::iter::once(&packet.len())) {
            let end = end.clamp(start, packet.len());
            let a = self.alloc(&packet[start..end]);
            bufs.push((a, (end - start) as u32, false));
            start = end;
        }
        let head = self.add_chain(TX_QUEUE, &bufs);
        self.dev.process_queue(TX_QUEUE);
        head
    }

    /// Offers `n` RX chains of one `size`-byte buffer each, without kicking.
    pub fn offer_rx(&mut self, n: usize, size: u32) {
        for _ in 0..n {
            let a = self.alloc(&vec![0u8; size as usize]);
            let head = self.add_chain(RX_QUEUE, &[(a, size, true)]);
            self.rx_bufs.insert(head, (a, size));
        }
    }

    /// [`Self::offer_rx`] and a kick of the RX queue.
    pub fn give_rx(&mut self, n: usize, size: u32) {
        self.offer_rx(n, size);
        self.dev.process_queue(RX_QUEUE);
    }

    /// The packets (header and frame) the device put in RX buffers since the last call, each
    /// with the number of buffers it used; checks that `num_buffers` matches the used entries.
    pub fn recv(&mut self) -> Vec<(Vec<u8>, u16)> {
        let mut used = self.used(RX_QUEUE).into_iter();
        let mut out = Vec::new();
        while let Some((id, len)) = used.next() {
            let mut p = self.take_rx(id, len);
            let n = u16::from_le_bytes([p[NUM_BUFFERS_OFFSET], p[NUM_BUFFERS_OFFSET + 1]]);
            assert!(n >= 1, "num_buffers is at least 1");
            for _ in 1..n {
                let (id, len) = used.next().expect("num_buffers used entries");
                p.extend(self.take_rx(id, len));
            }
            out.push((p, n));
        }
        out
    }

    fn take_rx(&mut self, id: u32, len: u32) -> Vec<u8> {
        let (a, size) = self
            .rx_bufs
            .remove(&(id as u16))
            .expect("used id is an outstanding rx chain");
        assert!(
            len <= size,
            "used length {len} beyond the {size}-byte buffer"
        );
        let mut b = vec![0u8; len as usize];
        self.mem.read_slice(&mut b, GuestAddress(a)).unwrap();
        b
    }
}

impl Default for Driver<FakeBackend> {
    fn default() -> Self {
        Self::new()
    }
}
