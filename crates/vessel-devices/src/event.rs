//! How a device plugs into the VMM's event handling: the one interface, [`EventHandler`], through
//! which a device tells the VMM where it does its work ([`Serving`]), which eventfds a guest's
//! queue notifications should signal, which file descriptors the VMM's device thread should watch
//! for it, and what to do when one becomes readable.
//!
//! Each virtio device implements it in its folder's `event_handler.rs`; the VMM registers a
//! device with one call and never names its type. Two ways of serving exist:
//!
//! - [`Serving::EventLoop`]: the device's work runs on the VMM's device thread (`vmm-devices`),
//!   which watches the device's [`EventHandler::event_sources`] with epoll and calls
//!   [`EventHandler::handle_event`] with the source's id, holding the device's lock. The handler
//!   must not block. virtio-vsock is served so.
//! - [`Serving::OwnThread`]: the device runs a worker thread of its own that sleeps on its queue
//!   eventfds; the VMM watches nothing for it. virtio-fs is served so (a FUSE request may block
//!   on the host file system).
//!
//! Either way the VMM registers each of [`EventHandler::queue_events`] as the KVM ioeventfd of the
//! device's QueueNotify register, so a guest kick signals the eventfd without an exit to user
//! space on the vCPU thread, and calls [`EventHandler::shutdown`] at teardown, after the device
//! thread has stopped.

use std::os::fd::RawFd;

use vmm_sys_util::eventfd::EventFd;

use crate::virtio::mmio::MmioTransport;
use crate::virtio::VirtioDevice;

/// Where a device does its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// On the VMM's device thread, event by event: see the module doc.
    EventLoop,
    /// On a worker thread the device owns: the VMM only wires its queue eventfds.
    OwnThread,
}

/// A file descriptor a device wants watched for reading, and the id
/// [`EventHandler::handle_event`] is given when it is readable (the device's own numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSource {
    /// The descriptor, owned by the device and open while the device lives.
    pub fd: RawFd,
    /// What the device calls it.
    pub id: u32,
}

/// A device's events, as the VMM wires and dispatches them (see the module doc).
pub trait EventHandler: Send {
    /// Where the device does its work.
    fn serving(&self) -> Serving;

    /// For each queue a guest kick should signal without a vCPU exit, the queue index and the
    /// eventfd to signal (one eventfd may serve several queues).
    fn queue_events(&self) -> Vec<(u16, &EventFd)>;

    /// The descriptors the VMM's device thread watches for a [`Serving::EventLoop`] device, read
    /// once when the VMM starts that thread. Nothing for a device with a thread of its own.
    fn event_sources(&self) -> Vec<EventSource> {
        Vec::new()
    }

    /// Source `id` of [`Self::event_sources`] became readable: do the work it stands for,
    /// without blocking.
    fn handle_event(&mut self, id: u32) {
        let _ = id;
    }

    /// The VM is being torn down (its vCPUs and the device thread have stopped): release what
    /// the device holds for the host (connections, worker threads). The device is not used
    /// afterwards; a second call does nothing.
    fn shutdown(&mut self);
}

/// A virtio device's transport answers for the device, so the VMM can hold one object for both
/// its MMIO window and its events.
impl<D: VirtioDevice + EventHandler> EventHandler for MmioTransport<D> {
    fn serving(&self) -> Serving {
        self.device().serving()
    }

    fn queue_events(&self) -> Vec<(u16, &EventFd)> {
        self.device().queue_events()
    }

    fn event_sources(&self) -> Vec<EventSource> {
        self.device().event_sources()
    }

    fn handle_event(&mut self, id: u32) {
        self.device_mut().handle_event(id);
    }

    fn shutdown(&mut self) {
        self.device_mut().shutdown();
    }
}
