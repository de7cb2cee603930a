//! Mapping a `vmlinux` into guest memory instead of copying it: the ELF program headers and the
//! PVH note are read here (ELF-64 Object File Format 1.5, "Program Header" and "Note Section";
//! the note is `XEN_ELFNOTE_PHYS32_ENTRY` of xen/include/public/elfnote.h, as linux-loader reads
//! it), and each `PT_LOAD` segment's file pages are mapped at its physical address with
//! [`memory::map_file`]. Only for files that never change (the image cache); anything this
//! does not handle (a segment whose file offset and address disagree within a page, two segments
//! on one page) is reported, and the caller loads with linux-loader instead.

use std::fs::File;
use std::os::unix::fs::FileExt;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::vstate::memory::{self, PAGE_SIZE};

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const PHDR_SIZE: usize = 56;
/// At most this many program headers (a `vmlinux` has about 5).
const MAX_PHDRS: u16 = 64;

/// One `PT_LOAD` segment (bytes and guest-physical addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

/// Where the kernel went: its PVH entry point and the end of its highest segment (`p_paddr +
/// p_memsz`), as linux-loader's `KernelLoaderResult` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped {
    /// PVH 32-bit entry point.
    pub entry: u64,
    /// End of the loaded kernel image.
    pub kernel_end: u64,
}

/// Maps the `PT_LOAD` segments of the ELF `file` at their physical addresses (each at least
/// `min_paddr`), zeroing the bytes of their first and last pages that are not theirs; the rest of
/// each segment's memory size is guest RAM not yet touched, so zero.
///
/// Errors: a description of what is not mapped this way (not an x86_64 executable ELF, no PVH
/// entry, a segment below `min_paddr`, misaligned or sharing a page, a mapping refused); guest
/// memory may then hold some of the segments, which a copying loader overwrites.
pub fn map_kernel(mem: &GuestMemoryMmap, file: &File, min_paddr: u64) -> Result<Mapped, String> {
    let (segments, entry) = read_layout(file)?;
    let entry = entry.ok_or("no PVH entry note")?;
    let mut pages: Vec<(u64, u64)> = Vec::new();
    let mut kernel_end = 0;
    for s in &segments {
        if s.paddr < min_paddr {
            return Err(format!("segment at {:#x} is below {min_paddr:#x}", s.paddr));
        }
        if s.offset % PAGE_SIZE != s.paddr % PAGE_SIZE {
            return Err(format!(
                "segment at {:#x} (file offset {:#x}) is not page-congruent",
                s.paddr, s.offset
            ));
        }
        let end = s
            .paddr
            .checked_add(s.memsz)
            .ok_or("segment end overflows")?;
        let first = s.paddr - s.paddr % PAGE_SIZE;
        let last = end.next_multiple_of(PAGE_SIZE);
        if pages.iter().any(|&(a, b)| first < b && a < last) {
            return Err(format!(
                "segment at {:#x} shares a page with another",
                s.paddr
            ));
        }
        pages.push((first, last));
        kernel_end = kernel_end.max(end);
    }
    for s in &segments {
        let head = s.paddr % PAGE_SIZE;
        memory::map_file(
            mem,
            GuestAddress(s.paddr - head),
            file,
            s.offset - head,
            s.filesz + head,
        )
        .map_err(|e| {
            let cause = std::error::Error::source(&e).map(ToString::to_string);
            format!("{e}: {}", cause.unwrap_or_default())
        })?;
        if head > 0 {
            mem.write_slice(&vec![0u8; head as usize], GuestAddress(s.paddr - head))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(Mapped { entry, kernel_end })
}

/// The `PT_LOAD` segments with file bytes (linux-loader ignores the others too) and the PVH
/// entry point, if the file has one.
fn read_layout(file: &File) -> Result<(Vec<Segment>, Option<u64>), String> {
    let mut ehdr = [0u8; 64];
    file.read_exact_at(&mut ehdr, 0)
        .map_err(|e| format!("ELF header: {e}"))?;
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    if &ehdr[..4] != b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return Err("not a little-endian 64-bit ELF".into());
    }
    if u16_at(&ehdr, 16) != ET_EXEC || u16_at(&ehdr, 18) != EM_X86_64 {
        return Err("not an x86_64 executable".into());
    }
    let (phoff, phentsize, phnum) = (u64_at(&ehdr, 32), u16_at(&ehdr, 54), u16_at(&ehdr, 56));
    if usize::from(phentsize) != PHDR_SIZE || phnum > MAX_PHDRS {
        return Err(format!("{phnum} program headers of {phentsize} bytes"));
    }
    let mut table = vec![0u8; PHDR_SIZE * usize::from(phnum)];
    file.read_exact_at(&mut table, phoff)
        .map_err(|e| format!("program headers: {e}"))?;
    let mut segments = Vec::new();
    let mut entry = None;
    for p in table.chunks_exact(PHDR_SIZE) {
        let (kind, offset, paddr) = (u32_at(p, 0), u64_at(p, 8), u64_at(p, 24));
        let (filesz, memsz) = (u64_at(p, 32), u64_at(p, 40));
        match kind {
            PT_LOAD if filesz > 0 => {
                if memsz < filesz {
                    return Err(format!("segment at {paddr:#x}: memsz < filesz"));
                }
                segments.push(Segment {
                    offset,
                    paddr,
                    filesz,
                    memsz,
                });
            }
            PT_NOTE if entry.is_none() => entry = pvh_entry(file, offset, filesz)?,
            _ => {}
        }
    }
    Ok((segments, entry))
}

/// The `XEN_ELFNOTE_PHYS32_ENTRY` note's address in the note segment at `offset`, `size` bytes.
fn pvh_entry(file: &File, offset: u64, size: u64) -> Result<Option<u64>, String> {
    if size > 1 << 20 {
        return Err(format!("note segment of {size} bytes"));
    }
    let mut notes = vec![0u8; size as usize];
    file.read_exact_at(&mut notes, offset)
        .map_err(|e| format!("notes: {e}"))?;
    let mut at = 0usize;
    while at + 12 <= notes.len() {
        let word = |o: usize| u32::from_le_bytes(notes[o..o + 4].try_into().unwrap()) as usize;
        let (namesz, descsz, kind) = (word(at), word(at + 4), word(at + 8) as u32);
        let name = at + 12;
        let desc = name
            .checked_add(namesz.next_multiple_of(4))
            .ok_or("note overflows")?;
        let next = desc
            .checked_add(descsz.next_multiple_of(4))
            .ok_or("note overflows")?;
        if next > notes.len() {
            return Err("truncated note".into());
        }
        if kind == XEN_ELFNOTE_PHYS32_ENTRY && &notes[name..name + namesz] == b"Xen\0" {
            if descsz < 4 {
                return Err("PVH note shorter than 4 bytes".into());
            }
            return Ok(Some(word(desc) as u64));
        }
        at = next;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use crate::vstate::memory;

    /// A little x86_64 ELF: a text segment of 2.5 pages at 16 MiB (file offset 0x1000), a data
    /// segment at 16 MiB + 0x5000 whose memory size is twice its file size, and a PVH note.
    fn tiny_elf(data_paddr: u64, data_offset: u64) -> (tempfile::NamedTempFile, Vec<u8>) {
        let mut f = vec![0u8; 0x9000];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        f[56..58].copy_from_slice(&3u16.to_le_bytes());
        let phdr =
            |f: &mut Vec<u8>, i: usize, kind: u32, off: u64, paddr: u64, fsz: u64, msz: u64| {
                let p = 64 + i * PHDR_SIZE;
                f[p..p + 4].copy_from_slice(&kind.to_le_bytes());
                f[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
                f[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes());
                f[p + 32..p + 40].copy_from_slice(&fsz.to_le_bytes());
                f[p + 40..p + 48].copy_from_slice(&msz.to_le_bytes());
            };
        phdr(&mut f, 0, PT_LOAD, 0x1000, 0x100_0000, 0x2800, 0x2800);
        phdr(&mut f, 1, PT_LOAD, data_offset, data_paddr, 0x1800, 0x3000);
        // An unrelated note, then Xen's PHYS32_ENTRY (namesz 4, descsz 4).
        let note = [
            &4u32.to_le_bytes()[..],
            &0u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            b"GNU\0",
        ]
        .concat();
        f[0x400..0x410].copy_from_slice(&note);
        let pvh = [
            &4u32.to_le_bytes()[..],
            &4u32.to_le_bytes(),
            &18u32.to_le_bytes(),
            b"Xen\0",
            &0x100_0abcu32.to_le_bytes(),
        ]
        .concat();
        phdr(
            &mut f,
            2,
            PT_NOTE,
            0x400,
            0,
            (note.len() + pvh.len()) as u64,
            0,
        );
        f[0x410..0x410 + pvh.len()].copy_from_slice(&pvh);
        for (i, b) in f[0x1000..].iter_mut().enumerate() {
            *b = (i % 253) as u8 | 1;
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&f).unwrap();
        (file, f)
    }

    #[test]
    fn segments_are_mapped_at_their_addresses_with_zeroed_edges_and_bss() {
        let ram = memory::create(64 << 20).unwrap();
        let mem = ram.memory();
        let (file, bytes) = tiny_elf(0x100_5000, 0x5000);
        let mapped = map_kernel(mem, file.as_file(), 0x10_0000).unwrap();
        assert_eq!(
            mapped,
            Mapped {
                entry: 0x100_0abc,
                kernel_end: 0x100_8000
            }
        );
        let mut text = vec![0u8; 0x3000];
        mem.read_slice(&mut text, GuestAddress(0x100_0000)).unwrap();
        assert_eq!(&text[..0x2800], &bytes[0x1000..0x3800]);
        assert!(
            text[0x2800..].iter().all(|&b| b == 0),
            "text's last page past filesz"
        );
        let mut data = vec![0u8; 0x3000];
        mem.read_slice(&mut data, GuestAddress(0x100_5000)).unwrap();
        assert_eq!(&data[..0x1800], &bytes[0x5000..0x6800]);
        assert!(data[0x1800..].iter().all(|&b| b == 0), "bss");
    }

    #[test]
    fn a_segment_off_page_congruence_or_sharing_a_page_or_too_low_is_left_to_the_copier() {
        let ram = memory::create(64 << 20).unwrap();
        let mem = ram.memory();
        let (file, _) = tiny_elf(0x100_5000, 0x5100);
        let e = map_kernel(mem, file.as_file(), 0x10_0000).unwrap_err();
        assert!(e.contains("page-congruent"), "{e}");
        let (file, _) = tiny_elf(0x100_2000, 0x5000);
        let e = map_kernel(mem, file.as_file(), 0x10_0000).unwrap_err();
        assert!(e.contains("shares a page"), "{e}");
        let (file, _) = tiny_elf(0x100_5000, 0x5000);
        let e = map_kernel(mem, file.as_file(), 0x200_0000).unwrap_err();
        assert!(e.contains("below"), "{e}");
        let mut junk = tempfile::NamedTempFile::new().unwrap();
        junk.write_all(&[0u8; 128]).unwrap();
        let e = map_kernel(mem, junk.as_file(), 0).unwrap_err();
        assert!(e.contains("not a little-endian 64-bit ELF"), "{e}");
    }

    #[test]
    fn the_real_guest_kernel_maps_as_linux_loader_loads_it() {
        // `make test` builds the kernel first; `cargo test` alone may run before it exists.
        let kernel = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../build/share/vessel/vmlinux");
        if !kernel.is_file() {
            eprintln!(
                "{}: skipped: {} not built (make kernel)",
                std::thread::current().name().unwrap_or("test"),
                kernel.display()
            );
            return;
        }
        let file = File::open(&kernel).unwrap();
        let mapped_ram = memory::create(128 << 20).unwrap();
        let mapped = map_kernel(
            mapped_ram.memory(),
            &file,
            super::super::layout::HIMEM_START,
        )
        .unwrap();
        let copied_ram = memory::create(128 << 20).unwrap();
        use linux_loader::loader::KernelLoader;
        let loaded = linux_loader::loader::elf::Elf::load(
            copied_ram.memory(),
            None,
            &mut File::open(&kernel).unwrap(),
            Some(GuestAddress(super::super::layout::HIMEM_START)),
        )
        .unwrap();
        assert_eq!(mapped.kernel_end, loaded.kernel_end);
        let linux_loader::loader::elf::PvhBootCapability::PvhEntryPresent(entry) =
            loaded.pvh_boot_cap
        else {
            panic!("the guest kernel has a PVH note");
        };
        assert_eq!(mapped.entry, entry.0);
        let len = loaded.kernel_end as usize;
        let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
        mapped_ram
            .memory()
            .read_slice(&mut a, GuestAddress(0))
            .unwrap();
        copied_ram
            .memory()
            .read_slice(&mut b, GuestAddress(0))
            .unwrap();
        assert!(
            a == b,
            "the first {len} bytes of guest memory are identical"
        );
    }
}
