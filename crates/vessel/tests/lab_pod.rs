//! End-to-end test of pods (issue 19) with a real microVM, in one VM boot: containers whose
//! `linux.namespaces` name another container's `/proc/<pid>/ns/*` (as containerd's CRI, podman
//! pods and `--net=container:` write them) run in that container's VM, share its network
//! (`localhost`), UTS and PID namespaces, get their own root file system through its share, and
//! have a host process of their own that reports their exit status; ending the VM ends them
//! with 137; nothing is left afterwards.
//!
//! It needs hardware-backed KVM: natively on our kvm_pvm machines it prints why it skips;
//! `make test-lab` runs it inside the nested lab (docs/testing.md).

mod common;

use common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::wait::WaitStatus;

const LIMIT: Duration = Duration::from_secs(120);

/// Makes the bundle at `bundle` a member of the container whose monitor is `pid`: its network,
/// IPC, UTS and (with `pid_ns`) PID namespaces are `/proc/<pid>/ns/*`, as CRI writes them, and
/// it sets no hostname (it has no UTS namespace of its own).
fn join(bundle: &Path, pid: i64, pid_ns: bool) {
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut namespaces = vec![
        serde_json::json!({"type": "mount"}),
        serde_json::json!({"type": "network", "path": format!("/proc/{pid}/ns/net")}),
        serde_json::json!({"type": "ipc", "path": format!("/proc/{pid}/ns/ipc")}),
        serde_json::json!({"type": "uts", "path": format!("/proc/{pid}/ns/uts")}),
        serde_json::json!({"type": "cgroup"}),
    ];
    namespaces.push(if pid_ns {
        serde_json::json!({"type": "pid", "path": format!("/proc/{pid}/ns/pid")})
    } else {
        serde_json::json!({"type": "pid"})
    });
    config["linux"]["namespaces"] = serde_json::Value::Array(namespaces);
    config.as_object_mut().unwrap().remove("hostname");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// Creates container `id` from `bundle` with its output in `<bundle>/out`; returns the PID
/// from its pid-file.
fn create(lab: &Lab, id: &str, bundle: &Path) -> i32 {
    let out = std::fs::File::create(bundle.join("out")).unwrap();
    let pid_file = bundle.join("pid");
    let mut cmd = lab.cmd(&["create", "--bundle"]);
    cmd.arg(bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(id)
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out));
    let status = status_within(&mut cmd.spawn().unwrap(), LIMIT, "create");
    assert!(
        status.success(),
        "create {id}: {status}: {}\nconsole:\n{}",
        std::fs::read_to_string(bundle.join("out")).unwrap_or_default(),
        lab.console(id)
    );
    std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn ok(lab: &Lab, args: &[&str]) -> String {
    let out = output_within(&mut lab.cmd(args), LIMIT, &args.join(" "));
    assert!(
        out.status.success(),
        "vessel {}: {}",
        args.join(" "),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn lab_pod_members_share_the_sandbox_vm() {
    if !can_run_guests("lab_pod_members_share_the_sandbox_vm") {
        return;
    }
    subreaper();
    let lab = Lab::new();

    // The sandbox serves HTTP on its loopback only and names its host.
    let sandbox = lab.bundle(
        "sandbox",
        "mkdir -p /www && echo hello-from-the-sandbox > /www/index.html && \
         httpd -p 127.0.0.1:8080 -h /www && exec sleep 1000",
    );
    let path = sandbox.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["hostname"] = "podhost".into();
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let sandbox_pid = create(&lab, "pod", &sandbox);
    ok(&lab, &["start", "pod"]);
    let pid = i64::from(sandbox_pid);

    // A member reaches it on localhost, sees its hostname and processes, writes to its own
    // root (which the host sees in its bundle), and exits 7.
    let web = lab.bundle(
        "web",
        "for i in $(seq 50); do wget -qO- http://127.0.0.1:8080/index.html && break; \
         usleep 100000; done; echo host=$(hostname); ps -o pid,args; \
         echo member > /member-was-here; exit 7",
    );
    join(&web, pid, true);
    let web_pid = create(&lab, "web", &web);
    assert_ne!(web_pid, sandbox_pid);
    assert_eq!(lab.state("web")["pid"], web_pid);
    assert_eq!(lab.state("web")["status"], "created");
    ok(&lab, &["start", "web"]);
    match reap_within(web_pid, LIMIT, "the member's host process") {
        WaitStatus::Exited(_, code) => assert_eq!(code, 7),
        other => panic!("member ended {other:?}"),
    }
    let out = std::fs::read_to_string(web.join("out")).unwrap();
    assert!(out.contains("hello-from-the-sandbox"), "{out}");
    assert!(out.contains("host=podhost"), "{out}");
    assert!(out.contains("sleep 1000"), "the sandbox's processes: {out}");
    assert!(out.contains("httpd"), "{out}");
    assert_eq!(
        std::fs::read_to_string(web.join("rootfs/member-was-here")).unwrap(),
        "member\n"
    );
    assert_eq!(lab.state("web")["status"], "stopped");
    ok(&lab, &["delete", "web"]);
    // The sandbox runs on.
    assert_eq!(lab.state("pod")["status"], "running");

    // A second member: exec into it, kill it with SIGKILL (137), then delete.
    let worker = lab.bundle("worker", "echo ready; exec sleep 1000");
    join(&worker, pid, false);
    let worker_pid = create(&lab, "worker", &worker);
    ok(&lab, &["start", "worker"]);
    let exec = ok(
        &lab,
        &["exec", "worker", "sh", "-c", "echo exec-in-$(hostname)"],
    );
    assert_eq!(exec.trim(), "exec-in-podhost");
    let listed = ok(&lab, &["ps", "worker"]);
    assert!(listed.contains("sleep"), "{listed}");
    assert!(
        !listed.contains("httpd"),
        "only the member's processes: {listed}"
    );
    // Pause, stats and update act on the member only.
    ok(&lab, &["pause", "worker"]);
    assert_eq!(lab.state("worker")["status"], "paused");
    assert_eq!(lab.state("pod")["status"], "running");
    ok(&lab, &["resume", "worker"]);
    let stats: serde_json::Value =
        serde_json::from_str(ok(&lab, &["events", "--stats", "worker"]).trim()).unwrap();
    assert_eq!(stats["id"], "worker");
    let pids = stats["data"]["pids"]["current"].as_u64().unwrap();
    assert!(
        (1..4).contains(&pids),
        "the member's processes only: {stats}"
    );
    let refused = output_within(
        &mut lab.cmd(&["update", "--memory", "2g", "worker"]),
        LIMIT,
        "update worker",
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("512 MiB"),
        "the pod VM's size: {}",
        text(&refused.stderr)
    );
    // A member larger than the pod's VM is refused before anything is made.
    let big = lab.bundle("big", "true");
    join(&big, pid, false);
    let path = big.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["linux"]["resources"]["memory"] = serde_json::json!({"limit": 1u64 << 30});
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let refused = output_within(
        lab.cmd(&["create", "--bundle"]).arg(&big).arg("big"),
        LIMIT,
        "create big",
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr)
            .contains("linux.resources.memory.limit 1024 MiB does not fit pod pod's VM"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!lab.root().join("big").exists());
    ok(&lab, &["kill", "worker", "KILL"]);
    match reap_within(worker_pid, LIMIT, "the killed member's host process") {
        WaitStatus::Exited(_, code) => assert_eq!(code, 137),
        other => panic!("killed member ended {other:?}"),
    }
    ok(&lab, &["delete", "worker"]);

    // A member created but not started is removed by delete; one running when the sandbox's
    // VM ends ends with 137.
    let idle = lab.bundle("idle", "exec sleep 1000");
    join(&idle, pid, false);
    let idle_pid = create(&lab, "idle", &idle);
    ok(&lab, &["delete", "idle"]);
    reap_within(idle_pid, LIMIT, "the deleted member's host process");
    let orphan = lab.bundle("orphan", "exec sleep 1000");
    join(&orphan, pid, false);
    let orphan_pid = create(&lab, "orphan", &orphan);
    ok(&lab, &["start", "orphan"]);
    ok(&lab, &["delete", "--force", "pod"]);
    reap_within(sandbox_pid, LIMIT, "the sandbox's monitor");
    match reap_within(orphan_pid, LIMIT, "the orphaned member's host process") {
        WaitStatus::Exited(_, code) => assert_eq!(code, 137),
        other => panic!("orphaned member ended {other:?}"),
    }
    assert_eq!(lab.state("orphan")["status"], "stopped");

    // Joining a stopped container fails naming it.
    let late = lab.bundle("late", "true");
    join(&late, i64::from(orphan_pid), false);
    let refused = output_within(
        lab.cmd(&["create", "--bundle"]).arg(&late).arg("late"),
        LIMIT,
        "create late",
    );
    assert!(!refused.status.success());
    let message = text(&refused.stderr);
    assert!(
        message.contains("names container orphan, which is stopped"),
        "{message}"
    );
    ok(&lab, &["delete", "orphan"]);

    // Nothing is left: no process, mount or state directory.
    assert_eq!(
        processes_mentioning(&lab.root().to_string_lossy()),
        Vec::<i32>::new()
    );
    assert_eq!(mounts_under(&lab.root()), Vec::<String>::new());
    let left: Vec<_> = std::fs::read_dir(lab.root())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
