//! A sandbox driven through the guest agent's protocol (`vessel-protocol`, docs/agent-protocol.md):
//! the part of the microVM sandbox that does not depend on how the agent is reached.
//!
//! [`AgentSandbox`] takes an [`AgentConnector`] that opens a stream to an agent port. The microVM
//! sandbox connects through the VMM's vsock (`vm.vsock().connect(port)`); tests connect to a fake
//! agent over Unix sockets. Standard I/O is relayed between the fds `create` received and the
//! agent's stdio streams by one thread per stream; each thread drops its copy of the caller's fd
//! when its stream ends, so the caller sees EOF once the workload's output is complete.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use vessel_protocol::{
    open_stdio, Client, CreateContainer, ExitStatus, Request, Response, StdioHeader, StreamKind,
    CONTROL_PORT, STDIO_PORT,
};

use super::{Sandbox, SandboxError, Stdio, WorkloadExit, WorkloadIo};
use crate::host::bundle::Bundle;
use crate::host::output::OutputRelay;

/// Opens connections to the agent.
pub trait AgentConnector: Send + Sync {
    /// A connected stream to the agent's `port` ([`CONTROL_PORT`] or [`STDIO_PORT`]).
    fn connect(&self, port: u32) -> io::Result<UnixStream>;

    /// The path under which the agent sees the host rootfs `host_rootfs` of container `id`
    /// (for the microVM: the virtio-fs share, `/run/vessel/shared/<id>/rootfs`).
    fn guest_rootfs(&self, id: &str, host_rootfs: &Path) -> String;
}

/// Connects to guest ports through a VMM's vsock Unix socket (`CONNECT <port>\n`, `OK <n>\n`).
#[derive(Debug, Clone)]
pub struct VsockUds {
    /// The socket, `<root>/<id>/vsock.sock`.
    pub path: PathBuf,
}

impl AgentConnector for VsockUds {
    fn connect(&self, port: u32) -> io::Result<UnixStream> {
        let mut stream = vessel_vmm::uds::connect(&self.path)?;
        stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
        // One byte at a time: whatever follows the line already belongs to the guest stream.
        let mut line = Vec::new();
        let mut byte = [0u8];
        while line.len() < 64 {
            if stream.read(&mut byte)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("guest port {port} refused the connection"),
                ));
            }
            if byte[0] == b'\n' {
                break;
            }
            line.push(byte[0]);
        }
        if !line.starts_with(b"OK ") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "vsock socket answered {:?} to CONNECT {port}",
                    String::from_utf8_lossy(&line)
                ),
            ));
        }
        Ok(stream)
    }

    fn guest_rootfs(&self, _id: &str, host_rootfs: &Path) -> String {
        host_rootfs.to_string_lossy().into_owned()
    }
}

/// A sandbox whose container is run by a vessel-agent; see the module documentation.
pub struct AgentSandbox<C> {
    connector: C,
    control: Mutex<Option<Client<UnixStream>>>,
    /// The agent missed a deadline on `control`: reconnect before the next call.
    control_stale: AtomicBool,
    id: Mutex<Option<String>>,
    /// The guest PID of the created container's init.
    init_pid: Mutex<Option<i32>>,
    relays: Mutex<Vec<OutputRelay>>,
}

impl<C: AgentConnector> AgentSandbox<C> {
    /// A sandbox that will reach its agent through `connector`.
    pub fn new(connector: C) -> AgentSandbox<C> {
        AgentSandbox {
            connector,
            control: Mutex::new(None),
            control_stale: AtomicBool::new(false),
            id: Mutex::new(None),
            init_pid: Mutex::new(None),
            relays: Mutex::new(Vec::new()),
        }
    }

    fn client(&self) -> Result<Client<UnixStream>, SandboxError> {
        let stream =
            self.connector
                .connect(CONTROL_PORT)
                .map_err(|source| SandboxError::ConnectAgent {
                    port: CONTROL_PORT,
                    source,
                })?;
        Client::handshake(stream).map_err(|source| SandboxError::CallAgent {
            op: "handshake with the agent",
            source,
        })
    }

    fn id(&self) -> Result<String, SandboxError> {
        self.id
            .lock()
            .expect("id lock")
            .clone()
            .ok_or(SandboxError::InvalidState("no container has been created"))
    }

    /// Sends `request` on the control connection, expecting `Done`. A connection on which the
    /// agent missed a deadline is out of step (`vessel_protocol::client`): it is replaced by a
    /// new one at the next call, so a guest that was only slow for a while can be driven again.
    /// Has the agent give the created container these interfaces
    /// ([`Request::ConfigureNetwork`]).
    ///
    /// # Errors
    /// The agent refused (its reason names the interface and the step) or was not reached.
    pub fn configure_network(
        &self,
        interfaces: Vec<vessel_protocol::network::Interface>,
    ) -> Result<(), SandboxError> {
        let container_id = self.id()?;
        self.call_done(
            "configure the container's network",
            Request::ConfigureNetwork {
                container_id,
                interfaces,
            },
        )
    }

    /// The guest PID of the created container's init.
    pub fn init_pid(&self) -> Option<i32> {
        *self.init_pid.lock().expect("init pid lock")
    }

    fn call_done(&self, op: &'static str, request: Request) -> Result<(), SandboxError> {
        let mut control = self.control.lock().expect("control lock");
        if control.is_none() {
            return Err(SandboxError::InvalidState("the sandbox is not booted"));
        }
        if self.control_stale.load(Ordering::SeqCst) {
            *control = Some(self.client()?);
            self.control_stale.store(false, Ordering::SeqCst);
        }
        let client = control.as_mut().expect("checked above");
        let result = client.call_done(request);
        if let Err(vessel_protocol::ClientError::PassDeadline { .. }) = &result {
            self.control_stale.store(true, Ordering::SeqCst);
        }
        result.map_err(|source| SandboxError::CallAgent { op, source })
    }

    fn open_stream(&self, id: &str, stream: StreamKind) -> Result<UnixStream, SandboxError> {
        let mut s =
            self.connector
                .connect(STDIO_PORT)
                .map_err(|source| SandboxError::ConnectAgent {
                    port: STDIO_PORT,
                    source,
                })?;
        let header = StdioHeader {
            container_id: id.to_owned(),
            exec_id: None,
            stream,
        };
        open_stdio(&mut s, &header).map_err(|source| SandboxError::CallAgent {
            op: "open a stdio stream",
            source,
        })?;
        Ok(s)
    }
}

/// Copies `from` to `to` until EOF or an error, then closes both ends it owns.
fn pump(from: impl Read, to: impl Write) {
    let _ = vessel_protocol::stdio::relay(from, to);
}

fn spawn_relay(name: &'static str, f: impl FnOnce() + Send + 'static) -> Result<(), SandboxError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            crate::host::output::confine_relay(name);
            f()
        })
        .map(drop)
        .map_err(spawn_failed)
}

fn spawn_failed(e: io::Error) -> SandboxError {
    SandboxError::Sys {
        op: "spawn a stdio relay thread",
        source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)),
    }
}

impl<C: AgentConnector> Sandbox for AgentSandbox<C> {
    fn kind(&self) -> &'static str {
        "agent"
    }

    fn boot(&self) -> Result<(), SandboxError> {
        let client = self.client()?;
        *self.control.lock().expect("control lock") = Some(client);
        Ok(())
    }

    fn create_container(
        &self,
        id: &str,
        bundle: &Bundle,
        io: WorkloadIo,
    ) -> Result<(), SandboxError> {
        let rootfs = self.connector.guest_rootfs(id, &bundle.rootfs);
        let request = CreateContainer::from_spec(id, &bundle.spec, rootfs);
        {
            let mut control = self.control.lock().expect("control lock");
            let client = control
                .as_mut()
                .ok_or(SandboxError::InvalidState("the sandbox is not booted"))?;
            let op = "create the container in the guest";
            let pid = client
                .create(request)
                .map_err(|e| match super::refusal(op, e) {
                    Ok(reason) => SandboxError::StartProcess(reason),
                    Err(source) => SandboxError::CallAgent { op, source },
                })?;
            *self.init_pid.lock().expect("init pid lock") = Some(pid);
        }
        *self.id.lock().expect("id lock") = Some(id.to_owned());
        let stdio = match io {
            WorkloadIo::Stdio(stdio) => stdio,
            WorkloadIo::Terminal(slave) => {
                let tty = self.open_stream(id, StreamKind::Tty)?;
                let output = crate::host::console::relay_terminal(slave, tty)
                    .map_err(SandboxError::RelayTerminal)?;
                self.relays.lock().expect("relay lock").push(output);
                return Ok(());
            }
        };
        let Stdio {
            stdin,
            stdout,
            stderr,
        } = stdio;
        let input = self.open_stream(id, StreamKind::Stdin)?;
        let output = self.open_stream(id, StreamKind::Stdout)?;
        let errors = self.open_stream(id, StreamKind::Stderr)?;
        // Stdin is not joined: it may never reach EOF, and it must not hold the monitor up.
        spawn_relay("stdin-relay", move || {
            pump(std::fs::File::from(stdin), &input);
            let _ = input.shutdown(Shutdown::Write);
        })?;
        let out = OutputRelay::spawn("stdout-relay", output, std::fs::File::from(stdout))
            .map_err(spawn_failed)?;
        let err = OutputRelay::spawn("stderr-relay", errors, std::fs::File::from(stderr))
            .map_err(spawn_failed)?;
        self.relays.lock().expect("relay lock").extend([out, err]);
        Ok(())
    }

    fn start(&self) -> Result<(), SandboxError> {
        let container_id = self.id()?;
        self.call_done("start the container", Request::Start { container_id })
    }

    fn signal(&self, signal: i32, all: bool) -> Result<(), SandboxError> {
        let container_id = self.id()?;
        self.call_done(
            "signal the container",
            Request::Signal {
                container_id,
                exec_id: None,
                signal,
                all,
            },
        )
    }

    fn wait(&self) -> Result<WorkloadExit, SandboxError> {
        let id = self.id()?;
        // A connection of its own: `Wait` blocks the connection it is sent on.
        let status = self
            .client()?
            .wait(&id, None)
            .map_err(|source| SandboxError::CallAgent {
                op: "wait for the container's init",
                source,
            })?;
        // The caller's output is complete once the relays have drained their streams; one
        // that stalls (nobody reads, or the stream cannot end) is given up (crate::host::output).
        let relays: Vec<OutputRelay> = self.relays.lock().expect("relay lock").drain(..).collect();
        crate::host::output::finish_all(relays);
        Ok(match status {
            ExitStatus::Code(c) => WorkloadExit::Exited(c),
            ExitStatus::Signal(s) => WorkloadExit::Signaled(s),
        })
    }

    fn pause(&self) -> Result<(), SandboxError> {
        let container_id = self.id()?;
        self.call_done("pause the container", Request::Pause { container_id })
    }

    fn resume(&self) -> Result<(), SandboxError> {
        let container_id = self.id()?;
        self.call_done("resume the container", Request::Resume { container_id })
    }

    fn resize_terminal(&self, rows: u16, cols: u16) -> Result<(), SandboxError> {
        let container_id = self.id()?;
        self.call_done(
            "resize the container's terminal",
            Request::ResizeTty {
                container_id,
                exec_id: None,
                rows,
                cols,
            },
        )
    }

    fn shutdown(&self) -> Result<(), SandboxError> {
        if self.control.lock().expect("control lock").is_none() {
            return Ok(());
        }
        self.call_done("shut the guest down", Request::Shutdown)
    }

    fn agent_call(&self, request: Request) -> Result<Response, SandboxError> {
        // A connection of its own, so that a slow request never holds the monitor's one up.
        self.client()?
            .call(request)
            .map_err(|source| SandboxError::CallAgent {
                op: "forward a request to the agent",
                source,
            })
    }
}

/// Reaches a vessel-agent serving on two Unix sockets (`vessel-agent serve --control P --stdio Q`),
/// with the rootfs at its host path: for tests on a host that cannot boot a guest.
#[derive(Debug, Clone)]
pub struct UnixAgent {
    /// The control socket (stands for vsock port 1024).
    pub control: std::path::PathBuf,
    /// The stdio socket (stands for vsock port 1025).
    pub stdio: std::path::PathBuf,
}

impl AgentConnector for UnixAgent {
    fn connect(&self, port: u32) -> io::Result<UnixStream> {
        match port {
            CONTROL_PORT => vessel_vmm::uds::connect(&self.control),
            STDIO_PORT => vessel_vmm::uds::connect(&self.stdio),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no agent port {port}"),
            )),
        }
    }

    fn guest_rootfs(&self, _id: &str, host_rootfs: &Path) -> String {
        host_rootfs.to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixListener;
    use vessel_protocol::{
        read_message, write_message, Hello, RequestEnvelope, Response, ResponseEnvelope,
        PROTOCOL_VERSION,
    };

    /// A fake agent: answers control requests (recording them) and serves "out\n" on stdout,
    /// "err\n" on stderr, and echoes stdin into the recorded log.
    fn fake_agent(dir: &Path) -> (UnixAgent, std::sync::Arc<Mutex<Vec<String>>>) {
        let agent = UnixAgent {
            control: dir.join("control.sock"),
            stdio: dir.join("stdio.sock"),
        };
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let control = UnixListener::bind(&agent.control).unwrap();
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in control.incoming() {
                let mut s = stream.unwrap();
                let log = log.clone();
                std::thread::spawn(move || {
                    let hello = Hello {
                        agent_version: "test".into(),
                        protocol_version: PROTOCOL_VERSION,
                        boot_to_ready_us: 1,
                        kernel_release: "test".into(),
                    };
                    write_message(
                        &mut s,
                        &ResponseEnvelope {
                            id: 0,
                            result: Ok(Response::Hello(hello)),
                        },
                    )
                    .unwrap();
                    while let Ok(Some(env)) = read_message::<_, RequestEnvelope>(&mut s) {
                        let op = serde_json::to_value(&env.request).unwrap()["op"]
                            .as_str()
                            .unwrap()
                            .to_owned();
                        log.lock().unwrap().push(op);
                        let result = match env.request {
                            Request::CreateContainer(c) => {
                                assert_eq!(c.root.path(), Path::new("/guest/rootfs"));
                                Ok(Response::Created {
                                    pid: 1,
                                    setup_us: 1,
                                })
                            }
                            Request::Wait { .. } => Ok(Response::Exited {
                                status: ExitStatus::Code(3),
                            }),
                            _ => Ok(Response::Done),
                        };
                        write_message(&mut s, &ResponseEnvelope { id: env.id, result }).unwrap();
                    }
                });
            }
        });
        let stdio = UnixListener::bind(&agent.stdio).unwrap();
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in stdio.incoming() {
                let mut s = stream.unwrap();
                let log = log.clone();
                std::thread::spawn(move || {
                    let header: StdioHeader = read_message(&mut s).unwrap().unwrap();
                    write_message(&mut s, &Ok::<(), vessel_protocol::RemoteError>(())).unwrap();
                    match header.stream {
                        StreamKind::Stdout => s.write_all(b"out\n").unwrap(),
                        StreamKind::Stderr => s.write_all(b"err\n").unwrap(),
                        _ => {
                            let mut input = String::new();
                            s.read_to_string(&mut input).unwrap();
                            log.lock().unwrap().push(format!("stdin:{input}"));
                        }
                    }
                });
            }
        });
        (agent, seen)
    }

    struct Rooted(UnixAgent);

    impl AgentConnector for Rooted {
        fn connect(&self, port: u32) -> io::Result<UnixStream> {
            self.0.connect(port)
        }
        fn guest_rootfs(&self, _id: &str, _host: &Path) -> String {
            "/guest/rootfs".into()
        }
    }

    #[test]
    fn drives_the_protocol_and_relays_stdio() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, seen) = fake_agent(dir.path());
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","args":["x"],"user":{"uid":0,"gid":0}}}"#,
        )
        .unwrap();
        let bundle = Bundle::load(dir.path()).unwrap();
        let (in_r, in_w) = nix::unistd::pipe().unwrap();
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let (err_r, err_w) = nix::unistd::pipe().unwrap();
        let sandbox = AgentSandbox::new(Rooted(agent));
        sandbox.boot().unwrap();
        let stdio = Stdio {
            stdin: in_r,
            stdout: out_w,
            stderr: err_w,
        };
        sandbox
            .create_container("c1", &bundle, WorkloadIo::Stdio(stdio))
            .unwrap();
        nix::unistd::write(in_w.as_fd(), b"hello").unwrap();
        drop(in_w);
        sandbox.start().unwrap();
        sandbox.signal(15, false).unwrap();
        assert_eq!(sandbox.wait().unwrap(), WorkloadExit::Exited(3));
        let mut out = String::new();
        std::fs::File::from(out_r).read_to_string(&mut out).unwrap();
        assert_eq!(
            out, "out\n",
            "EOF reached: every copy of the write end is closed"
        );
        let mut err = String::new();
        std::fs::File::from(err_r).read_to_string(&mut err).unwrap();
        assert_eq!(err, "err\n");
        sandbox.shutdown().unwrap();
        // Give the stdin relay a moment to finish its stream.
        for _ in 0..100 {
            if seen.lock().unwrap().iter().any(|s| s.starts_with("stdin:")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let seen = seen.lock().unwrap().clone();
        for op in [
            "create_container",
            "start",
            "signal",
            "wait",
            "shutdown",
            "stdin:hello",
        ] {
            assert!(seen.iter().any(|s| s == op), "{op} missing from {seen:?}");
        }
    }

    /// The socket sits where `<root>/<id>/vsock.sock` of a long root and ID would: past the 107
    /// bytes `sun_path` holds.
    #[test]
    fn vsock_connect_handshake_keeps_following_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let container = dir.path().join("r".repeat(40)).join("f".repeat(64));
        std::fs::create_dir_all(&container).unwrap();
        let path = container.join(crate::host::state::VSOCK_SOCKET);
        assert!(path.as_os_str().len() > 108);
        let listener = vessel_vmm::uds::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 13];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"CONNECT 1024\n");
            s.write_all(b"OK 77\nguest").unwrap();
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 13];
            s.read_exact(&mut buf).unwrap();
        });
        let v = VsockUds { path };
        let mut s = v.connect(1024).unwrap();
        let mut rest = [0u8; 5];
        s.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"guest");
        let err = v.connect(1024).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        server.join().unwrap();
    }
}
