//! The VMM's device thread (`vmm-devices`): one epoll loop over the event sources of every device
//! served on it ([`Serving::EventLoop`]: the queue ioeventfds KVM signals on a guest kick, so a
//! kick costs no exit to user space on the vCPU thread, and whatever else the device watches,
//! such as the vsock backend's host sockets). Each ready source goes to its device's
//! [`EventHandler::handle_event`] under the device's lock, until the loop is told to stop. The
//! loop names no device type: a device lists its sources itself.
//!
//! [`Serving::EventLoop`]: vessel_devices::event::Serving::EventLoop

use std::io;
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use vessel_devices::event::EventHandler;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::seccomp::{Filters, ThreadKind};
use crate::VmmError;

/// A device as the VMM shares it between vCPU threads (MMIO), the device thread and teardown.
pub type SharedDevice = Arc<Mutex<dyn EventHandler>>;

/// The stop eventfd's token; a device's source `id` of device `i` is `i << 32 | id`.
const TOKEN_STOP: u64 = u64::MAX;

/// The running device thread.
pub struct EventLoop {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl EventLoop {
    /// Starts the thread serving the event sources of `devices` (each read once, now). With
    /// `filters`, the thread installs the device thread's seccomp filter before its first event
    /// and this returns once it has.
    ///
    /// # Errors
    /// The thread or its epoll could not be set up, or its filter not installed.
    pub fn spawn(
        devices: Vec<SharedDevice>,
        filters: Option<Arc<Filters>>,
    ) -> Result<Self, VmmError> {
        let spawn_err = |source| VmmError::SpawnThread {
            name: "vmm-devices".into(),
            source,
        };
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(spawn_err)?;
        let epoll = Epoll::new().map_err(spawn_err)?;
        let add = |fd: i32, token: u64| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(stop.as_raw_fd(), TOKEN_STOP).map_err(spawn_err)?;
        for (i, dev) in devices.iter().enumerate() {
            for s in lock(dev).event_sources() {
                add(s.fd, token(i, s.id)).map_err(spawn_err)?;
            }
        }
        let (confined_tx, confined) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("vmm-devices".into())
            .spawn(move || {
                let r = match &filters {
                    Some(f) => f.install(ThreadKind::Devices),
                    None => Ok(()),
                };
                let ok = r.is_ok();
                let _ = confined_tx.send(r);
                if ok {
                    run(epoll, devices);
                }
            })
            .map_err(spawn_err)?;
        let confined = confined.recv();
        let mut el = Self {
            stop,
            thread: Some(thread),
        };
        match confined {
            Ok(Ok(())) => Ok(el),
            Ok(Err(source)) => {
                el.stop();
                Err(VmmError::Seccomp {
                    thread: "vmm-devices".into(),
                    source,
                })
            }
            Err(_) => {
                el.stop();
                Err(spawn_err(io::Error::other(
                    "the thread ended during set-up",
                )))
            }
        }
    }

    /// Stops the thread and joins it.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.stop.write(1);
            let _ = t.join();
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The epoll token of source `id` of the device at `index`.
fn token(index: usize, id: u32) -> u64 {
    (index as u64) << 32 | u64::from(id)
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(epoll: Epoll, devices: Vec<SharedDevice>) {
    let mut events = [EpollEvent::default(); 16];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("device event loop: epoll_wait failed: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_STOP => return,
                t => {
                    if let Some(dev) = devices.get((t >> 32) as usize) {
                        lock(dev).handle_event(t as u32);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;
    use vessel_devices::event::{EventSource, Serving};

    /// A device with two eventfds that reports which id fired.
    struct Probe {
        evts: [EventFd; 2],
        seen: mpsc::Sender<u32>,
    }

    impl EventHandler for Probe {
        fn serving(&self) -> Serving {
            Serving::EventLoop
        }
        fn queue_events(&self) -> Vec<(u16, &EventFd)> {
            Vec::new()
        }
        fn event_sources(&self) -> Vec<EventSource> {
            (7u32..)
                .zip(&self.evts)
                .map(|(id, e)| EventSource {
                    fd: e.as_raw_fd(),
                    id,
                })
                .collect()
        }
        fn handle_event(&mut self, id: u32) {
            let _ = self.evts[id as usize - 7].read();
            self.seen.send(id).unwrap();
        }
        fn shutdown(&mut self) {}
    }

    fn probe() -> (Arc<Mutex<Probe>>, mpsc::Receiver<u32>) {
        let (tx, rx) = mpsc::channel();
        let evts = [(); 2].map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap());
        (Arc::new(Mutex::new(Probe { evts, seen: tx })), rx)
    }

    #[test]
    fn each_ready_source_reaches_its_own_device_with_its_id() {
        let (a, seen_a) = probe();
        let (b, seen_b) = probe();
        let mut el = EventLoop::spawn(vec![a.clone(), b.clone()], None).unwrap();
        let wait = Duration::from_secs(5);
        lock(&b).evts[1].write(1).unwrap();
        assert_eq!(seen_b.recv_timeout(wait).unwrap(), 8);
        lock(&a).evts[0].write(1).unwrap();
        assert_eq!(seen_a.recv_timeout(wait).unwrap(), 7);
        el.stop();
        assert!(seen_a.try_recv().is_err() && seen_b.try_recv().is_err());
    }
}
