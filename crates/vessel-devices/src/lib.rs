//! Vessel's device models, with no KVM dependency.
//!
//! Every device is a state machine whose I/O is injected: interrupts go through [`irq::Interrupt`]
//! (an `EventFd` registered as a KVM irqfd in the VMM, a plain `EventFd` in tests), guest memory is
//! a `vm_memory::GuestMemoryMmap`, and guest-controlled parsing lives in pure functions that never
//! panic on malformed input.
//!
//! A device plugs into the VMM through [`event::EventHandler`], implemented in its folder's
//! `event_handler.rs`: which eventfds a guest kick signals, whether the VMM's device thread serves
//! it or it has a thread of its own, and what it does at teardown.
#![warn(missing_docs)]

pub mod bus;
pub mod event;
pub mod irq;
pub mod legacy;
pub mod virtio;
