//! The lifecycle verbs: one module per runc operation, each the one library call a `vessel`
//! subcommand makes. Each checks the container's live status first and persists state
//! atomically under the container's lock (docs/design.md "State lock"). [`guest`] holds the
//! requests other processes make of a running container's guest agent (`ps`, `events`, the
//! guest half of `update`, the address `exec` dials).

pub mod create;
pub mod delete;
pub mod exec;
pub mod features;
pub mod guest;
pub mod kill;
pub mod list;
pub mod pause;
pub mod run;
pub mod spec;
pub mod start;
pub mod update;

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use vessel_error::chain;
    use vessel_protocol::Code;

    use crate::host::state::{StateStore, Status, MONITOR_SOCKET};
    use crate::monitor::control::{self, ControlError, ControlResponse};
    use crate::verbs::{kill, pause, start};

    /// A created container whose monitor (this test process, so it is alive) refuses every
    /// request as a monitor does when the guest agent answered `NotFound`.
    #[test]
    fn start_kill_and_pause_keep_the_agents_code_and_their_messages() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::new(root.path().join("r"));
        let (dir, lock) = store.create_dir("c1").unwrap();
        drop(lock);
        let me = std::process::id() as i32;
        let start = crate::host::procfs::stat(me).unwrap().start_time;
        let mut record = crate::host::state::tests::record("c1", me, start);
        record.status = Status::Created;
        store.save(&record).unwrap();
        let listener = UnixListener::bind(dir.join(MONITOR_SOCKET)).unwrap();
        let monitor = std::thread::spawn(move || {
            for _ in 0..3 {
                let (mut stream, _) = listener.accept().unwrap();
                control::serve_one(&mut stream, |_| ControlResponse::Error {
                    message: "agent refused: container c1 not found".into(),
                    code: Some(Code::NotFound),
                })
                .unwrap();
            }
        });
        let refused = |e: &ControlError| {
            matches!(
                e,
                ControlError::RefuseRequest {
                    code: Some(Code::NotFound),
                    ..
                }
            )
        };

        let e = start::start(&store, "c1").unwrap_err();
        assert!(matches!(&e, start::StartError::ReleaseWorkload(c) if refused(c)));
        assert_eq!(e.code(), Some(Code::NotFound));
        assert_eq!(
            chain(&e),
            "start container: agent refused: container c1 not found"
        );

        let e = kill::kill(&store, "c1", 9, false).unwrap_err();
        assert!(matches!(&e, kill::KillError::SendSignal { signal: 9, source } if refused(source)));
        assert_eq!(e.code(), Some(Code::NotFound));
        assert_eq!(
            chain(&e),
            "send signal 9: agent refused: container c1 not found"
        );

        let e = pause::pause(&store, "c1").unwrap_err();
        assert!(matches!(&e, pause::PauseError::Freeze { op: "pause", source } if refused(source)));
        assert_eq!(e.code(), Some(Code::NotFound));
        assert_eq!(
            chain(&e),
            "pause container: agent refused: container c1 not found"
        );
        monitor.join().unwrap();
        assert_eq!(store.load("c1").unwrap().status, Status::Created);
    }

    /// A create killed after it made the host cgroup but before its monitor was recorded leaves
    /// a directory without `state.json` and the cgroup named in `cgroup.json`: `delete --force`
    /// removes both. Needs root and cgroup v2 at /sys/fs/cgroup: the lab runs it (`lab_`).
    #[test]
    fn lab_delete_removes_the_cgroup_an_aborted_create_named() {
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        if !nix::unistd::geteuid().is_root() || !v2 {
            eprintln!(
                "lab_delete_removes_the_cgroup_an_aborted_create_named: skipped: needs root \
                 and cgroup v2 at /sys/fs/cgroup (the lab has both)"
            );
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::new(root.path().join("r"));
        let (dir, lock) = store.create_dir("c1").unwrap();
        drop(lock);
        // Made as `create` makes it, each directory written down first: then "killed".
        let given = format!("/vessel-test-aborted-{}/c1", std::process::id());
        let inner = crate::host::cgroup::inner_path(Some(&given), "c1", false).unwrap();
        let layout = crate::host::cgroup::Layout::detect().unwrap();
        let marker = dir.join(crate::host::state::CGROUP_FILE);
        let mut noted = 0;
        let mut note = |planned: &crate::host::cgroup::CgroupRecord| {
            noted += 1;
            crate::host::state::write_atomic(&marker, &serde_json::to_vec(planned).unwrap(), 0o600)
        };
        let record = crate::host::cgroup::create(
            &layout,
            &inner,
            &given,
            &crate::host::cgroup::HostLimits::default(),
            &mut note,
        )
        .unwrap();
        assert_eq!(
            noted, 2,
            "the parent and the leaf are written down: {record:?}"
        );
        let cgroup = record.paths[0].clone();
        let parent = record.created[0].clone();
        assert!(cgroup.is_dir() && cgroup.starts_with(&parent), "{record:?}");
        crate::verbs::delete::delete(&store, "c1", true).unwrap();
        let left = [&cgroup, &parent].map(|d| d.exists());
        let _ = std::fs::remove_dir(&cgroup);
        let _ = std::fs::remove_dir(&parent);
        assert_eq!(left, [false, false], "{record:?} left");
        assert!(!dir.exists(), "state directory left");
    }

    /// A monitor that drops the connection of a `kill` as it exits (the guest ended under it):
    /// the container is stopped, with runc's error (none with `--all`); a monitor that drops it
    /// and lives on is a failure to signal.
    #[test]
    fn kill_of_a_monitor_that_exits_during_the_call_finds_the_container_stopped() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::new(root.path().join("r"));
        let (dir, lock) = store.create_dir("c1").unwrap();
        drop(lock);
        let listener = UnixListener::bind(dir.join(MONITOR_SOCKET)).unwrap();
        let drops = std::thread::spawn(move || {
            for _ in 0..3 {
                drop(listener.accept().unwrap());
            }
        });
        let save = |pid: i32| {
            let start = crate::host::procfs::stat(pid).unwrap().start_time;
            let mut record = crate::host::state::tests::record("c1", pid, start);
            record.status = Status::Running;
            store.save(&record).unwrap();
        };

        // The "monitor" exits 0.3 s after the call broke: within the grace.
        let mut dying = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        save(dying.id() as i32);
        assert!(matches!(
            kill::kill(&store, "c1", 9, false),
            Err(kill::KillError::SignalStopped)
        ));
        dying.wait().unwrap();
        let mut dying = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        save(dying.id() as i32);
        kill::kill(&store, "c1", 9, true).unwrap();
        dying.wait().unwrap();

        // This test process as the monitor: alive past the grace, so the broken call is an error.
        save(std::process::id() as i32);
        let e = kill::kill(&store, "c1", 15, false).unwrap_err();
        assert!(
            matches!(&e, kill::KillError::SendSignal { signal: 15, source } if source.code().is_none()),
            "{e:?}"
        );
        drops.join().unwrap();
    }
}
