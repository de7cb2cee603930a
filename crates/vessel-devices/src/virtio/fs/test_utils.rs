//! A minimal virtio-fs driver for tests: FUSE requests written into guest memory as descriptor
//! chains (one device-readable descriptor for the request, one device-writable for the reply) on
//! a split queue, and replies read back from the used ring.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{InHeader, OutHeader};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::irq::IrqLine;
use crate::virtio::VirtioInterrupt;

/// Guest memory size of the test guest.
pub const MEM_SIZE: usize = 16 << 20;
/// Where request and reply buffers start (the rings live below).
const BUF_BASE: u64 = 0x10_0000;
/// Size of each reply buffer.
const REPLY_LEN: u32 = 256 * 1024;
/// `VRING_DESC_F_NEXT` and `VRING_DESC_F_WRITE` (virtio 1.2, 2.7.5).
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// One split queue in its own guest memory, driven like a FUSE client would.
pub struct Driver {
    /// Guest memory (leaked so the mock queue can borrow it for the whole test).
    pub mem: &'static GuestMemoryMmap,
    mock: MockSplitQueue<'static, GuestMemoryMmap>,
    next_desc: u16,
    next_buf: u64,
    unique: u64,
    used_seen: u16,
    /// The device's interrupt, as the transport would own it.
    pub interrupt: Arc<VirtioInterrupt>,
    /// The eventfd behind `interrupt` (a second descriptor of it), to count its triggers.
    irq: EventFd,
}

impl Driver {
    /// A driver with a 256-entry queue at guest address 0.
    pub fn new() -> Driver {
        let mem: &'static GuestMemoryMmap = Box::leak(Box::new(
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap(),
        ));
        let line = IrqLine::new().unwrap();
        let irq = line.0.try_clone().unwrap();
        Driver {
            mem,
            mock: MockSplitQueue::create(mem, GuestAddress(0), 256),
            next_desc: 0,
            next_buf: BUF_BASE,
            unique: 0,
            used_seen: 0,
            interrupt: VirtioInterrupt::new(Box::new(line)),
            irq,
        }
    }

    /// A `Queue` over the driver's rings (what the transport hands to `activate`).
    pub fn queue(&self) -> Queue {
        self.mock.create_queue().unwrap()
    }

    fn alloc(&mut self, len: u32) -> u64 {
        let at = self.next_buf;
        self.next_buf += u64::from(len).next_multiple_of(64);
        assert!(
            self.next_buf < MEM_SIZE as u64,
            "test guest memory exhausted"
        );
        at
    }

    /// Posts request `opcode` on `nodeid` with argument bytes `args`; returns the unique id.
    pub fn post(&mut self, opcode: u32, nodeid: u64, args: &[u8]) -> (u64, u64) {
        self.unique += 1;
        let header = InHeader {
            len: (std::mem::size_of::<InHeader>() + args.len()) as u32,
            opcode,
            unique: self.unique,
            nodeid,
            uid: 0,
            gid: 0,
            pid: 1,
            padding: 0,
        };
        let mut req = header.as_slice().to_vec();
        req.extend_from_slice(args);
        let req_at = self.alloc(req.len() as u32);
        self.mem.write_slice(&req, GuestAddress(req_at)).unwrap();
        let reply_at = self.alloc(REPLY_LEN);
        let d = self.next_desc;
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(
                req_at,
                req.len() as u32,
                F_NEXT,
                d + 1,
            )),
            RawDescriptor::from(SplitDescriptor::new(reply_at, REPLY_LEN, F_WRITE, 0)),
        ];
        self.mock.add_desc_chains(&descs, d).unwrap();
        self.next_desc += 2;
        (self.unique, reply_at)
    }

    /// Waits (up to 5 s) for the next used element and returns its length.
    pub fn wait_used(&mut self) -> u32 {
        let used = self.mock.used_addr();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let idx: u16 = self.mem.read_obj(used.unchecked_add(2)).unwrap();
            if idx != self.used_seen {
                let slot = u64::from(self.used_seen % 256);
                let len: u32 = self
                    .mem
                    .read_obj(used.unchecked_add(4 + slot * 8 + 4))
                    .unwrap();
                self.used_seen = self.used_seen.wrapping_add(1);
                return len;
            }
            assert!(Instant::now() < deadline, "device used no chain within 5 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Guest address of the avail ring.
    pub fn mock_avail_addr(&self) -> GuestAddress {
        self.mock.avail_addr()
    }

    /// Guest address of the used ring.
    pub fn mock_used_addr(&self) -> GuestAddress {
        self.mock.used_addr()
    }

    /// Interrupts raised on the device's line since the last call.
    pub fn irq_count(&self) -> u64 {
        self.irq.read().unwrap_or(0)
    }

    /// Reads a reply at `at` of used length `len`: its header and its body.
    pub fn reply(&self, at: u64, len: u32) -> (OutHeader, Vec<u8>) {
        let h: OutHeader = self.mem.read_obj(GuestAddress(at)).unwrap();
        let hl = std::mem::size_of::<OutHeader>();
        assert!(len as usize >= hl, "reply of {len} bytes has no header");
        let mut body = vec![0u8; len as usize - hl];
        self.mem
            .read_slice(&mut body, GuestAddress(at + hl as u64))
            .unwrap();
        (h, body)
    }
}

/// Reads a `T` from the start of `bytes`.
pub fn obj<T: ByteValued>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= std::mem::size_of::<T>(), "reply too short");
    *T::from_slice(&bytes[..std::mem::size_of::<T>()]).unwrap()
}

/// The arguments of a CREATE of `name` (`O_RDWR | O_CREAT`, a regular file of `mode`).
pub fn create_args(name: &str, mode: u32) -> Vec<u8> {
    use fuse_backend_rs::abi::fuse_abi::CreateIn;
    let mut args = CreateIn {
        flags: (libc::O_RDWR | libc::O_CREAT) as u32,
        mode: libc::S_IFREG | mode,
        umask: 0,
        fuse_flags: 0,
    }
    .as_slice()
    .to_vec();
    args.extend_from_slice(&cname(name));
    args
}

/// `name` with its NUL terminator, as LOOKUP and CREATE carry it.
pub fn cname(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

impl Driver {
    /// Posts a chain whose readable descriptor lies beyond guest memory.
    pub fn post_raw_outside(&mut self) {
        let d = self.next_desc;
        let reply_at = self.alloc(64);
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(
                MEM_SIZE as u64 + 0x1000,
                64,
                F_NEXT,
                d + 1,
            )),
            RawDescriptor::from(SplitDescriptor::new(reply_at, 64, F_WRITE, 0)),
        ];
        self.mock.add_desc_chains(&descs, d).unwrap();
        self.next_desc += 2;
    }
}
