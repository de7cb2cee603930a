//! `vessel-bench`: one boot measurement for `make bench` (see `tests/bench/bench.sh`).
//!
//! `vessel-bench MARKER CMD [ARGS...]` starts CMD (a VMM) with stdin from `/dev/null` and its
//! stdout and stderr on one socket, where the guest's serial console must appear. When a line
//! containing MARKER arrives it reads `/proc/<pid>/smaps` and prints one line:
//!
//! `ms=<start to marker> us=<the same in microseconds> rss_kib=<Rss> guest_kib=<Rss of guest RAM> overhead_kib=<difference> exit=<how CMD ended>`
//!
//! Guest RAM is recognised on both sides as the anonymous mappings of exactly
//! `$VESSEL_BENCH_GUEST_MIB` MiB (default 128; Vessel's RAM and QEMU's default RAM block are one
//! such mapping each) or a `/memfd:` mapping (QEMU's `memory-backend-memfd`), so "guest memory
//! touched" is the resident part of those mappings and everything else resident (binary,
//! libraries, heap, stacks, ROM copies) is the VMM's overhead. Where Vessel maps its image
//! cache's kernel and initramfs into guest RAM (files under a `vessel-images` directory), those
//! file mappings and the anonymous ones around them, guest size in all, are guest RAM.
//! After the marker CMD gets `GRACE_SECS` to exit on its own before it is killed; its console is
//! kept in `$VESSEL_BENCH_LOG` when that is set.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Seconds CMD may run after the marker before it is killed.
const GRACE_SECS: u64 = 2;
/// Seconds to wait for the marker at all.
const MARKER_TIMEOUT_SECS: u64 = 120;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: vessel-bench MARKER CMD [ARGS...]");
        std::process::exit(2);
    }
    match measure(&args[0], &args[1..]) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("vessel-bench: {}: {e}", args[1]);
            std::process::exit(1);
        }
    }
}

fn measure(marker: &str, cmd: &[String]) -> std::io::Result<String> {
    let (ours, theirs) = UnixStream::pair()?;
    let out = OwnedFd::from(theirs);
    let err = out.try_clone()?;
    let t0 = Instant::now();
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()?;
    let pid = child.id();
    ours.set_read_timeout(Some(Duration::from_secs(MARKER_TIMEOUT_SECS)))?;
    let mut log = match std::env::var_os("VESSEL_BENCH_LOG") {
        Some(p) => Some(std::fs::File::create(p)?),
        None => None,
    };
    let mut lines = BufReader::new(ours.try_clone()?).lines();
    let mut found = None;
    for line in lines.by_ref() {
        let line = line?;
        if let Some(f) = log.as_mut() {
            writeln!(f, "{line}")?;
        }
        if line.contains(marker) {
            found = Some((t0.elapsed(), smaps(pid)?));
            break;
        }
    }
    let Some((elapsed, (rss, guest))) = found else {
        let _ = child.kill();
        let status = child.wait()?;
        return Err(std::io::Error::other(format!(
            "no line with {marker:?} on the console ({status})"
        )));
    };
    // Keep draining the console (into the log) so the VMM never blocks on a full socket.
    ours.set_read_timeout(None)?;
    let drain = std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(GRACE_SECS);
    let exit = loop {
        if let Some(status) = child.try_wait()? {
            break status.to_string().replace(' ', "_");
        }
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            break "killed".to_string();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(ours);
    let _ = drain.join();
    Ok(format!(
        "ms={} us={} rss_kib={rss} guest_kib={guest} overhead_kib={} exit={exit}",
        elapsed.as_millis(),
        elapsed.as_micros(),
        rss - guest
    ))
}

/// Resident KiB of the whole process and of its guest RAM (see the module doc).
fn smaps(pid: u32) -> std::io::Result<(u64, u64)> {
    let guest_mib: u64 = std::env::var("VESSEL_BENCH_GUEST_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    // (start, end, path, Rss KiB) per mapping.
    let mut maps: Vec<(u64, u64, Option<String>, u64)> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("Rss:") => {
                if let Some(last) = maps.last_mut() {
                    last.3 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                }
            }
            // A mapping header: "start-end perms offset dev inode [path]".
            Some(first) if first.contains('-') && !first.ends_with(':') => {
                if let Some((a, b)) = first.split_once('-').and_then(|(a, b)| {
                    Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?))
                }) {
                    maps.push((a, b, words.nth(4).map(str::to_owned), 0));
                }
            }
            _ => {}
        }
    }
    let guest_bytes = guest_mib << 20;
    // Vessel maps the image cache's kernel and initramfs over parts of its RAM: then guest RAM is
    // the run of mappings from the anonymous one just before the first such file, guest size long.
    let first_image = maps
        .iter()
        .position(|m| m.2.as_deref().is_some_and(|p| p.contains(IMAGE_CACHE_MARK)));
    let ram_range = first_image
        .filter(|&i| i > 0 && maps[i - 1].2.is_none() && maps[i - 1].1 == maps[i].0)
        .map(|i| (maps[i - 1].0, maps[i - 1].0 + guest_bytes));
    let rss = maps.iter().map(|m| m.3).sum();
    let guest = maps
        .iter()
        .filter(|(a, b, path, _)| match (ram_range, path) {
            (_, Some(path)) if path.starts_with("/memfd:") => true,
            (Some((lo, hi)), _) if lo <= *a && *b <= hi => true,
            (_, None) => b - a == guest_bytes,
            _ => false,
        })
        .map(|m| m.3)
        .sum();
    Ok((rss, guest))
}

/// Part of the path of Vessel's image cache (`vessel_vmm::image_cache::DEFAULT_DIR`).
const IMAGE_CACHE_MARK: &str = "vessel-images";
