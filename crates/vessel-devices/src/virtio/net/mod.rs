//! virtio-net (virtio 1.2, 5.1) over a host tap: one RX and one TX queue, a fixed MAC, link up,
//! mergeable RX buffers, checksum and TCP segmentation offloads both ways. Files: [`device`]
//! (queues, features, config space, the moves between queues and backend), [`packet`] (checking
//! and copying descriptor chains), [`tap`] (the host end: `/dev/net/tun`), [`event_handler`]
//! (how the VMM serves it: on its device thread).

pub mod device;
pub mod event_handler;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod packet;
pub mod tap;
#[cfg(any(test, feature = "fuzzing"))]
pub mod test_utils;
#[cfg(test)]
mod tests;

pub use device::{Net, NetBackend, NetStats};
pub use tap::{Tap, TapError};
