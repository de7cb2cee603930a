//! Guest physical memory layout (all addresses guest-physical, sizes in bytes).
//!
//! ```text
//! 0x0000_6000  hvm_start_info (PVH spec, xen/include/public/arch-x86/hvm/start_info.h)
//! 0x0000_6800  PVH module list (the initramfs)
//! 0x0000_7000  PVH memory map (e820-style entries)
//! 0x0002_0000  kernel command line (2 KiB)
//! 0x0009_fc00  MP floating pointer and configuration table (Intel MP spec 1.4, 4.1)
//! 0x0010_0000  RAM continues; the vmlinux ELF loads at its own paddr (16 MiB for x86_64)
//! ...          initramfs at the top of low RAM, page aligned
//! 0xd000_0000  MMIO window: one 4 KiB slot per virtio-mmio device
//! 0xfec0_0000  IOAPIC, 0xfee0_0000 LAPIC (in-kernel irqchip)
//! 0x1_0000_0000 RAM above 4 GiB when memory exceeds the low part
//! ```

/// `hvm_start_info` address (its address goes to the boot vCPU in `ebx`).
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list address.
pub const MODLIST_START: u64 = 0x6800;
/// PVH memory map address.
pub const MEMMAP_START: u64 = 0x7000;
/// Kernel command line address.
pub const CMDLINE_START: u64 = 0x20000;
/// MP table address: inside the last KiB of base memory, where Linux scans for `_MP_`.
pub const MPTABLE_START: u64 = 0x9fc00;
/// End of the first RAM range (the EBDA-style area above it is reserved).
pub const EBDA_START: u64 = 0x9fc00;
/// Start of high memory (1 MiB); kernel and initramfs go above it.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the MMIO window for virtio-mmio devices.
pub const MMIO_START: u64 = 0xd000_0000;
/// Size of one virtio-mmio slot.
pub const MMIO_SLOT_SIZE: u64 = 0x1000;
/// First IRQ (IOAPIC pin) given to virtio-mmio devices; 4 is COM1.
pub const MMIO_FIRST_IRQ: u32 = 5;
/// Start of the RAM range above 4 GiB.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;
/// IOAPIC base address.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// LAPIC base address.
pub const APIC_ADDR: u32 = 0xfee0_0000;
/// TSS area needed by KVM on Intel (KVM_SET_TSS_ADDR): three pages below the BIOS area.
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
/// Identity map page for KVM on Intel (KVM_SET_IDENTITY_MAP_ADDR), just below the TSS.
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;
/// Command-line bytes kept for the base line and device declarations (the rest is the user's):
/// room for the base line and one `virtio_mmio.device=` per device of the largest VM (vsock,
/// `MAX_FS_DEVICES` shares and `MAX_NET_DEVICES` interfaces; checked by a test in `vm.rs`).
pub const BASE_CMDLINE_RESERVED: usize = 768;

/// RAM ranges `(start, size)` for `mem_bytes` of guest memory: low RAM up to the MMIO window,
/// the remainder above 4 GiB.
pub fn ram_ranges(mem_bytes: u64) -> Vec<(u64, u64)> {
    if mem_bytes <= MMIO_START {
        vec![(0, mem_bytes)]
    } else {
        vec![(0, MMIO_START), (HIGH_RAM_START, mem_bytes - MMIO_START)]
    }
}

/// Guest physical address of virtio-mmio slot `i`.
pub fn mmio_slot_addr(i: u32) -> u64 {
    MMIO_START + u64::from(i) * MMIO_SLOT_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_splits_around_the_mmio_window() {
        assert_eq!(ram_ranges(128 << 20), vec![(0, 128 << 20)]);
        assert_eq!(
            ram_ranges(4 << 30),
            vec![(0, 0xd000_0000), (0x1_0000_0000, 0x3000_0000)]
        );
        assert_eq!(mmio_slot_addr(1), 0xd000_1000);
    }
}
