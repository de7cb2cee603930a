//! The host end of a virtio-net device: a tap interface opened through `/dev/net/tun`
//! (Documentation/networking/tuntap.rst) with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, so every
//! read and write carries one Ethernet frame preceded by the same 12-byte `virtio_net_hdr_v1`
//! the guest uses (`TUNSETVNETHDRSZ`), and GSO and checksum offloads pass through unchanged.
//!
//! The tap is found by name in the network namespace the calling thread was in when
//! [`Tap::open`] ran; when no interface has that name, a non-persistent tap is created, which
//! the kernel deletes when the last descriptor on it closes. The descriptor is non-blocking and
//! close-on-exec; reads and writes are `readv`/`writev` of one frame each.

use std::ffi::CString;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::device::NetBackend;
use super::packet::HDR_LEN;

/// Longest interface name, bytes (`IFNAMSIZ` less its NUL).
pub const MAX_TAP_NAME_LEN: usize = libc::IFNAMSIZ - 1;
const TUN_PATH: &str = "/dev/net/tun";

/// Descriptors of `/dev/net/tun` opened ahead by [`preopen`], taken by [`Tap::open`] first.
static PREOPENED: std::sync::Mutex<Vec<OwnedFd>> = std::sync::Mutex::new(Vec::new());

/// Opens `count` descriptors of `/dev/net/tun` now for the taps this process opens later
/// ([`Tap::open`] takes them before opening new ones): a process that is about to join a
/// cgroup whose device filter refuses the device (podman's pod cgroups allow only a container's
/// default devices) opens them first, as the device filter is consulted at `open` only. A tap's
/// network namespace is the one its descriptor was opened in: call this in the namespace the
/// taps belong to.
///
/// # Errors
/// [`TapError::OpenTun`] when the device cannot be opened.
pub fn preopen(count: usize) -> Result<(), TapError> {
    let mut fds = Vec::with_capacity(count);
    for _ in 0..count {
        fds.push(open_tun()?);
    }
    PREOPENED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(fds);
    Ok(())
}

fn open_tun() -> Result<OwnedFd, TapError> {
    let path = CString::new(TUN_PATH).expect("constant has no NUL");
    // SAFETY: `path` is a NUL-terminated string that outlives the call; `open` takes no other
    // pointer and its result is checked before use.
    let raw = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(TapError::OpenTun(io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a descriptor `open` just returned, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Why a tap could not be opened or set up.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is empty, longer than [`MAX_TAP_NAME_LEN`] or has a NUL byte.
    #[error("tap name {name:?} is not 1..={MAX_TAP_NAME_LEN} bytes without NUL")]
    BadName {
        /// The name given.
        name: String,
    },
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open {TUN_PATH}")]
    OpenTun(#[source] io::Error),
    /// `TUNSETIFF` failed (no `CAP_NET_ADMIN`, or an interface of that name that is not a
    /// single-queue tap).
    #[error("cannot attach to tap {name} (TUNSETIFF)")]
    SetIff {
        /// The tap's name.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `TUNSETVNETHDRSZ` failed.
    #[error("cannot set the virtio-net header size of tap {name} to {HDR_LEN} bytes")]
    SetVnetHdrSize {
        /// The tap's name.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `TUNSETOFFLOAD` failed.
    #[error("cannot set offloads {flags:#x} on tap {name}")]
    SetOffload {
        /// The tap's name.
        name: String,
        /// The `TUN_F_*` flags.
        flags: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// An open tap (see the module doc). Closing it (drop or [`Tap::close`]) deletes a tap that
/// [`Tap::open`] created.
#[derive(Debug)]
pub struct Tap {
    name: String,
    fd: Option<OwnedFd>,
}

impl Tap {
    /// Opens the tap `name` in the calling thread's network namespace, creating it when
    /// missing, with the 12-byte virtio-net header and no offloads.
    pub fn open(name: &str) -> Result<Self, TapError> {
        if name.is_empty() || name.len() > MAX_TAP_NAME_LEN || name.contains('\0') {
            return Err(TapError::BadName { name: name.into() });
        }
        let preopened = PREOPENED.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let fd = match preopened {
            Some(fd) => fd,
            None => open_tun()?,
        };

        // SAFETY: `ifreq` is plain old data; all zeroes is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        // SAFETY: `fd` is an open tun descriptor; TUNSETIFF reads and writes one `ifreq`, and
        // `ifr` is a valid, NUL-terminated (name at most IFNAMSIZ-1 bytes) `ifreq` that lives
        // across the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if rc < 0 {
            return Err(TapError::SetIff {
                name: name.into(),
                source: io::Error::last_os_error(),
            });
        }
        let hdr_len = HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer, which points to
        // `hdr_len`, alive across the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
        if rc < 0 {
            return Err(TapError::SetVnetHdrSize {
                name: name.into(),
                source: io::Error::last_os_error(),
            });
        }
        let mut tap = Tap {
            name: name.into(),
            fd: Some(fd),
        };
        // A persistent tap keeps the offloads of its last user: start from none.
        tap.set_offload(0)?;
        Ok(tap)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `TUNSETOFFLOAD`: the `TUN_F_*` offloads the kernel may leave to us in frames it gives
    /// (partial checksums, TSO segments); see [`super::device::tap_offloads`].
    pub fn set_offload(&mut self, flags: u32) -> Result<(), TapError> {
        let fd = self.raw_fd().map_err(|source| TapError::SetOffload {
            name: self.name.clone(),
            flags,
            source,
        })?;
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long), no pointer;
        // `fd` is this tap's open descriptor.
        let rc = unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD, libc::c_ulong::from(flags)) };
        if rc < 0 {
            return Err(TapError::SetOffload {
                name: self.name.clone(),
                flags,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// `readv`: one frame with its header, or `WouldBlock` when none waits.
    pub fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let fd = self.raw_fd()?;
        let cnt = libc::c_int::try_from(bufs.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: `IoSliceMut` is ABI-compatible with `iovec`; the `cnt` iovecs point into
        // buffers borrowed mutably for the call's duration; `fd` is this tap's descriptor.
        let n = unsafe { libc::readv(fd, bufs.as_mut_ptr().cast::<libc::iovec>(), cnt) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// `writev`: one frame with its header.
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let fd = self.raw_fd()?;
        let cnt = libc::c_int::try_from(bufs.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: `IoSlice` is ABI-compatible with `iovec`; the `cnt` iovecs point into
        // buffers borrowed for the call's duration, which the kernel only reads.
        let n = unsafe { libc::writev(fd, bufs.as_ptr().cast::<libc::iovec>(), cnt) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Closes the descriptor (a tap `open` created disappears); later I/O fails with
    /// `NotConnected`. A second call does nothing.
    pub fn close(&mut self) {
        self.fd = None;
    }

    fn raw_fd(&self) -> io::Result<RawFd> {
        self.fd
            .as_ref()
            .map(AsRawFd::as_raw_fd)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "tap is closed"))
    }
}

impl NetBackend for Tap {
    fn read_packet(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_vectored(&mut [IoSliceMut::new(buf)])
    }

    fn write_packet(&mut self, packet: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(packet)])
    }

    fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
        self.set_offload(flags).map_err(|e| match e {
            TapError::SetOffload { source, .. } => source,
            other => io::Error::other(other.to_string()),
        })
    }

    fn ready_fd(&self) -> Option<RawFd> {
        self.raw_fd().ok()
    }

    fn close(&mut self) {
        Tap::close(self);
    }
}
