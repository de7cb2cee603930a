//! The monitor's control socket, `<root>/<id>/monitor.sock`: one JSON request line, one JSON
//! response line per connection. Only Vessel's own commands speak it (start, kill, pause, ...,
//! and agent requests of `ps`, `events` and `update` while the container is paused, when only
//! the monitor can let the guest answer).
//!
//! A refusal keeps its kind: next to the message (the error chain, printed as it is) goes the
//! failure's [`Code`] when it has one (the guest agent's typed status code, see
//! [`crate::sandbox::SandboxError::code`]), so the verbs can act on it. A reply without a code
//! (from a monitor started before codes were sent) still parses, with none.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vessel_protocol::{Code, Request, Response};

/// A request to the monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Run `process.args` (runc `start`).
    Start,
    /// Send a signal to the init, or to every process with `all`.
    Signal {
        /// Signal number.
        signal: i32,
        /// `kill --all`.
        all: bool,
    },
    /// Freeze the workload.
    Pause,
    /// Thaw the workload.
    Resume,
    /// Pass one control request to the guest agent and return its answer
    /// ([`ControlResponse::Answer`]).
    Agent {
        /// The agent request.
        request: Box<Request>,
    },
}

/// The monitor's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ControlResponse {
    /// Done.
    Ok,
    /// Refused or failed; the message is the sandbox's error chain.
    Error {
        /// What went wrong.
        message: String,
        /// The kind of failure, when it has one; absent from old monitors' replies.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<Code>,
    },
    /// The agent's answer to [`ControlRequest::Agent`].
    Answer {
        /// The answer.
        response: Box<Response>,
    },
}

/// Errors of [`call`].
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be reached: the monitor has exited (or is exiting).
    #[error("connect to monitor at {path}")]
    ConnectMonitor {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The request could not be sent or the answer read.
    #[error("talk to monitor at {path}")]
    Exchange {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The monitor answered with something that is not a response.
    #[error("parse monitor response {line:?}")]
    ParseResponse {
        /// The line received.
        line: String,
    },
    /// The monitor refused or failed the request.
    #[error("{message}")]
    RefuseRequest {
        /// The monitor's error chain, as it is printed.
        message: String,
        /// The kind of failure, when it has one (the guest agent's status code).
        code: Option<Code>,
    },
}

impl ControlError {
    /// The kind of failure the monitor reported ([`ControlError::RefuseRequest`]); `None` when
    /// it had none or the monitor could not be asked.
    pub fn code(&self) -> Option<Code> {
        match self {
            ControlError::RefuseRequest { code, .. } => *code,
            _ => None,
        }
    }
}

/// Sends `request` to the monitor listening at `socket` and waits for its answer.
pub fn call(socket: &Path, request: &ControlRequest) -> Result<(), ControlError> {
    exchange(socket, request).map(|_| ())
}

/// Has the monitor at `socket` pass `request` to the guest agent; returns the agent's answer.
pub fn ask_agent(socket: &Path, request: Request) -> Result<Response, ControlError> {
    let request = ControlRequest::Agent {
        request: Box::new(request),
    };
    match exchange(socket, &request)? {
        Some(response) => Ok(response),
        None => Err(ControlError::ParseResponse {
            line: "ok (an answer was expected)".into(),
        }),
    }
}

/// One exchange: `Ok(None)` for `ok`, `Ok(Some(_))` for an agent's answer.
fn exchange(socket: &Path, request: &ControlRequest) -> Result<Option<Response>, ControlError> {
    let mut stream =
        vessel_vmm::uds::connect(socket).map_err(|source| ControlError::ConnectMonitor {
            path: socket.to_owned(),
            source,
        })?;
    let exchange = |source| ControlError::Exchange {
        path: socket.to_owned(),
        source,
    };
    let mut line = serde_json::to_string(request).expect("request always serialises");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(exchange)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(exchange)?;
    match serde_json::from_str(&answer) {
        Ok(ControlResponse::Ok) => Ok(None),
        Ok(ControlResponse::Answer { response }) => Ok(Some(*response)),
        Ok(ControlResponse::Error { message, code }) => {
            Err(ControlError::RefuseRequest { message, code })
        }
        Err(_) if answer.is_empty() => Err(exchange(io::ErrorKind::UnexpectedEof.into())),
        Err(_) => Err(ControlError::ParseResponse { line: answer }),
    }
}

/// Serves one connection: reads a request, answers with what `handle` returns.
pub fn serve_one(
    stream: &mut UnixStream,
    handle: impl FnOnce(ControlRequest) -> ControlResponse,
) -> io::Result<()> {
    let mut line = String::new();
    BufReader::new(&*stream).read_line(&mut line)?;
    let response = match serde_json::from_str(&line) {
        Ok(request) => handle(request),
        Err(e) => ControlResponse::Error {
            message: format!("parse control request: {e}"),
            code: Some(Code::InvalidArgument),
        },
    };
    let mut out = serde_json::to_string(&response).expect("response always serialises");
    out.push('\n');
    stream.write_all(out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn request_and_refusal_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("m.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                serve_one(&mut s, |req| {
                    seen.push(req.clone());
                    match req {
                        ControlRequest::Start => ControlResponse::Ok,
                        _ => ControlResponse::Error {
                            message: "nope".into(),
                            code: Some(Code::NotFound),
                        },
                    }
                })
                .unwrap();
            }
            seen
        });
        call(&sock, &ControlRequest::Start).unwrap();
        let err = call(
            &sock,
            &ControlRequest::Signal {
                signal: 9,
                all: true,
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "nope");
        assert_eq!(err.code(), Some(Code::NotFound));
        assert!(matches!(
            err,
            ControlError::RefuseRequest {
                code: Some(Code::NotFound),
                ..
            }
        ));
        assert_eq!(
            server.join().unwrap(),
            vec![
                ControlRequest::Start,
                ControlRequest::Signal {
                    signal: 9,
                    all: true
                }
            ]
        );
        drop(std::fs::remove_file(&sock));
        assert!(matches!(
            call(&sock, &ControlRequest::Start),
            Err(ControlError::ConnectMonitor { .. })
        ));
    }

    #[test]
    fn a_refusal_carries_its_code_and_old_replies_still_parse() {
        let coded = ControlResponse::Error {
            message: "pause container: agent refused pause: container c1 not found".into(),
            code: Some(Code::NotFound),
        };
        let line = serde_json::to_string(&coded).unwrap();
        assert_eq!(
            line,
            r#"{"result":"error","message":"pause container: agent refused pause: container c1 not found","code":"not_found"}"#
        );
        assert_eq!(
            serde_json::from_str::<ControlResponse>(&line).unwrap(),
            coded
        );
        // A monitor that predates codes.
        let old: ControlResponse =
            serde_json::from_str(r#"{"result":"error","message":"nope"}"#).unwrap();
        assert_eq!(
            old,
            ControlResponse::Error {
                message: "nope".into(),
                code: None
            }
        );
        // No code, no field: the reply is the old one.
        let plain = ControlResponse::Error {
            message: "nope".into(),
            code: None,
        };
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"result":"error","message":"nope"}"#
        );
    }
}
