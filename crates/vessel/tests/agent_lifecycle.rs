//! The runc lifecycle through the real protocol path: `vessel` (monitor + `AgentSandbox`) talking
//! to a real `vessel-agent serve` on Unix sockets (`VESSEL_TEST_SANDBOX=agent`), which sets the
//! container up in namespaces on this host. Only the VM and vsock are missing compared with the
//! microVM path.
//!
//! Skips, saying why, without root (the agent mounts and creates namespaces), without
//! `/bin/busybox` (the rootfs), or without a built `vessel-agent` next to `vessel`
//! (`cargo build -p vessel-agent` with the same target dir).

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
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(agent_binary())
            .arg("serve")
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
                                     {"type": "ipc"}]}
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
        eprintln!("skipped: {reason}");
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
