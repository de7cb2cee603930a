//! How the virtio-net device is served: on the VMM's device thread ([`Serving::EventLoop`]). It
//! watches the two queue eventfds (KVM signals them on a guest kick of QueueNotify) and the
//! device's own epoll fd ([`Net::event_fd`]), which holds the tap only while RX buffers wait
//! to be filled; each event is a short, non-blocking pass over a queue or the tap.

use std::os::fd::AsRawFd;

use vmm_sys_util::eventfd::EventFd;

use super::device::{Net, NetBackend};
use crate::event::{EventHandler, EventSource, Serving};

/// Id of the device's epoll fd among the event sources; ids below it are queue indexes.
pub const BACKEND: u32 = 2;

impl<B: NetBackend> EventHandler for Net<B> {
    fn serving(&self) -> Serving {
        Serving::EventLoop
    }

    fn queue_events(&self) -> Vec<(u16, &EventFd)> {
        (0u16..).zip(&self.queue_evts).collect()
    }

    fn event_sources(&self) -> Vec<EventSource> {
        let queues = (0u32..).zip(&self.queue_evts).map(|(id, e)| EventSource {
            fd: e.as_raw_fd(),
            id,
        });
        let backend = EventSource {
            fd: self.event_fd(),
            id: BACKEND,
        };
        queues.chain(std::iter::once(backend)).collect()
    }

    /// A queue kick is consumed and, once the driver has activated the device, served; a
    /// readable backend is served (it is only watched while the device is active).
    fn handle_event(&mut self, id: u32) {
        if id == BACKEND {
            self.process_rx();
        } else if let Some(e) = self.queue_evts.get(id as usize) {
            let _ = e.read();
            if self.is_activated() {
                self.process_queue(id as usize);
            }
        }
    }

    /// Closes the tap (see [`Net::close`]).
    fn shutdown(&mut self) {
        self.close();
    }
}
