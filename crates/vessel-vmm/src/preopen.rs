//! Device files the VMM's process opens before it joins a cgroup whose device filter would
//! refuse them. A cgroup v2 device filter (an eBPF program) is consulted when a device file is
//! opened, not when an open descriptor is used, and it applies to every cgroup below the one it
//! is attached to: podman attaches one to a pod's cgroup that allows only a container's default
//! devices, so a microVM whose monitor sits in a container cgroup of that pod cannot open
//! `/dev/kvm` or `/dev/net/tun` there. The monitor opens them here first; [`crate::Vm::setup`]
//! and the taps take the descriptors instead of opening the files.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;

use crate::{host, VmmError};

static KVM: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// Checks that this host can run guests (as [`crate::Vm::setup`] does) and opens `/dev/kvm` for
/// the next VM this process builds, and `taps` descriptors of `/dev/net/tun` for its taps (in
/// the current network namespace, which becomes theirs).
///
/// # Errors
/// [`VmmError::UnsupportedHost`] with the host check's verdict and fix; [`VmmError::OpenKvm`];
/// [`VmmError::OpenTaps`].
pub fn open(taps: usize) -> Result<(), VmmError> {
    let report = host::probe();
    if !report.verdict.can_run_guests() {
        return Err(VmmError::UnsupportedHost {
            verdict: report.verdict.to_string(),
            fix: report.verdict.fix(),
        });
    }
    // SAFETY: the path is a NUL-terminated string that outlives the call; `open` takes no other
    // pointer and its result is checked before use.
    let raw = unsafe { libc::open(c"/dev/kvm".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(VmmError::OpenKvm(kvm_ioctls::Error::last()));
    }
    // SAFETY: `raw` is a descriptor `open` just returned, owned by nothing else.
    let kvm = unsafe { OwnedFd::from_raw_fd(raw) };
    vessel_devices::virtio::net::tap::preopen(taps).map_err(VmmError::OpenTaps)?;
    *KVM.lock().unwrap_or_else(|e| e.into_inner()) = Some(kvm);
    Ok(())
}

/// The `/dev/kvm` descriptor [`open`] left, if any.
pub(crate) fn take_kvm() -> Option<OwnedFd> {
    KVM.lock().unwrap_or_else(|e| e.into_inner()).take()
}
