//! A guest that stops answering cannot hang the host side (issue 21, item 3), through real
//! microVMs:
//!
//! 1. `lab_silent_guest_sigkill_stops_the_vm`: the VM's vCPU threads are held still from the
//!    host (ptrace: each is interrupted and kept in a ptrace stop, so the guest runs no code
//!    at all, as a hung guest kernel would not answer), and `kill KILL` is sent: the agent
//!    cannot answer within the SIGKILL deadline (3 s), so the monitor stops the microVM
//!    instead, says so in `--log`, and exits 137 as a container whose init was SIGKILLed.
//! 2. `lab_silent_guest_paused_container_is_killed`: a paused container (cgroup frozen in the
//!    guest and vCPUs paused) is killed with `kill KILL` as runc's is.
//!
//! The silent agent with the agent's own process stopped is tested natively (SIGSTOP of the
//! agent double): `agent_lifecycle.rs`, `a_silent_agent_fails_requests_within_their_deadline_
//! and_the_monitor_recovers`. They need hardware-backed KVM: natively they print why they skip;
//! `make test-lab` runs them.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// Reaps the monitor `pid` within `limit`; returns its exit code.
fn exit_code_within(pid: i32, limit: Duration) -> i32 {
    match reap_within(pid, limit, "the monitor") {
        nix::sys::wait::WaitStatus::Exited(_, code) => code,
        other => panic!("monitor {pid}: {other:?}"),
    }
}

/// Thread ids of `pid` whose name is `vcpu<N>`.
fn vcpu_threads(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|tid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).is_ok_and(|c| {
                let c = c.trim();
                c.strip_prefix("vcpu")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .collect()
}

/// Holds threads in a ptrace stop until dropped.
struct Held(Vec<i32>);

impl Held {
    fn hold(tids: Vec<i32>) -> Held {
        for &tid in &tids {
            // SAFETY: ptrace(2) requests with integer arguments and null pointers only.
            let rc = unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) };
            assert_eq!(rc, 0, "seize {tid}: {}", std::io::Error::last_os_error());
            // SAFETY: as above.
            let rc = unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) };
            assert_eq!(
                rc,
                0,
                "interrupt {tid}: {}",
                std::io::Error::last_os_error()
            );
            let mut status = 0;
            // SAFETY: waitpid writes one int through a valid pointer.
            let got = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
            assert_eq!(got, tid, "{}", std::io::Error::last_os_error());
        }
        Held(tids)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for &tid in &self.0 {
            // SAFETY: ptrace(2) with integer arguments; the thread is in a ptrace stop.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0) };
        }
    }
}

fn run_detached(lab: &Lab, bundle: &std::path::Path, id: &str, log: &std::path::Path) -> i32 {
    let pid_file = lab.dir.path().join(format!("{id}.pid"));
    let mut cmd = lab.cmd(&[
        "--log",
        log.to_str().unwrap(),
        "run",
        "-d",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "--bundle",
        bundle.to_str().unwrap(),
        id,
    ]);
    let run = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(run.success(), "console: {}", lab.console(id));
    std::fs::read_to_string(&pid_file).unwrap().parse().unwrap()
}

#[test]
fn lab_silent_guest_sigkill_stops_the_vm() {
    if !can_run_guests("lab_silent_guest_sigkill_stops_the_vm") {
        return;
    }
    subreaper();
    let lab = Lab::new();
    let bundle = lab.bundle("b", "sleep 600");
    let log = lab.dir.path().join("vessel.log");
    let monitor = run_detached(&lab, &bundle, "g1", &log);
    let vcpus = vcpu_threads(monitor);
    assert!(!vcpus.is_empty(), "no vcpu threads in monitor {monitor}");
    let held = Held::hold(vcpus);

    let t0 = Instant::now();
    let mut kill = lab
        .cmd(&["--log", log.to_str().unwrap(), "kill", "g1", "KILL"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The agent cannot answer: within its deadline the monitor gives up on it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let said = "SIGKILL through the agent failed";
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(said)
    {
        assert!(
            Instant::now() < deadline,
            "no {said:?} in the log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let gave_up = t0.elapsed();
    // The vCPU threads go on (to their end: the VM is being stopped).
    drop(held);
    let status = status_within(&mut kill, Duration::from_secs(20), "kill KILL");
    assert!(status.success(), "kill KILL of a silent guest: {status:?}");
    assert_eq!(exit_code_within(monitor, Duration::from_secs(20)), 137);
    eprintln!("silent guest: the monitor gave up on the agent {gave_up:?} after the kill");
    assert!(gave_up >= Duration::from_secs(3), "{gave_up:?}");
    wait_stopped(&lab, "g1", Duration::from_secs(10));
    assert!(lab.cmd(&["delete", "g1"]).status().unwrap().success());
    assert!(!lab.root().join("g1").exists());
}

#[test]
fn lab_silent_guest_paused_container_is_killed() {
    if !can_run_guests("lab_silent_guest_paused_container_is_killed") {
        return;
    }
    subreaper();
    let lab = Lab::new();
    let bundle = lab.bundle("b", "sleep 600");
    let log = lab.dir.path().join("vessel.log");
    let monitor = run_detached(&lab, &bundle, "p1", &log);
    let pause = output_within(
        &mut lab.cmd(&["pause", "p1"]),
        Duration::from_secs(30),
        "pause",
    );
    assert!(pause.status.success(), "{}", text(&pause.stderr));
    assert_eq!(lab.state("p1")["status"], "paused");
    let kill = output_within(
        &mut lab.cmd(&["kill", "p1", "KILL"]),
        Duration::from_secs(20),
        "kill KILL of a paused container",
    );
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    assert_eq!(exit_code_within(monitor, Duration::from_secs(30)), 137);
    wait_stopped(&lab, "p1", Duration::from_secs(10));
    assert!(lab.cmd(&["delete", "p1"]).status().unwrap().success());
}
