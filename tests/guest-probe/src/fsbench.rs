//! The file-system benchmark of `make bench` (issue 5), run by the same code on both sides: in the
//! guest over virtio-fs (`probe.fsbench=<tag>` on the kernel command line) and natively on the
//! lab host's own file system (`vessel-guest-probe fsbench <dir>`), so the ratio compares file
//! systems, not programs.
//!
//! In `dir` it writes a 256 MiB file sequentially in 1 MiB blocks and fsyncs it, drops the page
//! cache (so the guest's read goes through virtio-fs, not its own cache), reads it back
//! sequentially, then creates 10,000 files of 64 bytes, stats each and deletes each. One line per
//! figure: `PROBE fsbench <metric> <value>` with `write_mib_s`, `read_mib_s` (MiB/s) and
//! `create_ms`, `stat_ms`, `delete_ms` (ms for all 10,000 files); or `PROBE fsbench FAILED <why>`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

/// Size of the sequential file, MiB.
const SEQ_MIB: usize = 256;
/// Number of small files of the metadata test.
const FILES: usize = 10_000;

/// Runs the benchmark in `dir` (created if missing, emptied of its own files afterwards).
pub fn run(dir: &Path) {
    if let Err(e) = measure(dir) {
        println!("PROBE fsbench FAILED {e}");
    }
}

fn measure(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let big = dir.join("seq.bin");
    let block = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut f = File::create(&big)?;
    for _ in 0..SEQ_MIB {
        f.write_all(&block)?;
    }
    f.sync_all()?;
    drop(f);
    println!("PROBE fsbench write_mib_s {:.1}", mib_s(t));
    drop_caches();
    let t = Instant::now();
    let mut f = File::open(&big)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n;
    }
    if total != SEQ_MIB << 20 {
        return Err(std::io::Error::other(format!("read {total} bytes back")));
    }
    println!("PROBE fsbench read_mib_s {:.1}", mib_s(t));
    std::fs::remove_file(&big)?;

    let small = dir.join("small");
    std::fs::create_dir_all(&small)?;
    let name = |i: usize| small.join(format!("f{i:05}"));
    let t = Instant::now();
    for i in 0..FILES {
        File::create(name(i))?.write_all(&[b'x'; 64])?;
    }
    println!("PROBE fsbench create_ms {}", t.elapsed().as_millis());
    let t = Instant::now();
    for i in 0..FILES {
        let m = std::fs::metadata(name(i))?;
        if m.len() != 64 {
            return Err(std::io::Error::other(format!(
                "{} is {} bytes",
                name(i).display(),
                m.len()
            )));
        }
    }
    println!("PROBE fsbench stat_ms {}", t.elapsed().as_millis());
    let t = Instant::now();
    for i in 0..FILES {
        std::fs::remove_file(name(i))?;
    }
    println!("PROBE fsbench delete_ms {}", t.elapsed().as_millis());
    std::fs::remove_dir(&small)
}

fn mib_s(since: Instant) -> f64 {
    SEQ_MIB as f64 / since.elapsed().as_secs_f64()
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`; best effort (a failure only makes reads faster).
fn drop_caches() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}
