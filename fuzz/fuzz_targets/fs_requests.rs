//! libFuzzer target: a guest's FUSE requests in virtio-fs descriptor chains, well laid and
//! hostile, served by the real file server over a scratch share, with a canary directory beside
//! it. The invariants are asserted by `vessel_devices::virtio::fs::fuzzing::check_fs` (also
//! replayed by `cargo test`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vessel_devices::virtio::fs::fuzzing::check_fs(data);
});
