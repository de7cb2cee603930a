//! `vessel-guest-probe`: a tiny static `/init` for the VMM's lab tests.
//!
//! On the serial console (through `/dev/console`) it prints one line per fact, each starting with
//! `PROBE `, so the host can grep them:
//! - `PROBE init uptime_ms=<guest uptime when init started>`
//! - `PROBE cpus=<online vCPUs> memtotal_kib=<MemTotal>`
//! - with `probe.vsock=<bytes>` on the kernel command line, two echo exchanges of that many bytes:
//!   host-initiated (the probe listens on vsock port 5000 and echoes one connection back until
//!   EOF) and guest-initiated (it connects to host CID 2 port 5001, sends a pattern, half-closes,
//!   and checks the echo), printing `PROBE vsock host-initiated echoed=<n>` and
//!   `PROBE vsock guest-initiated ok bytes=<n>` (or `... FAILED <why>`)
//! - with `probe.fs=<tag>`, it mounts that virtio-fs tag at `/mnt`, prints
//!   `PROBE fs hello=<first line of hello.txt>`, writes `from-guest.txt` (`written by the guest`),
//!   reads `host-big.bin` and prints `PROBE fs read host-big.bin bytes=<n> fnv=<FNV-1a 64, hex>`,
//!   writes those bytes back as `guest-big.bin` (fsynced), then prints `PROBE fs ok` (or
//!   `PROBE fs FAILED <why>`); then the file-system semantics checks of [`fs_semantics`], one
//!   `PROBE fs <check> <result>` line each (or `PROBE fs <check> FAILED <why>`)
//! - with `probe.fsbench=<tag>`, it mounts that tag at `/mnt` and runs the file-system benchmark
//!   of [`fsbench`] in `/mnt/fsbench` (natively: `vessel-guest-probe fsbench <dir>`)
//! - with `probe.fslat=<tag>`, it mounts that tag at `/mnt` and times single FUSE round trips
//!   ([`fslat`]) in `/mnt/fslat` (natively: `vessel-guest-probe fslat <dir>`)
//! - with `probe.dmesg` on the command line, the kernel's log buffer (read with `syslog(2)`, so
//!   a `quiet` boot still has every message; add `printk.time=1` for timestamps), one
//!   `PROBE dmesg <line>` per line: a boot timeline that costs nothing on the slow console;
//!   with `probe.dmesg_min_us=<N>` as well, `initcall_debug`'s `calling` lines and the initcalls
//!   that took less than N microseconds are left out (a long serial dump stalls the lab)
//! - natively or inside a container, `vessel-guest-probe vsock-connect CID PORT` makes one
//!   vsock connection attempt and prints its outcome as one `VSOCK ...` line ([`vsock_attempt`])
//! - `PROBE done`, then it ends the VM with `reboot(RB_AUTOBOOT)`: with `reboot=k` and no ACPI
//!   that is the i8042 reset the VMM reports as a guest shutdown (a power-off request would only
//!   halt the CPUs, as the kernel has no power-off method without ACPI).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;

/// Port the probe listens on for the host-initiated exchange.
const LISTEN_PORT: u32 = 5000;
/// Host port the probe connects to for the guest-initiated exchange.
const HOST_PORT: u32 = 5001;
const HOST_CID: u32 = 2;

mod fsbench;
mod fslat;

fn main() {
    // Natively (not as /init): `vessel-guest-probe fsbench DIR`, the host side of the benchmark.
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, dir] = args.as_slice() {
        if mode == "fsbench" {
            fsbench::run(std::path::Path::new(dir));
            return;
        }
        if mode == "fslat" {
            fslat::run(std::path::Path::new(dir));
            return;
        }
    }
    // Inside a container (not as /init): `vessel-guest-probe vsock-connect CID PORT`, one
    // connection attempt reported as one `VSOCK` line (the agent's reachability tests).
    if let [_, mode, cid, port] = args.as_slice() {
        if mode == "vsock-connect" {
            match (cid.parse(), port.parse()) {
                (Ok(cid), Ok(port)) => println!("{}", vsock_attempt(cid, port)),
                _ => println!("VSOCK usage: vsock-connect CID PORT (numbers)"),
            }
            return;
        }
    }
    let _ = std::fs::create_dir_all("/proc");
    if let Err(e) = mount("proc", "/proc", "proc") {
        println!("PROBE mount /proc FAILED {e}");
    }
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let up_ms = uptime
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or(0);
    println!("PROBE init uptime_ms={up_ms}");
    println!(
        "PROBE cpus={} memtotal_kib={}",
        online_cpus(),
        mem_total_kib()
    );
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let vsock_bytes = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("probe.vsock="))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = vsock_bytes {
        match host_initiated_echo() {
            Ok(echoed) => println!("PROBE vsock host-initiated echoed={echoed}"),
            Err(e) => println!("PROBE vsock host-initiated FAILED {e}"),
        }
        match guest_initiated(n) {
            Ok(()) => println!("PROBE vsock guest-initiated ok bytes={n}"),
            Err(e) => println!("PROBE vsock guest-initiated FAILED {e}"),
        }
    }
    if let Some(tag) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("probe.fs="))
    {
        match fs_share(tag) {
            Ok(()) => println!("PROBE fs ok"),
            Err(e) => println!("PROBE fs FAILED {e}"),
        }
        fs_semantics();
    }
    if let Some(tag) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("probe.fsbench="))
    {
        mount_bench_share(tag, &cmdline).map_or_else(
            |e| println!("PROBE fsbench FAILED {e}"),
            |()| fsbench::run(std::path::Path::new("/mnt/fsbench")),
        );
    }
    if let Some(tag) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("probe.fslat="))
    {
        mount_bench_share(tag, &cmdline).map_or_else(
            |e| println!("PROBE fslat FAILED {e}"),
            |()| fslat::run(std::path::Path::new("/mnt/fslat")),
        );
    }
    if cmdline.split_whitespace().any(|w| w == "probe.dmesg") {
        let min_us = cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("probe.dmesg_min_us="))
            .and_then(|n| n.parse().ok());
        print_kernel_log(min_us);
    }
    println!("PROBE done");
    let _ = std::io::stdout().flush();
    // SAFETY: sync and reboot take no pointers; RB_AUTOBOOT ends the VM through the i8042 reset
    // (as PID 1 we must not return from main, which would panic the kernel).
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    loop {
        std::thread::park();
    }
}

/// Prints the kernel's log buffer, `PROBE dmesg <line>` per line (`SYSLOG_ACTION_READ_ALL`);
/// with `min_us`, without `initcall_debug`'s `calling` lines and initcalls shorter than that.
fn print_kernel_log(min_us: Option<u64>) {
    const SYSLOG_ACTION_READ_ALL: libc::c_int = 3;
    const SYSLOG_ACTION_SIZE_BUFFER: libc::c_int = 10;
    // SAFETY: SIZE_BUFFER takes no buffer (null, length 0) and returns the log buffer's size.
    let size = unsafe { libc::klogctl(SYSLOG_ACTION_SIZE_BUFFER, std::ptr::null_mut(), 0) };
    let mut buf = vec![0u8; size.max(4096) as usize];
    // SAFETY: `buf` is writable for `buf.len()` bytes for the call; the kernel writes at most that.
    let n = unsafe {
        libc::klogctl(
            SYSLOG_ACTION_READ_ALL,
            buf.as_mut_ptr().cast(),
            buf.len() as libc::c_int,
        )
    };
    if n < 0 {
        println!("PROBE dmesg FAILED {}", std::io::Error::last_os_error());
        return;
    }
    for line in String::from_utf8_lossy(&buf[..n as usize]).lines() {
        if let Some(min_us) = min_us {
            if line.contains("] calling  ") {
                continue;
            }
            // `initcall <fn> returned <rc> after <N> usecs`
            let took = line
                .split_once(" after ")
                .and_then(|(_, rest)| rest.strip_suffix(" usecs"))
                .and_then(|n| n.trim().parse::<u64>().ok());
            if took.is_some_and(|us| us < min_us) {
                continue;
            }
        }
        println!("PROBE dmesg {line}");
    }
}

fn mount(src: &str, dst: &str, fstype: &str) -> std::io::Result<()> {
    let c = |s: &str| std::ffi::CString::new(s).map_err(std::io::Error::other);
    let (s, d, t) = (c(src)?, c(dst)?, c(fstype)?);
    // SAFETY: all three are valid NUL-terminated strings alive for the call; data is null.
    let rc = unsafe { libc::mount(s.as_ptr(), d.as_ptr(), t.as_ptr(), 0, std::ptr::null()) };
    check(rc, &format!("mount {fstype} {src} on {dst}"))
}

/// Mounts the virtio-fs share `tag` on `/mnt` for `fsbench` and `fslat`; with
/// `probe.fs_ra_kb=N` on the command line it then sets the share's read-ahead window to N KiB
/// (`/sys/class/bdi/<major>:<minor>/read_ahead_kb`, Documentation/ABI/testing/sysfs-class-bdi),
/// as the agent does for a container's share.
fn mount_bench_share(tag: &str, cmdline: &str) -> std::io::Result<()> {
    std::fs::create_dir_all("/mnt")?;
    mount(tag, "/mnt", "virtiofs")?;
    let Some(kb) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("probe.fs_ra_kb="))
    else {
        return Ok(());
    };
    std::fs::create_dir_all("/sys")?;
    mount("sysfs", "/sys", "sysfs")?;
    let dev = std::fs::metadata("/mnt").map(|m| std::os::linux::fs::MetadataExt::st_dev(&m))?;
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    std::fs::write(&path, kb)?;
    println!(
        "PROBE fs read_ahead_kb={}",
        std::fs::read_to_string(&path)?.trim()
    );
    Ok(())
}

/// FNV-1a, 64 bits: the checksum the host recomputes.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The `probe.fs=<tag>` exchange (see the module docs).
fn fs_share(tag: &str) -> std::io::Result<()> {
    std::fs::create_dir_all("/mnt")?;
    mount(tag, "/mnt", "virtiofs")?;
    let hello = std::fs::read_to_string("/mnt/hello.txt")?;
    println!("PROBE fs hello={}", hello.lines().next().unwrap_or(""));
    let mut f = File::create("/mnt/from-guest.txt")?;
    f.write_all(b"written by the guest\n")?;
    f.sync_all()?;
    let big = std::fs::read("/mnt/host-big.bin")?;
    println!(
        "PROBE fs read host-big.bin bytes={} fnv={:016x}",
        big.len(),
        fnv1a(&big)
    );
    let mut f = File::create("/mnt/guest-big.bin")?;
    for chunk in big.chunks(1 << 20) {
        f.write_all(chunk)?;
    }
    f.sync_all()
}

/// The POSIX behaviour a container expects of its root file system, each check on its own so one
/// failure does not hide the others. The host prepared `owned.txt` (uid 1234, gid 2345, mode
/// 0604, xattr `trusted.vessel=from-host`), `rename-me.txt` and `mmap.bin` (8 KiB of zeros), and
/// checks afterwards what the guest left. Lines (on success):
/// - `stat owned.txt uid=1234 gid=2345 mode=604`
/// - `xattr owned.txt trusted.vessel=from-host`, after setting `trusted.vessel=from-guest` on
///   `renamed.txt`
/// - `rename ok` (`rename-me.txt` -> `renamed.txt`), `link nlink=2` (`hardlink.txt`, same inode),
///   `symlink target=renamed.txt` (`sym.txt`)
/// - `chown uid=1000 gid=1001 mode=640` on `from-guest.txt`
/// - `mmap ok` (`mmap-from-guest` at offset 4096 of `mmap.bin` through a shared mapping, msync)
/// - `direct bytes=8192` (`direct.bin` written and read back with `O_DIRECT`, fsync between);
///   `O_DIRECT` passes through to the host file, so on a host file system without it (tmpfs before
///   Linux 6.6) this is `direct FAILED Invalid argument (os error 22)`, as on the host itself
/// - `readdir <sorted names>` of the share's root
/// - `many files=1100` (1,100 files created in `many/` and all still open in the guest's dentry
///   cache: the host's file server holds a descriptor for each, past the usual limit of 1024)
fn fs_semantics() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let report = |name: &str, r: std::io::Result<String>| match r {
        Ok(v) => println!("PROBE fs {name} {v}"),
        Err(e) => println!("PROBE fs {name} FAILED {e}"),
    };
    let mode = |m: &std::fs::Metadata| format!("{:o}", m.mode() & 0o7777);
    report(
        "stat",
        std::fs::metadata("/mnt/owned.txt").map(|m| {
            format!(
                "owned.txt uid={} gid={} mode={}",
                m.uid(),
                m.gid(),
                mode(&m)
            )
        }),
    );
    report(
        "rename",
        std::fs::rename("/mnt/rename-me.txt", "/mnt/renamed.txt").map(|()| "ok".into()),
    );
    report(
        "xattr",
        xattr_set("/mnt/renamed.txt", "trusted.vessel", b"from-guest")
            .and_then(|()| xattr_get("/mnt/owned.txt", "trusted.vessel"))
            .map(|v| format!("owned.txt trusted.vessel={v}")),
    );
    report(
        "link",
        std::fs::hard_link("/mnt/renamed.txt", "/mnt/hardlink.txt").and_then(|()| {
            let (a, b) = (
                std::fs::metadata("/mnt/renamed.txt")?,
                std::fs::metadata("/mnt/hardlink.txt")?,
            );
            if a.ino() != b.ino() {
                return Err(std::io::Error::other("hardlink.txt has another inode"));
            }
            Ok(format!("nlink={}", b.nlink()))
        }),
    );
    report(
        "symlink",
        std::os::unix::fs::symlink("renamed.txt", "/mnt/sym.txt")
            .and_then(|()| std::fs::read_link("/mnt/sym.txt"))
            .map(|t| format!("target={}", t.display())),
    );
    report(
        "chown",
        std::os::unix::fs::chown("/mnt/from-guest.txt", Some(1000), Some(1001))
            .and_then(|()| {
                std::fs::set_permissions(
                    "/mnt/from-guest.txt",
                    std::fs::Permissions::from_mode(0o640),
                )
            })
            .and_then(|()| std::fs::metadata("/mnt/from-guest.txt"))
            .map(|m| format!("uid={} gid={} mode={}", m.uid(), m.gid(), mode(&m))),
    );
    report(
        "mmap",
        mmap_write("/mnt/mmap.bin", 4096, b"mmap-from-guest"),
    );
    report("direct", direct_io("/mnt/direct.bin"));
    report(
        "many",
        std::fs::create_dir("/mnt/many").and_then(|()| {
            for i in 0..1100 {
                File::create(format!("/mnt/many/f{i}"))?.write_all(b"x")?;
            }
            Ok(format!("files={}", std::fs::read_dir("/mnt/many")?.count()))
        }),
    );
    report(
        "readdir",
        std::fs::read_dir("/mnt").and_then(|d| {
            let mut names = d
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<Vec<_>>>()?;
            names.sort();
            Ok(names.join(","))
        }),
    );
}

fn cstr(s: &str) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(std::io::Error::other)
}

fn xattr_set(path: &str, name: &str, value: &[u8]) -> std::io::Result<()> {
    let (p, n) = (cstr(path)?, cstr(name)?);
    // SAFETY: path and name are NUL-terminated and alive; value is a valid slice of its length.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    check(rc, &format!("setxattr {name} on {path}"))
}

fn xattr_get(path: &str, name: &str) -> std::io::Result<String> {
    let (p, n) = (cstr(path)?, cstr(name)?);
    let mut buf = [0u8; 256];
    // SAFETY: path and name are NUL-terminated and alive; buf is writable for its length.
    let n = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(String::from_utf8_lossy(&buf[..n as usize]).into_owned())
}

/// Writes `data` at `offset` of `path` through a `MAP_SHARED` mapping and `msync`s it.
fn mmap_write(path: &str, offset: usize, data: &[u8]) -> std::io::Result<String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let len = usize::try_from(f.metadata()?.len()).map_err(std::io::Error::other)?;
    if offset + data.len() > len {
        return Err(std::io::Error::other(format!("{path} is only {len} bytes")));
    }
    // SAFETY: a fresh shared mapping of an open file; the kernel picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: [offset, offset + len(data)) lies inside the `len`-byte mapping made above, which
    // nothing else in this process aliases; msync and munmap take that same mapping.
    let rc = unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), p.cast::<u8>().add(offset), data.len());
        let rc = libc::msync(p, len, libc::MS_SYNC);
        libc::munmap(p, len);
        rc
    };
    check(rc, "msync").map(|()| "ok".into())
}

/// Writes 8 KiB of a pattern with `O_DIRECT`, fsyncs, reads it back with `O_DIRECT` (buffers
/// aligned to 4 KiB, as direct I/O requires) and compares.
fn direct_io(path: &str) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    #[repr(C, align(4096))]
    struct Block([u8; 8192]);
    let mut out = Box::new(Block([0; 8192]));
    for (i, b) in out.0.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    f.write_all(&out.0)?;
    f.sync_all()?;
    let mut back = Box::new(Block([0; 8192]));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    f.read_exact(&mut back.0)?;
    if back.0 != out.0 {
        return Err(std::io::Error::other("read back differs"));
    }
    Ok(format!("bytes={}", back.0.len()))
}

fn online_cpus() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
}

fn mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn vsock_addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value.
    let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    a.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    a.svm_cid = cid;
    a.svm_port = port;
    a
}

fn vsock_socket() -> std::io::Result<i32> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn check(rc: i32, what: &str) -> std::io::Result<()> {
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// Accepts one connection on `LISTEN_PORT` and echoes it until EOF; returns the byte count.
fn host_initiated_echo() -> std::io::Result<usize> {
    let lfd = vsock_socket()?;
    // SAFETY: lfd is ours; File closes it on drop.
    let _listener = unsafe { File::from_raw_fd(lfd) };
    let addr = vsock_addr(libc::VMADDR_CID_ANY, LISTEN_PORT);
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_vm of `len` bytes.
    let rc = unsafe { libc::bind(lfd, (&addr as *const libc::sockaddr_vm).cast(), len) };
    check(rc, "bind")?;
    // SAFETY: lfd is a bound socket.
    check(unsafe { libc::listen(lfd, 1) }, "listen")?;
    println!("PROBE vsock listening port={LISTEN_PORT}");
    // SAFETY: null address pointers are allowed by accept(2).
    let cfd = unsafe { libc::accept(lfd, std::ptr::null_mut(), std::ptr::null_mut()) };
    check(cfd, "accept")?;
    // SAFETY: cfd was just returned by accept and is owned here.
    let mut conn = unsafe { File::from_raw_fd(cfd) };
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        conn.write_all(&buf[..n])?;
        total += n;
    }
    Ok(total)
}

/// One connection attempt to `cid`:`port` from wherever the probe runs, described as
/// `VSOCK cid=<c> port=<p> refused <errno text>` or, when the connection opened,
/// `VSOCK cid=<c> port=<p> connected first_bytes=<what arrived within 3 s, escaped>`.
fn vsock_attempt(cid: u32, port: u32) -> String {
    let head = format!("VSOCK cid={cid} port={port}");
    let fd = match vsock_socket() {
        Ok(fd) => fd,
        Err(e) => return format!("{head} refused socket: {e}"),
    };
    // SAFETY: fd is ours; File closes it on drop.
    let mut conn = unsafe { File::from_raw_fd(fd) };
    let addr = vsock_addr(cid, port);
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_vm of `len` bytes.
    let rc = unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_vm).cast(), len) };
    if let Err(e) = check(rc, "connect") {
        return format!("{head} refused {e}");
    }
    let tv = libc::timeval {
        tv_sec: 3,
        tv_usec: 0,
    };
    // SAFETY: setsockopt(2) on our own socket with a timeval of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let mut buf = [0u8; 48];
    let got = match conn.read(&mut buf) {
        Ok(n) => buf[..n].escape_ascii().to_string(),
        Err(e) => format!("(none: {e})"),
    };
    format!("{head} connected first_bytes={got}")
}

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// Connects to the host, sends `n` pattern bytes from a second thread, half-closes, and checks
/// that exactly the same bytes come back.
fn guest_initiated(n: usize) -> std::io::Result<()> {
    let fd = vsock_socket()?;
    // SAFETY: fd is ours; File closes it on drop.
    let mut conn = unsafe { File::from_raw_fd(fd) };
    let addr = vsock_addr(HOST_CID, HOST_PORT);
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_vm of `len` bytes.
    let rc = unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_vm).cast(), len) };
    check(rc, "connect")?;
    let mut writer = conn.try_clone()?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let data: Vec<u8> = (0..n).map(pattern).collect();
        for chunk in data.chunks(32 * 1024) {
            writer.write_all(chunk)?;
        }
        // SAFETY: shutdown(2) on our own socket fd, which `writer` keeps open.
        check(unsafe { libc::shutdown(fd, libc::SHUT_WR) }, "shutdown")
    });
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let k = conn.read(&mut buf)?;
        if k == 0 {
            break;
        }
        for (j, b) in buf[..k].iter().enumerate() {
            if *b != pattern(got + j) {
                return Err(std::io::Error::other(format!("byte {} differs", got + j)));
            }
        }
        got += k;
    }
    sender
        .join()
        .map_err(|_| std::io::Error::other("sender panicked"))??;
    if got != n {
        return Err(std::io::Error::other(format!("echoed {got} of {n} bytes")));
    }
    Ok(())
}
