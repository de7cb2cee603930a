//! How the virtio-fs device is served: on a worker thread of its own ([`Serving::OwnThread`],
//! `vessel-fs-<tag>`, started by [`Fs::new`]), because a FUSE request may block on the host file
//! system and must not hold up the VMM's device thread. The thread sleeps on the device's one
//! kick eventfd, which the VMM registers as the KVM ioeventfd of QueueNotify for both queues, so
//! a guest kick wakes it with no vCPU exit and no hop through the device thread; commands from
//! the device (activate, reset, stop) come in its one-command [`Mailbox`] with a kick.

use std::io;
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::device::{Command, Mailbox};
use super::{FileServer, Fs, HIPRIO_QUEUE, REQUEST_QUEUE};
use crate::event::{EventHandler, Serving};
use crate::virtio::{VirtioInterrupt, INT_USED_RING};

impl EventHandler for Fs {
    fn serving(&self) -> Serving {
        Serving::OwnThread
    }

    /// The kick eventfd for both queues: a kick of either has the thread serve both.
    fn queue_events(&self) -> Vec<(u16, &EventFd)> {
        [HIPRIO_QUEUE, REQUEST_QUEUE]
            .into_iter()
            .map(|q| (q as u16, self.queue_evt()))
            .collect()
    }

    /// Stops the serving thread and joins it ([`Fs::stop`]).
    fn shutdown(&mut self) {
        self.stop();
    }
}

/// The serving thread's loop: wait for a kick, apply the device's latest command, serve both
/// queues. Returns `Ok` on [`Command::Stop`] and the error when waiting for a kick fails other
/// than by `EINTR`.
pub(super) fn serve(server: &FileServer, kick: &EventFd, commands: &Mailbox) -> io::Result<()> {
    let mut active: Option<(GuestMemoryMmap, Arc<VirtioInterrupt>, Vec<Queue>)> = None;
    loop {
        wait_kick(kick)?;
        if let Some(c) = commands.take() {
            match c {
                Command::Activate {
                    mem,
                    interrupt,
                    queues,
                } => active = Some((mem, interrupt, queues)),
                Command::Reset => active = None,
                Command::Stop => return Ok(()),
            }
        }
        let Some((mem, interrupt, queues)) = active.as_mut() else {
            continue;
        };
        let mut notify = || interrupt.signal(INT_USED_RING);
        for q in [HIPRIO_QUEUE, REQUEST_QUEUE] {
            if let Err(e) = server.process_queue(mem, &mut queues[q], &mut notify) {
                log::error!("virtio-fs queue {q}: {e}");
            }
        }
    }
}

/// Blocks until the kick eventfd has been written (and clears it). The eventfd is blocking, and
/// a signal whose handler lacks `SA_RESTART` (vmm-sys-util installs the vCPU kick handler with
/// `SA_SIGINFO` only) makes that `read(2)` fail with `EINTR` when it lands on this thread;
/// `EventFd::read` reads through `Read::read_exact`, which retries `EINTR` itself (test
/// `a_signal_while_waiting_for_a_kick_does_not_end_serving`), so an error here is a real one.
fn wait_kick(kick: &EventFd) -> io::Result<()> {
    kick.read().map(drop)
}
