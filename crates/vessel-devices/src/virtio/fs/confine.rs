//! Confining the file server's thread to the shared directory.
//!
//! `PassthroughFs` already resolves every guest-supplied name one component at a time relative
//! to an inode descriptor (no `/` in names, `..` of the root answered as `.`), but a bug there,
//! or a rename race on the host, would otherwise hand the guest the VMM's whole file system. So
//! the serving thread gets a mount namespace of its own whose root is the shared directory: the
//! rest of the host's mounts are detached from its view, and absolute paths, `..` and symlinks it
//! follows all stay inside the share. The steps (all on the calling thread only):
//!
//! 1. `unshare(CLONE_NEWNS | CLONE_FS)`: a private copy of the mount table and of root, cwd and
//!    umask (threads otherwise share them);
//! 2. `mount --make-rprivate /`: nothing this thread does propagates back to the host;
//! 3. `mount --rbind <dir> <dir>`: the share, with its submounts, becomes a mount of its own;
//! 4. `chdir <dir>`, then `open` (the caller's closure): descriptors the server needs from
//!    outside the share, e.g. `/proc/self/fd`, are opened now; the share itself is `.`;
//! 5. `pivot_root(<dir>, <dir>)` then `umount2(<old root>, MNT_DETACH)`: the share is `/` and
//!    the old root is gone from the namespace.

use std::io;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{chdir, pivot_root};

use super::FsError;

/// Confines the calling thread to `dir` (see the module doc) and runs `open` between the bind
/// and the pivot, while the host's file system is still reachable and the working directory is
/// the share; afterwards the working directory is still the share, now also `/`. Needs
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
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err("make / rprivate"))?;
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err("rbind"))?;
    chdir(dir).map_err(err("chdir"))?;
    let opened = open()?;
    pivot_root(".", ".").map_err(err("pivot_root"))?;
    // The old root is stacked under the new one at "."; detach it and everything below it.
    umount2(".", MntFlags::MNT_DETACH).map_err(err("detach old root"))?;
    chdir("/").map_err(err("chdir /"))?;
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confined_thread_sees_only_the_share_and_the_host_sees_no_new_mount() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: confinement unshares a mount namespace and needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("marker"), "inside").unwrap();
        let share = std::fs::canonicalize(dir.path()).unwrap();
        let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let host_passwd =
                enter(&share, || Ok(std::fs::metadata("/etc/passwd").is_ok())).unwrap();
            let seen = (
                host_passwd,
                std::fs::read_to_string("/marker").unwrap(),
                std::fs::read_to_string("marker").unwrap(),
                std::fs::metadata("/etc/passwd").is_ok(),
                std::fs::metadata("/proc/self").is_ok(),
                std::fs::canonicalize("/..").unwrap(),
            );
            tx.send(seen).unwrap();
            // Stay confined while the host side looks at its own mount table.
            done_rx.recv().unwrap();
        });
        let (host_before, abs, rel, passwd, proc_, up) = rx.recv().unwrap();
        assert!(host_before, "the host is reachable until the pivot");
        assert_eq!((abs.as_str(), rel.as_str()), ("inside", "inside"));
        assert!(
            !passwd,
            "host /etc/passwd is visible to the confined thread"
        );
        assert!(!proc_, "host /proc is visible to the confined thread");
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
