//! A minimal i8042 keyboard controller, present for one reason: with `reboot=k` and no ACPI, the
//! Linux guest powers off and reboots by pulsing the CPU reset line through command `0xFE` on port
//! 0x64 (arch/x86/kernel/reboot.c, `BOOT_KBD`). [`I8042::write`] reports that as
//! [`I8042Event::Reset`], which the VMM turns into a guest shutdown.
//!
//! Enough of the controller protocol is modelled for the kernel's i8042 driver to probe it
//! without long timeouts: read/write of the command byte (0x20/0x60), self test (0xAA -> 0x55),
//! interface test (0xAB -> 0x00) and enable/disable commands.

use std::collections::VecDeque;

/// Data port (output buffer reads, command parameters).
pub const I8042_DATA_PORT: u16 = 0x60;
/// Status (read) and command (write) port.
pub const I8042_STATUS_PORT: u16 = 0x64;

const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM_FLAG: u8 = 0x04;
const STATUS_LAST_WAS_COMMAND: u8 = 0x08;
const STATUS_NOT_INHIBITED: u8 = 0x10;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xAA;
const CMD_KBD_TEST: u8 = 0xAB;
const CMD_PULSE_RESET: u8 = 0xFE;

/// What a port write asks of the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum I8042Event {
    /// Nothing beyond the register update.
    None,
    /// The guest pulsed the reset line: shut the VM down.
    Reset,
}

/// Controller state: the command byte, a pending multi-byte command and the output buffer.
#[derive(Debug)]
pub struct I8042 {
    ctr: u8,
    pending: Option<u8>,
    last_was_command: bool,
    out: VecDeque<u8>,
}

impl Default for I8042 {
    fn default() -> Self {
        Self::new()
    }
}

impl I8042 {
    /// A controller after power-on: keyboard interrupt disabled, system flag set.
    pub fn new() -> Self {
        Self {
            ctr: 0x44,
            pending: None,
            last_was_command: false,
            out: VecDeque::new(),
        }
    }

    /// Guest `in` from `port` (0x60 or 0x64); other ports read as 0xff.
    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            I8042_STATUS_PORT => {
                let mut s = STATUS_SYSTEM_FLAG | STATUS_NOT_INHIBITED;
                if !self.out.is_empty() {
                    s |= STATUS_OUTPUT_FULL;
                }
                if self.last_was_command {
                    s |= STATUS_LAST_WAS_COMMAND;
                }
                s
            }
            I8042_DATA_PORT => self.out.pop_front().unwrap_or(0),
            _ => 0xff,
        }
    }

    /// Guest `out` of `value` to `port`.
    pub fn write(&mut self, port: u16, value: u8) -> I8042Event {
        match port {
            I8042_STATUS_PORT => {
                self.last_was_command = true;
                self.pending = None;
                match value {
                    CMD_READ_CTR => self.push(self.ctr),
                    CMD_WRITE_CTR => self.pending = Some(value),
                    CMD_SELF_TEST => self.push(0x55),
                    CMD_KBD_TEST => self.push(0x00),
                    CMD_PULSE_RESET => return I8042Event::Reset,
                    _ => {}
                }
            }
            I8042_DATA_PORT => {
                self.last_was_command = false;
                // Anything but a command parameter is a byte for the keyboard itself: no
                // keyboard is attached, so it gets no answer.
                if self.pending.take() == Some(CMD_WRITE_CTR) {
                    self.ctr = value;
                }
            }
            _ => {}
        }
        I8042Event::None
    }

    fn push(&mut self, b: u8) {
        // Bounded like the real one-byte buffer plus a little slack.
        if self.out.len() < 16 {
            self.out.push_back(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_is_reported() {
        let mut k = I8042::new();
        assert_eq!(k.write(I8042_STATUS_PORT, 0xAD), I8042Event::None);
        assert_eq!(k.write(I8042_STATUS_PORT, 0xFE), I8042Event::Reset);
    }

    #[test]
    fn command_byte_round_trips_and_self_test_answers() {
        let mut k = I8042::new();
        assert_eq!(k.read(I8042_STATUS_PORT) & STATUS_OUTPUT_FULL, 0);
        k.write(I8042_STATUS_PORT, CMD_WRITE_CTR);
        k.write(I8042_DATA_PORT, 0x65);
        k.write(I8042_STATUS_PORT, CMD_READ_CTR);
        assert_eq!(k.read(I8042_STATUS_PORT) & STATUS_OUTPUT_FULL, 1);
        assert_eq!(k.read(I8042_DATA_PORT), 0x65);
        k.write(I8042_STATUS_PORT, CMD_SELF_TEST);
        assert_eq!(k.read(I8042_DATA_PORT), 0x55);
        assert_eq!(k.read(I8042_STATUS_PORT) & STATUS_OUTPUT_FULL, 0);
    }
}
