//! Live KVM state: guest memory and vCPUs. Only the builder (`crate::vm`) creates these.

pub mod memory;
pub mod profile;
pub mod vcpu;
