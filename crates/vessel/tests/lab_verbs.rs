//! End-to-end tests of the verbs that act inside the guest (issue 7) with a real microVM, all in
//! one container so that they cost one VM boot: foreground exec status and signal forwarding,
//! detached exec status, 100 MiB of exec output, pause/resume (cgroup freezer and vCPUs),
//! update (refused beyond the VM, pids limit applied), and OOM events.
//!
//! They need hardware-backed KVM: natively on our kvm_pvm machines they print why they skip;
//! `make test-lab` runs them inside the nested lab (docs/testing.md).

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for `child` and collects its output; kills it and fails after `limit`.
fn wait_output(child: Child, limit: Duration) -> Output {
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("vessel did not exit within {limit:?}");
        }
    }
}

fn counter(rootfs: &Path) -> u64 {
    std::fs::read_to_string(rootfs.join("tmp/n"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn lab_verbs_exec_signals_output_pause_update_and_oom() {
    if !can_run_guests("lab_verbs_exec_signals_output_pause_update_and_oom") {
        return;
    }
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
    let lab = Lab::new();
    // The workload never forks: the pids limit below leaves it no room, and BusyBox's shell
    // exits when a fork fails. `read -t` on a FIFO opened read-write (no writer to wait for)
    // is its 0.1 s sleep.
    let bundle = lab.bundle(
        "b",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; read -t 0.1 x <> /tmp/tick; done",
    );
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    nix::unistd::mkfifo(
        &rootfs.join("tmp/tick"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // 100 MiB of random bytes for the output test, read by the guest over virtio-fs.
    let big = {
        let mut data = vec![0u8; 100 << 20];
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut data)
            .unwrap();
        std::fs::write(rootfs.join("big"), &data).unwrap();
        data
    };
    let run = lab
        .cmd(&["run", "-d", "--bundle", bundle.to_str().unwrap(), "v1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(run.success(), "console: {}", lab.console("v1"));
    let c0 = counter(&rootfs);
    wait_until("the workload's counter", Duration::from_secs(60), || {
        counter(&rootfs) > c0 + 2
    });

    // Pause: state says paused and the counter stops; resume: it advances again.
    let out = lab.cmd(&["pause", "v1"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(lab.state("v1")["status"], "paused");
    let frozen = counter(&rootfs);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        counter(&rootfs),
        frozen,
        "the counter advanced while paused"
    );
    let out = lab.cmd(&["pause", "v1"]).output().unwrap();
    assert!(text(&out.stderr).contains("container not running"));
    // The guest still answers the monitor's requests while paused.
    let stats = lab.cmd(&["events", "--stats", "v1"]).output().unwrap();
    assert!(stats.status.success(), "{}", text(&stats.stderr));
    assert_eq!(counter(&rootfs), frozen, "the counter advanced for stats");
    let out = lab.cmd(&["resume", "v1"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(lab.state("v1")["status"], "running");
    wait_until("the counter after resume", Duration::from_secs(30), || {
        counter(&rootfs) > frozen + 2
    });
    let out = lab.cmd(&["resume", "v1"]).output().unwrap();
    assert!(text(&out.stderr).contains("container not paused"));

    // Foreground exec: the process's status, and a signal sent to `vessel exec` reaches it.
    let out = lab
        .cmd(&["exec", "v1", "sh", "-c", "exit 5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let child = lab
        .cmd(&[
            "exec",
            "v1",
            "sh",
            "-c",
            "trap 'echo term; exit 3' TERM; touch /tmp/trap-ready; \
             while true; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the trap script", Duration::from_secs(60), || {
        rootfs.join("tmp/trap-ready").exists()
    });
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(3), "term\n".to_owned()),
        "{}",
        text(&out.stderr)
    );

    // Detached: the pid-file process exits with the guest status.
    let pid_file = lab.dir.path().join("d.pid");
    let ok = lab
        .cmd(&[
            "exec",
            "-d",
            "--pid-file",
            pid_file.to_str().unwrap(),
            "v1",
            "sh",
            "-c",
            "sleep 1; exit 7",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let relay = Pid::from_raw(std::fs::read_to_string(&pid_file).unwrap().parse().unwrap());
    assert_eq!(
        nix::sys::wait::waitpid(relay, None).unwrap(),
        nix::sys::wait::WaitStatus::Exited(relay, 7)
    );

    // update beyond the VM's memory (512 MiB by default) is refused, naming both sizes.
    let out = lab
        .cmd(&["update", "--memory", "4g", "v1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("4096 MiB") && err.contains("512 MiB"), "{err}");

    // OOM: under a 32 MiB limit, a 64 MiB buffer gets its process OOM-killed, and `events`
    // reports it.
    let out = lab
        .cmd(&["update", "--memory", "32m", "--memory-swap", "32m", "v1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stats = lab.cmd(&["events", "--stats", "v1"]).output().unwrap();
    let event: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(
        event["data"]["memory"]["usage"]["limit"],
        32 << 20,
        "{event}"
    );
    let mut events = lab
        .cmd(&["events", "--interval", "1s", "v1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = events.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The first stats line says the watcher is up.
    let first = lines.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(first.contains(r#""type":"stats""#), "{first}");
    let out = lab
        .cmd(&[
            "exec",
            "v1",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    let oom = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains(r#""type":"oom""#) => break l,
            Ok(_) => continue,
            Err(_) => panic!("no oom event within 30 s"),
        }
    };
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&oom).unwrap(),
        serde_json::json!({"type": "oom", "id": "v1"})
    );
    let _ = events.kill();
    let _ = events.wait();

    // The limit lifted again (-1: unlimited), the page cache of a large read has room.
    let out = lab
        .cmd(&["update", "--memory=-1", "--memory-swap=-1", "v1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    // 100 MiB of output arrive complete and in order.
    let t0 = Instant::now();
    let out = lab.cmd(&["exec", "v1", "cat", "/big"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 100 << 20);
    if let Some(at) = out.stdout.iter().zip(&big).position(|(a, b)| a != b) {
        panic!("exec output differs from /big at byte {at}");
    }
    drop(big);
    eprintln!("100 MiB of exec output in {:?}", t0.elapsed());

    // pids limit: a burst of 20 background sleeps is contained.
    let out = lab
        .cmd(&["update", "--pids-limit", "5", "v1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = lab
        .cmd(&[
            "exec",
            "v1",
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do sleep 30 & done",
        ])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("can't fork"),
        "{}",
        text(&out.stderr)
    );
    let stats = lab.cmd(&["events", "--stats", "v1"]).output().unwrap();
    let event: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(event["data"]["pids"]["limit"], 5, "{event}");
    assert!(
        event["data"]["pids"]["current"].as_u64().unwrap() <= 5,
        "{event}"
    );

    let _ = lab.cmd(&["kill", "v1", "KILL"]).status();
    wait_until("the container to stop", Duration::from_secs(60), || {
        lab.state("v1")["status"] == "stopped"
    });
    assert!(lab.cmd(&["delete", "v1"]).status().unwrap().success());
}
