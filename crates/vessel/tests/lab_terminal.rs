//! End-to-end tests of terminals with real microVMs (`process.terminal`, `exec -t`, the console
//! socket and resizes), on a BusyBox bundle from the fixture cache, with the guest kernel and
//! agent initramfs from `VESSEL_KERNEL` / `VESSEL_INITRAMFS`.
//!
//! They need hardware-backed KVM: natively on our kvm_pvm machines they print why they skip;
//! `make test-lab` runs them inside the nested lab (docs/testing.md). The same paths are tested
//! natively through the agent test double in `agent_lifecycle.rs`.

mod common;

use common::*;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::process::Stdio;

use vessel_runtime::host::console::window_size;

#[test]
fn lab_terminal_console_socket_size_resize_and_exec() {
    if !can_run_guests("lab_terminal_console_socket_size_resize_and_exec") {
        return;
    }
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
    let lab = Lab::new();
    let bundle = lab.bundle(
        "t",
        "tty; stty size; while read x; do stty size; done; echo bye; exit 3",
    );
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["process"]["terminal"] = true.into();
    config["process"]["consoleSize"] = serde_json::json!({"height": 30, "width": 100});
    std::fs::write(&path, config.to_string()).unwrap();

    let sock = lab.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let s = sock.to_str().unwrap();
    let pid_file = lab.dir.path().join("t.pid");
    let created = lab
        .cmd(&[
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--console-socket",
            s,
            "--pid-file",
            pid_file.to_str().unwrap(),
            "t1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}; console: {}",
        text(&created.stderr),
        lab.console("t1")
    );
    // As containerd: accept after create has exited.
    let mut master = receive_console(&listener);
    assert_eq!(window_size(master.as_fd()).unwrap(), (30, 100));
    let monitor: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let start = lab.cmd(&["start", "t1"]).output().unwrap();
    assert!(start.status.success(), "{}", text(&start.stderr));
    let mut seen = String::new();
    read_until(&mut master, &mut seen, "30 100\r\n");
    assert!(seen.starts_with("/dev/pts/0\r\n30 100\r\n"), "{seen:?}");
    resize_until_seen(&mut master, &mut seen, 41, 123);

    // exec with a process.json that asks for a terminal, as containerd and conmon run it.
    let process = lab.dir.path().join("process.json");
    std::fs::write(
        &process,
        serde_json::json!({
            "terminal": true,
            "consoleSize": {"height": 33, "width": 77},
            "cwd": "/",
            "user": {"uid": 0, "gid": 0},
            "env": ["PATH=/bin:/sbin:/usr/bin", "TERM=xterm"],
            "args": ["sh", "-c", "tty; stty size; while read x; do stty size; done; exit 6"]
        })
        .to_string(),
    )
    .unwrap();
    let exec_pid = lab.dir.path().join("exec.pid");
    let out = lab
        .cmd(&[
            "exec",
            "--process",
            process.to_str().unwrap(),
            "--console-socket",
            s,
            "--detach",
            "--pid-file",
            exec_pid.to_str().unwrap(),
            "t1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut exec_master = receive_console(&listener);
    assert_eq!(window_size(exec_master.as_fd()).unwrap(), (33, 77));
    let mut exec_seen = String::new();
    read_until(&mut exec_master, &mut exec_seen, "33 77\r\n");
    assert!(exec_seen.starts_with("/dev/pts/1\r\n"), "{exec_seen:?}");
    resize_until_seen(&mut exec_master, &mut exec_seen, 22, 66);
    exec_master.write_all(b"\x04").unwrap();
    let relay =
        nix::unistd::Pid::from_raw(std::fs::read_to_string(&exec_pid).unwrap().parse().unwrap());
    assert_eq!(
        nix::sys::wait::waitpid(relay, None).unwrap(),
        nix::sys::wait::WaitStatus::Exited(relay, 6)
    );

    master.write_all(b"\x04").unwrap();
    read_until(&mut master, &mut seen, "bye\r\n");
    let monitor = nix::unistd::Pid::from_raw(monitor);
    assert_eq!(
        nix::sys::wait::waitpid(monitor, None).unwrap(),
        nix::sys::wait::WaitStatus::Exited(monitor, 3)
    );
    assert!(lab.cmd(&["delete", "t1"]).status().unwrap().success());
}
