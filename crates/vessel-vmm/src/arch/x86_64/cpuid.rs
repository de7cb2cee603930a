//! Per-vCPU CPUID: KVM's supported set (`KVM_GET_SUPPORTED_CPUID`) with the topology of this VM
//! written in: one socket, `vcpus` cores, one thread per core, APIC id = vCPU index.
//!
//! Leaves touched (Intel SDM vol. 2A "CPUID"; AMD APM vol. 3 appendix E): 0x1 (initial APIC id,
//! logical processor count, HTT, hypervisor bit), 0x4 (cores per package), 0xB and 0x1F
//! (extended topology: SMT and core levels, x2APIC id), 0x8000_0008 (AMD core count).

use kvm_bindings::CpuId;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;

const EDX_HTT: u32 = 1 << 28;
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 ECX bit 24: TSC-deadline mode of the local APIC timer. KVM's in-kernel LAPIC emulates
/// it but `KVM_GET_SUPPORTED_CPUID` leaves it to the VMM (Documentation/virt/kvm/api.rst,
/// KVM_CAP_TSC_DEADLINE_TIMER). Without it Linux calibrates the APIC timer against the PIT at
/// boot, which costs time and fails under nested emulation ("APIC timer disabled due to
/// verification failure").
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Number of APIC id bits needed for `n` cores (ceil(log2(n))).
fn core_bits(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Rewrites `cpuid` (a copy of the supported set) for vCPU `index` of `vcpus`.
pub fn apply_topology(cpuid: &mut CpuId, index: u32, vcpus: u32) {
    let apic_id = index;
    for e in cpuid.as_mut_slice().iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | ((vcpus & 0xff) << 16);
                if vcpus > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
                e.ecx |= ECX_HYPERVISOR | ECX_TSC_DEADLINE;
            }
            LEAF_CACHE => {
                // eax[31:26] = cores per package - 1; eax[25:14] = threads sharing the cache - 1.
                let cache_level = (e.eax >> 5) & 0x7;
                e.eax &= 0x3fff;
                if e.eax & 0x1f != 0 {
                    e.eax |= (vcpus - 1) << 26;
                    if cache_level >= 3 {
                        e.eax |= (vcpus - 1) << 14;
                    }
                }
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                e.edx = apic_id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (LEVEL_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = core_bits(vcpus);
                        e.ebx = vcpus;
                        e.ecx = (LEVEL_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            LEAF_AMD_SIZES => {
                // ecx[7:0] = cores - 1; ecx[15:12] = APIC id size in bits.
                e.ecx = (e.ecx & !0xf0ff) | ((vcpus - 1) & 0xff) | (core_bits(vcpus) << 12);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: 0x121, // leaf 4: cache level 1, type data
            ..Default::default()
        }
    }

    #[test]
    fn topology_leaves_carry_apic_id_and_counts() {
        let mut c = CpuId::from_entries(&[
            entry(1, 0),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0x8000_0008, 0),
        ])
        .unwrap();
        apply_topology(&mut c, 2, 3);
        let s = c.as_slice();
        assert_eq!(s[0].ebx >> 24, 2);
        assert_eq!((s[0].ebx >> 16) & 0xff, 3);
        assert_ne!(s[0].edx & EDX_HTT, 0);
        assert_ne!(s[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(s[0].ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!((s[1].ebx, s[1].ecx >> 8, s[1].edx), (1, LEVEL_SMT, 2));
        assert_eq!((s[2].eax, s[2].ebx, s[2].ecx >> 8), (2, 3, LEVEL_CORE));
        assert_eq!(s[3].ecx & 0xff, 2);
        assert_eq!(core_bits(1), 0);
        assert_eq!(core_bits(2), 1);
        assert_eq!(core_bits(32), 5);
        assert_eq!(core_bits(33), 6);
    }
}
