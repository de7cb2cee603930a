//! Initial vCPU state for the PVH entry (xen docs/misc/pvh.pandoc, "x86/HVM direct boot ABI"):
//! 32-bit protected mode, paging off, flat 4 GiB code and data segments, `ebx` = address of
//! `hvm_start_info`; plus the FPU, boot MSRs and LAPIC LINT0/LINT1 wiring.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;

/// Why a register set could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// A KVM register ioctl failed.
    #[error("cannot set {what} on a vcpu")]
    SetRegs {
        /// Which set (regs, sregs, fpu, msrs, lapic).
        what: &'static str,
        /// The cause.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM accepted fewer MSRs than given.
    #[error("kvm set {set} of {want} boot msrs")]
    SetMsrs {
        /// Accepted count.
        set: usize,
        /// Given count.
        want: usize,
    },
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;

fn segment(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// The special registers for the PVH entry, starting from the vCPU's current `sregs`.
pub fn pvh_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    sregs.cs = segment(0x08, 0xb); // execute/read, accessed
    let data = segment(0x10, 0x3); // read/write, accessed
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        limit: 0x67,
        s: 0,
        db: 0,
        g: 0,
        type_: 0xb, // busy 32-bit TSS
        ..segment(0x18, 0xb)
    };
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

/// Sets general registers, special registers and FPU of the boot vCPU for a PVH entry at
/// `entry` with `hvm_start_info` at `start_info`.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, entry: u64, start_info: u64) -> Result<(), RegsError> {
    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rbx: start_info,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(|source| RegsError::SetRegs {
        what: "regs",
        source,
    })?;
    let sregs = vcpu.get_sregs().map_err(|source| RegsError::SetRegs {
        what: "sregs",
        source,
    })?;
    vcpu.set_sregs(&pvh_sregs(sregs))
        .map_err(|source| RegsError::SetRegs {
            what: "sregs",
            source,
        })
}

/// Sets the FPU control words and the boot MSRs every vCPU starts with.
pub fn setup_fpu_and_msrs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|source| RegsError::SetRegs {
        what: "fpu",
        source,
    })?;
    // MSR numbers: Intel SDM vol. 4. IA32_MISC_ENABLE bit 0 = fast string operations.
    let list: [(u32, u64); 8] = [
        (0x174, 0),       // IA32_SYSENTER_CS
        (0x175, 0),       // IA32_SYSENTER_ESP
        (0x176, 0),       // IA32_SYSENTER_EIP
        (0xc000_0081, 0), // STAR
        (0xc000_0082, 0), // LSTAR
        (0xc000_0084, 0), // SYSCALL_MASK
        (0xc000_0102, 0), // KERNEL_GS_BASE
        (0x1a0, 1),       // IA32_MISC_ENABLE
    ];
    let entries: Vec<kvm_msr_entry> = list
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).expect("8 entries fit a Msrs");
    let set = vcpu.set_msrs(&msrs).map_err(|source| RegsError::SetRegs {
        what: "msrs",
        source,
    })?;
    if set != entries.len() {
        return Err(RegsError::SetMsrs {
            set,
            want: entries.len(),
        });
    }
    Ok(())
}

/// Programs LAPIC LVT LINT0 as ExtINT and LINT1 as NMI (the virtual-wire setup the MP table
/// declares), so PIC interrupts reach the BSP before the IOAPIC is set up.
pub fn setup_lint(vcpu: &VcpuFd) -> Result<(), RegsError> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const DELIVERY_EXTINT: u32 = 0x7;
    const DELIVERY_NMI: u32 = 0x4;
    let err = |source| RegsError::SetRegs {
        what: "lapic",
        source,
    };
    let mut lapic = vcpu.get_lapic().map_err(err)?;
    let mut rw = |off: usize, mode: u32| {
        let mut b = [0u8; 4];
        for (i, x) in b.iter_mut().enumerate() {
            *x = lapic.regs[off + i] as u8;
        }
        let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
        for (i, x) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[off + i] = *x as _;
        }
    };
    rw(APIC_LVT0, DELIVERY_EXTINT);
    rw(APIC_LVT1, DELIVERY_NMI);
    vcpu.set_lapic(&lapic).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvh_sregs_are_flat_protected_mode() {
        let s = pvh_sregs(kvm_sregs::default());
        assert_eq!(s.cr0 & X86_CR0_PE, 1);
        assert_eq!(s.cr0 & 0x8000_0000, 0, "paging off");
        assert_eq!(
            (s.cs.base, s.cs.limit, s.cs.db, s.cs.l),
            (0, 0xffff_ffff, 1, 0)
        );
        assert_eq!(s.ss.type_, 0x3);
        assert_eq!(s.tr.type_, 0xb);
    }
}
