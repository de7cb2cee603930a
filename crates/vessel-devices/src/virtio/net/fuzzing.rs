//! Fuzzing checks for the guest-controlled side of virtio-net: descriptor chains on both
//! queues, and the frames the host sends, are handled within bounds and never panic.
//!
//! [`check_net`] is the body of the `net_queues` libFuzzer target (`fuzz/`, run by
//! `make fuzz`) and of this module's tests, which replay the checked-in seed corpus
//! (`fuzz/corpus/net_queues/`) plus deterministic mutations of it on every `cargo test`. It
//! drives a real [`super::Net`] over a [`FakeBackend`] through real split-ring descriptor chains
//! in a `GuestMemoryMmap` ([`super::test_utils::Driver`]).
//!
//! Input: a sequence of records, each a tag byte (`tag % 6` picks the kind) and its fields, all
//! little endian; a record cut short by the end of the input reads zeros.
//!
//! | kind | fields | what happens |
//! |---|---|---|
//! | 0 tx | len u16, long u8, seed u8, split count u8 and split points u16 | a well-laid TX chain of `len` bytes (plus 70,000 if `long` is odd: too long) over 1-4 descriptors, then a TX kick |
//! | 1 raw tx | count u8, then (addr u32, len u32, flags u16, next u16) each | 1-4 hostile descriptors on the TX queue, then a TX kick |
//! | 2 rx | count u8, then (size u16, readable u8) each | 1-4 one-buffer RX chains (readable-only if the low bit is set), then an RX kick |
//! | 3 raw rx | as raw tx | hostile descriptors on the RX queue, then an RX kick |
//! | 4 host | len u16, seed u8 | the backend gets a packet of `len` bytes (shorter than a header too) |
//! | 5 event | what u8 | `what % 3`: the device thread serves the backend, an RX kick, a TX kick |

use std::collections::{HashMap, VecDeque};

use vm_memory::{Bytes, GuestAddress};

use super::device::{NetStats, RX_QUEUE, TX_QUEUE};
use super::event_handler::BACKEND;
use super::packet::{HDR_LEN, MAX_PACKET_LEN, NUM_BUFFERS_OFFSET};
use super::test_utils::{frame, Driver, FakeBackend, F_WRITE};
use crate::event::EventHandler;

/// RX descriptors the check keeps outstanding at most (the ring has 256 slots).
const MAX_RX_OUTSTANDING: usize = 128;
/// Packets the backend holds at most.
const MAX_BACKEND_BACKLOG: usize = 64;
/// Guest memory kept free.
const MEM_RESERVE: u64 = 1 << 20;
/// The byte readable-only buffers are filled with; the device must never change it.
const CANARY: u8 = 0xa5;

/// The fuzz input, read field by field; fields past its end read as zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn le<const N: usize>(&mut self) -> [u8; N] {
        let n = N.min(self.0.len());
        let mut out = [0u8; N];
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
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

    fn desc(&mut self) -> (u64, u32, u16, u16) {
        (u64::from(self.u32()), self.u32(), self.u16(), self.u16())
    }
}

/// An RX chain the check published and the device has not returned yet.
enum RxBuf {
    /// One buffer at `addr` of `size` bytes, device-writable or not.
    Plain {
        addr: u64,
        size: u32,
        writable: bool,
    },
    /// Hostile descriptors.
    Raw,
}

/// The state of one run.
struct Run {
    d: Driver<FakeBackend>,
    rx_out: HashMap<u16, (RxBuf, usize)>,
    rx_descs: usize,
    /// Packets given to the backend and not yet seen in the guest (for clean runs).
    sent: VecDeque<Vec<u8>>,
    /// No raw RX chain was ever offered: device writes can only land in plain buffers, so frame
    /// contents are checked.
    clean: bool,
    /// Guest ranges the device may write: plain writable buffers and raw writable descriptors.
    writable: Vec<(u64, u64)>,
    /// Guest ranges the device must never write, with their content.
    readonly: Vec<(u64, Vec<u8>)>,
    /// A raw RX chain named an indirect table: the memory check is off.
    indirect: bool,
}

/// `VRING_DESC_F_INDIRECT`.
const F_INDIRECT: u16 = 4;

/// The `net_queues` check: plays the records of `data` (layout in the module docs) against a
/// fresh device and panics if an invariant breaks:
///
/// - nothing panics, whatever the chains and frames;
/// - every TX chain is returned once, in order, with used length 0; a well-laid chain of a
///   valid length reaches the backend byte for byte, any other chain reaches it not at all or
///   as one packet of a valid length;
/// - every used RX entry names a chain offered and not yet returned, with a used length within
///   a plain buffer's size, and 0 for a readable-only one;
/// - without hostile RX chains, the frames in the guest are the backend's packets in order
///   (some dropped), each with `num_buffers` equal to the used entries it took;
/// - memory the guest did not offer as device-writable is never written (checked unless a
///   hostile chain named an indirect table, which may make any byte writable).
///
/// Returns the device's counters, so tests can tell that a seed exercises what it should.
pub fn check_net(data: &[u8]) -> NetStats {
    let mut run = Run {
        d: Driver::new(),
        rx_out: HashMap::new(),
        rx_descs: 0,
        sent: VecDeque::new(),
        clean: true,
        writable: Vec::new(),
        readonly: Vec::new(),
        indirect: false,
    };
    let mut input = Input(data);
    while !input.0.is_empty() {
        run.record(&mut input);
        run.check_rx();
    }
    run.check_memory();
    run.d.dev.stats()
}

impl Run {
    fn record(&mut self, input: &mut Input<'_>) {
        match input.u8() % 6 {
            0 => self.tx(input),
            1 => {
                let n = usize::from(input.u8() % 4) + 1;
                let descs: Vec<_> = (0..n).map(|_| input.desc()).collect();
                self.raw_tx(&descs);
            }
            2 => {
                let n = usize::from(input.u8() % 4) + 1;
                let bufs: Vec<(u16, bool)> =
                    (0..n).map(|_| (input.u16(), input.u8() & 1 == 1)).collect();
                self.rx(&bufs);
            }
            3 => {
                let n = usize::from(input.u8() % 4) + 1;
                let descs: Vec<_> = (0..n).map(|_| input.desc()).collect();
                self.raw_rx(&descs);
            }
            4 => {
                let (len, seed) = (input.u16(), input.u8());
                if self.d.fake().lock().rx.len() < MAX_BACKEND_BACKLOG {
                    let p = frame(usize::from(len), seed);
                    self.sent.push_back(p.clone());
                    self.d.fake().push(p);
                }
            }
            _ => match input.u8() % 3 {
                0 => self.d.dev.handle_event(BACKEND),
                1 => self.d.dev.process_queue(RX_QUEUE),
                _ => self.d.dev.process_queue(TX_QUEUE),
            },
        }
    }

    fn room(&self, bytes: u64) -> bool {
        self.d.free_bytes() > bytes + MEM_RESERVE
    }

    fn tx(&mut self, input: &mut Input<'_>) {
        let len = usize::from(input.u16()) + if input.u8() & 1 == 1 { 70_000 } else { 0 };
        let seed = input.u8();
        let splits: Vec<usize> = (0..input.u8() % 4)
            .map(|_| usize::from(input.u16()))
            .collect();
        if !self.room(len as u64 + 64) {
            return;
        }
        let packet = frame(len, seed);
        let mut bufs = Vec::new();
        let mut start = 0;
        for &end in splits.iter().chain(std::iter::once(&len)) {
            let end = end.clamp(start, len);
            let a = self.d.alloc(&packet[start..end]);
            self.readonly.push((a, packet[start..end].to_vec()));
            bufs.push((a, (end - start) as u32, false));
            start = end;
        }
        let before = self.d.fake().lock().tx.len();
        let head = self.d.add_chain(TX_QUEUE, &bufs);
        self.d.dev.process_queue(TX_QUEUE);
        assert_eq!(self.d.used(TX_QUEUE), vec![(u32::from(head), 0)]);
        let tx = &self.d.fake().lock().tx;
        if (HDR_LEN..=MAX_PACKET_LEN).contains(&len) {
            assert_eq!(
                tx[before..],
                [packet],
                "a well-laid tx chain reaches the backend"
            );
        } else {
            assert_eq!(tx.len(), before, "a tx chain of {len} bytes is dropped");
        }
    }

    fn raw_tx(&mut self, descs: &[(u64, u32, u16, u16)]) {
        let before = self.d.fake().lock().tx.len();
        let head = self.d.add_raw(TX_QUEUE, descs);
        self.d.dev.process_queue(TX_QUEUE);
        assert_eq!(self.d.used(TX_QUEUE), vec![(u32::from(head), 0)]);
        let tx = &self.d.fake().lock().tx;
        assert!(tx.len() <= before + 1);
        for p in &tx[before..] {
            assert!((HDR_LEN..=MAX_PACKET_LEN).contains(&p.len()));
        }
    }

    fn rx(&mut self, bufs: &[(u16, bool)]) {
        for &(size, readable) in bufs {
            if self.rx_descs >= MAX_RX_OUTSTANDING || !self.room(u64::from(size) + 16) {
                break;
            }
            let fill = if readable { CANARY } else { 0 };
            let a = self.d.alloc(&vec![fill; usize::from(size)]);
            let head = self
                .d
                .add_chain(RX_QUEUE, &[(a, u32::from(size), !readable)]);
            if readable {
                self.readonly.push((a, vec![CANARY; usize::from(size)]));
            } else {
                self.writable.push((a, u64::from(size)));
            }
            let buf = RxBuf::Plain {
                addr: a,
                size: u32::from(size),
                writable: !readable,
            };
            self.rx_out.insert(head, (buf, 1));
            self.rx_descs += 1;
        }
        self.d.dev.process_queue(RX_QUEUE);
    }

    fn raw_rx(&mut self, descs: &[(u64, u32, u16, u16)]) {
        if self.rx_descs + descs.len() > MAX_RX_OUTSTANDING {
            return;
        }
        self.clean = false;
        // A chain may go through any slot of the table (all recorded here when writable), or
        // through an indirect table anywhere in memory: then any byte may be fair game.
        for &(addr, len, flags, _) in descs {
            if flags & F_INDIRECT != 0 {
                self.indirect = true;
            }
            if flags & F_WRITE != 0 {
                self.writable.push((addr, u64::from(len)));
            }
        }
        let head = self.d.add_raw(RX_QUEUE, descs);
        self.rx_out.insert(head, (RxBuf::Raw, descs.len()));
        self.rx_descs += descs.len();
        self.d.dev.process_queue(RX_QUEUE);
    }

    /// Checks the RX entries used since the last call.
    fn check_rx(&mut self) {
        let used = self.d.used(RX_QUEUE);
        let mut entries = Vec::new();
        for &(id, len) in &used {
            let (buf, descs) = self
                .rx_out
                .remove(&(id as u16))
                .unwrap_or_else(|| panic!("used rx id {id} was not outstanding"));
            self.rx_descs -= descs;
            if let RxBuf::Plain {
                addr,
                size,
                writable,
            } = buf
            {
                assert!(len <= size, "used length {len} beyond a {size}-byte buffer");
                if !writable {
                    assert_eq!(len, 0, "a readable-only rx buffer was written");
                }
                entries.push(Some((addr, len)));
            } else {
                assert!(len as usize <= MAX_PACKET_LEN);
                entries.push(None);
            }
        }
        if !self.clean {
            return;
        }
        // Group the entries into frames by num_buffers and match them against what was sent.
        let mut it = entries.into_iter().flatten().filter(|&(_, len)| len > 0);
        while let Some((addr, len)) = it.next() {
            let mut got = vec![0u8; len as usize];
            self.d.mem.read_slice(&mut got, GuestAddress(addr)).unwrap();
            assert!(got.len() >= HDR_LEN, "the first buffer holds the header");
            let n = u16::from_le_bytes([got[NUM_BUFFERS_OFFSET], got[NUM_BUFFERS_OFFSET + 1]]);
            for _ in 1..n {
                let (a, l) = it.next().expect("num_buffers used entries");
                let mut more = vec![0u8; l as usize];
                self.d.mem.read_slice(&mut more, GuestAddress(a)).unwrap();
                got.extend(more);
            }
            // Frames sent earlier and not seen were dropped (too short, too big): skip them.
            loop {
                let want = self
                    .sent
                    .pop_front()
                    .expect("a frame the backend never sent");
                if want.len() == got.len() {
                    assert_eq!(got[..NUM_BUFFERS_OFFSET], want[..NUM_BUFFERS_OFFSET]);
                    assert_eq!(got[HDR_LEN..], want[HDR_LEN..]);
                    break;
                }
            }
        }
    }

    fn check_memory(&self) {
        if self.indirect {
            return;
        }
        let overlaps = |a: u64, l: u64| {
            self.writable
                .iter()
                .any(|&(b, m)| a < b.saturating_add(m) && b < a.saturating_add(l))
        };
        for (addr, want) in &self.readonly {
            if overlaps(*addr, want.len() as u64) {
                continue;
            }
            let mut got = vec![0u8; want.len()];
            self.d
                .mem
                .read_slice(&mut got, GuestAddress(*addr))
                .unwrap();
            assert_eq!(
                &got, want,
                "guest memory at {addr:#x} not offered for writing changed"
            );
        }
    }
}

/// The seeds checked into `fuzz/corpus/net_queues/`, by name.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    fn tx(len: u16, long: bool, splits: &[u16]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend(len.to_le_bytes());
        v.push(u8::from(long));
        v.push(7);
        v.push(splits.len() as u8);
        for s in splits {
            v.extend(s.to_le_bytes());
        }
        v
    }
    fn rx(bufs: &[(u16, bool)]) -> Vec<u8> {
        let mut v = vec![2, (bufs.len() - 1) as u8];
        for &(size, readable) in bufs {
            v.extend(size.to_le_bytes());
            v.push(u8::from(readable));
        }
        v
    }
    fn host(len: u16) -> Vec<u8> {
        let mut v = vec![4];
        v.extend(len.to_le_bytes());
        v.push(3);
        v
    }
    fn raw(tag: u8, descs: &[(u32, u32, u16, u16)]) -> Vec<u8> {
        let mut v = vec![tag, (descs.len() - 1) as u8];
        for &(a, l, f, n) in descs {
            v.extend(a.to_le_bytes());
            v.extend(l.to_le_bytes());
            v.extend(f.to_le_bytes());
            v.extend(n.to_le_bytes());
        }
        v
    }
    let mut both_ways = tx(1526, false, &[12, 600]);
    both_ways.extend(host(1526));
    both_ways.extend(rx(&[(2048, false), (2048, false)]));
    both_ways.extend([5, 0]);
    let mut merged = host(60_000);
    merged.extend([5, 0]);
    for _ in 0..4 {
        merged.extend(rx(&[
            (4096, false),
            (4096, false),
            (4096, false),
            (4096, false),
        ]));
    }
    merged.extend(host(8));
    merged.extend(host(100));
    merged.extend(rx(&[(64, true), (4096, false)]));
    let mut hostile = tx(4, false, &[]);
    hostile.extend(tx(1000, true, &[30_000]));
    hostile.extend(raw(1, &[(0x10_0000, 72, 1, 1), (0xffff_0000, 8, 0, 0)]));
    hostile.extend(raw(1, &[(0x10_0000, 16, 1, 0)]));
    hostile.extend(host(200));
    hostile.extend(raw(3, &[(0x10_0000, 4096, 0, 0)]));
    hostile.extend(raw(3, &[(0x20_0000, 8, 2, 0)]));
    hostile.extend(raw(3, &[(0x30_0000, 4096, 2, 0)]));
    vec![
        ("both-ways", both_ways),
        ("merged-rx", merged),
        ("hostile-chains", hostile),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use vessel_protocol::fuzzing::XorShift;

    fn corpus_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/net_queues")
    }

    fn corpus() -> Vec<Vec<u8>> {
        let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
            .expect("fuzz/corpus/net_queues is checked in")
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
                "seed {name} missing from {}; run `cargo test -p vessel-devices -- --ignored write_net_seed_corpus`",
                corpus_dir().display()
            );
        }
        for input in &corpus {
            check_net(input);
        }
        let stats: HashMap<_, _> = seeds()
            .into_iter()
            .map(|(name, seed)| (name, check_net(&seed)))
            .collect();
        let s = stats["both-ways"];
        assert_eq!((s.tx_frames, s.rx_frames, s.bad_chains), (1, 1, 0), "{s:?}");
        let s = stats["merged-rx"];
        assert_eq!((s.rx_frames, s.rx_dropped), (2, 1), "{s:?}");
        let s = stats["hostile-chains"];
        assert!(s.bad_chains >= 5 && s.rx_frames == 1, "{s:?}");
    }

    #[test]
    fn mutated_corpus_keeps_invariants() {
        let corpus = corpus();
        let mut rng = XorShift(0x0000_7e75_eed0_0001);
        for i in 0..1000 {
            let input = rng.mutate(&corpus[i % corpus.len()]);
            check_net(&input);
        }
    }

    #[test]
    #[ignore = "writes the seed corpus into fuzz/corpus; run by hand after changing seeds()"]
    fn write_net_seed_corpus() {
        std::fs::create_dir_all(corpus_dir()).unwrap();
        for (name, seed) in seeds() {
            std::fs::write(corpus_dir().join(format!("seed-{name}")), seed).unwrap();
        }
    }
}
