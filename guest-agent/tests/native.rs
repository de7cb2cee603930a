//! Native tests of the real container setup path: the agent runs in `serve` mode on Unix
//! sockets, and each test drives it with `vessel_protocol::Client` to create, start, exec and
//! wait for containers on a BusyBox root file system in a tempdir, asserting what the workload
//! itself sees (hostname, ids, cwd, env, EROFS, masked paths, seccomp errno, rlimits, caps ...).
//!
//! Needs root (mounts, namespaces, pivot_root) and `/bin/busybox` (Debian's `busybox-static`);
//! without them each test prints why and passes without checking anything.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use oci_spec::runtime::Spec;
use vessel_protocol::client::open_stdio;
use vessel_protocol::network::{Address, Interface, Mac, Route};
use vessel_protocol::{
    Client, ClientError, Code, CreateContainer, ExecProcess, ExitStatus, RemoteError, Request,
    Response, StdioHeader, StreamKind,
};

fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root for mounts, namespaces and pivot_root");
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("needs /bin/busybox (apt-get install busybox-static)");
    }
    None
}

macro_rules! require_root {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!(
                "{}: skipped: {why}",
                std::thread::current().name().unwrap_or("test")
            );
            return Ok(());
        }
    };
}

/// A running `vessel-agent serve` and a BusyBox rootfs.
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

fn make_rootfs(root: &Path) -> Result<()> {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/u"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))?;
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8(list.stdout)?.lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000:u:/home/u:/bin/sh\n",
    )?;
    std::fs::write(root.join("etc/group"), "root:x:0:\nu:x:1000:\n")?;
    std::fs::write(root.join("etc/secret"), "s3cret\n")?;
    std::fs::create_dir_all(root.join("secretdir"))?;
    std::fs::write(root.join("secretdir/file"), "hidden\n")?;
    std::fs::create_dir_all(root.join("data"))?;
    std::fs::write(root.join("notadir"), "")?;
    Ok(())
}

/// The agent binary: `VESSEL_AGENT_BIN` (e.g. the static release build), or this crate's.
fn agent_bin() -> String {
    std::env::var("VESSEL_AGENT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vessel-agent").into())
}

impl Agent {
    fn start() -> Result<Agent> {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Result<Agent> {
        Self::spawn(Command::new(agent_bin()), extra)
    }

    /// An agent in a network namespace of its own (`unshare -n`), standing for the guest's
    /// root one.
    fn start_in_own_netns() -> Result<Agent> {
        let mut cmd = Command::new("unshare");
        cmd.arg("-n").arg(agent_bin());
        Self::spawn(cmd, &[])
    }

    fn spawn(mut cmd: Command, extra: &[&str]) -> Result<Agent> {
        let dir = tempfile::tempdir()?;
        make_rootfs(&dir.path().join("rootfs"))?;
        let child = cmd
            .arg("serve")
            .arg("--control")
            .arg(dir.path().join("control.sock"))
            .arg("--stdio")
            .arg(dir.path().join("stdio.sock"))
            .args(extra)
            .spawn()?;
        let agent = Agent { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.dir.path().join("stdio.sock").exists() {
            if Instant::now() > deadline {
                bail!("agent did not listen within 10s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(agent)
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn client(&self) -> Result<Client<UnixStream>> {
        let s = UnixStream::connect(self.dir.path().join("control.sock"))?;
        Ok(Client::handshake(s)?)
    }

    fn stream(&self, id: &str, exec: Option<&str>, kind: StreamKind) -> Result<UnixStream> {
        let mut s = UnixStream::connect(self.dir.path().join("stdio.sock"))?;
        open_stdio(
            &mut s,
            &StdioHeader {
                container_id: id.into(),
                exec_id: exec.map(str::to_string),
                stream: kind,
            },
        )?;
        Ok(s)
    }

    /// Creates a container that must be refused; returns the agent's typed error.
    fn create_refused(
        &self,
        c: &mut Client<UnixStream>,
        id: &str,
        spec: &Spec,
    ) -> Result<RemoteError> {
        let req = CreateContainer::from_spec(id, spec, self.rootfs().to_str().unwrap());
        match c.create(req) {
            Err(ClientError::Refuse { source, .. }) => Ok(source),
            other => bail!("create {id}: expected a refusal, got {other:?}"),
        }
    }

    /// Collects stdout and stderr of a process in background threads.
    fn capture(&self, id: &str, exec: Option<&str>) -> Result<Output> {
        let read_all = |mut s: UnixStream| -> JoinHandle<String> {
            std::thread::spawn(move || {
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                out
            })
        };
        Ok(Output {
            stdout: read_all(self.stream(id, exec, StreamKind::Stdout)?),
            stderr: read_all(self.stream(id, exec, StreamKind::Stderr)?),
        })
    }

    /// Creates, starts and waits for a container; returns its status, stdout and stderr.
    fn run(&self, id: &str, spec: &Spec) -> Result<(ExitStatus, String, String)> {
        let mut c = self.client()?;
        let mut req = CreateContainer::from_spec(id, spec, self.rootfs().to_str().unwrap());
        req.stdio.stdin = false;
        c.create(req)?;
        let out = self.capture(id, None)?;
        c.call_done(Request::Start {
            container_id: id.into(),
        })?;
        let status = c.wait(id, None)?;
        let (stdout, stderr) = out.join();
        c.call_done(Request::Delete {
            container_id: id.into(),
        })?;
        Ok((status, stdout, stderr))
    }
}

struct Output {
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl Output {
    fn join(self) -> (String, String) {
        (self.stdout.join().unwrap(), self.stderr.join().unwrap())
    }
}

/// A runc-`spec`-like config running `sh -c script`.
fn spec(script: &str) -> Spec {
    let json = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "hostname": "vessel-test",
        "process": {
            "args": ["sh", "-c", script],
            "cwd": "/",
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "user": {"uid": 0, "gid": 0}
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/etc/secret", "/secretdir"],
            "readonlyPaths": ["/proc/sys", "/data"]
        }
    });
    serde_json::from_value(json).unwrap()
}

fn patch(spec: &Spec, patch: serde_json::Value) -> Spec {
    let mut v = serde_json::to_value(spec).unwrap();
    merge(&mut v, patch);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

#[test]
fn hostname_ids_cwd_env_and_pid_1() -> Result<()> {
    require_root!();
    let agent = Agent::start()?;
    let s = patch(
        &spec("hostname; id -u; id -g; id -G; pwd; echo $FOO; echo $HOME; echo $$; umask"),
        serde_json::json!({"process": {
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 23},
            "cwd": "/work/dir",
            "env": ["PATH=/bin", "FOO=bar baz"]
        }}),
    );
    let (status, out, err) = agent.run("ids", &s)?;
    assert_eq!(status, ExitStatus::Code(0), "stderr: {err}");
    assert_eq!(
        out,
        "vessel-test\n1000\n1000\n1000 10 20\n/work/dir\nbar baz\n/home/u\n1\n0027\n"
    );
    Ok(())
}

#[test]
fn exit_code_and_signal_status() -> Result<()> {
    require_root!();
    let agent = Agent::start()?;
    let (status, _, _) = agent.run("exit3", &spec("exit 3"))?;
    assert_eq!(status, ExitStatus::Code(3));
    // PID 1 of a PID namespace ignores SIGKILL sent from inside it, so this one shares the
    // agent's PID namespace.
    let mut s = spec("kill -KILL $$");
    let l = s.linux_mut().as_mut().unwrap();
    let ns = l.namespaces().clone().unwrap();
    l.set_namespaces(Some(
        ns.into_iter()
            .filter(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Pid)
            .collect(),
    ));
    let (status, _, _) = agent.run("sig", &s)?;
    assert_eq!(status, ExitStatus::Signal(9));
    assert_eq!(status.runc_code(), 137);
    Ok(())
}

#[test]
fn readonly_root_masked_and_readonly_paths() -> Result<()> {
    require_root!();
    let agent = Agent::start()?;
    let s = patch(
        &spec(
            "touch /x 2>&1; cat /etc/secret; echo masked=$?; ls /secretdir | wc -l; \
             touch /data/f 2>&1; (echo x > /proc/sys/kernel/hostname) 2>&1; touch /tmp/ok && echo tmp-ok; \
             grep ' /data ' /proc/self/mountinfo | cut -d' ' -f6",
        ),
        serde_json::json!({"root": {"readonly": true}}),
    );
    let (status, out, err) = agent.run("ro", &s)?;
    assert_eq!(status, ExitStatus::Code(0), "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "touch: /x: Read-only file system", "{out}");
    assert_eq!(lines[1], "masked=0", "{out}");
    assert_eq!(lines[2].trim(), "0", "{out}");
    assert_eq!(lines[3], "touch: /data/f: Read-only file system", "{out}");
    assert!(lines[4].contains("Read-only file system"), "{out}");
    assert_eq!(lines[5], "tmp-ok", "{out}");
    assert!(lines[6].split(',').any(|o| o == "ro"), "{out}");
    Ok(())
}

#[test]
fn seccomp_errno_rule_fails_the_syscall() -> Result<()> {
    require_root!();
    let agent = Agent::start()?;
    let s = patch(
        &spec("mkdir /tmp/d; echo rc=$?; touch /tmp/f && echo touch-ok"),
        serde_json::json!({"linux": {"seccomp": {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat", "not_a_syscall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ]
        }}}),
    );
    let (status, out, err) = agent.run("seccomp", &s)?;
    assert_eq!(status, ExitStatus::Code(0), "{err}");
    assert_eq!(out, "rc=1\ntouch-ok\n");
    assert_eq!(
        err,
        "mkdir: can't create directory '/tmp/d': Permission denied\n"
    );
    Ok(())
}

#[test]
fn seccomp_default_errno_with_allow_list_and_masked_eq() -> Result<()> {
    require_root!();
    let agent = Agent::start()?;
    // An allow list with default errno 3 (ESRCH): everything sh and the setup's last steps need
    // is allowed except `getppid`, which fails through the default action; `personality` is
    // allowed only for the 0xffffffff query, by a masked-eq rule.
    let mut names: Vec<String> = Vec::new();
    for n in [
        "read",
        "write",
        "openat",
        "open",
        "close",
        "execve",
        "brk",
        "mmap",
        "munmap",
        "mprotect",
        "arch_prctl",
        "set_tid_address",
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "exit_group",
        "exit",
        "getpid",
        "getuid",
        "geteuid",
        "getgid",
        "getegid",
        "fstat",
        "newfstatat",
        "stat",
        "lstat",
        "ioctl",
        "fcntl",
        "dup2",
        "dup3",
        "wait4",
        "clone",
        "fork",
        "vfork",
        "uname",
        "getcwd",
        "prlimit64",
        "set_robust_list",
        "rseq",
        "statx",
        "access",
        "faccessat",
        "faccessat2",
        "readlink",
        "sysinfo",
        "setpgid",
        "getpgrp",
        "pipe",
        "pipe2",
        "chdir",
        "lseek",
        "getdents64",
        "gettid",
        "tgkill",
        "kill",
        "madvise",
        "futex",
        "poll",
        "ppoll",
        "pselect6",
        "select",
        "getrandom",
        "clock_gettime",
        "nanosleep",
        "clock_nanosleep",
        "sigaltstack",
        "getppid",
        "setgroups",
        "setresuid",
        "setresgid",
        "capget",
        "capset",
        "prctl",
        "getpgid",
        "exit",
    ] {
        names.push(n.to_string());
    }
    names.retain(|n| n != "getppid");
    let s = patch(
        &spec("echo ppid=$PPID"),
        serde_json::json!({"linux": {"seccomp": {
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 3,
            "syscalls": [
                {"names": names, "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 4294967295u64, "valueTwo": 4294967295u64,
                           "op": "SCMP_CMP_MASKED_EQ"}]}
            ]
        }}}),
    );
    let (status, out, err) = agent.run("seccomp2", &s)?;
    assert_eq!(status, ExitStatus::Code(0), "{err}");
    // getppid returned -ESRCH (-3), which BusyBox's sh prints as an unsigned number.
    assert_eq!(out, format!("ppid={}\n", (-3i32) as u32));
    Ok(())
}

#[test]
fn rlimits_caps_and_no_new_privs() -> Result<()> {
    require_root!();
    let agent = Agent::start()?;
    let s = patch(
        &spec("ulimit -n; grep -E '^(Cap|NoNewPrivs)' /proc/self/status"),
        serde_json::json!({"process": {
            "user": {"uid": 1000, "gid": 1000},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1234, "hard": 2048}],
            "noNewPrivileges": true,
            "capabilities": {
                "bounding": ["CAP_KILL", "CAP_CHOWN"],
                "effective": ["CAP_KILL"],
                "permitted": ["CAP_KILL", "CAP_CHOWN"],
                "inheritable": ["CAP_KILL"],
                "ambient": ["CAP_KILL"]
            }
        }}),
    );
    let (status, out, err) = agent.run("caps", &s)?;
    assert_eq!(status, ExitStatus::Code(0), "{err}");
    assert_eq!(
        out,
        "1234\nCapInh:\t0000000000000020\nCapPrm:\t0000000000000020\nCapEff:\t0000000000000020\n\
         CapBnd:\t0000000000000021\nCapAmb:\t0000000000000020\nNoNewPrivs:\t1\n"
    );
    Ok(())
}

#[test]
fn missing_executable_is_refused_at_create_with_runcs_text() -> Result<()> {
    require_root!();
    let agent = Agent::start()?;
    let mut c = agent.client()?;
    let mut s = spec("");
    s.process_mut()
        .as_mut()
        .unwrap()
        .set_args(Some(vec!["no-such-tool".into()]));
    let e = agent.create_refused(&mut c, "nx", &s)?;
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(
        e.message,
        r#"exec: "no-such-tool": executable file not found in $PATH"#
    );
    // Nothing is left: the id can be used again.
    let err = c.call(Request::Start {
        container_id: "nx".into(),
    });
    assert!(
        matches!(err, Err(ClientError::Refuse { source, .. }) if source.code == Code::NotFound)
    );
    Ok(())
}

#[test]
fn cwd_that_is_a_file_is_refused_naming_the_field() -> Result<()> {
    require_root!();
    let agent = Agent::start()?;
    let mut c = agent.client()?;
    let s = patch(
        &spec("true"),
        serde_json::json!({"process": {"cwd": "/notadir"}}),
    );
    let e = agent.create_refused(&mut c, "cwdfile", &s)?;
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(e.message, "process.cwd: /notadir is not a directory");
    Ok(())
}

#[test]
fn exec_joins_the_container_and_reports_status() -> Result<()> {
    require_root!();
    let agent = Agent::start()?;
    let mut c = agent.client()?;
    let s = spec("echo started; exec sleep 100");
    let mut req = CreateContainer::from_spec("ex", &s, agent.rootfs().to_str().unwrap());
    req.stdio.stdin = false;
    let init_pid = c.create(req)?;
    let init_out = agent.capture("ex", None)?;
    // Created but not started: the init has not run its program yet.
    let cmdline = std::fs::read(format!("/proc/{init_pid}/cmdline"))?;
    assert!(String::from_utf8_lossy(&cmdline).contains("__setup"));
    c.call_done(Request::Start {
        container_id: "ex".into(),
    })?;
    let mut p = s.process().clone().unwrap();
    p.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "id -u; hostname; echo $$ > /dev/null; cat; exit 5".into(),
    ]));
    p.user_mut().set_uid(1000);
    let pid = c.exec(ExecProcess {
        container_id: "ex".into(),
        exec_id: "e1".into(),
        process: p,
        stdio: Default::default(),
    })?;
    assert!(pid > 0);
    let out = agent.capture("ex", Some("e1"))?;
    let mut stdin = agent.stream("ex", Some("e1"), StreamKind::Stdin)?;
    stdin.write_all(b"from stdin\n")?;
    stdin.shutdown(std::net::Shutdown::Write)?;
    let mut waiter = agent.client()?;
    assert_eq!(waiter.wait("ex", Some("e1"))?, ExitStatus::Code(5));
    let (stdout, _) = out.join();
    assert_eq!(stdout, "1000\nvessel-test\nfrom stdin\n");
    // ps lists the init (sleep) of the container.
    match c.call(Request::Ps {
        container_id: "ex".into(),
    })? {
        Response::Processes(list) => {
            assert!(list.pids.contains(&init_pid), "{list:?}");
            let init = list.processes.iter().find(|p| p.pid == init_pid).unwrap();
            assert_eq!(init.cmd, "sleep 100");
        }
        other => bail!("unexpected {other:?}"),
    }
    c.call_done(Request::Signal {
        container_id: "ex".into(),
        exec_id: None,
        signal: 9,
        all: false,
    })?;
    assert_eq!(c.wait("ex", None)?, ExitStatus::Signal(9));
    assert_eq!(init_out.join().0, "started\n");
    c.call_done(Request::Delete {
        container_id: "ex".into(),
    })?;
    Ok(())
}

#[test]
fn terminal_is_allocated_in_the_container_and_resized() -> Result<()> {
    require_root!();
    let agent = Agent::start()?;
    let mut c = agent.client()?;
    let s = patch(
        &spec("tty; stty size; echo console >/dev/console; read x; stty size; exit 4"),
        serde_json::json!({"process": {"terminal": true, "consoleSize": {"height": 30, "width": 100}}}),
    );
    c.create(CreateContainer::from_spec(
        "tty",
        &s,
        agent.rootfs().to_str().unwrap(),
    ))?;
    let mut tty = agent.stream("tty", None, StreamKind::Tty)?;
    c.call_done(Request::Start {
        container_id: "tty".into(),
    })?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("console") {
        let n = tty.read(&mut buf)?;
        if n == 0 {
            bail!("tty ended early: {:?}", String::from_utf8_lossy(&seen));
        }
        seen.extend_from_slice(&buf[..n]);
    }
    c.call_done(Request::ResizeTty {
        container_id: "tty".into(),
        exec_id: None,
        rows: 40,
        cols: 120,
    })?;
    tty.write_all(b"\n")?;
    let mut rest = String::new();
    let _ = tty.read_to_string(&mut rest);
    let all = String::from_utf8_lossy(&seen).to_string() + &rest;
    assert_eq!(c.wait("tty", None)?, ExitStatus::Code(4));
    assert!(
        all.starts_with("/dev/pts/0\r\n30 100\r\nconsole\r\n"),
        "{all:?}"
    );
    assert!(all.ends_with("40 120\r\n"), "{all:?}");
    Ok(())
}

#[test]
fn cgroup_join_freeze_thaw_and_removal() -> Result<()> {
    require_root!();
    let base = Path::new("/sys/fs/cgroup/unified");
    if !base.join("cgroup.procs").exists() {
        eprintln!(
            "{}: skipped: needs a cgroup v2 hierarchy at {}",
            std::thread::current().name().unwrap_or("test"),
            base.display()
        );
        return Ok(());
    }
    let root = base.join(format!("vessel-test-{}", std::process::id()));
    let agent = Agent::start_with(&["--cgroup-root", root.to_str().unwrap()])?;
    let mut c = agent.client()?;
    let mut req = CreateContainer::from_spec(
        "cg",
        &spec("exec sleep 100"),
        agent.rootfs().to_str().unwrap(),
    );
    req.stdio = vessel_protocol::StdioConfig {
        stdin: false,
        stdout: false,
        stderr: false,
    };
    let pid = c.create(req)?;
    let cg = root.join("cg");
    // Like runc, create answers only once the setup's intermediate process (it forks the init
    // into the new pid namespace) has exited: the init is alone in its cgroup.
    let procs = std::fs::read_to_string(cg.join("cgroup.procs"))?;
    assert_eq!(procs.trim(), pid.to_string());
    c.call_done(Request::Start {
        container_id: "cg".into(),
    })?;
    c.call_done(Request::Pause {
        container_id: "cg".into(),
    })?;
    assert!(std::fs::read_to_string(cg.join("cgroup.events"))?.contains("frozen 1"));
    c.call_done(Request::Resume {
        container_id: "cg".into(),
    })?;
    assert!(std::fs::read_to_string(cg.join("cgroup.events"))?.contains("frozen 0"));
    match c.call(Request::Ps {
        container_id: "cg".into(),
    })? {
        Response::Processes(list) => assert_eq!(list.pids, vec![pid]),
        other => bail!("unexpected {other:?}"),
    }
    c.call_done(Request::Delete {
        container_id: "cg".into(),
    })?;
    assert!(!cg.exists());
    let _ = std::fs::remove_dir(&root);
    Ok(())
}

#[test]
fn user_namespace_with_mappings() -> Result<()> {
    require_root!();
    let agent = Agent::start()?;
    let mut s = patch(
        &spec("id -u; cat /proc/self/uid_map /proc/self/gid_map; stat -c %u /bin/busybox; cat /dev/null && echo null-ok"),
        serde_json::json!({"linux": {
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]
        }}),
    );
    let l = s.linux_mut().as_mut().unwrap();
    let mut ns = l.namespaces().clone().unwrap();
    ns.push(serde_json::from_value(serde_json::json!({"type": "user"}))?);
    l.set_namespaces(Some(ns));
    let (status, out, err) = agent.run("userns", &s)?;
    assert_eq!(status, ExitStatus::Code(0), "{err}");
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        words,
        ["0", "0", "100000", "65536", "0", "100000", "65536", "65534", "null-ok"],
        "{out}"
    );
    Ok(())
}

#[test]
fn bad_mount_type_is_refused_naming_the_entry() -> Result<()> {
    require_root!();
    let agent = Agent::start()?;
    let mut c = agent.client()?;
    let mut s = spec("true");
    let mut mounts = s.mounts().clone().unwrap();
    mounts.push(serde_json::from_value(serde_json::json!(
        {"destination": "/x", "type": "nosuchfs", "source": "none"}
    ))?);
    let index = mounts.len() - 1;
    s.set_mounts(Some(mounts));
    let e = agent.create_refused(&mut c, "badmnt", &s)?;
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(e.message, format!("mounts[{index}] (/x)"));
    let chain = e.chain();
    assert!(chain[1].starts_with("mount nosuchfs"), "{chain:?}");
    assert!(chain[2].contains("No such device"), "{chain:?}");
    Ok(())
}

#[test]
fn exit_when_empty_ends_the_agent_after_the_last_delete() -> Result<()> {
    require_root!();
    let mut agent = Agent::start_with(&["--exit-when-empty"])?;
    let (status, out, _) = agent.run("only", &spec("echo once"))?;
    assert_eq!((status, out.as_str()), (ExitStatus::Code(0), "once\n"));
    // `run` deleted the only container: the agent exits 0, as the guest's init powers off.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(code) = agent.child.try_wait()? {
            assert_eq!(code.code(), Some(0));
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the agent still runs after its last container was deleted");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn timings_measure_setup_and_release_to_execve() -> Result<()> {
    require_root!();
    let agent = Agent::start()?;
    let mut c = agent.client()?;
    let mut req = CreateContainer::from_spec(
        "tm",
        &spec("exec sleep 100"),
        agent.rootfs().to_str().unwrap(),
    );
    req.stdio = vessel_protocol::StdioConfig {
        stdin: false,
        stdout: false,
        stderr: false,
    };
    c.create(req)?;
    let timings = |c: &mut Client<UnixStream>| -> Result<vessel_protocol::ExecTimings> {
        match c.call(Request::Timings {
            container_id: "tm".into(),
            exec_id: None,
        })? {
            Response::Timings(t) => Ok(t),
            other => bail!("unexpected {other:?}"),
        }
    };
    let created = timings(&mut c)?;
    assert!(created.setup_us > 0, "{created:?}");
    assert_eq!((created.release_us, created.request_to_exec_us), (0, 0));
    c.call_done(Request::Start {
        container_id: "tm".into(),
    })?;
    let started = timings(&mut c)?;
    assert_eq!(started.setup_us, created.setup_us);
    assert!(started.release_us > 0, "{started:?}");
    assert_eq!(
        started.request_to_exec_us,
        started.setup_us + started.release_us
    );
    match c.call(Request::Timings {
        container_id: "tm".into(),
        exec_id: Some("nope".into()),
    }) {
        Err(ClientError::Refuse { source, .. }) => assert_eq!(source.code, Code::NotFound),
        other => bail!("unexpected {other:?}"),
    }
    c.call_done(Request::Delete {
        container_id: "tm".into(),
    })?;
    Ok(())
}

#[test]
fn io_priority_scheduler_and_personality_reach_the_process() -> Result<()> {
    require_root!();
    let agent = Agent::start()?;
    // Fields 19 and 41 of /proc/<pid>/stat are the nice value and the policy (`sh`'s comm has
    // no space, so `cut` counts right).
    let s = patch(
        &spec("ionice -p $$; cut -d' ' -f19,41 /proc/$$/stat; uname -m"),
        serde_json::json!({
            "process": {
                "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 6},
                "scheduler": {"policy": "SCHED_BATCH", "nice": 7}
            },
            "linux": {"personality": {"domain": "LINUX32"}}
        }),
    );
    let (status, out, err) = agent.run("sched", &s)?;
    assert_eq!(status, ExitStatus::Code(0), "{err}");
    // SCHED_BATCH is policy 3; PER_LINUX32 makes uname report a 32-bit machine.
    assert_eq!(out, "best-effort: prio 6\n7 3\ni686\n");
    Ok(())
}

/// Runs `ip args` in the network namespace of process `pid`.
fn ip_in(pid: u32, args: &str) -> Result<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .arg("ip")
        .args(args.split_whitespace())
        .output()?;
    if !out.status.success() {
        bail!("ip {args}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The agent's typed refusal of `req`.
fn refused(c: &mut Client<UnixStream>, req: Request) -> Result<RemoteError> {
    match c.call(req) {
        Err(ClientError::Refuse { source, .. }) => Ok(source),
        other => bail!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn configure_network_gives_the_container_its_interface_between_create_and_start() -> Result<()> {
    require_root!();
    let agent = Agent::start_in_own_netns()?;
    let root = agent.child.id();
    // The guest's virtio-net interface: a veth end with the device's MAC in the agent's namespace.
    let guest_mac = Mac::local(0x0101);
    if let Err(e) = ip_in(
        root,
        &format!("link add vg0 address {guest_mac} type veth peer name vp0"),
    ) {
        eprintln!("configure_network_gives_the_container_its_interface_between_create_and_start: skipped: needs nsenter, ip and veth support: {e}");
        return Ok(());
    }
    ip_in(root, "link set vp0 up")?;
    let mut c = agent.client()?;
    let script = "cat /sys/class/net/eth0/mtu /sys/class/net/eth0/address; \
                  ip -4 addr show dev eth0 | grep inet; ip route";
    let mut req =
        CreateContainer::from_spec("net", &spec(script), agent.rootfs().to_str().unwrap());
    req.stdio.stdin = false;
    c.create(req)?;
    let out = agent.capture("net", None)?;
    let eth0 = Interface {
        name: "eth0".into(),
        guest_mac,
        mac: "0a:58:0a:58:00:05".parse()?,
        mtu: 1400,
        addresses: vec![Address {
            ip: "10.88.0.5".parse()?,
            prefix_len: 16,
        }],
        routes: vec![Route {
            destination: None,
            gateway: Some("10.88.0.1".parse()?),
            source: None,
            scope: 0,
            metric: None,
            mtu: None,
            ipv6: false,
        }],
        neighbours: vec![],
    };
    let configure = |interfaces: Vec<Interface>| Request::ConfigureNetwork {
        container_id: "net".into(),
        interfaces,
    };
    c.call_done(configure(vec![eth0.clone()]))?;
    // The same again (a resent request) changes nothing.
    c.call_done(configure(vec![eth0.clone()]))?;
    // The same name with other settings is refused.
    let e = refused(
        &mut c,
        configure(vec![Interface {
            mtu: 1500,
            ..eth0.clone()
        }]),
    )?;
    assert_eq!(e.code, Code::AlreadyExists, "{e:?}");
    assert!(
        e.message.contains("eth0") && e.message.contains("already configured"),
        "{e:?}"
    );
    // A device the VM does not have.
    let e = refused(
        &mut c,
        configure(vec![Interface {
            name: "eth1".into(),
            guest_mac: Mac::local(0x0102),
            ..eth0.clone()
        }]),
    )?;
    assert_eq!(e.code, Code::NotFound, "{e:?}");
    assert!(
        e.message.contains("eth1") && e.message.contains("02:76:00:00:01:02"),
        "{e:?}"
    );

    c.call_done(Request::Start {
        container_id: "net".into(),
    })?;
    assert_eq!(c.wait("net", None)?, ExitStatus::Code(0));
    let (stdout, stderr) = out.join();
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert_eq!(
        lines[..2],
        ["1400", "0a:58:0a:58:00:05"],
        "{stdout}{stderr}"
    );
    assert_eq!(
        lines[2], "inet 10.88.0.5/16 brd 10.88.255.255 scope global eth0",
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("default via 10.88.0.1 dev eth0")),
        "{stdout}"
    );
    // Started: too late.
    let e = refused(&mut c, configure(vec![]))?;
    assert_eq!(e.code, Code::FailedPrecondition, "{e:?}");
    assert!(e.message.contains("has been started"), "{e:?}");
    c.call_done(Request::Delete {
        container_id: "net".into(),
    })?;

    // A container in the agent's own network namespace cannot be given interfaces.
    let shared = patch(
        &spec("true"),
        serde_json::json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}]}}),
    );
    let mut req = CreateContainer::from_spec("shared", &shared, agent.rootfs().to_str().unwrap());
    req.stdio.stdin = false;
    c.create(req)?;
    let e = refused(
        &mut c,
        Request::ConfigureNetwork {
            container_id: "shared".into(),
            interfaces: vec![eth0],
        },
    )?;
    assert_eq!(e.code, Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message.contains("`network` entry in linux.namespaces"),
        "{e:?}"
    );
    c.call_done(Request::Delete {
        container_id: "shared".into(),
    })?;
    Ok(())
}
