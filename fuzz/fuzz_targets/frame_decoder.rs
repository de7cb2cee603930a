//! libFuzzer target: the agent protocol's frame decoder on hostile byte streams, read whole and
//! in fuzzer-chosen chunks. The invariants are asserted by
//! `vessel_protocol::fuzzing::check_frames` (also replayed by `cargo test`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vessel_protocol::fuzzing::{check_frames, CountingAlloc};

/// Counts heap bytes per thread so the check can bound what one `read_frame` holds.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fuzz_target!(|data: &[u8]| check_frames(data));
