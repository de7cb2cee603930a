//! Test support: a minimal virtio driver writing real split-ring descriptor chains into a
//! `GuestMemoryMmap` (virtio 1.2, 2.7), so the device is tested through its queues exactly as a
//! guest drives it, malformed chains included. Compiled for tests and for the `fuzzing` feature
//! (the `vsock_packet` fuzz target drives the device through it).

use std::collections::HashMap;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::device::{Vsock, RX_QUEUE, TX_QUEUE};
use super::packet::{op, Packet, VsockHeader, HDR_SIZE, TYPE_STREAM};
use crate::irq::IrqLine;
use crate::virtio::{VirtioDevice, VirtioInterrupt};

/// `VRING_DESC_F_NEXT`.
pub const F_NEXT: u16 = 1;
/// `VRING_DESC_F_WRITE`.
pub const F_WRITE: u16 = 2;
const QSIZE: u16 = 256;
const MEM_SIZE: usize = 16 << 20;
const DATA_START: u64 = 0x10_0000;
/// Guest CID used by the tests.
pub const GUEST_CID: u64 = 3;

/// Drives a [`Vsock`] the way the Linux driver does.
pub struct Driver {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The device under test.
    pub dev: Vsock,
    next_desc: [u16; 3],
    avail_idx: [u16; 3],
    used_seen: [u16; 3],
    data_next: u64,
    rx_bufs: HashMap<u16, u64>,
}

fn base(q: usize) -> u64 {
    0x1_0000 * (q as u64 + 1)
}

impl Default for Driver {
    fn default() -> Self {
        Self::new()
    }
}

impl Driver {
    /// Memory, a device for CID 3, and all three queues set up and activated.
    pub fn new() -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let mut dev = Vsock::new(GUEST_CID as u32).unwrap();
        let irq = VirtioInterrupt::new(Box::new(IrqLine::new().unwrap()));
        let queues = (0..3).map(Self::queue).collect();
        dev.activate(mem.clone(), irq, queues).unwrap();
        Self {
            mem,
            dev,
            next_desc: [0; 3],
            avail_idx: [0; 3],
            used_seen: [0; 3],
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

    /// A header from the guest (CID 3) to the host (CID 2).
    pub fn hdr(src_port: u32, dst_port: u32, op: u16, buf_alloc: u32, fwd_cnt: u32) -> VsockHeader {
        VsockHeader {
            src_cid: GUEST_CID,
            dst_cid: 2,
            src_port,
            dst_port,
            type_: TYPE_STREAM,
            op,
            buf_alloc,
            fwd_cnt,
            ..Default::default()
        }
    }

    /// Sends one packet on the TX queue (header and payload in separate descriptors) and lets
    /// the device process it.
    pub fn send(&mut self, mut hdr: VsockHeader, payload: &[u8]) {
        hdr.len = payload.len() as u32;
        let h = self.alloc(&hdr.to_bytes());
        let mut bufs = vec![(h, HDR_SIZE as u32, false)];
        if !payload.is_empty() {
            let p = self.alloc(payload);
            bufs.push((p, payload.len() as u32, false));
        }
        self.add_chain(TX_QUEUE, &bufs);
        self.dev.process_queue(TX_QUEUE);
    }

    /// Shorthand for a control packet.
    pub fn send_op(&mut self, src_port: u32, dst_port: u32, op: u16, buf_alloc: u32, fwd_cnt: u32) {
        self.send(Self::hdr(src_port, dst_port, op, buf_alloc, fwd_cnt), &[]);
    }

    /// Offers `n` RX buffers of `payload` bytes (plus header) each.
    pub fn give_rx(&mut self, n: usize, payload: u32) {
        for _ in 0..n {
            let a = self.alloc(&vec![0u8; HDR_SIZE + payload as usize]);
            let head = self.add_chain(RX_QUEUE, &[(a, HDR_SIZE as u32 + payload, true)]);
            self.rx_bufs.insert(head, a);
        }
        self.dev.process_queue(RX_QUEUE);
    }

    /// Packets the device has put in RX buffers since the last call.
    pub fn recv(&mut self) -> Vec<Packet> {
        self.used(RX_QUEUE)
            .into_iter()
            .map(|(id, len)| {
                let a = self.rx_bufs[&(id as u16)];
                let mut hb = [0u8; HDR_SIZE];
                self.mem.read_slice(&mut hb, GuestAddress(a)).unwrap();
                let hdr = VsockHeader::from_bytes(&hb);
                assert_eq!(len as usize, HDR_SIZE + hdr.len as usize, "used len");
                let mut payload = vec![0u8; hdr.len as usize];
                self.mem
                    .read_slice(&mut payload, GuestAddress(a + HDR_SIZE as u64))
                    .unwrap();
                Packet { hdr, payload }
            })
            .collect()
    }

    /// Runs the host side and returns what reached the guest (given enough RX buffers).
    pub fn pump_host(&mut self) -> Vec<Packet> {
        self.give_rx(8, 4096);
        self.dev.process_backend();
        self.recv()
    }
}

impl Driver {
    /// [`Driver::pump_host`] until something reaches the guest (host threads may lag), for at
    /// most five seconds (it returns as soon as something arrives; a loaded machine can delay the
    /// host threads for a good part of a second).
    pub fn pump_host_until_some(&mut self) -> Vec<Packet> {
        for _ in 0..1000 {
            let got = self.pump_host();
            if !got.is_empty() {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Vec::new()
    }
}

/// Ops of `pkts`, for compact assertions.
pub fn ops(pkts: &[Packet]) -> Vec<u16> {
    pkts.iter().map(|p| p.hdr.op).collect()
}

/// Payload bytes of all RW packets, concatenated.
pub fn data(pkts: &[Packet]) -> Vec<u8> {
    pkts.iter()
        .filter(|p| p.hdr.op == op::RW)
        .flat_map(|p| p.payload.clone())
        .collect()
}
