//! x86_64 guest setup: memory layout, MP table, CPUID, registers, PVH boot.

pub mod boot;
pub mod cpuid;
pub mod elf_map;
pub mod layout;
pub mod mptable;
pub mod regs;
