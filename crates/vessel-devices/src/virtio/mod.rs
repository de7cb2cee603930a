//! virtio devices over the MMIO transport (virtio 1.2, sections 2, 4.2 and 5).
//!
//! [`mmio::MmioTransport`] is the device-independent register state machine; a device plugs in
//! through [`VirtioDevice`]. Queues are `virtio-queue`'s split `Queue`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use crate::irq::Interrupt;

pub mod fs;
pub mod mmio;
pub mod net;
pub mod vsock;

/// `VIRTIO_F_VERSION_1` (virtio 1.2, 6): the device is a modern (non-legacy) device.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Feature bit `VIRTIO_RING_F_EVENT_IDX` (virtio 1.2, 6): the `used_event` and `avail_event`
/// fields of the split rings suppress interrupts and notifications (2.7.10).
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// InterruptStatus bit: a used buffer was added to a queue (virtio 1.2, 4.2.2).
pub const INT_USED_RING: u32 = 1;
/// InterruptStatus bit: the configuration changed.
pub const INT_CONFIG: u32 = 2;

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    /// The driver enabled a different number of queues than the device needs.
    #[error("device needs {want} queues, driver set up {got}")]
    QueueCount {
        /// Required.
        want: usize,
        /// Provided.
        got: usize,
    },
    /// A queue's addresses or size are not valid in guest memory.
    #[error("queue {index} is not valid in guest memory")]
    InvalidQueue {
        /// Queue index.
        index: usize,
    },
}

/// The interrupt of one virtio-mmio device: the InterruptStatus register plus its line.
pub struct VirtioInterrupt {
    status: AtomicU32,
    line: Box<dyn Interrupt>,
}

impl VirtioInterrupt {
    /// Wraps `line`.
    pub fn new(line: Box<dyn Interrupt>) -> Arc<Self> {
        Arc::new(Self {
            status: AtomicU32::new(0),
            line,
        })
    }

    /// Sets InterruptStatus bit `bit` and raises the line.
    pub fn signal(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.line.trigger() {
            log::warn!("cannot raise virtio interrupt: {e}");
        }
    }

    /// Current InterruptStatus.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears the acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// A virtio device model behind a transport.
pub trait VirtioDevice: Send {
    /// Device ID (virtio 1.2, 5: 19 for vsock).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver.
    fn features(&self) -> u64;
    /// Records the features the driver accepted (a subset of [`Self::features`]).
    fn ack_features(&mut self, features: u64);
    /// Reads device configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device configuration space at `offset`.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with the driver's queues (on DRIVER_OK).
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), VirtioError>;
    /// Returns the device to its pre-activation state (driver wrote 0 to Status).
    fn reset(&mut self);
    /// The driver notified queue `index` (when no ioeventfd caught the write).
    fn queue_notify(&mut self, index: u16);
}
