//! Legacy PC devices on the port I/O bus: the 8250 serial console and the i8042 keyboard
//! controller (used only for the guest's reset request).

pub mod i8042;
pub mod serial;

pub use i8042::{I8042, I8042_DATA_PORT, I8042_STATUS_PORT};
pub use serial::{SerialConsole, COM1_BASE, COM1_IRQ, COM1_PORTS};
