//! The monitor: the process `create` forks, whose PID goes in the pid-file. It owns the sandbox
//! (the microVM), serves `<root>/<id>/monitor.sock`, and exits exactly when the container's init
//! exits, with its code or 128+N (see docs/design.md "Processes"). It names itself after the
//! container in `ps` (`vessel:<id>`, `vessel-monitor <id>`: [`crate::monitor::proctitle`]).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use nix::sys::signal::SigSet;
use vessel_error::chain;

use crate::host::bundle::Bundle;
use crate::host::cgroup::CgroupError;
use crate::monitor::control::{self, ControlRequest, ControlResponse};
use crate::sandbox::{Sandbox, SandboxError, Stdio, WorkloadIo};

/// Status the monitor exits with when it fails before the workload runs.
const EXIT_FAILED: i32 = 1;

/// Errors of the monitor before the container is created; `create` prints their chain (the
/// report pipe's `error: <message>`).
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The monitor could not move into `linux.cgroupsPath`.
    #[error(transparent)]
    JoinCgroup(CgroupError),
    /// `process.oomScoreAdj` could not be applied. runc's text, with the C library's text of
    /// the error inside the message (not a cause after it), as runc's nsexec prints it.
    #[error(
        "failed to update /proc/self/oom_score_adj: {} (process.oomScoreAdj {adj}, applied to \
         the container's VM on the host{})",
        c_text(.error),
        oom_fix(.error)
    )]
    UpdateOomScoreAdj {
        /// The value asked for.
        adj: i32,
        /// The write's error.
        error: io::Error,
    },
    /// The container's network namespace could not be joined or created.
    #[error(transparent)]
    EnterNetwork(crate::host::net::netns::NetnsError),
    /// The forwarded signals could not be blocked before any thread exists.
    #[error("block signals in the monitor")]
    BlockSignals,
    /// The terminal's slave could not be duplicated for the resize relay.
    #[error("duplicate the terminal")]
    DuplicateTerminal(#[source] io::Error),
    /// The host pty could not become the monitor's controlling terminal.
    #[error("make the host pty the monitor's controlling terminal")]
    ControlTerminal(#[source] io::Error),
    /// The caller's standard I/O could not be duplicated for the workload.
    #[error("duplicate standard i/o")]
    DuplicateStdio(#[source] io::Error),
    /// The sandbox did not boot.
    #[error(transparent)]
    BootSandbox(SandboxError),
    /// The sandbox did not create the container.
    #[error(transparent)]
    CreateContainer(SandboxError),
    /// `/dev/null` could not be opened.
    #[error("open /dev/null")]
    OpenDevNull(#[source] io::Error),
    /// One of the monitor's fds 0-2 could not be pointed at `/dev/null`.
    #[error("redirect fd {fd} to /dev/null")]
    RedirectStdio {
        /// The descriptor.
        fd: i32,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The control socket could not be bound.
    #[error("bind {path}")]
    BindControlSocket {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl MonitorError {
    /// The kind of failure, when the sandbox's error has one ([`SandboxError::code`]).
    pub fn code(&self) -> Option<vessel_protocol::Code> {
        match self {
            MonitorError::BootSandbox(e) | MonitorError::CreateContainer(e) => e.code(),
            _ => None,
        }
    }
}

/// What the monitor needs to know about its container.
#[derive(Debug)]
pub struct MonitorConfig {
    /// Container ID.
    pub id: String,
    /// The validated bundle.
    pub bundle: Bundle,
    /// `<root>/<id>`, where the control socket goes.
    pub dir: PathBuf,
    /// The host cgroup the monitor moves into before it boots the sandbox.
    pub cgroup: Option<crate::host::cgroup::CgroupRecord>,
    /// With `process.terminal`: the slave of the host pty whose master the caller gets. The
    /// monitor (a session leader) makes it its controlling terminal and relays it to the guest
    /// pty; SIGWINCH then means "the caller resized the master".
    pub terminal: Option<OwnedFd>,
    /// The container's network namespace, which the monitor moves into before any thread
    /// exists: `/proc/<monitor pid>/ns/net` is then the container's, for every caller (and
    /// Docker's `prestart` hook) that looks there, and the VMM opens its taps in it.
    pub netns: crate::host::net::netns::Netns,
}

/// The line the monitor writes on its report pipe once the container is created.
pub const REPORT_CREATED: &str = "created";

/// Runs the monitor in the current (freshly forked, single-threaded) process and returns the exit
/// status it must exit with. `report` is the pipe `create` reads: one line, `created` or
/// `error: <message>`.
pub fn run(mut config: MonitorConfig, sandbox: Arc<dyn Sandbox>, report: OwnedFd) -> i32 {
    let mut report = std::fs::File::from(report);
    // Set when `create` is gone (killed) by the time a failure is reported: it cannot remove
    // the cgroup it made for this process, so the monitor does on its way out (`abandoned`).
    let orphaned = std::cell::Cell::new(false);
    let mut fail = |e: MonitorError| {
        if writeln!(report, "error: {}", chain(&e)).is_err() {
            orphaned.set(true);
        }
        EXIT_FAILED
    };
    let (id, cgroup) = (config.id.clone(), config.cgroup.clone());
    let failed = |status: i32| {
        if orphaned.get() {
            abandoned(&id, cgroup.as_ref());
        }
        status
    };
    // While single-threaded: the share's mounts then never appear on the host and go with the
    // monitor (or, for a pod member, are made in its sandbox's monitor's namespace).
    if let Err(e) = sandbox.prepare_mounts(&config.id, &config.bundle) {
        return failed(fail(MonitorError::CreateContainer(e)));
    }
    // `vessel:<id>` / `vessel-monitor <id>` in ps rather than the create command line; an
    // unprivileged monitor keeps the command line (debug log only).
    if let Err(e) = crate::monitor::proctitle::set(&config.id) {
        log::debug!("container {}: {}", config.id, chain(&e));
    }
    // Into the container's network namespace while the process is single-threaded (a thread's
    // namespace is inherited by the threads it starts).
    if let Err(e) = crate::host::net::netns::enter(&config.netns) {
        return failed(fail(MonitorError::EnterNetwork(e)));
    }
    // The device files first: the cgroup's device filter may refuse them (a podman pod's
    // refuses every device, `/dev/null` included).
    if let Err(e) = sandbox.open_devices(&config.bundle) {
        return failed(fail(MonitorError::BootSandbox(e)));
    }
    let null = match OpenOptions::new().read(true).write(true).open("/dev/null") {
        Ok(null) => null,
        Err(e) => return failed(fail(MonitorError::OpenDevNull(e))),
    };
    // Into linux.cgroupsPath before anything else, so that everything the VM costs is charged
    // there.
    if let Some(cgroup) = &config.cgroup {
        if let Err(e) = crate::host::cgroup::join(cgroup, std::process::id() as i32) {
            return failed(fail(MonitorError::JoinCgroup(e)));
        }
    }
    if let Err(e) = apply_oom_score_adj(&config.bundle) {
        return failed(fail(e));
    }
    let forwarded = crate::host::signal::forwarded(&[]);
    // Block forwarded signals before any thread exists (the sandbox may start relay or VMM
    // threads), so that every thread inherits the mask and only the forwarding thread receives
    // them, by sigwait.
    if forwarded.thread_block().is_err() {
        return failed(fail(MonitorError::BlockSignals));
    }
    let terminal = config.terminal.take();
    let resize_from = match terminal.as_ref().map(|t| t.try_clone()).transpose() {
        Ok(t) => t,
        Err(e) => return failed(fail(MonitorError::DuplicateTerminal(e))),
    };
    let listener = match set_up(&config, terminal, null, sandbox.as_ref()) {
        Ok(l) => l,
        Err(e) => {
            let status = fail(e);
            let _ = sandbox.shutdown();
            // After the VM is gone: KVM's worker threads sit in the cgroup while it lives.
            return failed(status);
        }
    };
    if writeln!(report, "{REPORT_CREATED}").is_err() {
        // `create` is gone (killed): nobody will record or delete this container, nor remove
        // its host cgroup, which `create` made before forking this process.
        let _ = sandbox.shutdown();
        orphaned.set(true);
        return failed(EXIT_FAILED);
    }
    drop(report);

    // Held while a control request is handled, so that the monitor does not exit (when the
    // workload ends right after `start`) before the answer is written.
    let busy = Arc::new(Mutex::new(()));
    let control_sandbox = Arc::clone(&sandbox);
    let control_busy = Arc::clone(&busy);
    std::thread::spawn(move || serve(listener, control_sandbox.as_ref(), &control_busy));
    let signal_sandbox = Arc::clone(&sandbox);
    std::thread::spawn(move || forward_signals(forwarded, signal_sandbox.as_ref(), resize_from));

    let status = match sandbox.wait() {
        Ok(exit) => exit.code(),
        Err(e) => {
            log::error!("container {}: wait for init: {}", config.id, chain(&e));
            EXIT_FAILED
        }
    };
    let _ = std::fs::remove_file(config.dir.join(crate::host::state::MONITOR_SOCKET));
    let _answered = busy.lock();
    let _ = sandbox.shutdown();
    status
}

/// Leaves and removes the host cgroup `create` made for this monitor, once `create` is known to
/// be gone (its report pipe is closed): nobody else knows of it (`delete` finds no record).
fn abandoned(id: &str, cgroup: Option<&crate::host::cgroup::CgroupRecord>) {
    if let Some(cgroup) = cgroup {
        if let Err(e) = crate::host::cgroup::leave_and_remove(cgroup) {
            log::warn!("container {id}: {}", chain(&e));
        }
    }
}

/// Boots the sandbox, creates the container, gives stdio (or the terminal) away (fds 0-2 then
/// point at `null`) and binds the control socket.
fn set_up(
    config: &MonitorConfig,
    terminal: Option<OwnedFd>,
    null: std::fs::File,
    sandbox: &dyn Sandbox,
) -> Result<UnixListener, MonitorError> {
    let io = match terminal {
        Some(slave) => {
            crate::host::console::make_controlling(slave.as_fd())
                .map_err(MonitorError::ControlTerminal)?;
            WorkloadIo::Terminal(slave)
        }
        None => WorkloadIo::Stdio(take_stdio().map_err(MonitorError::DuplicateStdio)?),
    };
    sandbox.boot().map_err(MonitorError::BootSandbox)?;
    sandbox
        .create_container(&config.id, &config.bundle, io)
        .map_err(MonitorError::CreateContainer)?;
    // The workload owns the caller's stdio now; the monitor must neither write to it nor keep
    // copies that would delay the caller's EOF.
    for fd in 0..=2 {
        nix::unistd::dup2(null.as_raw_fd(), fd)
            .map_err(|source| MonitorError::RedirectStdio { fd, source })?;
    }
    let path = config.dir.join(crate::host::state::MONITOR_SOCKET);
    vessel_vmm::uds::bind(&path).map_err(|source| MonitorError::BindControlSocket { path, source })
}

/// Writes `process.oomScoreAdj` to the monitor's own `/proc/self/oom_score_adj`, so that the
/// host's OOM killer weighs the container's VM (the monitor and its VMM threads) as runc's
/// container process would be weighed (kubelet's QoS classes rely on it); the guest agent
/// applies it to the process inside the VM too. Fails as runc's nsexec does, with its text:
/// `failed to update /proc/self/oom_score_adj: Permission denied` when lowering it without
/// `CAP_SYS_RESOURCE`.
fn apply_oom_score_adj(bundle: &Bundle) -> Result<(), MonitorError> {
    let Some(adj) = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.oom_score_adj())
    else {
        return Ok(());
    };
    std::fs::write("/proc/self/oom_score_adj", adj.to_string())
        .map_err(|error| MonitorError::UpdateOomScoreAdj { adj, error })
}

/// What [`MonitorError::UpdateOomScoreAdj`] suggests: `EACCES` means lowering it without the
/// capability.
fn oom_fix(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            ": a value below the caller's needs CAP_SYS_RESOURCE; run as root or raise it"
        }
        _ => "",
    }
}

/// The C library's text of an OS error (`Permission denied`), without Rust's `(os error N)`.
fn c_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_owned(),
        None => e.to_string(),
    }
}

fn take_stdio() -> std::io::Result<Stdio> {
    let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned();
    Ok(Stdio {
        stdin: dup(std::io::stdin().as_fd())?,
        stdout: dup(std::io::stdout().as_fd())?,
        stderr: dup(std::io::stderr().as_fd())?,
    })
}

fn serve(listener: UnixListener, sandbox: &dyn Sandbox, busy: &Mutex<()>) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _handling = busy.lock();
        let _ = control::serve_one(&mut stream, |request| {
            let result = match request {
                ControlRequest::Start => sandbox.start().map(|()| ControlResponse::Ok),
                ControlRequest::Signal { signal, all } => {
                    sandbox.signal(signal, all).map(|()| ControlResponse::Ok)
                }
                ControlRequest::Pause => sandbox.pause().map(|()| ControlResponse::Ok),
                ControlRequest::Resume => sandbox.resume().map(|()| ControlResponse::Ok),
                ControlRequest::Agent { request } => {
                    sandbox
                        .agent_call(*request)
                        .map(|response| ControlResponse::Answer {
                            response: Box::new(response),
                        })
                }
            };
            result.unwrap_or_else(|e| ControlResponse::Error {
                message: chain(&e),
                code: e.code(),
            })
        });
    }
}

/// Forwards the signals the monitor receives to the init; with a terminal, SIGWINCH is a resize
/// of the host pty instead and its new size goes to the guest pty.
fn forward_signals(set: SigSet, sandbox: &dyn Sandbox, terminal: Option<OwnedFd>) {
    while let Ok(sig) = set.wait() {
        if let (Some(tty), nix::sys::signal::Signal::SIGWINCH) = (&terminal, sig) {
            let resized = crate::host::console::window_size(tty.as_fd())
                .map_err(|e| chain(&e))
                .and_then(|(rows, cols)| {
                    sandbox.resize_terminal(rows, cols).map_err(|e| chain(&e))
                });
            if let Err(e) = resized {
                log::warn!("resize the container's terminal: {e}");
            }
            continue;
        }
        if let Err(e) = sandbox.signal(sig as i32, false) {
            log::warn!("forward {sig} to the container: {}", chain(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_the_monitor_always_reported_them() {
        let denied = MonitorError::UpdateOomScoreAdj {
            adj: -500,
            error: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert_eq!(
            chain(&denied),
            "failed to update /proc/self/oom_score_adj: Permission denied (process.oomScoreAdj \
             -500, applied to the container's VM on the host: a value below the caller's needs \
             CAP_SYS_RESOURCE; run as root or raise it)"
        );
        let invalid = MonitorError::UpdateOomScoreAdj {
            adj: 5000,
            error: io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert_eq!(
            chain(&invalid),
            "failed to update /proc/self/oom_score_adj: Invalid argument (process.oomScoreAdj \
             5000, applied to the container's VM on the host)"
        );
        let bind = MonitorError::BindControlSocket {
            path: "/run/vessel/c1/monitor.sock".into(),
            source: io::Error::from_raw_os_error(libc::EADDRINUSE),
        };
        assert_eq!(
            chain(&bind),
            format!(
                "bind /run/vessel/c1/monitor.sock: {}",
                io::Error::from_raw_os_error(libc::EADDRINUSE)
            )
        );
        let redirect = MonitorError::RedirectStdio {
            fd: 1,
            source: nix::errno::Errno::EBADF,
        };
        assert_eq!(
            chain(&redirect),
            format!("redirect fd 1 to /dev/null: {}", nix::errno::Errno::EBADF)
        );
        let boot = MonitorError::BootSandbox(SandboxError::InvalidState("twice"));
        assert_eq!(chain(&boot), "twice");
        assert_eq!(boot.code(), Some(vessel_protocol::Code::FailedPrecondition));
    }
}
