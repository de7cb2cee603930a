//! End-to-end lifecycle tests at scale and through the waiter: 10 microVM containers created,
//! started and deleted in parallel with nothing left behind (no monitor, mount, host cgroup or
//! state directory), and the workload's exit status reaching the process that waits on the
//! pid-file PID (3 from `exit 3`, 137 from SIGKILL), as containerd's shim and conmon wait.
//!
//! Natively they print why they skip; `make test-lab` runs them in the nested lab. This binary
//! becomes a child subreaper, so it is kept apart from the other lab tests.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Ten at once: with 20 the lab itself (QEMU TCG emulating nested SVM on 2 cores) sometimes
/// stopped taking timer interrupts and every guest stalled (docs/performance.md, "The lab under
/// load"); ten still exercise the state lock, cgroups and teardown concurrently.
const PARALLEL: usize = 10;

/// Sets `annotations` on the bundle's config.json (small guests: the lab has 6 GiB for all of them).
fn annotate(bundle: &Path, pairs: &[(&str, &str)]) {
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (k, v) in pairs {
        config["annotations"][*k] = (*v).into();
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// Gone, or a zombie (exited, not reaped yet).
fn is_gone(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.contains(") Z ")
}

/// The host cgroup directories recorded in the container's state.json.
fn cgroup_dirs(lab: &Lab, id: &str) -> Vec<PathBuf> {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.root().join(id).join("state.json")).unwrap())
            .unwrap();
    record["cgroup"]["paths"]
        .as_array()
        .expect("a host cgroup is recorded")
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect()
}

/// What one container of the parallel run saw.
struct Seen {
    pid: i32,
    cgroups: Vec<PathBuf>,
}

/// create (pid-file), state = created with that pid, monitor in its cgroup, start, running,
/// delete --force; panics with the step and its stderr on failure.
fn one_lifecycle(lab: &Lab, bundle: &Path, id: &str, global: &[&str], cgroup: &str) -> Seen {
    let pid_file = lab.dir.path().join(format!("{id}.pid"));
    let err = lab.dir.path().join(format!("{id}.err"));
    let attempt = || {
        let mut create = lab.cmd(global);
        // 10 guests booting at once under the lab's emulation take minutes, not seconds.
        create.env("VESSEL_AGENT_READY_TIMEOUT", "600");
        create.args([
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            id,
        ]);
        create
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap()
    };
    let mut status = attempt();
    let first = std::fs::read_to_string(&err).unwrap_or_default();
    let lab_failure =
        first.contains("guest triple fault") || first.contains("did not answer within");
    if !status.success() && lab_failure {
        // Seen in CI with 20 guests booting at once under the lab's emulated nested SVM: one
        // triple-faulted in early boot, or stalled with the lab host (docs/performance.md, "The
        // lab under load"). The failed create must have cleaned up (checked below with
        // everything else); say so and try that one once more.
        eprintln!("create {id}: {first}: retrying once");
        assert!(
            !lab.root().join(id).exists(),
            "{id}: the failed create left its state dir"
        );
        status = attempt();
    }
    assert!(
        status.success(),
        "create {id}: {}\nconsole:\n{}",
        std::fs::read_to_string(&err).unwrap_or_default(),
        lab.console(id)
    );
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let state = lab.state(id);
    assert_eq!(state["status"], "created", "{id}");
    assert_eq!(state["pid"], pid, "{id}");
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        own.lines().all(|l| l.ends_with(cgroup)),
        "{id}: monitor not in {cgroup}: {own}"
    );
    let cgroups = cgroup_dirs(lab, id);
    assert!(cgroups.iter().all(|d| d.is_dir()), "{id}: {cgroups:?}");
    let start = lab.cmd(&["start", id]).output().unwrap();
    assert!(
        start.status.success(),
        "start {id}: {}",
        text(&start.stderr)
    );
    assert_eq!(lab.state(id)["status"], "running", "{id}");
    let delete = lab.cmd(&["delete", "--force", id]).output().unwrap();
    assert!(
        delete.status.success(),
        "delete {id}: {}",
        text(&delete.stderr)
    );
    Seen { pid, cgroups }
}

/// Reaps every exited child (this process is a subreaper for the monitors).
fn reap_all() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

#[test]
fn lab_ten_containers_in_parallel_leave_nothing_behind() {
    if !can_run_guests("lab_ten_containers_in_parallel_leave_nothing_behind") {
        return;
    }
    let lab = Lab::new();
    let bundle = lab.bundle("bundle", "exec sleep 600");
    annotate(&bundle, &[("io.vessel.memory_mib", "128")]);
    // One of them through the systemd cgroup form, which Vessel lays out in cgroupfs itself.
    let sd_bundle = lab.bundle("sd-bundle", "exec sleep 600");
    annotate(&sd_bundle, &[("io.vessel.memory_mib", "128")]);
    let path = sd_bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["linux"]["cgroupsPath"] = "vessel-lab.slice:vessel:par-sd".into();
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

    let started = Instant::now();
    let seen: Vec<Seen> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..PARALLEL)
            .map(|i| {
                let (lab, bundle, sd_bundle) = (&lab, &bundle, &sd_bundle);
                s.spawn(move || {
                    if i == 0 {
                        one_lifecycle(
                            lab,
                            sd_bundle,
                            "par-sd",
                            &["--systemd-cgroup"],
                            "/vessel.slice/vessel-lab.slice/vessel-par-sd.scope",
                        )
                    } else {
                        let id = format!("par-{i}");
                        let cgroup = format!("/{id}");
                        one_lifecycle(lab, bundle, &id, &[], &cgroup)
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!(
        "{PARALLEL} containers created, started and deleted in parallel in {:?}",
        started.elapsed()
    );
    for s in &seen {
        assert!(is_gone(s.pid), "monitor {} still running", s.pid);
        for dir in &s.cgroups {
            assert!(!dir.exists(), "cgroup {dir:?} left behind");
        }
    }
    assert!(
        !Path::new("/sys/fs/cgroup/vessel.slice").exists(),
        "the slices Vessel made for the systemd form are gone too"
    );
    assert_eq!(
        std::fs::read_dir(lab.root()).unwrap().count(),
        0,
        "no state directory left"
    );
    assert_eq!(
        mounts_under(lab.dir.path()),
        Vec::<String>::new(),
        "no mount left"
    );
    reap_all();
}

#[test]
fn lab_exit_status_reaches_the_waiter() {
    if !can_run_guests("lab_exit_status_reaches_the_waiter") {
        return;
    }
    // Like containerd's shim and conmon: the monitor (pid-file PID) is re-parented to us.
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
    let lab = Lab::new();
    let cases = [
        ("exit3", "exit 3", None, 3),
        ("killed", "exec sleep 600", Some("KILL"), 137),
    ];
    for (id, script, signal, expected) in cases {
        let bundle = lab.bundle(id, script);
        annotate(&bundle, &[("io.vessel.memory_mib", "128")]);
        let pid_file = lab.dir.path().join(format!("{id}.pid"));
        let status = lab
            .cmd(&[
                "create",
                "--bundle",
                bundle.to_str().unwrap(),
                "--pid-file",
                pid_file.to_str().unwrap(),
                id,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "create {id}: {}", lab.console(id));
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
        assert!(lab.cmd(&["start", id]).status().unwrap().success());
        if let Some(sig) = signal {
            assert!(lab.cmd(&["kill", id, sig]).status().unwrap().success());
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        let code = loop {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).unwrap() {
                WaitStatus::Exited(_, code) => break code,
                WaitStatus::Signaled(_, sig, _) => break 128 + sig as i32,
                _ => {
                    assert!(Instant::now() < deadline, "{id}: monitor did not exit");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        assert_eq!(
            code, expected,
            "{id}: the waiter sees the workload's status"
        );
        assert_eq!(lab.state(id)["status"], "stopped");
        assert!(lab.cmd(&["delete", id]).status().unwrap().success());
        assert!(!lab.root().join(id).exists());
    }
    assert_eq!(
        mounts_under(lab.dir.path()),
        Vec::<String>::new(),
        "no mount left"
    );
}
