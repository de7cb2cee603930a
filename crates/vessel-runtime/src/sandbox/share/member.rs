//! A pod member's entries in its sandbox's share: `pods/<id>/rootfs` and `pods/<id>/mounts/<n>`,
//! the same two kinds as a container's own share holds, for a container created in another
//! container's VM (`crate::sandbox::pod`).
//!
//! They are made in two steps, because the sandbox's share lives in the sandbox monitor's mount
//! namespace, which may not see mounts the host made after that monitor started (a rootfs
//! containerd mounted for this container a moment ago):
//! 1. [`open_member`], in the caller's namespace: each source is resolved and cloned into a
//!    detached mount tree (`open_tree(OPEN_TREE_CLONE)`), made read-only there when its options
//!    say `ro`;
//! 2. [`MemberTrees::attach`], after `setns` into the sandbox monitor's namespace: each tree is
//!    moved onto its mount point under `pods/` (`move_mount`). `pods/` is a shared mount whose
//!    slave copy is in the file server's namespace, so the new mounts reach the guest; they are
//!    read-only there too, because a propagated copy keeps its mount's flags.
//!
//! [`remove_member`], in the sandbox monitor's namespace, unmounts them (which propagates to the
//! file server's copy) and removes the mount points.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use oci_spec::runtime::Spec;

use super::layout::{is_readonly, is_recursive, EntryKind, ShareEntry, ShareLayout};
use super::mount::{
    beneath, bind_sources, create_dir_beneath, create_file_beneath, fd_path, mount_err, open_dir,
    refuse_symlink, remove_entries, resolve_source, set_readonly, unmount_all,
};
use super::{share_dir, MountIndex, ShareError, MOUNTS_DIR, PODS_DIR, ROOTFS_ENTRY, SHARE_DIR};

/// A pod member's entries as detached mount trees, opened in the caller's namespace and not yet
/// attached anywhere (see the module documentation). Dropping it unmounts them.
#[derive(Debug)]
pub struct MemberTrees {
    id: String,
    rootfs: OwnedFd,
    rootfs_readonly: bool,
    mounts: Vec<(ShareEntry, OwnedFd)>,
}

/// Step 1: clones the rootfs and every bind-mount source of `spec` (relative sources joined to
/// `bundle`) for member `id` of the pod whose sandbox's state directory is `sandbox_dir`.
///
/// # Errors
/// A source cannot be resolved, lies inside the sandbox's share, or cannot be cloned.
pub fn open_member(
    sandbox_dir: &Path,
    id: &str,
    bundle: &Path,
    rootfs: &Path,
    spec: &Spec,
) -> Result<MemberTrees, ShareError> {
    super::check_relative(id)?;
    let share = std::fs::canonicalize(share_dir(sandbox_dir)).map_err(|source| {
        ShareError::CreateEntry {
            path: share_dir(sandbox_dir),
            source,
        }
    })?;
    let source = resolve_source(MountIndex::Rootfs, rootfs, &share)?;
    let rootfs_tree = clone_tree(&source.fd, true).map_err(mount_err("clone", rootfs))?;
    let mut mounts = Vec::new();
    for (index, m, given) in bind_sources(spec, bundle) {
        let source = resolve_source(MountIndex::Mount(index), &given, &share)?;
        let kind = source.kind();
        let readonly = is_readonly(m);
        let tree = clone_tree(&source.fd, is_recursive(m)).map_err(mount_err("clone", &given))?;
        if readonly {
            set_readonly(&tree).map_err(mount_err("make read-only", &given))?;
        }
        mounts.push((
            ShareEntry {
                index,
                path: format!("{PODS_DIR}/{id}/{MOUNTS_DIR}/{index}"),
                kind,
                readonly,
            },
            tree,
        ));
    }
    Ok(MemberTrees {
        id: id.to_owned(),
        rootfs: rootfs_tree,
        rootfs_readonly: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        mounts,
    })
}

impl MemberTrees {
    /// Step 2, in the sandbox monitor's mount namespace: creates `pods/<id>/` in the share of
    /// `sandbox_dir` and moves every tree onto its mount point there. On failure what was
    /// attached is removed again ([`remove_member`]).
    ///
    /// # Errors
    /// The member's directory exists already (an ID used twice), a mount point cannot be made
    /// beneath the share, or a tree cannot be moved.
    pub fn attach(self, sandbox_dir: &Path) -> Result<ShareLayout, ShareError> {
        let result = self.attach_all(sandbox_dir);
        if result.is_err() {
            if let Err(e) = remove_member(sandbox_dir, &self.id) {
                log::warn!("pod member share clean-up after a failed create: {e}");
            }
        }
        result
    }

    fn attach_all(&self, sandbox_dir: &Path) -> Result<ShareLayout, ShareError> {
        let share = share_dir(sandbox_dir);
        refuse_symlink(&share)?;
        let state_fd = open_dir(sandbox_dir).map_err(|source| ShareError::CreateEntry {
            path: sandbox_dir.to_owned(),
            source,
        })?;
        let share_fd = beneath(&state_fd, SHARE_DIR, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(
            |source| ShareError::EscapeShare {
                path: share.clone(),
                source,
            },
        )?;
        let real_share =
            std::fs::read_link(fd_path(&share_fd)).map_err(|source| ShareError::EscapeShare {
                path: share.clone(),
                source,
            })?;
        let base = format!("{PODS_DIR}/{}", self.id);
        drop(create_dir_beneath(&share_fd, &share, &base)?);
        let rootfs = format!("{base}/{ROOTFS_ENTRY}");
        let target = create_dir_beneath(&share_fd, &share, &rootfs)?;
        move_tree(&self.rootfs, &target).map_err(mount_err("attach", &share.join(&rootfs)))?;
        drop(create_dir_beneath(
            &share_fd,
            &share,
            &format!("{base}/{MOUNTS_DIR}"),
        )?);
        for (entry, tree) in &self.mounts {
            let target = match entry.kind {
                EntryKind::Dir => create_dir_beneath(&share_fd, &share, &entry.path)?,
                EntryKind::File => create_file_beneath(&share_fd, &share, &entry.path)?,
            };
            move_tree(tree, &target).map_err(mount_err("attach", &share.join(&entry.path)))?;
        }
        Ok(ShareLayout {
            dir: real_share,
            rootfs,
            rootfs_readonly: self.rootfs_readonly,
            mounts: self.mounts.iter().map(|(e, _)| e.clone()).collect(),
        })
    }
}

/// Unmounts member `id`'s entries in the share of `sandbox_dir` and removes their mount points,
/// in the sandbox monitor's mount namespace. A member that has none is not an error.
///
/// # Errors
/// Something stays mounted, or a mount point cannot be removed.
pub fn remove_member(sandbox_dir: &Path, id: &str) -> Result<(), ShareError> {
    super::check_relative(id)?;
    let dir = match std::fs::canonicalize(share_dir(sandbox_dir)) {
        Ok(share) => share.join(PODS_DIR).join(id),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ShareError::RemoveEntry {
                path: share_dir(sandbox_dir),
                source,
            })
        }
    };
    refuse_symlink(&dir)?;
    unmount_all(&dir)?;
    remove_entries(&dir)
}

/// `open_tree(fd, "", OPEN_TREE_CLONE | AT_EMPTY_PATH [| AT_RECURSIVE])`: a detached copy of
/// the mount at `fd` (with the mounts below it when `recursive`).
fn clone_tree(fd: &OwnedFd, recursive: bool) -> Result<OwnedFd, Errno> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let mut flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the path is a NUL-terminated empty string that outlives the call; open_tree only
    // reads it and returns a new descriptor or -1.
    let tree = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) };
    let tree = Errno::result(tree)?;
    // SAFETY: the kernel just returned this descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(tree as i32) })
}

/// `move_mount(tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)`:
/// attaches the detached `tree` on the directory or file `target` names.
fn move_tree(tree: &OwnedFd, target: &OwnedFd) -> Result<(), Errno> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: both paths are NUL-terminated empty strings that outlive the call; both
    // descriptors are open; the kernel only reads the arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    Errno::result(rc).map(drop)
}
