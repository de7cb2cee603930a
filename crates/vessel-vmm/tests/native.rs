//! VM setup, vCPU exits, pause/resume and teardown on the plain host's KVM (kvm_pvm is enough:
//! the tiny guests here run a few ring-0 instructions, no Linux).

mod common;

use std::time::Duration;

use common::*;
use vessel_protocol::network::Mac;
use vessel_vmm::{ExitReason, FsConfig, NetConfig, ShutdownCause, Vm, VmmError};

#[test]
fn serial_output_then_i8042_reset_is_a_clean_shutdown() {
    let Some((_one_at_a_time, dir)) = kvm_test() else {
        return;
    };
    let mut code = serial_print(b"hello\n");
    code.extend_from_slice(I8042_RESET);
    let cfg = tiny_vm(&dir, &code);
    let mut vm = Vm::start(cfg).unwrap();
    let r = vm.wait();
    assert_eq!(r, ExitReason::Shutdown(ShutdownCause::KeyboardReset));
    assert!(r.is_clean_shutdown());
    assert_eq!(
        std::fs::read(dir.path().join("serial.log")).unwrap(),
        b"hello\n"
    );
}

#[test]
fn store_to_an_mmio_hole_is_reported_with_its_address() {
    let Some((_one_at_a_time, dir)) = kvm_test() else {
        return;
    };
    let mut vm = Vm::start(tiny_vm(&dir, MMIO_HOLE_STORE)).unwrap();
    assert_eq!(
        vm.wait(),
        ExitReason::UnhandledMmio {
            addr: 0xc000_0000,
            write: true,
            vcpu: 0
        }
    );
}

#[test]
fn pause_resume_and_stop_a_spinning_guest_with_two_vcpus() {
    let Some((_one_at_a_time, dir)) = kvm_test() else {
        return;
    };
    let mut cfg = tiny_vm(&dir, SPIN);
    cfg.vcpus = 2;
    let mut vm = Vm::start(cfg).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    vm.pause().unwrap();
    vm.resume().unwrap();
    vm.pause().unwrap();
    vm.resume().unwrap();
    assert_eq!(vm.stop(), ExitReason::Stopped);
    // After the end, pause and resume report it.
    assert!(matches!(
        vm.pause(),
        Err(VmmError::Ended(ExitReason::Stopped))
    ));
    assert!(matches!(
        vm.resume(),
        Err(VmmError::Ended(ExitReason::Stopped))
    ));
}

#[test]
fn hundred_setups_and_teardowns_leak_neither_fds_nor_memory() {
    let Some((_one_at_a_time, dir)) = kvm_test() else {
        return;
    };
    let mut cfg = tiny_vm(&dir, SPIN);
    cfg.vcpus = 2;
    cfg.memory_mib = 128;
    // Warm up allocator and lazily created process state.
    for _ in 0..3 {
        let mut vm = Vm::setup(cfg.clone()).unwrap();
        vm.stop();
    }
    let (fds, rss) = (fd_count(), rss_kib());
    let (mut setup, mut teardown) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..100 {
        let t0 = std::time::Instant::now();
        let mut vm = Vm::setup(cfg.clone()).unwrap();
        let t1 = std::time::Instant::now();
        assert_eq!(vm.stop(), ExitReason::Stopped);
        drop(vm);
        setup += t1 - t0;
        teardown += t1.elapsed();
    }
    eprintln!(
        "mean over 100: setup {:?}, teardown {:?}",
        setup / 100,
        teardown / 100
    );
    let (fds2, rss2) = (fd_count(), rss_kib());
    assert_eq!(fds2, fds, "fds before {fds}, after {fds2}");
    assert!(rss2 < rss + 4096, "rss grew from {rss} KiB to {rss2} KiB");
}

#[test]
fn refuses_hosts_that_cannot_boot_guests_unless_overridden() {
    let _one_at_a_time = serial();
    let report = vessel_vmm::host::probe();
    if report.verdict.can_run_guests() {
        eprintln!(
            "{}: skipped: this host can run guests ({})",
            std::thread::current().name().unwrap_or("test"),
            report.verdict
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_vm(&dir, SPIN);
    cfg.allow_unsupported_host = false;
    let err = Vm::setup(cfg).err().expect("setup must refuse this host");
    let msg = err.to_string();
    assert!(matches!(err, VmmError::UnsupportedHost { .. }), "{msg}");
    assert!(msg.contains("guests cannot run"), "{msg}");
}

#[test]
fn memory_above_the_mmio_window_is_registered_in_two_slots() {
    let Some((_one_at_a_time, dir)) = kvm_test() else {
        return;
    };
    let mut cfg = tiny_vm(&dir, I8042_RESET);
    cfg.memory_mib = 5 * 1024; // 3.25 GiB below the window, 1.75 GiB from 4 GiB
    let mut vm = Vm::start(cfg).unwrap();
    assert_eq!(
        vm.wait(),
        ExitReason::Shutdown(ShutdownCause::KeyboardReset)
    );
}

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.starts_with(prefix))
        .count()
}

/// [`threads_named`] once it reaches 0, or after a second: a joined thread can stay listed in
/// `/proc/self/task` for about a millisecond (the kernel wakes the joiner before it releases
/// the task).
fn threads_gone(prefix: &str) -> usize {
    let t0 = std::time::Instant::now();
    loop {
        let n = threads_named(prefix);
        if n == 0 || t0.elapsed() > Duration::from_secs(1) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn fs_devices_take_the_next_slots_and_their_threads_end_at_teardown() {
    let Some((_one_at_a_time, dir)) = kvm_test() else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "{}: skipped: the virtio-fs thread unshares its mount namespace and needs root",
            std::thread::current().name().unwrap_or("test")
        );
        return;
    }
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let mut cfg = tiny_vm(&dir, SPIN);
    cfg.fs = vec![
        FsConfig {
            tag: "vessel".into(),
            shared_dir: a,
        },
        FsConfig {
            tag: "extra".into(),
            shared_dir: b.clone(),
        },
    ];
    Vm::setup(cfg.clone()).unwrap().stop();
    let fds = fd_count();
    for _ in 0..20 {
        let mut vm = Vm::setup(cfg.clone()).unwrap();
        assert!(
            vm.cmdline().ends_with(
                " virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 \
                 virtio_mmio.device=4K@0xd0002000:7"
            ),
            "{}",
            vm.cmdline()
        );
        assert_eq!(threads_named("vessel-fs-"), 2);
        assert_eq!(vm.stop(), ExitReason::Stopped);
        assert_eq!(threads_gone("vessel-fs-"), 0, "stop() ends the fs threads");
    }
    assert_eq!(fd_count(), fds);

    std::fs::remove_dir(&b).unwrap();
    let err = Vm::setup(cfg)
        .err()
        .expect("a missing shared_dir is refused");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("fs[1].shared_dir"), "{chain}");
}

/// The index of interface `name` in the calling thread's network namespace (0: none).
fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: `c` is NUL-terminated and outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

#[test]
fn net_devices_take_the_slots_after_the_shares_and_their_taps_go_at_teardown() {
    let name = "net_devices_take_the_slots_after_the_shares_and_their_taps_go_at_teardown";
    let Some((_one_at_a_time, dir)) = kvm_test() else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("{name}: skipped: needs root and /dev/net/tun to create taps");
        return;
    }
    let mut cfg = tiny_vm(&dir, SPIN);
    cfg.net = vec![
        NetConfig {
            tap: "vtap0".into(),
            mac: Mac([2, 0x76, 0, 0, 0, 1]),
        },
        NetConfig {
            tap: "vtap1".into(),
            mac: Mac([2, 0x76, 0, 0, 0, 2]),
        },
    ];
    // The taps are created in the builder's network namespace: a scratch one, on a thread of
    // its own (unshare affects only the calling thread).
    let r = std::thread::spawn(move || {
        // SAFETY: unshare takes flags only; it changes this thread's namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let mut vm = Vm::setup(cfg.clone()).unwrap();
        let cmdline = vm.cmdline().to_string();
        let during = (ifindex("vtap0") != 0, ifindex("vtap1") != 0);
        assert_eq!(vm.stop(), ExitReason::Stopped);
        let after = (ifindex("vtap0"), ifindex("vtap1"));

        // An interface of that name that is not a tap is refused, naming the device.
        cfg.net[1].tap = "lo".into();
        let err = Vm::setup(cfg).err().expect("lo is no tap");
        Ok((cmdline, during, after, vessel_error::chain(&err)))
    })
    .join()
    .unwrap();
    let (cmdline, during, after, err) = match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{name}: skipped: unshare(CLONE_NEWNET): {e}");
            return;
        }
    };
    assert!(
        cmdline.ends_with(
            " virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 \
             virtio_mmio.device=4K@0xd0002000:7"
        ),
        "{cmdline}"
    );
    assert_eq!(during, (true, true), "taps created at setup");
    assert_eq!(after, (0, 0), "taps gone at teardown");
    assert!(
        err.starts_with("cannot open tap \"lo\" of net[1]: cannot attach to tap lo (TUNSETIFF): "),
        "{err}"
    );
}
