//! The state store: one directory per container under `--root`, holding `state.json` (what
//! later commands need, recorded at create time) and the monitor's control socket.
//!
//! Layout (runc libcontainer/factory_linux.go): `<root>/` is 0700, `<root>/<id>/` is 0711.
//! `state.json` is Vessel's own format; callers read state only through `state` and `list`.
//! The status is never trusted from disk alone: a container is `stopped` as soon as its monitor
//! (the pid-file process) is gone, a zombie, or a different process with the same PID (runc
//! container_linux.go `refreshState`).

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::FlockArg;
use serde::{Deserialize, Serialize};

use crate::{host::id, host::procfs};

/// Name of the record inside a container directory.
pub const STATE_FILE: &str = "state.json";
/// Name of the monitor's control socket inside a container directory.
pub const MONITOR_SOCKET: &str = "monitor.sock";
/// Unix socket inside a container directory where other processes reach guest vsock ports
/// (Firecracker's `CONNECT <port>` convention), used by `vessel exec`.
pub const VSOCK_SOCKET: &str = "vsock.sock";
/// File inside a microVM container's directory holding its init's PID in the guest, which the
/// other containers of its pod join namespaces of (`crate::sandbox::pod`).
pub const GUEST_INIT_PID: &str = "guest-init.pid";

/// File inside a container's directory naming the host cgroup `create` makes for it, each
/// directory written down before it is made: until `state.json` names it too, it is how
/// `delete` finds the cgroup of a `create` killed before its monitor was recorded.
pub const CGROUP_FILE: &str = "cgroup.json";

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The ID is empty or not valid (runc's `container id cannot be empty`, `invalid container ID format`).
    #[error(transparent)]
    ValidateId(#[from] id::IdError),
    /// No `state.json` for this ID (runc's `container does not exist`, matched by callers).
    #[error("container does not exist")]
    FindContainer,
    /// The ID is taken (runc's text, matched by callers).
    #[error("container with given ID already exists")]
    CreateExisting,
    /// A directory of the store could not be created.
    #[error("create directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file could not be read.
    #[error("read {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file could not be written atomically.
    #[error("write {path}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `state.json` is not a record this version understands.
    #[error("parse {path}")]
    ParseRecord {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The container directory could not be locked.
    #[error("lock {path}")]
    LockDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The container directory could not be removed.
    #[error("remove {path}")]
    RemoveDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The container's virtio-fs share could not be taken down.
    #[error("remove the file share of {path}")]
    RemoveShare {
        /// The container directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: crate::sandbox::share::ShareError,
    },
}

/// The status `state` reports (runc libcontainer/container.go `Status.String`; runc never
/// prints `creating`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Recorded by `create` from the monitor's fork until its create hooks end; never
    /// reported. runc writes state.json only once those hooks have succeeded (libcontainer
    /// process_linux.go `initProcess.start`: the hooks run at `procHooks`, `updateState` at
    /// `procReady`), so until then `state`,
    /// `kill`, `delete`, `start` ... say `container does not exist`: [`StateStore::load`] and
    /// [`StateStore::lock`] do the same for a record with this status. It is recorded all the
    /// same (not just left out) so that a `create` killed outright leaves the monitor's PID for
    /// `delete` to clean up.
    Creating,
    /// Created, `process.args` not yet run.
    Created,
    /// Started.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// The init (for Vessel: the monitor) is gone.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// Everything recorded about a container at create time and updated by start, pause and resume.
/// Later commands get no global flags from some callers (containerd's cleanup `delete --force`,
/// podman's `state`), so whatever they need lives here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The container ID.
    pub id: String,
    /// `ociVersion` of the bundle's config.json.
    pub oci_version: String,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// `annotations` of config.json.
    pub annotations: BTreeMap<String, String>,
    /// Creation time, RFC 3339 UTC with nanoseconds.
    pub created: String,
    /// PID of the monitor process (the pid-file PID).
    pub monitor_pid: i32,
    /// Start time of the monitor, field 22 of `/proc/<pid>/stat`, to detect PID reuse.
    pub monitor_start_time: u64,
    /// Status as last set by a lifecycle command; only meaningful while the monitor lives.
    pub status: Status,
    /// `--systemd-cgroup` as given to create.
    pub systemd_cgroup: bool,
    /// `--rootless` as given to create (`true`, `false` or `auto`).
    pub rootless: String,
    /// Which sandbox runs the container (`microvm`, or `host` for the test double).
    pub sandbox: String,
    /// The monitor's host cgroup (`linux.cgroupsPath`), `None` when it has none (rootless
    /// without permission, as runc).
    #[serde(default)]
    pub cgroup: Option<crate::host::cgroup::CgroupRecord>,
    /// `hooks` of config.json as it was at create time, for the hooks `start` and `delete` run
    /// (spec: later changes to config.json do not affect the container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// While `paused`: the status `resume` returns to, `created` or `running` (runc derives it
    /// after a resume from whether the container's init has run its process yet, so a container
    /// paused before `start` is `created` again and can still be started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_from: Option<Status>,
    /// For a container created in another container's VM (`crate::sandbox::pod`): that
    /// container's ID, the pod's sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The size of the container's own VM (none for a pod member), which the containers that
    /// join its pod must fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_size: Option<crate::sandbox::sizing::VmSize>,
}

impl ContainerRecord {
    /// Waits up to `limit`, looking every `every`, for the monitor to be gone (dead, a zombie,
    /// or its PID reused); whether it is.
    pub fn wait_monitor_gone(
        &self,
        limit: std::time::Duration,
        every: std::time::Duration,
    ) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if !procfs::is_alive(self.monitor_pid, self.monitor_start_time) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(every);
        }
    }

    /// The live status: the recorded one while the monitor is alive with the recorded start
    /// time, `stopped` otherwise.
    pub fn status(&self) -> Status {
        if procfs::is_alive(self.monitor_pid, self.monitor_start_time) {
            self.status
        } else {
            Status::Stopped
        }
    }

    /// The object `state` prints, with `owner` empty (runc state.go).
    pub fn oci_state(&self) -> OciState {
        let status = self.status();
        OciState {
            oci_version: self.oci_version.clone(),
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.monitor_pid
            },
            status,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            annotations: self.annotations.clone(),
            owner: String::new(),
        }
    }
}

/// runc's `containerState` (runc list.go): the JSON of `state` and of each `list --format json`
/// entry. Field order and omissions match runc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciState {
    /// `ociVersion` of the bundle.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// Container ID.
    pub id: String,
    /// Host PID of the pid-file process; 0 when stopped.
    pub pid: i32,
    /// Live status.
    pub status: Status,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// RFC 3339 UTC creation time.
    pub created: String,
    /// Annotations, omitted when empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
    /// Owner: empty from `state`, user name or `#<uid>` from `list`.
    pub owner: String,
}

impl OciState {
    /// runc's `state` output: 2-space indented JSON with no trailing newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("OciState always serialises")
    }
}

/// An exclusive `flock` on a container directory, held until dropped, so that concurrent
/// commands on one ID are serialised: `create` holds it from the moment the directory appears
/// until the container is recorded `created` and the pid-file is written (while it holds it
/// before that, the others find no container rather than wait: [`StateStore::lock`]); `start`,
/// `pause`, `resume`, `update` and `delete` hold it for their whole operation.
///
/// The lock is the open directory fd itself. Dropping it closes the fd, and the kernel releases
/// the lock once no fd of that open file description is left. It is deliberately not
/// `nix::fcntl::Flock`, whose drop calls `LOCK_UN`: `create` forks the monitor while holding the
/// lock, and the monitor must be able to close its inherited copy without unlocking the parent.
#[derive(Debug)]
pub struct ContainerLock(#[allow(dead_code)] OwnedFd);

/// Takes an exclusive `flock` on `file` (blocking).
fn flock_exclusive(file: File, path: &Path) -> Result<OwnedFd, StateError> {
    flock(&file, FlockArg::LockExclusive).map_err(|errno| StateError::LockDir {
        path: path.to_owned(),
        source: errno.into(),
    })?;
    Ok(OwnedFd::from(file))
}

/// `flock(2)` on `file` as `arg` says. `nix::fcntl::Flock` would unlock on drop (see
/// [`ContainerLock`]); the plain call leaves the lock tied to the open file description.
fn flock(file: &File, arg: FlockArg) -> nix::Result<()> {
    #[allow(deprecated)]
    nix::fcntl::flock(file.as_raw_fd(), arg)
}

/// The store rooted at `--root`.
#[derive(Debug, Clone)]
pub struct StateStore {
    root: PathBuf,
}

impl StateStore {
    /// A store at `root` (made absolute by the caller).
    pub fn new(root: impl Into<PathBuf>) -> StateStore {
        StateStore { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<id>`, after validating `id`.
    pub fn container_dir(&self, id: &str) -> Result<PathBuf, StateError> {
        id::validate(id)?;
        Ok(self.root.join(id))
    }

    /// Creates `<root>` (0700, if missing) and `<root>/<id>` (0711) and returns the directory
    /// already locked; fails with runc's `container with given ID already exists` when the
    /// directory is already there (of two concurrent creates of one ID, exactly one wins:
    /// `mkdir` is atomic).
    ///
    /// The `mkdir` and the `flock` happen under a short lock on `<root>` itself, which
    /// [`StateStore::lock`] also takes to open a container directory: no other command can see
    /// the new directory before `create` holds its lock (and mistake it, without `state.json`,
    /// for the leftover of an aborted create).
    pub fn create_dir(&self, id: &str) -> Result<(PathBuf, ContainerLock), StateError> {
        let dir = self.container_dir(id)?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|source| StateError::CreateDir {
                path: self.root.clone(),
                source,
            })?;
        let _root = self.lock_root()?;
        match DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StateError::CreateExisting)
            }
            Err(source) => return Err(StateError::CreateDir { path: dir, source }),
        }
        let file = File::open(&dir).map_err(|source| StateError::LockDir {
            path: dir.clone(),
            source,
        })?;
        let lock = ContainerLock(flock_exclusive(file, &dir)?);
        Ok((dir, lock))
    }

    /// Locks `<root>/<id>` exclusively, waiting for the command that holds it; `container does
    /// not exist` if there is no directory, if it was removed while this call waited (a
    /// concurrent `delete`), or if a `create` holds it and has not yet recorded the container
    /// as created (no `state.json`, or status `creating`: runc has no state.json until its
    /// create hooks succeed, so its commands find nothing; waiting for the hooks instead would
    /// report a container runc does not know of yet).
    pub fn lock(&self, id: &str) -> Result<ContainerLock, StateError> {
        let dir = self.container_dir(id)?;
        let file = {
            let _root = match self.lock_root() {
                Ok(l) => l,
                Err(StateError::LockDir { source, .. })
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    return Err(StateError::FindContainer)
                }
                Err(e) => return Err(e),
            };
            match File::open(&dir) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StateError::FindContainer)
                }
                Err(source) => return Err(StateError::LockDir { path: dir, source }),
            }
        };
        let fd = match flock(&file, FlockArg::LockExclusiveNonblock) {
            Ok(()) => OwnedFd::from(file),
            Err(nix::errno::Errno::EWOULDBLOCK) => {
                match self.load_any(id) {
                    Ok(record) if record.status != Status::Creating => {}
                    Ok(_) | Err(StateError::FindContainer) => {
                        return Err(StateError::FindContainer)
                    }
                    Err(e) => return Err(e),
                }
                flock_exclusive(file, &dir)?
            }
            Err(errno) => {
                return Err(StateError::LockDir {
                    path: dir,
                    source: errno.into(),
                })
            }
        };
        // A directory removed while we waited has no links left; a new container of the same
        // ID would be a different directory.
        let stat = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|errno| StateError::LockDir {
            path: dir.clone(),
            source: errno.into(),
        })?;
        if stat.st_nlink == 0 {
            return Err(StateError::FindContainer);
        }
        Ok(ContainerLock(fd))
    }

    /// A short exclusive lock on `<root>` (see [`StateStore::create_dir`]).
    fn lock_root(&self) -> Result<OwnedFd, StateError> {
        let file = File::open(&self.root).map_err(|source| StateError::LockDir {
            path: self.root.clone(),
            source,
        })?;
        flock_exclusive(file, &self.root)
    }

    /// Reads `<root>/<id>/state.json`; `container does not exist` when absent or when its
    /// status is `creating` (a create whose hooks still run, or a create killed meanwhile: see
    /// [`Status::Creating`]).
    pub fn load(&self, id: &str) -> Result<ContainerRecord, StateError> {
        match self.load_any(id)? {
            record if record.status == Status::Creating => Err(StateError::FindContainer),
            record => Ok(record),
        }
    }

    /// Reads `<root>/<id>/state.json` whatever its status, `creating` included (for `delete`,
    /// which cleans up after a create killed during its hooks); `container does not exist` when
    /// absent.
    pub fn load_any(&self, id: &str) -> Result<ContainerRecord, StateError> {
        let path = self.container_dir(id)?.join(STATE_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StateError::FindContainer),
            Err(source) => return Err(StateError::ReadFile { path, source }),
        };
        serde_json::from_slice(&text).map_err(|source| StateError::ParseRecord { path, source })
    }

    /// Writes `<root>/<id>/state.json` atomically.
    pub fn save(&self, record: &ContainerRecord) -> Result<(), StateError> {
        let path = self.container_dir(&record.id)?.join(STATE_FILE);
        let data = serde_json::to_vec(record).expect("ContainerRecord always serialises");
        write_atomic(&path, &data, 0o600).map_err(|source| StateError::WriteFile { path, source })
    }

    /// Removes `<root>/<id>` and everything in it; a missing directory is not an error.
    pub fn remove(&self, id: &str) -> Result<(), StateError> {
        let dir = self.container_dir(id)?;
        // The virtio-fs share holds bind mounts of the bundle's rootfs and mount sources:
        // unmount them first, or remove_dir_all would recurse into the host's files.
        crate::sandbox::share::remove(&dir).map_err(|source| StateError::RemoveShare {
            path: dir.clone(),
            source,
        })?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::RemoveDir { path: dir, source }),
        }
    }

    /// The names of the subdirectories of the root, sorted (runc `list` reads them all).
    pub fn ids(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                ids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }
}

/// Writes `data` to `path` atomically: a temporary `.<name>` in the same directory with `mode`,
/// flushed, then renamed over `path` (runc utils_linux.go `createPidFile` does the same).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    let tmp = path.with_file_name(tmp_name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A running container's record with monitor `pid` started at `start`; other tests use it.
    pub(crate) fn record(id: &str, pid: i32, start: u64) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            oci_version: "1.0.2".into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            annotations: BTreeMap::new(),
            created: "2024-01-02T03:04:05.5Z".into(),
            monitor_pid: pid,
            monitor_start_time: start,
            status: Status::Running,
            systemd_cgroup: false,
            rootless: "auto".into(),
            sandbox: "host".into(),
            cgroup: None,
            hooks: None,
            paused_from: None,
            pod: None,
            vm_size: None,
        }
    }

    #[test]
    fn round_trips_and_refuses_duplicates() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::new(root.path().join("r"));
        let (dir, lock) = store.create_dir("c1").unwrap();
        drop(lock);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o711
        );
        assert!(matches!(
            store.create_dir("c1"),
            Err(StateError::CreateExisting)
        ));
        assert!(matches!(store.load("c1"), Err(StateError::FindContainer)));
        let rec = record("c1", 1, 2);
        store.save(&rec).unwrap();
        assert_eq!(store.load("c1").unwrap(), rec);
        assert_eq!(store.ids().unwrap(), vec!["c1".to_owned()]);
        let _lock = store.lock("c1").unwrap();
        store.remove("c1").unwrap();
        assert!(matches!(store.load("c1"), Err(StateError::FindContainer)));
        assert!(matches!(store.lock("c1"), Err(StateError::FindContainer)));
    }

    #[test]
    fn a_container_being_created_is_not_found_and_not_waited_for() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::new(root.path().join("r"));
        let me = std::process::id() as i32;
        let mut rec = record("c1", me, procfs::stat(me).unwrap().start_time);
        rec.status = Status::Creating;
        let (_dir, create_lock) = store.create_dir("c1").unwrap();
        // Held by create, no state.json yet, then status `creating`: not found, at once.
        assert!(matches!(store.lock("c1"), Err(StateError::FindContainer)));
        store.save(&rec).unwrap();
        assert!(matches!(store.load("c1"), Err(StateError::FindContainer)));
        assert!(matches!(store.lock("c1"), Err(StateError::FindContainer)));
        assert_eq!(store.load_any("c1").unwrap(), rec);
        // Recorded `created` while create still holds the lock: found, and lock waits for it.
        rec.status = Status::Created;
        store.save(&rec).unwrap();
        assert_eq!(store.load("c1").unwrap().status(), Status::Created);
        let waiter = {
            let store = store.clone();
            std::thread::spawn(move || store.lock("c1").map(drop))
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!waiter.is_finished(), "lock did not wait for create");
        drop(create_lock);
        waiter.join().unwrap().unwrap();
        // A `creating` record nobody holds (its create was killed) can be locked: delete
        // cleans it up.
        rec.status = Status::Creating;
        store.save(&rec).unwrap();
        let _lock = store.lock("c1").unwrap();
        assert!(matches!(store.load("c1"), Err(StateError::FindContainer)));
    }

    #[test]
    fn live_status_follows_the_monitor() {
        let me = std::process::id() as i32;
        let start = procfs::stat(me).unwrap().start_time;
        let alive = record("a", me, start);
        assert_eq!(alive.status(), Status::Running);
        assert_eq!(alive.oci_state().pid, me);
        let reused = record("a", me, start + 1);
        assert_eq!(reused.status(), Status::Stopped);
        assert_eq!(reused.oci_state().pid, 0);
    }

    #[test]
    fn state_json_matches_runc_shape() {
        let mut rec = record("x", 0, 0);
        let json = rec.oci_state().to_json();
        assert_eq!(
            json,
            "{\n  \"ociVersion\": \"1.0.2\",\n  \"id\": \"x\",\n  \"pid\": 0,\n  \"status\": \"stopped\",\n  \"bundle\": \"/b\",\n  \"rootfs\": \"/b/rootfs\",\n  \"created\": \"2024-01-02T03:04:05.5Z\",\n  \"owner\": \"\"\n}"
        );
        rec.annotations.insert("k".into(), "v".into());
        assert!(rec
            .oci_state()
            .to_json()
            .contains("\"annotations\": {\n    \"k\": \"v\"\n  },"));
    }

    #[test]
    fn atomic_write_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pid");
        write_atomic(&p, b"123", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"123");
        assert!(!dir.path().join(".pid").exists());
    }
}
