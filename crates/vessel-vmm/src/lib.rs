//! Vessel's microVM monitor: turns a VM configuration into a running KVM guest.
//!
//! Built on the rust-vmm crates (kvm-ioctls, vm-memory, linux-loader); device models live in
//! `vessel-devices`. The runtime's per-container monitor process embeds this library.
#![warn(missing_docs)]

pub mod artefacts;
pub mod host;
