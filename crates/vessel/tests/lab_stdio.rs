//! Standard I/O under pressure (issue 20), through real microVMs, each step with a deadline so
//! that a regression fails instead of hanging the lab:
//!
//! 1. `lab_stdio_stalled_reader_does_not_keep_a_killed_container_alive`: a detached container,
//!    a detached exec and a foreground `run` whose stdout is a FIFO that is held open but never
//!    read; once the pipes are full, `kill KILL` stops the container at once (runc: `state` says
//!    `stopped` in a moment, `delete` returns at once), the exec's relay and the foreground `run`
//!    end with 137, and nothing is left (monitor, state directory, processes) after `delete`, or
//!    after the foreground `run`, which deletes its container itself.
//! 2. `lab_stdio_exec_tty_returns_when_its_process_exits`: `exec -t` of a process that leaves a
//!    background child holding the pty returns the process's status at once; the child lives on.
//! 3. `lab_stdio_console_socket_reader_sees_every_line_then_the_end`: the receiver of the init's
//!    pty master reads all of 50,000 lines and then end-of-file promptly (a background child held
//!    the guest pty too).
//! 4. `lab_stdio_large_outputs_arrive_complete`: hundreds of thousands of lines on stdout and on
//!    stderr at once arrive complete, in order, with the last line, in 20 rounds in a row; 100 MiB
//!    of binary output and 50,000 lines through a terminal likewise in three of those rounds.
//!
//! They need hardware-backed KVM: natively they print why they skip; `make test-lab` runs them.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// What runc takes for each step here is well under a second; the lab's emulation is slow, so
/// the bounds leave room, but each is far below "never".
const STEP: Duration = Duration::from_secs(15);

/// A FIFO with a reader that is held open and never read, and its write end.
fn stalled_fifo(dir: &Path, name: &str) -> (File, File) {
    let path = dir.join(name);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap();
    let writer = OpenOptions::new().write(true).open(&path).unwrap();
    (reader, writer)
}

/// Bytes waiting in a pipe (`FIONREAD`).
fn queued(reader: &File) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(reader.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0);
    n as usize
}

/// Waits until the pipe holds its whole capacity: the writer is now blocked.
fn wait_full(reader: &File, what: &str) {
    // SAFETY: F_GETPIPE_SZ takes no argument.
    let capacity = unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_GETPIPE_SZ) } as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while queued(reader) < capacity {
        assert!(
            Instant::now() < deadline,
            "{what}: the pipe never filled ({} of {capacity} bytes)",
            queued(reader)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let the backlog reach the guest: every buffer on the way fills and the writer blocks.
    std::thread::sleep(Duration::from_secs(2));
}

fn delete_leaves_nothing(lab: &Lab, id: &str, monitor: i32) {
    let out = output_within(&mut lab.cmd(&["delete", id]), STEP, "delete");
    assert!(out.status.success(), "delete {id}: {}", text(&out.stderr));
    assert!(!alive(monitor), "monitor {monitor} of {id} survived delete");
    assert!(
        !lab.root().join(id).exists(),
        "state directory of {id} left"
    );
    let left = processes_mentioning(&format!(" {id}"));
    assert!(left.is_empty(), "processes of {id} left: {left:?}");
}

#[test]
fn lab_stdio_stalled_reader_does_not_keep_a_killed_container_alive() {
    if !can_run_guests("lab_stdio_stalled_reader_does_not_keep_a_killed_container_alive") {
        return;
    }
    subreaper();
    let lab = Lab::new();
    let dir = lab.dir.path();
    let bundle = lab.bundle("b", "yes line-from-the-init");

    // A detached container and a detached exec, each writing into a pipe nobody reads.
    let (init_reader, init_writer) = stalled_fifo(dir, "init.fifo");
    let pid_file = dir.join("s1.pid");
    let run = lab
        .cmd(&[
            "run",
            "-d",
            "--pid-file",
            pid_file.to_str().unwrap(),
            "--bundle",
            bundle.to_str().unwrap(),
            "s1",
        ])
        .stdout(init_writer)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(run.success(), "console: {}", lab.console("s1"));
    let monitor: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let (exec_reader, exec_writer) = stalled_fifo(dir, "exec.fifo");
    let exec_pid = dir.join("exec.pid");
    let exec = lab
        .cmd(&[
            "exec",
            "-d",
            "--pid-file",
            exec_pid.to_str().unwrap(),
            "s1",
            "yes",
            "line-from-the-exec",
        ])
        .stdout(exec_writer)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(exec.success());
    let relay: i32 = std::fs::read_to_string(&exec_pid).unwrap().parse().unwrap();
    wait_full(&init_reader, "init");
    wait_full(&exec_reader, "exec");

    let t0 = Instant::now();
    let kill = output_within(&mut lab.cmd(&["kill", "s1", "KILL"]), STEP, "kill s1 KILL");
    assert!(kill.status.success(), "kill: {}", text(&kill.stderr));
    wait_stopped(&lab, "s1", STEP);
    eprintln!("stalled reader: stopped {:?} after kill", t0.elapsed());
    assert_eq!(
        reap_within(relay, STEP, "the exec's relay"),
        nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(relay), 137)
    );
    delete_leaves_nothing(&lab, "s1", monitor);
    drop((init_reader, exec_reader));

    // A foreground run whose caller stops reading: killed from outside, it returns 137.
    let (fg_reader, fg_writer) = stalled_fifo(dir, "fg.fifo");
    let bundle = lab.bundle("fg", "yes line-from-the-foreground");
    let fg_pid = dir.join("fg.pid");
    let mut fg = lab
        .cmd(&[
            "run",
            "--pid-file",
            fg_pid.to_str().unwrap(),
            "--bundle",
            bundle.to_str().unwrap(),
            "s2",
        ])
        .stdout(fg_writer)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_full(&fg_reader, "foreground run");
    let monitor: i32 = std::fs::read_to_string(&fg_pid).unwrap().parse().unwrap();
    let kill = output_within(&mut lab.cmd(&["kill", "s2", "KILL"]), STEP, "kill s2 KILL");
    assert!(kill.status.success(), "kill: {}", text(&kill.stderr));
    let status = status_within(&mut fg, STEP, "the foreground run");
    assert_eq!(status.code(), Some(137), "{status:?}");
    // A foreground run deletes its container when it ends, as runc's.
    assert!(!alive(monitor), "monitor {monitor} of s2 survived");
    assert!(
        !lab.root().join("s2").exists(),
        "state directory of s2 left"
    );
    let left = processes_mentioning(" s2");
    assert!(left.is_empty(), "processes of s2 left: {left:?}");
    drop(fg_reader);
}

/// A pty pair for a command that needs the caller's terminal: (master, slave).
fn pty() -> (File, OwnedFd) {
    let p = nix::pty::openpty(None, None).unwrap();
    (File::from(p.master), p.slave)
}

#[test]
fn lab_stdio_exec_tty_returns_when_its_process_exits() {
    if !can_run_guests("lab_stdio_exec_tty_returns_when_its_process_exits") {
        return;
    }
    subreaper();
    let lab = Lab::new();
    let bundle = lab.bundle("b", "sleep 600");
    let run = lab
        .cmd(&["run", "-d", "--bundle", bundle.to_str().unwrap(), "t1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(run.success(), "console: {}", lab.console("t1"));
    let (mut master, slave) = pty();
    let mut exec = lab
        .cmd(&[
            "exec",
            "-t",
            "t1",
            "sh",
            "-c",
            // The child is in its own session before the parent ends (else the parent's
            // exit, as session leader, would hang it up: SIGHUP, under runc as well).
            "setsid sh -c 'touch /tmp/bg; exec sleep 300' & \
             while [ ! -e /tmp/bg ]; do :; done; echo parent-done; exit 7",
        ])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut seen = String::new();
    read_until(&mut master, &mut seen, "parent-done");
    let t0 = Instant::now();
    let status = status_within(&mut exec, STEP, "exec -t with a background child");
    assert_eq!(status.code(), Some(7), "{status:?}; terminal: {seen:?}");
    eprintln!("exec -t returned {:?} after its output", t0.elapsed());
    // The background child still runs, and still holds its terminal.
    let ps = output_within(&mut lab.cmd(&["ps", "t1"]), STEP, "ps");
    assert!(
        text(&ps.stdout).contains("sleep 300"),
        "{}",
        text(&ps.stdout)
    );
    // A second exec -t works the same after the first.
    let (mut master, slave) = pty();
    let mut exec = lab
        .cmd(&["exec", "-t", "t1", "sh", "-c", "echo second-done"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut seen = String::new();
    read_until(&mut master, &mut seen, "second-done");
    assert_eq!(
        status_within(&mut exec, STEP, "second exec -t").code(),
        Some(0)
    );
    let kill = output_within(&mut lab.cmd(&["kill", "t1", "KILL"]), STEP, "kill");
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    wait_stopped(&lab, "t1", STEP);
    assert!(lab.cmd(&["delete", "t1"]).status().unwrap().success());
}

/// Reads `master` to its end (0 or `EIO`: the last slave is closed), or panics after `limit`.
/// Returns what was read and when the end came.
fn read_to_end_within(master: &mut File, limit: Duration) -> (Vec<u8>, Instant) {
    let deadline = Instant::now() + limit;
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no end of the terminal within {limit:?}; {} bytes, last: {:?}",
            all.len(),
            String::from_utf8_lossy(&all[all.len().saturating_sub(200)..])
        );
        let mut fds = [libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), 1, 200) } <= 0 {
            continue;
        }
        match master.read(&mut buf) {
            Ok(0) => return (all, Instant::now()),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return (all, Instant::now()),
            Err(e) => panic!("read the terminal: {e}"),
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Checks that `out` is exactly `1..=n` one per line (ending `eol`), then `last`.
fn assert_sequence(out: &[u8], n: usize, eol: &str, last: &str, what: &str) {
    let text = String::from_utf8_lossy(out);
    let mut lines = text.split(eol);
    for i in 1..=n {
        let line = lines.next();
        assert_eq!(
            line,
            Some(i.to_string().as_str()),
            "{what}: line {i} of {n} wrong ({} bytes in all)",
            out.len()
        );
    }
    assert_eq!(
        lines.next(),
        Some(last),
        "{what}: no {last:?} after {n} lines"
    );
    assert_eq!(lines.next(), Some(""), "{what}: something after {last:?}");
    assert_eq!(lines.next(), None, "{what}: something after {last:?}");
}

#[test]
fn lab_stdio_console_socket_reader_sees_every_line_then_the_end() {
    if !can_run_guests("lab_stdio_console_socket_reader_sees_every_line_then_the_end") {
        return;
    }
    subreaper();
    let lab = Lab::new();
    let bundle = lab.bundle("c", "setsid sleep 300 & seq 1 50000; echo END");
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["process"]["terminal"] = true.into();
    std::fs::write(&path, config.to_string()).unwrap();
    let sock = lab.dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let pid_file = lab.dir.path().join("c.pid");
    let created = output_within(
        &mut lab.cmd(&[
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--console-socket",
            sock.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            "c1",
        ]),
        Duration::from_secs(120),
        "create",
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    let mut master = receive_console(&listener);
    let monitor: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let t0 = Instant::now();
    let start = output_within(&mut lab.cmd(&["start", "c1"]), STEP, "start");
    assert!(start.status.success(), "{}", text(&start.stderr));
    let (out, end) = read_to_end_within(&mut master, Duration::from_secs(120));
    eprintln!(
        "console socket: {} bytes and the end {:?} after start",
        out.len(),
        end - t0
    );
    assert_sequence(&out, 50_000, "\r\n", "END", "the init's terminal");
    let status = reap_within(monitor, STEP, "the monitor");
    assert_eq!(
        status,
        nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(monitor), 0)
    );
    assert!(lab.cmd(&["delete", "c1"]).status().unwrap().success());
}

/// `VESSEL_STDIO_ROUNDS` (default 20) rounds of execs in one container: lines on stdout and
/// stderr at once in every round; 100 MiB of binary and 50,000 lines through a terminal in the
/// first, a middle and the last round.
#[test]
fn lab_stdio_large_outputs_arrive_complete() {
    if !can_run_guests("lab_stdio_large_outputs_arrive_complete") {
        return;
    }
    subreaper();
    let rounds: usize = std::env::var("VESSEL_STDIO_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let lab = Lab::new();
    let bundle = lab.bundle("b", "sleep 600");
    // 100 MiB of random bytes, in the rootfs (the host's disk, through virtio-fs): the host
    // compares what arrives with the file itself.
    let big = bundle.join("rootfs/big.bin");
    let mut data = vec![0u8; 100 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&big, &data).unwrap();
    let run = lab
        .cmd(&["run", "-d", "--bundle", bundle.to_str().unwrap(), "l1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(run.success(), "console: {}", lab.console("l1"));
    let lines = 200_000;
    let t0 = Instant::now();
    for round in 1..=rounds {
        let both = format!("seq 1 {lines} >&2 & seq 1 {lines}; wait; echo LAST; echo LAST >&2");
        let out = output_within(
            &mut lab.cmd(&["exec", "l1", "sh", "-c", &both]),
            Duration::from_secs(120),
            "lines on stdout and stderr",
        );
        assert!(
            out.status.success(),
            "round {round}: {:?}; console:\n{}",
            out.status,
            lab.console("l1")
        );
        assert_sequence(
            &out.stdout,
            lines,
            "\n",
            "LAST",
            &format!("round {round} stdout"),
        );
        assert_sequence(
            &out.stderr,
            lines,
            "\n",
            "LAST",
            &format!("round {round} stderr"),
        );

        // 100 MiB and a terminal cost seconds each under the lab's emulation: in the first,
        // a middle and the last round.
        if ![1, rounds.div_ceil(2), rounds].contains(&round) {
            continue;
        }
        let out = output_within(
            &mut lab.cmd(&["exec", "l1", "cat", "/big.bin"]),
            Duration::from_secs(120),
            "100 MiB of binary output",
        );
        assert!(
            out.status.success(),
            "round {round}: {:?}: {}; console:\n{}",
            out.status,
            text(&out.stderr),
            lab.console("l1")
        );
        assert_eq!(out.stdout.len(), data.len(), "round {round}: binary length");
        assert!(out.stdout == data, "round {round}: binary output differs");

        let (mut master, slave) = pty();
        let mut exec = lab
            .cmd(&["exec", "-t", "l1", "sh", "-c", "seq 1 50000; echo LAST"])
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave)
            .spawn()
            .unwrap();
        let (out, _) = read_to_end_within(&mut master, Duration::from_secs(120));
        assert_eq!(
            status_within(&mut exec, STEP, "exec -t of 50,000 lines").code(),
            Some(0)
        );
        assert_sequence(
            &out,
            50_000,
            "\r\n",
            "LAST",
            &format!("round {round} terminal"),
        );
    }
    eprintln!("{rounds} rounds of large outputs in {:?}", t0.elapsed());
    let kill = output_within(&mut lab.cmd(&["kill", "l1", "KILL"]), STEP, "kill");
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    wait_stopped(&lab, "l1", STEP);
    assert!(lab.cmd(&["delete", "l1"]).status().unwrap().success());
}
