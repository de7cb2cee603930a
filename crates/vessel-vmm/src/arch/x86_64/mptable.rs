//! Intel MultiProcessor table (MP spec 1.4, chapter 4): tells a guest without ACPI how many CPUs
//! it has (their APIC ids), where the IOAPIC is and how ISA IRQs 0..24 map onto its pins.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{APIC_ADDR, IOAPIC_ADDR};

/// Number of IOAPIC pins declared (the in-kernel IOAPIC has 24).
pub const IOAPIC_PINS: u8 = 24;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
// Family 6 model 15 stepping 1 style signature, with FPU and APIC feature flags.
const CPU_SIGNATURE: u32 = (6 << 8) | (15 << 4) | 1;
const CPU_FEATURES: u32 = 0x201;

/// Why the MP table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// Too many vCPUs for the APIC id space below the IOAPIC's id.
    #[error("mp table cannot describe {0} vcpus (at most 254)")]
    TooManyCpus(u32),
    /// The table does not fit guest memory at the given address.
    #[error("cannot write mp table at {addr:#x}")]
    WriteTable {
        /// Guest address.
        addr: u64,
        /// The cause.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// Builds the floating pointer plus configuration table for `vcpus` CPUs (APIC ids 0..vcpus,
/// IOAPIC id `vcpus`), to be placed at guest address `base`.
pub fn build(base: u64, vcpus: u32) -> Result<Vec<u8>, MptableError> {
    if vcpus == 0 || vcpus > 254 {
        return Err(MptableError::TooManyCpus(vcpus));
    }
    let ioapic_id = vcpus as u8;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..vcpus as u8 {
        // Processor entry, 20 bytes (4.3.1).
        entries.push(0);
        entries.push(id);
        entries.push(APIC_VERSION);
        entries.push(CPU_ENABLED | if id == 0 { CPU_BSP } else { 0 });
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    // Bus entry, 8 bytes (4.3.2): bus 0 is ISA.
    entries.extend_from_slice(&[1, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    // IOAPIC entry, 8 bytes (4.3.3).
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    // I/O interrupt assignment entries, 8 bytes (4.3.4): ISA IRQ n -> IOAPIC pin n, conforming
    // polarity and trigger (edge, active high for ISA).
    for irq in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // Local interrupt assignment entries (4.3.5): ExtINT on LINT0, NMI on LINT1 of all LAPICs.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    // Configuration table header, 44 bytes (4.2).
    let table_len = 44 + entries.len();
    let mut header = Vec::with_capacity(table_len);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&(table_len as u16).to_le_bytes());
    header.push(4); // spec revision 1.4
    header.push(0); // checksum, filled below
    header.extend_from_slice(b"VESSEL  ");
    header.extend_from_slice(b"MICROVM     ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&APIC_ADDR.to_le_bytes());
    header.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    header.push(0); // extended checksum
    header.push(0); // reserved
    header.extend_from_slice(&entries);
    header[7] = checksum(&header);

    // Floating pointer structure, 16 bytes (4.1), followed by the table.
    let table_addr = (base + 16) as u32;
    let mut fp = Vec::with_capacity(16 + table_len);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&table_addr.to_le_bytes());
    fp.push(1); // length in 16-byte units
    fp.push(4); // spec revision
    fp.push(0); // checksum
    fp.extend_from_slice(&[0; 5]); // feature bytes: 0 = a configuration table is present
    fp[10] = checksum(&fp);
    fp.extend_from_slice(&header);
    Ok(fp)
}

/// Writes the MP table for `vcpus` CPUs at `base` in guest memory.
pub fn setup(mem: &GuestMemoryMmap, base: u64, vcpus: u32) -> Result<(), MptableError> {
    let bytes = build(base, vcpus)?;
    mem.write_slice(&bytes, GuestAddress(base))
        .map_err(|source| MptableError::WriteTable { addr: base, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts_are_valid() {
        let t = build(0x9fc00, 2).unwrap();
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(t[..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), 0x9fc10);
        let table = &t[16..];
        assert_eq!(&table[0..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        // 2 CPUs + bus + IOAPIC + 24 interrupts + 2 local interrupts.
        assert_eq!(u16::from_le_bytes([table[34], table[35]]), 30);
        // First entry: CPU 0, enabled BSP; second: CPU 1, enabled AP.
        assert_eq!(&table[44..48], &[0, 0, APIC_VERSION, 3]);
        assert_eq!(&table[64..68], &[0, 1, APIC_VERSION, 1]);
        // The table must fit below 640 KiB.
        assert!(0x9fc00 + t.len() <= 0xa0000);
        let t32 = build(0x9fc00, 32).unwrap();
        assert!(0x9fc00 + t32.len() <= 0xa0000);
        assert!(build(0, 0).is_err());
    }
}
