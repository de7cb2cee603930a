//! Guest RAM: one memfd (so a file-sharing backend can map the same pages later) mapped with
//! vm-memory and registered with KVM as one memory slot per RAM range
//! (kernel doc: Documentation/virt/kvm/api.rst, "KVM_SET_USER_MEMORY_REGION").

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{
    Address, FileOffset, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion,
};

use crate::arch::x86_64::layout;

/// Why guest memory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// `memfd_create` failed.
    #[error("cannot create memfd for guest memory")]
    CreateMemfd(#[source] std::io::Error),
    /// Sizing the memfd failed.
    #[error("cannot size guest memory memfd to {size} bytes")]
    SizeMemfd {
        /// Size asked for.
        size: u64,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Mapping the memfd failed.
    #[error("cannot map {size} bytes of guest memory")]
    MapMemory {
        /// Total size.
        size: u64,
        /// The cause.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// KVM refused a memory slot.
    #[error("cannot register guest memory slot {slot} at {addr:#x} ({size} bytes) with kvm")]
    RegisterSlot {
        /// Slot number.
        slot: u32,
        /// Guest address.
        addr: u64,
        /// Size.
        size: u64,
        /// The cause.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Creates `mem_bytes` of guest RAM backed by a memfd, laid out by [`layout::ram_ranges`].
pub fn create(mem_bytes: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let name = CString::new("vessel-guest-ram").expect("no NUL");
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call; the flags are
    // valid memfd_create flags. The result is checked before use.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::CreateMemfd(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(mem_bytes)
        .map_err(|source| MemoryError::SizeMemfd {
            size: mem_bytes,
            source,
        })?;
    let mut offset = 0u64;
    let mut ranges = Vec::new();
    for (start, size) in layout::ram_ranges(mem_bytes) {
        let f = file.try_clone().map_err(MemoryError::CreateMemfd)?;
        ranges.push((
            GuestAddress(start),
            size as usize,
            Some(FileOffset::new(f, offset)),
        ));
        offset += size;
    }
    GuestMemoryMmap::from_ranges_with_files(ranges).map_err(|source| MemoryError::MapMemory {
        size: mem_bytes,
        source,
    })
}

/// Registers every region of `mem` with the VM as slots 0, 1, ...
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .expect("region start is inside guest memory");
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: `userspace_addr` points at a live mapping of `memory_size` bytes owned by `mem`;
        // the caller keeps `mem` (and so the mapping) alive for as long as the VM fd exists, since
        // both live in the same `Vm` and memory is dropped after the VM fd.
        unsafe { vm.set_user_memory_region(r) }.map_err(|source| MemoryError::RegisterSlot {
            slot: slot as u32,
            addr: r.guest_phys_addr,
            size: r.memory_size,
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn memory_is_memfd_backed_and_readable_everywhere() {
        let mem = create(64 << 20).unwrap();
        assert_eq!(mem.num_regions(), 1);
        let r = mem.iter().next().unwrap();
        assert!(r.file_offset().is_some(), "memfd backed");
        mem.write_obj(0xdead_beefu32, GuestAddress((64 << 20) - 4))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress((64 << 20) - 4)).unwrap(),
            0xdead_beef
        );
        assert!(mem.read_obj::<u32>(GuestAddress(64 << 20)).is_err());
    }
}
