//! End-to-end tests of `vessel exec`, `ps` and `events` with real microVMs: a BusyBox bundle (from Debian's
//! busybox-static, `tests/fixtures/mkrootfs.sh busybox`) run through the CLI, with the guest
//! kernel and agent initramfs from `VESSEL_KERNEL` / `VESSEL_INITRAMFS`.
//!
//! They need hardware-backed KVM: natively on our kvm_pvm machines they print why they skip;
//! `make test-lab` runs them inside the nested lab (docs/testing.md).

mod common;

use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn lab_exec_status_env_user_pid_file_ps_and_stats() {
    if !can_run_guests("lab_exec_status_env_user_pid_file_ps_and_stats") {
        return;
    }
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
    let lab = Lab::new();
    let bundle = lab.bundle("b", "sleep 600");
    let run = lab
        .cmd(&["run", "-d", "--bundle", bundle.to_str().unwrap(), "x1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(run.success(), "console: {}", lab.console("x1"));
    let out = lab
        .cmd(&["exec", "x1", "sh", "-c", "exit 5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let out = lab
        .cmd(&["exec", "-u", "1000", "x1", "id", "-u"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "1000\n", "{}", text(&out.stderr));
    let out = lab
        .cmd(&[
            "exec",
            "-e",
            "A=1",
            "--cwd",
            "/tmp",
            "x1",
            "sh",
            "-c",
            "echo $A; pwd",
        ])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "1\n/tmp\n", "{}", text(&out.stderr));
    let out = lab.cmd(&["exec", "x1", "no-such"]).output().unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("exec failed"));

    let pid_file = lab.dir.path().join("e.pid");
    let ok = lab
        .cmd(&[
            "exec",
            "-d",
            "--pid-file",
            pid_file.to_str().unwrap(),
            "x1",
            "sleep",
            "4242",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let relay: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let table = lab.cmd(&["ps", "x1"]).output().unwrap();
    assert!(
        text(&table.stdout).contains("sleep 4242"),
        "{}",
        text(&table.stdout)
    );
    let json = lab.cmd(&["ps", "--format", "json", "x1"]).output().unwrap();
    let pids: Vec<i32> = serde_json::from_slice(&json.stdout).unwrap();
    assert!(pids.contains(&relay), "{pids:?}");
    let stats = lab.cmd(&["events", "--stats", "x1"]).output().unwrap();
    let event: serde_json::Value =
        serde_json::from_slice(&stats.stdout).unwrap_or_else(|_| panic!("{}", text(&stats.stderr)));
    assert_eq!(event["type"], "stats");
    assert!(
        event["data"]["memory"]["usage"]["usage"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{event}"
    );
    assert!(
        event["data"]["pids"]["current"].as_u64().unwrap_or(0) >= 2,
        "{event}"
    );
    let relay = nix::unistd::Pid::from_raw(relay);
    nix::sys::signal::kill(relay, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = nix::sys::wait::waitpid(relay, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let table = lab.cmd(&["ps", "x1"]).output().unwrap();
        if !text(&table.stdout).contains("sleep 4242") {
            break;
        }
        assert!(Instant::now() < deadline, "guest sleep survived its relay");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = lab.cmd(&["kill", "x1", "KILL"]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.state("x1")["status"] != "stopped" {
        assert!(Instant::now() < deadline, "container did not stop");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(lab.cmd(&["delete", "x1"]).status().unwrap().success());
}

/// Docker's runtime root and a 64-character ID (the user trial that found it): `<root>/<id>/
/// vsock.sock` and `monitor.sock` are longer than the 107 bytes `sun_path` holds, yet the VMM
/// binds the vsock socket, exec dials it, every command reaches the monitor, and `delete` leaves
/// no file, socket, mount or process.
#[test]
fn lab_exec_a_64_character_id_under_a_long_root() {
    if !can_run_guests("lab_exec_a_64_character_id_under_a_long_root") {
        return;
    }
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
    let lab = Lab::new();
    let bundle = lab.bundle("b", "sleep 600");
    let root = lab
        .dir
        .path()
        .join("var/run/docker/runtime-runc/moby")
        .join("long-".repeat(6));
    let id = "0123456789abcdef".repeat(4);
    for name in ["monitor.sock", "vsock.sock"] {
        assert!(root.join(&id).join(name).as_os_str().len() > 108);
    }
    let vessel = |args: &[&str]| {
        let mut c = std::process::Command::new(VESSEL);
        c.arg("--root").arg(&root).args(args).stdin(Stdio::null());
        c.env_remove("VESSEL_TEST_SANDBOX");
        c
    };
    let err = lab.dir.path().join("run.err");
    let run = vessel(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &id])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    assert!(
        run.success(),
        "{}; console: {}",
        std::fs::read_to_string(&err).unwrap(),
        std::fs::read_to_string(root.join(&id).join("console.log")).unwrap_or_default()
    );
    for name in ["monitor.sock", "vsock.sock"] {
        let path = root.join(&id).join(name);
        assert!(std::fs::symlink_metadata(&path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())));
    }
    let out = vessel(&["exec", &id, "sh", "-c", "echo in the guest; exit 6"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "in the guest\n");
    let out = vessel(&["state", &id]).output().unwrap();
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["status"], "running", "{}", text(&out.stderr));
    let monitor = state["pid"].as_i64().unwrap() as i32;
    for verb in ["pause", "resume"] {
        let out = vessel(&[verb, &id]).output().unwrap();
        assert!(out.status.success(), "{verb}: {}", text(&out.stderr));
    }
    let out = vessel(&["kill", &id, "KILL"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(monitor), None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = vessel(&["state", &id]).output().unwrap();
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if state["status"] == "stopped" {
            break;
        }
        assert!(Instant::now() < deadline, "still {}", state["status"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = vessel(&["delete", &id]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    assert_eq!(mounts_under(lab.dir.path()), Vec::<String>::new());
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitor), None).is_err());
}
