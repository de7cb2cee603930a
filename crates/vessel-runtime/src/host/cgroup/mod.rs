//! The host cgroup of a container: the monitor process (which owns the microVM, so the VM's
//! whole host cost) is placed in the cgroup named by `linux.cgroupsPath`, as runc places the
//! container's init, because callers read stats and OOM events from the cgroup of the pid-file
//! process (containerd's shim, conmon: runc-cli-contract.md §4.7).
//!
//! Path rules, as runc's drivers (runc libcontainer/specconv `CreateCgroupConfig`,
//! cgroups/fs2/defaultpath.go, cgroups/fs/paths.go, cgroups/systemd/common.go `ExpandSlice`):
//! - cgroupfs driver: `cgroupsPath` is cleaned (no `..` above the root). Absolute: below each
//!   hierarchy's mount point. Relative: on cgroup v2 below the *parent* of Vessel's own cgroup,
//!   on v1 below Vessel's own cgroup in that hierarchy. Absent: the container ID, relative.
//! - `--systemd-cgroup`: `slice:prefix:name`, absent meaning `system.slice:vessel:<id>`; the
//!   unit is `<prefix>-<name>.scope` (`<name>.scope` with no prefix, `<name>` itself if it ends
//!   in `.slice`) under the expanded slice (`a-b.slice` -> `/a.slice/a-b.slice`, empty slice ->
//!   `system.slice`). Vessel does not talk to systemd: it creates the same directories in
//!   cgroupfs, as runc's fs driver would.
//! - cgroup v2 (`/sys/fs/cgroup` is cgroup2) uses one directory; v1 one per mounted hierarchy,
//!   plus the v2 hierarchy of a hybrid host.
//!
//! Missing directories are created and recorded; only those are removed at `delete` (or when
//! `create` fails). Which `linux.resources` are applied to the host cgroup, and why memory is
//! not, is in docs/design.md "Host cgroup".
//!
//! One file per concern: `path.rs` (the host's hierarchies and the directory `cgroupsPath`
//! names in each), `limits.rs` (which `linux.resources` go to which cgroup file), `fs.rs`
//! (creating, joining and removing the directories).

mod fs;
mod limits;
mod path;

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use fs::{create, join, leave_and_remove, remove};
pub use limits::{shares_to_weight, HostLimits};
pub use path::{expand_slice, inner_path, own_cgroup, parse_mountinfo, resolve, Hierarchy, Layout};

/// Where cgroup file systems are mounted on hosts that follow the convention.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The systemd scope prefix used when `--systemd-cgroup` is given without a `cgroupsPath`
/// (runc uses `runc`).
pub const DEFAULT_SCOPE_PREFIX: &str = "vessel";

/// Errors of the host cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The cgroup about to be made could not be written down first (`create`'s `note`).
    #[error("record the cgroup about to be made")]
    NoteCgroup(#[source] std::io::Error),
    /// A systemd `cgroupsPath` is not `slice:prefix:name` (runc's text).
    #[error(
        "linux.cgroupsPath: expected cgroupsPath to be of format \"slice:prefix:name\" for systemd cgroups, got {0:?} instead"
    )]
    ParseSystemdPath(String),
    /// A slice name systemd would refuse (runc's `invalid slice name`).
    #[error("linux.cgroupsPath: invalid slice name: {0} (a slice is `a-b.slice`, no `/`, no empty `-` parts)")]
    ExpandSlice(String),
    /// The mount table or `/proc/self/cgroup` could not be read.
    #[error("read {path}")]
    ReadProc {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No cgroup file system is mounted.
    #[error("linux.cgroupsPath {0:?}: no cgroup file system is mounted (mount cgroup2 on /sys/fs/cgroup)")]
    FindHierarchy(String),
    /// Vessel's own cgroup in a hierarchy is not in `/proc/self/cgroup`.
    #[error("find this process's cgroup for the hierarchy at {0}")]
    FindOwnCgroup(PathBuf),
    /// A cgroup directory could not be created.
    #[error("linux.cgroupsPath {spec:?}: create cgroup {path}")]
    CreateCgroup {
        /// `linux.cgroupsPath` as given.
        spec: String,
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The cgroup exists and already has processes (runc refuses this too).
    #[error("linux.cgroupsPath {spec:?}: cgroup {path} is not empty; remove its processes or choose another path")]
    UseBusyCgroup {
        /// `linux.cgroupsPath` as given.
        spec: String,
        /// The directory.
        path: PathBuf,
    },
    /// The controller a limit needs is not enabled for the container's cgroup.
    #[error("{field}: {path} does not exist: enable the controller in the parent's cgroup.subtree_control, or drop the limit")]
    FindController {
        /// The spec field the limit comes from.
        field: &'static str,
        /// The missing cgroup file.
        path: PathBuf,
    },
    /// A limit could not be written.
    #[error("{field}: write {path}")]
    WriteLimit {
        /// The spec field the limit comes from.
        field: &'static str,
        /// The cgroup file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The monitor could not be moved into the cgroup.
    #[error("move process {pid} into cgroup {path}")]
    JoinCgroup {
        /// The process.
        pid: i32,
        /// The cgroup directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A cgroup Vessel created could not be removed.
    #[error("remove cgroup {path}")]
    RemoveCgroup {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The container's host cgroup as recorded in `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupRecord {
    /// The directories the monitor joins: one on cgroup v2, one per hierarchy on v1.
    pub paths: Vec<PathBuf>,
    /// The directories Vessel created, parents before children; removed in reverse order.
    pub created: Vec<PathBuf>,
}
