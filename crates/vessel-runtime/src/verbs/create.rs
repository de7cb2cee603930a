//! `create`: validate the bundle, record the container, fork the monitor, and return once the
//! monitor reports the container `created` (runtime-spec runtime.md "create", runc create.go).

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::host::bundle::{Bundle, BundleError};
use crate::host::cgroup::{self, CgroupError, CgroupRecord};
use crate::host::console::{self, ConsoleError, HostPty, WindowSize};
use crate::host::hooks::{self, HookKind, HookState, HooksError};
use crate::host::signal::Interrupts;
use crate::host::state::{self, ContainerLock, ContainerRecord, StateError, StateStore, Status};
use crate::monitor::{self, MonitorConfig, REPORT_CREATED};
use crate::sandbox::{self, SandboxError};
use crate::{host::procfs, host::time, sandbox::sizing};

/// Errors of [`create`].
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The ID is invalid, taken, or the store failed.
    #[error(transparent)]
    Store(#[from] StateError),
    /// The bundle is missing or invalid.
    #[error(transparent)]
    LoadBundle(#[from] BundleError),
    /// The terminal could not be allocated or sent over the console socket.
    #[error(transparent)]
    Console(#[from] ConsoleError),
    /// The host cgroup could not be set up.
    #[error(transparent)]
    SetUpCgroup(#[from] CgroupError),
    /// The spec's network namespace cannot be given to a microVM (host networking) or read.
    #[error(transparent)]
    Network(#[from] crate::host::net::netns::NetnsError),
    /// The VM size could not be worked out from the spec.
    #[error(transparent)]
    SizeVm(#[from] sizing::SizingError),
    /// The spec names another container's namespaces that cannot be joined.
    #[error(transparent)]
    JoinPod(#[from] crate::sandbox::pod::PodError),
    /// The pod member's link to its sandbox's vsock socket could not be made.
    #[error("link {path} to the pod sandbox's vsock socket")]
    LinkVsock {
        /// The link.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No sandbox could be chosen.
    #[error("select sandbox")]
    SelectSandbox(#[source] SandboxError),
    /// The pipe the monitor reports on could not be made.
    #[error("create the monitor report pipe")]
    CreatePipe(#[source] nix::Error),
    /// The monitor could not be forked.
    #[error("fork the monitor")]
    ForkMonitor(#[source] nix::Error),
    /// The monitor's start time could not be read.
    #[error("read the monitor's start time")]
    StatMonitor(#[source] procfs::ProcfsError),
    /// The monitor failed to create the container; the message is the monitor's.
    #[error("{0}")]
    RunMonitor(String),
    /// The monitor (and so the VM) ended while the create hooks ran: something killed it
    /// meanwhile (not `vessel kill`, for which the container does not exist yet), so create
    /// does not report it created.
    #[error(
        "the container's monitor exited while the create hooks ran ({0}); was it killed \
         meanwhile? create it again"
    )]
    MonitorExitedDuringHooks(String),
    /// A hook in config.json is invalid, or a `prestart`, `createRuntime` or `createContainer`
    /// hook failed or was killed because create got a terminating signal
    /// ([`HooksError::Interrupted`]).
    #[error(transparent)]
    RunHook(#[from] HooksError),
    /// SIGHUP, SIGINT and SIGTERM could not be caught for the create hooks.
    #[error("catch SIGHUP, SIGINT and SIGTERM while the create hooks run")]
    CatchSignals(#[source] nix::Error),
    /// A terminating signal came just as the last create hook ended; everything was removed.
    #[error("create was interrupted by {} after its hooks ran", .0.as_str())]
    Interrupted(Signal),
    /// The pid-file could not be written.
    #[error("write pid file {path}")]
    WritePidFile {
        /// The pid-file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl CreateError {
    /// The terminating signal (SIGHUP, SIGINT or SIGTERM) that stopped create during its hooks,
    /// if that is why it failed: everything is cleaned up by then, and the caller should end by
    /// that signal ([`crate::host::signal::die_of`]) as a process that did not catch it would.
    pub fn interrupted(&self) -> Option<Signal> {
        match self {
            CreateError::RunHook(e) => e.interrupted(),
            CreateError::Interrupted(signal) => Some(*signal),
            _ => None,
        }
    }
}

/// What `create` (and `run`) take.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Container ID.
    pub id: String,
    /// Bundle directory (`--bundle`, default the current directory).
    pub bundle: PathBuf,
    /// `--pid-file`, made absolute by this function.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// Whether the caller detaches (true for `create` and `run -d`).
    pub detach: bool,
    /// `--systemd-cgroup`, recorded for later commands.
    pub systemd_cgroup: bool,
    /// `--rootless`, recorded for later commands.
    pub rootless: String,
    /// With `process.terminal`: the terminal's initial size, overriding `process.consoleSize`
    /// (a foreground `run` passes the size of the caller's terminal).
    pub terminal_size: Option<WindowSize>,
}

/// The created container.
#[derive(Debug)]
pub struct Created {
    /// PID of the monitor (what the pid-file holds).
    pub pid: i32,
    /// With `process.terminal` and not detached: the host pty master, for the caller to copy
    /// to and from its own terminal. Detached, the master went to the console socket.
    pub console: Option<OwnedFd>,
}

/// Creates the container `opts.id`. On success the monitor is alive, `state` says `created`, and
/// the pid-file (if asked for) holds the monitor's PID. On failure nothing is left: no monitor
/// and no state directory.
///
/// Until the create hooks have succeeded the container is recorded with status `creating`,
/// which every other command reads as `container does not exist`, as runc's do before its
/// state.json exists ([`Status::Creating`]). While a create hook runs, SIGHUP, SIGINT and
/// SIGTERM are caught: the hook's process group is killed, create fails with the usual
/// clean-up (poststop hooks included), and [`CreateError::interrupted`] names the signal.
///
/// Must be called from a single-threaded process: it forks.
pub fn create(store: &StateStore, opts: &CreateOptions) -> Result<Created, CreateError> {
    store.container_dir(&opts.id)?;
    let pid_file = opts
        .pid_file
        .as_ref()
        .map(std::path::absolute)
        .transpose()
        .map_err(|source| CreateError::WritePidFile {
            path: opts.pid_file.clone().unwrap_or_default(),
            source,
        })?;
    let mut bundle = Bundle::load(&opts.bundle)?;
    if let Some(h) = bundle.spec.hooks() {
        hooks::validate(h)?;
    }
    if let Some(warning) =
        crate::host::bundle::unknown_capabilities_warning(&bundle.unknown_capabilities)
    {
        log::warn!("{warning}");
    }
    for warning in crate::host::validate::warnings(&bundle.spec) {
        log::warn!("{warning}");
    }
    if let Some(warning) = crate::host::net::dns::embedded_dns_warning(&bundle.spec) {
        log::warn!("{warning}");
    }
    console::check_terminal(
        opts.detach,
        bundle.terminal(),
        opts.console_socket.is_some(),
    )?;
    let terminal = if bundle.terminal() {
        Some(open_terminal(&mut bundle, opts)?)
    } else {
        None
    };
    let host_cpus = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .unwrap_or(1) as u32;
    // A container that names another one's namespaces runs in that one's VM.
    let pod = crate::sandbox::pod::find(store, &bundle.spec)?;
    let size = sizing::size_vm(&bundle.spec, host_cpus)?;
    if let Some((vm, pod)) = pod.as_ref().and_then(|p| Some((p.vm_size?, p))) {
        sizing::check_member(&bundle.spec, vm, &pod.sandbox)?;
    }
    // Before anything is made: host networking is refused naming the field.
    let netns =
        crate::host::net::netns::plan(&bundle.spec, std::path::Path::new("/proc/self/ns/net"))?;
    // Held until state.json and the pid-file are written (or everything is removed again), so
    // that `start`, `delete` ... of this ID wait for the outcome.
    let (dir, lock) = store.create_dir(&opts.id)?;
    let mut lock = Some(lock);
    let selected = match &pod {
        Some(pod) => link_vsock(pod, &dir).map(|()| {
            Box::new(crate::sandbox::pod::PodMemberSandbox::new(
                pod.clone(),
                &opts.id,
            )) as Box<dyn sandbox::Sandbox>
        }),
        None => sandbox::select(size, &dir).map_err(CreateError::SelectSandbox),
    };
    let sandbox: Arc<dyn sandbox::Sandbox> = match selected {
        Ok(s) => Arc::from(s),
        Err(e) => {
            let _ = store.remove(&opts.id);
            return Err(e);
        }
    };
    let cgroup = match host_cgroup(&bundle, opts, &dir) {
        Ok(c) => c,
        Err(e) => {
            let _ = store.remove(&opts.id);
            return Err(e.into());
        }
    };
    let created_at = time::rfc3339_nanos(std::time::SystemTime::now());
    let annotations: std::collections::BTreeMap<String, String> = bundle
        .spec
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let (pty, socket) = match terminal {
        Some((pty, socket)) => (Some(pty), socket),
        None => (None, None),
    };
    let (master, slave, name) = match pty {
        Some(HostPty {
            master,
            slave,
            name,
        }) => (Some(master), Some(slave), name),
        None => (None, None, String::new()),
    };
    let parent_only: Vec<i32> = master
        .iter()
        .map(|m| m.as_raw_fd())
        .chain(socket.iter().map(|s| s.as_raw_fd()))
        .collect();
    let monitor = MonitorConfig {
        id: opts.id.clone(),
        bundle: bundle.clone(),
        dir,
        cgroup: cgroup.clone(),
        terminal: slave,
        netns,
    };
    // Recorded as soon as the monitor exists, as `creating` (runc's status while it creates), so
    // that a create killed at any later point, during the guest's boot as during the hooks,
    // leaves the monitor's PID for `delete --force` (which then kills it and cleans up).
    let mut recorded: Option<ContainerRecord> = None;
    let forked = fork_monitor(
        monitor,
        Arc::clone(&sandbox),
        &mut lock,
        &parent_only,
        &mut |pid| {
            let start = procfs::stat(pid.as_raw()).map_err(CreateError::StatMonitor)?;
            let record = ContainerRecord {
                id: opts.id.clone(),
                oci_version: bundle.spec.version().clone(),
                bundle: bundle.path.clone(),
                rootfs: bundle.rootfs.clone(),
                annotations: annotations.clone(),
                created: created_at.clone(),
                monitor_pid: pid.as_raw(),
                monitor_start_time: start.start_time,
                status: Status::Creating,
                systemd_cgroup: opts.systemd_cgroup,
                rootless: opts.rootless.clone(),
                sandbox: sandbox.kind().to_owned(),
                cgroup: cgroup.clone(),
                hooks: bundle.spec.hooks().clone(),
                paused_from: None,
                pod: pod.as_ref().map(|p| p.sandbox.clone()),
                vm_size: pod.is_none().then_some(size),
            };
            store.save(&record)?;
            recorded = Some(record);
            Ok(())
        },
    );
    // With create hooks: caught from the first hook on, and held to the end, so that a second
    // signal cannot cut the clean-up of a failed create short (nor a late one the writing of the
    // console and pid-file of a created container); dropped, it delivers any still queued.
    let mut interrupts: Option<Interrupts> = None;
    let result = forked.and_then(|pid| {
        let finish = || -> Result<Created, CreateError> {
            let mut record = recorded
                .take()
                .expect("recorded when the monitor was forked");
            if record.hooks.is_some() {
                // runc runs prestart and createRuntime in its create process once init's PID is
                // known, and createContainer inside the container before pivot_root. Vessel
                // cannot run a host program in the guest's mount namespace, so createContainer
                // runs here too, after the other two (docs/runc-compat.md). runc has chdir'ed
                // into the bundle by then: so do the hooks here.
                let interrupts =
                    interrupts.insert(Interrupts::catch().map_err(CreateError::CatchSignals)?);
                let state = HookState::of(&record, "creating");
                for kind in [
                    HookKind::Prestart,
                    HookKind::CreateRuntime,
                    HookKind::CreateContainer,
                ] {
                    hooks::run_interruptible(
                        kind,
                        record.hooks.as_ref(),
                        &state,
                        Some(&bundle.path),
                        interrupts,
                    )?;
                }
                if let Some(signal) = interrupts.take() {
                    return Err(CreateError::Interrupted(signal));
                }
                match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => {}
                    Ok(status) => {
                        return Err(CreateError::MonitorExitedDuringHooks(format!("{status:?}")))
                    }
                    Err(e) => return Err(CreateError::MonitorExitedDuringHooks(e.to_string())),
                }
            }
            // runc writes state.json once the create hooks have succeeded (process_linux.go
            // `initProcess.start`, `procReady`): from here on the container exists.
            record.status = Status::Created;
            store.save(&record)?;
            // runc sends the master during create, before the pid-file is written.
            let console = match (&socket, master) {
                (Some(socket), Some(master)) => {
                    console::send_master(socket, &name, master.as_fd())?;
                    None
                }
                (None, master) => master,
                (Some(_), None) => None,
            };
            if let Some(path) = &pid_file {
                state::write_atomic(path, pid.as_raw().to_string().as_bytes(), 0o644).map_err(
                    |source| CreateError::WritePidFile {
                        path: path.clone(),
                        source,
                    },
                )?;
            }
            Ok(Created {
                pid: pid.as_raw(),
                console,
            })
        };
        finish().inspect_err(|_| {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        })
    });
    if result.is_err() {
        // A pod member's monitor may have created it in the sandbox's guest and attached its
        // entries to the sandbox's share before it was killed: both are taken out again.
        if let Some(p) = &pod {
            crate::sandbox::pod::release(store, &p.sandbox, &opts.id);
        }
        // The monitor is dead and reaped by now: its cgroup is empty.
        if let Some(c) = &cgroup {
            let _ = cgroup::remove(c);
        }
        let _ = store.remove(&opts.id);
        // runc destroys a container whose create failed, which runs its poststop hooks
        // (spec runtime.md: a failed create hook continues the lifecycle at "destroy").
        let state = HookState {
            oci_version: bundle.spec.version().clone(),
            id: opts.id.clone(),
            status: "stopped",
            pid: 0,
            bundle: bundle.path.clone(),
            annotations,
        };
        hooks::run_warn(
            HookKind::Poststop,
            bundle.spec.hooks().as_ref(),
            &state,
            Some(&bundle.path),
        );
    }
    drop(lock);
    drop(interrupts);
    result
}

/// Makes `<dir>/vsock.sock` a link to the pod sandbox's, so that `exec`, `ps`, `events` and
/// `update` of a member reach the agent of the VM it runs in.
fn link_vsock(pod: &crate::sandbox::pod::Pod, dir: &std::path::Path) -> Result<(), CreateError> {
    let path = dir.join(state::VSOCK_SOCKET);
    std::os::unix::fs::symlink(pod.dir.join(state::VSOCK_SOCKET), &path)
        .map_err(|source| CreateError::LinkVsock { path, source })
}

/// Creates the monitor's host cgroup from `linux.cgroupsPath` (see [`cgroup`]). Without
/// permission (rootless), no `cgroupsPath` and no limits, the container goes without one, as
/// with runc.
/// Each directory is named in `<dir>/cgroup.json` before it is made (`state::CGROUP_FILE`): a
/// create killed before its monitor is recorded leaves `delete` the cgroup to remove.
fn host_cgroup(
    bundle: &Bundle,
    opts: &CreateOptions,
    dir: &std::path::Path,
) -> Result<Option<CgroupRecord>, CgroupError> {
    let spec_path = bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty());
    let inner = cgroup::inner_path(spec_path.as_deref(), &opts.id, opts.systemd_cgroup)?;
    let limits = cgroup::HostLimits::from_spec(&bundle.spec);
    let layout = cgroup::Layout::detect()?;
    let optional = spec_path.is_none() && limits.is_empty();
    if layout.hierarchies.is_empty() && optional {
        log::warn!(
            "no cgroup file system mounted: container {} gets no host cgroup",
            opts.id
        );
        return Ok(None);
    }
    let shown = spec_path.unwrap_or_default();
    let marker = dir.join(state::CGROUP_FILE);
    let mut note = |planned: &CgroupRecord| {
        let json = serde_json::to_vec(planned).map_err(std::io::Error::other)?;
        state::write_atomic(&marker, &json, 0o600)
    };
    match cgroup::create(&layout, &inner, &shown, &limits, &mut note) {
        Ok(record) => Ok(Some(record)),
        Err(CgroupError::CreateCgroup { source, .. })
            if optional
                && !nix::unistd::geteuid().is_root()
                && matches!(
                    source.raw_os_error(),
                    Some(libc::EACCES | libc::EPERM | libc::EROFS)
                ) =>
        {
            log::warn!(
                "no permission for a cgroup: container {} gets no host cgroup",
                opts.id
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// For `process.terminal`: dials the console socket when detached (runc does it before
/// anything runs, so a bad path fails early), sets the initial size override, and allocates
/// the host pty, sized from `process.consoleSize`.
fn open_terminal(
    bundle: &mut Bundle,
    opts: &CreateOptions,
) -> Result<(HostPty, Option<UnixStream>), CreateError> {
    let socket = match (&opts.console_socket, opts.detach) {
        (Some(path), true) => Some(console::connect_socket(path)?),
        _ => None,
    };
    let mut size = None;
    if let Some(process) = bundle.spec.process_mut() {
        if let Some(forced) = opts.terminal_size {
            console::set_console_size(process, forced);
        }
        size = console::console_size(process);
    }
    Ok((console::open_pty(size)?, socket))
}

/// Forks the monitor, has `forked` record it, and waits for its report; returns its PID once it
/// says `created`. The monitor closes its inherited copy of `lock` (the parent keeps holding it)
/// and the fds in `parent_only` (the pty master and console socket); the host pty slave in
/// `config` goes to the monitor only. A monitor that `forked` fails for is killed.
fn fork_monitor(
    config: MonitorConfig,
    sandbox: Arc<dyn sandbox::Sandbox>,
    lock: &mut Option<ContainerLock>,
    parent_only: &[i32],
    forked: &mut dyn FnMut(Pid) -> Result<(), CreateError>,
) -> Result<Pid, CreateError> {
    let (read, write): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(CreateError::CreatePipe)?;
    // SAFETY: `create` is documented to run in a single-threaded process, so the child is a
    // complete copy and may allocate and run ordinary Rust code.
    match unsafe { fork() }.map_err(CreateError::ForkMonitor)? {
        ForkResult::Child => {
            drop(read);
            drop(lock.take());
            // The child never returns to the scope that owns these, so they are closed here.
            for &fd in parent_only {
                let _ = nix::unistd::close(fd);
            }
            // A new session: the monitor must not get the caller's terminal signals.
            let _ = nix::unistd::setsid();
            std::process::exit(monitor::run(config, sandbox, write));
        }
        ForkResult::Parent { child } => {
            drop(write);
            // Only the monitor holds the pty slave: the caller's EOF on the master depends on it.
            drop(config);
            if let Err(e) = forked(child) {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(e);
            }
            let mut line = String::new();
            let _ = BufReader::new(std::fs::File::from(read)).read_line(&mut line);
            let line = line.trim_end();
            if line == REPORT_CREATED {
                return Ok(child);
            }
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            let message = line.strip_prefix("error: ").unwrap_or(line);
            Err(CreateError::RunMonitor(if message.is_empty() {
                "the monitor exited before creating the container".to_owned()
            } else {
                message.to_owned()
            }))
        }
    }
}
