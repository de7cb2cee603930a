//! Interrupt lines as devices see them.
//!
//! A device raises its line through the [`Interrupt`] trait; the VMM backs it with an `EventFd`
//! registered as a KVM irqfd (kernel doc: Documentation/virt/kvm/api.rst, "KVM_IRQFD"), so a
//! trigger is one `write(2)` and no vCPU exit.

use std::io;

use vmm_sys_util::eventfd::EventFd;

/// Something that can raise an interrupt line.
pub trait Interrupt: Send + Sync {
    /// Raises the line once (edge).
    fn trigger(&self) -> io::Result<()>;
}

/// An interrupt line backed by an `EventFd` (an irqfd in the VMM).
#[derive(Debug)]
pub struct IrqLine(pub EventFd);

impl IrqLine {
    /// Creates a line on a new non-blocking `EventFd`.
    pub fn new() -> io::Result<Self> {
        Ok(Self(EventFd::new(libc::EFD_NONBLOCK)?))
    }

    /// Reads and clears the number of triggers since the last call (tests use this).
    pub fn take_count(&self) -> u64 {
        self.0.read().unwrap_or(0)
    }
}

impl Interrupt for IrqLine {
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

impl vm_superio::Trigger for IrqLine {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}
