//! The setup process: a clean, single-threaded re-exec of the agent that builds one container
//! process and `execve`s it (STYLE.md rule 12: the multi-threaded agent never forks).
//!
//! The agent spawns `/proc/self/exe __setup` (posix_spawn, no fork of the agent) with one end
//! of a socketpair as its fd 0, then sends over it: one byte carrying the process's three stdio
//! fds (`SCM_RIGHTS`), then a framed [`SetupRequest`]. The setup process (S):
//!
//! 1. joins the container's cgroup, then unshares the requested namespaces (create) or `setns`es
//!    into the init's (exec);
//! 2. forks the container process (C) and reports [`SetupReport::Forked`] with C's PID, then
//!    exits; C is reparented to the agent (PID 1 in the guest, a child subreaper elsewhere);
//! 3. C does everything runc's init does up to the `execve`, reports [`SetupReport::Ready`]
//!    (or [`SetupReport::Failed`] with a typed error), and blocks reading one byte;
//! 4. on [`START`], C `execve`s; the socket is close-on-exec, so the agent reads EOF once the
//!    program runs, or a `Failed` frame if `execve` failed.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, Process};
use seccompiler::BpfProgram;
use serde::{Deserialize, Serialize};
use vessel_protocol::{read_message, write_message, Code, CreateContainer, RemoteError};

use super::process::{self, Credentials, ProcessError};
use super::rootfs::{self, RootfsError};
use super::sched::{self, SchedError};
use super::seccomp::{self, SeccompError};
use super::syscall::{LinuxSyscall, Syscall};

/// The byte the agent sends to let a prepared process `execve`.
pub const START: u8 = b'S';

/// What the setup process is asked to build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SetupRequest {
    /// A container's init process, in new namespaces.
    Create {
        /// The container.
        config: Box<CreateContainer>,
        /// The container's cgroup directory, if the agent manages one.
        cgroup: Option<PathBuf>,
    },
    /// An additional process in the namespaces of `init_pid`.
    Exec {
        /// Agent-namespace PID of the container's init.
        init_pid: i32,
        /// The process.
        process: Box<Process>,
        /// The container's `linux.seccomp`, applied to exec'd processes too (as runc does).
        seccomp: Option<LinuxSeccomp>,
        /// The container's cgroup directory.
        cgroup: Option<PathBuf>,
    },
}

/// What the setup and container processes report back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SetupReport {
    /// The container process exists; PID in the agent's PID namespace.
    Forked {
        /// The PID.
        pid: i32,
    },
    /// A new user namespace exists: the agent writes its id maps, then sends one byte
    /// (1 = written).
    MapIds,
    /// The process has a terminal: the pty master follows as one byte with `SCM_RIGHTS`.
    Console,
    /// Everything is set up; the process waits for [`START`].
    Ready,
    /// Setup (or the `execve`) failed.
    Failed(RemoteError),
}

/// Errors of container setup, each with a [`Code`] for the host.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Talking to the agent failed.
    #[error("exchange setup messages with the agent")]
    ExchangeMessage(#[source] io::Error),
    /// The namespace configuration cannot be applied.
    #[error("linux.namespaces: {reason}")]
    CheckNamespaces {
        /// Why.
        reason: String,
    },
    /// `unshare` or `setns` failed.
    #[error("{op} {what} namespace")]
    EnterNamespace {
        /// `unshare` or `setns`.
        op: &'static str,
        /// Which namespace.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Joining the cgroup failed.
    #[error("join cgroup {path}")]
    JoinCgroup {
        /// The cgroup.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `fork` failed.
    #[error("fork container process")]
    Fork(#[source] io::Error),
    /// Root file system setup failed.
    #[error("prepare rootfs")]
    Rootfs(#[from] RootfsError),
    /// One `mounts` entry could not be mounted.
    #[error("mounts[{index}] ({destination})")]
    MountEntry {
        /// Index in `mounts`.
        index: usize,
        /// Its destination.
        destination: String,
        /// The cause.
        #[source]
        source: Box<RootfsError>,
    },
    /// Credentials, rlimits, cwd or args[0] failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// Seccomp translation or installation failed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// A field that cannot be applied.
    #[error("{field}: {reason}")]
    CheckField {
        /// The spec field.
        field: String,
        /// Why.
        reason: String,
    },
    /// `process.ioPriority`, `process.scheduler` or `linux.personality` could not be applied.
    #[error(transparent)]
    Sched(#[from] SchedError),
    /// A step that does not fit the others failed.
    #[error("{step}")]
    Step {
        /// What was done.
        step: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_code(e: &io::Error) -> Code {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => Code::PermissionDenied,
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::EINVAL) | Some(libc::ENODEV) => {
            Code::InvalidArgument
        }
        _ => Code::Internal,
    }
}

impl SetupError {
    /// The status code the host sees.
    pub fn code(&self) -> Code {
        match self {
            SetupError::CheckNamespaces { .. } | SetupError::CheckField { .. } => {
                Code::InvalidArgument
            }
            SetupError::Process(
                ProcessError::FindExecutable { .. }
                | ProcessError::CheckExecutable { .. }
                | ProcessError::CheckArgs,
            ) => Code::InvalidArgument,
            SetupError::Process(ProcessError::Chdir { source, .. }) => io_code(&source.0),
            SetupError::Seccomp(SeccompError::InstallFilter { .. }) => Code::Internal,
            SetupError::Seccomp(_) => Code::InvalidArgument,
            SetupError::Rootfs(RootfsError::CheckDestination { .. }) => Code::InvalidArgument,
            SetupError::Rootfs(RootfsError::StatSource { source, .. }) => io_code(source),
            SetupError::Rootfs(RootfsError::Mount { err, .. }) => io_code(err),
            SetupError::MountEntry { source, .. } => match source.as_ref() {
                RootfsError::Mount { err, .. } => io_code(err),
                RootfsError::StatSource { source, .. } => io_code(source),
                _ => Code::InvalidArgument,
            },
            SetupError::EnterNamespace { source, .. } | SetupError::Step { source, .. } => {
                io_code(source)
            }
            SetupError::Sched(e) => io_code(e.io_error()),
            _ => Code::Internal,
        }
    }

    /// The error as it crosses the wire.
    pub fn to_remote(&self) -> RemoteError {
        RemoteError::from_error(self.code(), self)
    }
}

fn step(step: impl Into<String>) -> impl FnOnce(io::Error) -> SetupError {
    let step = step.into();
    move |source| SetupError::Step { step, source }
}

/// The clone flag of a namespace type.
pub fn namespace_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Entry point of `vessel-agent __setup`: never returns.
pub fn main() -> ! {
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vessel-agent setup: {e}");
            1
        }
    };
    // SAFETY: _exit ends the process at once; nothing needs unwinding or flushing here.
    unsafe { libc::_exit(code) }
}

/// Receives the stdio fds and the request on fd 0, then builds the process.
fn run() -> Result<(), SetupError> {
    // fd 0 is the socket; move it out of the way (close-on-exec) so 0-2 can become stdio.
    let raw = nix::fcntl::fcntl(0, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
        .map_err(|e| SetupError::ExchangeMessage(e.into()))?;
    // A File, not a UnixStream: its read and write are read(2)/write(2), which seccomp
    // profiles allow, where UnixStream uses recvfrom/sendto.
    // SAFETY: `raw` was just returned by F_DUPFD_CLOEXEC, so it is an open fd owned by no one
    // else in this process.
    let mut sock = unsafe { File::from_raw_fd(raw) };
    let fds = receive_fds(sock.as_raw_fd(), 3).map_err(SetupError::ExchangeMessage)?;
    for (i, fd) in fds.iter().enumerate() {
        nix::unistd::dup2(fd.as_raw_fd(), i as RawFd)
            .map_err(|e| SetupError::ExchangeMessage(e.into()))?;
    }
    drop(fds);
    let req: SetupRequest = read_message(&mut sock)
        .map_err(|e| SetupError::ExchangeMessage(io::Error::other(e)))?
        .ok_or_else(|| SetupError::ExchangeMessage(io::ErrorKind::UnexpectedEof.into()))?;
    if let Err(e) = setup_parent(&mut sock, req) {
        report(&mut sock, &SetupReport::Failed(e.to_remote()));
    }
    Ok(())
}

/// Receives one byte carrying exactly `want` fds (`SCM_RIGHTS`) on socket `sock`.
fn receive_fds(sock: RawFd, want: usize) -> io::Result<Vec<OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut out = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in this process for us.
                out.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if out.len() != want {
        return Err(io::Error::other(format!(
            "expected {want} fds, got {}",
            out.len()
        )));
    }
    Ok(out)
}

fn report(sock: &mut File, r: &SetupReport) {
    // Nothing more can be done if the agent is gone: the process exits after this anyway.
    let _ = write_message(sock, r);
}

/// Steps of S: cgroup, namespaces, fork. Returns in S only.
fn setup_parent(sock: &mut File, req: SetupRequest) -> Result<(), SetupError> {
    let cgroup = match &req {
        SetupRequest::Create { cgroup, .. } | SetupRequest::Exec { cgroup, .. } => cgroup.clone(),
    };
    if let Some(cg) = &cgroup {
        let cgroup = super::cgroup::Cgroup { path: cg.clone() };
        cgroup
            .add(std::process::id() as i32)
            .map_err(|e| SetupError::JoinCgroup {
                path: cg.clone(),
                source: io::Error::other(e),
            })?;
    }
    let new_net = match &req {
        SetupRequest::Create { config, .. } => enter_new_namespaces(sock, config)?,
        SetupRequest::Exec { init_pid, .. } => {
            join_namespaces(*init_pid)?;
            false
        }
    };
    // SAFETY: this process is single-threaded (a fresh exec that started no threads), so the
    // child may run any code after fork.
    match unsafe { nix::unistd::fork() }.map_err(|e| SetupError::Fork(e.into()))? {
        nix::unistd::ForkResult::Parent { child } => {
            report(
                sock,
                &SetupReport::Forked {
                    pid: child.as_raw(),
                },
            );
            Ok(())
        }
        nix::unistd::ForkResult::Child => {
            let result = match req {
                SetupRequest::Create { config, .. } => child_create(sock, &config, new_net),
                SetupRequest::Exec {
                    process, seccomp, ..
                } => child_exec(sock, &process, seccomp.as_ref()),
            };
            // child_* only return on failure.
            let e = result.unwrap_err();
            report(sock, &SetupReport::Failed(e.to_remote()));
            // SAFETY: ends the child at once, skipping the parent's atexit state.
            unsafe { libc::_exit(1) }
        }
    }
}

/// Unshares every namespace of `linux.namespaces` without a path and joins those with one.
/// Returns whether a new network namespace was made (its `lo` must be brought up).
fn enter_new_namespaces(sock: &mut File, c: &CreateContainer) -> Result<bool, SetupError> {
    let mut namespaces = c
        .linux
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    // The user namespace comes first: it owns the others.
    namespaces.sort_by_key(|ns| ns.typ() != LinuxNamespaceType::User);
    let mut flags = CloneFlags::empty();
    for ns in &namespaces {
        let t = ns.typ();
        match ns.path() {
            Some(p) => {
                let f = std::fs::File::open(p).map_err(|source| SetupError::EnterNamespace {
                    op: "open",
                    what: format!("{t} ({})", p.display()),
                    source,
                })?;
                nix::sched::setns(&f, namespace_flag(t)).map_err(|e| {
                    SetupError::EnterNamespace {
                        op: "setns",
                        what: format!("{t} ({})", p.display()),
                        source: e.into(),
                    }
                })?;
            }
            None if t == LinuxNamespaceType::User => enter_new_user_namespace(sock)?,
            None => flags |= namespace_flag(t),
        }
    }
    if !flags.contains(CloneFlags::CLONE_NEWNS) {
        return Err(SetupError::CheckNamespaces {
            reason: "a new mount namespace (\"mount\") is required".into(),
        });
    }
    if c.hostname.as_deref().is_some_and(|h| !h.is_empty())
        && !flags.contains(CloneFlags::CLONE_NEWUTS)
    {
        return Err(SetupError::CheckNamespaces {
            reason: "unable to set hostname without a private UTS namespace".into(),
        });
    }
    nix::sched::unshare(flags).map_err(|e| SetupError::EnterNamespace {
        op: "unshare",
        what: format!("{flags:?}"),
        source: e.into(),
    })?;
    let new_net = flags.contains(CloneFlags::CLONE_NEWNET);
    if new_net {
        crate::net::bring_up_lo().map_err(step("bring up lo in the new network namespace"))?;
    }
    Ok(new_net)
}

/// Unshares a user namespace, has the agent write its uid and gid maps (only a process outside
/// it may write more than one range), then becomes root in it (runc's nsexec does the same).
fn enter_new_user_namespace(sock: &mut File) -> Result<(), SetupError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| SetupError::EnterNamespace {
        op: "unshare",
        what: "user".into(),
        source: e.into(),
    })?;
    write_message(sock, &SetupReport::MapIds)
        .map_err(|e| SetupError::ExchangeMessage(io::Error::other(e)))?;
    let mut ack = [0u8; 1];
    sock.read_exact(&mut ack)
        .map_err(SetupError::ExchangeMessage)?;
    if ack[0] != 1 {
        return Err(SetupError::CheckNamespaces {
            reason: "the agent could not write linux.uidMappings/gidMappings".into(),
        });
    }
    let sys = LinuxSyscall;
    sys.setgid(0)
        .map_err(step("become gid 0 in the user namespace"))?;
    sys.setuid(0)
        .map_err(step("become uid 0 in the user namespace"))?;
    Ok(())
}

/// Agent side: writes `/proc/<pid>/uid_map` and `gid_map` from the container's mappings, each
/// in one `write(2)` as the kernel requires, and answers the setup process (1 = done).
///
/// # Errors
/// A map could not be written (the setup process is told, and fails).
pub fn write_id_maps(
    sock: &mut UnixStream,
    pid: u32,
    linux: Option<&oci_spec::runtime::Linux>,
) -> io::Result<()> {
    let format = |maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| -> String {
        maps.map(|m| {
            m.iter()
                .map(|e| format!("{} {} {}\n", e.container_id(), e.host_id(), e.size()))
                .collect()
        })
        .unwrap_or_default()
    };
    let uid = format(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gid = format(linux.and_then(|l| l.gid_mappings().as_ref()));
    let result = std::fs::write(format!("/proc/{pid}/uid_map"), uid)
        .and_then(|()| std::fs::write(format!("/proc/{pid}/gid_map"), gid));
    sock.write_all(&[u8::from(result.is_ok())])?;
    result
}

/// Joins the namespaces of `pid` that differ from this process's (mount last).
fn join_namespaces(pid: i32) -> Result<(), SetupError> {
    use std::os::unix::fs::MetadataExt;
    let kinds = [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    // Open them all first: after joining the mount namespace /proc may be another one.
    let mut files = Vec::new();
    for (name, flag) in kinds {
        let path = format!("/proc/{pid}/ns/{name}");
        let theirs = std::fs::metadata(&path).map_err(|source| SetupError::EnterNamespace {
            op: "stat",
            what: path.clone(),
            source,
        })?;
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}")).ok();
        if ours.is_some_and(|o| o.ino() == theirs.ino() && o.dev() == theirs.dev()) {
            continue;
        }
        let f = std::fs::File::open(&path).map_err(|source| SetupError::EnterNamespace {
            op: "open",
            what: path.clone(),
            source,
        })?;
        files.push((path, f, flag));
    }
    for (path, f, flag) in files {
        nix::sched::setns(&f, flag).map_err(|e| SetupError::EnterNamespace {
            op: "setns",
            what: path,
            source: e.into(),
        })?;
    }
    Ok(())
}

/// The container's init (C), up to and including the `execve`. Returns only on failure.
fn child_create(sock: &mut File, c: &CreateContainer, _new_net: bool) -> Result<(), SetupError> {
    let sys = LinuxSyscall;
    let linux = c.linux.clone().unwrap_or_default();
    let p = &c.process;
    let filters = compile_seccomp(linux.seccomp().as_ref())?;
    let rootfs = c.root.path().clone();
    if !rootfs.is_dir() {
        return Err(SetupError::CheckField {
            field: "root.path".into(),
            reason: format!("{} is not a directory", rootfs.display()),
        });
    }
    let propagation = linux
        .rootfs_propagation()
        .as_deref()
        .map(|s| {
            rootfs::propagation_flag(s).ok_or_else(|| SetupError::CheckField {
                field: "linux.rootfsPropagation".into(),
                reason: format!("unknown propagation {s:?}"),
            })
        })
        .transpose()?;
    rootfs::prepare_root(&sys, &rootfs, None)?;
    for (index, m) in c.mounts.iter().enumerate() {
        rootfs::mount_entry(&sys, &rootfs, index, m).map_err(|source| SetupError::MountEntry {
            index,
            destination: m.destination().display().to_string(),
            source: Box::new(source),
        })?;
    }
    rootfs::create_devices(&sys, &rootfs, linux.devices().as_deref().unwrap_or(&[]))?;
    rootfs::pivot_root(&sys, &rootfs)?;
    if p.terminal() == Some(true) {
        let pts = setup_terminal(sock, p)?;
        // runc bind-mounts the terminal onto /dev/console.
        let console = Path::new("/dev/console");
        sys.create_file(console)
            .and_then(|()| {
                sys.mount(
                    Some(&pts),
                    console,
                    Some("bind"),
                    nix::mount::MsFlags::MS_BIND,
                    None,
                )
            })
            .map_err(step(format!("bind {} onto /dev/console", pts.display())))?;
    }
    if let Some(flag) = propagation {
        sys.mount(None, Path::new("/"), None, flag, None)
            .map_err(step("apply linux.rootfsPropagation"))?;
    }
    if let Some(h) = c.hostname.as_deref().filter(|h| !h.is_empty()) {
        sys.sethostname(h)
            .map_err(step(format!("set hostname {h:?}")))?;
    }
    if let Some(d) = c.domainname.as_deref().filter(|d| !d.is_empty()) {
        sys.setdomainname(d)
            .map_err(step(format!("set domainname {d:?}")))?;
    }
    for (k, v) in linux.sysctl().clone().unwrap_or_default() {
        let path = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
        sys.write_file(&path, &v)
            .map_err(step(format!("write linux.sysctl {k}={v:?}")))?;
    }
    for path in linux.readonly_paths().clone().unwrap_or_default() {
        rootfs::readonly_path(&sys, Path::new(&path))?;
    }
    for path in linux.masked_paths().clone().unwrap_or_default() {
        rootfs::mask_path(&sys, Path::new(&path))?;
    }
    let cwd = p.cwd().clone();
    match std::fs::metadata(&cwd) {
        Ok(m) if !m.is_dir() => {
            return Err(SetupError::CheckField {
                field: "process.cwd".into(),
                reason: format!("{} is not a directory", cwd.display()),
            })
        }
        Ok(_) => {}
        Err(_) => sys
            .mkdir_all(&cwd, 0o755)
            .map_err(step(format!("create process.cwd {}", cwd.display())))?,
    }
    if c.root.readonly() == Some(true) {
        rootfs::readonly_root(&sys)?;
    }
    let (path, args, env) = finish_process(&sys, p, &filters)?;
    // Last before the exec, after seccomp, as runc's standard init does; an exec'd process
    // keeps the persona it was spawned with, as with runc exec.
    if let Some(personality) = linux.personality() {
        sched::apply_personality(&sys, personality.domain())?;
    }
    ready_and_exec(sock, &path, &args, &env)
}

/// An exec'd process (C after `setns`). Returns only on failure.
fn child_exec(
    sock: &mut File,
    p: &Process,
    seccomp: Option<&LinuxSeccomp>,
) -> Result<(), SetupError> {
    let sys = LinuxSyscall;
    let filters = compile_seccomp(seccomp)?;
    if p.terminal() == Some(true) {
        setup_terminal(sock, p)?;
    }
    let (path, args, env) = finish_process(&sys, p, &filters)?;
    ready_and_exec(sock, &path, &args, &env)
}

fn compile_seccomp(s: Option<&LinuxSeccomp>) -> Result<Vec<BpfProgram>, SetupError> {
    Ok(match s {
        Some(s) => seccomp::compile(s)?,
        None => Vec::new(),
    })
}

/// Allocates the process's terminal inside the container, as runc does: a pty from the
/// container's `/dev/ptmx`, its slave as fds 0-2 and controlling terminal of a new session,
/// sized from `process.consoleSize`; the master goes to the agent ([`SetupReport::Console`]).
/// Returns the slave's path.
fn setup_terminal(sock: &mut File, p: &Process) -> Result<PathBuf, SetupError> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| step("open /dev/ptmx in the container")(e.into()))?;
    nix::pty::grantpt(&master).map_err(|e| step("grantpt")(e.into()))?;
    nix::pty::unlockpt(&master).map_err(|e| step("unlockpt")(e.into()))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| step("ptsname")(e.into()))?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)
        .map_err(step(format!("open terminal {name}")))?;
    if let Some(size) = p.console_size() {
        crate::tty::set_window_size(slave.as_raw_fd(), size.height() as u16, size.width() as u16)
            .map_err(step("set process.consoleSize"))?;
    }
    // The report and the master go in ONE sendmsg: the setup parent writes to this socket too
    // (`Forked`), and a separate fd-carrying byte could land after its frame.
    let mut frame = Vec::new();
    write_message(&mut frame, &SetupReport::Console)
        .map_err(|e| SetupError::ExchangeMessage(io::Error::other(e)))?;
    send_fds_with(sock.as_raw_fd(), &frame, &[master.as_raw_fd()])
        .map_err(SetupError::ExchangeMessage)?;
    drop(master);
    nix::unistd::setsid().map_err(|e| step("setsid")(e.into()))?;
    for fd in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), fd).map_err(|e| step("dup2 terminal")(e.into()))?;
    }
    drop(slave);
    // SAFETY: TIOCSCTTY takes an integer argument; fd 0 is the open terminal.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } == -1 {
        return Err(step("make the terminal the controlling tty")(
            io::Error::last_os_error(),
        ));
    }
    Ok(PathBuf::from(name))
}

/// Sends `fds` with one byte (`SCM_RIGHTS`) on socket `sock`.
fn send_fds(sock: RawFd, fds: &[RawFd]) -> io::Result<()> {
    send_fds_with(sock, &[0u8], fds)
}

/// Sends `data` and `fds` (`SCM_RIGHTS`) in one `sendmsg` on socket `sock`: on a Unix stream
/// socket the kernel keeps one such message whole, never interleaved with another writer's.
fn send_fds_with(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [io::IoSlice::new(data)];
    let n = sendmsg::<()>(
        sock,
        &iov,
        &[ControlMessage::ScmRights(fds)],
        MsgFlags::empty(),
        None,
    )?;
    if n != data.len() {
        return Err(io::Error::other(format!(
            "sent {n} of {} bytes with the fds",
            data.len()
        )));
    }
    Ok(())
}

/// Reads from a setup socket with `recvmsg`, keeping the fds that arrive with the bytes (a
/// [`SetupReport::Console`] carries the pty master). A plain `read` would close them.
struct FdReader<'a> {
    sock: &'a UnixStream,
    fds: &'a mut Vec<OwnedFd>,
}

impl Read for FdReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        let mut iov = [io::IoSliceMut::new(buf)];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let msg = recvmsg::<()>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let n = msg.bytes;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel just installed `fd` in this process for us.
                    self.fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Ok(n)
    }
}

type Prepared = (CString, Vec<CString>, Vec<CString>);

/// The part shared by create and exec (runc `finalizeNamespace` and what follows): oom score,
/// I/O priority and scheduler, rlimits, umask, seccomp (before the user switch without
/// noNewPrivileges), user and capabilities, cwd, env, args[0] lookup, noNewPrivileges and
/// seccomp (last with it).
fn finish_process<S: Syscall>(
    sys: &S,
    p: &Process,
    filters: &[BpfProgram],
) -> Result<Prepared, SetupError> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(ProcessError::CheckArgs.into());
    }
    if let Some(adj) = p.oom_score_adj() {
        sys.write_file(Path::new("/proc/self/oom_score_adj"), &adj.to_string())
            .map_err(step(format!("set process.oomScoreAdj {adj}")))?;
    }
    // As root, before capabilities are dropped: a realtime class needs CAP_SYS_NICE or
    // CAP_SYS_ADMIN.
    sched::apply_process(sys, p.io_priority().as_ref(), p.scheduler().as_ref())?;
    process::apply_rlimits(sys, p.rlimits().as_deref().unwrap_or(&[]))?;
    let user = p.user();
    sys.umask(user.umask().unwrap_or(0o022));
    let nnp = p.no_new_privileges() == Some(true);
    if !nnp {
        seccomp::install(filters)?;
    }
    let creds = Credentials {
        uid: user.uid(),
        gid: user.gid(),
        groups: user.additional_gids().clone().unwrap_or_default(),
        set_groups: true,
    };
    let env = process::build_env(
        p.env().as_deref().unwrap_or(&[]),
        Path::new("/etc/passwd"),
        user.uid(),
    );
    process::switch_user(
        sys,
        &creds,
        p.capabilities().as_ref(),
        p.cwd(),
        process::last_cap(),
    )?;
    let path = process::look_path(&args[0], &env)?;
    if nnp {
        sys.set_no_new_privs()
            .map_err(ProcessError::SetNoNewPrivs)?;
        seccomp::install(filters)?;
    }
    let cstr = |s: &[u8]| {
        CString::new(s).map_err(|_| SetupError::CheckField {
            field: "process.args/env".into(),
            reason: "contains a NUL byte".into(),
        })
    };
    Ok((
        cstr(path.as_os_str().as_bytes())?,
        args.iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<Result<_, _>>()?,
        env.iter()
            .map(|e| cstr(e.as_bytes()))
            .collect::<Result<_, _>>()?,
    ))
}

/// Reports ready, waits for [`START`], resets signal state and `execve`s. Returns only on
/// failure (or exits quietly if the agent goes away before starting it).
fn ready_and_exec(
    sock: &mut File,
    path: &CString,
    args: &[CString],
    env: &[CString],
) -> Result<(), SetupError> {
    write_message(sock, &SetupReport::Ready)
        .map_err(|e| SetupError::ExchangeMessage(io::Error::other(e)))?;
    let mut b = [0u8; 1];
    match sock.read(&mut b) {
        Ok(1) if b[0] == START => {}
        // The agent deleted the container or died before start: go away quietly.
        // SAFETY: ends the process at once.
        _ => unsafe { libc::_exit(0) },
    }
    reset_signals();
    let err = nix::unistd::execve(path, args, env).unwrap_err();
    Err(SetupError::Step {
        step: format!("exec {:?}", path),
        source: err.into(),
    })
}

/// Restores default dispositions (Rust ignores SIGPIPE at start-up, and ignored signals survive
/// `execve`) and an empty signal mask.
fn reset_signals() {
    use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
    for s in Signal::iterator() {
        if s != Signal::SIGKILL && s != Signal::SIGSTOP {
            // SAFETY: setting SIG_DFL installs no Rust handler, so no handler safety applies.
            let _ = unsafe { signal(s, SigHandler::SigDfl) };
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Agent side: spawns the setup process and hands it `stdio` and `req`. Returns the socket to
/// read [`SetupReport`]s from, and the setup process's PID.
///
/// # Errors
/// The spawn or the hand-over failed.
pub fn spawn(exe: &Path, stdio: [OwnedFd; 3], req: &SetupRequest) -> io::Result<(UnixStream, u32)> {
    let (mut ours, theirs) = UnixStream::pair()?;
    let child = std::process::Command::new(exe)
        .arg("__setup")
        .stdin(OwnedFd::from(theirs))
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let raw: Vec<RawFd> = stdio.iter().map(AsRawFd::as_raw_fd).collect();
    send_fds(ours.as_raw_fd(), &raw)?;
    drop(stdio);
    write_message(&mut ours, req).map_err(io::Error::other)?;
    ours.flush()?;
    Ok((ours, child.id()))
}

/// Reads the next report; `None` at EOF. Fds that came with it (the pty master of a
/// [`SetupReport::Console`]) are appended to `fds`.
///
/// # Errors
/// A broken or garbled stream.
pub fn read_report(sock: &UnixStream, fds: &mut Vec<OwnedFd>) -> io::Result<Option<SetupReport>> {
    read_message(&mut FdReader { sock, fds }).map_err(io::Error::other)
}

/// Sends [`START`].
///
/// # Errors
/// The process is gone.
pub fn send_start(sock: &mut UnixStream) -> io::Result<()> {
    sock.write_all(&[START])
}
