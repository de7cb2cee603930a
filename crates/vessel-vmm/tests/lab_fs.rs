//! virtio-fs end to end (lab only: needs a KVM that can run Linux; elsewhere the test says why it
//! skips). The guest probe (`tests/guest-probe`, mode `probe.fs=<tag>`) mounts a host directory
//! over virtio-fs, reads what the host wrote there and writes files the host then checks. Run
//! through `tests/guest-probe/lab.sh`, which builds the probe's initramfs and sets
//! `VESSEL_PROBE_INITRAMFS`; the guest kernel comes from `VESSEL_KERNEL` (or the artefact
//! search of `vessel_vmm::artefacts`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vessel_vmm::{FsConfig, SerialSink, Vm, VmConfig};

/// Size of the file that goes host -> guest -> host.
const BIG: usize = 8 << 20;
/// Tag of the share (what the probe mounts).
const TAG: &str = "labshare";

/// FNV-1a, 64 bits, as the probe computes it.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `n` bytes of xorshift64 output: no repeating pattern a misplaced page could match.
fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

#[test]
fn lab_virtio_fs_share() {
    let verdict = vessel_vmm::host::probe().verdict;
    if !verdict.can_run_guests() {
        eprintln!("skipping: {verdict} (run it in the lab: tests/guest-probe/lab.sh)");
        return;
    }
    let Some(initramfs) = std::env::var_os("VESSEL_PROBE_INITRAMFS").map(PathBuf::from) else {
        eprintln!("skipping: VESSEL_PROBE_INITRAMFS is not set (tests/guest-probe/lab.sh sets it)");
        return;
    };
    let kernel = vessel_vmm::artefacts::locate()
        .kernel
        .expect("guest vmlinux (set VESSEL_KERNEL)");
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("hello.txt"), "hello from the host\n").unwrap();
    let big = noise(BIG);
    std::fs::write(share.join("host-big.bin"), &big).unwrap();
    let sum = fnv1a(&big);

    let log = dir.path().join("serial.log");
    let mut cfg = VmConfig::new(kernel);
    cfg.vcpus = 2;
    cfg.memory_mib = 256;
    cfg.initramfs = Some(initramfs);
    cfg.serial = SerialSink::File(log.clone());
    cfg.extra_cmdline = format!("probe.fs={TAG}");
    cfg.fs.push(FsConfig {
        tag: TAG.into(),
        shared_dir: share.clone(),
    });
    let t0 = Instant::now();
    let mut vm = Vm::start(cfg).unwrap();
    let reason = vm
        .wait_timeout(Duration::from_secs(300))
        .unwrap_or_else(|| vm.stop());
    let text = std::fs::read_to_string(&log).unwrap();
    for l in text.lines().filter(|l| l.starts_with("PROBE fs")) {
        eprintln!("guest: {l}");
    }
    eprintln!("virtio-fs: guest ended after {:?}: {reason}", t0.elapsed());
    assert!(reason.is_clean_shutdown(), "{reason}\n{text}");
    assert!(
        text.contains("PROBE fs hello=hello from the host"),
        "{text}"
    );
    assert!(text.contains("PROBE fs ok"), "{text}");
    assert_eq!(
        std::fs::read_to_string(share.join("from-guest.txt")).unwrap(),
        "written by the guest\n"
    );
    // host -> guest: the guest's checksum of what it read; guest -> host: the bytes it wrote.
    assert!(
        text.contains(&format!(
            "PROBE fs read host-big.bin bytes={BIG} fnv={sum:016x}"
        )),
        "{text}"
    );
    let back = std::fs::read(share.join("guest-big.bin")).unwrap();
    let back_sum = fnv1a(&back);
    eprintln!(
        "host: guest-big.bin {} bytes fnv={back_sum:016x}, host-big.bin {BIG} bytes fnv={sum:016x}",
        back.len()
    );
    assert_eq!((back.len(), back_sum), (BIG, sum));
    assert!(back == big, "guest-big.bin differs from host-big.bin");
}
