//! libFuzzer target: a guest's virtio-net TX and RX descriptor chains and the host's frames,
//! built from the input in real guest memory and processed by the real device over a fake
//! backend. The invariants are asserted by
//! `vessel_devices::virtio::net::fuzzing::check_net` (also replayed by `cargo test`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vessel_devices::virtio::net::fuzzing::check_net(data);
});
