//! How the vsock device is served: on the VMM's device thread ([`Serving::EventLoop`]). It
//! watches the three queue eventfds (KVM signals them on a guest kick of QueueNotify) and the
//! muxer's epoll fd (host sockets, the Unix socket's clients and requests from
//! [`super::VsockHandle`]s); each event is a short, non-blocking pass over the queues or the
//! host sockets.

use vmm_sys_util::eventfd::EventFd;

use super::device::Vsock;
use crate::event::{EventHandler, EventSource, Serving};

/// Id of the muxer's epoll fd among the event sources; ids below it are queue indexes.
const BACKEND: u32 = 3;

impl EventHandler for Vsock {
    fn serving(&self) -> Serving {
        Serving::EventLoop
    }

    fn queue_events(&self) -> Vec<(u16, &EventFd)> {
        (0u16..).zip(&self.queue_evts).collect()
    }

    fn event_sources(&self) -> Vec<EventSource> {
        use std::os::fd::AsRawFd;
        let queues = (0u32..).zip(&self.queue_evts).map(|(id, e)| EventSource {
            fd: e.as_raw_fd(),
            id,
        });
        let backend = EventSource {
            fd: self.backend_fd(),
            id: BACKEND,
        };
        queues.chain(std::iter::once(backend)).collect()
    }

    /// A queue kick is consumed and, once the driver has activated the device, served; a ready
    /// backend is served whether or not the device is active (the muxer still answers host
    /// requests, and RX waits for buffers).
    fn handle_event(&mut self, id: u32) {
        if id == BACKEND {
            self.process_backend();
        } else if let Some(e) = self.queue_evts.get(id as usize) {
            let _ = e.read();
            if self.is_activated() {
                self.process_queue(id as usize);
            }
        }
    }

    /// Closes the host side (see [`Vsock::close`]).
    fn shutdown(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::virtio::vsock::device::{RX_QUEUE, TX_QUEUE};
    use crate::virtio::vsock::packet::{op, HDR_SIZE};
    use crate::virtio::vsock::test_utils::{ops, Driver};
    use crate::virtio::VirtioDevice;

    #[test]
    fn the_device_thread_watches_each_queue_kick_and_the_backend() {
        let d = Driver::new();
        assert_eq!(d.dev.serving(), Serving::EventLoop);
        let sources = d.dev.event_sources();
        let ids: Vec<u32> = sources.iter().map(|s| s.id).collect();
        assert_eq!(ids, [0, 1, 2, BACKEND]);
        assert_eq!(sources[3].fd, d.dev.backend_fd());
        let kicks = d.dev.queue_events();
        assert_eq!(kicks.len(), 3);
        for ((q, e), s) in kicks.iter().zip(&sources) {
            assert_eq!((u32::from(*q), e.as_raw_fd()), (s.id, s.fd));
        }
    }

    #[test]
    fn a_kick_on_a_queue_eventfd_is_served_as_a_queue_notify_once_activated() {
        let mut d = Driver::new();
        let listener = d.dev.handle().listen(5001).unwrap();
        let hdr = Driver::hdr(1234, 5001, op::REQUEST, 4096, 0);
        let h = d.alloc(&hdr.to_bytes());
        d.add_chain(TX_QUEUE, &[(h, HDR_SIZE as u32, false)]);
        d.dev.queue_evts[TX_QUEUE].write(1).unwrap();
        d.dev.handle_event(TX_QUEUE as u32);
        assert!(d.dev.queue_evts[TX_QUEUE].read().is_err(), "kick consumed");
        d.give_rx(1, 4096);
        assert_eq!(ops(&d.recv()), vec![op::RESPONSE]);
        listener
            .accept_timeout(std::time::Duration::from_secs(1))
            .unwrap();

        // After a driver reset a kick is consumed and nothing is served.
        d.dev.reset();
        assert!(!d.dev.is_activated());
        d.dev.queue_evts[RX_QUEUE].write(1).unwrap();
        d.dev.handle_event(RX_QUEUE as u32);
        assert!(d.dev.queue_evts[RX_QUEUE].read().is_err(), "kick consumed");
    }
}
