//! Loading the guest for a PVH boot: the `vmlinux` ELF (linux-loader), the initramfs at the top of
//! low RAM, the command line, and `hvm_start_info` with its memory map and module list
//! (xen/include/public/arch-x86/hvm/start_info.h; Linux arch/x86/platform/pvh/enlighten.c).

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

use super::elf_map;
use super::layout::*;
use crate::image_cache::ImageCache;
use crate::joined::Joined;
use crate::vstate::memory;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const PAGE: u64 = 4096;

/// Why the guest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file could not be opened.
    #[error("cannot open kernel {path}")]
    OpenKernel {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// linux-loader refused the ELF.
    #[error("cannot load kernel {path} as an ELF vmlinux")]
    LoadKernel {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// The ELF has no PVH entry note (`CONFIG_PVH` off).
    #[error("kernel {path} has no PVH entry point (build it with CONFIG_PVH=y)")]
    NoPvhEntry {
        /// The path.
        path: PathBuf,
    },
    /// The initramfs could not be read.
    #[error("cannot read initramfs {path}")]
    ReadInitramfs {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The initramfs does not fit between the kernel end and the top of low RAM.
    #[error(
        "initramfs of {size} bytes does not fit between kernel end {kernel_end:#x} and {top:#x}"
    )]
    InitramfsTooBig {
        /// Its size.
        size: u64,
        /// End of the loaded kernel.
        kernel_end: u64,
        /// Top of low RAM.
        top: u64,
    },
    /// Writing the initramfs into guest memory failed.
    #[error("cannot write initramfs at {addr:#x}")]
    WriteInitramfs {
        /// Guest address.
        addr: u64,
        /// The cause.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The command line is invalid or too long.
    #[error("invalid kernel command line {cmdline:?}")]
    Cmdline {
        /// The line.
        cmdline: String,
        /// The cause.
        #[source]
        source: linux_loader::cmdline::Error,
    },
    /// Writing the command line failed.
    #[error("cannot write kernel command line")]
    WriteCmdline(#[source] linux_loader::loader::Error),
    /// Writing the PVH start info failed.
    #[error("cannot write pvh start info")]
    WriteStartInfo(#[source] linux_loader::configurator::Error),
    /// The thread loading the images panicked (a bug; its message is on stderr).
    #[error("the kernel loading thread panicked")]
    LoaderPanicked,
}

/// What the vCPU setup needs from the loaded guest.
#[derive(Debug, Clone, Copy)]
pub struct BootInfo {
    /// PVH entry point (32-bit).
    pub entry: u64,
    /// Guest address of `hvm_start_info`.
    pub start_info: u64,
    /// End of the loaded kernel image.
    pub kernel_end: u64,
    /// Initramfs location `(addr, size)` if any.
    pub initramfs: Option<(u64, u64)>,
}

/// Where [`load_images`] put the kernel and the initramfs.
#[derive(Debug, Clone, Copy)]
pub struct Images {
    /// PVH entry point (32-bit).
    pub entry: u64,
    /// End of the loaded kernel image.
    pub kernel_end: u64,
    /// Initramfs location `(addr, size)` if any.
    pub initramfs: Option<(u64, u64)>,
}

/// Loads the kernel's ELF segments at their physical addresses (from 1 MiB) and the initramfs at
/// the top of low memory (below the MMIO window, page aligned, above the kernel). Writes nothing
/// else: the VMM runs this on its own thread while it builds the VM, then calls
/// [`write_boot_info`]. With a `cache`, the images are the cache's copies mapped into guest
/// memory (decision 0006); if that cannot be done (logged at `info`), they are copied in.
///
/// Errors: the kernel cannot be opened or is not an ELF with a PVH entry note; the initramfs
/// cannot be read or does not fit between the kernel and the top of low memory.
pub fn load_images(
    mem: &GuestMemoryMmap,
    kernel: &Path,
    initramfs: Option<&Path>,
    cache: Option<&ImageCache>,
) -> Result<Images, BootError> {
    if let Some(cache) = cache {
        match map_images(mem, kernel, initramfs, cache) {
            Ok(images) => return Ok(images),
            // Copying below overwrites whatever was mapped (copy-on-write).
            Err(why) => log::info!("copying the guest images instead of mapping them: {why}"),
        }
    }
    let mut file = File::open(kernel).map_err(|source| BootError::OpenKernel {
        path: kernel.to_path_buf(),
        source,
    })?;
    let loaded =
        Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(|source| {
            BootError::LoadKernel {
                path: kernel.to_path_buf(),
                source,
            }
        })?;
    let entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(a) => a.raw_value(),
        _ => {
            return Err(BootError::NoPvhEntry {
                path: kernel.to_path_buf(),
            })
        }
    };
    let kernel_end = loaded.kernel_end;
    let initramfs = match initramfs {
        None => None,
        Some(path) => {
            // Read straight into guest memory: no heap copy, no user-space page faults.
            let read_err = |source| BootError::ReadInitramfs {
                path: path.to_path_buf(),
                source,
            };
            let mut file = File::open(path).map_err(read_err)?;
            let size = file.metadata().map_err(read_err)?.len();
            let (addr, len) = initramfs_place(mem, size, kernel_end)?;
            mem.read_exact_volatile_from(GuestAddress(addr), &mut file, len)
                .map_err(|source| BootError::WriteInitramfs { addr, source })?;
            Some((addr, size))
        }
    };
    Ok(Images {
        entry,
        kernel_end,
        initramfs,
    })
}

/// Where an initramfs of `size` bytes goes: the top of low memory, page aligned, above the kernel.
fn initramfs_place(
    mem: &GuestMemoryMmap,
    size: u64,
    kernel_end: u64,
) -> Result<(u64, usize), BootError> {
    let low_top = mem.last_addr().raw_value().min(MMIO_START - 1) + 1;
    let too_big = BootError::InitramfsTooBig {
        size,
        kernel_end,
        top: low_top,
    };
    match low_top.checked_sub(size).map(|a| a & !(PAGE - 1)) {
        Some(addr) if addr >= kernel_end => usize::try_from(size)
            .map(|len| (addr, len))
            .map_err(|_| too_big),
        _ => Err(too_big),
    }
}

/// [`load_images`] by mapping the image cache's copies (decision 0006): the kernel's segments
/// with [`elf_map::map_kernel`], the initramfs whole. Errors: why not, for the log; the caller
/// then copies.
fn map_images(
    mem: &GuestMemoryMmap,
    kernel: &Path,
    initramfs: Option<&Path>,
    cache: &ImageCache,
) -> Result<Images, String> {
    let file = cache.open(kernel).map_err(|e| vessel_error::chain(&e))?;
    let mapped = elf_map::map_kernel(mem, &file, HIMEM_START)
        .map_err(|why| format!("{}: {why}", kernel.display()))?;
    let initramfs = match initramfs {
        None => None,
        Some(path) => {
            let file = cache.open(path).map_err(|e| vessel_error::chain(&e))?;
            let size = file.metadata().map_err(|e| e.to_string())?.len();
            let (addr, _) =
                initramfs_place(mem, size, mapped.kernel_end).map_err(|e| e.to_string())?;
            memory::map_file(mem, GuestAddress(addr), &file, 0, size)
                .map_err(|e| vessel_error::chain(&e))?;
            Some((addr, size))
        }
    };
    Ok(Images {
        entry: mapped.entry,
        kernel_end: mapped.kernel_end,
        initramfs,
    })
}

/// [`load_images`] on a thread of its own (`vmm-loader`), so that reading the kernel and the
/// initramfs into guest memory overlaps with building the VM. Dropping a `Loader` that was not
/// [`finish`](Loader::finish)ed joins the thread, so no thread outlives it holding guest memory.
#[derive(Debug)]
pub struct Loader(Joined<Result<Images, BootError>>);

impl Loader {
    /// Starts loading `kernel` and `initramfs` into `mem` (a clone of the VM's guest memory).
    /// Errors: the thread cannot be spawned.
    pub fn spawn(
        mem: GuestMemoryMmap,
        kernel: std::path::PathBuf,
        initramfs: Option<std::path::PathBuf>,
        cache: Option<ImageCache>,
    ) -> std::io::Result<Loader> {
        Joined::spawn("vmm-loader", move || {
            load_images(&mem, &kernel, initramfs.as_deref(), cache.as_ref())
        })
        .map(Loader)
    }

    /// Waits for the load and returns where the images went, or why they could not be loaded.
    pub fn finish(self) -> Result<Images, BootError> {
        self.0.finish().ok_or(BootError::LoaderPanicked)?
    }
}

/// Writes `cmdline` and the PVH start info (memory map, initramfs module) for `images`, and
/// returns what the vCPU setup needs.
///
/// Errors: `cmdline` is longer than [`crate::config::MAX_CMDLINE_LEN`] or has a NUL; a write to
/// guest memory fails.
pub fn write_boot_info(
    mem: &GuestMemoryMmap,
    images: &Images,
    cmdline: &str,
) -> Result<BootInfo, BootError> {
    let Images {
        entry,
        kernel_end,
        initramfs,
    } = *images;
    let mut cl =
        Cmdline::new(crate::config::MAX_CMDLINE_LEN).map_err(|source| BootError::Cmdline {
            cmdline: String::new(),
            source,
        })?;
    cl.insert_str(cmdline)
        .map_err(|source| BootError::Cmdline {
            cmdline: cmdline.to_owned(),
            source,
        })?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), &cl).map_err(BootError::WriteCmdline)?;

    let memmap = memory_map(mem);
    let mut start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut modules = Vec::new();
    if let Some((addr, size)) = initramfs {
        modules.push(hvm_modlist_entry {
            paddr: addr,
            size,
            ..Default::default()
        });
        start_info.nr_modules = 1;
        start_info.modlist_paddr = MODLIST_START;
    }
    let mut params = BootParams::new(&start_info, GuestAddress(PVH_INFO_START));
    params.set_sections(&memmap, GuestAddress(MEMMAP_START));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(MODLIST_START));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(BootError::WriteStartInfo)?;

    Ok(BootInfo {
        entry,
        start_info: PVH_INFO_START,
        kernel_end,
        initramfs,
    })
}

/// The e820-style map: base RAM below the EBDA, a reserved hole up to 1 MiB, then every RAM
/// region of `mem` from 1 MiB up.
pub fn memory_map(mem: &GuestMemoryMmap) -> Vec<hvm_memmap_table_entry> {
    let e = |addr: u64, size: u64, type_: u32| hvm_memmap_table_entry {
        addr,
        size,
        type_,
        reserved: 0,
    };
    let mut map = vec![
        e(0, EBDA_START, E820_RAM),
        e(EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for r in mem.iter() {
        use vm_memory::GuestMemoryRegion;
        let start = r.start_addr().raw_value().max(HIMEM_START);
        let end = r.start_addr().raw_value() + r.len();
        if end > start {
            map.push(e(start, end - start, E820_RAM));
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_map_reserves_the_ebda_hole_and_lists_ram_above_4g() {
        let ram = crate::vstate::memory::create(4 << 30).unwrap();
        let map: Vec<(u64, u64, u32)> = memory_map(ram.memory())
            .iter()
            .map(|e| (e.addr, e.size, e.type_))
            .collect();
        assert_eq!(
            map,
            vec![
                (0, 0x9fc00, E820_RAM),
                (0x9fc00, 0x100000 - 0x9fc00, E820_RESERVED),
                (0x100000, 0xd000_0000 - 0x100000, E820_RAM),
                (0x1_0000_0000, (4 << 30) - 0xd000_0000, E820_RAM),
            ]
        );
    }
}
