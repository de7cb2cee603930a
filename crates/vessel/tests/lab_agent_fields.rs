//! The guest agent's container setup through the real guest kernel and vsock (issue 4): the
//! checks of `guest-agent/tests/native.rs`, field by field with the exact values, but through
//! `vessel` in real microVMs on the BusyBox bundle. Boots are few (each costs seconds under the
//! lab's emulation), so one container prints every field as `key=value` lines:
//!
//! 1. `lab_agent_fields_in_a_microvm`: one container for hostname, domainname, ids, umask, cwd,
//!    env, rlimits, capabilities, noNewPrivileges, seccomp errno, masked and read-only paths,
//!    mount options, sysctl, oomScoreAdj, ioPriority, scheduler, personality, cgroup limits and
//!    namespaces; then the VM powers off on its own when the workload exits (the console shows
//!    the agent's orderly shutdown) and the monitor is gone within a bound.
//! 2. `lab_agent_protocol_bad_input_bench_and_guest_loss`: one running container whose agent the
//!    test also drives directly over the VM's vsock socket: specs that cannot be applied are
//!    refused naming the field and leave nothing behind; the agent's own time from a request to
//!    the workload's `execve` is measured (and printed as `BENCH` records for `make bench`,
//!    against the same agent in `serve` mode on the lab host); last, a container reboots the
//!    guest under the host, which must report the loss clearly and never hang.
//! 3. `lab_agent_missing_executable_refused_by_create`: `vessel create` exits 1 with runc's
//!    text and leaves no state directory, monitor or mount. (An unknown capability name is
//!    dropped with runc's warning before any VM boots: `bundle.rs` and `cli.rs` test that.)
//!
//! They need hardware-backed KVM: natively they print why they skip; `make test-lab` runs them.

mod common;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use vessel_protocol::{
    Client, ClientError, Code, CreateContainer, ExecProcess, ExitStatus, Request, Response,
    StdioConfig,
};
use vessel_runtime::sandbox::agent::AgentConnector;
use vessel_runtime::verbs::guest::VsockUds;

/// Upper bound for the monitor (and its VM) to end after `start` returns: the fields script
/// runs about forty BusyBox commands, each a fork and exec in a nested guest under TCG.
const MONITOR_GONE_WITHIN: Duration = Duration::from_secs(90);

fn patch(config: &Path, patch: serde_json::Value) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(config).unwrap()).unwrap();
    merge(&mut v, patch);
    std::fs::write(config, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
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

const FIELDS_SCRIPT: &str = r#"
echo "hostname=$(hostname)"
echo "domainname=$(cat /proc/sys/kernel/domainname)"
echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "groups=$(id -G)"
echo "umask=$(umask)"
echo "cwd=$(pwd)"
echo "foo=$FOO"
echo "nofile=$(ulimit -n)"
echo "nofile_hard=$(ulimit -Hn)"
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status | sed 's/:\t/=/'
echo "mkdir=$(mkdir /tmp/d 2>&1)"
touch /tmp/f && echo "touch_tmp=ok"
echo "secret_bytes=$(($(cat /etc/secret | wc -c)))"
echo "secretdir_entries=$(($(ls /secretdir | wc -l)))"
echo "data=$(touch /data/f 2>&1)"
echo "proc_sys=$( (echo x > /proc/sys/kernel/hostname) 2>&1 | grep -o 'Read-only file system')"
echo "bind_file=$(cat /bind/file)"
echo "bind_write=$(touch /bind/x 2>&1)"
awk '$5 == "/tmp" { print "tmp_opts=" $6; print "tmp_super=" $NF }
     $5 == "/bind" { print "bind_opts=" $6 }' /proc/self/mountinfo
echo "tmp_mode=$(stat -c %a /tmp)"
echo "ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)"
echo "msgmnb=$(cat /proc/sys/kernel/msgmnb)"
echo "oom_score_adj=$(cat /proc/self/oom_score_adj)"
echo "ionice=$(ionice -p $$)"
# Fields 19 and 41 of /proc/<pid>/stat: nice and scheduling policy.
echo "sched=$(cut -d' ' -f19,41 /proc/$$/stat)"
echo "personality=$(cat /proc/$$/personality)"
echo "cgroup=$(cat /proc/self/cgroup)"
for f in memory.max pids.max cpu.max cpu.weight; do echo "$f=$(cat /sys/fs/cgroup/$f)"; done
echo "pid=$$"
# sit0 is the kernel's fallback tunnel, made in every network namespace (IPv6 SIT built in).
echo "netdevs=$(ls /sys/class/net | grep -vx sit0)"
"#;

#[test]
fn lab_agent_fields_in_a_microvm() {
    if !can_run_guests("lab_agent_fields_in_a_microvm") {
        return;
    }
    let lab = Lab::new();
    let bundle = lab.bundle("bundle", FIELDS_SCRIPT);
    let rootfs = bundle.join("rootfs");
    std::fs::write(rootfs.join("etc/secret"), "s3cret\n").unwrap();
    std::fs::create_dir_all(rootfs.join("secretdir")).unwrap();
    std::fs::write(rootfs.join("secretdir/file"), "hidden\n").unwrap();
    std::fs::create_dir_all(rootfs.join("data")).unwrap();
    // Writable by anyone: only the read-only mount may refuse the write.
    Command::new("chmod")
        .args(["0777"])
        .arg(rootfs.join("data"))
        .status()
        .unwrap();
    let bind_src = lab.dir.path().join("bind-src");
    std::fs::create_dir_all(&bind_src).unwrap();
    std::fs::write(bind_src.join("file"), "from-host\n").unwrap();
    let config = bundle.join("config.json");
    patch(
        &config,
        serde_json::json!({
            "hostname": "lab-agent",
            "domainname": "lab.example",
            "process": {
                "user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 23},
                "cwd": "/work/dir",
                "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "FOO=bar baz"],
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1234, "hard": 2048}],
                "noNewPrivileges": true,
                "oomScoreAdj": 123,
                "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 5},
                "scheduler": {"policy": "SCHED_BATCH", "nice": 5},
                "capabilities": {
                    "bounding": ["CAP_KILL", "CAP_CHOWN"],
                    "effective": ["CAP_KILL"],
                    "permitted": ["CAP_KILL", "CAP_CHOWN"],
                    "inheritable": ["CAP_KILL"],
                    "ambient": ["CAP_KILL"]
                }
            },
            "linux": {
                "personality": {"domain": "LINUX32"},
                "sysctl": {"net.ipv4.ip_forward": "1", "kernel.msgmnb": "32768"},
                "maskedPaths": ["/proc/kcore", "/etc/secret", "/secretdir"],
                "readonlyPaths": ["/proc/sys", "/data"],
                "resources": {
                    "memory": {"limit": 67108864},
                    "pids": {"limit": 64},
                    "cpu": {"shares": 512, "quota": 50000, "period": 100000}
                },
                "seccomp": {
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                  "errnoRet": 123}]
                }
            }
        }),
    );
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    let mounts = v["mounts"].as_array_mut().unwrap();
    mounts.push(
        serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "size=1m", "mode=1733"]}),
    );
    mounts.push(
        serde_json::json!({"destination": "/bind", "type": "bind", "source": bind_src,
        "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}),
    );
    std::fs::write(&config, serde_json::to_vec_pretty(&v).unwrap()).unwrap();

    let id = "lab-fields";
    let out_path = lab.dir.path().join("out");
    let err_path = lab.dir.path().join("err");
    let pid_file = lab.dir.path().join("pid");
    let created = lab
        .cmd(&[
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            id,
        ])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .unwrap();
    assert!(
        created.success(),
        "create: {}\nconsole:\n{}",
        std::fs::read_to_string(&err_path).unwrap_or_default(),
        lab.console(id)
    );
    let monitor: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert!(lab.cmd(&["start", id]).status().unwrap().success());

    // The workload exits; the agent is told to power off and the monitor ends with the VM.
    let gone = gone_within(monitor, MONITOR_GONE_WITHIN);
    let console = lab.console(id);
    assert!(
        gone.is_some(),
        "the monitor {monitor} still runs {MONITOR_GONE_WITHIN:?} after the workload; console:\n{console}"
    );
    eprintln!("monitor gone {:?} after start returned", gone.unwrap());
    wait_stopped(&lab, id, Duration::from_secs(5));
    assert!(
        console.contains("vessel-agent: INFO: syncing file systems and powering off"),
        "the console shows the agent's orderly power-off:\n{console}"
    );
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    let got: Vec<(&str, &str)> = stdout
        .lines()
        .map(|l| l.split_once('=').unwrap_or((l, "<no =>")))
        .collect();
    let expected: Vec<(&str, &str)> = vec![
        ("hostname", "lab-agent"),
        ("domainname", "lab.example"),
        ("uid", "1000"),
        ("gid", "1000"),
        ("groups", "1000 10 20"),
        ("umask", "0027"),
        ("cwd", "/work/dir"),
        ("foo", "bar baz"),
        ("nofile", "1234"),
        ("nofile_hard", "2048"),
        ("CapInh", "0000000000000020"),
        ("CapPrm", "0000000000000020"),
        ("CapEff", "0000000000000020"),
        ("CapBnd", "0000000000000021"),
        ("CapAmb", "0000000000000020"),
        ("NoNewPrivs", "1"),
        // errno 123 is ENOMEDIUM: only the seccomp rule can give it.
        (
            "mkdir",
            "mkdir: can't create directory '/tmp/d': No medium found",
        ),
        ("touch_tmp", "ok"),
        ("secret_bytes", "0"),
        ("secretdir_entries", "0"),
        ("data", "touch: /data/f: Read-only file system"),
        ("proc_sys", "Read-only file system"),
        ("bind_file", "from-host"),
        ("bind_write", "touch: /bind/x: Read-only file system"),
        ("tmp_opts", "rw,nosuid,nodev,relatime"),
        // Not tmpfs's default 1777 (which it would not show), and still writable by uid 1000.
        ("tmp_super", "rw,size=1024k,mode=1733"),
        ("bind_opts", "ro,nosuid,nodev,noexec,relatime"),
        ("tmp_mode", "1733"),
        ("ip_forward", "1"),
        ("msgmnb", "32768"),
        ("oom_score_adj", "123"),
        ("ionice", "best-effort: prio 5"),
        // SCHED_BATCH is policy 3.
        ("sched", "5 3"),
        // PER_LINUX32.
        ("personality", "00000008"),
        ("cgroup", "0::/"),
        ("memory.max", "67108864"),
        ("pids.max", "64"),
        ("cpu.max", "50000 100000"),
        // runc: weight = 1 + ((shares - 2) * 9999) / 262142.
        ("cpu.weight", "20"),
        ("pid", "1"),
        ("netdevs", "lo"),
    ];
    assert_eq!(
        got, expected,
        "fields seen by the workload\nstderr:\n{stderr}\nconsole:\n{console}"
    );
    assert!(lab.cmd(&["delete", id]).status().unwrap().success());
    assert!(!lab.root().join(id).exists());
    assert_eq!(mounts_under(lab.dir.path()), Vec::<String>::new());
}

/// A control connection to the agent of container `id`, through its VM's vsock socket.
fn agent(lab: &Lab, id: &str) -> VsockUds {
    VsockUds {
        path: lab.root().join(id).join("vsock.sock"),
    }
}

/// Bound for any one answer of the agent: a lost guest must fail the test, not hang it.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

fn client(c: &impl AgentConnector) -> Client<UnixStream> {
    let stream = c.connect(vessel_protocol::CONTROL_PORT).unwrap();
    stream.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    stream.set_write_timeout(Some(ANSWER_WITHIN)).unwrap();
    Client::handshake(stream).unwrap()
}

/// A minimal spec for containers the test creates straight through the agent.
fn raw_spec(args: &[&str], patch_with: serde_json::Value) -> oci_spec::runtime::Spec {
    let mut v = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {
            "args": args,
            "cwd": "/",
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "user": {"uid": 0, "gid": 0}
        },
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
    });
    merge(&mut v, patch_with);
    serde_json::from_value(v).unwrap()
}

fn request(id: &str, spec: &oci_spec::runtime::Spec, rootfs: &str) -> CreateContainer {
    let mut req = CreateContainer::from_spec(id, spec, rootfs);
    req.stdio = StdioConfig {
        stdin: false,
        stdout: false,
        stderr: false,
    };
    req
}

fn refused(c: &mut Client<UnixStream>, req: CreateContainer) -> vessel_protocol::RemoteError {
    let id = req.id.clone();
    match c.create(req) {
        Err(ClientError::Refuse { source, .. }) => source,
        other => panic!("create {id}: expected a refusal, got {other:?}"),
    }
}

fn timings(c: &mut Client<UnixStream>, id: &str, exec: Option<&str>) -> u64 {
    match c
        .call(Request::Timings {
            container_id: id.into(),
            exec_id: exec.map(str::to_owned),
        })
        .unwrap()
    {
        Response::Timings(t) => {
            assert!(t.setup_us > 0 && t.release_us > 0, "{t:?}");
            // The init's two requests add up; an exec's one request also spans the bookkeeping
            // between its setup and its release.
            match exec {
                None => assert_eq!(t.request_to_exec_us, t.setup_us + t.release_us, "{t:?}"),
                Some(_) => assert!(t.request_to_exec_us >= t.setup_us + t.release_us, "{t:?}"),
            }
            t.request_to_exec_us
        }
        other => panic!("timings: {other:?}"),
    }
}

/// One bench sample on `connector`'s agent: the agent's time from `create_container` to the
/// workload's `execve` for a new container running `true`, and from `exec` to its `execve` in
/// container `running`; prints `BENCH` records for side `side`.
fn bench_sample(connector: &impl AgentConnector, rootfs: &str, running: &str, side: &str, n: u32) {
    let mut c = client(connector);
    let id = format!("bench-{n}");
    c.create(request(
        &id,
        &raw_spec(&["/bin/true"], serde_json::json!({})),
        rootfs,
    ))
    .unwrap();
    c.call_done(Request::Start {
        container_id: id.clone(),
    })
    .unwrap();
    let create_us = timings(&mut c, &id, None);
    assert_eq!(c.wait(&id, None).unwrap(), ExitStatus::Code(0));
    c.call_done(Request::Delete {
        container_id: id.clone(),
    })
    .unwrap();
    let exec_id = format!("x{n}");
    let mut process: oci_spec::runtime::Process =
        serde_json::from_value(serde_json::json!({"args": ["/bin/true"], "cwd": "/",
            "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}))
        .unwrap();
    process.set_terminal(Some(false));
    let t0 = Instant::now();
    c.exec(ExecProcess {
        container_id: running.into(),
        exec_id: exec_id.clone(),
        process,
        stdio: StdioConfig {
            stdin: false,
            stdout: false,
            stderr: false,
        },
    })
    .unwrap();
    let rtt = t0.elapsed();
    let exec_us = timings(&mut c, running, Some(&exec_id));
    assert_eq!(
        c.wait(running, Some(&exec_id)).unwrap(),
        ExitStatus::Code(0)
    );
    println!("BENCH agent_create_exec_us {side} {create_us}");
    println!("BENCH agent_exec_us {side} {exec_us}");
    println!("BENCH agent_exec_rtt_us {side} {}", rtt.as_micros());
}

/// The agent on this (lab) host in `serve` mode on Unix sockets: the bench's peer.
struct NativeAgent {
    child: std::process::Child,
    dir: tempfile::TempDir,
    cgroup: PathBuf,
}

impl Drop for NativeAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

impl AgentConnector for NativeAgent {
    fn connect(&self, port: u32) -> std::io::Result<UnixStream> {
        let sock = if port == vessel_protocol::CONTROL_PORT {
            "control.sock"
        } else {
            "stdio.sock"
        };
        UnixStream::connect(self.dir.path().join(sock))
    }

    fn guest_rootfs(&self, _id: &str, host_rootfs: &Path) -> String {
        host_rootfs.to_string_lossy().into_owned()
    }
}

/// The static agent `make artefacts` builds, if present.
fn agent_binary() -> Option<PathBuf> {
    let path = std::env::var_os("VESSEL_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/x86_64-unknown-linux-gnu/release/vessel-agent")
        });
    path.exists().then_some(path)
}

fn native_agent(bin: &Path) -> NativeAgent {
    let dir = tempfile::tempdir().unwrap();
    let cgroup = PathBuf::from(format!(
        "/sys/fs/cgroup/vessel-bench-{}",
        std::process::id()
    ));
    let child = Command::new(bin)
        .arg("serve")
        .arg("--control")
        .arg(dir.path().join("control.sock"))
        .arg("--stdio")
        .arg(dir.path().join("stdio.sock"))
        .arg("--cgroup-root")
        .arg(&cgroup)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let agent = NativeAgent { child, dir, cgroup };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.dir.path().join("stdio.sock").exists() {
        assert!(Instant::now() < deadline, "native agent did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    agent
}

#[test]
fn lab_agent_protocol_bad_input_bench_and_guest_loss() {
    if !can_run_guests("lab_agent_protocol_bad_input_bench_and_guest_loss") {
        return;
    }
    let lab = Lab::new();
    let bundle = lab.bundle("bundle", "exec sleep 100000");
    std::fs::write(bundle.join("rootfs/notadir"), "").unwrap();
    let id = "lab-agent";
    let log = lab.dir.path().join("vessel.log");
    // The workload keeps its stdio open as long as it runs: a file, not a pipe to wait on.
    let run_err = lab.dir.path().join("run.err");
    let run = lab
        .cmd(&["--log", log.to_str().unwrap()])
        .args(["run", "-d", "--bundle", bundle.to_str().unwrap(), id])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&run_err).unwrap())
        .status()
        .unwrap();
    assert!(
        run.success(),
        "run -d: {}\nconsole:\n{}",
        std::fs::read_to_string(&run_err).unwrap_or_default(),
        lab.console(id)
    );
    let monitor = lab.state(id)["pid"].as_i64().unwrap() as i32;
    let vsock = agent(&lab, id);
    let rootfs = format!(
        "{}/{}",
        vessel_runtime::sandbox::share::GUEST_MOUNT,
        vessel_runtime::sandbox::share::ROOTFS_ENTRY
    );
    let mut c = client(&vsock);

    // Bad input, refused by the guest's agent naming the field, with nothing left behind: the
    // same id is free again and a good container under it runs.
    let e = refused(
        &mut c,
        request(
            "bad",
            &raw_spec(&["no-such-tool"], serde_json::json!({})),
            &rootfs,
        ),
    );
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(
        e.message,
        r#"exec: "no-such-tool": executable file not found in $PATH"#
    );
    let e = refused(
        &mut c,
        request(
            "bad",
            &raw_spec(
                &["/bin/true"],
                serde_json::json!({"process": {"cwd": "/notadir"}}),
            ),
            &rootfs,
        ),
    );
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(e.message, "process.cwd: /notadir is not a directory");
    let e = refused(
        &mut c,
        request(
            "bad",
            &raw_spec(
                &["/bin/true"],
                serde_json::json!({"mounts": [
                    {"destination": "/proc", "type": "proc", "source": "proc"},
                    {"destination": "/x", "type": "nosuchfs", "source": "none"}]}),
            ),
            &rootfs,
        ),
    );
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(e.message, "mounts[1] (/x)");
    assert!(e.chain()[2].contains("No such device"), "{:?}", e.chain());
    match c.call(Request::Ps {
        container_id: "bad".into(),
    }) {
        Err(ClientError::Refuse { source, .. }) => assert_eq!(source.code, Code::NotFound),
        other => panic!("ps of a refused container: {other:?}"),
    }
    c.create(request(
        "bad",
        &raw_spec(&["/bin/true"], serde_json::json!({})),
        &rootfs,
    ))
    .expect("the refused id is free again");
    c.call_done(Request::Delete {
        container_id: "bad".into(),
    })
    .unwrap();

    // The bench: in the guest, then the same agent natively on the lab host.
    let runs: u32 = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for n in 0..runs {
        bench_sample(&vsock, &rootfs, id, "vessel", n);
    }
    match agent_binary() {
        Some(bin) => {
            let native = native_agent(&bin);
            let native_rootfs = bundle.join("rootfs");
            let mut nc = client(&native);
            nc.create(request(
                "native-sleeper",
                &raw_spec(&["sleep", "100000"], serde_json::json!({})),
                native_rootfs.to_str().unwrap(),
            ))
            .unwrap();
            nc.call_done(Request::Start {
                container_id: "native-sleeper".into(),
            })
            .unwrap();
            for n in 0..runs {
                bench_sample(
                    &native,
                    native_rootfs.to_str().unwrap(),
                    "native-sleeper",
                    "native",
                    n,
                );
            }
            nc.call_done(Request::Delete {
                container_id: "native-sleeper".into(),
            })
            .unwrap();
        }
        None => eprintln!("bench: no static agent at target/x86_64-unknown-linux-gnu/release (make agent): native side skipped"),
    }

    // The guest goes away under the host. An agent that dies panics the guest kernel ("Attempted
    // to kill init"), and `panic=-1` resets the VM at once; a container that shares the agent's
    // PID namespace and holds CAP_SYS_BOOT takes the same path with `reboot -f`.
    c.create(request(
        "boom",
        &raw_spec(
            &["/bin/busybox", "reboot", "-f"],
            serde_json::json!({
                "linux": {"namespaces": [{"type": "mount"}]},
                "process": {"capabilities": {
                    "bounding": ["CAP_SYS_BOOT"], "effective": ["CAP_SYS_BOOT"],
                    "permitted": ["CAP_SYS_BOOT"]}}
            }),
        ),
        &rootfs,
    ))
    .unwrap();
    let t0 = Instant::now();
    c.call_done(Request::Start {
        container_id: "boom".into(),
    })
    .unwrap();
    let gone = gone_within(monitor, Duration::from_secs(30));
    let console = lab.console(id);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        gone.is_some(),
        "the monitor hangs after the guest ended; console:\n{console}\nlog:\n{logged}"
    );
    eprintln!("monitor gone {:?} after the guest reset", t0.elapsed());
    wait_stopped(&lab, id, Duration::from_secs(5));
    assert!(
        logged.contains("the microVM ended under the container (guest shut down (i8042 reset))"),
        "the host reports the loss clearly:\n{logged}"
    );
    // Nothing waits on the dead guest: kill and exec fail at once, delete cleans up.
    let t1 = Instant::now();
    let kill = lab.cmd(&["kill", id, "KILL"]).output().unwrap();
    assert!(!kill.status.success());
    let exec = lab.cmd(&["exec", id, "true"]).output().unwrap();
    assert!(!exec.status.success());
    assert!(t1.elapsed() < Duration::from_secs(10), "{:?}", t1.elapsed());
    assert!(lab.cmd(&["delete", id]).status().unwrap().success());
    assert!(!lab.root().join(id).exists());
    assert_eq!(mounts_under(lab.dir.path()), Vec::<String>::new());
}

#[test]
fn lab_agent_missing_executable_refused_by_create() {
    if !can_run_guests("lab_agent_missing_executable_refused_by_create") {
        return;
    }
    let lab = Lab::new();
    let bundle = lab.bundle("bundle", "true");
    let root = lab.root();
    let config = bundle.join("config.json");
    patch(
        &config,
        serde_json::json!({"process": {"args": ["no-such-tool"]}}),
    );
    let t0 = Instant::now();
    let out = lab
        .cmd(&["create", "--bundle", bundle.to_str().unwrap(), "lab-nx"])
        .output()
        .unwrap();
    eprintln!("refused create took {:?}", t0.elapsed());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    // The logrus text line quotes its message, as runc's does; runc's words, no protocol
    // internals (`agent refused create_container`).
    assert!(
        err.contains(
            r#"msg="unable to start container process: exec: \"no-such-tool\": executable file not found in $PATH""#
        ),
        "{err}"
    );
    assert!(!root.join("lab-nx").exists(), "no state directory left");
    // A monitor names itself `vessel-monitor <id>` (crate::proctitle), other vessel processes
    // keep the --root of their command line.
    for needle in [root.to_str().unwrap(), "vessel-monitor\0lab-nx\0"] {
        assert_eq!(
            processes_mentioning(needle),
            Vec::<i32>::new(),
            "no monitor left"
        );
    }
    assert_eq!(
        mounts_under(lab.dir.path()),
        Vec::<String>::new(),
        "no share mount left"
    );
}
