//! The interface between the VMM's MMIO dispatch and a device: guest loads and stores at an
//! offset inside the device's window.

/// A device reachable by guest MMIO.
pub trait MmioDevice: Send {
    /// Guest load of `data.len()` bytes at `offset` in the device window.
    fn mmio_read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest store of `data` at `offset` in the device window.
    fn mmio_write(&mut self, offset: u64, data: &[u8]);
}
