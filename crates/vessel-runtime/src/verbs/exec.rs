//! `exec` (runc exec.go): run another process in a container's guest.
//!
//! `vessel exec` forks a **relay** process (see docs/design.md "Exec"), whose PID goes in the
//! pid-file. The relay talks to the guest agent itself, straight through the VM's vsock socket
//! ([`crate::verbs::guest`]), not through the monitor: it sends `exec`, relays its fds 0-2 (the
//! caller's) to the process's stdio streams, forwards the signals it receives to the guest
//! process, and exits with the guest process's status (code, or 128+N). Before any thread exists
//! it forks a **guard** that holds only a pipe from the relay: if the relay dies without saying
//! it is done (SIGKILL straight to the pid-file PID, as containerd does), the guard SIGKILLs the
//! guest process. A relay registers itself under `<root>/<id>/relays/<pid>` so that `ps` can
//! list it.

use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::Process;
use vessel_protocol::{
    open_stdio, ExecProcess, Request, StdioConfig, StdioHeader, StreamKind, STDIO_PORT,
};

use crate::host::bundle::Bundle;
use crate::host::console::{self, ConsoleError, HostConsole, HostPty};
use crate::host::state::{self, StateError, StateStore};
use crate::verbs::guest::{AgentAddress, GuestError};
use vessel_error::chain;

/// Directory under `<root>/<id>` where live exec relays register (one file per relay PID).
pub const RELAYS_DIR: &str = "relays";

/// Errors of [`exec`]; the CLI prints them as `exec failed: ...` and exits 255.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Unknown ID, invalid ID, or store failure.
    #[error(transparent)]
    Store(#[from] StateError),
    /// The process.json could not be read or parsed.
    #[error("read process file {path}")]
    ReadProcess {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bundle's config.json could not be loaded.
    #[error("load the container's bundle")]
    LoadBundle(#[source] crate::host::bundle::BundleError),
    /// A flag could not be applied to the process, or the process file has a value runc
    /// refuses (the message names the field).
    #[error("{0}")]
    InvalidFlag(String),
    /// A system call failed.
    #[error("{op}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The relay reported a failure before the process ran.
    #[error("{0}")]
    Relay(String),
    /// The pid-file could not be written.
    #[error("write pid file {path}")]
    WritePidFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The terminal settings are contradictory, or the terminal could not be set up.
    #[error(transparent)]
    Console(#[from] ConsoleError),
}

/// The process flags of `vessel exec` (ignored with `-p`, as runc does).
#[derive(Debug, Clone, Default)]
pub struct ProcessFlags {
    /// The command and its arguments.
    pub args: Vec<String>,
    /// `--cwd`.
    pub cwd: Option<String>,
    /// `--env` (appended to the bundle's).
    pub env: Vec<String>,
    /// `--user uid[:gid]`.
    pub user: Option<String>,
    /// `--additional-gids`.
    pub additional_gids: Vec<u32>,
    /// `--cap` (added to the bounding, effective and permitted sets).
    pub caps: Vec<String>,
    /// `--no-new-privs`.
    pub no_new_privs: bool,
    /// `--tty`.
    pub tty: bool,
}

/// What `vessel exec` asks for.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Container ID.
    pub id: String,
    /// The process to run.
    pub process: Process,
    /// Return once the process has started (`--detach`).
    pub detach: bool,
    /// Where the relay's PID goes.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`: receives the host pty master when `process.terminal` is set and
    /// the process is detached.
    pub console_socket: Option<PathBuf>,
}

/// Reads a `process.json` (`exec -p`) and checks its fields as config.json's `process` is
/// checked ([`crate::host::validate::check_process`]).
pub fn load_process_file(path: &Path) -> Result<Process, ExecError> {
    let text = std::fs::read_to_string(path).map_err(|source| ExecError::ReadProcess {
        path: path.to_owned(),
        source,
    })?;
    let read_error = |e: serde_json::Error| ExecError::ReadProcess {
        path: path.to_owned(),
        source: e.into(),
    };
    let mut process: serde_json::Value = serde_json::from_str(&text).map_err(read_error)?;
    warn_unknown_capabilities(&mut process);
    crate::host::bundle::spec_scheduler_flag_names(&mut process);
    let process: Process = serde_json::from_value(process).map_err(read_error)?;
    crate::host::validate::check_process(&process, "process").map_err(ExecError::InvalidFlag)?;
    Ok(process)
}

/// Drops unknown names from the `capabilities` of the process JSON `process` with runc's warning
/// (runc exec goes through the same `capabilities.New`; see [`crate::host::bundle::UnknownCapability`]).
fn warn_unknown_capabilities(process: &mut serde_json::Value) {
    if let Some(caps) = process.get_mut("capabilities") {
        let unknown = crate::host::bundle::drop_unknown_capabilities(caps, "process.capabilities");
        if let Some(warning) = crate::host::bundle::unknown_capabilities_warning(&unknown) {
            log::warn!("{warning}");
        }
    }
}

/// Builds the process from the bundle's `process` of container `id` and the flags (runc exec.go
/// `getProcess`): args replaced, env appended, tty only with `--tty`.
pub fn process_from_flags(
    store: &StateStore,
    id: &str,
    flags: &ProcessFlags,
) -> Result<Process, ExecError> {
    let record = store.load(id)?;
    let bundle = Bundle::load(&record.bundle).map_err(ExecError::LoadBundle)?;
    let base = bundle.spec.process().clone().unwrap_or_default();
    apply_flags(base, flags)
}

fn apply_flags(base: Process, flags: &ProcessFlags) -> Result<Process, ExecError> {
    let bad = |m: String| ExecError::InvalidFlag(m);
    let mut p = serde_json::to_value(base).map_err(|e| bad(e.to_string()))?;
    p["args"] = flags.args.clone().into();
    p["terminal"] = flags.tty.into();
    if let Some(cwd) = &flags.cwd {
        p["cwd"] = cwd.clone().into();
    }
    if !flags.env.is_empty() {
        let mut env: Vec<String> = serde_json::from_value(p["env"].take()).unwrap_or_default();
        env.extend(flags.env.iter().cloned());
        p["env"] = env.into();
    }
    if let Some(user) = &flags.user {
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user.as_str(), None),
        };
        let num = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| bad(format!("parsing {s} as int for user: invalid syntax")))
        };
        p["user"]["uid"] = num(uid)?.into();
        if let Some(g) = gid {
            p["user"]["gid"] = num(g)?.into();
        }
    }
    if !flags.additional_gids.is_empty() {
        p["user"]["additionalGids"] = flags.additional_gids.clone().into();
    }
    for cap in &flags.caps {
        let name = if cap.starts_with("CAP_") {
            cap.clone()
        } else {
            format!("CAP_{cap}")
        };
        for set in ["bounding", "effective", "permitted"] {
            let list = &mut p["capabilities"][set];
            if !list.is_array() {
                *list = serde_json::json!([]);
            }
            let list = list.as_array_mut().expect("made an array");
            if !list.iter().any(|c| c == name.as_str()) {
                list.push(name.clone().into());
            }
        }
    }
    if flags.no_new_privs {
        p["noNewPrivileges"] = true.into();
    }
    warn_unknown_capabilities(&mut p);
    serde_json::from_value(p).map_err(|e| bad(format!("process: {e}")))
}

/// Runs `opts.process` in container `id`. Detached: returns 0 once it runs and the pid-file is
/// written. Foreground: forwards signals to the relay and returns its status. Must be called
/// from a single-threaded process: it forks.
///
/// With `process.terminal`, a host pty is allocated (see [`crate::host::console`]); the relay holds
/// its slave. Detached, the master goes to `--console-socket` before the pid-file is written;
/// in the foreground, it is copied to and from this process's stdin/stdout, the caller's
/// terminal is raw meanwhile, and SIGWINCH resizes the master to it (runc tty.go).
pub fn exec(store: &StateStore, opts: &ExecOptions) -> Result<i32, ExecError> {
    let address = AgentAddress::of(store, &opts.id).map_err(|e| ExecError::Relay(chain(&e)))?;
    let relays = store.container_dir(&opts.id)?.join(RELAYS_DIR);
    let terminal = opts.process.terminal() == Some(true);
    console::check_terminal(opts.detach, terminal, opts.console_socket.is_some())?;
    let mut process = opts.process.clone();
    let (mut host, mut socket, mut pty) = (None, None, None);
    if terminal {
        match &opts.console_socket {
            Some(path) => socket = Some(console::connect_socket(path)?),
            None => {
                let found = HostConsole::find(console::EXEC_NEEDS_A_TERMINAL)?;
                if let Ok(size) = found.size() {
                    if size.0 > 0 && size.1 > 0 {
                        console::set_console_size(&mut process, size);
                    }
                }
                host = Some(found);
            }
        }
        pty = Some(console::open_pty(console::console_size(&process))?);
    }
    let (master, slave, name) = match pty {
        Some(HostPty {
            master,
            slave,
            name,
        }) => (Some(master), Some(slave), name),
        None => (None, None, String::new()),
    };
    let sys = |op| move |source| ExecError::Sys { op, source };
    // Blocked before the fork, so the relay inherits the mask its forwarding thread relies on.
    // As runc (signals.go), SIGWINCH and SIGURG are not passed on by a foreground exec;
    // with a terminal, SIGWINCH resizes it.
    let mut foreground = crate::host::signal::forwarded(&[Signal::SIGWINCH, Signal::SIGURG]);
    if terminal {
        foreground.add(Signal::SIGWINCH);
    }
    foreground.add(Signal::SIGCHLD);
    if !opts.detach {
        foreground
            .thread_block()
            .map_err(sys("block signals to forward"))?;
    }
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(sys("create the relay's report pipe"))?;
    // SAFETY: `exec` is documented to run in a single-threaded process, so the child is a
    // complete copy and may allocate and run ordinary Rust code.
    let relay = match unsafe { fork() }.map_err(sys("fork the exec relay"))? {
        ForkResult::Child => {
            drop(read);
            // The master and the console socket stay with `vessel exec`; the child never
            // returns to the scope that owns them.
            for fd in master.iter().map(|m| m.as_raw_fd()) {
                let _ = nix::unistd::close(fd);
            }
            for fd in socket.iter().map(|s| s.as_raw_fd()) {
                let _ = nix::unistd::close(fd);
            }
            std::process::exit(relay_main(
                &opts.id, &process, &address, &relays, write, slave,
            ));
        }
        ForkResult::Parent { child } => child,
    };
    drop(write);
    // Only the relay holds the slave: the end of output on the master depends on it.
    drop(slave);
    let mut line = String::new();
    let _ = BufReader::new(std::fs::File::from(read)).read_line(&mut line);
    let line = line.trim_end();
    if line != "started" {
        let _ = kill(relay, Signal::SIGKILL);
        let _ = waitpid(relay, None);
        let message = line.strip_prefix("error: ").unwrap_or(line);
        return Err(ExecError::Relay(if message.is_empty() {
            "the exec relay exited before the process started".to_owned()
        } else {
            message.to_owned()
        }));
    }
    let handed = (|| -> Result<_, ExecError> {
        if let (Some(socket), Some(master)) = (&socket, &master) {
            console::send_master(socket, &name, master.as_fd())?;
        }
        if let Some(path) = &opts.pid_file {
            state::write_atomic(path, relay.as_raw().to_string().as_bytes(), 0o644).map_err(
                |source| ExecError::WritePidFile {
                    path: path.clone(),
                    source,
                },
            )?;
        }
        if let (Some(host), Some(master)) = (host.as_mut(), &master) {
            host.set_raw()?;
            let copy = master.try_clone().map_err(ConsoleError::SpawnRelay)?;
            return Ok(Some(console::copy_foreground(copy)?));
        }
        Ok(None)
    })();
    let output = match handed {
        Ok(output) => output,
        Err(e) => {
            let _ = kill(relay, Signal::SIGKILL);
            let _ = waitpid(relay, None);
            return Err(e);
        }
    };
    if opts.detach {
        return Ok(0);
    }
    let finish = |status: i32| {
        if let Some(output) = output {
            let _ = output.join();
        }
        Ok(status)
    };
    loop {
        let sig = foreground.wait().map_err(sys("wait for signals"))?;
        if sig == Signal::SIGWINCH {
            if let (Some(host), Some(master)) = (&host, &master) {
                // Errors are ignored, as runc does: the terminal may be going away.
                if let Ok(size) = host.size() {
                    let _ = console::set_window_size(master.as_fd(), size);
                }
            }
            continue;
        }
        if sig != Signal::SIGCHLD {
            let _ = kill(relay, sig);
            continue;
        }
        match waitpid(relay, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return finish(code),
            Ok(WaitStatus::Signaled(_, s, _)) => return finish(128 + s as i32),
            Ok(_) => continue,
            Err(e) => {
                return Err(ExecError::Sys {
                    op: "wait for the exec relay",
                    source: e,
                })
            }
        }
    }
}

/// The relay: see the module documentation. Returns its exit status.
fn relay_main(
    id: &str,
    process: &Process,
    address: &AgentAddress,
    relays: &Path,
    report: OwnedFd,
    terminal: Option<OwnedFd>,
) -> i32 {
    let mut report = std::fs::File::from(report);
    // Its own session: the caller's terminal signals reach `vessel exec`, which forwards them.
    let _ = nix::unistd::setsid();
    let forwarded = crate::host::signal::forwarded(&[]);
    let _ = forwarded.thread_block();
    let me = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let exec_id = format!("exec-{me}-{nanos}");
    let guard = match spawn_guard(id, &exec_id, address) {
        Ok(g) => g,
        Err(e) => {
            let _ = writeln!(report, "error: start the exec guard: {e}");
            return 255;
        }
    };
    let done = |guard: &OwnedFd| {
        let _ = nix::unistd::write(guard, b"x");
    };
    let started = (|| -> Result<(), GuestError> {
        let mut client = address.client()?;
        client
            .exec(ExecProcess {
                container_id: id.to_owned(),
                exec_id: exec_id.clone(),
                process: process.clone(),
                stdio: StdioConfig::default(),
            })
            .map_err(|e| {
                let op = "exec the process in the guest";
                match crate::sandbox::refusal(op, e) {
                    Ok(reason) => GuestError::StartProcess(reason),
                    Err(source) => GuestError::CallAgent { op, source },
                }
            })?;
        Ok(())
    })();
    if let Err(e) = started {
        done(&guard);
        let _ = writeln!(report, "error: {}", chain(&e));
        return 255;
    }
    let target = Target {
        id,
        exec_id: &exec_id,
        address,
    };
    let status = match terminal {
        Some(slave) => relay_terminal_process(&target, relays, &mut report, forwarded, slave),
        None => relay_process(id, &exec_id, address, relays, &mut report, forwarded),
    };
    done(&guard);
    let _ = std::fs::remove_file(relays.join(me.to_string()));
    status
}

/// Relays stdio and signals of a started exec process and waits for it.
fn relay_process(
    id: &str,
    exec_id: &str,
    address: &AgentAddress,
    relays: &Path,
    report: &mut std::fs::File,
    forwarded: SigSet,
) -> i32 {
    let open = |stream| -> Result<UnixStream, GuestError> {
        let mut s = address.connect(STDIO_PORT)?;
        let header = StdioHeader {
            container_id: id.to_owned(),
            exec_id: Some(exec_id.to_owned()),
            stream,
        };
        open_stdio(&mut s, &header).map_err(|source| GuestError::CallAgent {
            op: "open a stdio stream of the exec process",
            source,
        })?;
        Ok(s)
    };
    let streams = (|| {
        Ok::<_, GuestError>((
            open(StreamKind::Stdin)?,
            open(StreamKind::Stdout)?,
            open(StreamKind::Stderr)?,
            address.client()?,
        ))
    })();
    let (input, output, errors, mut waiter) = match streams {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(report, "error: {}", chain(&e));
            kill_guest(address, id, exec_id);
            return 255;
        }
    };
    register(relays);
    let dup = |fd: i32| {
        nix::unistd::dup(fd).map(|fd| {
            // SAFETY: `dup` returned a new descriptor that nothing else owns.
            unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        })
    };
    let (Ok(stdin), Ok(stdout), Ok(stderr)) = (dup(0), dup(1), dup(2)) else {
        let _ = writeln!(report, "error: duplicate the standard streams");
        kill_guest(address, id, exec_id);
        return 255;
    };
    std::thread::spawn(move || {
        let _ = vessel_protocol::stdio::relay(stdin, &input);
        let _ = input.shutdown(Shutdown::Write);
    });
    let relays =
        crate::host::output::OutputRelay::spawn("stdout-relay", output, stdout).and_then(|out| {
            Ok([
                out,
                crate::host::output::OutputRelay::spawn("stderr-relay", errors, stderr)?,
            ])
        });
    let Ok(outputs) = relays else {
        let _ = writeln!(report, "error: spawn the output relays");
        kill_guest(address, id, exec_id);
        return 255;
    };
    {
        let (address, id, exec_id) = (address.clone(), id.to_owned(), exec_id.to_owned());
        std::thread::spawn(move || {
            while let Ok(sig) = forwarded.wait() {
                signal_guest(&address, &id, &exec_id, sig as i32);
            }
        });
    }
    let _ = writeln!(report, "started");
    let status = waiter.wait(id, Some(exec_id));
    crate::host::output::finish_all(outputs);
    exit_code(exec_id, status)
}

/// The exit code of a foreground exec whose wait ended with `status`: the process's own (code,
/// or 128+N for a signal); 137, a SIGKILL, when the agent closed the connection instead, which
/// it does only when the microVM ended (the monitor killed, the guest shut down) and with it
/// every process in it, as the kernel SIGKILLs runc's exec'd processes when the container's init
/// dies (its PID namespace ends: runc exec then exits 137 too); 255 for other failures.
fn exit_code(
    exec_id: &str,
    status: Result<vessel_protocol::ExitStatus, vessel_protocol::client::ClientError>,
) -> i32 {
    match status {
        Ok(s) => s.runc_code(),
        Err(vessel_protocol::client::ClientError::CloseConnection { .. }) => {
            log::info!("exec process {exec_id}: the microVM ended under it; reporting it killed");
            128 + Signal::SIGKILL as i32
        }
        Err(e) => {
            log::error!("wait for exec process {exec_id}: {}", chain(&e));
            255
        }
    }
}

/// The guest process a relay stands for.
struct Target<'a> {
    id: &'a str,
    exec_id: &'a str,
    address: &'a AgentAddress,
}

/// Like [`relay_process`] for a process with a terminal: the host pty slave (made the relay's
/// controlling terminal, so that a resize of the master arrives as SIGWINCH) is relayed to the
/// guest pty over one `tty` stream; the caller's fds 0-2 are not kept (a caller that captures
/// the runtime's output, like go-runc, would otherwise wait for the relay).
fn relay_terminal_process(
    t: &Target<'_>,
    relays: &Path,
    report: &mut std::fs::File,
    forwarded: SigSet,
    slave: OwnedFd,
) -> i32 {
    let set_up = (|| -> Result<_, String> {
        let mut stream = t.address.connect(STDIO_PORT).map_err(|e| chain(&e))?;
        let header = StdioHeader {
            container_id: t.id.to_owned(),
            exec_id: Some(t.exec_id.to_owned()),
            stream: StreamKind::Tty,
        };
        open_stdio(&mut stream, &header).map_err(|e| {
            chain(&GuestError::CallAgent {
                op: "open the terminal stream of the exec process",
                source: e,
            })
        })?;
        let waiter = t.address.client().map_err(|e| chain(&e))?;
        console::make_controlling(slave.as_fd())
            .map_err(|e| format!("make the host pty the relay's controlling terminal: {e}"))?;
        let sizes = slave.try_clone().map_err(|e| e.to_string())?;
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("open /dev/null: {e}"))?;
        for fd in 0..=2 {
            nix::unistd::dup2(null.as_raw_fd(), fd)
                .map_err(|e| format!("redirect fd {fd} to /dev/null: {e}"))?;
        }
        let output = console::relay_terminal(slave, stream).map_err(|e| chain(&e))?;
        Ok((waiter, sizes, output))
    })();
    let (mut waiter, sizes, output) = match set_up {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(report, "error: {e}");
            kill_guest(t.address, t.id, t.exec_id);
            return 255;
        }
    };
    register(relays);
    {
        let (address, id, exec_id) = (t.address.clone(), t.id.to_owned(), t.exec_id.to_owned());
        std::thread::spawn(move || {
            while let Ok(sig) = forwarded.wait() {
                if sig == Signal::SIGWINCH {
                    resize_guest(&address, &id, &exec_id, &sizes);
                } else {
                    signal_guest(&address, &id, &exec_id, sig as i32);
                }
            }
        });
    }
    let _ = writeln!(report, "started");
    let status = waiter.wait(t.id, Some(t.exec_id));
    crate::host::output::finish_all([output]);
    exit_code(t.exec_id, status)
}

/// Passes the host pty's new size (after a SIGWINCH) to the guest pty of an exec process.
fn resize_guest(address: &AgentAddress, id: &str, exec_id: &str, slave: &OwnedFd) {
    let resized = console::window_size(slave.as_fd())
        .map_err(|e| chain(&e))
        .and_then(|(rows, cols)| {
            let mut client = address.client().map_err(|e| chain(&e))?;
            client
                .call_done(Request::ResizeTty {
                    container_id: id.to_owned(),
                    exec_id: Some(exec_id.to_owned()),
                    rows,
                    cols,
                })
                .map_err(|e| chain(&e))
        });
    if let Err(e) = resized {
        log::warn!("resize the terminal of {exec_id}: {e}");
    }
}

fn register(relays: &Path) {
    let me = std::process::id();
    if let Ok(stat) = crate::host::procfs::stat(me as i32) {
        let _ = std::fs::create_dir_all(relays);
        let _ = std::fs::write(relays.join(me.to_string()), stat.start_time.to_string());
    }
}

/// The live exec relays of container `id` (host PIDs), for `ps --format json`.
pub fn relay_pids(store: &StateStore, id: &str) -> Result<Vec<i32>, StateError> {
    let dir = store.container_dir(id)?.join(RELAYS_DIR);
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().parse::<i32>();
        let start = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        match (pid, start) {
            (Ok(pid), Some(start)) if crate::host::procfs::is_alive(pid, start) => pids.push(pid),
            _ => {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

fn signal_guest(address: &AgentAddress, id: &str, exec_id: &str, signal: i32) {
    let sent = address.client().and_then(|mut c| {
        c.call_done(Request::Signal {
            container_id: id.to_owned(),
            exec_id: Some(exec_id.to_owned()),
            signal,
            all: false,
        })
        .map_err(|source| GuestError::CallAgent {
            op: "signal the exec process",
            source,
        })
    });
    if let Err(e) = sent {
        log::warn!("forward signal {signal} to {exec_id}: {}", chain(&e));
    }
}

fn kill_guest(address: &AgentAddress, id: &str, exec_id: &str) {
    signal_guest(address, id, exec_id, libc::SIGKILL);
}

/// Forks the guard (the relay is still single-threaded here) and returns the write end of its
/// pipe: one byte means "done, exit quietly"; EOF without it means the relay died, and the guard
/// kills the guest process.
fn spawn_guard(id: &str, exec_id: &str, address: &AgentAddress) -> nix::Result<OwnedFd> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the relay is single-threaded at this point (no thread has been spawned since the
    // fork that made it), so the child may run ordinary Rust code.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(write);
            // A session of its own: when the relay (a session leader with a terminal) dies,
            // the kernel sends SIGHUP to the terminal's foreground group, which must not
            // include the guard.
            let _ = nix::unistd::setsid();
            // Keep none of the caller's fds (they would delay its EOF) nor the report pipe.
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                for fd in 0..=2 {
                    let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
                }
            }
            let keep = read.as_raw_fd();
            let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect();
            for fd in fds.into_iter().filter(|&fd| fd > 2 && fd != keep) {
                let _ = nix::unistd::close(fd);
            }
            let mut byte = [0u8];
            let n = nix::unistd::read(read.as_raw_fd(), &mut byte).unwrap_or(0);
            if n == 0 {
                kill_guest(address, id, exec_id);
            }
            std::process::exit(0);
        }
        ForkResult::Parent { .. } => Ok(write),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreground_exec_reports_its_status_or_a_kill_when_the_vm_ends() {
        use vessel_protocol::client::ClientError;
        use vessel_protocol::ExitStatus;
        assert_eq!(exit_code("e", Ok(ExitStatus::Code(3))), 3);
        assert_eq!(exit_code("e", Ok(ExitStatus::Signal(15))), 143);
        // The agent closed the wait: the microVM ended, the process with it.
        let closed = ClientError::CloseConnection {
            during: "waiting for a response",
        };
        assert_eq!(exit_code("e", Err(closed)), 137);
        let refused =
            ClientError::ExchangeFrame(vessel_protocol::FrameError::CheckMagic { found: *b"HTTP" });
        assert_eq!(exit_code("e", Err(refused)), 255);
    }

    #[test]
    fn flags_override_the_bundle_process() {
        let base: Process = serde_json::from_str(
            r#"{"cwd":"/","args":["init"],"env":["PATH=/bin"],"user":{"uid":0,"gid":0},"terminal":true}"#,
        )
        .unwrap();
        let flags = ProcessFlags {
            args: vec!["id".into(), "-u".into()],
            cwd: Some("/tmp".into()),
            env: vec!["A=1".into()],
            user: Some("1000:1001".into()),
            additional_gids: vec![5],
            caps: vec!["SYS_ADMIN".into()],
            no_new_privs: true,
            tty: false,
        };
        let p = serde_json::to_value(apply_flags(base, &flags).unwrap()).unwrap();
        assert_eq!(p["args"], serde_json::json!(["id", "-u"]));
        assert_eq!(p["cwd"], "/tmp");
        assert_eq!(p["env"], serde_json::json!(["PATH=/bin", "A=1"]));
        assert_eq!(p["user"]["uid"], 1000);
        assert_eq!(p["user"]["gid"], 1001);
        assert_eq!(p["user"]["additionalGids"], serde_json::json!([5]));
        assert_eq!(
            p["capabilities"]["bounding"],
            serde_json::json!(["CAP_SYS_ADMIN"])
        );
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(p["terminal"], false);
        let bad = ProcessFlags {
            user: Some("x".into()),
            ..flags
        };
        let base: Process =
            serde_json::from_str(r#"{"cwd":"/","user":{"uid":0,"gid":0}}"#).unwrap();
        assert!(apply_flags(base, &bad).is_err());
    }

    #[test]
    fn unknown_capabilities_of_exec_are_dropped_as_runc_drops_them() {
        let base: Process =
            serde_json::from_str(r#"{"cwd":"/","user":{"uid":0,"gid":0}}"#).unwrap();
        let flags = ProcessFlags {
            args: vec!["id".into()],
            cwd: None,
            env: vec![],
            user: None,
            additional_gids: vec![],
            caps: vec!["KILL".into(), "FOO".into()],
            no_new_privs: false,
            tty: false,
        };
        let p = serde_json::to_value(apply_flags(base, &flags).unwrap()).unwrap();
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(
                p["capabilities"][set],
                serde_json::json!(["CAP_KILL"]),
                "{set}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("process.json");
        std::fs::write(
            &file,
            r#"{"cwd":"/","args":["id"],"user":{"uid":0,"gid":0},
                "capabilities":{"bounding":["CAP_FOO","CAP_CHOWN"],"ambient":["BAR"]}}"#,
        )
        .unwrap();
        let p = serde_json::to_value(load_process_file(&file).unwrap()).unwrap();
        assert_eq!(
            p["capabilities"]["bounding"],
            serde_json::json!(["CAP_CHOWN"])
        );
        assert_eq!(p["capabilities"]["ambient"], serde_json::json!([]));
    }
}
