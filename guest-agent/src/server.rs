//! Listeners and connection loops for the control and stdio ports.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use vessel_protocol::{
    read_message, write_message, RemoteError, RequestEnvelope, Response, ResponseEnvelope,
    StdioHeader,
};

use crate::service::Service;

/// A listening socket: AF_VSOCK in the guest, a Unix socket for native runs and tests.
#[derive(Debug)]
pub enum Listener {
    /// AF_VSOCK.
    Vsock(OwnedFd),
    /// A Unix stream socket.
    Unix(UnixListener),
}

impl Listener {
    /// Listens on vsock `port` for any CID.
    ///
    /// # Errors
    /// socket, bind or listen failed.
    pub fn vsock(port: u32) -> io::Result<Self> {
        use nix::sys::socket::{
            bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
        };
        let fd = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &VsockAddr::new(libc::VMADDR_CID_ANY, port),
        )?;
        listen(&fd, Backlog::new(64).map_err(io::Error::from)?)?;
        Ok(Listener::Vsock(fd))
    }

    /// Listens on a Unix socket at `path` (replacing a stale one).
    ///
    /// # Errors
    /// bind failed.
    pub fn unix(path: &Path) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        Ok(Listener::Unix(UnixListener::bind(path)?))
    }

    /// Accepts one connection. A vsock connection is wrapped in a `UnixStream`: only `read`,
    /// `write` and `shutdown` are used on it, which are the same system calls for both families.
    ///
    /// Only the host may talk to the agent: a vsock connection whose peer is not the host's CID
    /// (a process inside the guest, through loopback or the guest's own CID) is closed at once,
    /// unanswered, and the next one is awaited ([`host_peer`], [`refused`]).
    ///
    /// # Errors
    /// accept failed.
    pub fn accept(&self) -> io::Result<UnixStream> {
        match self {
            Listener::Unix(l) => Ok(l.accept()?.0),
            Listener::Vsock(fd) => loop {
                let raw = nix::sys::socket::accept4(
                    std::os::fd::AsRawFd::as_raw_fd(fd),
                    nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                )?;
                // SAFETY: accept4 returned a new connected socket fd that nothing else owns.
                let conn = unsafe { OwnedFd::from_raw_fd(raw) };
                let peer = nix::sys::socket::getpeername::<nix::sys::socket::VsockAddr>(raw)
                    .map(|a| (a.cid(), a.port()));
                match peer {
                    Ok((cid, _)) if host_peer(cid) => return Ok(UnixStream::from(conn)),
                    Ok((cid, port)) => refused(&format!("CID {cid} port {port}")),
                    Err(e) => refused(&format!("a peer whose address cannot be read ({e})")),
                }
                // `conn` is dropped here: the peer sees the connection reset, and nothing of the
                // protocol (not even the hello) was sent.
            },
        }
    }
}

/// Whether a vsock peer may speak the agent's protocol: the host (CID 2) alone. Processes in
/// the guest reach the agent's ports only through vsock loopback (CID 1, or the guest's own
/// CID), which the guest kernel is built without; this is the agent's own check all the same.
pub fn host_peer(cid: u32) -> bool {
    cid == libc::VMADDR_CID_HOST
}

/// Logs a refused connection: the first one, then one in 1,024 with the running count (a
/// container probing the agent in a loop must not flood the console or the host's log).
fn refused(peer: &str) {
    static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if n % 1024 == 0 {
        log::warn!(
            "refused a vsock connection from {peer}: only the host may talk to the agent \
             ({} refused so far)",
            n + 1
        );
    }
}

fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        log::error!("spawn {name} thread: {e}");
    }
}

/// Serves one control connection until the host closes it.
fn serve_control(service: Arc<Service>, mut conn: UnixStream, on_shutdown: fn()) {
    let hello = ResponseEnvelope {
        id: 0,
        result: Ok(Response::Hello(service.hello().clone())),
    };
    if write_message(&mut conn, &hello).is_err() {
        return;
    }
    loop {
        let env: RequestEnvelope = match read_message(&mut conn) {
            Ok(Some(env)) => env,
            Ok(None) => return,
            Err(e) => {
                log::warn!("control connection: {e}");
                return;
            }
        };
        let result = service.handle(env.request);
        if let Err(e) = &result {
            log::warn!("request {} failed: {:?}", env.id, e.chain());
        }
        let reply = ResponseEnvelope { id: env.id, result };
        if write_message(&mut conn, &reply).is_err() {
            return;
        }
        if service.shutdown_requested() {
            on_shutdown();
        }
    }
}

/// Serves one stdio connection: header, acknowledgement, then the relay.
fn serve_stdio(service: Arc<Service>, mut conn: UnixStream) {
    let header: StdioHeader = match read_message(&mut conn) {
        Ok(Some(h)) => h,
        _ => return,
    };
    if let Err((e, mut conn)) = service.stdio.attach(&header, conn) {
        let nack: Result<(), RemoteError> = Err(e);
        let _ = write_message(&mut conn, &nack);
    }
}

/// Accepts forever on both listeners (each connection gets its own thread). `on_shutdown` runs
/// after a `Shutdown` request has been answered.
pub fn serve(service: Arc<Service>, control: Listener, stdio: Listener, on_shutdown: fn()) -> ! {
    let s2 = service.clone();
    spawn_named("stdio-accept", move || loop {
        match stdio.accept() {
            Ok(c) => {
                let s = s2.clone();
                spawn_named("stdio-conn", move || serve_stdio(s, c));
            }
            Err(e) => log::warn!("accept stdio: {e}"),
        }
    });
    loop {
        match control.accept() {
            Ok(c) => {
                let s = service.clone();
                spawn_named("control", move || serve_control(s, c, on_shutdown));
            }
            Err(e) => log::warn!("accept control: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_peer;

    #[test]
    fn only_the_host_cid_is_served() {
        assert!(host_peer(2));
        // VMADDR_CID_HYPERVISOR, VMADDR_CID_LOCAL (loopback), the guest's own CID, another
        // guest's, and VMADDR_CID_ANY.
        for cid in [0, 1, 3, 4, 1000, u32::MAX] {
            assert!(!host_peer(cid), "CID {cid} must be refused");
        }
    }
}
