//! virtio-fs (virtio 1.2, section 5.11): a host directory shared with the guest over FUSE, served
//! in-process by the VMM with `fuse-backend-rs` (its `Server` over its `PassthroughFs`).
//!
//! - [`device`]: the [`Fs`] device (config space, queues, its serving thread).
//! - [`event_handler`]: how it is served: the serving thread's loop, on a thread of its own.
//! - [`request`]: [`FileServer`], which answers the FUSE requests of one descriptor chain.
//! - [`bound`]: the bound on the descriptors the file server holds for the guest: a request that
//!   would take it past [`bound::MAX_HELD_DESCRIPTORS`] (inodes looked up plus open handles) is
//!   answered `EMFILE`, so a guest cannot exhaust the monitor's `RLIMIT_NOFILE`.
//! - [`confine`]: the serving thread's private mount namespace whose root is the shared directory.
//! - `fuzzing` (tests and the `fuzzing` feature): the check behind the `fs_requests` fuzz target.
//!
//! The guest mounts the device with `mount -t virtiofs <tag> <dir>`. Two queues: 0 is the
//! high-priority queue (FORGET, INTERRUPT), 1 the single request queue. No DAX window and no
//! notification queue are offered.

pub mod bound;
pub mod confine;
pub mod device;
pub mod event_handler;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod request;
#[cfg(test)]
mod test_utils;

pub use device::{FailureHook, Fs, Lockdown};
pub use request::FileServer;

use std::io;
use std::path::PathBuf;

/// Device ID of a file system device (virtio 1.2, 5 "Device Types": 26).
pub const VIRTIO_ID_FS: u32 = 26;
/// Size of the `tag` field of the config space, bytes (virtio 1.2, 5.11.4): UTF-8, NUL-padded,
/// not NUL-terminated when it is 36 bytes long.
pub const TAG_LEN: usize = 36;
/// Size of the config space, bytes: `tag[36]` then `le32 num_request_queues`.
pub const CONFIG_LEN: usize = TAG_LEN + 4;
/// Request queues offered (virtio 1.2, 5.11.4 `num_request_queues`).
pub const NUM_REQUEST_QUEUES: u32 = 1;
/// Index of the high-priority queue (virtio 1.2, 5.11.2).
pub const HIPRIO_QUEUE: usize = 0;
/// Index of the (only) request queue.
pub const REQUEST_QUEUE: usize = 1;
/// Maximum size of each queue, descriptors.
pub const QUEUE_SIZE: u16 = 1024;

/// Errors of the virtio-fs device.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The tag is empty or longer than [`TAG_LEN`] bytes.
    #[error("virtio-fs tag {tag:?} is {len} bytes, must be 1..={TAG_LEN}")]
    BadTag {
        /// The tag given.
        tag: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The passthrough file system could not be opened on the shared directory.
    #[error("open shared directory {path}")]
    OpenSharedDir {
        /// The shared directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The serving thread could not be confined to the shared directory.
    #[error("confine file server to {path}: {step}")]
    Confine {
        /// The shared directory.
        path: PathBuf,
        /// The step that failed (`unshare`, `bind`, `pivot_root` ...).
        step: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The serving thread's lock-down (its seccomp filter) failed; it serves nothing.
    #[error("lock down virtio-fs thread for tag {tag}")]
    Lockdown {
        /// The device tag.
        tag: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The serving thread could not be started or died before reporting.
    #[error("start virtio-fs thread for tag {tag}")]
    StartThread {
        /// The device tag.
        tag: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Waiting for a queue notification failed with an error other than `EINTR`; the serving
    /// thread stopped (the guest's requests go unanswered).
    #[error("virtio-fs thread {thread} cannot wait for queue notifications")]
    WaitNotify {
        /// The serving thread's name (`vessel-fs-<tag>`).
        thread: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A descriptor chain does not describe valid guest memory.
    #[error("descriptor chain {head} is not valid guest memory")]
    BadChain {
        /// Head descriptor index.
        head: u16,
        /// The cause.
        #[source]
        source: fuse_backend_rs::transport::Error,
    },
    /// The guest's queue could not be read or written.
    #[error("access virtio-fs queue")]
    AccessQueue(#[source] virtio_queue::Error),
}
