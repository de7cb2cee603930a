//! End-to-end tests of `vessel` with real microVMs: a BusyBox bundle (from Debian's
//! busybox-static, `tests/fixtures/mkrootfs.sh busybox`) run through the CLI, with the guest
//! kernel and agent initramfs from `VESSEL_KERNEL` / `VESSEL_INITRAMFS`.
//!
//! They need hardware-backed KVM: natively on our kvm_pvm machines they print why they skip;
//! `make test-lab` runs them inside the nested lab (docs/testing.md).

mod common;

use common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn lab_run_busybox_in_a_microvm() {
    if !can_run_guests("lab_run_busybox_in_a_microvm") {
        return;
    }
    let lab = Lab::new();
    let script = "echo hello-from-guest; \
                  grep -c virtio_mmio.device /proc/cmdline; \
                  grep -c ^processor /proc/cpuinfo; \
                  echo written-in-guest > /from-guest.txt; \
                  cat /from-host.txt; \
                  while read -r _ _ dev _ mnt _; do \
                    [ \"$mnt\" = / ] && cat /sys/class/bdi/$dev/read_ahead_kb; \
                  done < /proc/self/mountinfo; \
                  echo to-stderr >&2; \
                  exit 3";
    let bundle = lab.bundle("bundle", script);
    std::fs::write(bundle.join("rootfs/from-host.txt"), "written-on-host\n").unwrap();
    let started = Instant::now();
    let out = lab
        .cmd(&["run", "--bundle", bundle.to_str().unwrap(), "lab-run"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    eprintln!(
        "vessel run took {:?}; stderr: {}",
        started.elapsed(),
        text(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code; stdout:\n{stdout}\nconsole:\n{}",
        lab.console("lab-run")
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        ["hello-from-guest", "1", "1", "written-on-host", "1024"],
        "the workload runs in the guest kernel (virtio_mmio on its command line, 1 vCPU), its \
         root on the share with the agent's read-ahead window (KiB)"
    );
    assert_eq!(text(&out.stderr).trim(), "to-stderr");
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/from-guest.txt")).unwrap(),
        "written-in-guest\n",
        "a file written in the container lands in the host rootfs (virtio-fs)"
    );
    assert!(
        !lab.root().join("lab-run").exists(),
        "run without --keep deletes the container"
    );
    assert_eq!(
        mounts_under(lab.dir.path()),
        Vec::<String>::new(),
        "no mount left"
    );
}

#[test]
fn lab_create_start_state_kill_delete() {
    if !can_run_guests("lab_create_start_state_kill_delete") {
        return;
    }
    let lab = Lab::new();
    // The workload prints what the createContainer hook wrote into the rootfs from the host.
    let bundle = lab.bundle("bundle", "cat /hook-file; echo started; exec sleep 600");
    let hook_dir = lab.dir.path().join("hooks");
    std::fs::create_dir(&hook_dir).unwrap();
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    let save_state = |kind: &str| {
        serde_json::json!({"path": "/bin/sh",
            "args": ["sh", "-c", "cat > \"$1\"", "sh", hook_dir.join(kind)]})
    };
    config["hooks"] = serde_json::json!({
        "createRuntime": [save_state("createRuntime")],
        "createContainer": [{"path": "/bin/sh",
            "args": ["sh", "-c", "echo from-hook > \"$1/rootfs/hook-file\"", "sh", &bundle]}],
        "poststart": [save_state("poststart")],
        "poststop": [save_state("poststop")],
    });
    std::fs::write(&config_path, config.to_string()).unwrap();
    let hook_state = |kind: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(hook_dir.join(kind)).unwrap()).unwrap()
    };
    let pid_file = lab.dir.path().join("pid");
    let out_path = lab.dir.path().join("out");
    let status = lab
        .cmd(&[
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            "lab-life",
        ])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "create; console:\n{}",
        lab.console("lab-life")
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .parse()
        .expect("bare digits");
    let state = lab.state("lab-life");
    assert_eq!(state["status"], "created");
    assert_eq!(state["pid"], pid);
    let created = hook_state("createRuntime");
    assert_eq!(created["status"], "creating");
    assert_eq!(created["pid"], pid);
    assert_eq!(created["id"], "lab-life");

    assert!(lab.cmd(&["start", "lab-life"]).status().unwrap().success());
    assert_eq!(lab.state("lab-life")["status"], "running");
    assert_eq!(hook_state("poststart")["status"], "running");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&out_path).unwrap_or_default() != "from-hook\nstarted\n" {
        assert!(Instant::now() < deadline, "no output from the workload");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The share's mounts live in the monitor's own mount namespace: none on the host while the
    // container runs (so none can be left if the monitor is killed), the rootfs in the monitor's.
    assert_eq!(
        mounts_under(lab.dir.path()),
        Vec::<String>::new(),
        "the share is mounted in the host's namespace"
    );
    let monitor_mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(
        monitor_mounts.contains("/lab-life/share/rootfs "),
        "the monitor's mounts:\n{monitor_mounts}"
    );

    // Every VMM thread that handles what the guest sends runs under its seccomp filter (mode 2):
    // each vCPU, the device thread, the file server and the stdio relays (vessel_vmm::seccomp).
    // The file server also keeps only the capabilities passthrough needs: CHOWN, DAC_OVERRIDE,
    // DAC_READ_SEARCH, FOWNER, FSETID, SETGID, SETUID, MKNOD, SETFCAP, SYS_ADMIN
    // (virtio/fs/confine.rs).
    let threads = monitor_threads(pid);
    for kind in [
        "vcpu",
        "vmm-devices",
        "vessel-fs-",
        "stdout-relay",
        "stderr-relay",
    ] {
        let of_kind: Vec<_> = threads.iter().filter(|t| t.0.starts_with(kind)).collect();
        assert!(!of_kind.is_empty(), "no {kind} thread in {threads:?}");
        assert!(
            of_kind.iter().all(|t| t.1 == "2"),
            "{kind} threads not filtered: {threads:?}"
        );
    }
    let fs_caps: Vec<_> = threads
        .iter()
        .filter(|t| t.0.starts_with("vessel-fs-"))
        .collect();
    assert!(
        fs_caps.iter().all(|t| t.2 == "00000000882000df"),
        "file server capabilities: {fs_caps:?}"
    );
    // The rest of the monitor (vessel_runtime::host::capabilities): no thread holds more than
    // the monitor's set (CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER, FSETID, SETGID, SETUID,
    // NET_ADMIN, SYS_ADMIN, SYS_RESOURCE, MKNOD, SETFCAP: never SYS_PTRACE, SYS_MODULE, KILL);
    // the vCPUs, the device thread and the stdio relays hold none; the main thread and the
    // threads it started after set-up (same name) hold NET_ADMIN, SYS_ADMIN, DAC_OVERRIDE.
    const MONITOR: u64 = 0x8920_10df;
    let cap = |t: &(String, String, String)| u64::from_str_radix(&t.2, 16).unwrap();
    for t in &threads {
        assert_eq!(
            cap(t) & !MONITOR,
            0,
            "{t:?} holds more than the monitor's set"
        );
        if [
            "vcpu",
            "vmm-devices",
            "stdin-relay",
            "stdout-relay",
            "stderr-relay",
        ]
        .iter()
        .any(|k| t.0.starts_with(k))
        {
            assert_eq!(cap(t), 0, "{t:?} holds capabilities");
        }
    }
    let watch: Vec<_> = threads.iter().filter(|t| t.0 == "vm-watch").collect();
    assert!(
        watch.len() == 1 && cap(watch[0]) == 0x20_1002,
        "the VM's watch thread keeps NET_ADMIN, SYS_ADMIN, DAC_OVERRIDE: {watch:?}"
    );
    let main_name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    let after_set_up: Vec<_> = threads.iter().filter(|t| t.0 == main_name.trim()).collect();
    assert!(
        after_set_up.len() >= 3,
        "main, control and signal threads: {threads:?}"
    );
    assert!(
        after_set_up.iter().all(|t| cap(t) == 0x20_1002),
        "the monitor's threads after set-up: {after_set_up:?}"
    );
    // And under the monitor's filter of calls it never makes (vessel_vmm::seccomp::
    // confine_monitor): the main thread, the control and signal threads, vm-watch.
    assert!(
        after_set_up.iter().chain(&watch).all(|t| t.1 == "2"),
        "the monitor's threads not filtered: {threads:?}"
    );

    let denied = lab.cmd(&["delete", "lab-life"]).output().unwrap();
    assert_eq!(denied.status.code(), Some(1));
    assert!(text(&denied.stderr)
        .contains("cannot delete container lab-life that is not stopped: running"));

    assert!(lab
        .cmd(&["kill", "lab-life", "KILL"])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.state("lab-life")["status"] != "stopped" {
        assert!(
            Instant::now() < deadline,
            "container did not stop after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lab.state("lab-life")["pid"], 0);
    assert!(lab.cmd(&["delete", "lab-life"]).status().unwrap().success());
    assert!(!lab.root().join("lab-life").exists());
    let stopped = hook_state("poststop");
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(stopped.get("pid"), None);
    assert_eq!(
        mounts_under(lab.dir.path()),
        Vec::<String>::new(),
        "no mount left"
    );
    // The monitor is gone too (nothing of the VM is left running).
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.contains(") Z ")
        }
    );
}

#[test]
fn lab_readonly_root_and_single_file_bind_mount() {
    if !can_run_guests("lab_readonly_root_and_single_file_bind_mount") {
        return;
    }
    let lab = Lab::new();
    let bundle = lab.bundle(
        "bundle",
        "cat /etc/hosts; touch /new-file 2>&1; echo touch-rc=$?; \
         echo appended-in-guest >> /etc/hosts 2>&1; echo append-rc=$?",
    );
    let hosts = lab.dir.path().join("hosts");
    std::fs::write(&hosts, "10.1.2.3 written-on-host\n").unwrap();
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["root"]["readonly"] = true.into();
    config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "destination": "/etc/hosts", "type": "bind",
            "source": hosts, "options": ["rbind", "rw"]
        }));
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let out = lab
        .cmd(&["run", "--bundle", bundle.to_str().unwrap(), "lab-ro"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "10.1.2.3 written-on-host",
            "touch: /new-file: Read-only file system",
            "touch-rc=1",
            "append-rc=0"
        ],
        "root.readonly gives EROFS; a single-file bind mount shows the host file and stays writable"
    );
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        "10.1.2.3 written-on-host\nappended-in-guest\n",
        "a write through the file bind mount lands in the host file"
    );
    assert!(!bundle.join("rootfs/new-file").exists());
    assert_eq!(
        mounts_under(lab.dir.path()),
        Vec::<String>::new(),
        "no mount left"
    );
}

/// Each thread of process `pid`: its name, its `Seccomp:` mode (0 none, 2 filter) and its
/// effective capabilities (`CapEff:`, hex).
fn monitor_threads(pid: i32) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|m| m.trim().to_owned())
                .unwrap_or_default()
        };
        out.push((comm.trim().to_owned(), field("Seccomp:"), field("CapEff:")));
    }
    out.sort();
    out
}
