//! The share's mounts: the monitor's own mount namespace, the private bind mounts that build the
//! share beneath its directory descriptor, and their teardown.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mkdirat, Mode};
use oci_spec::runtime::Spec;

use super::layout::{is_bind, is_readonly, is_recursive, EntryKind, ShareEntry, ShareLayout};
use super::{
    mounts_under, share_dir, MountIndex, ShareError, MOUNTS_DIR, PODS_DIR, ROOTFS_ENTRY, SHARE_DIR,
};

/// How many rounds of unmounting [`remove`] tries before it reports what is still mounted.
const UNMOUNT_ROUNDS: usize = 16;
/// Moves the calling process into a mount namespace of its own (`unshare(CLONE_NEWNS)`, see
/// mount_namespaces(7)) whose mounts receive the host's but never send any back (`/` made a
/// recursive slave, as runc's default `rootfsPropagation`). The monitor calls it right after its
/// fork, while still single-threaded, so that the share's bind mounts, which [`prepare`] makes
/// in the monitor, exist only in its namespace: they are never seen on the host and vanish with
/// the monitor even when it is killed outright (runc leaves no host mounts behind either). The
/// VMM's file server serves the share from there. [`remove`] from the host (`delete`) then
/// finds no mounts and removes the empty mount points, which detaches the monitor's mounts on
/// them if it still runs (Linux 3.18+ lazily unmounts mounts on a removed directory in other
/// namespaces).
///
/// Errors ([`ShareError::Namespace`]): `EPERM` without `CAP_SYS_ADMIN` (the caller then keeps
/// the host's namespace, and the share's mounts are made there as before), `EINVAL` when the
/// process has several threads.
pub fn unshare_mount_namespace() -> Result<(), ShareError> {
    let err = |what: &'static str| {
        move |e: Errno| ShareError::Namespace {
            what,
            source: e.into(),
        }
    };
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(err("unshare the mount namespace"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err("make / a recursive slave mount"))
}
/// Builds `<state_dir>/share` for the bundle at `bundle` (relative mount sources are joined to
/// it) with root file system `rootfs` and spec `spec`. On any error everything done so far is
/// undone (see [`remove`]) and the first error is returned.
pub fn prepare(
    state_dir: &Path,
    bundle: &Path,
    rootfs: &Path,
    spec: &Spec,
) -> Result<ShareLayout, ShareError> {
    let share = share_dir(state_dir);
    refuse_symlink(&share)?;
    let state_fd = open_dir(state_dir).map_err(|source| ShareError::CreateEntry {
        path: state_dir.to_owned(),
        source,
    })?;
    match mkdirat(
        Some(state_fd.as_raw_fd()),
        SHARE_DIR,
        Mode::from_bits_truncate(0o700),
    ) {
        Ok(()) => {}
        Err(e) => {
            return Err(ShareError::CreateEntry {
                path: share,
                source: e.into(),
            })
        }
    }
    let result = build(&state_fd, &share, bundle, rootfs, spec);
    if result.is_err() {
        if let Err(e) = remove(state_dir) {
            log::warn!("share clean-up after a failed create: {e}");
        }
    }
    result
}

fn build(
    state_fd: &OwnedFd,
    share: &Path,
    bundle: &Path,
    rootfs: &Path,
    spec: &Spec,
) -> Result<ShareLayout, ShareError> {
    let escape = |path: &Path| {
        let path = path.to_owned();
        move |source: io::Error| ShareError::EscapeShare { path, source }
    };
    // The share itself, reached without following anything.
    let under =
        beneath(state_fd, SHARE_DIR, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(escape(share))?;
    let real_share = std::fs::read_link(fd_path(&under)).map_err(escape(share))?;
    // A private bind of the share onto itself: its submounts neither propagate to the host's
    // peer groups nor receive theirs.
    bind_fd(&under, &under, false).map_err(mount_err("bind", share))?;
    drop(under);
    // The share's mount root now hides the directory `under` pointed at; reopen it.
    let share_fd =
        beneath(state_fd, SHARE_DIR, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(escape(share))?;
    make_private(&share_fd, share, true)?;
    // The pod's other containers' entries (`super::member`), attached later from the monitor's
    // namespace: a shared mount, so that they reach the file server's namespace, a slave copy
    // of this one (vessel_devices::virtio::fs::confine).
    let pods = create_dir_beneath(&share_fd, share, PODS_DIR)?;
    bind_fd(&pods, &pods, false).map_err(mount_err("bind", &share.join(PODS_DIR)))?;
    drop(pods);
    let pods = beneath(&share_fd, PODS_DIR, OFlag::O_PATH | OFlag::O_DIRECTORY)
        .map_err(escape(&share.join(PODS_DIR)))?;
    mount(
        None::<&str>,
        &fd_path(&pods),
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(mount_err("make shared", &share.join(PODS_DIR)))?;
    drop(pods);

    let rootfs_readonly = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let source = resolve_source(MountIndex::Rootfs, rootfs, &real_share)?;
    // Writable even with root.readonly: runc creates missing mount targets in the rootfs and only
    // then remounts it read-only; the agent does the same in the guest.
    attach(
        &share_fd,
        share,
        ROOTFS_ENTRY,
        &source,
        EntryKind::Dir,
        true,
        false,
    )?;

    let mounts_fd = create_dir_beneath(&share_fd, share, MOUNTS_DIR)?;
    drop(mounts_fd);
    let mut entries = Vec::new();
    for (index, m, given) in bind_sources(spec, bundle) {
        let source = resolve_source(MountIndex::Mount(index), &given, &real_share)?;
        let kind = source.kind();
        let rel = format!("{MOUNTS_DIR}/{index}");
        let readonly = is_readonly(m);
        attach(
            &share_fd,
            share,
            &rel,
            &source,
            kind,
            is_recursive(m),
            readonly,
        )?;
        entries.push(ShareEntry {
            index,
            path: rel,
            kind,
            readonly,
        });
    }
    Ok(ShareLayout {
        dir: real_share,
        rootfs: ROOTFS_ENTRY.to_owned(),
        rootfs_readonly,
        mounts: entries,
    })
}

pub(super) struct Source {
    pub(super) fd: OwnedFd,
    pub(super) meta: std::fs::Metadata,
}

impl Source {
    /// The kind of entry that stands for it in the share.
    pub(super) fn kind(&self) -> EntryKind {
        if self.meta.is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::File
        }
    }
}

/// The bind and rbind mounts of `spec` with their index in `mounts` and their source (joined
/// to `bundle` when relative): the entries a share holds besides the rootfs.
pub(super) fn bind_sources<'a>(
    spec: &'a Spec,
    bundle: &'a Path,
) -> impl Iterator<Item = (usize, &'a oci_spec::runtime::Mount, PathBuf)> + 'a {
    spec.mounts()
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, m)| is_bind(m))
        .map(move |(index, m)| {
            let given = m.source().clone().unwrap_or_default();
            let given = if given.is_absolute() {
                given
            } else {
                bundle.join(given)
            };
            (index, m, given)
        })
}

pub(super) fn resolve_source(
    index: MountIndex,
    given: &Path,
    share: &Path,
) -> Result<Source, ShareError> {
    let err = |source: io::Error| ShareError::ResolveSource {
        index,
        path: given.to_owned(),
        source,
    };
    let real = std::fs::canonicalize(given).map_err(err)?;
    if real.starts_with(share) {
        return Err(ShareError::SourceInShare {
            index,
            path: real,
            share: share.to_owned(),
        });
    }
    let fd: OwnedFd = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&real)
        .map_err(err)?
        .into();
    let meta = std::fs::metadata(fd_path(&fd)).map_err(err)?;
    Ok(Source { fd, meta })
}

/// Creates the mount point `rel` (a directory or an empty file) beneath the share, binds
/// `source` on it, makes it private and, when asked, read-only.
fn attach(
    share_fd: &OwnedFd,
    share: &Path,
    rel: &str,
    source: &Source,
    kind: EntryKind,
    recursive: bool,
    readonly: bool,
) -> Result<(), ShareError> {
    let path = share.join(rel);
    let target = match kind {
        EntryKind::Dir => create_dir_beneath(share_fd, share, rel)?,
        EntryKind::File => create_file_beneath(share_fd, share, rel)?,
    };
    bind_fd(&source.fd, &target, recursive).map_err(mount_err("bind", &path))?;
    drop(target);
    // Reach the new mount's root (the old descriptor names the covered mount point).
    let mounted =
        beneath(share_fd, rel, OFlag::O_PATH).map_err(|source| ShareError::EscapeShare {
            path: path.clone(),
            source,
        })?;
    make_private(&mounted, &path, recursive)?;
    if readonly {
        set_readonly(&mounted).map_err(mount_err("make read-only", &path))?;
    }
    Ok(())
}

pub(super) fn create_dir_beneath(
    share_fd: &OwnedFd,
    share: &Path,
    rel: &str,
) -> Result<OwnedFd, ShareError> {
    let path = share.join(rel);
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (
            beneath(share_fd, p, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(|source| {
                ShareError::EscapeShare {
                    path: share.join(p),
                    source,
                }
            })?,
            n,
        ),
        None => (
            share_fd
                .try_clone()
                .map_err(|source| ShareError::CreateEntry {
                    path: path.clone(),
                    source,
                })?,
            rel,
        ),
    };
    mkdirat(
        Some(parent.as_raw_fd()),
        name,
        Mode::from_bits_truncate(0o700),
    )
    .map_err(|e| ShareError::CreateEntry {
        path: path.clone(),
        source: e.into(),
    })?;
    beneath(share_fd, rel, OFlag::O_PATH | OFlag::O_DIRECTORY)
        .map_err(|source| ShareError::EscapeShare { path, source })
}

/// Creates the empty file `rel` beneath the share, reached without following anything, as the
/// mount point of a file entry. Its directory is reached first (it may lie on the `pods/` mount),
/// then the file is created there without crossing into another mount.
pub(super) fn create_file_beneath(
    share_fd: &OwnedFd,
    share: &Path,
    rel: &str,
) -> Result<OwnedFd, ShareError> {
    let path = share.join(rel);
    let (parent, name) = rel.rsplit_once('/').unwrap_or((".", rel));
    let parent =
        beneath(share_fd, parent, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(|source| {
            ShareError::EscapeShare {
                path: path.clone(),
                source,
            }
        })?;
    let how = OpenHow::new()
        .flags(OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(0o600))
        .resolve(confined());
    let fd = openat2(parent.as_raw_fd(), name, how).map_err(|e| ShareError::CreateEntry {
        path,
        source: e.into(),
    })?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The resolution rules for everything under the share: stay beneath the starting directory,
/// follow no symlink (magic links included), cross no mount.
fn confined() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_XDEV
}

/// Opens `rel` beneath `dir` following no symlink (`ELOOP`) and never leaving `dir` (`EXDEV`);
/// unlike [`confined`] it may enter a mount, to reach a mount's root.
pub(super) fn beneath(dir: &OwnedFd, rel: &str, flags: OFlag) -> io::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = openat2(dir.as_raw_fd(), rel, how)?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)?
        .into())
}

pub(super) fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

pub(super) fn mount_err(what: &'static str, path: &Path) -> impl FnOnce(Errno) -> ShareError {
    let path = path.to_owned();
    move |e| ShareError::Mount {
        what,
        path,
        source: e.into(),
    }
}

fn bind_fd(source: &OwnedFd, target: &OwnedFd, recursive: bool) -> Result<(), Errno> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(
        Some(&fd_path(source)),
        &fd_path(target),
        None::<&str>,
        flags,
        None::<&str>,
    )
}

fn make_private(fd: &OwnedFd, path: &Path, recursive: bool) -> Result<(), ShareError> {
    let mut flags = MsFlags::MS_PRIVATE;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(
        None::<&str>,
        &fd_path(fd),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(mount_err("make private", path))
}

/// `struct mount_attr` of linux/mount.h (mount_setattr(2)).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_RDONLY` of linux/mount.h.
const MOUNT_ATTR_RDONLY: u64 = 1;

/// Makes the mount whose root `fd` names read-only, with every mount below it
/// (`mount_setattr(AT_RECURSIVE)`, Linux 5.12; runc's `rro`), leaving its other flags alone.
pub(super) fn set_readonly(fd: &OwnedFd) -> Result<(), Errno> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is a NUL-terminated empty string, `attr` is a valid `mount_attr` that
    // outlives the call and its size is passed; the kernel only reads both.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(rc).map(drop)
}

/// Unmounts everything under `<state_dir>/share` (deepest first, lazily when busy) and removes
/// the share's mount points and directory. Only empty directories and the share's own mount
/// point files are removed, so a failure to unmount can never delete host data. A missing share
/// is not an error; calling it twice is harmless.
pub fn remove(state_dir: &Path) -> Result<(), ShareError> {
    let share = share_dir(state_dir);
    match std::fs::symlink_metadata(&share) {
        Ok(_) => refuse_symlink(&share)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ShareError::RemoveEntry {
                path: share,
                source,
            })
        }
    }
    // The state directory is ours; resolving it (not the share) makes mountinfo paths match.
    let real = std::fs::canonicalize(state_dir)
        .map_err(|source| ShareError::RemoveEntry {
            path: share.clone(),
            source,
        })?
        .join(SHARE_DIR);
    unmount_all(&real)?;
    let pods = real.join(PODS_DIR);
    for entry in entries_of(&pods)? {
        remove_entries(&entry.path())?;
    }
    remove_empty_dir(&pods)?;
    remove_entries(&real)
}

/// Removes the mount points a share's entries left in `dir` (`mounts/<n>`, `rootfs`) once
/// nothing is mounted on them, then `dir` itself. A missing entry is not an error.
pub(super) fn remove_entries(dir: &Path) -> Result<(), ShareError> {
    let mounts = dir.join(MOUNTS_DIR);
    for entry in entries_of(&mounts)? {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let r = if is_dir {
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        r.map_err(|source| ShareError::RemoveEntry { path, source })?;
    }
    for d in [mounts, dir.join(ROOTFS_ENTRY), dir.to_owned()] {
        remove_empty_dir(&d)?;
    }
    Ok(())
}

/// The entries of `dir`; none when it does not exist.
fn entries_of(dir: &Path) -> Result<Vec<std::fs::DirEntry>, ShareError> {
    let err = |source| ShareError::RemoveEntry {
        path: dir.to_owned(),
        source,
    };
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.collect::<Result<_, _>>().map_err(err),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(err(e)),
    }
}

fn remove_empty_dir(dir: &Path) -> Result<(), ShareError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ShareError::RemoveEntry {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Refuses `path` when it is a symlink (never followed: it could point anywhere on the host).
pub(super) fn refuse_symlink(path: &Path) -> Result<(), ShareError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(ShareError::EscapeShare {
            path: path.to_owned(),
            source: io::Error::from_raw_os_error(libc::ELOOP),
        }),
        _ => Ok(()),
    }
}

pub(super) fn unmount_all(share: &Path) -> Result<(), ShareError> {
    for _ in 0..UNMOUNT_ROUNDS {
        let points = mounts_under(share)?;
        if points.is_empty() {
            return Ok(());
        }
        // mountinfo lists parents before children; undo in reverse.
        for p in points.iter().rev() {
            match umount2(p, MntFlags::UMOUNT_NOFOLLOW) {
                Ok(()) => {}
                Err(Errno::EBUSY) => {
                    if let Err(e) = umount2(p, MntFlags::UMOUNT_NOFOLLOW | MntFlags::MNT_DETACH) {
                        log::warn!("lazy unmount {}: {e}", p.display());
                    }
                }
                // Already gone with a parent detached before it.
                Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(e) => {
                    return Err(ShareError::Mount {
                        what: "unmount",
                        path: p.clone(),
                        source: e.into(),
                    })
                }
            }
        }
    }
    match mounts_under(share)?.into_iter().next() {
        None => Ok(()),
        Some(path) => Err(ShareError::StillMounted {
            path,
            rounds: UNMOUNT_ROUNDS,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::share::{open_member, remove_member};
    use std::io::ErrorKind;

    /// Mounting needs root (CAP_SYS_ADMIN in the initial user namespace).
    fn root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!(
            "{}: skipped: share tests bind-mount and need root",
            std::thread::current().name().unwrap_or("test")
        );
        false
    }

    struct Fixture {
        tmp: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            for d in ["state", "bundle/rootfs/etc", "vol/sub", "ro-vol"] {
                std::fs::create_dir_all(tmp.path().join(d)).unwrap();
            }
            std::fs::write(tmp.path().join("bundle/rootfs/etc/os-release"), "ID=test\n").unwrap();
            std::fs::write(tmp.path().join("hosts"), "127.0.0.1 localhost\n").unwrap();
            std::fs::write(tmp.path().join("ro-vol/data"), "keep").unwrap();
            std::os::unix::fs::symlink(tmp.path().join("vol"), tmp.path().join("vol-link"))
                .unwrap();
            Fixture { tmp }
        }
        fn p(&self, rel: &str) -> PathBuf {
            std::fs::canonicalize(self.tmp.path()).unwrap().join(rel)
        }
        fn spec(&self, mounts: serde_json::Value, readonly: bool) -> Spec {
            serde_json::from_value(serde_json::json!({
                "ociVersion": "1.0.2",
                "root": {"path": "rootfs", "readonly": readonly},
                "mounts": mounts,
            }))
            .unwrap()
        }
        fn prepare(&self, spec: &Spec) -> Result<ShareLayout, ShareError> {
            prepare(
                &self.p("state"),
                &self.p("bundle"),
                &self.p("bundle/rootfs"),
                spec,
            )
        }
        fn mounted(&self) -> Vec<PathBuf> {
            mounts_under(&self.p("")).unwrap()
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            // Never let tempdir's recursive removal walk into a leftover bind mount.
            let _ = remove(&self.p("state"));
            for p in self.mounted().iter().rev() {
                let _ = umount2(p, MntFlags::MNT_DETACH);
            }
        }
    }

    #[test]
    fn layout_binds_rootfs_and_bind_sources_and_remove_leaves_nothing() {
        if !root() {
            return;
        }
        let f = Fixture::new();
        let spec = f.spec(
            serde_json::json!([
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": f.p("hosts"),
                 "options": ["rbind", "rw"]},
                {"destination": "/data", "source": "../vol-link", "options": ["rbind"]},
                {"destination": "/ro", "type": "none", "source": f.p("ro-vol"),
                 "options": ["bind", "rw", "ro"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
            ]),
            false,
        );
        let layout = f.prepare(&spec).unwrap();
        let share = f.p("state/share");
        assert_eq!(layout.dir, share);
        assert_eq!(layout.rootfs, "rootfs");
        assert!(!layout.rootfs_readonly);
        assert_eq!(
            layout.mounts,
            vec![
                ShareEntry {
                    index: 1,
                    path: "mounts/1".into(),
                    kind: EntryKind::File,
                    readonly: false
                },
                ShareEntry {
                    index: 2,
                    path: "mounts/2".into(),
                    kind: EntryKind::Dir,
                    readonly: false
                },
                ShareEntry {
                    index: 3,
                    path: "mounts/3".into(),
                    kind: EntryKind::Dir,
                    readonly: true
                },
            ]
        );
        assert_eq!(layout.entry(2).unwrap().path, "mounts/2");
        assert!(layout.entry(0).is_none());

        // The share shows the host's files, and writes land in the sources.
        assert_eq!(
            std::fs::read_to_string(share.join("rootfs/etc/os-release")).unwrap(),
            "ID=test\n"
        );
        std::fs::write(share.join("rootfs/new"), "from share").unwrap();
        assert_eq!(
            std::fs::read_to_string(f.p("bundle/rootfs/new")).unwrap(),
            "from share"
        );
        std::fs::write(share.join("mounts/1"), "10.0.0.1 db\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(f.p("hosts")).unwrap(),
            "10.0.0.1 db\n"
        );
        std::fs::write(share.join("mounts/2/sub/x"), "vol").unwrap();
        assert_eq!(std::fs::read_to_string(f.p("vol/sub/x")).unwrap(), "vol");
        let e = std::fs::write(share.join("mounts/3/data"), "no").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        assert_eq!(std::fs::read_to_string(f.p("ro-vol/data")).unwrap(), "keep");

        // Mounted: the share itself, rootfs and three entries, all private; `pods`, shared.
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let lines: Vec<&str> = info
            .lines()
            .filter(|l| {
                l.split(' ')
                    .nth(4)
                    .is_some_and(|m| m.starts_with(share.to_str().unwrap()))
            })
            .collect();
        assert_eq!(lines.len(), 6, "{lines:#?}");
        let pods = format!(" {} ", share.join(PODS_DIR).display());
        for l in &lines {
            assert_eq!(l.contains("shared:"), l.contains(&pods), "{lines:#?}");
        }

        remove(&f.p("state")).unwrap();
        assert_eq!(f.mounted(), Vec::<PathBuf>::new());
        assert!(!share.exists());
        // The sources are untouched by the clean-up.
        assert_eq!(std::fs::read_to_string(f.p("vol/sub/x")).unwrap(), "vol");
        assert_eq!(
            std::fs::read_to_string(f.p("bundle/rootfs/new")).unwrap(),
            "from share"
        );
        assert_eq!(
            std::fs::read_to_string(f.p("hosts")).unwrap(),
            "10.0.0.1 db\n"
        );
        // A second remove (delete after a failed create) is harmless.
        remove(&f.p("state")).unwrap();
    }

    #[test]
    fn readonly_root_stays_writable_on_the_host_for_mount_targets() {
        if !root() {
            return;
        }
        let f = Fixture::new();
        let layout = f.prepare(&f.spec(serde_json::json!([]), true)).unwrap();
        assert!(
            layout.rootfs_readonly,
            "recorded for the agent, which remounts it read-only"
        );
        std::fs::write(f.p("state/share/rootfs/etc/x"), "x").unwrap();
        assert_eq!(
            std::fs::read_to_string(f.p("bundle/rootfs/etc/x")).unwrap(),
            "x"
        );
        remove(&f.p("state")).unwrap();
        assert_eq!(f.mounted(), Vec::<PathBuf>::new());
    }

    #[test]
    fn failed_create_unmounts_everything_and_removes_the_share() {
        if !root() {
            return;
        }
        let f = Fixture::new();
        let spec = f.spec(
            serde_json::json!([
                {"destination": "/a", "type": "bind", "source": f.p("vol"), "options": ["rbind"]},
                {"destination": "/b", "type": "bind", "source": f.p("missing")},
            ]),
            false,
        );
        let e = f.prepare(&spec).unwrap_err();
        assert!(matches!(
            &e,
            ShareError::ResolveSource { index: MountIndex::Mount(1), source, .. }
                if source.kind() == ErrorKind::NotFound
        ));
        assert_eq!(
            e.to_string(),
            format!("resolve source {} of mount #1", f.p("missing").display())
        );
        assert_eq!(f.mounted(), Vec::<PathBuf>::new());
        assert!(!f.p("state/share").exists());
        assert!(f.p("vol/sub").is_dir());
    }

    #[test]
    fn sources_inside_the_share_are_refused_even_through_dotdot() {
        if !root() {
            return;
        }
        let f = Fixture::new();
        let spec = f.spec(
            serde_json::json!([
                {"destination": "/x", "type": "bind", "source": "../state/share/rootfs"},
            ]),
            false,
        );
        let e = f.prepare(&spec).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "source {} of mount #0 is inside the share {}",
                f.p("state/share/rootfs").display(),
                f.p("state/share").display()
            )
        );
        assert_eq!(f.mounted(), Vec::<PathBuf>::new());
        assert!(!f.p("state/share").exists());
    }

    #[test]
    fn a_share_symlink_planted_in_the_state_dir_is_never_followed() {
        if !root() {
            return;
        }
        let f = Fixture::new();
        // The target holds a mount that a followed symlink would unmount and files it would
        // remove.
        let outside = f.p("vol");
        mount(
            Some("tmpfs"),
            &outside.join("sub"),
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        std::os::unix::fs::symlink(&outside, f.p("state/share")).unwrap();
        let want = format!(
            "{} escapes the share or cannot be reached beneath it",
            f.p("state/share").display()
        );
        let e = f
            .prepare(&f.spec(serde_json::json!([]), false))
            .unwrap_err();
        assert_eq!(e.to_string(), want);
        let e = remove(&f.p("state")).unwrap_err();
        assert_eq!(e.to_string(), want);
        assert_eq!(mounts_under(&outside).unwrap(), vec![outside.join("sub")]);
        umount2(&outside.join("sub"), MntFlags::empty()).unwrap();
    }

    /// A pod member's entries, attached after a slave copy of the namespace was taken (as the
    /// file server's is), reach that copy, read-only where asked, and go from it with
    /// `remove_member`; the sandbox's `remove` leaves no `pods/` behind.
    #[test]
    fn member_entries_reach_a_slave_copy_and_leave_with_remove_member() {
        if !root() {
            return;
        }
        let f = Fixture::new();
        std::fs::create_dir_all(f.p("bundle2/rootfs/etc")).unwrap();
        std::fs::write(f.p("bundle2/rootfs/etc/hostname"), "member\n").unwrap();
        f.prepare(&f.spec(serde_json::json!([]), false)).unwrap();
        let share = f.p("state/share");
        let (to_copy, from_main) = std::sync::mpsc::channel::<()>();
        let (to_main, from_copy) = std::sync::mpsc::channel::<Vec<String>>();
        let watched = share.clone();
        let copy = std::thread::spawn(move || {
            nix::sched::unshare(
                nix::sched::CloneFlags::CLONE_NEWNS | nix::sched::CloneFlags::CLONE_FS,
            )
            .unwrap();
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
                None::<&str>,
            )
            .unwrap();
            let look = || {
                let member = watched.join("pods/c2");
                vec![
                    std::fs::read_to_string(member.join("rootfs/etc/hostname"))
                        .unwrap_or_else(|e| e.to_string()),
                    std::fs::write(member.join("mounts/0/data"), "no")
                        .map_or_else(|e| format!("{:?}", e.raw_os_error()), |()| "written".into()),
                    std::fs::read_to_string("/proc/thread-self/mountinfo")
                        .unwrap()
                        .lines()
                        .filter(|l| l.contains("/pods/c2"))
                        .count()
                        .to_string(),
                ]
            };
            to_main.send(look()).unwrap();
            from_main.recv().unwrap();
            to_main.send(look()).unwrap();
            from_main.recv().unwrap();
            to_main.send(look()).unwrap();
        });
        // The copy exists before the member does.
        assert_eq!(from_copy.recv().unwrap()[2], "0");
        let spec = f.spec(
            serde_json::json!([
                {"destination": "/ro", "type": "bind", "source": f.p("ro-vol"),
                 "options": ["rbind", "ro"]},
            ]),
            false,
        );
        let trees = open_member(
            &f.p("state"),
            "c2",
            &f.p("bundle2"),
            &f.p("bundle2/rootfs"),
            &spec,
        )
        .unwrap();
        let layout = trees.attach(&f.p("state")).unwrap();
        assert_eq!(layout.rootfs, "pods/c2/rootfs");
        assert_eq!(layout.mounts[0].path, "pods/c2/mounts/0");
        assert!(layout.mounts[0].readonly);
        to_copy.send(()).unwrap();
        let seen = from_copy.recv().unwrap();
        assert_eq!(seen[0], "member\n");
        assert_eq!(seen[1], format!("{:?}", Some(libc::EROFS)));
        assert_eq!(seen[2], "2");
        // Here too.
        assert_eq!(
            std::fs::read_to_string(share.join("pods/c2/rootfs/etc/hostname")).unwrap(),
            "member\n"
        );
        remove_member(&f.p("state"), "c2").unwrap();
        assert!(!share.join("pods/c2").exists());
        to_copy.send(()).unwrap();
        assert_eq!(from_copy.recv().unwrap()[2], "0");
        copy.join().unwrap();
        assert_eq!(std::fs::read_to_string(f.p("ro-vol/data")).unwrap(), "keep");
        remove(&f.p("state")).unwrap();
        assert!(!share.exists());
        assert_eq!(f.mounted(), Vec::<PathBuf>::new());
    }
}
