//! Typed status codes and errors that keep their cause chain across the wire.
//!
//! The agent never flattens a failure to one "internal" code (STYLE.md rule 11): each error
//! carries a [`Code`] the host can act on (for example `NotFound` becomes runc's
//! `container does not exist`), its own message, and the messages of every cause below it.

use std::error::Error;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of failure a request met, in the spirit of gRPC's status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The named container or exec process does not exist in the guest.
    NotFound,
    /// The request is malformed or names something invalid (an unknown capability, a bad mount
    /// type, a missing executable, a cwd that is a file); the message names the field.
    InvalidArgument,
    /// A container or exec process with that id already exists.
    AlreadyExists,
    /// The target is in the wrong state for the request (start of a running container, exec in
    /// a stopped one, resize without a terminal).
    FailedPrecondition,
    /// The guest kernel refused the operation with `EPERM`/`EACCES`.
    PermissionDenied,
    /// Anything else that went wrong inside the agent.
    Internal,
    /// The agent is shutting down or cannot serve the request now.
    Unavailable,
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Code::NotFound => "not found",
            Code::InvalidArgument => "invalid argument",
            Code::AlreadyExists => "already exists",
            Code::FailedPrecondition => "failed precondition",
            Code::PermissionDenied => "permission denied",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
        };
        f.write_str(s)
    }
}

/// One cause in a [`RemoteError`]'s chain: the `Display` text of an error and its own cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteCause {
    /// The cause's message.
    pub message: String,
    /// The cause of this cause, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Box<RemoteCause>>,
}

impl fmt::Display for RemoteCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for RemoteCause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause.as_deref().map(|c| c as &(dyn Error + 'static))
    }
}

/// An error returned by the agent: a code, a message and the chain of causes.
///
/// It implements [`std::error::Error`] with `source()` walking the chain, so a host that wraps it
/// (`anyhow`, thiserror `#[source]`) prints the guest's causes just like local ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// The kind of failure.
    pub code: Code,
    /// The top-level message (lowercase, no final period, with the facts).
    pub message: String,
    /// The first cause, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Box<RemoteCause>>,
}

impl RemoteError {
    /// An error with no cause.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RemoteError {
            code,
            message: message.into(),
            cause: None,
        }
    }

    /// Turns a local error into a remote one: `err`'s `Display` becomes the message and each
    /// `source()` below it becomes a [`RemoteCause`], in order.
    pub fn from_error(code: Code, err: &(dyn Error + 'static)) -> Self {
        let messages: Vec<String> = vessel_error::causes(err)
            .skip(1)
            .map(|e| e.to_string())
            .collect();
        let cause = messages.into_iter().rev().fold(None, |cause, message| {
            Some(Box::new(RemoteCause { message, cause }))
        });
        RemoteError {
            code,
            message: err.to_string(),
            cause,
        }
    }

    /// The messages of the whole chain, this error's first.
    pub fn chain(&self) -> Vec<&str> {
        let mut out = vec![self.message.as_str()];
        let mut cur = self.cause.as_deref();
        while let Some(c) = cur {
            out.push(&c.message);
            cur = c.cause.as_deref();
        }
        out
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for RemoteError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause.as_deref().map(|c| c as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("create container c1")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("mount proc on /proc")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn cause_chain_survives_the_wire() {
        let local = Outer(Middle(std::io::Error::from_raw_os_error(libc_eperm())));
        let remote = RemoteError::from_error(Code::PermissionDenied, &local);
        let json = serde_json::to_string(&remote).unwrap();
        let back: RemoteError = serde_json::from_str(&json).unwrap();
        assert_eq!(back, remote);
        assert_eq!(back.code, Code::PermissionDenied);
        let chain = back.chain();
        assert_eq!(chain[0], "create container c1");
        assert_eq!(chain[1], "mount proc on /proc");
        assert!(chain[2].starts_with("Operation not permitted"), "{chain:?}");
        // source() walks the same chain.
        let mut n = 0;
        let mut cur: Option<&dyn Error> = Some(&back);
        while let Some(e) = cur {
            n += 1;
            cur = e.source();
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn codes_have_stable_wire_names() {
        assert_eq!(
            serde_json::to_string(&Code::FailedPrecondition).unwrap(),
            "\"failed_precondition\""
        );
        assert_eq!(
            serde_json::to_string(&Code::NotFound).unwrap(),
            "\"not_found\""
        );
    }

    fn libc_eperm() -> i32 {
        1
    }
}
