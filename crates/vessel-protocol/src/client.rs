//! A blocking client for the agent's control and stdio ports.
//!
//! The host gets a connected stream to guest port [`crate::CONTROL_PORT`] from the VMM's vsock
//! API, hands it to [`Client::handshake`], then calls [`Client::call`] (or the typed helpers)
//! once per request. A `Client` serves one request at a time; open another connection for each
//! concurrent [`Request::Wait`]. An agent that dies or closes the connection surfaces as
//! [`ClientError::CloseConnection`], never as a hang (as long as the stream itself reports EOF
//! when the VM goes away).
//!
//! An agent that is alive but silent (a wedged agent, a hung guest kernel, a paused vCPU) is
//! bounded too: every request but the ones that wait by design ([`Request::Wait`],
//! [`Request::WaitOom`]) has a deadline ([`Deadlines`]) for its answer, and so has the hello. A
//! missed deadline is [`ClientError::PassDeadline`], naming the request and the deadline; the
//! connection is then out of step (a late answer may still arrive on it), so every later call
//! on that client fails at once with the same error kind.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::frame::{read_message, write_message, FrameError};
use crate::message::{
    CreateContainer, ExecProcess, ExitStatus, Hello, Request, RequestEnvelope, Response,
    ResponseEnvelope,
};
use crate::status::RemoteError;
use crate::stdio::StdioHeader;
use crate::PROTOCOL_VERSION;

/// Errors talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Framing or (de)serialisation failed.
    #[error("exchange frames with the agent")]
    ExchangeFrame(#[source] FrameError),
    /// The agent closed the connection (it exited, crashed or the VM stopped).
    #[error("agent closed the connection while {during}")]
    CloseConnection {
        /// What the client was waiting for.
        during: &'static str,
    },
    /// The agent answered with a typed error.
    #[error("agent refused {op}")]
    Refuse {
        /// The request's `op`.
        op: &'static str,
        /// The agent's error, with its causes.
        #[source]
        source: RemoteError,
    },
    /// The first message was not a hello, or its protocol version differs.
    #[error("bad agent hello: {reason}")]
    CheckHello {
        /// What was wrong.
        reason: String,
    },
    /// A response carried another id than the request.
    #[error("response id {got} does not match request id {sent}")]
    MatchId {
        /// The id sent.
        sent: u64,
        /// The id received.
        got: u64,
    },
    /// The agent did not answer in time; see the module documentation.
    #[error("the agent did not answer {op} within {deadline:?}")]
    PassDeadline {
        /// The request's `op` (or `hello`).
        op: &'static str,
        /// The deadline that passed.
        deadline: Duration,
    },
    /// A response of the wrong kind for the request.
    #[error("unexpected response to {op}: {response:?}")]
    ExpectResponse {
        /// The request's `op`.
        op: &'static str,
        /// What came back.
        response: Box<Response>,
    },
}

/// How long the agent may answer in: see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// For the hello on a new connection.
    pub hello: Duration,
    /// For a quick request (start, signal, ps, stats, pause, resume, update, resize, ...).
    pub control: Duration,
    /// For a request that sets a process up (create, exec) or syncs the guest's file systems
    /// (shutdown, delete).
    pub setup: Duration,
    /// For a SIGKILL (`signal` 9): short, as a host that has a VM to stop instead (the
    /// microVM sandbox) does so when it passes.
    pub kill: Duration,
}

impl Default for Deadlines {
    /// 15 s for the hello and quick requests, 60 s for set-up, 3 s for a SIGKILL: far beyond
    /// what a live agent takes, even under the lab's emulation (a quick request answers in
    /// milliseconds there).
    fn default() -> Deadlines {
        Deadlines {
            hello: Duration::from_secs(15),
            control: Duration::from_secs(15),
            setup: Duration::from_secs(60),
            kill: Duration::from_secs(3),
        }
    }
}

impl Deadlines {
    /// The deadline for the answer to `r`: `None` for the requests that wait by design.
    pub fn of(&self, r: &Request) -> Option<Duration> {
        match r {
            Request::Wait { .. } | Request::WaitOom { .. } => None,
            Request::Signal { signal: 9, .. } => Some(self.kill),
            Request::CreateContainer(_)
            | Request::Exec(_)
            | Request::Shutdown
            | Request::Delete { .. }
            | Request::ConfigureNetwork { .. } => Some(self.setup),
            _ => Some(self.control),
        }
    }
}

/// A stream whose reads and writes can be bounded in time.
pub trait Deadline {
    /// Bounds each later read and write by `d` (`None`: no bound).
    ///
    /// # Errors
    /// The stream refused the setting.
    fn set_deadline(&self, d: Option<Duration>) -> std::io::Result<()>;
}

impl Deadline for UnixStream {
    fn set_deadline(&self, d: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(d)?;
        self.set_write_timeout(d)
    }
}

/// `e` as the client reports it: [`ClientError::PassDeadline`] for `op` when it is a read or
/// write that ran out of `deadline`, else [`ClientError::ExchangeFrame`].
fn frame_error(e: FrameError, op: &'static str, deadline: Duration) -> ClientError {
    if timed_out(&e) {
        ClientError::PassDeadline { op, deadline }
    } else {
        ClientError::ExchangeFrame(e)
    }
}

/// Whether `e` (a frame error) is a read or write that ran out of time.
fn timed_out(e: &FrameError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// The `op` name of a request, for messages.
fn op_name(r: &Request) -> &'static str {
    match r {
        Request::Hello => "hello",
        Request::CreateContainer(_) => "create_container",
        Request::Start { .. } => "start",
        Request::ConfigureNetwork { .. } => "configure_network",
        Request::Exec(_) => "exec",
        Request::Signal { .. } => "signal",
        Request::Wait { .. } => "wait",
        Request::Ps { .. } => "ps",
        Request::Stats { .. } => "stats",
        Request::WaitOom { .. } => "wait_oom",
        Request::Pause { .. } => "pause",
        Request::Resume { .. } => "resume",
        Request::Update { .. } => "update",
        Request::ResizeTty { .. } => "resize_tty",
        Request::CloseStdin { .. } => "close_stdin",
        Request::Delete { .. } => "delete",
        Request::Shutdown => "shutdown",
        Request::Timings { .. } => "timings",
    }
}

/// A control connection to the agent.
#[derive(Debug)]
pub struct Client<S> {
    stream: S,
    next_id: u64,
    hello: Hello,
    deadlines: Deadlines,
    /// The request whose deadline passed, and that deadline: the connection is out of step.
    missed: Option<(&'static str, Duration)>,
}

impl<S: Read + Write + Deadline> Client<S> {
    /// Reads the agent's hello from a freshly connected control stream and checks its version.
    ///
    /// # Errors
    /// [`ClientError::CloseConnection`] if the agent hangs up first, [`ClientError::CheckHello`]
    /// on anything but a matching hello, or a frame error.
    pub fn handshake(stream: S) -> Result<Self, ClientError> {
        Self::handshake_with(stream, Deadlines::default())
    }

    /// [`Client::handshake`] with other deadlines than the default ones.
    ///
    /// # Errors
    /// As [`Client::handshake`].
    pub fn handshake_with(mut stream: S, deadlines: Deadlines) -> Result<Self, ClientError> {
        let frame_error = |e| frame_error(e, "hello", deadlines.hello);
        stream
            .set_deadline(Some(deadlines.hello))
            .map_err(|e| ClientError::ExchangeFrame(FrameError::ReadHeader(e)))?;
        let env: ResponseEnvelope = read_message(&mut stream).map_err(frame_error)?.ok_or(
            ClientError::CloseConnection {
                during: "waiting for hello",
            },
        )?;
        let hello = match env.result {
            Ok(Response::Hello(h)) if env.id == 0 => h,
            other => {
                return Err(ClientError::CheckHello {
                    reason: format!("expected hello with id 0, got id {}: {other:?}", env.id),
                })
            }
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(ClientError::CheckHello {
                reason: format!(
                    "agent speaks protocol {}, host speaks {PROTOCOL_VERSION}",
                    hello.protocol_version
                ),
            });
        }
        Ok(Client {
            stream,
            next_id: 1,
            hello,
            deadlines,
            missed: None,
        })
    }

    /// The agent's hello.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Sends one request and waits for its response.
    ///
    /// # Errors
    /// [`ClientError::Refuse`] with the agent's typed error, or a transport error.
    pub fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        let op = op_name(&request);
        if let Some((op, deadline)) = self.missed {
            return Err(ClientError::PassDeadline { op, deadline });
        }
        let id = self.next_id;
        self.next_id += 1;
        let limit = self.deadlines.of(&request);
        self.stream
            .set_deadline(limit)
            .map_err(|e| ClientError::ExchangeFrame(FrameError::ReadHeader(e)))?;
        let mut frame_error = |e: FrameError| match limit {
            Some(deadline) if timed_out(&e) => {
                self.missed = Some((op, deadline));
                ClientError::PassDeadline { op, deadline }
            }
            _ => ClientError::ExchangeFrame(e),
        };
        if let Err(e) = write_message(&mut self.stream, &RequestEnvelope { id, request }) {
            return Err(frame_error(e));
        }
        let env: ResponseEnvelope = match read_message(&mut self.stream) {
            Ok(env) => env,
            Err(e) => return Err(frame_error(e)),
        }
        .ok_or(ClientError::CloseConnection {
            during: "waiting for a response",
        })?;
        if env.id != id {
            return Err(ClientError::MatchId {
                sent: id,
                got: env.id,
            });
        }
        env.result
            .map_err(|source| ClientError::Refuse { op, source })
    }

    /// Sends a request whose only good answer is [`Response::Done`].
    ///
    /// # Errors
    /// As [`Client::call`], plus [`ClientError::ExpectResponse`].
    pub fn call_done(&mut self, request: Request) -> Result<(), ClientError> {
        let op = op_name(&request);
        match self.call(request)? {
            Response::Done => Ok(()),
            other => Err(ClientError::ExpectResponse {
                op,
                response: Box::new(other),
            }),
        }
    }

    /// Creates a container; returns the guest PID of its (blocked) init.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn create(&mut self, c: CreateContainer) -> Result<i32, ClientError> {
        match self.call(Request::CreateContainer(Box::new(c)))? {
            Response::Created { pid, .. } => Ok(pid),
            other => Err(ClientError::ExpectResponse {
                op: "create_container",
                response: Box::new(other),
            }),
        }
    }

    /// Starts an exec process; returns its guest PID.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn exec(&mut self, e: ExecProcess) -> Result<i32, ClientError> {
        match self.call(Request::Exec(Box::new(e)))? {
            Response::ExecStarted { pid } => Ok(pid),
            other => Err(ClientError::ExpectResponse {
                op: "exec",
                response: Box::new(other),
            }),
        }
    }

    /// Waits for a container's init (`exec_id` `None`) or an exec process to exit.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn wait(
        &mut self,
        container_id: &str,
        exec_id: Option<&str>,
    ) -> Result<ExitStatus, ClientError> {
        match self.call(Request::Wait {
            container_id: container_id.to_string(),
            exec_id: exec_id.map(str::to_string),
        })? {
            Response::Exited { status } => Ok(status),
            other => Err(ClientError::ExpectResponse {
                op: "wait",
                response: Box::new(other),
            }),
        }
    }

    /// Gives the stream back.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

/// Opens a stdio stream on a fresh connection to guest port [`crate::STDIO_PORT`]: sends the
/// header and reads the agent's acknowledgement. After `Ok`, the stream carries raw bytes.
///
/// # Errors
/// [`ClientError::Refuse`] with the agent's typed error (for example `NotFound`), or a transport
/// error.
pub fn open_stdio<S: Read + Write + Deadline>(
    stream: &mut S,
    header: &StdioHeader,
) -> Result<(), ClientError> {
    // The acknowledgement is as quick as a hello; the raw bytes after it have no deadline.
    let limit = Deadlines::default().hello;
    let frame_error = |e| frame_error(e, "open_stdio", limit);
    stream
        .set_deadline(Some(limit))
        .map_err(|e| ClientError::ExchangeFrame(FrameError::ReadHeader(e)))?;
    write_message(stream, header).map_err(frame_error)?;
    let ack: Result<(), RemoteError> =
        read_message(stream)
            .map_err(frame_error)?
            .ok_or(ClientError::CloseConnection {
                during: "waiting for the stdio acknowledgement",
            })?;
    stream
        .set_deadline(None)
        .map_err(|e| ClientError::ExchangeFrame(FrameError::ReadHeader(e)))?;
    ack.map_err(|source| ClientError::Refuse {
        op: "open_stdio",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Code;
    use std::os::unix::net::UnixStream;
    use std::thread;

    fn fake_agent(mut s: UnixStream) {
        let hello = ResponseEnvelope {
            id: 0,
            result: Ok(Response::Hello(Hello {
                agent_version: "0.1.0".into(),
                protocol_version: PROTOCOL_VERSION,
                boot_to_ready_us: 1,
                kernel_release: "test".into(),
            })),
        };
        write_message(&mut s, &hello).unwrap();
        while let Some(env) = read_message::<_, RequestEnvelope>(&mut s).unwrap() {
            let result = match env.request {
                Request::Wait { .. } => Ok(Response::Exited {
                    status: ExitStatus::Code(3),
                }),
                Request::Start { container_id } => Err(RemoteError::new(
                    Code::NotFound,
                    format!("container {container_id} not found"),
                )),
                Request::Shutdown => break,
                _ => Ok(Response::Done),
            };
            write_message(&mut s, &ResponseEnvelope { id: env.id, result }).unwrap();
        }
    }

    #[test]
    fn client_talks_to_an_agent() {
        let (host, guest) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || fake_agent(guest));
        let mut c = Client::handshake(host).unwrap();
        assert_eq!(c.hello().kernel_release, "test");
        assert_eq!(c.wait("c1", None).unwrap(), ExitStatus::Code(3));
        c.call_done(Request::Pause {
            container_id: "c1".into(),
        })
        .unwrap();
        let err = c
            .call(Request::Start {
                container_id: "nope".into(),
            })
            .unwrap_err();
        match err {
            ClientError::Refuse { op, source } => {
                assert_eq!(op, "start");
                assert_eq!(source.code, Code::NotFound);
                assert_eq!(source.message, "container nope not found");
            }
            other => panic!("unexpected {other:?}"),
        }
        // The fake agent exits on shutdown without answering: a clear error, not a hang.
        let err = c.call(Request::Shutdown).unwrap_err();
        assert!(
            matches!(err, ClientError::CloseConnection { .. }),
            "{err:?}"
        );
        t.join().unwrap();
    }

    #[test]
    fn a_silent_agent_misses_its_deadline_and_the_client_says_so_from_then_on() {
        let short = Deadlines {
            hello: Duration::from_millis(300),
            control: Duration::from_millis(300),
            setup: Duration::from_millis(600),
            kill: Duration::from_millis(200),
        };
        // No hello at all (an agent that accepted and hangs): the handshake ends.
        let (host, _guest) = UnixStream::pair().unwrap();
        let t0 = std::time::Instant::now();
        let err = Client::handshake_with(host, short).unwrap_err();
        assert!(
            matches!(err, ClientError::PassDeadline { op: "hello", deadline } if deadline == short.hello),
            "{err:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

        // A hello, then silence: a quick request and a set-up request each get their deadline.
        let (host, mut guest) = UnixStream::pair().unwrap();
        let hello = ResponseEnvelope {
            id: 0,
            result: Ok(Response::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_version: "t".into(),
                boot_to_ready_us: 0,
                kernel_release: "test".into(),
            })),
        };
        write_message(&mut guest, &hello).unwrap();
        let mut c = Client::handshake_with(host, short).unwrap();
        let t0 = std::time::Instant::now();
        let err = c
            .call(Request::Signal {
                container_id: "c1".into(),
                exec_id: None,
                signal: 15,
                all: false,
            })
            .unwrap_err();
        let waited = t0.elapsed();
        assert!(
            matches!(err, ClientError::PassDeadline { op: "signal", deadline } if deadline == short.control),
            "{err:?}"
        );
        assert!(
            waited >= short.control && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        assert_eq!(
            err.to_string(),
            "the agent did not answer signal within 300ms"
        );
        // The request did reach the agent.
        let env: RequestEnvelope = read_message(&mut guest).unwrap().unwrap();
        assert!(matches!(env.request, Request::Signal { signal: 15, .. }));
        // From now on the connection is out of step: a late answer must not be taken for the
        // next request's, so every call fails at once.
        let t0 = std::time::Instant::now();
        let err = c
            .call(Request::Ps {
                container_id: "c1".into(),
            })
            .unwrap_err();
        assert!(
            matches!(err, ClientError::PassDeadline { op: "signal", .. }),
            "{err:?}"
        );
        assert!(t0.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn waiting_requests_have_no_deadline_and_the_others_do() {
        let d = Deadlines::default();
        let wait = Request::Wait {
            container_id: "c".into(),
            exec_id: None,
        };
        assert_eq!(d.of(&wait), None);
        assert_eq!(
            d.of(&Request::WaitOom {
                container_id: "c".into(),
                seen: None
            }),
            None
        );
        assert_eq!(d.of(&Request::Shutdown), Some(Duration::from_secs(60)));
        let signal = |signal| Request::Signal {
            container_id: "c".into(),
            exec_id: None,
            signal,
            all: false,
        };
        assert_eq!(d.of(&signal(9)), Some(Duration::from_secs(3)));
        assert_eq!(d.of(&signal(15)), Some(Duration::from_secs(15)));
        assert_eq!(
            d.of(&Request::Pause {
                container_id: "c".into()
            }),
            Some(Duration::from_secs(15))
        );
    }

    #[test]
    fn handshake_refuses_a_silent_agent() {
        let (host, guest) = UnixStream::pair().unwrap();
        drop(guest);
        assert!(matches!(
            Client::handshake(host).unwrap_err(),
            ClientError::CloseConnection { .. }
        ));
    }
}
