//! The VMM's device thread: one epoll loop that serves the virtio-vsock queue notifications
//! (KVM ioeventfds on QueueNotify, so a guest kick costs no exit to user space on the vCPU
//! thread) and the vsock backend's host sockets, until told to stop.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vessel_devices::virtio::mmio::MmioTransport;
use vessel_devices::virtio::vsock::Vsock;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

const TOKEN_STOP: u64 = 100;
const TOKEN_BACKEND: u64 = 101;

/// The running device thread.
pub struct EventLoop {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

/// The vsock device as the VMM shares it between vCPU threads (MMIO) and the device thread.
pub type SharedVsock = Arc<Mutex<MmioTransport<Vsock>>>;

impl EventLoop {
    /// Starts the thread serving `vsock`, whose queue `i` is notified through `queue_evts[i]`.
    pub fn spawn(vsock: SharedVsock, queue_evts: Vec<EventFd>) -> io::Result<Self> {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        let add = |fd: i32, token: u64| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(stop.as_raw_fd(), TOKEN_STOP)?;
        for (i, e) in queue_evts.iter().enumerate() {
            add(e.as_raw_fd(), i as u64)?;
        }
        let backend_fd = lock(&vsock).device().backend_fd();
        add(backend_fd, TOKEN_BACKEND)?;
        let thread = std::thread::Builder::new()
            .name("vmm-devices".into())
            .spawn(move || run(epoll, vsock, queue_evts))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(epoll: Epoll, vsock: SharedVsock, queue_evts: Vec<EventFd>) {
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
                TOKEN_BACKEND => lock(&vsock).device_mut().process_backend(),
                i => {
                    if let Some(e) = queue_evts.get(i as usize) {
                        let _ = e.read();
                        let mut t = lock(&vsock);
                        if t.is_activated() {
                            t.device_mut().process_queue(i as usize);
                        }
                    }
                }
            }
        }
    }
}
