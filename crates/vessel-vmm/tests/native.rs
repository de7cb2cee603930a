//! VM setup, vCPU exits, pause/resume and teardown on the plain host's KVM (kvm_pvm is enough:
//! the tiny guests here run a few ring-0 instructions, no Linux).

mod common;

use std::time::Duration;

use common::*;
use vessel_vmm::{ExitReason, ShutdownCause, Vm, VmmError};

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
        eprintln!("skipping: this host can run guests ({})", report.verdict);
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
