//! The monitor: the process `create` forks, whose PID goes in the pid-file. It owns the sandbox
//! (the microVM), serves `<root>/<id>/monitor.sock`, and exits exactly when the container's init
//! exits, with its code or 128+N (see docs/design.md "Processes"). It names itself after the
//! container in `ps` (`vessel:<id>`, `vessel-monitor <id>`: [`crate::monitor::proctitle`]).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use nix::sys::signal::SigSet;
use vessel_error::chain;

use crate::host::bundle::Bundle;
use crate::monitor::control::{self, ControlRequest, ControlResponse};
use crate::sandbox::{Sandbox, Stdio, WorkloadIo};

/// Status the monitor exits with when it fails before the workload runs.
const EXIT_FAILED: i32 = 1;

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
}

/// The line the monitor writes on its report pipe once the container is created.
pub const REPORT_CREATED: &str = "created";

/// Runs the monitor in the current (freshly forked, single-threaded) process and returns the exit
/// status it must exit with. `report` is the pipe `create` reads: one line, `created` or
/// `error: <message>`.
pub fn run(mut config: MonitorConfig, sandbox: Arc<dyn Sandbox>, report: OwnedFd) -> i32 {
    let mut report = std::fs::File::from(report);
    // `vessel:<id>` / `vessel-monitor <id>` in ps rather than the create command line; an
    // unprivileged monitor keeps the command line (debug log only).
    if let Err(e) = crate::monitor::proctitle::set(&config.id) {
        log::debug!("container {}: {}", config.id, chain(&e));
    }
    // Into linux.cgroupsPath first, so that everything the VM costs is charged there.
    if let Some(cgroup) = &config.cgroup {
        if let Err(e) = crate::host::cgroup::join(cgroup, std::process::id() as i32) {
            let _ = writeln!(report, "error: {}", chain(&e));
            return EXIT_FAILED;
        }
    }
    if let Err(message) = apply_oom_score_adj(&config.bundle) {
        let _ = writeln!(report, "error: {message}");
        return EXIT_FAILED;
    }
    let forwarded = crate::host::signal::forwarded(&[]);
    // Block forwarded signals before any thread exists (the sandbox may start relay or VMM
    // threads), so that every thread inherits the mask and only the forwarding thread receives
    // them, by sigwait.
    if forwarded.thread_block().is_err() {
        let _ = writeln!(report, "error: block signals in the monitor");
        return EXIT_FAILED;
    }
    let terminal = config.terminal.take();
    let resize_from = match terminal.as_ref().map(|t| t.try_clone()).transpose() {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(report, "error: duplicate the terminal: {e}");
            return EXIT_FAILED;
        }
    };
    let listener = match set_up(&config, terminal, sandbox.as_ref()) {
        Ok(l) => l,
        Err(message) => {
            let _ = writeln!(report, "error: {message}");
            let _ = sandbox.shutdown();
            return EXIT_FAILED;
        }
    };
    if writeln!(report, "{REPORT_CREATED}").is_err() {
        // `create` is gone (killed): nobody will record or delete this container.
        let _ = sandbox.shutdown();
        return EXIT_FAILED;
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

/// Boots the sandbox, creates the container, gives stdio (or the terminal) away and binds the
/// control socket.
fn set_up(
    config: &MonitorConfig,
    terminal: Option<OwnedFd>,
    sandbox: &dyn Sandbox,
) -> Result<UnixListener, String> {
    let io = match terminal {
        Some(slave) => {
            crate::host::console::make_controlling(slave.as_fd()).map_err(|e| {
                format!("make the host pty the monitor's controlling terminal: {e}")
            })?;
            WorkloadIo::Terminal(slave)
        }
        None => {
            WorkloadIo::Stdio(take_stdio().map_err(|e| format!("duplicate standard i/o: {e}"))?)
        }
    };
    sandbox.boot().map_err(|e| chain(&e))?;
    sandbox
        .create_container(&config.id, &config.bundle, io)
        .map_err(|e| chain(&e))?;
    // The workload owns the caller's stdio now; the monitor must neither write to it nor keep
    // copies that would delay the caller's EOF.
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))?;
    for fd in 0..=2 {
        nix::unistd::dup2(null.as_raw_fd(), fd)
            .map_err(|e| format!("redirect fd {fd} to /dev/null: {e}"))?;
    }
    let socket = config.dir.join(crate::host::state::MONITOR_SOCKET);
    vessel_vmm::uds::bind(&socket).map_err(|e| format!("bind {}: {e}", socket.display()))
}

/// Writes `process.oomScoreAdj` to the monitor's own `/proc/self/oom_score_adj`, so that the
/// host's OOM killer weighs the container's VM (the monitor and its VMM threads) as runc's
/// container process would be weighed (kubelet's QoS classes rely on it); the guest agent
/// applies it to the process inside the VM too. Fails as runc's nsexec does, with its text:
/// `failed to update /proc/self/oom_score_adj: Permission denied` when lowering it without
/// `CAP_SYS_RESOURCE`.
fn apply_oom_score_adj(bundle: &Bundle) -> Result<(), String> {
    let Some(adj) = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.oom_score_adj())
    else {
        return Ok(());
    };
    std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(|e| {
        let fix = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                ": a value below the caller's needs CAP_SYS_RESOURCE; run as root or raise it"
            }
            _ => "",
        };
        format!(
            "failed to update /proc/self/oom_score_adj: {} (process.oomScoreAdj {adj}, applied \
             to the container's VM on the host{fix})",
            c_text(&e)
        )
    })
}

/// The C library's text of an OS error (`Permission denied`), without Rust's `(os error N)`.
fn c_text(e: &std::io::Error) -> String {
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
