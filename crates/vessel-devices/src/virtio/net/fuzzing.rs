//! Fuzzing checks for virtio-net (filled in below).
