//! virtio-vsock served in user space (virtio 1.2, 5.10): guest CID from the config, host CID 2,
//! stream sockets only. Files: [`device`] (queues and the virtio interface), [`event_handler`]
//! (how the VMM serves it: on its device thread), [`packet`] (header
//! and descriptor-chain parsing), [`muxer`] (connections and credit), [`uds_bridge`] (the Unix
//! socket's `CONNECT <port>` clients), [`host`] (the host-side API the runtime uses).

pub mod device;
pub mod event_handler;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod host;
pub mod muxer;
pub mod packet;
#[cfg(any(test, feature = "fuzzing"))]
pub mod test_utils;
#[cfg(test)]
mod tests;
pub mod uds_bridge;

pub use device::Vsock;
pub use host::{VsockHandle, VsockListener};
