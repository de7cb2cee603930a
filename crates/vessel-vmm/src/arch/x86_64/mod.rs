//! x86_64 guest setup: memory layout, MP table, CPUID, registers, PVH boot.

pub mod boot;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod regs;
