//! A blocking client for the agent's control and stdio ports.
//!
//! The host gets a connected stream to guest port [`crate::CONTROL_PORT`] from the VMM's vsock
//! API, hands it to [`Client::handshake`], then calls [`Client::call`] (or the typed helpers)
//! once per request. A `Client` serves one request at a time; open another connection for each
//! concurrent [`Request::Wait`]. An agent that dies or closes the connection surfaces as
//! [`ClientError::CloseConnection`], never as a hang (as long as the stream itself reports EOF
//! when the VM goes away).

use std::io::{Read, Write};

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
    /// A response of the wrong kind for the request.
    #[error("unexpected response to {op}: {response:?}")]
    ExpectResponse {
        /// The request's `op`.
        op: &'static str,
        /// What came back.
        response: Box<Response>,
    },
}

/// The `op` name of a request, for messages.
fn op_name(r: &Request) -> &'static str {
    match r {
        Request::Hello => "hello",
        Request::CreateContainer(_) => "create_container",
        Request::Start { .. } => "start",
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
}

impl<S: Read + Write> Client<S> {
    /// Reads the agent's hello from a freshly connected control stream and checks its version.
    ///
    /// # Errors
    /// [`ClientError::CloseConnection`] if the agent hangs up first, [`ClientError::CheckHello`]
    /// on anything but a matching hello, or a frame error.
    pub fn handshake(mut stream: S) -> Result<Self, ClientError> {
        let env: ResponseEnvelope = read_message(&mut stream)
            .map_err(ClientError::ExchangeFrame)?
            .ok_or(ClientError::CloseConnection {
                during: "waiting for hello",
            })?;
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
        let id = self.next_id;
        self.next_id += 1;
        write_message(&mut self.stream, &RequestEnvelope { id, request })
            .map_err(ClientError::ExchangeFrame)?;
        let env: ResponseEnvelope = read_message(&mut self.stream)
            .map_err(ClientError::ExchangeFrame)?
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
pub fn open_stdio<S: Read + Write>(
    stream: &mut S,
    header: &StdioHeader,
) -> Result<(), ClientError> {
    write_message(stream, header).map_err(ClientError::ExchangeFrame)?;
    let ack: Result<(), RemoteError> = read_message(stream)
        .map_err(ClientError::ExchangeFrame)?
        .ok_or(ClientError::CloseConnection {
            during: "waiting for the stdio acknowledgement",
        })?;
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
    fn handshake_refuses_a_silent_agent() {
        let (host, guest) = UnixStream::pair().unwrap();
        drop(guest);
        assert!(matches!(
            Client::handshake(host).unwrap_err(),
            ClientError::CloseConnection { .. }
        ));
    }
}
