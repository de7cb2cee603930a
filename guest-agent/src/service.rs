//! The agent's request handling: one [`Service`] shared by every control connection.
//!
//! Containers are created through the setup process (`container::setup`), reaped by the
//! [`Reaper`], and their streams registered in the [`StdioRegistry`]. Every failure returns a
//! typed [`RemoteError`] with its cause chain.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use oci_spec::runtime::LinuxResources;
use vessel_protocol::network::Interface;
use vessel_protocol::{
    Code, CreateContainer, ExecProcess, ExecTimings, Hello, ProcessInfo, ProcessList, RemoteError,
    Request, Response, StdioConfig,
};

use crate::container::cgroup::Cgroup;
use crate::container::setup::{self, SetupReport, SetupRequest};
use crate::network;
use crate::reaper::Reaper;
use crate::stdio::StdioRegistry;

/// Shortcut for a typed error with no cause.
fn err(code: Code, msg: impl Into<String>) -> RemoteError {
    RemoteError::new(code, msg)
}

/// Typed error from a local one.
fn from(code: Code, e: &(dyn std::error::Error + 'static)) -> RemoteError {
    RemoteError::from_error(code, e)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Running,
}

#[derive(Debug)]
struct Proc {
    pid: i32,
    tty: Option<File>,
    /// The agent's time to bring it to `execve` (its init's `release_us` is set at start).
    timings: Mutex<ExecTimings>,
}

#[derive(Debug)]
struct Container {
    config: CreateContainer,
    init: Proc,
    cgroup: Option<Cgroup>,
    phase: Mutex<Phase>,
    start: Mutex<Option<UnixStream>>,
    execs: Mutex<HashMap<String, Proc>>,
    /// The interfaces `configure_network` has configured, in order.
    network: Mutex<Vec<Interface>>,
}

/// Where the agent keeps things and what it knows about itself.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The agent binary to re-exec in setup mode (`/proc/self/exe`).
    pub exe: PathBuf,
    /// The parent of container cgroups (`/sys/fs/cgroup/vessel`), or `None` for no cgroup.
    pub cgroup_root: Option<PathBuf>,
    /// The hello sent on every control connection.
    pub hello: Hello,
    /// Whether the agent shuts down (as on `Shutdown`) once a `Delete` leaves no container: the
    /// guest's init powers the VM off when its container is gone.
    pub shutdown_when_empty: bool,
}

/// The agent's state and request handlers.
#[derive(Debug)]
pub struct Service {
    cfg: ServiceConfig,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    reaper: Arc<Reaper>,
    /// The processes' unattached streams.
    pub stdio: Arc<StdioRegistry>,
    shutdown: AtomicBool,
}

impl Service {
    /// A service with no containers.
    pub fn new(cfg: ServiceConfig, reaper: Arc<Reaper>) -> Self {
        Service {
            cfg,
            containers: Mutex::new(HashMap::new()),
            reaper,
            stdio: Arc::new(StdioRegistry::default()),
            shutdown: AtomicBool::new(false),
        }
    }

    /// The hello message.
    pub fn hello(&self) -> &Hello {
        &self.cfg.hello
    }

    /// Whether a `Shutdown` request was served.
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    fn get(&self, id: &str) -> Result<Arc<Container>, RemoteError> {
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| err(Code::NotFound, format!("container {id} does not exist")))
    }

    fn pid_of(&self, c: &Container, id: &str, exec_id: Option<&str>) -> Result<i32, RemoteError> {
        match exec_id {
            None => Ok(c.init.pid),
            Some(e) => c
                .execs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(e)
                .map(|p| p.pid)
                .ok_or_else(|| {
                    err(
                        Code::NotFound,
                        format!("exec {e} in container {id} does not exist"),
                    )
                }),
        }
    }

    /// Serves one request.
    pub fn handle(&self, req: Request) -> Result<Response, RemoteError> {
        match req {
            Request::Hello => Ok(Response::Hello(self.cfg.hello.clone())),
            Request::CreateContainer(c) => self.create(*c),
            Request::Start { container_id } => self.start(&container_id),
            Request::ConfigureNetwork {
                container_id,
                interfaces,
            } => self.configure_network(&container_id, &interfaces),
            Request::Exec(e) => self.exec(*e),
            Request::Signal {
                container_id,
                exec_id,
                signal,
                all,
            } => self.signal(&container_id, exec_id.as_deref(), signal, all),
            Request::Wait {
                container_id,
                exec_id,
            } => {
                let c = self.get(&container_id)?;
                let pid = self.pid_of(&c, &container_id, exec_id.as_deref())?;
                Ok(Response::Exited {
                    status: self.reaper.wait(pid),
                })
            }
            Request::Ps { container_id } => self.ps(&container_id),
            Request::Stats { container_id } => self.stats(&container_id),
            Request::WaitOom { container_id, seen } => self.wait_oom(&container_id, seen),
            Request::Pause { container_id } => self.freeze(&container_id, true),
            Request::Resume { container_id } => self.freeze(&container_id, false),
            Request::Update {
                container_id,
                resources,
            } => self.update(&container_id, &resources),
            Request::ResizeTty {
                container_id,
                exec_id,
                rows,
                cols,
            } => self.resize(&container_id, exec_id.as_deref(), rows, cols),
            Request::CloseStdin {
                container_id,
                exec_id,
            } => {
                self.get(&container_id)?;
                self.stdio.close_stdin(&(container_id, exec_id))?;
                Ok(Response::Done)
            }
            Request::Delete { container_id } => {
                let done = self.delete(&container_id)?;
                if self.cfg.shutdown_when_empty
                    && self
                        .containers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_empty()
                {
                    log::info!("container {container_id} deleted, none left: shutting down");
                    self.shutdown.store(true, Ordering::SeqCst);
                }
                Ok(done)
            }
            Request::Timings {
                container_id,
                exec_id,
            } => self.timings(&container_id, exec_id.as_deref()),
            Request::Shutdown => {
                self.shutdown.store(true, Ordering::SeqCst);
                Ok(Response::Done)
            }
        }
    }

    /// Spawns a setup process and reads its reports up to `Ready`, then waits for the setup
    /// process itself to exit (as runc's `create` returns only once its intermediate child is
    /// gone: nothing but the container process is left in the container's cgroup or namespaces).
    /// On failure, nothing of either process is left (both are killed and reaped).
    fn run_setup(
        &self,
        terminal: bool,
        stdio_cfg: StdioConfig,
        req: &SetupRequest,
    ) -> Result<(i32, UnixStream, crate::stdio::ProcStdio, Option<File>), RemoteError> {
        let (ends, fds) =
            crate::stdio::make(terminal, stdio_cfg).map_err(|e| from(Code::Internal, &e))?;
        let (sock, setup_pid) =
            setup::spawn(&self.cfg.exe, fds, req).map_err(|e| from(Code::Internal, &e))?;
        self.reaper.kick();
        let result = self.read_setup_reports(ends, sock, setup_pid, req);
        if result.is_err() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(setup_pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.reaper.wait(setup_pid as i32);
        self.reaper.forget(setup_pid as i32);
        result
    }

    /// The reports of setup process `setup_pid` on `sock`, up to `Ready` (see [`run_setup`]).
    fn read_setup_reports(
        &self,
        mut ends: crate::stdio::ProcStdio,
        mut sock: UnixStream,
        setup_pid: u32,
        req: &SetupRequest,
    ) -> Result<(i32, UnixStream, crate::stdio::ProcStdio, Option<File>), RemoteError> {
        let mut pid = None;
        let mut tty = None;
        let mut ready = false;
        loop {
            let mut fds = Vec::new();
            let report =
                setup::read_report(&sock, &mut fds).map_err(|e| from(Code::Internal, &e))?;
            match report {
                // The container process may report `Ready` before its parent, the setup
                // process, reports the fork: both write to this socket.
                Some(SetupReport::Forked { pid: p }) if ready => return Ok((p, sock, ends, tty)),
                Some(SetupReport::Forked { pid: p }) => pid = Some(p),
                Some(SetupReport::MapIds) => {
                    let linux = match req {
                        SetupRequest::Create { config, .. } => config.linux.as_ref(),
                        SetupRequest::Exec { .. } => None,
                    };
                    setup::write_id_maps(&mut sock, setup_pid, linux).map_err(|e| {
                        RemoteError::from_error(
                            Code::InvalidArgument,
                            &crate::container::setup::SetupError::Step {
                                step: "write linux.uidMappings/gidMappings".into(),
                                source: e,
                            },
                        )
                    })?;
                }
                Some(SetupReport::Console) => {
                    let master = File::from(fds.pop().ok_or_else(|| {
                        err(Code::Internal, "the console report carried no pty master")
                    })?);
                    tty = Some(master.try_clone().map_err(|e| from(Code::Internal, &e))?);
                    ends.set_tty(master);
                }
                Some(SetupReport::Ready) => match pid {
                    Some(p) => return Ok((p, sock, ends, tty)),
                    None => ready = true,
                },
                Some(SetupReport::Failed(e)) => {
                    if let Some(p) = pid {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(p),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        self.reaper.wait(p);
                        self.reaper.forget(p);
                    }
                    return Err(e);
                }
                None => {
                    return Err(err(
                        Code::Internal,
                        "setup process exited without reporting (see the agent's log)",
                    ))
                }
            }
        }
    }

    fn create(&self, c: CreateContainer) -> Result<Response, RemoteError> {
        let t0 = Instant::now();
        let id = c.id.clone();
        if self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
        {
            return Err(err(
                Code::AlreadyExists,
                format!("container with given ID already exists: {id}"),
            ));
        }
        let cgroup = match &self.cfg.cgroup_root {
            Some(root) => {
                let cg = Cgroup::create(root, &id).map_err(|e| from(Code::Internal, &e))?;
                if let Some(r) = c.linux.as_ref().and_then(|l| l.resources().as_ref()) {
                    if let Err(e) = cg.apply(r) {
                        let _ = cg.remove();
                        return Err(from(Code::InvalidArgument, &e));
                    }
                }
                Some(cg)
            }
            None => None,
        };
        let terminal = c.process.terminal() == Some(true);
        let req = SetupRequest::Create {
            config: Box::new(c.clone()),
            cgroup: cgroup.as_ref().map(|g| g.path.clone()),
        };
        let (pid, sock, ends, tty) = match self.run_setup(terminal, c.stdio, &req) {
            Ok(v) => v,
            Err(e) => {
                if let Some(cg) = &cgroup {
                    let _ = cg.remove();
                }
                return Err(e);
            }
        };
        self.stdio.insert((id.clone(), None), ends);
        let setup_us = micros(t0);
        let container = Arc::new(Container {
            config: c,
            init: Proc {
                pid,
                tty,
                timings: Mutex::new(ExecTimings {
                    setup_us,
                    ..ExecTimings::default()
                }),
            },
            cgroup,
            phase: Mutex::new(Phase::Created),
            start: Mutex::new(Some(sock)),
            execs: Mutex::new(HashMap::new()),
            network: Mutex::new(Vec::new()),
        });
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, container);
        Ok(Response::Created { pid, setup_us })
    }

    fn start(&self, id: &str) -> Result<Response, RemoteError> {
        let t0 = Instant::now();
        let c = self.get(id)?;
        let mut phase = c.phase.lock().unwrap_or_else(|e| e.into_inner());
        if self.reaper.status(c.init.pid).is_some() {
            return Err(err(
                Code::FailedPrecondition,
                "cannot start a container that has stopped",
            ));
        }
        if *phase == Phase::Running {
            return Err(err(
                Code::FailedPrecondition,
                "cannot start an already running container",
            ));
        }
        let mut sock = c
            .start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| err(Code::Internal, "container has no start channel"))?;
        release(&mut sock)?;
        let mut timings = c.init.timings.lock().unwrap_or_else(|e| e.into_inner());
        timings.release_us = micros(t0);
        timings.request_to_exec_us = timings.setup_us + timings.release_us;
        *phase = Phase::Running;
        Ok(Response::Done)
    }

    /// Configures the interfaces of a created container not configured before; an interface
    /// listed again exactly as it was configured is left as it is, one listed again with other
    /// settings (same name or same guest MAC) is refused with `AlreadyExists`. Holds the
    /// container's phase so that `Start` waits until the network is in place.
    fn configure_network(
        &self,
        id: &str,
        interfaces: &[Interface],
    ) -> Result<Response, RemoteError> {
        let c = self.get(id)?;
        let phase = c.phase.lock().unwrap_or_else(|e| e.into_inner());
        if *phase == Phase::Running {
            return Err(err(
                Code::FailedPrecondition,
                format!(
                    "container {id} has been started: configure_network comes between create \
                     and start"
                ),
            ));
        }
        if self.reaper.status(c.init.pid).is_some() {
            return Err(err(
                Code::FailedPrecondition,
                format!("container {id} has stopped: cannot configure its network"),
            ));
        }
        let mut done = c.network.lock().unwrap_or_else(|e| e.into_inner());
        let mut todo = Vec::new();
        for i in interfaces {
            match done
                .iter()
                .find(|d| d.name == i.name || d.guest_mac == i.guest_mac)
            {
                Some(d) if d == i => {}
                Some(d) => {
                    return Err(err(
                        Code::AlreadyExists,
                        format!(
                            "container {id}: interface {} is already configured (as {}, guest \
                             MAC {}) with other settings: an interface is configured once, a \
                             new one needs a new name and guest MAC",
                            i.name, d.name, d.guest_mac
                        ),
                    ))
                }
                None => todo.push(i.clone()),
            }
        }
        network::configure(c.init.pid, &todo, &mut done).map_err(|e| from(e.code(), &e))?;
        Ok(Response::Done)
    }

    fn exec(&self, e: ExecProcess) -> Result<Response, RemoteError> {
        let t0 = Instant::now();
        let c = self.get(&e.container_id)?;
        if *c.phase.lock().unwrap_or_else(|e| e.into_inner()) != Phase::Running
            || self.reaper.status(c.init.pid).is_some()
        {
            return Err(err(
                Code::FailedPrecondition,
                format!(
                    "cannot exec in a container that is not running: {}",
                    e.container_id
                ),
            ));
        }
        if c.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&e.exec_id)
        {
            return Err(err(
                Code::AlreadyExists,
                format!(
                    "exec id {} already exists in container {}",
                    e.exec_id, e.container_id
                ),
            ));
        }
        let req = SetupRequest::Exec {
            init_pid: c.init.pid,
            process: Box::new(e.process.clone()),
            seccomp: c.config.linux.as_ref().and_then(|l| l.seccomp().clone()),
            cgroup: c.cgroup.as_ref().map(|g| g.path.clone()),
        };
        let terminal = e.process.terminal() == Some(true);
        let (pid, mut sock, ends, tty) = self.run_setup(terminal, e.stdio, &req)?;
        let setup_us = micros(t0);
        self.stdio
            .insert((e.container_id.clone(), Some(e.exec_id.clone())), ends);
        let timings = Mutex::new(ExecTimings {
            setup_us,
            ..ExecTimings::default()
        });
        c.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(e.exec_id.clone(), Proc { pid, tty, timings });
        let released = Instant::now();
        release(&mut sock)?;
        if let Some(p) = c
            .execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&e.exec_id)
        {
            let mut t = p.timings.lock().unwrap_or_else(|e| e.into_inner());
            t.release_us = micros(released);
            t.request_to_exec_us = micros(t0);
        }
        Ok(Response::ExecStarted { pid })
    }

    fn signal(
        &self,
        id: &str,
        exec_id: Option<&str>,
        signal: i32,
        all: bool,
    ) -> Result<Response, RemoteError> {
        use nix::sys::signal::{kill, Signal};
        let c = self.get(id)?;
        let sig = Signal::try_from(signal)
            .map_err(|_| err(Code::InvalidArgument, format!("invalid signal {signal}")))?;
        let pids = if all && exec_id.is_none() {
            self.container_pids(&c)
        } else {
            let pid = self.pid_of(&c, id, exec_id)?;
            if self.reaper.status(pid).is_some() {
                return Err(err(Code::FailedPrecondition, "process already finished"));
            }
            vec![pid]
        };
        for pid in pids {
            match kill(nix::unistd::Pid::from_raw(pid), sig) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => return Err(from(Code::Internal, &std::io::Error::from(e))),
            }
        }
        Ok(Response::Done)
    }

    /// The container's processes: its cgroup's, or init and its descendants without one.
    fn container_pids(&self, c: &Container) -> Vec<i32> {
        if let Some(pids) = c.cgroup.as_ref().and_then(|g| g.pids().ok()) {
            return pids;
        }
        let mut out = vec![c.init.pid];
        let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|pid| Some((pid, read_stat(pid)?.ppid)))
            .collect();
        let mut i = 0;
        while i < out.len() {
            let p = out[i];
            out.extend(
                parents
                    .iter()
                    .filter(|(_, pp)| *pp == p)
                    .map(|(pid, _)| *pid),
            );
            i += 1;
        }
        out
    }

    fn ps(&self, id: &str) -> Result<Response, RemoteError> {
        let c = self.get(id)?;
        let mut pids: Vec<i32> = self
            .container_pids(&c)
            .into_iter()
            .filter(|p| self.reaper.status(*p).is_none())
            .collect();
        pids.sort_unstable();
        let processes = pids.iter().filter_map(|p| read_stat(*p)).collect();
        Ok(Response::Processes(ProcessList { pids, processes }))
    }

    fn cgroup(&self, id: &str) -> Result<Cgroup, RemoteError> {
        self.get(id)?.cgroup.clone().ok_or_else(|| {
            err(
                Code::FailedPrecondition,
                format!("container {id} has no cgroup in this agent"),
            )
        })
    }

    /// The cgroup's statistics plus the counters of the network interfaces in the namespace of
    /// the container's init.
    fn stats(&self, id: &str) -> Result<Response, RemoteError> {
        let c = self.get(id)?;
        let mut stats = self.cgroup(id)?.stats();
        if self.reaper.status(c.init.pid).is_none() {
            stats.network_interfaces = crate::netdev::read(c.init.pid);
        }
        Ok(Response::Stats(stats))
    }

    /// See [`Request::WaitOom`]: polls `memory.events` every 100 ms.
    fn wait_oom(&self, id: &str, seen: Option<u64>) -> Result<Response, RemoteError> {
        let c = self.get(id)?;
        let cgroup = self.cgroup(id)?;
        loop {
            let count = cgroup.oom_kills();
            let exited = self.reaper.status(c.init.pid).is_some();
            if seen.is_none_or(|s| count > s) || exited {
                return Ok(Response::OomKills { count, exited });
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn freeze(&self, id: &str, frozen: bool) -> Result<Response, RemoteError> {
        self.cgroup(id)?
            .freeze(frozen)
            .map_err(|e| from(Code::Internal, &e))?;
        Ok(Response::Done)
    }

    fn update(&self, id: &str, r: &LinuxResources) -> Result<Response, RemoteError> {
        self.cgroup(id)?
            .apply(r)
            .map_err(|e| from(Code::InvalidArgument, &e))?;
        Ok(Response::Done)
    }

    fn resize(
        &self,
        id: &str,
        exec_id: Option<&str>,
        rows: u16,
        cols: u16,
    ) -> Result<Response, RemoteError> {
        let c = self.get(id)?;
        let resize = |tty: Option<&File>| -> Result<Response, RemoteError> {
            let tty = tty.ok_or_else(|| {
                err(
                    Code::FailedPrecondition,
                    format!("process {exec_id:?} of {id} has no terminal"),
                )
            })?;
            crate::tty::set_window_size(tty.as_raw_fd(), rows, cols)
                .map_err(|e| from(Code::Internal, &e))?;
            Ok(Response::Done)
        };
        match exec_id {
            None => resize(c.init.tty.as_ref()),
            Some(e) => {
                let execs = c.execs.lock().unwrap_or_else(|e| e.into_inner());
                let p = execs.get(e).ok_or_else(|| {
                    err(
                        Code::NotFound,
                        format!("exec {e} in container {id} does not exist"),
                    )
                })?;
                resize(p.tty.as_ref())
            }
        }
    }

    /// See [`Request::Timings`].
    fn timings(&self, id: &str, exec_id: Option<&str>) -> Result<Response, RemoteError> {
        let c = self.get(id)?;
        let read = |p: &Proc| *p.timings.lock().unwrap_or_else(|e| e.into_inner());
        let timings = match exec_id {
            None => read(&c.init),
            Some(e) => c
                .execs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(e)
                .map(read)
                .ok_or_else(|| {
                    err(
                        Code::NotFound,
                        format!("exec {e} in container {id} does not exist"),
                    )
                })?,
        };
        Ok(Response::Timings(timings))
    }

    fn delete(&self, id: &str) -> Result<Response, RemoteError> {
        let c = self.get(id)?;
        for pid in self.container_pids(&c) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // A created container's init waits on its start channel: closing it ends it too.
        c.start.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.reaper.wait(c.init.pid);
        if let Some(cg) = &c.cgroup {
            // The kernel removes a dying cgroup's tasks asynchronously; retry briefly.
            let mut last = Ok(());
            for _ in 0..100 {
                last = cg.remove();
                if last.is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            last.map_err(|e| from(Code::Internal, &e))?;
        }
        self.stdio.remove_container(id);
        self.reaper.forget(c.init.pid);
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(Response::Done)
    }
}

/// Microseconds since `t0` (`Instant` is `CLOCK_MONOTONIC`).
fn micros(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Lets a ready process `execve` and waits until it has (EOF on the close-on-exec channel).
fn release(sock: &mut UnixStream) -> Result<(), RemoteError> {
    setup::send_start(sock).map_err(|e| from(Code::Internal, &e))?;
    match setup::read_report(sock, &mut Vec::new()) {
        Ok(None) => Ok(()),
        Ok(Some(SetupReport::Failed(e))) => Err(e),
        Ok(Some(other)) => Err(err(
            Code::Internal,
            format!("unexpected setup report {other:?}"),
        )),
        Err(e) => Err(from(Code::Internal, &e)),
    }
}

/// One process from `/proc/<pid>/stat` and `/proc/<pid>/status`.
fn read_stat(pid: i32) -> Option<ProcessInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): index = field - 3.
    let field = |n: usize| {
        f.get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmd = if cmdline.is_empty() {
        format!("[{comm}]")
    } else {
        String::from_utf8_lossy(&cmdline)
            .trim_end_matches('\0')
            .replace('\0', " ")
    };
    Some(ProcessInfo {
        pid,
        ppid: field(4) as i32,
        uid,
        state: f.first()?.to_string(),
        start_ticks: field(22),
        cpu_ticks: field(14) + field(15),
        cmd,
    })
}
