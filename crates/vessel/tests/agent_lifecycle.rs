//! The runc lifecycle through the real protocol path: `vessel` (monitor + `AgentSandbox`) talking
//! to a real `vessel-agent serve` on Unix sockets (`VESSEL_TEST_SANDBOX=agent`), which sets the
//! container up in namespaces on this host. Only the VM and vsock are missing compared with the
//! microVM path.
//!
//! Skips, saying why, without root (the agent mounts and creates namespaces), without
//! `/bin/busybox` (the rootfs), or without a built `vessel-agent` next to `vessel`
//! (`cargo build -p vessel-agent` with the same target dir).

mod common;

use common::{read_until, receive_console, resize_until_seen};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VESSEL: &str = env!("CARGO_BIN_EXE_vessel");

fn agent_binary() -> PathBuf {
    Path::new(VESSEL).with_file_name("vessel-agent")
}

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root: the agent mounts and creates namespaces".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("needs /bin/busybox for the rootfs".into());
    }
    if !agent_binary().exists() {
        return Some(format!(
            "needs {} (cargo build -p vessel-agent)",
            agent_binary().display()
        ));
    }
    None
}

struct Agent {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start() -> Agent {
        Agent::start_with(&[])
    }

    /// An agent started with extra `serve` arguments (`--cgroup-root DIR`).
    fn start_with(extra: &[&std::ffi::OsStr]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(agent_binary())
            .arg("serve")
            .args(extra)
            .arg("--control")
            .arg(dir.path().join("control.sock"))
            .arg("--stdio")
            .arg(dir.path().join("stdio.sock"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.path().join("stdio.sock").exists() {
            assert!(Instant::now() < deadline, "agent did not listen within 10s");
            std::thread::sleep(Duration::from_millis(10));
        }
        Agent { child, dir }
    }

    fn bundle(&self, script: &str) -> PathBuf {
        let b = self.dir.path().join("bundle");
        let bin = b.join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        for d in ["proc", "dev", "tmp"] {
            std::fs::create_dir_all(b.join("rootfs").join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", bin.join("sh")).unwrap();
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "hostname": "agent-test",
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0},
                        "args": ["sh", "-c", script], "env": ["PATH=/bin"]},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"},
                                     {"type": "ipc"}, {"type": "network"}]}
        });
        std::fs::write(b.join("config.json"), config.to_string()).unwrap();
        b
    }

    fn vessel(&self, root: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(VESSEL);
        c.arg("--root").arg(root).args(args);
        c.env("VESSEL_TEST_SANDBOX", "agent")
            .env(
                "VESSEL_TEST_AGENT_CONTROL",
                self.dir.path().join("control.sock"),
            )
            .env(
                "VESSEL_TEST_AGENT_STDIO",
                self.dir.path().join("stdio.sock"),
            )
            .stdin(Stdio::null());
        c
    }
}

#[test]
fn create_start_output_exit_code_and_delete_through_the_agent() {
    if let Some(reason) = skip_reason() {
        eprintln!(
            "{}: skipped: {reason}",
            std::thread::current().name().unwrap_or("test")
        );
        return;
    }
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
    let agent = Agent::start();
    let bundle = agent.bundle("echo hello from $(hostname); echo oops >&2; exit 3");
    let root = agent.dir.path().join("root");
    let pid_file = agent.dir.path().join("init.pid");
    let mut create = agent.vessel(
        &root,
        &[
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            "a1",
        ],
    );
    let mut child = create
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    assert!(status.success(), "create failed");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();

    let state = agent.vessel(&root, &["state", "a1"]).output().unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    assert_eq!(state["status"], "created");
    assert_eq!(state["pid"], pid);

    let start = agent.vessel(&root, &["start", "a1"]).output().unwrap();
    assert!(
        start.status.success(),
        "{}",
        String::from_utf8_lossy(&start.stderr)
    );
    let (mut out, mut err) = (String::new(), String::new());
    stdout.read_to_string(&mut out).unwrap();
    stderr.read_to_string(&mut err).unwrap();
    assert_eq!(out, "hello from agent-test\n");
    assert_eq!(err, "oops\n");

    let waited = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    assert_eq!(
        waited,
        nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 3)
    );
    let state = agent.vessel(&root, &["state", "a1"]).output().unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    assert_eq!(state["status"], "stopped");
    assert!(agent
        .vessel(&root, &["delete", "a1"])
        .status()
        .unwrap()
        .success());
    assert!(!root.join("a1").exists());
}

#[test]
fn agent_refusals_read_as_runc_prints_them_with_the_context_in_the_debug_log() {
    if let Some(reason) = skip_reason() {
        eprintln!(
            "{}: skipped: {reason}",
            std::thread::current().name().unwrap_or("test")
        );
        return;
    }
    // (process patch, runc's text after `unable to start container process: `); each refused
    // create shuts its agent down, as it ends a VM, so each case gets a fresh agent.
    let cases = [
        (
            serde_json::json!({"args": ["no-such-binary"]}),
            r#"exec: "no-such-binary": executable file not found in $PATH"#.to_owned(),
        ),
        (
            serde_json::json!({"args": ["/bin/no-such"]}),
            r#"exec: "/bin/no-such": stat /bin/no-such: no such file or directory"#.to_owned(),
        ),
        (
            serde_json::json!({"args": ["/bin/plain"]}),
            r#"exec: "/bin/plain": permission denied"#.to_owned(),
        ),
        (
            serde_json::json!({"cwd": "/secret", "user": {"uid": 1000, "gid": 1000}}),
            r#"chdir to cwd ("/secret") set in config.json failed: permission denied"#.to_owned(),
        ),
    ];
    for (i, (process, reason)) in cases.iter().enumerate() {
        let agent = Agent::start();
        let bundle = agent.bundle("true");
        let rootfs = bundle.join("rootfs");
        std::fs::write(rootfs.join("bin/plain"), "#!/bin/sh\n").unwrap();
        std::fs::create_dir(rootfs.join("secret")).unwrap();
        std::fs::set_permissions(
            rootfs.join("secret"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let config = bundle.join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        for (k, v) in process.as_object().unwrap() {
            spec["process"][k] = v.clone();
        }
        std::fs::write(&config, spec.to_string()).unwrap();
        let root = agent.dir.path().join("root");
        let log = agent.dir.path().join("log");
        let id = format!("r{i}");
        let out = agent
            .vessel(
                &root,
                &[
                    "--log",
                    log.to_str().unwrap(),
                    "--debug",
                    "create",
                    "-b",
                    bundle.to_str().unwrap(),
                    &id,
                ],
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        // runc's words on stderr (one plain line, the log being a file), no protocol internals.
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("unable to start container process: {reason}\n")
        );
        // The protocol context is in the debug log.
        let logged = std::fs::read_to_string(&log).unwrap();
        let context = "create the container in the guest: agent refused create_container (";
        let quoted = reason.replace('"', "\\\"");
        assert!(
            logged
                .lines()
                .any(|l| l.contains("level=debug") && l.contains(context) && l.contains(&quoted)),
            "{logged}"
        );
        assert!(!root.join(&id).exists());
    }
}

/// Host processes whose command line contains `needle` (the agent test double runs containers
/// on this host, so their processes are visible here).
fn host_processes_with(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        if !zombie
            && String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(needle)
        {
            found.push(pid);
        }
    }
    found
}

/// Waits for `child` to exit and collects its output; kills it and fails after `limit`.
fn wait_output(child: std::process::Child, limit: Duration) -> std::process::Output {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("vessel exec did not exit within {limit:?}");
        }
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exec_foreground_detached_pid_file_signals_and_ps_through_the_agent() {
    if let Some(reason) = skip_reason() {
        eprintln!(
            "{}: skipped: {reason}",
            std::thread::current().name().unwrap_or("test")
        );
        return;
    }
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
    let agent = Agent::start();
    let bundle = agent.bundle("exec busybox sleep 600");
    let root = agent.dir.path().join("root");
    let init_pid = agent.dir.path().join("init.pid");
    let create = agent
        .vessel(
            &root,
            &[
                "create",
                "--bundle",
                bundle.to_str().unwrap(),
                "--pid-file",
                init_pid.to_str().unwrap(),
                "e1",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(create.success());
    let monitor: i32 = std::fs::read_to_string(&init_pid).unwrap().parse().unwrap();
    assert!(agent
        .vessel(&root, &["start", "e1"])
        .status()
        .unwrap()
        .success());

    // Foreground: status, environment, cwd, user.
    let out = agent
        .vessel(
            &root,
            &["exec", "e1", "sh", "-c", "echo out; echo err >&2; exit 5"],
        )
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let out = agent
        .vessel(
            &root,
            &[
                "exec",
                "--env",
                "A=1",
                "--cwd",
                "/tmp",
                "e1",
                "sh",
                "-c",
                "echo $A; pwd",
            ],
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n/tmp\n");
    let out = agent
        .vessel(
            &root,
            &["exec", "-u", "1000:1000", "e1", "busybox", "id", "-u"],
        )
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1000\n");

    // Stdin is relayed, and EOF reaches the process.
    let mut child = agent
        .vessel(&root, &["exec", "e1", "busybox", "wc", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&[b'x'; 100_000]).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100000");

    // Foreground exec forwards the signals it receives to the guest process, several in a row,
    // and returns the process's own status; an untrapped signal gives 128+N.
    let ready = bundle.join("rootfs/tmp/trap-ready");
    let child = agent
        .vessel(
            &root,
            &[
                "exec",
                "e1",
                "sh",
                "-c",
                "trap 'echo usr1 > /tmp/got-usr1' USR1; trap 'echo term; exit 3' TERM; \
                 touch /tmp/trap-ready; while true; do busybox sleep 0.05; done",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the trap script", || ready.exists());
    let exec_pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(exec_pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
    wait_until("the USR1 trap", || {
        bundle.join("rootfs/tmp/got-usr1").exists()
    });
    nix::sys::signal::kill(exec_pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = wait_output(child, Duration::from_secs(20));
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(3), "term\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child = agent
        .vessel(
            &root,
            &[
                "exec",
                "e1",
                "sh",
                "-c",
                "touch /tmp/hup-ready; exec busybox sleep 300",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // (The command line of `vessel exec` itself names the sleep: wait for the guest's marker.)
    wait_until("the guest sleep 300", || {
        bundle.join("rootfs/tmp/hup-ready").exists()
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let out = wait_output(child, Duration::from_secs(20));
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGHUP),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The exec relay and guard (whose command lines also name the sleep) go away just after.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = host_processes_with("sleep 300");
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let described: Vec<String> = left
                .iter()
                .map(|pid| {
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                        .unwrap_or_default();
                    let stat =
                        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    format!("{pid}: {cmdline} [{}]", stat.trim())
                })
                .collect();
            panic!("processes naming sleep 300 still there after 20 s: {described:#?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // -p process.json.
    let process = agent.dir.path().join("process.json");
    std::fs::write(
        &process,
        r#"{"cwd":"/","args":["sh","-c","echo from-file $B"],"env":["PATH=/bin","B=2"],"user":{"uid":0,"gid":0}}"#,
    )
    .unwrap();
    let out = agent
        .vessel(&root, &["exec", "-p", process.to_str().unwrap(), "e1"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-file 2\n");

    // Failure before the process runs: 255 and runc's prefix.
    let out = agent
        .vessel(&root, &["exec", "e1", "no-such-binary"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            r#"exec failed: unable to start container process: exec: \"no-such-binary\": executable file not found in $PATH"#
        ),
        "{err}"
    );
    assert!(!err.contains("agent refused"), "{err}");

    // Detached: the pid-file PID exits with the guest status.
    let pid_file = agent.dir.path().join("exec.pid");
    let out = agent
        .vessel(
            &root,
            &[
                "exec",
                "-d",
                "--pid-file",
                pid_file.to_str().unwrap(),
                "e1",
                "sh",
                "-c",
                "sleep 1; exit 7",
            ],
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let relay: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let relay = nix::unistd::Pid::from_raw(relay);
    assert_eq!(
        nix::sys::wait::waitpid(relay, None).unwrap(),
        nix::sys::wait::WaitStatus::Exited(relay, 7)
    );

    // SIGKILL to the relay takes the guest process down; ps lists the relay while it lives.
    let out = agent
        .vessel(
            &root,
            &[
                "exec",
                "-d",
                "--pid-file",
                pid_file.to_str().unwrap(),
                "e1",
                "busybox",
                "sleep",
                "4242",
            ],
        )
        // The relay keeps the process's stdio: output() would wait for it.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(out.success());
    let relay: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    wait_until("the guest sleep", || {
        !host_processes_with("sleep 4242").is_empty()
    });
    let ps = agent
        .vessel(&root, &["ps", "--format", "json", "e1"])
        .output()
        .unwrap();
    let pids: Vec<i32> = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(pids, {
        let mut v = vec![monitor, relay];
        v.sort_unstable();
        v
    });
    let table = agent.vessel(&root, &["ps", "e1"]).output().unwrap();
    let table = format!(
        "{}{}",
        String::from_utf8_lossy(&table.stdout),
        String::from_utf8_lossy(&table.stderr)
    );
    assert!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .any(|c| c == "PID"),
        "{table}"
    );
    // The agent double serves without a cgroup root, so it lists the init only; the lab test
    // checks that exec'd processes appear.
    assert!(table.contains("sleep 600"), "{table}");
    let relay = nix::unistd::Pid::from_raw(relay);
    nix::sys::signal::kill(relay, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = nix::sys::wait::waitpid(relay, None);
    wait_until("the guest sleep to die", || {
        host_processes_with("sleep 4242").is_empty()
    });

    // events --stats reaches the agent's `stats`; the double serves without a cgroup root, so
    // it refuses with its own error (the lab test reads real statistics).
    let out = agent
        .vessel(&root, &["events", "--stats", "e1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        let event: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (event["type"].as_str(), event["id"].as_str()),
            (Some("stats"), Some("e1"))
        );
    } else {
        assert!(err.contains("no cgroup in this agent"), "{err}");
    }

    // update: a limit beyond the VM's size is refused before the agent is asked, naming the
    // value and the VM's size (512 MiB by default); others reach the agent, which refuses them
    // here for want of a cgroup (the lab test applies them).
    let out = agent
        .vessel(&root, &["update", "--memory", "2g", "e1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("2048 MiB") && err.contains("512 MiB"), "{err}");
    let out = agent
        .vessel(&root, &["update", "--pids-limit", "5", "e1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no cgroup in this agent"), "{err}");
    assert!(!root.join("e1/resources.json").exists());

    let _ = agent.vessel(&root, &["kill", "e1", "KILL"]).status();
    let monitor = nix::unistd::Pid::from_raw(monitor);
    let _ = nix::sys::wait::waitpid(monitor, None);
    assert!(agent
        .vessel(&root, &["delete", "e1"])
        .status()
        .unwrap()
        .success());
}

/// A cgroup v2 hierarchy this host lets us create cgroups in (the agent double then freezes and
/// reads real cgroups), or `None`.
fn cgroup2_mount() -> Option<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let point = pre.split(' ').nth(4)?;
        (post.split(' ').next()? == "cgroup2").then(|| PathBuf::from(point))
    })
}

/// Removes the test's cgroup tree (children first) when dropped.
struct CgroupDir(PathBuf);

impl Drop for CgroupDir {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten().filter(|e| e.path().is_dir()) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn pause_resume_and_guest_requests_while_paused_through_the_agent() {
    if let Some(reason) = skip_reason() {
        eprintln!(
            "{}: skipped: {reason}",
            std::thread::current().name().unwrap_or("test")
        );
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        eprintln!(
            "{}: skipped: needs a cgroup2 mount for the agent's freezer",
            std::thread::current().name().unwrap_or("test")
        );
        return;
    };
    let cgroups = CgroupDir(mount.join(format!("vessel-test-{}", std::process::id())));
    if let Err(e) = std::fs::create_dir_all(&cgroups.0) {
        eprintln!(
            "{}: skipped: cannot create {}: {e}",
            std::thread::current().name().unwrap_or("test"),
            cgroups.0.display()
        );
        return;
    }
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
    let agent = Agent::start_with(&["--cgroup-root".as_ref(), cgroups.0.as_os_str()]);
    let bundle =
        agent.bundle("i=0; while true; do i=$((i+1)); echo $i > /tmp/n; busybox sleep 0.02; done");
    let root = agent.dir.path().join("root");
    let counter = bundle.join("rootfs/tmp/n");
    let run = agent
        .vessel(
            &root,
            &["run", "-d", "--bundle", bundle.to_str().unwrap(), "p1"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(run.success());
    let read = || -> u64 {
        std::fs::read_to_string(&counter)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    wait_until("the counter", || read() > 3);
    let status = |root: &Path| -> String {
        let out = agent.vessel(root, &["state", "p1"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["status"].as_str().unwrap().to_owned()
    };
    let out = agent.vessel(&root, &["resume", "p1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("container not paused"));
    let out = agent.vessel(&root, &["pause", "p1"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status(&root), "paused");
    let frozen = read();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read(), frozen, "the counter advanced while paused");
    let out = agent.vessel(&root, &["pause", "p1"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("container not running"));
    // While paused, ps and events --stats reach the agent through the monitor.
    let table = agent.vessel(&root, &["ps", "p1"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("while true"),
        "{}{}",
        String::from_utf8_lossy(&table.stdout),
        String::from_utf8_lossy(&table.stderr)
    );
    let stats = agent
        .vessel(&root, &["events", "--stats", "p1"])
        .output()
        .unwrap();
    let event: serde_json::Value = serde_json::from_slice(&stats.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&stats.stderr)));
    assert_eq!(event["type"], "stats");
    let exec = agent
        .vessel(&root, &["exec", "p1", "true"])
        .output()
        .unwrap();
    assert_eq!(exec.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&exec.stderr).contains("cannot exec in a paused container"));
    let out = agent.vessel(&root, &["resume", "p1"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status(&root), "running");
    wait_until("the counter to advance after resume", || {
        read() > frozen + 3
    });

    // events --stats carries the interface counters of the init's network namespace with
    // runc's key names; the stream without --stats ends when the container stops.
    let stats = agent
        .vessel(&root, &["events", "--stats", "p1"])
        .output()
        .unwrap();
    let event: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    let interfaces = event["data"]["network_interfaces"].as_array().unwrap();
    assert!(
        interfaces
            .iter()
            .any(|i| i["Name"] == "lo" && i["RxBytes"].is_u64()),
        "{event}"
    );
    let events = agent
        .vessel(&root, &["events", "--interval=100ms", "p1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));

    // SIGKILL reaches a paused container and it stops.
    assert!(agent
        .vessel(&root, &["pause", "p1"])
        .status()
        .unwrap()
        .success());
    assert!(agent
        .vessel(&root, &["kill", "p1", "KILL"])
        .status()
        .unwrap()
        .success());
    wait_until("the container to stop", || status(&root) == "stopped");
    let out = wait_output(events, Duration::from_secs(20));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    assert!(lines
        .iter()
        .all(|l| l["type"] == "stats" && l["id"] == "p1"));
    assert!(agent
        .vessel(&root, &["delete", "p1"])
        .status()
        .unwrap()
        .success());
}

/// Rewrites the bundle's config.json for a terminal: `process.terminal`, `consoleSize`, and the
/// `/dev` and `/dev/pts` mounts a pty needs (`vessel spec` has the same ones).
fn with_terminal(bundle: &Path, rows: u64, cols: u64) {
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["process"]["terminal"] = true.into();
    config["process"]["consoleSize"] = serde_json::json!({"height": rows, "width": cols});
    config["process"]["env"] = serde_json::json!(["PATH=/bin", "TERM=xterm"]);
    config["mounts"] = serde_json::json!([
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}
    ]);
    std::fs::write(&path, config.to_string()).unwrap();
}

#[test]
fn terminal_through_console_socket_exec_tty_and_runc_errors_through_the_agent() {
    use std::io::Write;
    use std::os::fd::AsFd;
    if let Some(reason) = skip_reason() {
        eprintln!(
            "{}: skipped: {reason}",
            std::thread::current().name().unwrap_or("test")
        );
        return;
    }
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
    let agent = Agent::start();
    let bundle = agent.bundle(
        "busybox tty; busybox stty size; while read x; do busybox stty size; done; echo bye; exit 3",
    );
    with_terminal(&bundle, 30, 100);
    let root = agent.dir.path().join("root");
    let b = bundle.to_str().unwrap();

    // runc's checkTerminal errors.
    let out = agent
        .vessel(&root, &["create", "-b", b, "t0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "cannot allocate tty if runc will detach without setting console socket \
             (process.terminal is true: pass --console-socket PATH to receive the pty master, \
             or set process.terminal to false)"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!root.join("t0").exists());

    let sock = agent.dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let s = sock.to_str().unwrap();
    let pid_file = agent.dir.path().join("t1.pid");
    let created = agent
        .vessel(
            &root,
            &[
                "create",
                "-b",
                b,
                "--console-socket",
                s,
                "--pid-file",
                pid_file.to_str().unwrap(),
                "t1",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    // Accepted only after create exited, as containerd does.
    let mut master = receive_console(&listener);
    assert_eq!(
        vessel_runtime::host::console::window_size(master.as_fd()).unwrap(),
        (30, 100),
        "consoleSize on the host pty"
    );
    let monitor: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert!(agent
        .vessel(&root, &["start", "t1"])
        .status()
        .unwrap()
        .success());
    let mut seen = String::new();
    read_until(&mut master, &mut seen, "30 100\r\n");
    assert!(seen.starts_with("/dev/pts/0\r\n30 100\r\n"), "{seen:?}");
    // Input is echoed by the guest pty (the host pty is raw): one echo, not two.
    master.write_all(b"abc\n").unwrap();
    read_until(&mut master, &mut seen, "abc\r\n30 100\r\n");
    assert_eq!(seen.matches("abc").count(), 1, "{seen:?}");
    resize_until_seen(&mut master, &mut seen, 41, 123);

    // exec -t with a console socket (detached, as containerd and conmon run it).
    let exec_pid = agent.dir.path().join("exec.pid");
    let out = agent
        .vessel(
            &root,
            &[
                "exec",
                "-t",
                "-d",
                "--console-socket",
                s,
                "--pid-file",
                exec_pid.to_str().unwrap(),
                "t1",
                "sh",
                "-c",
                "busybox tty; busybox stty size; while read x; do busybox stty size; done; exit 6",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut exec_master = receive_console(&listener);
    assert_eq!(
        vessel_runtime::host::console::window_size(exec_master.as_fd()).unwrap(),
        (30, 100),
        "the bundle's consoleSize for exec -t"
    );
    let mut exec_seen = String::new();
    read_until(&mut exec_master, &mut exec_seen, "30 100\r\n");
    assert!(exec_seen.starts_with("/dev/pts/1\r\n"), "{exec_seen:?}");
    resize_until_seen(&mut exec_master, &mut exec_seen, 22, 66);
    exec_master.write_all(b"\x04").unwrap();
    let relay =
        nix::unistd::Pid::from_raw(std::fs::read_to_string(&exec_pid).unwrap().parse().unwrap());
    assert_eq!(
        nix::sys::wait::waitpid(relay, None).unwrap(),
        nix::sys::wait::WaitStatus::Exited(relay, 6)
    );

    // exec's own terminal errors exit 255 with runc's text.
    let out = agent
        .vessel(&root, &["exec", "-t", "-d", "t1", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "exec failed: cannot allocate tty if runc will detach without setting console socket \
         (process.terminal is true: pass --console-socket PATH to receive the pty master, or set \
         process.terminal to false)"
    ));
    let out = agent
        .vessel(&root, &["exec", "--console-socket", s, "t1", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "cannot use console socket if runc will not detach or allocate tty (--console-socket is \
         only for a detached process whose process.terminal is true: leave it out, or set \
         process.terminal to true and detach)"
    ));

    // End of input (^D on the guest's canonical pty) ends the init's loop.
    master.write_all(b"\x04").unwrap();
    read_until(&mut master, &mut seen, "bye\r\n");
    let monitor = nix::unistd::Pid::from_raw(monitor);
    assert_eq!(
        nix::sys::wait::waitpid(monitor, None).unwrap(),
        nix::sys::wait::WaitStatus::Exited(monitor, 3)
    );
    assert!(agent
        .vessel(&root, &["delete", "t1"])
        .status()
        .unwrap()
        .success());
}

/// Runs `cmd` in a new session with stdio that is not a terminal: no terminal anywhere.
fn output_without_terminal(mut cmd: Command) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.output().unwrap()
}

#[test]
fn foreground_run_and_exec_with_terminal_use_the_callers_terminal_through_the_agent() {
    if let Some(reason) = skip_reason() {
        eprintln!(
            "{}: skipped: {reason}",
            std::thread::current().name().unwrap_or("test")
        );
        return;
    }
    let agent = Agent::start();
    let bundle = agent
        .bundle("busybox stty size; while read x; do busybox stty size; done; echo done; exit 7");
    with_terminal(&bundle, 30, 100);
    let root = agent.dir.path().join("root");
    let b = bundle.to_str().unwrap();

    // No terminal anywhere (a new session, stdio not a tty): runc's error, after the field and
    // the fixes; the same for a foreground exec -t (below, once a container runs).
    let out = output_without_terminal(agent.vessel(&root, &["run", "-b", b, "r0"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "process.terminal is true but there is no terminal to attach it to: run from a \
             terminal, set process.terminal to false in config.json, or run --detach with \
             --console-socket: open /dev/tty: No such device or address (os error 6)"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!root.join("r0").exists());
    // A foreground run with a console socket: runc's checkTerminal comes first.
    let out = output_without_terminal(agent.vessel(
        &root,
        &[
            "run",
            "--console-socket",
            "/nonexistent.sock",
            "-b",
            b,
            "r0",
        ],
    ));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot use console socket if runc will not detach or allocate tty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The caller's terminal: a cooked pty that is `vessel run`'s controlling terminal.
    let (mut child, mut master, slave) =
        spawn_on_terminal(agent.vessel(&root, &["run", "-b", b, "r1"]), 25, 90);
    let cooked = nix::sys::termios::tcgetattr(&slave).unwrap();
    let mut seen = String::new();
    // The caller's size wins over consoleSize, as after runc's first resize.
    read_until(&mut master, &mut seen, "25 90\r\n");
    resize_until_seen(&mut master, &mut seen, 35, 110);
    std::io::Write::write_all(&mut master, b"\x04").unwrap();
    read_until(&mut master, &mut seen, "done\r\n");
    assert_eq!(child.wait().unwrap().code(), Some(7), "{seen:?}");
    let after = nix::sys::termios::tcgetattr(&slave).unwrap();
    assert_eq!(
        after.local_flags, cooked.local_flags,
        "the caller's terminal settings are restored"
    );
    assert!(
        !root.join("r1").exists(),
        "deleted after the foreground run"
    );

    // Foreground exec -t in a container without a terminal of its own (a fresh agent: the
    // monitor of r1 shut the first one down, as it ends a VM).
    let agent = Agent::start();
    let root = agent.dir.path().join("root");
    let plain = agent.dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(bundle.join("rootfs"))
        .arg(plain.join("rootfs"))
        .status()
        .unwrap();
    assert!(cp.success());
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["busybox", "sleep", "600"]);
    std::fs::write(plain.join("config.json"), config.to_string()).unwrap();
    let ok = agent
        .vessel(&root, &["run", "-d", "-b", plain.to_str().unwrap(), "r2"])
        // The container keeps its stdio: output() would wait for it to end.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let out = output_without_terminal(agent.vessel(&root, &["exec", "-t", "r2", "true"]));
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "exec failed: exec --tty (process.terminal) needs a terminal and there is none: run \
             from a terminal, leave out --tty (or set terminal to false in the --process file), \
             or exec --detach with --console-socket: open /dev/tty: No such device or address \
             (os error 6)"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut child, mut master, _slave) = spawn_on_terminal(
        agent.vessel(
            &root,
            &[
                "exec",
                "-t",
                "r2",
                "sh",
                "-c",
                "busybox tty; busybox stty size; while read x; do busybox stty size; done; exit 9",
            ],
        ),
        20,
        70,
    );
    let mut seen = String::new();
    read_until(&mut master, &mut seen, "20 70\r\n");
    assert!(seen.starts_with("/dev/pts/0\r\n"), "{seen:?}");
    resize_until_seen(&mut master, &mut seen, 21, 71);
    std::io::Write::write_all(&mut master, b"\x04").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(9), "{seen:?}");
    // The agent double leaves containers behind when it is killed: end r2 through the agent.
    assert!(agent
        .vessel(&root, &["kill", "r2", "KILL"])
        .status()
        .unwrap()
        .success());
    wait_until("r2 to stop", || {
        let out = agent.vessel(&root, &["state", "r2"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains("\"stopped\"")
    });
    assert!(agent
        .vessel(&root, &["delete", "r2"])
        .status()
        .unwrap()
        .success());
}

/// Spawns `cmd` with a new cooked pty of `rows` x `cols` as its stdio and controlling terminal
/// (in a session of its own), as a shell would; returns the child, the master and the slave.
fn spawn_on_terminal(
    mut cmd: Command,
    rows: u16,
    cols: u16,
) -> (Child, std::fs::File, std::os::fd::OwnedFd) {
    use std::os::unix::process::CommandExt;
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the pty slave set up above.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            if libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    (child, std::fs::File::from(pty.master), pty.slave)
}

/// Every socket file under `dir`, recursively.
fn sockets_under(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            found.extend(sockets_under(&entry.path()));
        } else if kind.is_socket() {
            found.push(entry.path());
        }
    }
    found
}

/// Docker's runtime root plus a 64-character ID makes `<root>/<id>/vsock.sock` 109 bytes, past
/// the 107 that `sun_path` holds (unix(7)); runc takes IDs of up to 255 characters (its
/// `validateID` sets no length, the state directory's NAME_MAX does) under any `--root`. The
/// monitor's control socket is bound and dialled through the directory's fd, so the whole
/// lifecycle works, and `delete` leaves no file, socket or process behind.
#[test]
fn a_long_id_under_a_long_root_goes_through_the_whole_lifecycle_and_leaves_nothing() {
    if let Some(reason) = skip_reason() {
        eprintln!(
            "{}: skipped: {reason}",
            std::thread::current().name().unwrap_or("test")
        );
        return;
    }
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
    let docker_id = "0123456789abcdef".repeat(4);
    // Every character runc allows, NAME_MAX long.
    let longest_id = format!("{}.{}9", "a".repeat(125), "B_+-".repeat(32));
    assert_eq!((docker_id.len(), longest_id.len()), (64, 255));
    for id in [docker_id.as_str(), longest_id.as_str()] {
        // The agent double serves one container, as a VM's agent does.
        let agent = Agent::start();
        let bundle = agent.bundle("exec busybox sleep 600");
        let root = agent
            .dir
            .path()
            .join("var-run-docker-".repeat(4))
            .join("runtime-runc/moby");
        for name in ["monitor.sock", "vsock.sock"] {
            let path = root.join(id).join(name);
            assert!(path.as_os_str().len() > 108, "{}", path.display());
        }
        let pid_file = agent.dir.path().join("init.pid");
        // The workload inherits create's stdio, so its stderr goes to a file, not a pipe.
        let stderr = agent.dir.path().join("create.err");
        let create = agent
            .vessel(
                &root,
                &[
                    "create",
                    "--bundle",
                    bundle.to_str().unwrap(),
                    "--pid-file",
                    pid_file.to_str().unwrap(),
                    id,
                ],
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .status()
            .unwrap();
        assert!(
            create.success(),
            "create {}: {}",
            id.len(),
            std::fs::read_to_string(&stderr).unwrap()
        );
        let monitor: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
        assert_eq!(
            sockets_under(&root.join(id)),
            vec![root.join(id).join("monitor.sock")]
        );
        let start = agent.vessel(&root, &["start", id]).output().unwrap();
        assert!(
            start.status.success(),
            "{}",
            String::from_utf8_lossy(&start.stderr)
        );
        let state = agent.vessel(&root, &["state", id]).output().unwrap();
        let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
        assert_eq!(state["status"], "running");
        assert_eq!(state["id"], id);

        let out = agent
            .vessel(
                &root,
                &["exec", id, "sh", "-c", "echo in $(hostname); exit 4"],
            )
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(4),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "in agent-test\n");
        let ps = agent
            .vessel(&root, &["ps", "--format", "json", id])
            .output()
            .unwrap();
        let pids: Vec<i32> = serde_json::from_slice(&ps.stdout).unwrap();
        assert_eq!(pids, vec![monitor]);

        let kill = agent.vessel(&root, &["kill", id, "KILL"]).output().unwrap();
        assert!(
            kill.status.success(),
            "{}",
            String::from_utf8_lossy(&kill.stderr)
        );
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(monitor), None);
        wait_until("the container to stop", || {
            let state = agent.vessel(&root, &["state", id]).output().unwrap();
            serde_json::from_slice::<serde_json::Value>(&state.stdout)
                .is_ok_and(|s| s["status"] == "stopped")
        });
        let delete = agent.vessel(&root, &["delete", id]).output().unwrap();
        assert!(
            delete.status.success(),
            "{}",
            String::from_utf8_lossy(&delete.stderr)
        );
        assert!(!root.join(id).exists());
        assert_eq!(sockets_under(&root), Vec::<PathBuf>::new());
        assert_eq!(host_processes_with(id), Vec::<i32>::new());
        assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitor), None).is_err());
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    }

    // One character more than NAME_MAX fails as runc's mkdir does, and leaves nothing.
    let agent = Agent::start();
    let bundle = agent.bundle("true");
    let root = agent.dir.path().join("root");
    let too_long = "c".repeat(256);
    let out = agent
        .vessel(
            &root,
            &["create", "--bundle", bundle.to_str().unwrap(), &too_long],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("File name too long"), "{err}");
    assert_eq!(sockets_under(&root), Vec::<PathBuf>::new());
    assert!(!root.join(&too_long).exists());
}

/// A silent agent (stopped with SIGSTOP: alive, connected, answering nothing) cannot hang the
/// host side: a signal through the monitor fails within the protocol's deadline naming the
/// request and the deadline, and once the agent answers again the monitor reconnects and the
/// container is driven as usual.
#[test]
fn a_silent_agent_fails_requests_within_their_deadline_and_the_monitor_recovers() {
    if let Some(reason) = skip_reason() {
        eprintln!(
            "{}: skipped: {reason}",
            std::thread::current().name().unwrap_or("test")
        );
        return;
    }
    common::subreaper();
    let agent = Agent::start();
    let bundle = agent.bundle("sleep 600");
    let root = agent.dir.path().join("root");
    let pid_file = agent.dir.path().join("silent.pid");
    let run = agent
        .vessel(
            &root,
            &[
                "run",
                "-d",
                "--pid-file",
                pid_file.to_str().unwrap(),
                "--bundle",
                bundle.to_str().unwrap(),
                "silent",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(run.success());
    let monitor =
        nix::unistd::Pid::from_raw(std::fs::read_to_string(&pid_file).unwrap().parse().unwrap());
    let agent_pid = nix::unistd::Pid::from_raw(agent.child.id() as i32);
    nix::sys::signal::kill(agent_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();

    let t0 = Instant::now();
    let kill = common::output_within(
        &mut agent.vessel(&root, &["kill", "silent", "TERM"]),
        Duration::from_secs(40),
        "kill TERM with a silent agent",
    );
    let took = t0.elapsed();
    let stderr = common::text(&kill.stderr);
    assert_eq!(kill.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the agent did not answer signal within 15s"),
        "{stderr}"
    );
    assert!(took >= Duration::from_secs(15), "{took:?}");
    let state = agent.vessel(&root, &["state", "silent"]).output().unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    assert_eq!(state["status"], "running");

    // The agent answers again (its late answer to the TERM is still queued on the old
    // connection): the monitor reconnects and the next signal goes through.
    nix::sys::signal::kill(agent_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let kill = common::output_within(
        &mut agent.vessel(&root, &["kill", "silent", "KILL"]),
        Duration::from_secs(30),
        "kill KILL once the agent is back",
    );
    assert!(kill.status.success(), "{}", common::text(&kill.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match nix::sys::wait::waitpid(monitor, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {}
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => {
                // The TERM reached the init late, or the KILL did: either way it died of a
                // signal the caller sent.
                assert!(code == 143 || code == 137, "monitor exited {code}");
                break;
            }
            other => panic!("monitor: {other:?}"),
        }
        assert!(Instant::now() < deadline, "the container did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(agent
        .vessel(&root, &["delete", "silent"])
        .status()
        .unwrap()
        .success());
}
