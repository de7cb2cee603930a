//! Fuzzing checks for the guest-controlled side of vsock (issue 3: descriptor chains and vsock
//! headers are parsed within bounds and never panic).
//!
//! [`check_vsock`] is the body of the `vsock_packet` libFuzzer target (`fuzz/`, run by
//! `make fuzz`) and of this module's tests, which replay the checked-in seed corpus
//! (`fuzz/corpus/vsock_packet/`) plus a few thousand deterministic mutations of it on every
//! `cargo test`. It drives a real [`super::Vsock`] through real split-ring descriptor chains in a
//! `GuestMemoryMmap` ([`super::test_utils::Driver`]), with a host listener on [`LISTEN_PORT`]
//! whose accepted streams the input can write to, close or drain.
//!
//! Input: a sequence of records, each a tag byte (`tag % 6` picks the kind) and its fields, all
//! little endian; a record cut short by the end of the input reads zeros.
//!
//! | kind | fields | what the guest does |
//! |---|---|---|
//! | 0 packet | bits u8, op u8, flags u8, buf_alloc u32, fwd_cnt u32, payload len u16, [src cid u64], [type u16], [len u32], split count u8 and split points u16, payload, [repeat u8] | a well-laid TX packet split over 1-4 descriptors; `bits`: 0-1 source port 2000+n, 2 destination [`LISTEN_PORT`] (else one nobody listens on), 3 raw source CID, 4 raw type, 5 header `len` not the payload's, 6 sent again 16 * repeat times |
//! | 1 raw tx | count u8, then (addr u32, len u32, flags u16, next u16) each | 1-4 hostile descriptors on the TX queue |
//! | 2 rx | count u8, then (size u16, readable u8) each | 1-4 RX buffers of `size` bytes, readable-only if the low bit is set |
//! | 3 raw rx | as raw tx | hostile descriptors on the RX queue |
//! | 4 host | action u8, [len u8, bytes] | on accepted stream `action / 4`: 0 write bytes, 1 shut down writing, 2 close, 3 read what is there |
//! | 5 backend | | the VMM's event loop runs the muxer once |

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};

use super::device::{RX_QUEUE, TX_QUEUE};
use super::host::VsockListener;
use super::muxer::{HOST_CID, RX_BACKLOG, RX_HARD_LIMIT};
use super::packet::{VsockHeader, HDR_SIZE, MAX_PKT_PAYLOAD, TYPE_STREAM};
use super::test_utils::{Driver, GUEST_CID};

/// Host port the check listens on, so guest REQUESTs to it open real connections.
pub const LISTEN_PORT: u32 = 1024;
/// RX descriptors the check keeps outstanding at most (the ring has 256 slots).
const MAX_RX_OUTSTANDING: usize = 128;
/// Guest memory kept free for the device's own queues' sake (see [`Driver::free_bytes`]).
const MEM_RESERVE: u64 = 1 << 20;

/// The fuzz input, read field by field; fields past its end read as zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    fn le<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let b = self.bytes(N);
        out[..b.len()].copy_from_slice(b);
        out
    }

    fn u8(&mut self) -> u8 {
        self.le::<1>()[0]
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.le())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.le())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.le())
    }
}

/// An RX chain the check has published and the device has not returned yet.
enum RxBuf {
    /// One buffer at `addr` of `size` bytes, device-writable or not.
    Plain {
        addr: u64,
        size: u32,
        writable: bool,
    },
    /// Hostile descriptors: only the id and the length bound are checked.
    Raw,
}

/// The state of one run: the driver, the host side, and what the device owes back.
struct Run {
    d: Driver,
    listener: VsockListener,
    streams: Vec<UnixStream>,
    tx_heads: Vec<u16>,
    rx_out: HashMap<u16, (RxBuf, usize)>,
    rx_descs: usize,
    records: usize,
}

/// The `vsock_packet` check: plays the records of `data` (layout in the module docs) against a
/// fresh device and panics if an invariant breaks:
///
/// - nothing panics, whatever the chains and headers;
/// - every TX chain is consumed and returned once, in order, with used length 0;
/// - every used RX entry names a chain the guest offered and not yet got back; a plain writable
///   buffer holds a packet from the host CID to the guest CID, of stream type and a known op,
///   whose header `len` is the used length minus the header, at most the buffer and
///   [`MAX_PKT_PAYLOAD`], and non-zero only for data; a readable-only buffer is never written;
/// - the packets queued for the guest stay bounded ([`RX_HARD_LIMIT`] plus the data backlog and
///   one per connection the input could have opened), however the guest floods and withholds
///   RX buffers.
pub fn check_vsock(data: &[u8]) {
    let d = Driver::new();
    let listener = d
        .dev
        .handle()
        .listen(LISTEN_PORT)
        .expect("fresh device has no listener");
    let mut run = Run {
        d,
        listener,
        streams: Vec::new(),
        tx_heads: Vec::new(),
        rx_out: HashMap::new(),
        rx_descs: 0,
        records: 0,
    };
    let mut input = Input(data);
    while !input.0.is_empty() {
        run.record(&mut input);
        run.records += 1;
        run.check();
    }
}

impl Run {
    fn record(&mut self, input: &mut Input<'_>) {
        match input.u8() % 6 {
            0 => self.packet(input),
            1 => {
                let descs = raw_descs(input);
                self.tx_heads.push(self.d.add_raw(TX_QUEUE, &descs));
                self.d.dev.process_queue(TX_QUEUE);
            }
            2 => self.rx(input),
            3 => {
                let descs = raw_descs(input);
                if self.rx_descs + descs.len() <= MAX_RX_OUTSTANDING {
                    let head = self.d.add_raw(RX_QUEUE, &descs);
                    self.rx_out.insert(head, (RxBuf::Raw, descs.len()));
                    self.rx_descs += descs.len();
                    self.d.dev.process_queue(RX_QUEUE);
                }
            }
            4 => self.host(input),
            _ => self.d.dev.process_backend(),
        }
    }

    fn packet(&mut self, input: &mut Input<'_>) {
        let bits = input.u8();
        let op = u16::from(input.u8() % 9);
        let flags = u32::from(input.u8());
        let buf_alloc = input.u32();
        let fwd_cnt = input.u32();
        let plen = usize::from(input.u16());
        let dst_port = if bits & 4 != 0 {
            LISTEN_PORT
        } else {
            LISTEN_PORT + 1
        };
        let mut hdr = Driver::hdr(2000 + u32::from(bits & 3), dst_port, op, buf_alloc, fwd_cnt);
        hdr.flags = flags;
        if bits & 8 != 0 {
            hdr.src_cid = input.u64();
        }
        if bits & 16 != 0 {
            hdr.type_ = input.u16();
        }
        let lie = (bits & 32 != 0).then(|| input.u32());
        let splits: Vec<usize> = (0..input.u8() % 4)
            .map(|_| usize::from(input.u16()))
            .collect();
        let payload = input.bytes(plen).to_vec();
        hdr.len = lie.unwrap_or(payload.len() as u32);
        let mut wire = hdr.to_bytes().to_vec();
        wire.extend_from_slice(&payload);
        if wire.len() as u64 + MEM_RESERVE > self.d.free_bytes() {
            return;
        }
        let mut cuts: Vec<usize> = splits.into_iter().map(|s| s % (wire.len() + 1)).collect();
        cuts.push(0);
        cuts.push(wire.len());
        cuts.sort_unstable();
        let bufs: Vec<(u64, u32, bool)> = cuts
            .windows(2)
            .map(|w| {
                let part = &wire[w[0]..w[1]];
                (self.d.alloc(part), part.len() as u32, false)
            })
            .collect();
        let repeat = if bits & 64 != 0 {
            16 * usize::from(input.u8())
        } else {
            0
        };
        for _ in 0..=repeat {
            self.tx_heads.push(self.d.add_chain(TX_QUEUE, &bufs));
            self.d.dev.process_queue(TX_QUEUE);
            self.check_tx();
        }
    }

    fn rx(&mut self, input: &mut Input<'_>) {
        for _ in 0..=input.u8() % 4 {
            let size = input.u16();
            let writable = input.u8() & 1 == 0;
            if self.rx_descs >= MAX_RX_OUTSTANDING
                || u64::from(size) + MEM_RESERVE > self.d.free_bytes()
            {
                return;
            }
            let addr = self.d.alloc(&vec![0u8; usize::from(size)]);
            let head = self
                .d
                .add_chain(RX_QUEUE, &[(addr, u32::from(size), writable)]);
            let buf = RxBuf::Plain {
                addr,
                size: u32::from(size),
                writable,
            };
            self.rx_out.insert(head, (buf, 1));
            self.rx_descs += 1;
        }
        self.d.dev.process_queue(RX_QUEUE);
    }

    fn host(&mut self, input: &mut Input<'_>) {
        let action = input.u8();
        let bytes = if action % 4 == 0 {
            let n = usize::from(input.u8());
            input.bytes(n).to_vec()
        } else {
            Vec::new()
        };
        if !self.streams.is_empty() {
            let i = usize::from(action / 4) % self.streams.len();
            // The streams are non-blocking: a full socket buffer is the guest's back-pressure.
            match action % 4 {
                0 => drop(self.streams[i].write(&bytes)),
                1 => drop(self.streams[i].shutdown(std::net::Shutdown::Write)),
                2 => drop(self.streams.swap_remove(i)),
                _ => {
                    let mut buf = [0u8; 4096];
                    while matches!(self.streams[i].read(&mut buf), Ok(n) if n > 0) {}
                }
            }
        }
        self.d.dev.process_backend();
    }

    /// Every TX chain published so far came back, in order, with length 0.
    fn check_tx(&mut self) {
        let used = self.d.used(TX_QUEUE);
        let want: Vec<(u32, u32)> = self.tx_heads.drain(..).map(|h| (u32::from(h), 0)).collect();
        assert_eq!(used, want, "tx chains returned");
    }

    fn check(&mut self) {
        self.check_tx();
        while let Ok(s) = self.listener.accept_timeout(Duration::ZERO) {
            s.set_nonblocking(true)
                .expect("set accepted stream non-blocking");
            self.streams.push(s);
        }
        for (id, len) in self.d.used(RX_QUEUE) {
            let head = u16::try_from(id).expect("used id fits the ring");
            let (buf, descs) = self
                .rx_out
                .remove(&head)
                .unwrap_or_else(|| panic!("device returned rx chain {id} it was not given"));
            self.rx_descs -= descs;
            let RxBuf::Plain {
                addr,
                size,
                writable,
            } = buf
            else {
                continue;
            };
            if !writable || size < HDR_SIZE as u32 {
                assert_eq!(len, 0, "unusable rx buffer of {size} bytes written");
                continue;
            }
            assert!(
                len as usize >= HDR_SIZE && len <= size,
                "used len {len} of {size}"
            );
            let mut hb = [0u8; HDR_SIZE];
            self.d
                .mem
                .read_slice(&mut hb, GuestAddress(addr))
                .expect("buffer in memory");
            let h = VsockHeader::from_bytes(&hb);
            assert_eq!((h.src_cid, h.dst_cid), (HOST_CID, GUEST_CID), "{h:?}");
            assert_eq!(h.type_, TYPE_STREAM, "{h:?}");
            assert!((1..=7).contains(&h.op), "{h:?}");
            assert_eq!(h.len as usize, len as usize - HDR_SIZE, "{h:?}");
            assert!(h.len <= MAX_PKT_PAYLOAD, "{h:?}");
            if h.op != super::packet::op::RW {
                assert_eq!(h.len, 0, "control packet with payload: {h:?}");
            }
        }
        let backlog = self.d.dev.muxer().rx_backlog();
        let bound = RX_HARD_LIMIT + RX_BACKLOG + self.records;
        assert!(
            backlog <= bound,
            "{backlog} packets queued for the guest, bound {bound}"
        );
    }
}

/// 1 to 4 raw descriptors `(addr, len, flags, next)` from the input; addresses keep 25 bits, so
/// about half land in the 16 MiB of guest memory.
fn raw_descs(input: &mut Input<'_>) -> Vec<(u64, u32, u16, u16)> {
    (0..=input.u8() % 4)
        .map(|_| {
            (
                u64::from(input.u32() & 0x01ff_ffff),
                input.u32(),
                input.u16(),
                input.u16(),
            )
        })
        .collect()
}

/// The seed corpus of `vsock_packet` (also checked in under `fuzz/corpus/vsock_packet/`, see the
/// ignored test `write_seed_corpus`): a connection with data both ways, a refused connection, a
/// malformed chain.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let packet = |bits: u8, op: u16, payload: &[u8], splits: &[u16]| {
        let mut v = vec![0, bits, op as u8, 0];
        v.extend_from_slice(&(64u32 * 1024).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        v.push(splits.len() as u8);
        for s in splits {
            v.extend_from_slice(&s.to_le_bytes());
        }
        v.extend_from_slice(payload);
        v
    };
    let rx = |n: u8, size: u16| {
        let mut v = vec![2, n - 1];
        for _ in 0..n {
            v.extend_from_slice(&size.to_le_bytes());
            v.push(0);
        }
        v
    };
    use super::packet::op;
    let mut connect = packet(4, op::REQUEST, b"", &[]);
    connect.extend(rx(2, 4096));
    connect.extend(packet(4, op::RW, b"hello host", &[20, 50]));
    connect.extend([4, 0, 5]);
    connect.extend_from_slice(b"howdy");
    connect.push(5);
    connect.extend(rx(4, 4096));
    connect.extend(packet(4, op::CREDIT_REQUEST, b"", &[]));
    connect.extend(packet(4, op::SHUTDOWN, b"", &[]));
    connect.extend([4, 3]);
    let mut refused = packet(1, op::REQUEST, b"", &[]);
    refused.extend(rx(1, 256));
    let mut raw = vec![1, 1];
    for (addr, len, flags, next) in [(0x10_0000u32, 44u32, 1u16, 1u16), (0x10_1000, 8, 0, 0)] {
        raw.extend_from_slice(&addr.to_le_bytes());
        raw.extend_from_slice(&len.to_le_bytes());
        raw.extend_from_slice(&flags.to_le_bytes());
        raw.extend_from_slice(&next.to_le_bytes());
    }
    raw.extend(rx(1, 64));
    // 4081 credit requests on one connection with no RX buffer: close to the backlog bound.
    let mut flood = packet(4, op::REQUEST, b"", &[]);
    flood.extend(packet(4 | 64, op::CREDIT_REQUEST, b"", &[]));
    flood.push(255);
    vec![
        ("connect-data-shutdown", connect),
        ("refused", refused),
        ("raw-chain", raw),
        ("credit-request-flood", flood),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use vessel_protocol::fuzzing::XorShift;

    fn corpus_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/vsock_packet")
    }

    fn corpus() -> Vec<Vec<u8>> {
        let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
            .expect("fuzz/corpus/vsock_packet is checked in")
            .map(|e| e.expect("corpus entry").path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read(p).expect("read corpus file"))
            .collect()
    }

    #[test]
    fn seed_corpus_is_checked_in_and_passes() {
        let corpus = corpus();
        for (name, seed) in seeds() {
            assert!(
                corpus.contains(&seed),
                "seed {name} missing from {}; run `cargo test -p vessel-devices -- --ignored write_seed_corpus`",
                corpus_dir().display()
            );
        }
        for input in &corpus {
            check_vsock(input);
        }
    }

    #[test]
    fn mutated_corpus_keeps_invariants() {
        let corpus = corpus();
        let mut rng = XorShift(0x0000_ddc0_ffee_5eed);
        for i in 0..2000 {
            let input = rng.mutate(&corpus[i % corpus.len()]);
            check_vsock(&input);
        }
    }

    #[test]
    #[ignore = "writes the seed corpus into fuzz/corpus; run by hand after changing seeds()"]
    fn write_seed_corpus() {
        std::fs::create_dir_all(corpus_dir()).unwrap();
        for (name, seed) in seeds() {
            std::fs::write(corpus_dir().join(format!("seed-{name}")), seed).unwrap();
        }
    }
}
