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
//!
//! This file turns flags or a `process.json` into the process and forks the relay; the relay
//! and its guard are in `relay.rs`.

mod relay;

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::Process;

use crate::host::bundle::Bundle;
use crate::host::console::{self, ConsoleError, HostConsole, HostPty};
use crate::host::state::{self, StateError, StateStore};
use crate::verbs::guest::AgentAddress;

pub use relay::relay_pids;
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
            std::process::exit(relay::relay_main(
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

#[cfg(test)]
mod tests {
    use super::*;

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
