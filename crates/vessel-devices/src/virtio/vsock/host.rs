//! The host side of vsock as the runtime sees it: [`VsockHandle`] (Clone + Send) turns
//! `connect(port)` and `listen(port)` into requests for the device's [`super::muxer::Muxer`],
//! which owns every connection and splices each to a `UnixStream` whose other end the caller
//! holds.

use std::collections::HashMap;
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;

/// How long `connect` waits for the guest to answer (the driver may still be booting).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A host-initiated connection waiting to be sent to the guest.
pub(crate) struct ConnectRequest {
    pub(crate) port: u32,
    pub(crate) stream: UnixStream,
    /// Told the outcome (`Ok(local port)` or refused) when the guest answers.
    pub(crate) reply: Option<SyncSender<io::Result<u32>>>,
}

/// State shared by the handles and the muxer.
pub(crate) struct Shared {
    pub(crate) requests: Mutex<Vec<ConnectRequest>>,
    pub(crate) listeners: Mutex<HashMap<u32, Sender<UnixStream>>>,
    pub(crate) wake: EventFd,
    pub(crate) closed: AtomicBool,
}

impl Shared {
    pub(crate) fn new() -> io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            requests: Mutex::new(Vec::new()),
            listeners: Mutex::new(HashMap::new()),
            wake: EventFd::new(libc::EFD_NONBLOCK)?,
            closed: AtomicBool::new(false),
        }))
    }

    pub(crate) fn submit(&self, req: ConnectRequest) -> io::Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "vm has ended"));
        }
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(req);
        self.wake.write(1)
    }
}

/// In-process access to the guest's vsock ports.
#[derive(Clone)]
pub struct VsockHandle {
    pub(crate) shared: Arc<Shared>,
}

impl VsockHandle {
    /// Connects to guest port `port`. Blocks until the guest accepts (returns the host end of
    /// the spliced stream), refuses (`ConnectionRefused`: nothing listens there), or
    /// [`CONNECT_TIMEOUT`] passes (`TimedOut`).
    pub fn connect(&self, port: u32) -> io::Result<UnixStream> {
        self.connect_timeout(port, CONNECT_TIMEOUT)
    }

    /// [`Self::connect`] with an explicit timeout.
    pub fn connect_timeout(&self, port: u32, timeout: Duration) -> io::Result<UnixStream> {
        let (ours, theirs) = UnixStream::pair()?;
        let (tx, rx) = mpsc::sync_channel(1);
        self.shared.submit(ConnectRequest {
            port,
            stream: theirs,
            reply: Some(tx),
        })?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(_)) => Ok(ours),
            Ok(Err(e)) => Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("guest did not answer a connection to vsock port {port} in {timeout:?}"),
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "vm ended before the guest answered",
            )),
        }
    }

    /// Accepts guest-initiated connections to host port `port` (`AddrInUse` if already taken).
    pub fn listen(&self, port: u32) -> io::Result<VsockListener> {
        let mut l = self
            .shared
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if l.contains_key(&port) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("host vsock port {port} already has a listener"),
            ));
        }
        let (tx, rx) = mpsc::channel();
        l.insert(port, tx);
        Ok(VsockListener {
            port,
            rx,
            shared: self.shared.clone(),
        })
    }
}

/// Guest-initiated connections to one host port; dropping it stops listening.
pub struct VsockListener {
    port: u32,
    rx: Receiver<UnixStream>,
    shared: Arc<Shared>,
}

impl VsockListener {
    /// The host port.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Blocks until the guest connects; `NotConnected` once the VM has ended.
    pub fn accept(&self) -> io::Result<UnixStream> {
        self.rx
            .recv()
            .map_err(|_| io::Error::new(io::ErrorKind::NotConnected, "vm has ended"))
    }

    /// [`Self::accept`] giving up after `timeout` (`TimedOut`).
    pub fn accept_timeout(&self, timeout: Duration) -> io::Result<UnixStream> {
        self.rx.recv_timeout(timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no guest connection to port {} in {timeout:?}", self.port),
            ),
            mpsc::RecvTimeoutError::Disconnected => {
                io::Error::new(io::ErrorKind::NotConnected, "vm has ended")
            }
        })
    }
}

impl Drop for VsockListener {
    fn drop(&mut self) {
        self.shared
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.port);
    }
}
