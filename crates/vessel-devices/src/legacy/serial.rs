//! The 8250 UART at COM1 (ports 0x3f8..=0x3ff, IRQ 4), modelled by `vm-superio`'s `Serial`.
//!
//! Output goes to any `Write` sink (the caller's stderr, a log file, or nowhere). Input is not
//! wired: the guest console is for logs, the workload's stdio travels over vsock.

use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::Serial;

use crate::irq::IrqLine;

/// First port of COM1.
pub const COM1_BASE: u16 = 0x3f8;
/// Number of ports the UART decodes (8 registers).
pub const COM1_PORTS: u16 = 8;
/// The ISA IRQ of COM1.
pub const COM1_IRQ: u32 = 4;

/// The COM1 console: a `vm-superio` 8250 whose interrupt is an [`IrqLine`].
pub struct SerialConsole {
    uart: Serial<IrqLine, NoEvents, Box<dyn Write + Send>>,
}

impl SerialConsole {
    /// Creates the UART writing guest output to `out`, raising `irq` for THR-empty interrupts.
    pub fn new(irq: IrqLine, out: Box<dyn Write + Send>) -> Self {
        Self {
            uart: Serial::new(irq, out),
        }
    }

    /// Guest `in` from `COM1_BASE + offset` (offset 0..8).
    pub fn read(&mut self, offset: u8) -> u8 {
        self.uart.read(offset)
    }

    /// Guest `out` to `COM1_BASE + offset`; a failing sink loses the byte, never the VM.
    pub fn write(&mut self, offset: u8, value: u8) {
        if let Err(e) = self.uart.write(offset, value) {
            log::debug!("serial write at offset {offset} failed: {e:?}");
        }
    }

    /// Flushes the output sink.
    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_written_to_thr_reach_the_sink_and_raise_the_irq_when_enabled() {
        let sink = Shared::default();
        let irq = IrqLine::new().unwrap();
        let irq_fd = irq.0.try_clone().unwrap();
        let mut com1 = SerialConsole::new(irq, Box::new(sink.clone()));
        // LSR (offset 5): THR empty and transmitter empty after reset.
        assert_eq!(com1.read(5) & 0x60, 0x60);
        for b in b"hi\n" {
            com1.write(0, *b);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
        assert!(irq_fd.read().is_err(), "no interrupt while IER is 0");
        com1.write(1, 0x02); // IER: THR empty interrupt
        com1.write(0, b'x');
        assert!(irq_fd.read().unwrap() >= 1);
        // IIR (offset 2) reports the THR-empty cause (0b0010) after the write.
        assert_eq!(com1.read(2) & 0x0f, 0x02);
    }
}
