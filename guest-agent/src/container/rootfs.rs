//! The container's root file system: mounts, devices, pivot_root, masked and read-only paths.
//!
//! Follows runc's `libcontainer/rootfs_linux.go`: the mount namespace is made `rslave` (or
//! `linux.rootfsPropagation`), the rootfs is bind-mounted onto itself, each `mounts` entry is
//! mounted in order under it (bind mounts remounted for their flags, propagation applied
//! separately), the default devices are created, `/dev` symlinks made, and the process pivots
//! into the rootfs with runc's `pivot_root(".", ".")` trick. After the pivot, `readonlyPaths`,
//! `maskedPaths` and `root.readonly` are applied.

use std::io;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use super::syscall::Syscall;

/// Errors setting the root file system up.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A `mount(2)` failed.
    #[error("mount {fstype} {source:?} on {target} (flags {flags:?}, data {data:?})")]
    Mount {
        /// File system type or `bind`.
        fstype: String,
        /// Source (empty when none).
        source: String,
        /// Target (host-side path, under the rootfs).
        target: PathBuf,
        /// Flags.
        flags: MsFlags,
        /// Data string.
        data: Option<String>,
        /// The cause.
        #[source]
        err: io::Error,
    },
    /// A mount target could not be created.
    #[error("create mount target {path}")]
    CreateTarget {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A bind mount's source does not exist or cannot be read.
    #[error("stat bind mount source {path}")]
    StatSource {
        /// The source path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A device node could not be made.
    #[error("create device {path}")]
    CreateDevice {
        /// The device path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A mount destination is not absolute.
    #[error("mounts[{index}].destination {dest} is not an absolute path")]
    CheckDestination {
        /// The index in `mounts`.
        index: usize,
        /// The destination.
        dest: PathBuf,
    },
    /// pivot_root (or its chroot fallback) failed.
    #[error("pivot_root into {rootfs}")]
    PivotRoot {
        /// The rootfs path.
        rootfs: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A masked or read-only path could not be set up.
    #[error("{what} {path}")]
    ProtectPath {
        /// `mask` or `make read-only`.
        what: &'static str,
        /// The path in the container.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Mount flags and data parsed from OCI `mounts[].options` (runc `parseMountOptions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for `mount(2)` (including `MS_BIND`/`MS_REC` for bind and rbind).
    pub flags: MsFlags,
    /// Propagation flags, applied one by one after the mount.
    pub propagation: Vec<MsFlags>,
    /// Options the kernel parses itself (`size=`, `mode=`, `newinstance` ...), comma-joined.
    pub data: Option<String>,
}

/// Parses fstab-style options the way runc does: known flags set or clear bits, propagation
/// options are collected separately, anything else goes to the data string.
pub fn parse_mount_options(options: &[String]) -> MountOptions {
    let mut flags = MsFlags::empty();
    let mut propagation = Vec::new();
    let mut data = Vec::new();
    for o in options {
        let (clear, flag) = match o.as_str() {
            "async" => (true, MsFlags::MS_SYNCHRONOUS),
            "atime" => (true, MsFlags::MS_NOATIME),
            "bind" => (false, MsFlags::MS_BIND),
            "defaults" => (false, MsFlags::empty()),
            "dev" => (true, MsFlags::MS_NODEV),
            "diratime" => (true, MsFlags::MS_NODIRATIME),
            "dirsync" => (false, MsFlags::MS_DIRSYNC),
            "exec" => (true, MsFlags::MS_NOEXEC),
            "mand" => (false, MsFlags::MS_MANDLOCK),
            "noatime" => (false, MsFlags::MS_NOATIME),
            "nodev" => (false, MsFlags::MS_NODEV),
            "nodiratime" => (false, MsFlags::MS_NODIRATIME),
            "noexec" => (false, MsFlags::MS_NOEXEC),
            "nomand" => (true, MsFlags::MS_MANDLOCK),
            "norelatime" => (true, MsFlags::MS_RELATIME),
            "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
            "nosuid" => (false, MsFlags::MS_NOSUID),
            "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
            "relatime" => (false, MsFlags::MS_RELATIME),
            "remount" => (false, MsFlags::MS_REMOUNT),
            "ro" => (false, MsFlags::MS_RDONLY),
            "rw" => (true, MsFlags::MS_RDONLY),
            "strictatime" => (false, MsFlags::MS_STRICTATIME),
            "suid" => (true, MsFlags::MS_NOSUID),
            "sync" => (false, MsFlags::MS_SYNCHRONOUS),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                propagation.push(propagation_flag(o).unwrap_or(MsFlags::MS_PRIVATE));
                continue;
            }
            // runc-specific or id-mapping options with no mount(2) meaning here.
            "tmpcopyup" | "idmap" | "ridmap" | "rro" | "rrw" => continue,
            _ => {
                data.push(o.clone());
                continue;
            }
        };
        if clear {
            flags.remove(flag);
        } else {
            flags.insert(flag);
        }
    }
    MountOptions {
        flags,
        propagation,
        data: (!data.is_empty()).then(|| data.join(",")),
    }
}

/// The `mount(2)` flag of a propagation option (`rprivate`, `shared` ...).
pub fn propagation_flag(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Joins `unsafe_path` under `root`, resolving `..` and symlinks inside `root` so the result
/// never escapes it (the job of runc's `securejoin.SecureJoin`). Missing components are kept
/// as they are; at most 255 symlinks are followed.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> PathBuf {
    let mut parts: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: Vec<std::ffi::OsString> = unsafe_path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            parts.pop();
            continue;
        }
        let candidate: PathBuf = std::iter::once(root.as_os_str().to_os_string())
            .chain(parts.iter().cloned())
            .chain(std::iter::once(part.clone()))
            .collect();
        match std::fs::read_link(&candidate) {
            Ok(target) if links < 255 => {
                links += 1;
                if target.is_absolute() {
                    parts.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => parts.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(parts);
    out
}

fn mount_err(
    fstype: &str,
    source: Option<&Path>,
    target: &Path,
    flags: MsFlags,
    data: Option<&str>,
) -> impl FnOnce(io::Error) -> RootfsError {
    let (fstype, source, target, data) = (
        fstype.to_string(),
        source.map_or(String::new(), |p| p.display().to_string()),
        target.to_path_buf(),
        data.map(str::to_string),
    );
    move |err| RootfsError::Mount {
        fstype,
        source,
        target,
        flags,
        data,
        err,
    }
}

fn do_mount<S: Syscall>(
    sys: &S,
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), RootfsError> {
    sys.mount(source, target, fstype, flags, data)
        .map_err(mount_err(
            fstype.unwrap_or("bind"),
            source,
            target,
            flags,
            data,
        ))
}

/// Makes the mount namespace's root `rslave` (or `propagation`), then bind-mounts the rootfs
/// onto itself so it is a mount point that pivot_root accepts (runc `prepareRoot`).
///
/// # Errors
/// [`RootfsError::Mount`].
pub fn prepare_root<S: Syscall>(
    sys: &S,
    rootfs: &Path,
    propagation: Option<MsFlags>,
) -> Result<(), RootfsError> {
    let flag = propagation.unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    do_mount(sys, None, Path::new("/"), None, flag, None)?;
    do_mount(
        sys,
        Some(rootfs),
        rootfs,
        Some("bind"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
}

/// Mounts one `mounts` entry under `rootfs` (runc `mountToRootfs`).
///
/// # Errors
/// [`RootfsError`] naming the mount's index, target and cause.
pub fn mount_entry<S: Syscall>(
    sys: &S,
    rootfs: &Path,
    index: usize,
    m: &Mount,
) -> Result<(), RootfsError> {
    if !m.destination().is_absolute() {
        return Err(RootfsError::CheckDestination {
            index,
            dest: m.destination().clone(),
        });
    }
    let dest = secure_join(rootfs, m.destination());
    let opts = parse_mount_options(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().as_deref().unwrap_or("none");
    let create = |p: &Path| {
        sys.mkdir_all(p, 0o755)
            .map_err(|source| RootfsError::CreateTarget {
                path: p.to_path_buf(),
                source,
            })
    };
    let is_bind = typ == "bind" || opts.flags.contains(MsFlags::MS_BIND);
    if is_bind {
        let source = m.source().clone().unwrap_or_default();
        let meta = std::fs::metadata(&source).map_err(|e| RootfsError::StatSource {
            path: source.clone(),
            source: e,
        })?;
        if meta.is_dir() {
            create(&dest)?;
        } else {
            if let Some(parent) = dest.parent() {
                create(parent)?;
            }
            sys.create_file(&dest)
                .map_err(|source| RootfsError::CreateTarget {
                    path: dest.clone(),
                    source,
                })?;
        }
        let bind = opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC) | MsFlags::MS_BIND;
        do_mount(sys, Some(&source), &dest, Some("bind"), bind, None)?;
        let rest = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !rest.is_empty() {
            let flags = rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
            do_mount(sys, None, &dest, None, flags, None)?;
        }
    } else {
        create(&dest)?;
        let fstype = if typ == "cgroup" { "cgroup2" } else { typ };
        let source = m.source().clone().unwrap_or_else(|| PathBuf::from(fstype));
        let data = opts.data.as_deref();
        match sys.mount(Some(&source), &dest, Some(fstype), opts.flags, data) {
            Ok(()) => {}
            // Without its own network namespace a container may not mount sysfs; runc then
            // bind-mounts the host's /sys read-only instead. Same for mqueue without an IPC ns.
            Err(e)
                if e.raw_os_error() == Some(libc::EPERM)
                    && (fstype == "sysfs" || fstype == "mqueue") =>
            {
                let host = if fstype == "sysfs" {
                    "/sys"
                } else {
                    "/dev/mqueue"
                };
                let host = Path::new(host);
                let rbind = MsFlags::MS_BIND | MsFlags::MS_REC;
                do_mount(sys, Some(host), &dest, Some("bind"), rbind, None)?;
                let flags = opts.flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
                do_mount(sys, None, &dest, None, flags, None)?;
            }
            Err(e) => return Err(mount_err(fstype, Some(&source), &dest, opts.flags, data)(e)),
        }
    }
    for p in &opts.propagation {
        do_mount(sys, None, &dest, None, *p, None)?;
    }
    Ok(())
}

/// The devices every container gets (OCI runtime-spec config-linux.md "Default Devices"):
/// `(name, major, minor)`, all character devices with mode 0666.
pub const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Creates the default devices, then `linux.devices`, under `rootfs/dev` (runc
/// `createDevices`), then the `/dev` symlinks (`fd`, `stdin`, `stdout`, `stderr`, `ptmx`).
/// A device that already exists is left as it is.
///
/// # Errors
/// [`RootfsError::CreateDevice`].
pub fn create_devices<S: Syscall>(
    sys: &S,
    rootfs: &Path,
    devices: &[LinuxDevice],
) -> Result<(), RootfsError> {
    let dev = rootfs.join("dev");
    sys.mkdir_all(&dev, 0o755)
        .map_err(|source| RootfsError::CreateTarget {
            path: dev.clone(),
            source,
        })?;
    let ignore_exists = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    };
    // In a user namespace mknod is not allowed: bind-mount the host's node instead, as runc
    // does (`bindMountDeviceNode`).
    let make = |path: &Path, host: &Path, kind, mode, devno, uid, gid| -> io::Result<()> {
        match ignore_exists(sys.mknod(path, kind, mode, devno, uid, gid)) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                sys.create_file(path)?;
                sys.mount(Some(host), path, Some("bind"), MsFlags::MS_BIND, None)
            }
            other => other,
        }
    };
    for (name, major, minor) in DEFAULT_DEVICES {
        let path = dev.join(name);
        let devno = nix::sys::stat::makedev(major, minor);
        let mode = Mode::from_bits_truncate(0o666);
        let host = Path::new("/dev").join(name);
        make(&path, &host, SFlag::S_IFCHR, mode, devno, 0, 0)
            .map_err(|source| RootfsError::CreateDevice { path, source })?;
    }
    for d in devices {
        let path = secure_join(rootfs, d.path());
        if let Some(parent) = path.parent() {
            sys.mkdir_all(parent, 0o755)
                .map_err(|source| RootfsError::CreateTarget {
                    path: parent.to_path_buf(),
                    source,
                })?;
        }
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let devno = nix::sys::stat::makedev(d.major() as u64, d.minor() as u64);
        let mode = Mode::from_bits_truncate(d.file_mode().unwrap_or(0o666));
        let (uid, gid) = (d.uid().unwrap_or(0), d.gid().unwrap_or(0));
        make(&path, d.path(), kind, mode, devno, uid, gid)
            .map_err(|source| RootfsError::CreateDevice { path, source })?;
    }
    for (target, link) in [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ] {
        let path = dev.join(link);
        ignore_exists(sys.symlink(Path::new(target), &path))
            .map_err(|source| RootfsError::CreateDevice { path, source })?;
    }
    Ok(())
}

/// Enters `rootfs` as `/` with runc's `pivot_root(".", ".")` sequence: the old root ends up
/// stacked on the new one, is made `rslave` and lazily unmounted. When the current root cannot
/// be pivoted away from (`EINVAL`: an initramfs), falls back to runc's `--no-pivot` path:
/// `MS_MOVE` the rootfs onto `/` and `chroot(".")`.
///
/// # Errors
/// [`RootfsError::PivotRoot`].
pub fn pivot_root<S: Syscall>(sys: &S, rootfs: &Path) -> Result<(), RootfsError> {
    let err = |source| RootfsError::PivotRoot {
        rootfs: rootfs.to_path_buf(),
        source,
    };
    sys.chdir(rootfs).map_err(err)?;
    match sys.pivot_root(Path::new("."), Path::new(".")) {
        Ok(()) => {
            let dot = Path::new(".");
            sys.mount(None, dot, None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)
                .map_err(err)?;
            sys.umount2(dot, MntFlags::MNT_DETACH).map_err(err)?;
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            sys.mount(Some(rootfs), Path::new("/"), None, MsFlags::MS_MOVE, None)
                .map_err(err)?;
            sys.chroot(Path::new(".")).map_err(err)?;
        }
        Err(e) => return Err(err(e)),
    }
    sys.chdir(Path::new("/")).map_err(err)
}

/// The `MS_NOSUID|MS_NODEV|MS_NOEXEC|...` flags a mount already has, which a bind remount
/// must repeat (the kernel refuses to clear locked flags).
fn existing_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let Ok(st) = nix::sys::statvfs::statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

/// Makes `path` (in the container, after the pivot) read-only: a recursive bind onto itself,
/// then a read-only remount keeping its other flags (runc `readonlyPath`). A missing path is
/// skipped, as runc does.
///
/// # Errors
/// [`RootfsError::ProtectPath`].
pub fn readonly_path<S: Syscall>(sys: &S, path: &Path) -> Result<(), RootfsError> {
    let err = |source| RootfsError::ProtectPath {
        what: "make read-only",
        path: path.to_path_buf(),
        source,
    };
    match sys.mount(
        Some(path),
        path,
        Some("bind"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    ) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        r => r.map_err(err)?,
    }
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | existing_flags(path);
    sys.mount(None, path, None, flags, None).map_err(err)
}

/// Remounts `/` read-only (`root.readonly`, runc `setReadonly`).
///
/// # Errors
/// [`RootfsError::ProtectPath`].
pub fn readonly_root<S: Syscall>(sys: &S) -> Result<(), RootfsError> {
    let root = Path::new("/");
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | existing_flags(root);
    sys.mount(None, root, None, flags, None)
        .map_err(|source| RootfsError::ProtectPath {
            what: "make read-only",
            path: root.to_path_buf(),
            source,
        })
}

/// Masks `path`: `/dev/null` bound over a file, a read-only empty tmpfs over a directory (runc
/// `maskPath`). A missing path is skipped.
///
/// # Errors
/// [`RootfsError::ProtectPath`].
pub fn mask_path<S: Syscall>(sys: &S, path: &Path) -> Result<(), RootfsError> {
    let err = |source| RootfsError::ProtectPath {
        what: "mask",
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    if meta.is_dir() {
        sys.mount(
            Some(Path::new("tmpfs")),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None,
        )
        .map_err(err)
    } else {
        sys.mount(
            Some(Path::new("/dev/null")),
            path,
            Some("bind"),
            MsFlags::MS_BIND,
            None,
        )
        .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::syscall::{Call, RecordingSyscall};
    use oci_spec::runtime::MountBuilder;

    fn opts(o: &[&str]) -> MountOptions {
        parse_mount_options(&o.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_parse_like_runc() {
        let o = opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data.as_deref(), Some("mode=755,size=65536k"));
        let o = opts(&["rbind", "ro", "rw", "rprivate", "noexec"]);
        assert_eq!(
            o.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_NOEXEC
        );
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(o.data, None);
    }

    #[test]
    fn secure_join_stays_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("a/abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("a/b/up")).unwrap();
        assert_eq!(secure_join(root, Path::new("/a/b")), root.join("a/b"));
        assert_eq!(secure_join(root, Path::new("/../../x")), root.join("x"));
        assert_eq!(
            secure_join(root, Path::new("/a/abs/passwd")),
            root.join("etc/passwd")
        );
        assert_eq!(secure_join(root, Path::new("/a/b/up/y")), root.join("y"));
    }

    #[test]
    fn tmpfs_and_bind_mounts_make_the_right_calls() {
        let sys = RecordingSyscall::default();
        let root = Path::new("/r");
        let tmpfs = MountBuilder::default()
            .destination("/dev")
            .typ("tmpfs")
            .source("tmpfs")
            .options(vec!["nosuid".into(), "mode=755".into()])
            .build()
            .unwrap();
        mount_entry(&sys, root, 0, &tmpfs).unwrap();
        let src = tempfile::tempdir().unwrap();
        let bind = MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source(src.path())
            .options(vec!["rbind".into(), "ro".into(), "rslave".into()])
            .build()
            .unwrap();
        mount_entry(&sys, root, 1, &bind).unwrap();
        let calls = sys.take();
        assert_eq!(
            calls,
            vec![
                Call::MkdirAll("/r/dev".into(), 0o755),
                Call::Mount {
                    source: Some("tmpfs".into()),
                    target: "/r/dev".into(),
                    fstype: Some("tmpfs".into()),
                    flags: MsFlags::MS_NOSUID,
                    data: Some("mode=755".into()),
                },
                Call::MkdirAll("/r/data".into(), 0o755),
                Call::Mount {
                    source: Some(src.path().into()),
                    target: "/r/data".into(),
                    fstype: Some("bind".into()),
                    flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                    data: None,
                },
                Call::Mount {
                    source: None,
                    target: "/r/data".into(),
                    fstype: None,
                    flags: MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                    data: None,
                },
                Call::Mount {
                    source: None,
                    target: "/r/data".into(),
                    fstype: None,
                    flags: MsFlags::MS_SLAVE | MsFlags::MS_REC,
                    data: None,
                },
            ]
        );
    }

    #[test]
    fn relative_destination_is_refused_with_its_index() {
        let sys = RecordingSyscall::default();
        let m = MountBuilder::default()
            .destination("proc")
            .typ("proc")
            .build()
            .unwrap();
        let err = mount_entry(&sys, Path::new("/r"), 3, &m).unwrap_err();
        assert_eq!(
            err.to_string(),
            "mounts[3].destination proc is not an absolute path"
        );
        assert!(sys.take().is_empty());
    }

    #[test]
    fn sysfs_without_netns_falls_back_to_rbind() {
        let sys = RecordingSyscall::default();
        *sys.fail_mount.borrow_mut() = Some(("/r/sys".into(), libc::EPERM));
        let m = MountBuilder::default()
            .destination("/sys")
            .typ("sysfs")
            .source("sysfs")
            .options(vec!["ro".into(), "nosuid".into()])
            .build()
            .unwrap();
        // The double fails every mount on /r/sys, so the fallback's own mount fails too:
        // the error must name the bind it tried.
        let err = mount_entry(&sys, Path::new("/r"), 0, &m).unwrap_err();
        assert!(
            err.to_string().starts_with("mount bind \"/sys\" on /r/sys"),
            "{err}"
        );
    }

    #[test]
    fn pivot_uses_runc_dot_sequence() {
        let sys = RecordingSyscall::default();
        pivot_root(&sys, Path::new("/r")).unwrap();
        assert_eq!(
            sys.take(),
            vec![
                Call::Chdir("/r".into()),
                Call::PivotRoot(".".into(), ".".into()),
                Call::Mount {
                    source: None,
                    target: ".".into(),
                    fstype: None,
                    flags: MsFlags::MS_SLAVE | MsFlags::MS_REC,
                    data: None,
                },
                Call::Umount2(".".into(), MntFlags::MNT_DETACH),
                Call::Chdir("/".into()),
            ]
        );
    }

    #[test]
    fn default_devices_and_symlinks() {
        let sys = RecordingSyscall::default();
        create_devices(&sys, Path::new("/r"), &[]).unwrap();
        let calls = sys.take();
        assert!(calls.contains(&Call::Mknod {
            path: "/r/dev/null".into(),
            kind: SFlag::S_IFCHR,
            mode: 0o666,
            dev: nix::sys::stat::makedev(1, 3),
            uid: 0,
            gid: 0
        }));
        assert!(calls.contains(&Call::Symlink("pts/ptmx".into(), "/r/dev/ptmx".into())));
        let nodes = calls
            .iter()
            .filter(|c| matches!(c, Call::Mknod { .. }))
            .count();
        assert_eq!(nodes, 6);
    }
}
