//! Boots the real guest kernel with `vessel-guest-probe` as `/init` (lab only: needs a KVM that
//! can run Linux; elsewhere each test says why it skips). Run through
//! `tests/guest-probe/lab.sh`, which builds the probe and its initramfs and sets
//! `VESSEL_PROBE_INITRAMFS`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vessel_vmm::{ExitReason, SerialSink, ShutdownCause, Vm, VmConfig};

fn guest_kernel() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("VESSEL_KERNEL") {
        return Some(k.into());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/var/cache/vessel/kernel")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("vmlinux"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// Kernel, initramfs and a temp dir, or `None` (with the reason printed) when this host cannot.
fn lab() -> Option<(PathBuf, PathBuf, tempfile::TempDir)> {
    let verdict = vessel_vmm::host::probe().verdict;
    if !verdict.can_run_guests() {
        eprintln!(
            "{}: skipped: {verdict} (run it in the lab: tests/guest-probe/lab.sh)",
            std::thread::current().name().unwrap_or("test")
        );
        return None;
    }
    let Some(initramfs) = std::env::var_os("VESSEL_PROBE_INITRAMFS").map(PathBuf::from) else {
        eprintln!(
            "{}: skipped: VESSEL_PROBE_INITRAMFS is not set (tests/guest-probe/lab.sh sets it)",
            std::thread::current().name().unwrap_or("test")
        );
        return None;
    };
    let kernel = guest_kernel().expect("guest vmlinux under /var/cache/vessel/kernel");
    Some((kernel, initramfs, tempfile::tempdir().unwrap()))
}

fn probe_config(kernel: &Path, initramfs: &Path, dir: &tempfile::TempDir) -> VmConfig {
    let mut c = VmConfig::new(kernel);
    c.initramfs = Some(initramfs.to_path_buf());
    c.memory_mib = 256;
    c.serial = SerialSink::File(dir.path().join("serial.log"));
    if std::env::var_os("VESSEL_PROBE_VERBOSE").is_some() {
        c.extra_cmdline = "loglevel=7".into();
    }
    c
}

/// Waits for the guest to end, killing it after `secs` seconds.
fn finish(vm: &mut Vm, secs: u64) -> ExitReason {
    vm.wait_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|| vm.stop())
}

/// Polls the serial log until a line starting with `marker` appears; returns when it did.
fn wait_for_line(log: &PathBuf, marker: &str, timeout: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(marker))
        {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

fn probe_value(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .filter(|l| l.starts_with("PROBE "))
        .flat_map(|l| l.split_whitespace())
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.parse().ok()))
}

#[test]
fn lab_boots_with_one_and_two_vcpus_and_sees_them_and_its_memory() {
    let Some((kernel, initramfs, dir)) = lab() else {
        return;
    };
    // The 2-vCPU guest boots from the image cache's mapped copies (decision 0006, opt-in).
    let images = dir.path().join("images");
    for vcpus in [1u32, 2] {
        let mut cfg = probe_config(&kernel, &initramfs, &dir);
        cfg.vcpus = vcpus;
        let log = dir.path().join(format!("serial-{vcpus}.log"));
        cfg.serial = SerialSink::File(log.clone());
        if vcpus == 2 {
            cfg.image_cache = Some(images.clone());
        }
        let t0 = Instant::now();
        let mut vm = Vm::start(cfg).unwrap();
        let setup = t0.elapsed();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mapped = maps
            .lines()
            .filter(|l| l.contains(images.to_str().unwrap()))
            .count();
        if vcpus == 2 {
            // The kernel's four PT_LOAD segments and the initramfs.
            assert!(
                mapped >= 5,
                "image cache files mapped into guest RAM:\n{maps}"
            );
            assert_eq!(std::fs::read_dir(&images).unwrap().count(), 2);
        } else {
            assert_eq!(mapped, 0);
        }
        let to_init = wait_for_line(&log, "PROBE init", Duration::from_secs(60));
        let reason = finish(&mut vm, 120);
        let total = t0.elapsed();
        let text = std::fs::read_to_string(&log).unwrap();
        eprintln!(
            "vcpus={vcpus}: setup {setup:?}, boot-to-init {to_init:?} (guest uptime at init {:?} ms), total {total:?}, exit: {reason}",
            probe_value(&text, "uptime_ms=")
        );
        assert_eq!(
            reason,
            ExitReason::Shutdown(ShutdownCause::KeyboardReset),
            "serial log:\n{text}"
        );
        assert_eq!(
            probe_value(&text, "cpus="),
            Some(u64::from(vcpus)),
            "{text}"
        );
        let mem = probe_value(&text, "memtotal_kib=").expect("memtotal line");
        // MemTotal is RAM minus what the kernel reserves for itself (its image, page tables).
        assert!(
            mem <= 256 * 1024 && mem > 200 * 1024,
            "MemTotal {mem} KiB for 256 MiB of RAM"
        );
        assert!(text.contains("PROBE done"), "{text}");
    }
}

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// Echoes one stream back to itself until EOF.
fn echo(mut s: UnixStream) -> std::io::Result<usize> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        s.write_all(&buf[..n])?;
        total += n;
    }
}

#[test]
fn lab_vsock_carries_mebibytes_both_ways_host_and_guest_initiated() {
    let Some((kernel, initramfs, dir)) = lab() else {
        return;
    };
    const N: usize = 4 << 20;
    let mut cfg = probe_config(&kernel, &initramfs, &dir);
    cfg.vcpus = 2;
    cfg.extra_cmdline = format!("{} probe.vsock={N}", cfg.extra_cmdline);
    let log = dir.path().join("serial.log");
    let mut vm = Vm::start(cfg).unwrap();
    let h = vm.vsock();

    // Guest-initiated: the probe connects to host port 5001 and checks its echo.
    let listener = h.listen(5001).unwrap();
    let guest_side = std::thread::spawn(move || {
        let s = listener.accept_timeout(Duration::from_secs(120))?;
        echo(s)
    });

    // Host-initiated: the probe listens on 5000 once booted; refused until then.
    let t0 = Instant::now();
    let mut s = loop {
        match h.connect_timeout(5000, Duration::from_secs(5)) {
            Ok(s) => break s,
            Err(e) if t0.elapsed() < Duration::from_secs(90) => {
                eprintln!("connect to 5000: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("guest never listened on 5000: {e}"),
        }
    };
    let mut w = s.try_clone().unwrap();
    let t1 = Instant::now();
    let writer = std::thread::spawn(move || {
        let data: Vec<u8> = (0..N).map(pattern).collect();
        w.write_all(&data).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    // Pause the guest mid-transfer: no echo may arrive while it is paused.
    let mut back = vec![0u8; 64 * 1024];
    s.read_exact(&mut back).unwrap();
    vm.pause().unwrap();
    // Bytes already past the guest (in the device's buffers) may still land: drain until quiet.
    s.set_nonblocking(true).unwrap();
    let mut drained = vec![0u8; N];
    let before = loop {
        std::thread::sleep(Duration::from_millis(200));
        let mut got = 0;
        while let Ok(n @ 1..) = s.read(&mut drained) {
            back.extend_from_slice(&drained[..n]);
            got += n;
        }
        if got == 0 {
            break back.len();
        }
    };
    std::thread::sleep(Duration::from_millis(500));
    let during = s.read(&mut drained).map(|n| n as i64).unwrap_or(-1);
    assert_eq!(during, -1, "echo bytes arrived while the guest was paused");
    s.set_nonblocking(false).unwrap();
    vm.resume().unwrap();
    eprintln!("paused after {before} echoed bytes; resumed");
    s.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    let host_initiated = t1.elapsed();
    assert_eq!(back.len(), N);
    assert!(back.iter().enumerate().all(|(i, b)| *b == pattern(i)));
    // While the guest runs: this process's resident memory outside guest RAM (guest RAM is a
    // memfd, counted as RssShmem). The test harness is included, so this bounds the VMM's share.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    eprintln!(
        "rss: anon {} KiB + file {} KiB outside guest memory; guest memory touched (shmem) {} KiB",
        kib("RssAnon:"),
        kib("RssFile:"),
        kib("RssShmem:")
    );
    let echoed = guest_side.join().unwrap().unwrap();
    assert_eq!(echoed, N);

    let reason = finish(&mut vm, 120);
    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!("vsock: {N} bytes echoed host-initiated in {host_initiated:?}; exit: {reason}");
    assert!(
        text.contains(&format!("PROBE vsock host-initiated echoed={N}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("PROBE vsock guest-initiated ok bytes={N}")),
        "{text}"
    );
    assert!(reason.is_clean_shutdown(), "{reason}\n{text}");
}
