//! The per-container share: one host directory, `<root>/<id>/share/`, that the VMM serves to the
//! guest over virtio-fs and from which the guest agent builds the container's root and bind
//! mounts.
//!
//! Layout (names relative to the share):
//!
//! ```text
//! share/              a private bind mount of itself (nothing propagates in or out)
//!   rootfs/           the bundle's root.path, rbind, writable even with root.readonly: like
//!                     runc, the agent creates missing mount targets first and makes the root
//!                     read-only last, in the guest
//!   mounts/<n>        the source of OCI mount <n> (index in config.json "mounts") when that
//!                     mount is a bind or rbind mount: a directory or a file, like its source,
//!                     read-only when its options say "ro"
//!   pods/             a shared bind of itself: the entries of the other containers of the pod
//!     <id>/rootfs     whose VM this is, the same two kinds as above (`member.rs`), attached
//!     <id>/mounts/<n> from the monitor's namespace while the VM runs
//! ```
//!
//! Every mount point is created and reached with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! from the share's own directory descriptor and mounted on through `/proc/self/fd`, so a symlink
//! or `..` planted in the state directory cannot redirect a mount outside the share. Sources are
//! resolved (symlinks followed, as runc's bind mounts do) before they are opened; a source inside
//! the share itself is refused. [`remove`] unmounts everything under the share (lazily when busy)
//! and removes only the empty mount points it created, never recursing into a mounted tree;
//! [`prepare`] calls it on every failure.
//!
//! One file per concern: `layout.rs` (what the share holds and the guest's view of the spec),
//! `mount.rs` (building and removing the share's mounts), `member.rs` (a pod member's entries),
//! `mountinfo.rs` (what is mounted).

mod layout;
mod member;
mod mount;
mod mountinfo;

use std::io;
use std::path::{Path, PathBuf};

pub use layout::{
    check_relative, is_bind, is_readonly, is_recursive, EntryKind, ShareEntry, ShareLayout,
};
pub use member::{open_member, remove_member, MemberTrees};
pub use mount::{prepare, remove, unshare_mount_namespace};
pub use mountinfo::mounts_under;

/// Name of the share directory inside a container's state directory.
pub const SHARE_DIR: &str = "share";
/// Entry of the bundle's root file system, relative to the share.
pub const ROOTFS_ENTRY: &str = "rootfs";
/// Directory of the bind-mount sources, relative to the share.
pub const MOUNTS_DIR: &str = "mounts";
/// Directory of the pod members' entries (`pods/<id>/...`), relative to the share.
pub const PODS_DIR: &str = "pods";

/// The virtio-fs tag of the share (`VmConfig` fs entry; the guest mounts it by this name).
pub const TAG: &str = "vessel";
/// Where the agent mounts the share in the guest (docs/design.md, "File sharing").
pub const GUEST_MOUNT: &str = "/run/vessel/shared";

/// Errors of [`prepare`] and [`remove`]. Paths are host paths.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// The monitor could not get a mount namespace of its own ([`unshare_mount_namespace`]).
    #[error("{what}")]
    Namespace {
        /// The step that failed.
        what: &'static str,
        /// The cause (`EPERM` without `CAP_SYS_ADMIN`; `EINVAL` in a multi-threaded process).
        #[source]
        source: io::Error,
    },
    /// The share directory or a mount point in it could not be created.
    #[error("create {path}")]
    CreateEntry {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A path inside the share resolves outside it (a symlink or `..`), or cannot be reached.
    #[error("{path} escapes the share or cannot be reached beneath it")]
    EscapeShare {
        /// The path that was refused.
        path: PathBuf,
        /// The cause (`EXDEV` or `ELOOP` for an escape).
        #[source]
        source: io::Error,
    },
    /// A bind-mount source or the rootfs cannot be resolved or opened.
    #[error("resolve source {path} of mount {index}")]
    ResolveSource {
        /// Index of the mount in config.json (`None` for the rootfs).
        index: MountIndex,
        /// The source as given (joined to the bundle when relative).
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A bind-mount source lies inside the share, which would expose other entries.
    #[error("source {path} of mount {index} is inside the share {share}")]
    SourceInShare {
        /// Index of the mount in config.json.
        index: MountIndex,
        /// The resolved source.
        path: PathBuf,
        /// The share directory.
        share: PathBuf,
    },
    /// A mount or a change of its propagation or flags failed.
    #[error("{what} {path}")]
    Mount {
        /// What was being done (`bind`, `make private`, `make read-only`).
        what: &'static str,
        /// The mount point.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `/proc/self/mountinfo` could not be read.
    #[error("read /proc/self/mountinfo")]
    ReadMountinfo(#[source] io::Error),
    /// Something under the share stays mounted after every unmount attempt.
    #[error("{path} is still mounted after {rounds} unmount rounds")]
    StillMounted {
        /// The first remaining mount point.
        path: PathBuf,
        /// Rounds tried.
        rounds: usize,
    },
    /// A mount point or the share directory could not be removed.
    #[error("remove {path}")]
    RemoveEntry {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Which entry an error is about: the rootfs or OCI mount `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountIndex {
    /// The bundle's `root.path`.
    Rootfs,
    /// `mounts[n]` of config.json.
    Mount(usize),
}

impl std::fmt::Display for MountIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountIndex::Rootfs => f.write_str("root"),
            MountIndex::Mount(n) => write!(f, "#{n}"),
        }
    }
}
/// The share directory of the container whose state directory is `state_dir`.
pub fn share_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(SHARE_DIR)
}
