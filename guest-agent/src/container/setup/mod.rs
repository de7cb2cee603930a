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
//!
//! One file per concern: this one is the setup process itself (the steps above and the errors
//! it reports); `protocol.rs` the messages and fd passing between it and the agent,
//! `namespaces.rs` entering the container's namespaces, `terminal.rs` the process's pty.

mod namespaces;
mod protocol;
mod terminal;

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxSeccomp, Process};
use seccompiler::BpfProgram;
use vessel_protocol::{read_message, write_message, Code, CreateContainer, RemoteError};

use super::process::{self, Credentials, ProcessError};
use super::rootfs::{self, RootfsError};
use super::sched::{self, SchedError};
use super::seccomp::{self, SeccompError};
use super::syscall::{LinuxSyscall, Syscall};
use namespaces::{enter_new_namespaces, join_namespaces};
use protocol::{receive_fds, report};
use terminal::setup_terminal;

pub use namespaces::write_id_maps;
pub use protocol::{read_report, send_start, spawn, SetupReport, SetupRequest, START};

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

pub(super) fn step(step: impl Into<String>) -> impl FnOnce(io::Error) -> SetupError {
    let step = step.into();
    move |source| SetupError::Step { step, source }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_cross_the_wire_with_the_code_of_their_cause() {
        let denied = SetupError::EnterNamespace {
            op: "setns",
            what: "network (/proc/7/ns/net)".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(denied.code(), Code::PermissionDenied);
        let remote = denied.to_remote();
        assert_eq!(remote.code, Code::PermissionDenied);
        assert_eq!(
            remote.chain()[0],
            "setns network (/proc/7/ns/net) namespace"
        );
        assert_eq!(remote.chain().len(), 2);
        let missing = step("write linux.sysctl a=1")(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(missing.code(), Code::InvalidArgument);
        let field = SetupError::CheckField {
            field: "root.path".into(),
            reason: "/r is not a directory".into(),
        };
        assert_eq!(field.code(), Code::InvalidArgument);
        assert_eq!(field.to_string(), "root.path: /r is not a directory");
        let fork = SetupError::Fork(io::Error::from_raw_os_error(libc::EAGAIN));
        assert_eq!(fork.code(), Code::Internal);
    }
}
