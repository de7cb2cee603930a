//! Fuzzing checks for the frame decoder (issue 4: no panic, bounded memory on hostile input).
//!
//! [`check_frames`] is the body of the `frame_decoder` libFuzzer target (`fuzz/`, run by
//! `make fuzz`) and of this module's tests, which replay the checked-in seed corpus
//! (`fuzz/corpus/frame_decoder/`) plus a few thousand deterministic mutations of it on every
//! `cargo test`. The module is compiled for tests and behind the `fuzzing` cargo feature only.
//!
//! Input layout: byte 0 is a control byte (low 3 bits: chunk pattern length - 1; bit 3: inject
//! one `Interrupted` error before each read), then the chunk pattern (each byte is the size - 1 of
//! one read, cycled; `0xff` means "whatever the caller asks for"), then the byte stream the peer
//! sent.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Cursor, Read};

use crate::frame::{encode_header, read_frame, HEADER_LEN};
use crate::{RemoteError, RequestEnvelope, ResponseEnvelope, StdioHeader, MAX_FRAME_LEN};

/// Extra bytes a single `read_frame` may hold beyond what the bound on the body allows (the
/// first body chunk, see [`crate::frame`]) before the check calls it a leak of the length prefix.
pub const ALLOC_SLACK: usize = 128 * 1024;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// A global allocator that counts the bytes each thread holds, so a check can measure the peak
/// heap its code under test reached. Install it in the binary that runs the checks:
/// `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
pub struct CountingAlloc;

fn account(delta: isize) {
    // `try_with`: the allocator also runs while thread locals are being torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(delta);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every method forwards to `System` with the caller's layout and pointer unchanged; the
// counters are thread-local `Cell`s with const initialisers, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize));
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Old and new block both exist during the copy.
        account(new_size as isize);
        account(-(layout.size() as isize));
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the peak number of heap bytes this thread held during
/// the call beyond what it held before (0 unless [`CountingAlloc`] is the global allocator).
pub fn peak_heap<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, usize::try_from(peak.wrapping_sub(start)).unwrap_or(0))
}

/// A reader over `data` that returns reads of the sizes in `pattern` (cycled; size `0xff` + 1
/// means the caller's whole buffer) and, if `interrupt`, fails each read once with `Interrupted`
/// first, as a signal-interrupted socket read does.
struct Chunked<'a> {
    data: &'a [u8],
    pos: usize,
    pattern: &'a [u8],
    turn: usize,
    interrupt: bool,
    interrupted: bool,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.interrupt && !self.interrupted {
            self.interrupted = true;
            return Err(io::ErrorKind::Interrupted.into());
        }
        self.interrupted = false;
        let step = self.pattern[self.turn % self.pattern.len()];
        self.turn += 1;
        let want = if step == 0xff {
            buf.len()
        } else {
            usize::from(step) + 1
        };
        let n = want.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What one `read_frame` call gave, in a form two runs can be compared by.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Frame(Vec<u8>),
    End,
    /// The error's own message (its source differs between readers only in wording).
    Error(String),
}

/// Reads frames until the end of stream or the first error; returns each outcome and the peak
/// heap of each `read_frame` call.
fn read_all(r: &mut impl Read) -> Vec<(Outcome, usize)> {
    let mut out = Vec::new();
    loop {
        let (res, peak) = peak_heap(|| read_frame(r));
        let o = match res {
            Ok(Some(body)) => Outcome::Frame(body),
            Ok(None) => Outcome::End,
            Err(e) => Outcome::Error(e.to_string()),
        };
        let last = !matches!(o, Outcome::Frame(_));
        out.push((o, peak));
        if last {
            return out;
        }
    }
}

/// Decodes `body` as `T`; if it is one, its re-encoding must decode to the same value.
fn check_message<T>(body: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let Ok(msg) = serde_json::from_slice::<T>(body) else {
        return;
    };
    let again = serde_json::to_vec(&msg).expect("a decoded message encodes");
    let back: T = serde_json::from_slice(&again).expect("a re-encoded message decodes");
    assert_eq!(back, msg, "message changed across a JSON round trip");
}

/// The `frame_decoder` check: decodes the stream in `data` (layout in the module docs) and
/// panics if an invariant breaks:
///
/// - decoding never panics, whatever the bytes;
/// - the stream read in the fuzzer's chunks (with `Interrupted` errors) gives exactly the frames
///   and error as the stream read in one piece;
/// - every body is at most [`MAX_FRAME_LEN`] bytes, and the frames re-encode to the very bytes
///   they were decoded from;
/// - one `read_frame` never holds more heap than twice the bytes the peer actually sent plus
///   [`ALLOC_SLACK`], whatever the length prefix announces (so never more than
///   [`MAX_FRAME_LEN`] + slack either);
/// - a body that decodes as a control or stdio message survives a JSON round trip unchanged.
pub fn check_frames(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let plen = usize::from(control & 7) + 1;
    if rest.len() < plen {
        return;
    }
    let (pattern, stream) = rest.split_at(plen);

    let whole = read_all(&mut Cursor::new(stream));
    let mut chunked = Chunked {
        data: stream,
        pos: 0,
        pattern,
        turn: 0,
        interrupt: control & 8 != 0,
        interrupted: false,
    };
    let pieces = read_all(&mut chunked);
    assert_eq!(
        whole.len(),
        pieces.len(),
        "chunking changed the number of reads"
    );
    let mut consumed = 0usize;
    for ((a, peak_a), (b, peak_b)) in whole.iter().zip(&pieces) {
        assert_eq!(a, b, "chunking changed what was decoded");
        let left = stream.len() - consumed.min(stream.len());
        let bound = 2 * left + ALLOC_SLACK;
        for peak in [peak_a, peak_b] {
            assert!(
                *peak <= bound,
                "read_frame held {peak} bytes with only {left} bytes left in the stream"
            );
            assert!(*peak <= MAX_FRAME_LEN as usize + ALLOC_SLACK);
        }
        if let Outcome::Frame(body) = a {
            assert!(body.len() <= MAX_FRAME_LEN as usize);
            let len = u32::try_from(body.len()).expect("bounded above");
            let end = consumed + HEADER_LEN + body.len();
            assert_eq!(
                &stream[consumed..consumed + HEADER_LEN],
                &encode_header(len)
            );
            assert_eq!(&stream[consumed + HEADER_LEN..end], &body[..]);
            consumed = end;
            check_message::<RequestEnvelope>(body);
            check_message::<ResponseEnvelope>(body);
            check_message::<StdioHeader>(body);
            check_message::<Result<(), RemoteError>>(body);
        }
    }
    if let Some((Outcome::End, _)) = whole.last() {
        assert_eq!(
            consumed,
            stream.len(),
            "clean end of stream with bytes left"
        );
    }
}

/// The seed corpus of `frame_decoder` (also checked in under `fuzz/corpus/frame_decoder/`, see
/// the ignored test `write_seed_corpus`): a few valid frame sequences in several chunkings.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::frame::write_message;
    use crate::message::Request;
    let mut control = Vec::new();
    for (id, request) in [
        (1, Request::Hello),
        (
            2,
            Request::Start {
                container_id: "c1".into(),
            },
        ),
    ] {
        write_message(&mut control, &RequestEnvelope { id, request }).expect("encode");
    }
    let mut stdio = Vec::new();
    write_message(
        &mut stdio,
        &StdioHeader {
            container_id: "c1".into(),
            exec_id: Some("e1".into()),
            stream: crate::StreamKind::Stdout,
        },
    )
    .expect("encode");
    let err: Result<(), RemoteError> = Err(RemoteError::new(crate::Code::NotFound, "no such"));
    write_message(&mut stdio, &err).expect("encode");
    let mut huge_prefix = encode_header(0).to_vec();
    huge_prefix[8..12].copy_from_slice(&MAX_FRAME_LEN.to_be_bytes());
    huge_prefix.extend_from_slice(b"{\"id\":1}");
    let with = |control: u8, pattern: &[u8], stream: &[u8]| {
        let mut v = vec![control];
        v.extend_from_slice(pattern);
        v.extend_from_slice(stream);
        v
    };
    vec![
        ("control-whole", with(0, &[0xff], &control)),
        ("control-bytewise", with(0, &[0], &control)),
        ("control-interrupted", with(2 | 8, &[3, 11, 0xff], &control)),
        ("stdio-header-and-error", with(1, &[5, 40], &stdio)),
        ("empty-frame", with(0, &[0xff], &encode_header(0))),
        ("max-length-prefix", with(0, &[0xff], &huge_prefix)),
    ]
}

/// A deterministic mutator for replaying a corpus in `cargo test` (the stable-toolchain stand-in
/// for libFuzzer's mutations): xorshift64 choices of byte flips, interesting values, inserts,
/// deletes, truncations and splices of a region onto itself.
pub struct XorShift(pub u64);

impl XorShift {
    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `base` with one to four random edits.
    pub fn mutate(&mut self, base: &[u8]) -> Vec<u8> {
        const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xfe, 0xff, 0x10, 0x2c];
        let mut v = base.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(v.len() + 1);
            match self.below(7) {
                0 if at < v.len() => v[at] ^= 1 << self.below(8),
                1 if at < v.len() => v[at] = INTERESTING[self.below(INTERESTING.len())],
                2 => v.insert(at, self.next_u64() as u8),
                3 if at < v.len() => {
                    v.remove(at);
                }
                4 => v.truncate(at),
                5 if at < v.len() => {
                    // Splice a copy of some region in: duplicates frames and headers.
                    let len = 1 + self.below((v.len() - at).min(64));
                    let chunk = v[at..at + len].to_vec();
                    let to = self.below(v.len() + 1);
                    v.splice(to..to, chunk);
                }
                6 if at + 4 <= v.len() => {
                    let word = (self.next_u64() as u32).to_le_bytes();
                    v[at..at + 4].copy_from_slice(&word);
                }
                _ => {}
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOC: CountingAlloc = CountingAlloc;

    fn corpus_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/frame_decoder")
    }

    fn corpus() -> Vec<Vec<u8>> {
        let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
            .expect("fuzz/corpus/frame_decoder is checked in")
            .map(|e| e.expect("corpus entry").path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read(p).expect("read corpus file"))
            .collect()
    }

    #[test]
    fn counting_allocator_sees_a_large_allocation() {
        let (v, peak) = peak_heap(|| vec![0u8; 1 << 20]);
        assert!(peak >= 1 << 20, "peak {peak}");
        drop(v);
    }

    #[test]
    fn seed_corpus_is_checked_in_and_passes() {
        let corpus = corpus();
        for (name, seed) in seeds() {
            assert!(
                corpus.contains(&seed),
                "seed {name} missing from {}; run `cargo test -p vessel-protocol -- --ignored write_seed_corpus`",
                corpus_dir().display()
            );
        }
        for input in &corpus {
            check_frames(input);
        }
    }

    #[test]
    fn mutated_corpus_keeps_invariants() {
        let corpus = corpus();
        let mut rng = XorShift(0x5eed_f00d_dead_beef);
        for i in 0..4000 {
            let base = &corpus[i % corpus.len()];
            let input = rng.mutate(base);
            check_frames(&input);
        }
    }

    #[test]
    fn chunked_reads_match_whole_reads() {
        // A byte-at-a-time read with interruptions must decode the same frames: check_frames
        // asserts it; here the stream is also confirmed to hold two frames.
        let input = &seeds()[2].1;
        let stream = &input[4..];
        let frames = read_all(&mut Cursor::new(stream));
        assert_eq!(frames.len(), 3, "two frames and the end");
        check_frames(input);
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
