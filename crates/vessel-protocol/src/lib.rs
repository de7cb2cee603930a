//! Host <-> guest agent wire format for Vessel.
//!
//! Everything that crosses the vsock between the host (the monitor, `vessel exec`) and the guest
//! agent (`vessel-agent`, PID 1 in the microVM) is defined here, and `docs/agent-protocol.md`
//! describes the same thing in prose:
//!
//! - [`frame`]: versioned, length-prefixed frames with a size limit, blocking `Read`/`Write`.
//! - [`message`]: the control [`Request`]s, their [`Response`]s and the envelopes that pair them.
//! - [`status`]: typed status [`Code`]s and the [`RemoteError`] that carries its cause chain.
//! - [`stdio`]: how standard I/O streams are opened on their own vsock connections.
//! - [`network`]: the container's interfaces, addresses and routes for the guest.
//! - [`stats`]: cgroup statistics with runc's JSON key names.
//! - [`client`]: a small blocking client the host side drives the agent with.
#![warn(missing_docs)]

pub mod client;
pub mod frame;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod message;
pub mod network;
pub mod stats;
pub mod status;
pub mod stdio;

pub use client::{open_stdio, Client, ClientError};
pub use frame::{read_frame, read_message, write_frame, write_message, FrameError};
pub use message::{
    CreateContainer, ExecProcess, ExecTimings, ExitStatus, Hello, ProcessInfo, ProcessList,
    Request, RequestEnvelope, Response, ResponseEnvelope, StdioConfig,
};
pub use stats::Stats;
pub use status::{Code, RemoteCause, RemoteError};
pub use stdio::{StdioHeader, StreamKind};

/// Version of the wire format carried in every frame header. Bumped on any incompatible change
/// to the framing or the message model; a peer refuses frames of another version.
pub const PROTOCOL_VERSION: u16 = 1;

/// Guest vsock port on which the agent accepts control connections.
pub const CONTROL_PORT: u32 = 1024;

/// Guest vsock port on which the agent accepts standard I/O streams (see [`stdio`]).
pub const STDIO_PORT: u32 = 1025;

/// The host's vsock CID, as seen from the guest (`VMADDR_CID_HOST`).
pub const HOST_CID: u32 = 2;

/// Largest frame body accepted by either side, in bytes (16 MiB). Larger frames are refused
/// before any of their body is read, and a body's buffer grows only as its bytes arrive, so a
/// hostile peer cannot make the reader allocate more than this, nor much more than it sent.
pub const MAX_FRAME_LEN: u32 = 16 << 20;
