//! Device manager: the port I/O bus (COM1, i8042) and the MMIO bus (virtio-mmio slots), as seen
//! from a vCPU exit. Unclaimed ports behave like an empty ISA bus (reads return all ones, writes
//! are dropped) because Linux probes many legacy ports (0x80 delay port, CMOS, other UARTs);
//! unclaimed MMIO ends the VM with a reported reason.

use std::sync::{Arc, Mutex};

use vessel_devices::bus::MmioDevice;
use vessel_devices::legacy::i8042::I8042Event;
use vessel_devices::legacy::{SerialConsole, COM1_BASE, COM1_PORTS, I8042};
use vessel_devices::legacy::{I8042_DATA_PORT, I8042_STATUS_PORT};

/// Result of a bus access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusOutcome {
    /// A device handled it (or the empty ISA bus did).
    Done,
    /// The guest asked for a reset through the i8042.
    Reset,
    /// No device claims the MMIO address.
    Unhandled,
}

/// A device mapped at `base..base + len`.
type MmioSlot = (u64, u64, Arc<Mutex<dyn MmioDevice>>);

/// All devices of one VM, shared by the vCPU threads.
pub struct DeviceManager {
    serial: Mutex<SerialConsole>,
    i8042: Mutex<I8042>,
    mmio: Vec<MmioSlot>,
}

impl DeviceManager {
    /// A manager with the legacy devices and no MMIO devices yet.
    pub fn new(serial: SerialConsole) -> Self {
        Self {
            serial: Mutex::new(serial),
            i8042: Mutex::new(I8042::new()),
            mmio: Vec::new(),
        }
    }

    /// Maps `dev` at guest addresses `base..base + len`.
    pub fn add_mmio(&mut self, base: u64, len: u64, dev: Arc<Mutex<dyn MmioDevice>>) {
        self.mmio.push((base, len, dev));
    }

    /// Guest `in` from `port`.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) -> BusOutcome {
        if (COM1_BASE..COM1_BASE + COM1_PORTS).contains(&port) && data.len() == 1 {
            data[0] = lock(&self.serial).read((port - COM1_BASE) as u8);
        } else if (port == I8042_DATA_PORT || port == I8042_STATUS_PORT) && data.len() == 1 {
            data[0] = lock(&self.i8042).read(port);
        } else {
            data.fill(0xff);
        }
        BusOutcome::Done
    }

    /// Guest `out` to `port`.
    pub fn pio_write(&self, port: u16, data: &[u8]) -> BusOutcome {
        if (COM1_BASE..COM1_BASE + COM1_PORTS).contains(&port) && data.len() == 1 {
            lock(&self.serial).write((port - COM1_BASE) as u8, data[0]);
        } else if (port == I8042_DATA_PORT || port == I8042_STATUS_PORT)
            && data.len() == 1
            && lock(&self.i8042).write(port, data[0]) == I8042Event::Reset
        {
            return BusOutcome::Reset;
        }
        BusOutcome::Done
    }

    /// Guest load from MMIO `addr`.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> BusOutcome {
        match self.find(addr) {
            Some((base, dev)) => {
                lock(dev).mmio_read(addr - base, data);
                BusOutcome::Done
            }
            None => BusOutcome::Unhandled,
        }
    }

    /// Guest store to MMIO `addr`.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> BusOutcome {
        match self.find(addr) {
            Some((base, dev)) => {
                lock(dev).mmio_write(addr - base, data);
                BusOutcome::Done
            }
            None => BusOutcome::Unhandled,
        }
    }

    /// Flushes the console sink (at teardown).
    pub fn flush(&self) {
        lock(&self.serial).flush();
    }

    fn find(&self, addr: u64) -> Option<(u64, &Arc<Mutex<dyn MmioDevice>>)> {
        self.mmio
            .iter()
            .find(|(base, len, _)| addr >= *base && addr - *base < *len)
            .map(|(base, _, dev)| (*base, dev))
    }
}

/// Locks a device, recovering the guard if another vCPU thread panicked while holding it.
fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vessel_devices::irq::IrqLine;

    struct Echo(u8);
    impl MmioDevice for Echo {
        fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0.wrapping_add(offset as u8));
        }
        fn mmio_write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn buses_dispatch_and_report_reset_and_holes() {
        let serial = SerialConsole::new(IrqLine::new().unwrap(), Box::new(std::io::sink()));
        let mut dm = DeviceManager::new(serial);
        dm.add_mmio(0xd000_0000, 0x1000, Arc::new(Mutex::new(Echo(7))));
        let mut b = [0u8; 1];
        assert_eq!(dm.pio_read(0x80, &mut b), BusOutcome::Done);
        assert_eq!(b[0], 0xff);
        assert_eq!(dm.pio_read(0x3fd, &mut b), BusOutcome::Done);
        assert_eq!(b[0] & 0x60, 0x60, "COM1 LSR: transmitter empty");
        assert_eq!(dm.pio_write(0x64, &[0xfe]), BusOutcome::Reset);
        let mut w = [0u8; 4];
        assert_eq!(dm.mmio_read(0xd000_0010, &mut w), BusOutcome::Done);
        assert_eq!(w, [0x17; 4]);
        assert_eq!(dm.mmio_write(0xd000_0000, &[1, 0, 0, 0]), BusOutcome::Done);
        assert_eq!(dm.mmio_read(0xd000_0000, &mut w), BusOutcome::Done);
        assert_eq!(w, [1; 4]);
        assert_eq!(dm.mmio_read(0xd000_1000, &mut w), BusOutcome::Unhandled);
    }
}
