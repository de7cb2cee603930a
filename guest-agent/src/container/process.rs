//! The process side of container setup: rlimits, user, capabilities, no_new_privs, cwd, env
//! and the `args[0]` lookup, in runc's order (`libcontainer/init_linux.go` `finalizeNamespace`,
//! `standard_init_linux.go`).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, PosixRlimit, PosixRlimitType,
};

use super::syscall::{CapSet, Syscall};

/// Errors preparing the process's credentials and program.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// `setrlimit` refused a `process.rlimits` entry.
    #[error("set process.rlimits {name} to soft {soft} hard {hard}")]
    SetRlimit {
        /// `RLIMIT_*` name.
        name: String,
        /// Soft limit.
        soft: u64,
        /// Hard limit.
        hard: u64,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A credential call failed.
    #[error("{step} for process.user uid {uid} gid {gid}")]
    SetUser {
        /// The call.
        step: &'static str,
        /// Target uid.
        uid: u32,
        /// Target gid.
        gid: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A capability call failed.
    #[error("apply process.capabilities: {step}")]
    SetCapabilities {
        /// The call.
        step: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("set process.noNewPrivileges")]
    SetNoNewPrivs(#[source] io::Error),
    /// `chdir` to the cwd failed (runc's wording, with the cause as Go prints it:
    /// `chdir to cwd ("/secret") set in config.json failed: permission denied`).
    #[error("chdir to cwd ({cwd:?}) set in config.json failed")]
    Chdir {
        /// The cwd.
        cwd: PathBuf,
        /// The cause.
        #[source]
        source: GoError,
    },
    /// `args[0]` is not an executable on `PATH` (runc's wording, from Go's `exec.LookPath`).
    #[error("exec: {name:?}: executable file not found in $PATH")]
    FindExecutable {
        /// `args[0]`.
        name: String,
    },
    /// `args[0]` names a path that is not an executable file.
    #[error("exec: {name:?}: {reason}")]
    CheckExecutable {
        /// `args[0]`.
        name: String,
        /// Why.
        reason: String,
    },
    /// `process.args` is empty.
    #[error("process.args must not be empty")]
    CheckArgs,
}

/// An OS error as Go, and so runc, prints it: the errno's description starting in lowercase,
/// without Rust's ` (os error N)` (`permission denied`, `not a directory`); other errors as
/// they are.
#[derive(Debug, thiserror::Error)]
#[error("{}", go_text(.0))]
pub struct GoError(pub io::Error);

/// The text of `e` as Go prints an errno (`syscall.Errno.Error`).
pub fn go_text(e: &io::Error) -> String {
    let Some(errno) = e.raw_os_error() else {
        return e.to_string();
    };
    let desc = nix::errno::Errno::from_raw(errno).desc();
    let mut chars = desc.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => e.to_string(),
    }
}

/// The kernel number of an OCI capability (`linux/capability.h`).
pub fn capability_number(c: Capability) -> u32 {
    use Capability::*;
    match c {
        Chown => 0,
        DacOverride => 1,
        DacReadSearch => 2,
        Fowner => 3,
        Fsetid => 4,
        Kill => 5,
        Setgid => 6,
        Setuid => 7,
        Setpcap => 8,
        LinuxImmutable => 9,
        NetBindService => 10,
        NetBroadcast => 11,
        NetAdmin => 12,
        NetRaw => 13,
        IpcLock => 14,
        IpcOwner => 15,
        SysModule => 16,
        SysRawio => 17,
        SysChroot => 18,
        SysPtrace => 19,
        SysPacct => 20,
        SysAdmin => 21,
        SysBoot => 22,
        SysNice => 23,
        SysResource => 24,
        SysTime => 25,
        SysTtyConfig => 26,
        Mknod => 27,
        Lease => 28,
        AuditWrite => 29,
        AuditControl => 30,
        Setfcap => 31,
        MacOverride => 32,
        MacAdmin => 33,
        Syslog => 34,
        WakeAlarm => 35,
        BlockSuspend => 36,
        AuditRead => 37,
        Perfmon => 38,
        Bpf => 39,
        CheckpointRestore => 40,
    }
}

/// A capability set as a bitmask.
pub fn cap_mask(set: Option<&Capabilities>) -> CapSet {
    set.map_or(0, |s| {
        s.iter().fold(0, |m, c| m | (1u64 << capability_number(*c)))
    })
}

/// The highest capability number the running kernel knows (`/proc/sys/kernel/cap_last_cap`).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The raw `RLIMIT_*` number of an OCI rlimit type.
pub fn rlimit_number(t: PosixRlimitType) -> u32 {
    use PosixRlimitType::*;
    match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// Applies `process.rlimits` in order.
///
/// # Errors
/// [`ProcessError::SetRlimit`] naming the limit.
pub fn apply_rlimits<S: Syscall>(sys: &S, rlimits: &[PosixRlimit]) -> Result<(), ProcessError> {
    for r in rlimits {
        sys.setrlimit(rlimit_number(r.typ()), r.soft(), r.hard())
            .map_err(|source| ProcessError::SetRlimit {
                name: r.typ().to_string(),
                soft: r.soft(),
                hard: r.hard(),
                source,
            })?;
    }
    Ok(())
}

/// The credentials to switch to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary groups (`additionalGids`).
    pub groups: Vec<u32>,
    /// Whether `setgroups` may be called (false in a user namespace with `setgroups` denied).
    pub set_groups: bool,
}

/// Switches to `creds` and applies `caps` in runc's order: drop the bounding set, keep
/// capabilities across the uid change, `setgroups`/`setresgid`/`setresuid`, then `chdir(cwd)`
/// as the new user, stop keeping capabilities, and `capset` the effective, permitted and
/// inheritable sets and the ambient set.
///
/// # Errors
/// [`ProcessError::SetCapabilities`], [`ProcessError::SetUser`] or [`ProcessError::Chdir`].
pub fn switch_user<S: Syscall>(
    sys: &S,
    creds: &Credentials,
    caps: Option<&LinuxCapabilities>,
    cwd: &Path,
    last_cap: u32,
) -> Result<(), ProcessError> {
    let cap_err = |step| move |source| ProcessError::SetCapabilities { step, source };
    let user_err = |step| {
        move |source| ProcessError::SetUser {
            step,
            uid: creds.uid,
            gid: creds.gid,
            source,
        }
    };
    if let Some(caps) = caps {
        let bounding = cap_mask(caps.bounding().as_ref());
        for cap in 0..=last_cap {
            if bounding & (1 << cap) == 0 {
                sys.drop_bounding_cap(cap)
                    .map_err(cap_err("drop bounding capability"))?;
            }
        }
        sys.set_keep_caps(true).map_err(cap_err("set keep-caps"))?;
    }
    if creds.set_groups {
        sys.setgroups(&creds.groups)
            .map_err(user_err("setgroups"))?;
    }
    sys.setgid(creds.gid).map_err(user_err("setresgid"))?;
    sys.setuid(creds.uid).map_err(user_err("setresuid"))?;
    sys.chdir(cwd).map_err(|e| ProcessError::Chdir {
        cwd: cwd.to_path_buf(),
        source: GoError(e),
    })?;
    if let Some(caps) = caps {
        sys.set_keep_caps(false)
            .map_err(cap_err("clear keep-caps"))?;
        sys.capset(
            cap_mask(caps.effective().as_ref()),
            cap_mask(caps.permitted().as_ref()),
            cap_mask(caps.inheritable().as_ref()),
        )
        .map_err(cap_err("capset"))?;
        sys.set_ambient(cap_mask(caps.ambient().as_ref()))
            .map_err(cap_err("raise ambient capabilities"))?;
    }
    Ok(())
}

/// `HOME` for `uid` from the container's `/etc/passwd` (read at `passwd`), as runc does when
/// the env has no `HOME`; `/` when the user is not listed.
pub fn home_of(passwd: &Path, uid: u32) -> String {
    std::fs::read_to_string(passwd)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
            })
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_string())
}

/// The env of the process: `process.env` plus `HOME` from `/etc/passwd` when missing.
pub fn build_env(env: &[String], passwd: &Path, uid: u32) -> Vec<String> {
    let mut out = env.to_vec();
    if !out.iter().any(|e| e.starts_with("HOME=")) {
        out.push(format!("HOME={}", home_of(passwd, uid)));
    }
    out
}

/// Go's `exec` `findExecutable`, as runc's lookup of `args[0]` reports it: a failed stat is
/// `stat <path>: <errno>`, a directory `is a directory`, a file without an execute bit
/// `permission denied`.
fn check_executable(p: &Path) -> Result<(), String> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Err("is a directory".into()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err("permission denied".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("stat {}: {}", p.display(), go_text(&e))),
    }
}

/// Finds `args[0]` the way runc does (Go's `exec.LookPath` on the process's `PATH`): a name with
/// a `/` is used as it is; otherwise each `PATH` entry is tried in order. Runs inside the
/// container after the pivot, so paths are the container's.
///
/// # Errors
/// [`ProcessError::FindExecutable`] (runc's `executable file not found in $PATH`) or
/// [`ProcessError::CheckExecutable`] for a path that is not executable.
pub fn look_path(name: &str, env: &[String]) -> Result<PathBuf, ProcessError> {
    if name.contains('/') {
        return check_executable(Path::new(name))
            .map(|()| PathBuf::from(name))
            .map_err(|reason| ProcessError::CheckExecutable {
                name: name.to_string(),
                reason,
            });
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        if check_executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(ProcessError::FindExecutable {
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::syscall::{Call, RecordingSyscall};
    use oci_spec::runtime::LinuxCapabilitiesBuilder;

    #[test]
    fn capability_masks_match_the_kernel_numbers() {
        let set: Capabilities = [
            Capability::Chown,
            Capability::NetBindService,
            Capability::SysAdmin,
        ]
        .into_iter()
        .collect();
        assert_eq!(cap_mask(Some(&set)), 1 | (1 << 10) | (1 << 21));
        assert_eq!(capability_number(Capability::CheckpointRestore), 40);
    }

    #[test]
    fn switch_user_follows_runc_order() {
        let sys = RecordingSyscall::default();
        let kill: Capabilities = [Capability::Kill].into_iter().collect();
        let caps = LinuxCapabilitiesBuilder::default()
            .bounding(kill.clone())
            .effective(kill.clone())
            .permitted(kill.clone())
            .inheritable(Capabilities::new())
            .ambient(Capabilities::new())
            .build()
            .unwrap();
        let creds = Credentials {
            uid: 1000,
            gid: 100,
            groups: vec![10, 20],
            set_groups: true,
        };
        switch_user(&sys, &creds, Some(&caps), Path::new("/home"), 6).unwrap();
        let k = 1 << 5;
        assert_eq!(
            sys.take(),
            vec![
                Call::DropBoundingCap(0),
                Call::DropBoundingCap(1),
                Call::DropBoundingCap(2),
                Call::DropBoundingCap(3),
                Call::DropBoundingCap(4),
                Call::DropBoundingCap(6),
                Call::SetKeepCaps(true),
                Call::Setgroups(vec![10, 20]),
                Call::Setgid(100),
                Call::Setuid(1000),
                Call::Chdir("/home".into()),
                Call::SetKeepCaps(false),
                Call::Capset(k, k, 0),
                Call::SetAmbient(0),
            ]
        );
    }

    #[test]
    fn look_path_reports_runc_error() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        let env = vec![format!("PATH=/nonexistent:{}", dir.path().display())];
        assert_eq!(look_path("tool", &env).unwrap(), exe);
        assert_eq!(
            look_path("plain", &env).unwrap_err().to_string(),
            r#"exec: "plain": executable file not found in $PATH"#
        );
        assert_eq!(
            look_path("x", &[]).unwrap_err().to_string(),
            r#"exec: "x": executable file not found in $PATH"#
        );
        assert_eq!(
            look_path(plain.to_str().unwrap(), &env)
                .unwrap_err()
                .to_string(),
            format!("exec: {:?}: permission denied", plain.display().to_string())
        );
        // A path that does not exist: Go's stat error, as runc prints it.
        let missing = dir.path().join("missing");
        assert_eq!(
            look_path(missing.to_str().unwrap(), &env)
                .unwrap_err()
                .to_string(),
            format!(
                "exec: {:?}: stat {}: no such file or directory",
                missing.display().to_string(),
                missing.display()
            )
        );
        assert_eq!(
            look_path(dir.path().to_str().unwrap(), &env)
                .unwrap_err()
                .to_string(),
            format!(
                "exec: {:?}: is a directory",
                dir.path().display().to_string()
            )
        );
    }

    #[test]
    fn os_errors_read_as_go_prints_them() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(go_text(&e(libc::EACCES)), "permission denied");
        assert_eq!(go_text(&e(libc::ENOTDIR)), "not a directory");
        assert_eq!(go_text(&e(libc::ENOENT)), "no such file or directory");
        assert_eq!(go_text(&io::Error::other("plain")), "plain");
        let chdir = ProcessError::Chdir {
            cwd: "/secret".into(),
            source: GoError(e(libc::EACCES)),
        };
        let cause = std::error::Error::source(&chdir).unwrap().to_string();
        assert_eq!(
            format!("{chdir}: {cause}"),
            r#"chdir to cwd ("/secret") set in config.json failed: permission denied"#
        );
    }

    #[test]
    fn home_comes_from_the_containers_passwd() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(home_of(&passwd, 1000), "/home/u");
        assert_eq!(home_of(&passwd, 5), "/");
        let env = build_env(&["A=1".into()], &passwd, 0);
        assert_eq!(env, vec!["A=1".to_string(), "HOME=/root".into()]);
        let env = build_env(&["HOME=/x".into()], &passwd, 0);
        assert_eq!(env, vec!["HOME=/x".to_string()]);
    }

    #[test]
    fn rlimits_are_applied_with_their_numbers() {
        let sys = RecordingSyscall::default();
        let r: PosixRlimit =
            serde_json::from_str(r#"{"type":"RLIMIT_NOFILE","soft":1024,"hard":2048}"#).unwrap();
        apply_rlimits(&sys, &[r]).unwrap();
        assert_eq!(
            sys.take(),
            vec![Call::Setrlimit(libc::RLIMIT_NOFILE, 1024, 2048)]
        );
    }
}
