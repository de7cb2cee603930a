//! libFuzzer target: a guest's virtio-vsock TX and RX descriptor chains, built from the input in
//! real guest memory and processed by the real device and muxer. The invariants are asserted by
//! `vessel_devices::virtio::vsock::fuzzing::check_vsock` (also replayed by `cargo test`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vessel_devices::virtio::vsock::fuzzing::check_vsock(data));
