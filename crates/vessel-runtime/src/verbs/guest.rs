//! Reaching a running container's guest agent from a process other than the monitor (`vessel
//! exec`, `ps`, `events`, `update`): straight through the VM's vsock Unix socket
//! `<root>/<id>/vsock.sock` (Firecracker's `CONNECT <port>\n` / `OK <n>\n` convention), so that
//! stdio never passes through the monitor; while the container is paused, control requests go
//! through the monitor instead ([`call`]). With the `agent` test double
//! (`VESSEL_TEST_SANDBOX=agent`), the agent's Unix sockets named by the environment stand for the
//! vsock ports.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use vessel_protocol::{Client, Request, Response, CONTROL_PORT};
pub use vessel_protocol::{ProcessInfo, ProcessList, Stats};

use crate::host::state::{StateError, StateStore, Status, MONITOR_SOCKET, VSOCK_SOCKET};
pub use crate::sandbox::agent::VsockUds;
use crate::sandbox::agent::{AgentConnector, UnixAgent};
use crate::sandbox::{TEST_AGENT_CONTROL_ENV, TEST_AGENT_STDIO_ENV, TEST_SANDBOX_ENV};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// Unknown ID, invalid ID, or store failure.
    #[error(transparent)]
    Store(#[from] StateError),
    /// The agent could not be reached.
    #[error("connect to the guest agent port {port}")]
    ConnectAgent {
        /// The guest port.
        port: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The agent refused to start an exec process: runc's message for it, the agent's reason
    /// as the cause (see [`crate::sandbox::SandboxError::StartProcess`]).
    #[error("unable to start container process")]
    StartProcess(#[source] vessel_protocol::RemoteError),
    /// The agent refused or failed a request.
    #[error("{op}")]
    CallAgent {
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: vessel_protocol::ClientError,
    },
    /// The monitor could not pass the request on (the container is paused).
    #[error("{op}")]
    CallMonitor {
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: crate::monitor::control::ControlError,
    },
    /// The agent answered with something else than the request calls for.
    #[error("{op}: unexpected answer from the agent")]
    UnexpectedAnswer {
        /// What was being done.
        op: &'static str,
    },
}

/// How another process reaches the agent of a container.
#[derive(Debug, Clone)]
pub enum AgentAddress {
    /// The microVM's vsock socket.
    Vsock(VsockUds),
    /// The `agent` test double's Unix sockets.
    Unix(UnixAgent),
}

impl AgentAddress {
    /// The address for container `id` in `store`: its `vsock.sock`, or with
    /// `VESSEL_TEST_SANDBOX=agent` the sockets named by the environment (in a build with the
    /// test doubles only: [`crate::sandbox::TEST_DOUBLES`]).
    pub fn of(store: &StateStore, id: &str) -> Result<AgentAddress, GuestError> {
        let dir = store.container_dir(id)?;
        let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
        if crate::sandbox::TEST_DOUBLES
            && std::env::var(TEST_SANDBOX_ENV).is_ok_and(|v| v == "agent")
        {
            if let (Some(control), Some(stdio)) =
                (var(TEST_AGENT_CONTROL_ENV), var(TEST_AGENT_STDIO_ENV))
            {
                return Ok(AgentAddress::Unix(UnixAgent { control, stdio }));
            }
        }
        Ok(AgentAddress::Vsock(VsockUds {
            path: dir.join(VSOCK_SOCKET),
        }))
    }

    /// A new connection to guest `port`.
    pub fn connect(&self, port: u32) -> Result<UnixStream, GuestError> {
        match self {
            AgentAddress::Vsock(v) => v.connect(port),
            AgentAddress::Unix(u) => u.connect(port),
        }
        .map_err(|source| GuestError::ConnectAgent { port, source })
    }

    /// A new control connection, past the agent's hello.
    pub fn client(&self) -> Result<Client<UnixStream>, GuestError> {
        Client::handshake(self.connect(CONTROL_PORT)?).map_err(|source| GuestError::CallAgent {
            op: "handshake with the guest agent",
            source,
        })
    }
}

/// Sends one control request to container `id`'s agent and returns the answer: straight
/// through the vsock socket, or, while the container is paused (its vCPUs stopped), through the
/// monitor, which lets the guest run for the request ([`crate::monitor::control::ask_agent`]).
pub fn call(
    store: &StateStore,
    id: &str,
    op: &'static str,
    request: Request,
) -> Result<Response, GuestError> {
    if store.load(id)?.status() == Status::Paused {
        let socket = store.container_dir(id)?.join(MONITOR_SOCKET);
        return crate::monitor::control::ask_agent(&socket, request)
            .map_err(|source| GuestError::CallMonitor { op, source });
    }
    AgentAddress::of(store, id)?
        .client()?
        .call(request)
        .map_err(|source| GuestError::CallAgent { op, source })
}

/// The guest's processes of container `id` (the agent's `ps`).
pub fn ps(store: &StateStore, id: &str) -> Result<ProcessList, GuestError> {
    let op = "list the container's processes in the guest";
    let request = Request::Ps {
        container_id: id.to_owned(),
    };
    match call(store, id, op, request)? {
        Response::Processes(list) => Ok(list),
        _ => Err(GuestError::UnexpectedAnswer { op }),
    }
}

/// The statistics of container `id`'s guest cgroup (the agent's `stats`).
pub fn stats(store: &StateStore, id: &str) -> Result<Stats, GuestError> {
    let op = "read the container's statistics in the guest";
    let request = Request::Stats {
        container_id: id.to_owned(),
    };
    match call(store, id, op, request)? {
        Response::Stats(stats) => Ok(stats),
        _ => Err(GuestError::UnexpectedAnswer { op }),
    }
}

/// The OOM-kill count of container `id`'s guest cgroup and whether its init has exited (the
/// agent's `wait_oom`): at once without `seen`, else once the count exceeds `seen` or the init
/// exits. Always straight to the agent, never through the monitor (it may block for long); while
/// the container is paused the answer simply waits for `resume`.
pub fn wait_oom(
    store: &StateStore,
    id: &str,
    seen: Option<u64>,
) -> Result<(u64, bool), GuestError> {
    let op = "wait for OOM kills in the guest";
    let answer = AgentAddress::of(store, id)?
        .client()?
        .call(Request::WaitOom {
            container_id: id.to_owned(),
            seen,
        })
        .map_err(|source| GuestError::CallAgent { op, source })?;
    match answer {
        Response::OomKills { count, exited } => Ok((count, exited)),
        _ => Err(GuestError::UnexpectedAnswer { op }),
    }
}

/// Applies `resources` (a partial OCI `linux.resources`) to container `id`'s guest cgroup (the
/// agent's `update`).
pub fn update(
    store: &StateStore,
    id: &str,
    resources: &oci_spec::runtime::LinuxResources,
) -> Result<(), GuestError> {
    let op = "apply the resources in the guest";
    let request = Request::Update {
        container_id: id.to_owned(),
        resources: Box::new(resources.clone()),
    };
    match call(store, id, op, request)? {
        Response::Done => Ok(()),
        _ => Err(GuestError::UnexpectedAnswer { op }),
    }
}
