//! OCI hooks (runtime-spec config.md "POSIX-platform Hooks", runtime.md "Lifecycle"): host
//! programs run at fixed points of a container's life, each given the container's state as JSON
//! on its stdin.
//!
//! How one hook runs follows runc 1.1 (libcontainer/configs/config.go `Command.Run`):
//! - `path` is executed directly (no `PATH` lookup); `args` is the whole argv, `args[0]`
//!   included, and `[path]` when absent;
//! - `env` is the hook's whole environment; when absent the hook inherits Vessel's own (Go's
//!   `exec.Cmd` with a nil `Env`, which is what runc passes for an absent `env`); the entries
//!   reach the hook as Go's `exec.Cmd` passes them (os/exec `dedupEnv`, Go ≥1.21): in order, a
//!   duplicated name kept once with its last value, at the place of its last entry; an entry
//!   without `=` passed as it is (the hook's `getenv` does not find it), an empty one dropped,
//!   one holding a NUL refused (`exec: environment variable contains NUL`);
//! - stdin holds the state JSON, compact, with no trailing newline (Go's `json.Marshal` of
//!   `specs.State`); stdout and stderr are captured and quoted in the error when the hook fails;
//! - `timeout` (seconds) kills the hook when it expires: `hook ran past specified timeout of
//!   N.0s`.
//!
//! Hooks of one kind run in order and stop at the first failure (runc `HookList.RunHooks`),
//! except through [`run_warn`], which runs them all and only logs failures (`poststop`, spec
//! runtime.md step 13).
//!
//! Two deliberate choices beyond runc: each hook runs in its own process group, and a timed-out
//! hook's whole group is SIGKILLed and the hook reaped, so nothing it started is left running;
//! and the captured output lives in memory files rather than pipes, so a daemon a hook starts
//! with our stdout cannot make Vessel wait for it. Being in its own group, a hook does not get
//! the Ctrl-C of Vessel's terminal (runc's hooks, in runc's group, do); [`run_interruptible`]
//! makes up for it: a SIGHUP, SIGINT or SIGTERM to Vessel while it waits kills the hook's group
//! and fails the run, for the caller to clean up and then die of the signal. Where each kind runs (runc runs
//! `createContainer` and `startContainer` inside the container) is described in
//! docs/runc-compat.md and at the callers ([`crate::verbs::create`], [`crate::verbs::start`],
//! [`crate::verbs::delete`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{Hook, Hooks};
use serde::Serialize;

use crate::host::signal::Interrupts;
use crate::host::state::ContainerRecord;

/// Errors of this module. Run failures read as runc's (`error running hook #N: ...`), with the
/// kind and the path named too.
#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    /// `hooks.<kind>[i].path` is not absolute (spec config.md: "path MUST be absolute").
    #[error("hooks.{kind}[{index}].path {path:?} must be an absolute path")]
    ValidatePath {
        /// The hook kind.
        kind: HookKind,
        /// Index of the hook in its list.
        index: usize,
        /// The path given.
        path: PathBuf,
    },
    /// `hooks.<kind>[i].timeout` is zero or negative (spec: "timeout MUST be greater than
    /// zero").
    #[error("hooks.{kind}[{index}].timeout is {timeout}: it must be greater than zero (or left out for no timeout)")]
    ValidateTimeout {
        /// The hook kind.
        kind: HookKind,
        /// Index of the hook in its list.
        index: usize,
        /// The timeout given.
        timeout: i64,
    },
    /// The hook could not be started (missing path, not executable ...) or its stdio set up.
    #[error("error running {kind} hook #{index} {}: start the hook", path.display())]
    SpawnHook {
        /// The hook kind.
        kind: HookKind,
        /// Index of the hook in its list.
        index: usize,
        /// `path` of the hook.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The hook ran and failed: a nonzero exit or a signal (runc's `error running hook: exit
    /// status N, stdout: ..., stderr: ...`).
    #[error("error running {kind} hook #{index} {}: {status}, stdout: {stdout}, stderr: {stderr}", path.display())]
    FailHook {
        /// The hook kind.
        kind: HookKind,
        /// Index of the hook in its list.
        index: usize,
        /// `path` of the hook.
        path: PathBuf,
        /// `exit status N` or `signal: N` (Go's wording, as runc prints).
        status: String,
        /// What the hook wrote to stdout, trailing whitespace trimmed; its first
        /// `MAX_QUOTED_OUTPUT` (4096) bytes and the total size when longer.
        stdout: String,
        /// The same of stderr.
        stderr: String,
    },
    /// The hook outlived its `timeout` and was killed (runc's text).
    #[error("error running {kind} hook #{index} {}: hook ran past specified timeout of {timeout}.0s", path.display())]
    TimeOutHook {
        /// The hook kind.
        kind: HookKind,
        /// Index of the hook in its list.
        index: usize,
        /// `path` of the hook.
        path: PathBuf,
        /// The timeout in seconds.
        timeout: i64,
    },
    /// Vessel got a terminating signal (SIGHUP, SIGINT or SIGTERM) while waiting for the hook
    /// (see [`run_interruptible`]); the hook's process group was SIGKILLed and the hook reaped.
    #[error("error running {kind} hook #{index} {}: interrupted by {} (the hook was killed)", path.display(), signal.as_str())]
    Interrupted {
        /// The hook kind.
        kind: HookKind,
        /// Index of the hook in its list.
        index: usize,
        /// `path` of the hook.
        path: PathBuf,
        /// The signal Vessel got.
        signal: Signal,
    },
    /// Waiting for the hook or reading its output failed (it was killed and reaped).
    #[error("error running {kind} hook #{index} {}: wait for the hook", path.display())]
    WaitHook {
        /// The hook kind.
        kind: HookKind,
        /// Index of the hook in its list.
        index: usize,
        /// `path` of the hook.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl HooksError {
    /// The signal that interrupted the wait for a hook ([`HooksError::Interrupted`]), if that is
    /// what this error is.
    pub fn interrupted(&self) -> Option<Signal> {
        match self {
            HooksError::Interrupted { signal, .. } => Some(*signal),
            _ => None,
        }
    }
}

/// The six hook kinds, named as in config.json (and in runc's `features`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// `prestart` (deprecated): during `create`, after the sandbox exists.
    Prestart,
    /// `createRuntime`: during `create`, right after `prestart`.
    CreateRuntime,
    /// `createContainer`: during `create`, after `createRuntime`.
    CreateContainer,
    /// `startContainer`: during `start`, before the workload is released.
    StartContainer,
    /// `poststart`: during `start`, after the workload runs.
    Poststart,
    /// `poststop`: during `delete`, after the container's resources are gone.
    Poststop,
}

impl HookKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [HookKind; 6] = [
        HookKind::Prestart,
        HookKind::CreateRuntime,
        HookKind::CreateContainer,
        HookKind::StartContainer,
        HookKind::Poststart,
        HookKind::Poststop,
    ];

    /// The config.json key.
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        }
    }

    /// The hooks of this kind in `hooks` (empty when absent).
    pub fn of(self, hooks: &Hooks) -> &[Hook] {
        let list = match self {
            HookKind::Prestart => hooks.prestart(),
            HookKind::CreateRuntime => hooks.create_runtime(),
            HookKind::CreateContainer => hooks.create_container(),
            HookKind::StartContainer => hooks.start_container(),
            HookKind::Poststart => hooks.poststart(),
            HookKind::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or(&[])
    }
}

impl std::fmt::Display for HookKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The state a hook reads on stdin: runtime-spec `specs.State` (runtime.md "State"), in its
/// field order; `pid` is left out when 0 and `annotations` when empty (Go's `omitempty`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookState {
    /// `ociVersion` of the bundle.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// Container ID.
    pub id: String,
    /// `creating` (create hooks), `created` (`startContainer`), `running` (`poststart`) or
    /// `stopped` (`poststop`), as runc gives them.
    pub status: &'static str,
    /// Host PID of the monitor (the pid-file PID); 0, and so absent, once stopped.
    #[serde(skip_serializing_if = "is_zero")]
    pub pid: i32,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// The bundle's annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn is_zero(pid: &i32) -> bool {
    *pid == 0
}

impl HookState {
    /// The state of the container `record` describes, with `status` (`creating`, `created`,
    /// `running` or `stopped`); the PID is the monitor's, except when `stopped`.
    pub fn of(record: &ContainerRecord, status: &'static str) -> HookState {
        HookState {
            oci_version: record.oci_version.clone(),
            id: record.id.clone(),
            status,
            pid: if status == "stopped" {
                0
            } else {
                record.monitor_pid
            },
            bundle: record.bundle.clone(),
            annotations: record.annotations.clone(),
        }
    }

    /// The compact JSON written to each hook's stdin.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("HookState always serialises")
    }
}

/// Checks what the spec requires of every hook before anything is created: an absolute `path`
/// and a `timeout` above zero.
pub fn validate(hooks: &Hooks) -> Result<(), HooksError> {
    for kind in HookKind::ALL {
        for (index, hook) in kind.of(hooks).iter().enumerate() {
            if !hook.path().is_absolute() {
                return Err(HooksError::ValidatePath {
                    kind,
                    index,
                    path: hook.path().clone(),
                });
            }
            if let Some(timeout) = hook.timeout().filter(|&t| t <= 0) {
                return Err(HooksError::ValidateTimeout {
                    kind,
                    index,
                    timeout,
                });
            }
        }
    }
    Ok(())
}

/// Runs the `kind` hooks of `hooks` in order with `state` on their stdin, in `cwd` (or Vessel's
/// own directory); stops at the first failure and returns it.
pub fn run(
    kind: HookKind,
    hooks: Option<&Hooks>,
    state: &HookState,
    cwd: Option<&Path>,
) -> Result<(), HooksError> {
    run_all(kind, hooks, state, cwd, None)
}

/// [`run`], but a terminating signal queued on `interrupts` (one that arrived before or while a
/// hook runs) kills that hook's process group, reaps the hook and fails with
/// [`HooksError::Interrupted`]; no further hook starts. The caller holds `interrupts` across its
/// whole clean-up and then ends the process by the signal ([`crate::host::signal::die_of`]).
pub fn run_interruptible(
    kind: HookKind,
    hooks: Option<&Hooks>,
    state: &HookState,
    cwd: Option<&Path>,
    interrupts: &mut Interrupts,
) -> Result<(), HooksError> {
    run_all(kind, hooks, state, cwd, Some(interrupts))
}

fn run_all(
    kind: HookKind,
    hooks: Option<&Hooks>,
    state: &HookState,
    cwd: Option<&Path>,
    mut interrupts: Option<&mut Interrupts>,
) -> Result<(), HooksError> {
    let Some(hooks) = hooks else { return Ok(()) };
    let list = kind.of(hooks);
    if list.is_empty() {
        return Ok(());
    }
    let input = state.to_json();
    for (index, hook) in list.iter().enumerate() {
        run_one(kind, index, hook, &input, cwd, interrupts.as_deref_mut())?;
    }
    Ok(())
}

/// Runs every `kind` hook even when some fail, logging each failure as a warning (spec
/// runtime.md: "If any poststop hook fails, the runtime MUST log a warning, but the remaining
/// hooks and lifecycle continue as if the hook had succeeded"; runc also only logs them).
pub fn run_warn(kind: HookKind, hooks: Option<&Hooks>, state: &HookState, cwd: Option<&Path>) {
    let Some(hooks) = hooks else { return };
    let input = state.to_json();
    for (index, hook) in kind.of(hooks).iter().enumerate() {
        if let Err(e) = run_one(kind, index, hook, &input, cwd, None) {
            log::warn!("container {}: {}", state.id, vessel_error::chain(&e));
        }
    }
}

extern "C" {
    /// The C library's environment of this process, which `execvp` passes on.
    static mut environ: *const *const libc::c_char;
}

/// A hook's `env`, as Go's `exec.Cmd` would pass it to `execve` (see the module documentation),
/// ready to become the child's `environ`.
struct GoEnv {
    /// The strings, owned here so that `pointers` stay valid until the exec (read by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    strings: Vec<std::ffi::CString>,
    /// Their addresses, then 0: a `char *envp[]` (addresses kept as integers so the closure
    /// holding them can cross threads).
    pointers: Vec<usize>,
}

impl GoEnv {
    /// Dedupes `env` as os/exec `dedupEnv` does; an entry holding a NUL is refused with Go's text.
    fn new(env: &[String]) -> std::io::Result<GoEnv> {
        if env.iter().any(|e| e.contains('\0')) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "exec: environment variable contains NUL",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut kept: Vec<&String> = Vec::new();
        for entry in env.iter().rev() {
            match entry.find('=') {
                // A bare entry is kept as is (Go leaves it for the program to ignore).
                None if !entry.is_empty() => kept.push(entry),
                None => {}
                Some(i) if seen.insert(&entry[..i]) => kept.push(entry),
                Some(_) => {}
            }
        }
        kept.reverse();
        let strings: Vec<std::ffi::CString> = kept
            .into_iter()
            .map(|e| std::ffi::CString::new(e.as_bytes()).expect("NUL refused above"))
            .collect();
        let mut pointers: Vec<usize> = strings.iter().map(|s| s.as_ptr() as usize).collect();
        pointers.push(0);
        Ok(GoEnv { strings, pointers })
    }

    /// The strings, in the order the hook gets them.
    #[cfg(test)]
    fn entries(&self) -> Vec<&str> {
        self.strings.iter().map(|s| s.to_str().unwrap()).collect()
    }

    /// Makes the strings this process's environment. Only for a forked child about to exec.
    fn install(&self) {
        // SAFETY: only called in a single-threaded forked child, so nothing reads `environ`
        // concurrently; the array is NULL-terminated and lives as long as `self`.
        unsafe { environ = self.pointers.as_ptr() as *const *const libc::c_char };
    }
}

/// Runs one hook to its end (see the module documentation).
fn run_one(
    kind: HookKind,
    index: usize,
    hook: &Hook,
    input: &[u8],
    cwd: Option<&Path>,
    interrupts: Option<&mut Interrupts>,
) -> Result<(), HooksError> {
    let path = hook.path().clone();
    let spawn_error = |source| HooksError::SpawnHook {
        kind,
        index,
        path: path.clone(),
        source,
    };
    let stdin = memory_file("vessel-hook-stdin", input).map_err(spawn_error)?;
    let stdout = memory_file("vessel-hook-stdout", b"").map_err(spawn_error)?;
    let stderr = memory_file("vessel-hook-stderr", b"").map_err(spawn_error)?;
    let mut command = Command::new(&path);
    if let Some(args) = hook.args().as_ref().filter(|a| !a.is_empty()) {
        command.arg0(&args[0]).args(&args[1..]);
    }
    if let Some(env) = hook.env() {
        let envp = GoEnv::new(env).map_err(spawn_error)?;
        // std's `Command::env` can only pass `NAME=value` pairs, sorted by name; Go passes the
        // strings as they are. So the child points `environ` at the strings before its exec
        // (std leaves `environ` alone when no `env` call was made, and execs with it).
        // SAFETY: the closure runs in the child between fork and exec, where only
        // async-signal-safe work is allowed: it stores in `environ` a pointer to a
        // NULL-terminated array built before the fork and owned by the closure (so alive until
        // the exec), and neither allocates nor locks.
        unsafe {
            command.pre_exec(move || {
                envp.install();
                Ok(())
            });
        }
    }
    // A child inherits its parent's signal mask, and create blocks SIGHUP, SIGINT and SIGTERM
    // while its hooks run (`Interrupts`); std's `Command` does not reset it. A hook (and what
    // it starts) must get them, as runc's hooks do: it starts with none blocked.
    // SAFETY: the closure runs in the child between fork and exec; building an empty set and
    // `sigprocmask` are async-signal-safe, nothing allocates or locks.
    unsafe {
        command.pre_exec(|| {
            nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            )
            .map_err(std::io::Error::from)
        });
    }
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    command
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout.try_clone().map_err(spawn_error)?))
        .stderr(Stdio::from(stderr.try_clone().map_err(spawn_error)?))
        .process_group(0);
    let mut child = command.spawn().map_err(spawn_error)?;
    // Dropped here so that only the hook holds its stdin, stdout and stderr.
    drop(command);
    let deadline = hook
        .timeout()
        .map(|t| Instant::now() + Duration::from_secs(t.unsigned_abs()));
    let status = match wait(&mut child, deadline, interrupts) {
        Ok(Waited::Exited(status)) => status,
        Ok(Waited::Interrupted(signal)) => {
            kill_and_reap(&mut child);
            return Err(HooksError::Interrupted {
                kind,
                index,
                path,
                signal,
            });
        }
        Ok(Waited::TimedOut) => {
            kill_and_reap(&mut child);
            return Err(HooksError::TimeOutHook {
                kind,
                index,
                path,
                timeout: hook.timeout().unwrap_or_default(),
            });
        }
        Err(source) => {
            kill_and_reap(&mut child);
            return Err(HooksError::WaitHook {
                kind,
                index,
                path,
                source,
            });
        }
    };
    if status.success() {
        return Ok(());
    }
    let read = |file: File| {
        read_all(file).map_err(|source| HooksError::WaitHook {
            kind,
            index,
            path: path.clone(),
            source,
        })
    };
    let stdout = read(stdout)?;
    let stderr = read(stderr)?;
    Err(HooksError::FailHook {
        kind,
        index,
        path: path.clone(),
        status: describe(status),
        stdout,
        stderr,
    })
}

/// How the wait for a hook ended.
enum Waited {
    /// The hook exited.
    Exited(ExitStatus),
    /// Its timeout passed first.
    TimedOut,
    /// A terminating signal came first.
    Interrupted(Signal),
}

/// Waits for `child` until `deadline`, or until a signal is queued on `interrupts`. Polls,
/// starting at 1 ms and backing off to 50 ms, so no thread is needed; the naps are polls of the
/// signalfd, so a signal ends the wait at once.
fn wait(
    child: &mut Child,
    deadline: Option<Instant>,
    mut interrupts: Option<&mut Interrupts>,
) -> std::io::Result<Waited> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(signal) = interrupts.as_deref_mut().and_then(Interrupts::take) {
            return Ok(Waited::Interrupted(signal));
        }
        if let Some(status) = child.try_wait()? {
            return Ok(Waited::Exited(status));
        }
        let now = Instant::now();
        let mut nap = pause;
        if let Some(deadline) = deadline {
            if now >= deadline {
                return Ok(Waited::TimedOut);
            }
            nap = nap.min(deadline - now);
        }
        match interrupts.as_deref() {
            Some(fd) => {
                let millis = u16::try_from(nap.as_millis().max(1)).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(millis)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            None => std::thread::sleep(nap),
        }
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// SIGKILLs the hook's process group (the hook and whatever it started that stayed in it), then
/// reaps the hook.
fn kill_and_reap(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Go's `ExitError` wording, which runc prints: `exit status N` or `signal: <name>`.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("signal: {}", s.as_str()),
            Err(_) => format!("signal: {sig}"),
        },
        (None, None) => status.to_string(),
    }
}

/// An anonymous in-memory file holding `data`, positioned at its start.
fn memory_file(name: &str, data: &[u8]) -> std::io::Result<File> {
    let name = std::ffi::CString::new(name).expect("no NUL in a fixed name");
    let fd = nix::sys::memfd::memfd_create(&name, nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)?;
    let mut file = File::from(fd);
    file.write_all(data)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

/// The whole content of a memory file, as text with trailing whitespace trimmed.
fn read_all(mut file: File) -> std::io::Result<String> {
    let size = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    let mut data = Vec::new();
    Read::by_ref(&mut file)
        .take(MAX_QUOTED_OUTPUT as u64)
        .read_to_end(&mut data)?;
    let mut text = String::from_utf8_lossy(&data).trim_end().to_owned();
    if size > MAX_QUOTED_OUTPUT as u64 {
        text.push_str(&format!("... ({size} bytes in all)"));
    }
    Ok(text)
}

/// Most bytes of a failed hook's stdout, and of its stderr, quoted in the error: the error is one
/// log line (containerd's `log.json`, podman's `oci-log`), which a chatty hook must not flood.
/// runc quotes all of it.
const MAX_QUOTED_OUTPUT: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(value: serde_json::Value) -> Hook {
        serde_json::from_value(value).unwrap()
    }

    fn hooks(kind: &str, list: Vec<Hook>) -> Hooks {
        serde_json::from_value(serde_json::json!({ kind: list })).unwrap()
    }

    fn state() -> HookState {
        HookState {
            oci_version: "1.0.2".into(),
            id: "c1".into(),
            status: "creating",
            pid: 42,
            bundle: "/b".into(),
            annotations: [("k".to_owned(), "v".to_owned())].into(),
        }
    }

    /// Runs one hook of `kind` with [`state`].
    fn run_single(kind: HookKind, h: Hook) -> Result<(), HooksError> {
        run(kind, Some(&hooks(kind.name(), vec![h])), &state(), None)
    }

    /// A `/bin/sh -c <script> sh <dir>` hook: `$1` is `dir`.
    fn sh(script: &str, dir: &Path) -> serde_json::Value {
        serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", script, "sh", dir],
        })
    }

    #[test]
    fn argv_env_stdin_and_cwd_reach_the_hook_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let cwd = tempfile::tempdir().unwrap();
        let script = "tr '\\0' '\\n' < /proc/$$/cmdline > \"$1/argv\"; \
                      tr '\\0' '\\n' < /proc/$$/environ > \"$1/env\"; \
                      pwd > \"$1/cwd\"; cat > \"$1/stdin\"";
        let h = hook(serde_json::json!({
            "path": "/bin/sh",
            "args": ["my-hook", "-c", script, "sh", out],
            "env": ["Z=last", "A=b c", "EMPTY="],
        }));
        run(
            HookKind::CreateRuntime,
            Some(&hooks("createRuntime", vec![h])),
            &state(),
            Some(cwd.path()),
        )
        .unwrap();
        let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
        assert_eq!(
            read("argv"),
            format!("my-hook\n-c\n{script}\nsh\n{}\n", out.display())
        );
        // Exactly the hook's env, nothing inherited, in its order.
        assert_eq!(read("env"), "Z=last\nA=b c\nEMPTY=\n");
        assert_eq!(read("cwd"), format!("{}\n", cwd.path().display()));
        assert_eq!(
            read("stdin"),
            r#"{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":42,"bundle":"/b","annotations":{"k":"v"}}"#
        );
    }

    #[test]
    fn env_reaches_the_hook_as_go_passes_it_bare_entries_included() {
        let env = |e: &[&str]| e.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Go ≥1.21 `dedupEnv`: the last value of a name, at its last place; bare entries kept,
        // empty ones dropped.
        let go = GoEnv::new(&env(&["A=1", "BARE", "", "B=2", "A=3", "C="])).unwrap();
        assert_eq!(go.entries(), ["BARE", "B=2", "A=3", "C="]);
        assert_eq!(go.pointers.len(), 5);
        assert_eq!(go.pointers.last(), Some(&0));
        let err = GoEnv::new(&env(&["A=1", "B=x\0y"])).err().unwrap();
        assert_eq!(err.to_string(), "exec: environment variable contains NUL");

        // Through a real hook: /proc/<pid>/environ holds exactly those strings.
        let dir = tempfile::tempdir().unwrap();
        let script = "tr '\\0' '\\n' < /proc/$$/environ > \"$1/env\"";
        let mut h = sh(script, dir.path());
        h["env"] = serde_json::json!(["NAME", "A=1", "A=2", "PATH=/bin"]);
        run(
            HookKind::Prestart,
            Some(&hooks("prestart", vec![hook(h)])),
            &state(),
            None,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("env")).unwrap(),
            "NAME\nA=2\nPATH=/bin\n"
        );
    }

    #[test]
    fn absent_env_inherits_vessels_and_stopped_state_has_no_pid() {
        let dir = tempfile::tempdir().unwrap();
        let script = "tr '\\0' '\\n' < /proc/$$/environ > \"$1/env\"; cat > \"$1/stdin\"";
        let h = hook(sh(script, dir.path()));
        let mut stopped = state();
        stopped.status = "stopped";
        stopped.pid = 0;
        stopped.annotations.clear();
        run(
            HookKind::Poststop,
            Some(&hooks("poststop", vec![h])),
            &stopped,
            None,
        )
        .unwrap();
        let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
        let path = format!("PATH={}", std::env::var("PATH").unwrap());
        assert!(env.lines().any(|l| l == path), "{env:?} lacks {path:?}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stdin")).unwrap(),
            r#"{"ociVersion":"1.0.2","id":"c1","status":"stopped","bundle":"/b"}"#
        );
    }

    #[test]
    fn nonzero_exit_fails_with_status_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let h = hook(sh("echo out; echo err >&2; exit 3", dir.path()));
        let err = run_single(HookKind::Prestart, h).unwrap_err();
        assert_eq!(
            err.to_string(),
            "error running prestart hook #0 /bin/sh: exit status 3, stdout: out, stderr: err"
        );
    }

    #[test]
    fn a_chatty_failing_hook_is_quoted_up_to_4_kib_with_its_size() {
        let dir = tempfile::tempdir().unwrap();
        // 100,000 bytes of 'x' on stdout (no newline), 3 bytes on stderr.
        let h = hook(sh(
            "head -c 100000 /dev/zero | tr '\\0' x; echo err >&2; exit 1",
            dir.path(),
        ));
        let err = run_single(HookKind::CreateRuntime, h).unwrap_err();
        let HooksError::FailHook { stdout, stderr, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            stdout,
            &format!("{}... (100000 bytes in all)", "x".repeat(4096))
        );
        assert_eq!(stderr, "err");
    }

    #[test]
    fn a_killed_hook_fails_with_its_signal() {
        let dir = tempfile::tempdir().unwrap();
        let h = hook(sh("kill -TERM $$", dir.path()));
        let err = run_single(HookKind::Poststart, h).unwrap_err();
        assert_eq!(
            err.to_string(),
            "error running poststart hook #0 /bin/sh: signal: SIGTERM, stdout: , stderr: "
        );
    }

    #[test]
    fn timeout_kills_the_hook_and_its_group_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = sh("sleep 30 & echo $! > \"$1/child\"; wait", dir.path());
        h["timeout"] = 1.into();
        let begun = Instant::now();
        let err = run_single(HookKind::CreateRuntime, hook(h)).unwrap_err();
        let took = begun.elapsed();
        assert!(matches!(err, HooksError::TimeOutHook { timeout: 1, .. }));
        assert_eq!(
            err.to_string(),
            "error running createRuntime hook #0 /bin/sh: hook ran past specified timeout of 1.0s"
        );
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(3),
            "{took:?}"
        );
        // The hook's background child was in its process group: it is dead (gone, or a zombie
        // waiting for init) within a moment.
        let child: i32 = std::fs::read_to_string(dir.path().join("child"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_dies_soon(child);
    }

    /// Asserts that `pid` is gone, or a zombie waiting for init, within 2 s.
    fn assert_dies_soon(pid: i32) {
        let dead = || match crate::host::procfs::stat(pid) {
            Ok(_) => std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(true),
            Err(_) => true,
        };
        let until = Instant::now() + Duration::from_secs(2);
        while !dead() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(dead(), "the hook's child {pid} is still running");
    }

    #[test]
    fn a_terminating_signal_kills_the_hook_and_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let h = hook(sh(
            // The shell reads its own mask itself: a `grep` child could read it while the shell
            // still has everything blocked around the fork (dash blocks all signals there).
            "while read -r k v; do [ \"$k\" = SigBlk: ] && echo \"$v\" > \"$1/sigblk\"; \
             done < /proc/$$/status; sleep 30 & echo $! > \"$1/child\"; \
             echo $$ > \"$1/.hook\"; mv \"$1/.hook\" \"$1/hook\"; wait",
            dir.path(),
        ));
        let mut interrupts = Interrupts::catch().unwrap();
        // Another thread signals this one (the harness runs others, which do not block it)
        // once the hook runs.
        let me = nix::sys::pthread::pthread_self();
        let marker = dir.path().join("hook");
        let signaller = std::thread::spawn(move || {
            while !marker.exists() {
                std::thread::sleep(Duration::from_millis(5));
            }
            nix::sys::pthread::pthread_kill(me, Signal::SIGINT).unwrap();
        });
        let begun = Instant::now();
        let err = run_interruptible(
            HookKind::CreateRuntime,
            Some(&hooks("createRuntime", vec![h])),
            &state(),
            None,
            &mut interrupts,
        )
        .unwrap_err();
        signaller.join().unwrap();
        drop(interrupts);
        assert!(begun.elapsed() < Duration::from_secs(5));
        assert_eq!(err.interrupted(), Some(Signal::SIGINT));
        assert_eq!(
            err.to_string(),
            "error running createRuntime hook #0 /bin/sh: interrupted by SIGINT (the hook was killed)"
        );
        let read = |name: &str| -> i32 {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            text.trim().parse().unwrap()
        };
        // The hook did not inherit the blocked signals (run_one resets the mask).
        assert_eq!(
            std::fs::read_to_string(dir.path().join("sigblk")).unwrap(),
            "0000000000000000\n"
        );
        // The hook was reaped; its child, in its group, is dead within a moment.
        assert!(crate::host::procfs::stat(read("hook")).is_err());
        assert_dies_soon(read("child"));
    }

    #[test]
    fn a_missing_path_is_named() {
        let h = hook(serde_json::json!({"path": "/nonexistent/vessel-hook"}));
        let err = run_single(HookKind::CreateContainer, h).unwrap_err();
        assert_eq!(
            vessel_error::chain(&err),
            "error running createContainer hook #0 /nonexistent/vessel-hook: start the hook: \
             No such file or directory (os error 2)"
        );
    }

    #[test]
    fn run_stops_at_the_first_failure_and_run_warn_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let list = || {
            vec![
                hook(sh("echo >> \"$1/first\"", dir.path())),
                hook(sh("exit 1", dir.path())),
                hook(sh("echo >> \"$1/third\"", dir.path())),
            ]
        };
        let err = run(
            HookKind::Poststop,
            Some(&hooks("poststop", list())),
            &state(),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, HooksError::FailHook { index: 1, .. }));
        assert!(dir.path().join("first").exists());
        assert!(!dir.path().join("third").exists());
        run_warn(
            HookKind::Poststop,
            Some(&hooks("poststop", list())),
            &state(),
            None,
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("first")).unwrap(),
            "\n\n"
        );
        assert!(dir.path().join("third").exists());
    }

    #[test]
    fn validate_requires_absolute_paths_and_positive_timeouts() {
        let relative = hooks(
            "poststart",
            vec![hook(serde_json::json!({"path": "bin/hook"}))],
        );
        assert_eq!(
            validate(&relative).unwrap_err().to_string(),
            "hooks.poststart[0].path \"bin/hook\" must be an absolute path"
        );
        let zero = hooks(
            "createRuntime",
            vec![
                hook(serde_json::json!({"path": "/bin/true", "timeout": 5})),
                hook(serde_json::json!({"path": "/bin/true", "timeout": 0})),
            ],
        );
        assert_eq!(
            validate(&zero).unwrap_err().to_string(),
            "hooks.createRuntime[1].timeout is 0: it must be greater than zero (or left out for no timeout)"
        );
        let fine = hooks(
            "prestart",
            vec![hook(serde_json::json!({"path": "/bin/true", "timeout": 1}))],
        );
        validate(&fine).unwrap();
    }
}
