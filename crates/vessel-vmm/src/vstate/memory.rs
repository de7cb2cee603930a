//! Guest RAM: one anonymous private mapping aligned to 2 MiB and advised for transparent huge
//! pages, split into vm-memory regions and registered with KVM as one memory slot per RAM range
//! (kernel doc: Documentation/virt/kvm/api.rst, "KVM_SET_USER_MEMORY_REGION"; huge pages:
//! Documentation/admin-guide/mm/transhuge.rst).
//!
//! Why not a memfd: the file server runs in-process (fuse-backend-rs on the VMM's own mapping,
//! docs/decisions/), so no other process maps guest RAM, and shared memory gets no transparent
//! huge pages on Debian hosts (`shmem_enabled` is `never`) while anonymous memory does with
//! `MADV_HUGEPAGE` (`enabled` is `madvise`). Loading the kernel's 11 MiB into 4 KiB memfd pages
//! took 10-14 ms of the VMM's setup, 1.7-2.2 ms in 2 MiB pages (docs/performance.md). KVM maps
//! the guest with 2 MiB page-table entries only where guest-physical and host-virtual addresses
//! agree modulo 2 MiB, hence the alignment (QEMU aligns its RAM the same way).

use std::sync::{Arc, Weak};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
};

use crate::arch::x86_64::layout;
use crate::joined::Joined;

/// Size of a transparent huge page on x86_64, and the alignment of guest RAM (bytes).
pub const HUGE_PAGE: usize = 2 << 20;

/// Why guest memory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// `mmap` of the guest RAM reservation failed (address space or overcommit limits).
    #[error("cannot map {size} bytes of guest memory")]
    Reserve {
        /// Bytes asked for (guest RAM plus 2 MiB of alignment slack).
        size: u64,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// vm-memory refused a region of the mapping.
    #[error("cannot describe guest memory region at {addr:#x} ({size} bytes)")]
    Region {
        /// Guest physical address of the region.
        addr: u64,
        /// Size of the region in bytes.
        size: u64,
        /// The cause, if vm-memory gave one (none: the region overflows the address space).
        #[source]
        source: Option<vm_memory::mmap::MmapRegionError>,
    },
    /// The regions overlap or are out of order (a layout bug).
    #[error("guest memory regions are inconsistent")]
    Collect(#[source] vm_memory::GuestRegionCollectionError),
    /// A file could not be mapped into guest memory ([`map_file`]).
    #[error(
        "cannot map {len} bytes of a file at offset {offset:#x} into guest memory at {addr:#x}"
    )]
    MapFile {
        /// Guest physical address asked for.
        addr: u64,
        /// Offset in the file.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// The cause (`EINVAL` for an unaligned address or offset or a range that leaves one RAM
        /// region or the file).
        #[source]
        source: std::io::Error,
    },
    /// The thread registering the memory slots panicked (a bug; its message is on stderr).
    #[error("the memory slot registration thread panicked")]
    RegistrarPanicked,
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

/// Guest RAM and the host mapping behind it.
///
/// [`GuestRam::memory`] hands out the vm-memory view (cheap to clone: devices keep clones). The
/// mapping is unmapped when this value drops and no clone of the view is left; if one is (a
/// device thread that outlived the VM's teardown), the mapping is left in place and a warning
/// logged, never unmapped under a live reference.
#[derive(Debug)]
pub struct GuestRam {
    // Field order is drop order: our own view of the regions goes before the reservation checks
    // that nobody else holds one.
    memory: GuestMemoryMmap,
    _reservation: Reservation,
}

impl GuestRam {
    /// The guest memory, as vm-memory sees it: one region per range of [`layout::ram_ranges`].
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }
}

/// The host mapping of guest RAM: `len` bytes at `addr` (2 MiB aligned).
#[derive(Debug)]
struct Reservation {
    addr: usize,
    len: usize,
    regions: Vec<Weak<GuestRegionMmap>>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.regions.iter().any(|r| r.strong_count() > 0) {
            log::warn!(
                "guest memory ({} bytes) still referenced at teardown; left mapped",
                self.len
            );
            return;
        }
        // SAFETY: `addr..addr + len` is the mapping `create` made and nothing references it any
        // more: every region built on it has been dropped (checked above).
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// Creates `mem_bytes` of guest RAM, laid out by [`layout::ram_ranges`]: an anonymous private
/// mapping (`MAP_NORESERVE`: pages are allocated when first touched) whose start is 2 MiB
/// aligned, advised `MADV_HUGEPAGE` (ignored where the host has no transparent huge pages) and
/// `MADV_DONTFORK` (a child forked by the VMM's process must not make guest RAM copy-on-write).
pub fn create(mem_bytes: u64) -> Result<GuestRam, MemoryError> {
    let len = mem_bytes as usize;
    let reserve = len + HUGE_PAGE;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    // SAFETY: a new anonymous mapping at an address the kernel chooses; it aliases nothing. The
    // result is checked before use.
    let raw = unsafe { libc::mmap(std::ptr::null_mut(), reserve, prot, flags, -1, 0) };
    if raw == libc::MAP_FAILED {
        return Err(MemoryError::Reserve {
            size: reserve as u64,
            source: std::io::Error::last_os_error(),
        });
    }
    let raw = raw as usize;
    let addr = raw.next_multiple_of(HUGE_PAGE);
    let (head, tail) = (addr - raw, raw + reserve - (addr + len));
    // SAFETY: both ranges lie inside the mapping just made, outside `addr..addr + len`, and
    // nothing refers to them.
    unsafe {
        if head > 0 {
            libc::munmap(raw as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((addr + len) as *mut libc::c_void, tail);
        }
    }
    let mut reservation = Reservation {
        addr,
        len,
        regions: Vec::new(),
    };
    for advice in [libc::MADV_HUGEPAGE, libc::MADV_DONTFORK] {
        // SAFETY: advice on our own mapping; neither changes its contents. Failure (EINVAL where
        // the host kernel has no transparent huge pages) only loses the optimisation.
        unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) };
    }
    let mut regions = Vec::new();
    let mut offset = 0usize;
    for (start, size) in layout::ram_ranges(mem_bytes) {
        let err = |source| MemoryError::Region {
            addr: start,
            size,
            source,
        };
        // SAFETY: `addr + offset .. + size` lies inside the mapping `reservation` owns, which
        // outlives every region built on it (its Drop unmaps only when none is left).
        let builder = unsafe {
            MmapRegionBuilder::new(size as usize)
                .with_mmap_prot(prot)
                .with_mmap_flags(flags)
                .with_raw_mmap_pointer((addr + offset) as *mut u8)
        };
        let mapping = builder.build().map_err(|e| err(Some(e)))?;
        let region =
            Arc::new(GuestRegionMmap::new(mapping, GuestAddress(start)).ok_or_else(|| err(None))?);
        reservation.regions.push(Arc::downgrade(&region));
        regions.push(region);
        offset += size as usize;
    }
    let memory = GuestMemoryMmap::from_arc_regions(regions).map_err(MemoryError::Collect)?;
    Ok(GuestRam {
        memory,
        _reservation: reservation,
    })
}

/// [`register`] on a thread of its own (`vmm-memslots`): `KVM_SET_USER_MEMORY_REGION` took
/// 2.5-6.4 ms of the VMM's setup on our `kvm_pvm` hosts, which the irqchip and device setup can
/// overlap (KVM serialises memslot changes with its own lock; the vCPUs do not run before
/// [`Registrar::finish`]). Dropping an unfinished `Registrar` joins the thread.
#[derive(Debug)]
pub struct Registrar(Joined<Result<(), MemoryError>>);

impl Registrar {
    /// Starts registering `mem`'s regions with `vm`. Errors: the thread cannot be spawned.
    pub fn spawn(vm: Arc<VmFd>, mem: GuestMemoryMmap) -> std::io::Result<Registrar> {
        Joined::spawn("vmm-memslots", move || register(&vm, &mem)).map(Registrar)
    }

    /// Waits for the registration; its error, or [`MemoryError::RegistrarPanicked`].
    pub fn finish(self) -> Result<(), MemoryError> {
        self.0.finish().ok_or(MemoryError::RegistrarPanicked)?
    }
}

/// Host page size on x86_64 (bytes): the granularity of [`map_file`].
pub const PAGE_SIZE: u64 = 4096;

/// Maps `len` bytes of `file` from `offset` into guest memory at `addr`, private and
/// copy-on-write (`mmap(MAP_PRIVATE | MAP_FIXED)` over that part of guest RAM, advised
/// `MADV_DONTFORK` as the rest): the guest reads the file's page-cache pages without a copy, and
/// one page is copied the first time the guest (or the VMM) writes it, so the file never changes.
/// Every VM mapping the same file shares the pages it only reads. The bytes from `addr + len` to
/// the end of that page are zeroed, as if copied into fresh memory.
///
/// The file must not change while mapped: a page the guest has not written yet shows the file's
/// current content, and a page past a truncated end faults (`KVM_RUN` fails with `EFAULT`). Map
/// only files that are replaced, never rewritten in place (the image cache, `image_cache.rs`).
///
/// Errors ([`MemoryError::MapFile`], `EINVAL`): `addr` or `offset` not a multiple of
/// [`PAGE_SIZE`], `len` zero, the range not inside one region of `mem`, or the file shorter than
/// `offset + len`; otherwise what `mmap` returned. On error guest memory is unchanged.
pub fn map_file(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    file: &std::fs::File,
    offset: u64,
    len: u64,
) -> Result<(), MemoryError> {
    use std::os::fd::AsRawFd;
    let err = |source| MemoryError::MapFile {
        addr: addr.raw_value(),
        offset,
        len,
        source,
    };
    let einval = || err(std::io::Error::from_raw_os_error(libc::EINVAL));
    let map_len = len.checked_next_multiple_of(PAGE_SIZE).ok_or_else(einval)?;
    let file_len = file.metadata().map_err(err)?.len();
    let fits_region = mem.find_region(addr).is_some_and(|r| {
        let end = r.start_addr().raw_value() + r.len();
        addr.raw_value()
            .checked_add(map_len)
            .is_some_and(|e| e <= end)
    });
    if len == 0
        || addr.raw_value() % PAGE_SIZE != 0
        || offset % PAGE_SIZE != 0
        || !fits_region
        || offset.checked_add(len).is_none_or(|end| end > file_len)
    {
        return Err(einval());
    }
    let host = mem.get_host_address(addr).map_err(|_| einval())?;
    let map_len = usize::try_from(map_len).map_err(|_| einval())?;
    let file_offset = libc::off_t::try_from(offset).map_err(|_| einval())?;
    // SAFETY: `host..host + map_len` lies inside one region of guest RAM (checked above), which
    // the `GuestRam` behind `mem` keeps mapped for as long as any view of it lives; MAP_FIXED
    // replaces those pages with the file's in place, so every pointer into guest RAM stays valid.
    // The vCPUs do not run while the images load, and KVM follows the change through its MMU
    // notifier. The result is checked before use.
    let mapped = unsafe {
        libc::mmap(
            host.cast(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED,
            file.as_raw_fd(),
            file_offset,
        )
    };
    if mapped == libc::MAP_FAILED {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: advice on the mapping just made; it does not change its contents.
    unsafe { libc::madvise(mapped, map_len, libc::MADV_DONTFORK) };
    let tail = map_len as u64 - len;
    if tail > 0 {
        mem.write_slice(&vec![0u8; tail as usize], addr.unchecked_add(len))
            .map_err(|_| einval())?;
    }
    Ok(())
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
    use std::io::Write;

    /// The host mapping behind guest RAM, from /proc/self/smaps: (start, size in KiB, the
    /// `THPeligible` flag), for the mapping that contains `addr`.
    fn smaps_entry(addr: usize) -> (usize, u64, bool) {
        let text = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut found: Option<(usize, u64, bool)> = None;
        for line in text.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    if found.is_some() {
                        break;
                    }
                    if (a..b).contains(&addr) {
                        found = Some((a, ((b - a) >> 10) as u64, false));
                    }
                    continue;
                }
            }
            if let (Some(f), Some(v)) = (found.as_mut(), line.strip_prefix("THPeligible:")) {
                f.2 = v.trim() == "1";
            }
        }
        found.expect("guest memory is mapped")
    }

    #[test]
    fn memory_is_aligned_hugepage_advised_and_readable_everywhere() {
        let ram = create(64 << 20).unwrap();
        let mem = ram.memory();
        assert_eq!(mem.num_regions(), 1);
        let host = mem.get_host_address(GuestAddress(0)).unwrap() as usize;
        assert_eq!(host % HUGE_PAGE, 0, "guest RAM starts on a 2 MiB boundary");
        let (start, kib, thp) = smaps_entry(host);
        assert_eq!(
            (start, kib),
            (host, 64 << 10),
            "exactly guest RAM is mapped"
        );
        let thp_mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        if thp_mode.contains("[madvise]") || thp_mode.contains("[always]") {
            assert!(thp, "MADV_HUGEPAGE makes guest RAM THP-eligible");
        }
        mem.write_obj(0xdead_beefu32, GuestAddress((64 << 20) - 4))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress((64 << 20) - 4)).unwrap(),
            0xdead_beef
        );
        assert!(mem.read_obj::<u32>(GuestAddress(64 << 20)).is_err());
    }

    #[test]
    fn memory_above_the_mmio_window_is_contiguous_on_the_host_and_unmapped_on_drop() {
        let ram = create(4 << 30).unwrap();
        let mem = ram.memory();
        assert_eq!(mem.num_regions(), 2);
        let low = mem.get_host_address(GuestAddress(0)).unwrap() as usize;
        let high = mem.get_host_address(GuestAddress(0x1_0000_0000)).unwrap() as usize;
        assert_eq!(
            high - low,
            0xd000_0000,
            "the high range follows the low one"
        );
        assert_eq!(high % HUGE_PAGE, 0);
        drop(ram);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let still = maps.lines().any(|l| l.starts_with(&format!("{low:x}-")));
        assert!(!still, "guest RAM unmapped after drop");
    }

    #[test]
    fn memory_still_referenced_at_drop_is_left_mapped() {
        let ram = create(64 << 20).unwrap();
        let view = ram.memory().clone();
        drop(ram);
        view.write_obj(7u8, GuestAddress(0x1000)).unwrap();
        assert_eq!(view.read_obj::<u8>(GuestAddress(0x1000)).unwrap(), 7);
    }

    /// A file of `pages` pages plus 100 bytes, byte `i` = `i % 251`.
    fn patterned_file(pages: u64) -> (tempfile::NamedTempFile, Vec<u8>) {
        let bytes: Vec<u8> = (0..pages * PAGE_SIZE + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes).unwrap();
        (f, bytes)
    }

    #[test]
    fn a_mapped_file_reads_through_and_copies_on_write() {
        let ram = create(64 << 20).unwrap();
        let mem = ram.memory();
        mem.write_obj(0x5au8, GuestAddress(0x20_0000 - 1)).unwrap();
        let (f, bytes) = patterned_file(3);
        // Pages 1..3 and 50 bytes of page 3, at 2 MiB: the tail of that last page reads as zero
        // although the file has 50 more bytes there.
        let len = 2 * PAGE_SIZE + 50;
        map_file(mem, GuestAddress(0x20_0000), f.as_file(), PAGE_SIZE, len).unwrap();
        let mut got = vec![0u8; 3 * PAGE_SIZE as usize];
        mem.read_slice(&mut got, GuestAddress(0x20_0000)).unwrap();
        let want = &bytes[PAGE_SIZE as usize..(PAGE_SIZE + len) as usize];
        assert_eq!(&got[..len as usize], want);
        assert!(got[len as usize..].iter().all(|&b| b == 0), "tail zeroed");
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0x20_0000 - 1)).unwrap(),
            0x5a
        );
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0x20_0000 + 3 * PAGE_SIZE))
                .unwrap(),
            0
        );

        mem.write_obj(0xffu8, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x20_0000)).unwrap(), 0xff);
        let on_disk = std::fs::read(f.path()).unwrap();
        assert_eq!(on_disk, bytes, "guest writes never reach the file");

        let host = mem.get_host_address(GuestAddress(0x20_0000)).unwrap() as usize;
        let (start, kib, _) = smaps_entry(host);
        assert_eq!(
            (start, kib),
            (host, 12),
            "the file mapping covers exactly its pages"
        );
        drop(ram);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(
            !maps.lines().any(|l| l.starts_with(&format!("{host:x}-"))),
            "the file mapping goes with guest RAM"
        );
    }

    #[test]
    fn map_file_refuses_unaligned_out_of_range_or_past_the_end_and_leaves_memory_alone() {
        let ram = create(16 << 20).unwrap();
        let mem = ram.memory();
        let (f, _) = patterned_file(2);
        mem.write_obj(0x77u8, GuestAddress(0x1000)).unwrap();
        for (addr, offset, len, what) in [
            (0x1001, 0, 10, "unaligned address"),
            (0x1000, 1, 10, "unaligned offset"),
            (0x1000, 0, 0, "empty"),
            ((16 << 20) - 0x1000, 0, 0x1001, "past the end of guest RAM"),
            (0x1000, 0, 2 * PAGE_SIZE + 101, "past the end of the file"),
            (0x1000, 4 * PAGE_SIZE, 1, "offset past the end of the file"),
        ] {
            let e = map_file(mem, GuestAddress(addr), f.as_file(), offset, len).unwrap_err();
            let MemoryError::MapFile { source, .. } = &e else {
                panic!("{what}: {e:?}")
            };
            assert_eq!(source.raw_os_error(), Some(libc::EINVAL), "{what}");
        }
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x1000)).unwrap(), 0x77);
    }
}
