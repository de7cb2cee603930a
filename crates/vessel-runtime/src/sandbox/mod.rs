//! The `Sandbox` trait: what the monitor asks of the thing that runs a container.
//!
//! The real implementation is the microVM (VMM plus guest agent over vsock, through
//! `vessel-protocol`). [`host::HostSandbox`] is a **test double** that runs `process.args`
//! straight on the host, so the lifecycle can be tested on machines that cannot boot a guest;
//! it is chosen only by an explicit environment variable (see [`select`]).
//!
//! One sandbox holds one container. Methods take `&self`: the monitor's main thread blocks in
//! [`Sandbox::wait`] while its control thread calls `start`, `signal`, `pause` and so on.

pub mod agent;
#[cfg(any(test, feature = "test-doubles"))]
pub mod host;
pub mod microvm;
pub mod pod;
pub mod share;
pub mod sizing;

use std::os::fd::OwnedFd;

use crate::host::bundle::Bundle;
use crate::sandbox::sizing::VmSize;

/// Whether this build has the test doubles (cargo feature `test-doubles`, which the test builds
/// enable and release builds do not): without it `VESSEL_TEST_SANDBOX` is refused, the
/// no-isolation host double is not compiled in, and only the microVM can run a workload.
pub const TEST_DOUBLES: bool = cfg!(any(test, feature = "test-doubles"));

/// Environment variable that selects the host test double: `VESSEL_TEST_SANDBOX=host`.
pub const TEST_SANDBOX_ENV: &str = "VESSEL_TEST_SANDBOX";

/// Errors of a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `VESSEL_TEST_SANDBOX` holds a value that names no sandbox.
    #[error("unusable {TEST_SANDBOX_ENV} value {0:?} (known: \"host\", \"agent\")")]
    SelectSandbox(String),
    /// `VESSEL_TEST_SANDBOX` is set in a build without the test doubles ([`TEST_DOUBLES`]).
    #[error(
        "{TEST_SANDBOX_ENV}={0} asks for a test double, and this vessel is built without them \
         (cargo feature test-doubles): unset {TEST_SANDBOX_ENV} to run the workload in a microVM"
    )]
    FindTestDouble(String),
    /// The guest kernel or the agent initramfs was not found.
    #[error("{what} not found: set {var} or install {file} into <prefix>/share/vessel (make artefacts builds build/share/vessel)")]
    FindArtefact {
        /// What is missing.
        what: &'static str,
        /// Its file name in a share directory.
        file: &'static str,
        /// The environment variable that names it.
        var: &'static str,
    },
    /// The monitor could not give up the capabilities it does not need.
    #[error("limit the monitor's capabilities")]
    LimitCapabilities(#[source] crate::host::capabilities::CapabilitiesError),
    /// The monitor's seccomp filter could not be installed once the container was set up.
    #[error("put the monitor under its seccomp filter")]
    ConfineMonitor(#[source] vessel_vmm::seccomp::SeccompError),
    /// The container's virtio-fs share could not be prepared or taken down.
    #[error("prepare the container's file share")]
    PrepareShare(#[source] crate::sandbox::share::ShareError),
    /// The container's network could not be read or wired to the microVM.
    #[error("give the container's network to the microVM")]
    Network(#[source] crate::host::net::NetError),
    /// The microVM could not be built or started.
    #[error("start the microVM")]
    StartVm(#[source] vessel_vmm::VmmError),
    /// The VM's vCPUs could not be paused or resumed (the VM has ended).
    #[error("pause or resume the microVM's vCPUs")]
    PauseVcpus(#[source] vessel_vmm::VmmError),
    /// The guest ended before its agent answered.
    /// The console log goes with the failed container's state directory, so the error carries
    /// its last lines.
    #[error("the microVM ended before its agent was ready ({reason}); the guest console's last lines: {last_lines}")]
    GuestEnded {
        /// Why the VM ended.
        reason: String,
        /// The guest console's last lines ([`console_tail`]).
        last_lines: String,
    },
    /// The guest ended under a created or running container (the agent died, which panics the
    /// guest kernel and resets the VM, or the kernel itself failed or was rebooted): every
    /// connection to the agent was cut, so no call hangs on it.
    #[error("the microVM ended under the container ({reason}): its guest agent is gone; guest console: {}", console.display())]
    GuestLost {
        /// Why the VM ended.
        reason: String,
        /// The guest's console log.
        console: std::path::PathBuf,
    },
    /// The guest failed a step of `create` other than by refusing it (the agent's connection
    /// broke, the VM ended): the console log goes with the failed container's state directory,
    /// so the error carries its last lines.
    #[error("the guest failed during create (its console's last lines: {last_lines})")]
    FailedAtCreate {
        /// The guest console's last lines ([`console_tail`]).
        last_lines: String,
        /// What failed.
        #[source]
        source: Box<SandboxError>,
    },
    /// The agent did not answer in time (at create: the console log goes with the failed
    /// container's state directory, so the error carries its last lines).
    #[error("the guest agent did not answer within {waited:?}; the guest console's last lines: {last_lines}")]
    WaitAgent {
        /// How long was waited.
        waited: std::time::Duration,
        /// The guest console's last lines ([`console_tail`]).
        last_lines: String,
        /// The last connection error.
        #[source]
        source: std::io::Error,
    },
    /// The executable of `process.args[0]` could not be found (runc's create-time error).
    #[error("exec: {0:?}: executable file not found in $PATH")]
    FindExecutable(String),
    /// The operation was called in the wrong order (for example `start` twice).
    #[error("{0}")]
    InvalidState(&'static str),
    /// The sandbox cannot do this at all.
    #[error("{0} is not supported by the {1} sandbox")]
    Unsupported(&'static str, &'static str),
    /// The guest agent refused to set the container's process up. The message is runc's for a
    /// failed container init (`unable to start container process`), the cause the agent's
    /// reason as runc prints it (`exec: "x": executable file not found in $PATH`); the protocol
    /// context (which request, which code) goes to the debug log only ([`refusal`]).
    #[error("unable to start container process")]
    StartProcess(#[source] vessel_protocol::RemoteError),
    /// The guest agent could not be reached or refused a request.
    #[error("{op}")]
    CallAgent {
        /// What was being done.
        op: &'static str,
        /// The cause, with the agent's typed error.
        #[source]
        source: vessel_protocol::ClientError,
    },
    /// A connection to the agent could not be opened.
    #[error("connect to agent port {port}")]
    ConnectAgent {
        /// The vsock port.
        port: u32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The terminal of the workload could not be relayed.
    #[error("relay the terminal")]
    RelayTerminal(#[source] crate::host::console::ConsoleError),
    /// A system call failed.
    #[error("{op}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: nix::Error,
    },
}

impl SandboxError {
    /// The kind of failure, for callers that act on it: the guest agent's typed status code
    /// when the agent refused the request (found anywhere in the cause chain), `FailedPrecondition`
    /// for a call out of order; `None` for host-side failures, which have no code.
    pub fn code(&self) -> Option<vessel_protocol::Code> {
        if let SandboxError::InvalidState(_) = self {
            return Some(vessel_protocol::Code::FailedPrecondition);
        }
        vessel_error::causes(self)
            .find_map(|e| e.downcast_ref::<vessel_protocol::RemoteError>())
            .map(|remote| remote.code)
    }
}

/// How the container's init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadExit {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

impl WorkloadExit {
    /// The status callers see (containerd reaper, conmon): the code, or 128+N for signal N.
    pub fn code(self) -> i32 {
        match self {
            WorkloadExit::Exited(c) => c,
            WorkloadExit::Signaled(s) => 128 + s,
        }
    }
}

/// The standard I/O `create` received, handed to the workload (copies owned by the sandbox).
#[derive(Debug)]
pub struct Stdio {
    /// Standard input.
    pub stdin: OwnedFd,
    /// Standard output.
    pub stdout: OwnedFd,
    /// Standard error.
    pub stderr: OwnedFd,
}

/// How the workload's standard I/O reaches the caller.
#[derive(Debug)]
pub enum WorkloadIo {
    /// No terminal: the caller's fds 0-2, relayed to the process's pipes.
    Stdio(Stdio),
    /// `process.terminal`: the slave of the host pty ([`crate::host::console`]), relayed to the pty
    /// the guest allocates for the process.
    Terminal(OwnedFd),
}

/// Runs one container. Called by the monitor in this order: `boot`, `create_container`, then
/// `start`/`signal`/`pause`/`resume` from the control thread while `wait` blocks, and `shutdown`
/// when the monitor is about to exit.
pub trait Sandbox: Send + Sync {
    /// Short name recorded in the state (`microvm`, `host`).
    fn kind(&self) -> &'static str;

    /// Gives the monitor (freshly forked, still single-threaded) the mount namespace the
    /// container's share is built in: by default one of its own
    /// ([`share::unshare_mount_namespace`]; without the privilege to make one, the host's, with a
    /// debug line); for a pod member, its sandbox monitor's, with the member's entries attached
    /// there ([`pod::PodMemberSandbox`]).
    fn prepare_mounts(&self, id: &str, _bundle: &Bundle) -> Result<(), SandboxError> {
        if let Err(e) = share::unshare_mount_namespace() {
            log::debug!(
                "container {id}: the share's mounts stay in the host's mount namespace: {}",
                vessel_error::chain(&e)
            );
        }
        Ok(())
    }

    /// Opens the device files the sandbox will need, in the container's network namespace and
    /// before the monitor joins the container's cgroup, whose device filter may refuse them
    /// (`vessel_vmm::preopen`). By default nothing.
    fn open_devices(&self, _bundle: &Bundle) -> Result<(), SandboxError> {
        Ok(())
    }

    /// Brings the sandbox up (for the microVM: boot and wait for the agent's ready message).
    fn boot(&self) -> Result<(), SandboxError>;

    /// Sets the container up from `bundle` with everything but the `execve` of `process.args`
    /// (runtime-spec runtime.md "create"); `io` becomes the workload's standard I/O.
    fn create_container(
        &self,
        id: &str,
        bundle: &Bundle,
        io: WorkloadIo,
    ) -> Result<(), SandboxError>;

    /// Runs `process.args` in the created container (runtime-spec "start").
    fn start(&self) -> Result<(), SandboxError>;

    /// Sends `signal` to the init, or to every process of the container with `all`.
    fn signal(&self, signal: i32, all: bool) -> Result<(), SandboxError>;

    /// Blocks until the container's init has exited; called once.
    fn wait(&self) -> Result<WorkloadExit, SandboxError>;

    /// Freezes the workload (runc `pause`).
    fn pause(&self) -> Result<(), SandboxError>;

    /// Thaws the workload (runc `resume`).
    fn resume(&self) -> Result<(), SandboxError>;

    /// Sets the window size of the init's terminal (rows, columns) after the caller resized
    /// the host pty.
    fn resize_terminal(&self, rows: u16, cols: u16) -> Result<(), SandboxError>;

    /// Tears the sandbox down; nothing of it may be left running afterwards.
    fn shutdown(&self) -> Result<(), SandboxError>;

    /// Sends one control request to the guest agent and returns its answer, for other processes
    /// while the workload is paused (`ps`, `events`, `update` of a paused container): the
    /// microVM lets its vCPUs run for the request and pauses them again. Sandboxes without an
    /// agent refuse.
    fn agent_call(
        &self,
        request: vessel_protocol::Request,
    ) -> Result<vessel_protocol::Response, SandboxError> {
        let _ = request;
        Err(SandboxError::Unsupported(
            "a guest agent request",
            self.kind(),
        ))
    }
}

/// Splits an agent's refusal of a request that sets a process up (`create_container`,
/// `exec`) from other failures: `Ok` with the agent's reason, which is what the user sees (as
/// runc shows its init's error), after logging the protocol context (`op`, the request, the
/// agent's code) at debug level; `Err` with anything else (agent unreachable, broken frame),
/// whose context stays in the message.
pub fn refusal(
    op: &str,
    error: vessel_protocol::ClientError,
) -> Result<vessel_protocol::RemoteError, vessel_protocol::ClientError> {
    match error {
        vessel_protocol::ClientError::Refuse {
            op: request,
            source,
        } => {
            log::debug!(
                "{op}: agent refused {request} ({}): {}",
                source.code,
                vessel_error::chain(&source)
            );
            Ok(source)
        }
        other => Err(other),
    }
}

/// With `VESSEL_TEST_SANDBOX=agent`: the agent's control socket (stands for vsock port 1024).
pub const TEST_AGENT_CONTROL_ENV: &str = "VESSEL_TEST_AGENT_CONTROL";
/// With `VESSEL_TEST_SANDBOX=agent`: the agent's stdio socket (stands for vsock port 1025).
pub const TEST_AGENT_STDIO_ENV: &str = "VESSEL_TEST_AGENT_STDIO";

/// Picks the sandbox for a new container from the environment of `vessel create`/`run`; the
/// test doubles only in a build with them ([`TEST_DOUBLES`]):
/// - unset: the microVM (the default; the only choice outside tests);
/// - `VESSEL_TEST_SANDBOX=host`: the host test double ([`host::HostSandbox`]);
/// - `VESSEL_TEST_SANDBOX=agent`: a vessel-agent already serving on the Unix sockets named by
///   `VESSEL_TEST_AGENT_CONTROL` and `VESSEL_TEST_AGENT_STDIO` ([`agent::UnixAgent`]), to test the
///   protocol path without a VM.
///
/// `size` is the VM size worked out from the spec ([`crate::sandbox::sizing`]); `state_dir` is the
/// container's directory under `--root`. The test doubles ignore both.
pub fn select(size: VmSize, state_dir: &std::path::Path) -> Result<Box<dyn Sandbox>, SandboxError> {
    let choice = std::env::var(TEST_SANDBOX_ENV);
    if !TEST_DOUBLES {
        if let Ok(v) = choice {
            return Err(SandboxError::FindTestDouble(v));
        }
    }
    match choice {
        Ok(v) if v == "agent" => {
            let path = |name: &str| std::env::var_os(name).map(std::path::PathBuf::from);
            match (path(TEST_AGENT_CONTROL_ENV), path(TEST_AGENT_STDIO_ENV)) {
                (Some(control), Some(stdio)) => {
                    Ok(Box::new(agent::AgentSandbox::new(agent::UnixAgent {
                        control,
                        stdio,
                    })))
                }
                _ => Err(SandboxError::SelectSandbox(format!(
                    "agent without {TEST_AGENT_CONTROL_ENV} and {TEST_AGENT_STDIO_ENV}"
                ))),
            }
        }
        #[cfg(any(test, feature = "test-doubles"))]
        Ok(v) if v == "host" => {
            log::info!("{TEST_SANDBOX_ENV}=host: running the workload directly on the host (test double, no isolation)");
            Ok(Box::new(host::HostSandbox::new()))
        }
        Ok(v) => Err(SandboxError::SelectSandbox(v)),
        Err(_) => Ok(Box::new(microvm::MicroVmSandbox::new(
            size,
            state_dir.to_path_buf(),
        ))),
    }
}

/// The last non-empty lines (at most 8, from the file's last 4 KiB) of the guest console log at
/// `path`, joined with ` | ` for a one-line error; what went wrong reading it otherwise.
pub fn console_tail(path: &std::path::Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 4096;
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(TAIL)))?;
        let mut bytes = Vec::new();
        f.take(TAIL).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            // What the guest wrote, minus control characters (escape sequences would reach the
            // caller's terminal or log through the error).
            let lines: Vec<String> = text
                .lines()
                .map(|l| {
                    l.chars()
                        .filter(|c| !c.is_control())
                        .collect::<String>()
                        .trim()
                        .to_owned()
                })
                .filter(|l| !l.is_empty())
                .collect();
            if lines.is_empty() {
                "(none)".to_owned()
            } else {
                lines[lines.len().saturating_sub(8)..].join(" | ")
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_tail_is_its_last_eight_non_empty_lines_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let text: String = (1..=12).map(|i| format!("line {i}\n\n")).collect();
        std::fs::write(&log, text).unwrap();
        assert_eq!(
            console_tail(&log),
            "line 5 | line 6 | line 7 | line 8 | line 9 | line 10 | line 11 | line 12"
        );
        std::fs::write(&log, "\n \n").unwrap();
        assert_eq!(console_tail(&log), "(none)");
        std::fs::write(&log, "\x1b[31mKernel panic\x1b[0m\r\n\x07").unwrap();
        assert_eq!(console_tail(&log), "[31mKernel panic[0m");
        let missing = console_tail(&dir.path().join("gone.log"));
        assert!(
            missing.starts_with("(cannot read ") && missing.contains("gone.log"),
            "{missing}"
        );
    }

    #[test]
    fn codes_are_the_agents_wherever_it_refused() {
        use vessel_protocol::{ClientError, Code, RemoteError};
        let refused = SandboxError::CallAgent {
            op: "pause the container",
            source: ClientError::Refuse {
                op: "pause",
                source: RemoteError::new(Code::NotFound, "container c1 not found"),
            },
        };
        assert_eq!(refused.code(), Some(Code::NotFound));
        let start = SandboxError::StartProcess(RemoteError::new(Code::InvalidArgument, "exec"));
        assert_eq!(start.code(), Some(Code::InvalidArgument));
        assert_eq!(
            SandboxError::InvalidState("the sandbox is not booted").code(),
            Some(Code::FailedPrecondition)
        );
        assert_eq!(SandboxError::FindExecutable("x".into()).code(), None);
    }

    #[test]
    fn exit_codes_follow_shell_convention() {
        assert_eq!(WorkloadExit::Exited(3).code(), 3);
        assert_eq!(WorkloadExit::Signaled(9).code(), 137);
        assert_eq!(WorkloadExit::Signaled(15).code(), 143);
    }
}
