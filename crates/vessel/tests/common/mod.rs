//! Shared fixture of the lab end-to-end tests: a temporary `--root`, BusyBox bundles from the
//! fixture cache, and the host check that makes the tests skip (saying why) where guests cannot
//! boot. Each test binary uses part of it.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const VESSEL: &str = env!("CARGO_BIN_EXE_vessel");

/// True when this host can boot guests; otherwise prints why the test skips.
pub fn can_run_guests(test: &str) -> bool {
    let report = vessel_vmm::host::probe();
    if !report.verdict.can_run_guests() {
        eprintln!(
            "{test}: skipped: {} (runs in the lab: make test-lab)",
            report.verdict
        );
        return false;
    }
    true
}

/// A temporary `--root` and a BusyBox bundle copied from the fixture cache.
pub struct Lab {
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Lab {
        Lab {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A bundle running `/bin/sh -c <script>` in a copy of the BusyBox rootfs.
    pub fn bundle(&self, name: &str, script: &str) -> PathBuf {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let fixture = Command::new(repo.join("tests/fixtures/mkrootfs.sh"))
            .arg("busybox")
            .output()
            .expect("run mkrootfs.sh");
        assert!(
            fixture.status.success(),
            "mkrootfs.sh: {}",
            text(&fixture.stderr)
        );
        let cached = PathBuf::from(text(&fixture.stdout).trim());
        let bundle = self.dir.path().join(name);
        std::fs::create_dir_all(&bundle).unwrap();
        let cp = Command::new("cp")
            .arg("-a")
            .arg(&cached)
            .arg(bundle.join("rootfs"))
            .status()
            .unwrap();
        assert!(cp.success());
        let spec = Command::new(VESSEL)
            .arg("spec")
            .current_dir(&bundle)
            .output()
            .unwrap();
        assert!(spec.status.success(), "vessel spec: {}", text(&spec.stderr));
        let path = bundle.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = serde_json::json!(["/bin/sh", "-c", script]);
        config["root"]["readonly"] = false.into();
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        bundle
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(VESSEL);
        c.arg("--root")
            .arg(self.root())
            .args(args)
            .stdin(Stdio::null());
        c.env_remove("VESSEL_TEST_SANDBOX");
        c
    }

    pub fn state(&self, id: &str) -> serde_json::Value {
        let out = self.cmd(&["state", id]).output().unwrap();
        assert!(out.status.success(), "state {id}: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("state JSON")
    }

    pub fn console(&self, id: &str) -> String {
        std::fs::read_to_string(self.root().join(id).join("console.log")).unwrap_or_default()
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Mount points under `dir` in this process's mount table.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_string_lossy();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(dir.as_ref()))
        .map(str::to_owned)
        .collect()
}

/// Reads `master` until `what` has been seen (or panics after 20 s), returning all read so far.
pub fn read_until(master: &mut std::fs::File, seen: &mut String, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let fd = std::os::fd::AsRawFd::as_raw_fd(master);
    let mut buf = [0u8; 1024];
    while !seen.contains(what) {
        assert!(
            Instant::now() < deadline,
            "no {what:?} on the terminal: {seen:?}"
        );
        let mut fds = [libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), 1, 200) } <= 0 {
            continue;
        }
        match master.read(&mut buf) {
            Ok(0) | Err(_) => panic!("terminal ended before {what:?}: {seen:?}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
}

/// Resizes the host pty master and sends an empty line until the guest's `stty size` shows
/// the new size (the resize travels SIGWINCH -> relay -> agent, asynchronously).
pub fn resize_until_seen(master: &mut std::fs::File, seen: &mut String, rows: u16, cols: u16) {
    use std::io::Write;
    use std::os::fd::AsFd;
    vessel_runtime::host::console::set_window_size(master.as_fd(), (rows, cols)).unwrap();
    let want = format!("{rows} {cols}\r\n");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains(&want) {
        assert!(
            Instant::now() < deadline,
            "resize never reached the guest: {seen:?}"
        );
        master.write_all(b"\n").unwrap();
        let mut buf = [0u8; 1024];
        std::thread::sleep(Duration::from_millis(100));
        let mut fds = [libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(master),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
        while unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) } > 0 {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => panic!("terminal ended: {seen:?}"),
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    }
}

/// Accepts one connection on `listener` and receives the pty master as containerd does.
pub fn receive_console(listener: &std::os::unix::net::UnixListener) -> std::fs::File {
    let (conn, _) = listener.accept().unwrap();
    let (name, master) = vessel_runtime::host::console::receive_master(&conn).unwrap();
    assert!(name.starts_with("/dev/"), "{name}");
    let link = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&master)
    ))
    .unwrap();
    assert!(
        link.to_string_lossy().ends_with("ptmx"),
        "{link:?} is no pty master"
    );
    std::fs::File::from(master)
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Waits until `pid` is gone (or a zombie); returns how long that took, or `None` after `limit`.
pub fn gone_within(pid: i32, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while alive(pid) {
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(t0.elapsed())
}

/// Waits until `state` says `stopped`, or panics after `limit` with the console.
pub fn wait_stopped(lab: &Lab, id: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while lab.state(id)["status"] != "stopped" {
        assert!(
            Instant::now() < deadline,
            "{id} did not stop within {limit:?}; console:\n{}",
            lab.console(id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Processes whose command line mentions `needle` (a leftover monitor would).
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me && alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// Runs `cmd` to its end with output captured, or kills it and panics after `limit` (a
/// regression must fail the test, not hang the lab).
pub fn output_within(cmd: &mut Command, limit: Duration, what: &str) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: spawn: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = status_within(&mut child, limit, what);
    std::process::Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// Waits for `child` to exit, or kills it and panics after `limit`.
pub fn status_within(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes this process the child subreaper, so that monitors and exec relays whose parent exits
/// are reparented to it and can be reaped (`reap_within`).
pub fn subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
}

/// Reaps `pid` (a child of this subreaper) within `limit`, returning its wait status.
pub fn reap_within(pid: i32, limit: Duration, what: &str) -> nix::sys::wait::WaitStatus {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let pid = nix::unistd::Pid::from_raw(pid);
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::StillAlive => {}
            s => return s,
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not end within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
