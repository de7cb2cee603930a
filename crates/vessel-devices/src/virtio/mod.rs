//! virtio (being built).
