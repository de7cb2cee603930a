//! The OS side effects of container setup, behind a trait (STYLE.md rule 5).
//!
//! [`LinuxSyscall`] makes the real calls; [`RecordingSyscall`] records them as [`Call`] values so
//! unit tests can check the exact mounts, pivots and credential changes without root. Only the
//! calls whose order and arguments matter for runc-compatibility go through here; plain file
//! reads (the container's `/etc/passwd`) do not.

use std::io;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

/// A capability set of 64 bits, bit N = capability number N (`linux/capability.h`).
pub type CapSet = u64;

/// Side effects of container setup. Errors are the raw `io::Error` of the call; callers add the
/// facts (path, field) when they wrap it.
pub trait Syscall {
    /// `mount(2)`.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// `umount2(2)`.
    fn umount2(&self, target: &Path, flags: MntFlags) -> io::Result<()>;
    /// `pivot_root(2)`.
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    /// `chroot(2)`.
    fn chroot(&self, path: &Path) -> io::Result<()>;
    /// `chdir(2)`.
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// `mkdir -p` with `mode` for the directories it creates.
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Creates an empty file if nothing exists at `path` (a bind-mount target for a file).
    fn create_file(&self, path: &Path) -> io::Result<()>;
    /// `mknod(2)` followed by `chown(2)` to `uid:gid`.
    fn mknod(
        &self,
        path: &Path,
        kind: SFlag,
        mode: Mode,
        dev: u64,
        uid: u32,
        gid: u32,
    ) -> io::Result<()>;
    /// `symlink(2)`: a link at `link` pointing to `target`.
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// Writes `data` to an existing file (sysctl, `oom_score_adj`).
    fn write_file(&self, path: &Path, data: &str) -> io::Result<()>;
    /// `sethostname(2)`.
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// `setdomainname(2)`.
    fn setdomainname(&self, name: &str) -> io::Result<()>;
    /// `setrlimit(2)` with the raw `RLIMIT_*` number.
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> io::Result<()>;
    /// `setgroups(2)`.
    fn setgroups(&self, gids: &[u32]) -> io::Result<()>;
    /// `setresgid(2)` with all three ids equal.
    fn setgid(&self, gid: u32) -> io::Result<()>;
    /// `setresuid(2)` with all three ids equal.
    fn setuid(&self, uid: u32) -> io::Result<()>;
    /// `umask(2)`.
    fn umask(&self, mask: u32);
    /// `prctl(PR_SET_KEEPCAPS)`.
    fn set_keep_caps(&self, keep: bool) -> io::Result<()>;
    /// `prctl(PR_CAPBSET_DROP)` of one capability.
    fn drop_bounding_cap(&self, cap: u32) -> io::Result<()>;
    /// `capset(2)` of the effective, permitted and inheritable sets.
    fn capset(&self, effective: CapSet, permitted: CapSet, inheritable: CapSet) -> io::Result<()>;
    /// Clears the ambient set, then raises each capability of `ambient` in it.
    fn set_ambient(&self, ambient: CapSet) -> io::Result<()>;
    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
    fn set_no_new_privs(&self) -> io::Result<()>;
    /// `ioprio_set(IOPRIO_WHO_PROCESS, 0, ioprio)`: the calling process's I/O priority, `ioprio`
    /// being `class << 13 | level` (`linux/ioprio.h`).
    fn set_io_priority(&self, ioprio: u32) -> io::Result<()>;
    /// `sched_setattr(0, attr, 0)`: the calling thread's scheduling policy and parameters.
    fn sched_setattr(&self, attr: &SchedAttr) -> io::Result<()>;
    /// `personality(2)` with `persona` (`PER_LINUX`, `PER_LINUX32`).
    fn personality(&self, persona: u64) -> io::Result<()>;
}

/// `struct sched_attr` of `sched_setattr(2)` with the utilisation clamps (56 bytes,
/// `SCHED_ATTR_SIZE_VER1`, the size runc passes through x/sys/unix).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedAttr {
    /// `sizeof(struct sched_attr)`, set by [`SchedAttr::new`].
    pub size: u32,
    /// `SCHED_OTHER` (0), `SCHED_FIFO` (1), `SCHED_RR` (2), `SCHED_BATCH` (3), `SCHED_IDLE` (5),
    /// `SCHED_DEADLINE` (6).
    pub policy: u32,
    /// `SCHED_FLAG_*` bits.
    pub flags: u64,
    /// Nice value, -20 to 19 (`SCHED_OTHER`, `SCHED_BATCH`).
    pub nice: i32,
    /// Static priority, 1 to 99 (`SCHED_FIFO`, `SCHED_RR`).
    pub priority: u32,
    /// `SCHED_DEADLINE` runtime, nanoseconds.
    pub runtime: u64,
    /// `SCHED_DEADLINE` deadline, nanoseconds.
    pub deadline: u64,
    /// `SCHED_DEADLINE` period, nanoseconds.
    pub period: u64,
    /// Utilisation clamp minimum (`SCHED_FLAG_UTIL_CLAMP_MIN`); the spec has no field for it.
    pub util_min: u32,
    /// Utilisation clamp maximum (`SCHED_FLAG_UTIL_CLAMP_MAX`); the spec has no field for it.
    pub util_max: u32,
}

impl SchedAttr {
    /// An attribute block with `size` filled in and everything else zero.
    pub fn new() -> SchedAttr {
        SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            ..SchedAttr::default()
        }
    }
}

/// Checks a `-1`-on-error libc return value.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The real thing.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(io::Error::from)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        nix::mount::umount2(target, flags).map_err(io::Error::from)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        nix::unistd::pivot_root(new_root, put_old).map_err(io::Error::from)
    }

    fn chroot(&self, path: &Path) -> io::Result<()> {
        nix::unistd::chroot(path).map_err(io::Error::from)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        nix::unistd::chdir(path).map_err(io::Error::from)
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
    }

    fn create_file(&self, path: &Path) -> io::Result<()> {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn mknod(
        &self,
        path: &Path,
        kind: SFlag,
        mode: Mode,
        dev: u64,
        uid: u32,
        gid: u32,
    ) -> io::Result<()> {
        nix::sys::stat::mknod(path, kind, mode, dev).map_err(io::Error::from)?;
        nix::unistd::chown(path, Some(uid.into()), Some(gid.into())).map_err(io::Error::from)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn write_file(&self, path: &Path, data: &str) -> io::Result<()> {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all(data.as_bytes())
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(io::Error::from)
    }

    fn setdomainname(&self, name: &str) -> io::Result<()> {
        // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call; the
        // kernel copies them and does not keep the pointer.
        check(unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) })
    }

    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: `lim` is a valid, initialised rlimit that lives across the call; the kernel
        // only reads it.
        check(unsafe { libc::setrlimit(resource, &lim) })
    }

    fn setgroups(&self, gids: &[u32]) -> io::Result<()> {
        // SAFETY: the pointer and length describe `gids`, valid for the call; gid_t is u32.
        check(unsafe { libc::setgroups(gids.len(), gids.as_ptr()) })
    }

    fn setgid(&self, gid: u32) -> io::Result<()> {
        // Raw syscall, not libc's wrapper: glibc's set*id broadcast to every thread, which a
        // single-threaded setup process does not need, and the raw call is what runc uses.
        // SAFETY: plain integer arguments.
        let rc = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
        check(rc as libc::c_int)
    }

    fn setuid(&self, uid: u32) -> io::Result<()> {
        // SAFETY: plain integer arguments.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
        check(rc as libc::c_int)
    }

    fn umask(&self, mask: u32) {
        nix::sys::stat::umask(Mode::from_bits_truncate(mask));
    }

    fn set_keep_caps(&self, keep: bool) -> io::Result<()> {
        // SAFETY: prctl with integer arguments only.
        check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, libc::c_ulong::from(keep), 0, 0, 0) })
    }

    fn drop_bounding_cap(&self, cap: u32) -> io::Result<()> {
        // SAFETY: prctl with integer arguments only.
        check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) })
    }

    fn capset(&self, effective: CapSet, permitted: CapSet, inheritable: CapSet) -> io::Result<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
        let mut header = Header {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let split = |set: CapSet, i: u32| (set >> (32 * i)) as u32;
        let data: [Data; 2] = [0, 1].map(|i| Data {
            effective: split(effective, i),
            permitted: split(permitted, i),
            inheritable: split(inheritable, i),
        });
        // SAFETY: header and data have the kernel's `__user_cap_header_struct` and two
        // `__user_cap_data_struct` layouts (version 3 takes two), both valid for the call.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
        check(rc as libc::c_int)
    }

    fn set_ambient(&self, ambient: CapSet) -> io::Result<()> {
        // SAFETY: prctl with integer arguments only.
        check(unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            )
        })?;
        for cap in 0..64u32 {
            if ambient & (1 << cap) != 0 {
                // SAFETY: prctl with integer arguments only.
                check(unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE,
                        libc::c_ulong::from(cap),
                        0,
                        0,
                    )
                })?;
            }
        }
        Ok(())
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        // SAFETY: prctl with integer arguments only.
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
    }

    fn set_io_priority(&self, ioprio: u32) -> io::Result<()> {
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        // SAFETY: ioprio_set takes integers only; who 0 is the calling process.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                0 as libc::c_long,
                libc::c_long::from(ioprio),
            )
        };
        check(rc as libc::c_int)
    }

    fn sched_setattr(&self, attr: &SchedAttr) -> io::Result<()> {
        // SAFETY: `attr` is a live, properly sized `struct sched_attr` (repr(C), `size` set to
        // its length) that the kernel only reads during the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_setattr,
                0 as libc::c_long,
                attr as *const SchedAttr,
                0 as libc::c_long,
            )
        };
        check(rc as libc::c_int)
    }

    fn personality(&self, persona: u64) -> io::Result<()> {
        // SAFETY: personality takes an integer; it returns the previous persona or -1.
        check(unsafe { libc::personality(persona as libc::c_ulong) })
    }
}

/// One recorded call of [`RecordingSyscall`].
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Call {
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount2(PathBuf, MntFlags),
    PivotRoot(PathBuf, PathBuf),
    Chroot(PathBuf),
    Chdir(PathBuf),
    MkdirAll(PathBuf, u32),
    CreateFile(PathBuf),
    Mknod {
        path: PathBuf,
        kind: SFlag,
        mode: u32,
        dev: u64,
        uid: u32,
        gid: u32,
    },
    Symlink(PathBuf, PathBuf),
    WriteFile(PathBuf, String),
    Sethostname(String),
    Setdomainname(String),
    Setrlimit(u32, u64, u64),
    Setgroups(Vec<u32>),
    Setgid(u32),
    Setuid(u32),
    Umask(u32),
    SetKeepCaps(bool),
    DropBoundingCap(u32),
    Capset(CapSet, CapSet, CapSet),
    SetAmbient(CapSet),
    SetNoNewPrivs,
    SetIoPriority(u32),
    SchedSetattr(SchedAttr),
    Personality(u64),
}

#[cfg(test)]
/// A [`Syscall`] that records every call and succeeds (or fails `target`s listed in `fail`).
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    /// The calls, in order.
    pub calls: std::cell::RefCell<Vec<Call>>,
    /// Mount targets whose `mount` fails with this errno.
    pub fail_mount: std::cell::RefCell<Option<(PathBuf, i32)>>,
}

#[cfg(test)]
impl RecordingSyscall {
    fn push(&self, c: Call) -> io::Result<()> {
        self.calls.borrow_mut().push(c);
        Ok(())
    }

    /// The recorded calls, taken.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut self.calls.borrow_mut())
    }
}

#[cfg(test)]
impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        if let Some((t, errno)) = &*self.fail_mount.borrow() {
            if t == target {
                return Err(io::Error::from_raw_os_error(*errno));
            }
        }
        self.push(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        })
    }
    fn umount2(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        self.push(Call::Umount2(target.into(), flags))
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        self.push(Call::PivotRoot(new_root.into(), put_old.into()))
    }
    fn chroot(&self, path: &Path) -> io::Result<()> {
        self.push(Call::Chroot(path.into()))
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.push(Call::Chdir(path.into()))
    }
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.push(Call::MkdirAll(path.into(), mode))
    }
    fn create_file(&self, path: &Path) -> io::Result<()> {
        self.push(Call::CreateFile(path.into()))
    }
    fn mknod(
        &self,
        path: &Path,
        kind: SFlag,
        mode: Mode,
        dev: u64,
        uid: u32,
        gid: u32,
    ) -> io::Result<()> {
        self.push(Call::Mknod {
            path: path.into(),
            kind,
            mode: mode.bits(),
            dev,
            uid,
            gid,
        })
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.push(Call::Symlink(target.into(), link.into()))
    }
    fn write_file(&self, path: &Path, data: &str) -> io::Result<()> {
        self.push(Call::WriteFile(path.into(), data.into()))
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.push(Call::Sethostname(name.into()))
    }
    fn setdomainname(&self, name: &str) -> io::Result<()> {
        self.push(Call::Setdomainname(name.into()))
    }
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> io::Result<()> {
        self.push(Call::Setrlimit(resource, soft, hard))
    }
    fn setgroups(&self, gids: &[u32]) -> io::Result<()> {
        self.push(Call::Setgroups(gids.to_vec()))
    }
    fn setgid(&self, gid: u32) -> io::Result<()> {
        self.push(Call::Setgid(gid))
    }
    fn setuid(&self, uid: u32) -> io::Result<()> {
        self.push(Call::Setuid(uid))
    }
    fn umask(&self, mask: u32) {
        self.calls.borrow_mut().push(Call::Umask(mask));
    }
    fn set_keep_caps(&self, keep: bool) -> io::Result<()> {
        self.push(Call::SetKeepCaps(keep))
    }
    fn drop_bounding_cap(&self, cap: u32) -> io::Result<()> {
        self.push(Call::DropBoundingCap(cap))
    }
    fn capset(&self, effective: CapSet, permitted: CapSet, inheritable: CapSet) -> io::Result<()> {
        self.push(Call::Capset(effective, permitted, inheritable))
    }
    fn set_ambient(&self, ambient: CapSet) -> io::Result<()> {
        self.push(Call::SetAmbient(ambient))
    }
    fn set_no_new_privs(&self) -> io::Result<()> {
        self.push(Call::SetNoNewPrivs)
    }
    fn set_io_priority(&self, ioprio: u32) -> io::Result<()> {
        self.push(Call::SetIoPriority(ioprio))
    }
    fn sched_setattr(&self, attr: &SchedAttr) -> io::Result<()> {
        self.push(Call::SchedSetattr(*attr))
    }
    fn personality(&self, persona: u64) -> io::Result<()> {
        self.push(Call::Personality(persona))
    }
}
