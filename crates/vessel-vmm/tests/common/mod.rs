//! Test support: a tiny PVH "kernel" (an ELF64 with one load segment and the Xen PVH entry note)
//! around hand-assembled 32-bit code, so vCPU exits can be tested without booting Linux.
#![allow(dead_code)]

use std::io::Write;

use vessel_vmm::{SerialSink, VmConfig};

/// Load and entry address of the test code.
pub const ENTRY: u64 = 0x100000;

/// Writes `out 0x3f8, byte` for each byte of `text`.
pub fn serial_print(text: &[u8]) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for b in text {
        code.extend_from_slice(&[0xb0, *b, 0xee]); // mov al, b; out dx, al
    }
    code
}

/// `mov al, 0xfe; out 0x64, al; hlt`: pulse reset through the i8042.
pub const I8042_RESET: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64, 0xf4];
/// `mov dword [0xc0000000], 1`: store to an address no device claims.
pub const MMIO_HOLE_STORE: &[u8] = &[0xc7, 0x05, 0x00, 0x00, 0x00, 0xc0, 0x01, 0x00, 0x00, 0x00];
/// `jmp $`: spin forever.
pub const SPIN: &[u8] = &[0xeb, 0xfe];

/// An ELF64 image with `code` loaded at [`ENTRY`] and a PVH entry note pointing at it.
pub fn pvh_elf(code: &[u8]) -> Vec<u8> {
    let phoff = 64u64;
    let note_off = phoff + 2 * 56;
    let code_off = 0x100u64;
    let mut f = Vec::new();
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&ENTRY.to_le_bytes());
    f.extend_from_slice(&phoff.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes()); // shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [64u16, 56, 2, 64, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    let phdr = |f: &mut Vec<u8>, ty: u32, off: u64, addr: u64, size: u64| {
        f.extend_from_slice(&ty.to_le_bytes());
        f.extend_from_slice(&5u32.to_le_bytes()); // R+X
        for v in [off, addr, addr, size, size, 4] {
            f.extend_from_slice(&v.to_le_bytes());
        }
    };
    phdr(&mut f, 1, code_off, ENTRY, code.len() as u64); // PT_LOAD
    phdr(&mut f, 4, note_off, 0, 20); // PT_NOTE
    for v in [4u32, 4, 18] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(b"Xen\0");
    f.extend_from_slice(&(ENTRY as u32).to_le_bytes());
    f.resize(code_off as usize, 0);
    f.extend_from_slice(code);
    f
}

/// A config for the tiny kernel `code`, allowed on hosts that cannot boot Linux (its code runs
/// in ring 0, which kvm_pvm emulates slowly but correctly for a handful of instructions).
pub fn tiny_vm(dir: &tempfile::TempDir, code: &[u8]) -> VmConfig {
    let kernel = dir.path().join("tiny.elf");
    std::fs::File::create(&kernel)
        .unwrap()
        .write_all(&pvh_elf(code))
        .unwrap();
    let mut c = VmConfig::new(kernel);
    c.memory_mib = 64;
    c.serial = SerialSink::File(dir.path().join("serial.log"));
    c.allow_unsupported_host = true;
    c
}

/// Number of open fds of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Resident set size of this process in KiB.
pub fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// True when /dev/kvm can be opened (tests that need KVM say why they skip).
pub fn have_kvm() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        eprintln!(
            "{}: skipped: /dev/kvm cannot be opened",
            std::thread::current().name().unwrap_or("test")
        );
    }
    ok
}

/// Serialises the tests of one binary: the leak test counts this process's fds, which tests
/// running in parallel threads would disturb.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Start of a KVM test: the serialisation guard and a temp dir, or `None` (skip) without KVM.
pub fn kvm_test() -> Option<(std::sync::MutexGuard<'static, ()>, tempfile::TempDir)> {
    let guard = serial();
    have_kvm().then(|| (guard, tempfile::tempdir().unwrap()))
}
