//! The virtio-fs round-trip probe (issue 5): how long one FUSE request takes, with nothing
//! cached. With `probe.fslat=<tag>` on the kernel command line the probe mounts that tag at
//! `/mnt`, creates `/mnt/fslat`, and times [`ROUNDS`] of each of:
//!
//! - `getattr`: `statx(AT_STATX_FORCE_SYNC)` of the file, which makes the FUSE driver send a
//!   GETATTR whatever its attribute cache holds (one request per call);
//! - `getxattr`: `getxattr("user.none")` of the file (FUSE does not cache extended attributes:
//!   one GETXATTR per call, answered `ENODATA`);
//! - `sleep100us`: `nanosleep` of 100 us, to see the guest's own timer granularity (no device);
//! - `write1m`: `pwrite` of 1 MiB at offset 0 of an open file (one FUSE WRITE without a writeback
//!   cache), `fsync` excluded;
//! - `read1m`: `posix_fadvise(DONTNEED)` of the file, then `pread` of 1 MiB at offset 0 (READs of
//!   at most the readahead window);
//! - `open`: `open`, `read` of its 1 byte, `close` of that file (OPEN, READ, FLUSH, RELEASE: the
//!   page cache is dropped at each open);
//! - `create`, `lookup`, `unlink`: [`FILES`] files of 64 bytes created (`open(O_CREAT)`, `write`,
//!   `close`), then, once their entries have expired (1.1 s), `stat`ed by name, then unlinked, as
//!   the benchmark of `make bench` does with 10,000.
//!
//! One line per kind: `PROBE fslat <kind> n=<n> min_us=<> p10_us=<> p50_us=<> p90_us=<>
//! max_us=<>`, or `PROBE fslat FAILED <why>`. Natively, `vessel-guest-probe fslat <dir>` runs the
//! same on `dir`.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Operations timed per kind.
const ROUNDS: usize = 300;
/// Files of the `create`, `lookup` and `unlink` kinds.
const FILES: usize = 200;

/// Runs the probe on `dir` (created if missing; its file `fslat` is left behind).
pub fn run(dir: &Path) {
    if let Err(e) = measure(dir) {
        println!("PROBE fslat FAILED {e}");
    }
}

fn measure(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("fslat");
    std::fs::write(&file, b"x")?;
    let path = CString::new(file.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    report(
        "getattr",
        time(|| {
            // SAFETY: `path` is NUL-terminated and alive; `st` is a valid out-pointer.
            let mut st: libc::statx = unsafe { std::mem::zeroed() };
            // SAFETY: as above; statx writes only into `st`.
            let rc = unsafe {
                libc::statx(
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    libc::AT_STATX_FORCE_SYNC,
                    libc::STATX_BASIC_STATS,
                    &mut st,
                )
            };
            check(rc >= 0, "statx")
        })?,
    );
    let name = c"user.none";
    report(
        "getxattr",
        time(|| {
            // SAFETY: both strings are NUL-terminated; size 0 with a null buffer only asks the size.
            let rc =
                unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
            let e = std::io::Error::last_os_error().raw_os_error();
            check(
                rc >= 0 || e == Some(libc::ENODATA) || e == Some(libc::EOPNOTSUPP),
                "getxattr",
            )
        })?,
    );
    report(
        "sleep100us",
        time(|| {
            std::thread::sleep(Duration::from_micros(100));
            Ok(())
        })?,
    );
    report(
        "open",
        time(|| {
            let mut b = [0u8; 1];
            std::fs::File::open(&file)?.read_exact(&mut b)
        })?,
    );
    let big = dir.join("fslat-big");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&big)?;
    let block = vec![0x5au8; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    report(
        "write1m",
        time_n(ROUNDS / 10, || f.write_all_at(&block, 0))?,
    );
    f.sync_all()?;
    report(
        "read1m",
        time_n(ROUNDS / 10, || {
            // SAFETY: fadvise on a descriptor we own; no memory is passed.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            f.read_exact_at(&mut buf, 0)
        })?,
    );
    drop(f);
    std::fs::remove_file(&big)?;
    let small = dir.join("small");
    std::fs::create_dir_all(&small)?;
    let name = |i: usize| small.join(format!("f{i:05}"));
    let mut i = 0;
    report(
        "create",
        time_n(FILES, || {
            i += 1;
            std::fs::File::create(name(i))?.write_all(&[b'x'; 64])
        })?,
    );
    std::thread::sleep(Duration::from_millis(1100));
    let mut i = 0;
    report(
        "lookup",
        time_n(FILES, || {
            i += 1;
            std::fs::metadata(name(i)).map(drop)
        })?,
    );
    let mut i = 0;
    report(
        "unlink",
        time_n(FILES, || {
            i += 1;
            std::fs::remove_file(name(i))
        })?,
    );
    std::fs::remove_dir(&small)
}

/// Times [`ROUNDS`] calls of `op`, sorted, in microseconds.
fn time(op: impl FnMut() -> std::io::Result<()>) -> std::io::Result<Vec<u64>> {
    time_n(ROUNDS, op)
}

/// Times `n` calls of `op`, sorted, in microseconds.
fn time_n(n: usize, mut op: impl FnMut() -> std::io::Result<()>) -> std::io::Result<Vec<u64>> {
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        op()?;
        us.push(t.elapsed().as_micros() as u64);
    }
    us.sort_unstable();
    Ok(us)
}

fn check(ok: bool, what: &str) -> std::io::Result<()> {
    if ok {
        Ok(())
    } else {
        let e = std::io::Error::last_os_error();
        Err(std::io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

fn report(kind: &str, us: Vec<u64>) {
    let at = |p: usize| us[(us.len() - 1) * p / 100];
    println!(
        "PROBE fslat {kind} n={} min_us={} p10_us={} p50_us={} p90_us={} max_us={}",
        us.len(),
        at(0),
        at(10),
        at(50),
        at(90),
        at(100)
    );
}
