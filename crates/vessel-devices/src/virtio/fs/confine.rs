//! Confining the file server's thread to the shared directory.
//!
//! `PassthroughFs` already resolves every guest-supplied name one component at a time relative
//! to an inode descriptor (no `/` in names, `..` of the root answered as `.`), but a bug there,
//! or a rename race on the host, would otherwise hand the guest the VMM's whole file system. So
//! the serving thread gets a mount namespace of its own whose root holds only the share and
//! the process's own descriptor directory (all on the calling thread only):
//!
//! 1. `unshare(CLONE_NEWNS | CLONE_FS)`: a private copy of the mount table and of root, cwd and
//!    umask (threads otherwise share them);
//! 2. `mount --make-rslave /`: nothing this thread does propagates back to the host or to the
//!    monitor, while mounts the monitor adds under a shared mount of the share (a pod's other
//!    containers' entries, `pods/`) reach this copy of it;
//! 3. a tmpfs is mounted over `<dir>` (in this namespace only) with two entries: `share`, a
//!    recursive bind of the original `<dir>`, and `proc/self/fd`, a bind of the host procfs's
//!    `/proc/<monitor pid>/fd` and nothing else of the procfs. `PassthroughFs` needs that
//!    directory: it reaches inodes for the xattr calls by `/proc/self/fd/<n>` paths and reopens
//!    them through it (without it `getxattr` fails with `ENOENT`, and the guest kernel turns that
//!    into a failed `execve`, because exec reads `security.capability`). A whole procfs there
//!    would hand code that took over the thread `/proc/<pid>/root` of any process, the host's
//!    root among them; the bind's `..` is the tmpfs, not the procfs. An empty
//!    `proc/self/mountinfo` stands for the file `PassthroughFs::new` opens (it reads it only
//!    for inode file handles, which Vessel does not use);
//! 4. `pivot_root(<dir>, <dir>)` then `umount2(<old root>, MNT_DETACH)`: the tmpfs is `/`, the
//!    old root is gone from the namespace;
//! 5. `chdir /share`, then `open` (the caller's closure): the server is rooted at `.` and opens
//!    its `/proc/self/fd` through the bind;
//! 6. the thread's capabilities are cut to [`KEPT_CAPABILITIES`] (effective and permitted; none
//!    inheritable or ambient): what passthrough needs to act for the guest's users on the
//!    share, as virtiofsd keeps by default, plus `CAP_SYS_ADMIN` for the guest's `trusted.*`
//!    xattrs (overlayfs in the guest over a shared directory keeps its metadata there; the
//!    thread's seccomp filter allows none of the other calls it would open, such as `mount`,
//!    `unshare`, `setns` or `ioctl`). `CAP_NET_ADMIN`, `CAP_SYS_PTRACE`, `CAP_SYS_MODULE`,
//!    `CAP_KILL` and the rest are gone for good: the capabilities of a thread are its own, so the
//!    monitor's other threads keep theirs.
//!
//! The guest reaches only what is under `/share`: the descriptor directory is a sibling of the
//! share, never inside it, so no guest path leads there.

use std::io;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use caps::{CapSet, Capability, CapsHashSet};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{chdir, pivot_root};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use super::FsError;

/// Confines the calling thread to `dir` (see the module doc) and runs `open` after the pivot,
/// with the share as the working directory (and under `/share`) and `/proc/self/fd` the
/// process's descriptors; afterwards the working directory is still the share. Needs
/// `CAP_SYS_ADMIN`.
/// On error the thread may be half confined and must not serve.
pub fn enter<T>(dir: &Path, open: impl FnOnce() -> Result<T, FsError>) -> Result<T, FsError> {
    let err = |step: &'static str| {
        move |e: nix::errno::Errno| FsError::Confine {
            path: dir.to_owned(),
            step,
            source: io::Error::from(e),
        }
    };
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS).map_err(err("unshare"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err("make / rslave"))?;
    // A detached copy of the share's mount tree, taken before the tmpfs covers its path (a
    // recursive bind taken afterwards would contain the tmpfs itself).
    let tree = open_tree(dir).map_err(err("open_tree share"))?;
    let noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // Bounded: it holds only the few mount-point directories below, and nothing else may grow
    // in it (one page, 16 inodes).
    mount(
        Some("vessel-fs"),
        dir,
        Some("tmpfs"),
        noexec,
        Some("mode=0700,size=4k,nr_inodes=16"),
    )
    .map_err(err("mount staging tmpfs"))?;
    for sub in [SHARE_ENTRY, PROC_ENTRY] {
        std::fs::create_dir(dir.join(sub)).map_err(|source| FsError::Confine {
            path: dir.join(sub),
            step: "create staging entry",
            source,
        })?;
    }
    move_mount(&tree, &dir.join(SHARE_ENTRY)).map_err(err("move share into place"))?;
    drop(tree);
    // Only the descriptor directory of the procfs: `/proc/self` resolves to this process now,
    // while the host's procfs is still reachable.
    let fds = dir.join(PROC_FD_ENTRY);
    std::fs::create_dir_all(&fds).map_err(|source| FsError::Confine {
        path: fds.clone(),
        step: "create staging entry",
        source,
    })?;
    mount(
        Some("/proc/self/fd"),
        &fds,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err("bind /proc/self/fd"))?;
    // `PassthroughFs::new` opens `/proc/self/mountinfo`, which it reads only to open inodes by
    // file handle (`inode_file_handles`, off here): an empty file stands for it.
    let mountinfo = dir.join(PROC_MOUNTINFO_ENTRY);
    std::fs::write(&mountinfo, b"").map_err(|source| FsError::Confine {
        path: mountinfo,
        step: "create staging entry",
        source,
    })?;
    chdir(dir).map_err(err("chdir"))?;
    pivot_root(".", ".").map_err(err("pivot_root"))?;
    // The old root is stacked under the new one at "."; detach it and everything below it.
    umount2(".", MntFlags::MNT_DETACH).map_err(err("detach old root"))?;
    chdir(Path::new("/").join(SHARE_ENTRY).as_path()).map_err(err("chdir /share"))?;
    let opened = open()?;
    drop_capabilities().map_err(|source| FsError::Confine {
        path: dir.to_owned(),
        step: "drop capabilities",
        source: io::Error::other(source),
    })?;
    Ok(opened)
}

/// The capabilities a serving thread keeps: ownership and modes on behalf of the guest's users
/// (`CHOWN`, `FOWNER`, `FSETID`, `SETFCAP`), access past permission bits as root in the guest
/// has it (`DAC_OVERRIDE`, `DAC_READ_SEARCH`, also for `open_by_handle_at`), device nodes
/// (`MKNOD`), the per-request switch to the caller's ids (`SETUID`, `SETGID`) and the guest's
/// `trusted.*` xattrs (`SYS_ADMIN`; see the module doc).
pub const KEPT_CAPABILITIES: [Capability; 10] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_MKNOD,
    Capability::CAP_SETFCAP,
    Capability::CAP_SYS_ADMIN,
];

/// Cuts the calling thread's capabilities to [`KEPT_CAPABILITIES`] (effective first, since it
/// must stay within the permitted set), with none inheritable or ambient.
fn drop_capabilities() -> Result<(), caps::errors::CapsError> {
    let kept: CapsHashSet = KEPT_CAPABILITIES.into_iter().collect();
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    caps::set(None, CapSet::Effective, &kept)?;
    caps::set(None, CapSet::Permitted, &kept)
}

/// `open_tree(dir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)`: a detached copy of the
/// mount tree at `dir` (Linux 5.2, include/uapi/linux/mount.h).
fn open_tree(dir: &Path) -> Result<OwnedFd, nix::errno::Errno> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| nix::errno::Errno::EINVAL)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; open_tree only reads it
    // and returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        )
    };
    if fd < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: the kernel just returned this descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `move_mount(tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`: attaches a detached tree.
fn move_mount(tree: &OwnedFd, target: &Path) -> Result<(), nix::errno::Errno> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let target = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| nix::errno::Errno::EINVAL)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; `tree` is an open descriptor.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}

/// Name of the share inside the serving thread's root.
const SHARE_ENTRY: &str = "share";
/// Name of the procfs directory inside the serving thread's root (a tmpfs directory).
const PROC_ENTRY: &str = "proc";
/// Where the process's descriptor directory is bound inside the serving thread's root.
const PROC_FD_ENTRY: &str = "proc/self/fd";
/// An empty stand-in for `/proc/self/mountinfo` inside the serving thread's root.
const PROC_MOUNTINFO_ENTRY: &str = "proc/self/mountinfo";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confined_thread_sees_only_the_share_and_the_host_sees_no_new_mount() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "{}: skipped: confinement unshares a mount namespace and needs root",
                std::thread::current().name().unwrap_or("test")
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("marker"), "inside").unwrap();
        let share = std::fs::canonicalize(dir.path()).unwrap();
        let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let cwd = enter(&share, || Ok(std::env::current_dir().unwrap())).unwrap();
            let seen = (
                cwd,
                std::fs::read_to_string("/share/marker").unwrap(),
                std::fs::read_to_string("marker").unwrap(),
                std::fs::metadata("/etc/passwd").is_ok(),
                std::fs::metadata("/proc/self/fd").is_ok(),
                // A descriptor of the share, reached by its /proc/self/fd path as xattrs are.
                std::fs::File::open("/share/marker").map(|f| {
                    let link = format!("/proc/self/fd/{}", f.as_raw_fd());
                    std::fs::read_to_string(link).unwrap()
                }),
                // Nothing else of the procfs: no other process, no /proc/self/root, and the
                // bind's parent is the staging tmpfs.
                [
                    "/proc/1",
                    "/proc/self/root",
                    "/proc/self/fd/../root",
                    "/proc/sys",
                ]
                .map(|p| std::fs::symlink_metadata(p).is_ok()),
                std::fs::read_dir("/proc/self/fd/..")
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect::<Vec<_>>(),
                std::fs::canonicalize("/..").unwrap(),
                std::fs::metadata("proc").is_ok(),
                caps::read(None, CapSet::Effective).unwrap(),
                caps::read(None, CapSet::Permitted).unwrap(),
            );
            tx.send(seen).unwrap();
            // Stay confined while the host side looks at its own mount table.
            done_rx.recv().unwrap();
        });
        let (
            cwd,
            abs,
            rel,
            passwd,
            proc_,
            through_fd,
            procfs_rest,
            fd_parent,
            up,
            proc_in_share,
            effective,
            permitted,
        ) = rx.recv().unwrap();
        let kept: CapsHashSet = KEPT_CAPABILITIES.into_iter().collect();
        assert_eq!(
            effective, kept,
            "the serving thread's effective capabilities"
        );
        assert_eq!(
            permitted, kept,
            "the serving thread's permitted capabilities"
        );
        assert!(
            caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_ADMIN).unwrap(),
            "the test's own thread keeps CAP_NET_ADMIN"
        );
        assert!(!kept.contains(&Capability::CAP_NET_ADMIN));
        assert_eq!(cwd, PathBuf::from("/share"), "the server runs in the share");
        assert_eq!((abs.as_str(), rel.as_str()), ("inside", "inside"));
        assert!(
            !passwd,
            "host /etc/passwd is visible to the confined thread"
        );
        assert!(
            proc_,
            "the process's descriptors (for /proc/self/fd/N xattr paths) are bound"
        );
        assert_eq!(
            through_fd.unwrap(),
            "inside",
            "a share file reopened through /proc/self/fd/N"
        );
        assert_eq!(
            procfs_rest, [false; 4],
            "/proc/1, /proc/self/root, /proc/self/fd/../root, /proc/sys must not exist"
        );
        let mut fd_parent = fd_parent;
        fd_parent.sort();
        assert_eq!(
            fd_parent,
            ["fd", "mountinfo"],
            "/proc/self holds only fd and an empty mountinfo"
        );
        assert!(
            !proc_in_share,
            "the procfs must not be reachable from the share"
        );
        assert_eq!(up, PathBuf::from("/"));
        // Other threads keep the host's root and mount table.
        assert!(std::fs::metadata("/etc/passwd").is_ok());
        assert_eq!(
            std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
            before
        );
        done_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
