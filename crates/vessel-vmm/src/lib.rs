//! Vessel's microVM monitor: turns a [`VmConfig`] into a running KVM guest.
//!
//! Built on the rust-vmm crates (kvm-ioctls, vm-memory, linux-loader); device models live in
//! `vessel-devices`. The runtime's per-container monitor process embeds this library:
//! [`Vm::start`] boots a guest, [`Vm::wait`] returns its [`ExitReason`].
#![warn(missing_docs)]

pub mod arch;
pub mod artefacts;
pub mod config;
pub mod console_log;
pub mod devices;
pub mod event_loop;
pub mod host;
pub mod image_cache;
pub mod joined;
pub mod limits;
pub mod preopen;
pub mod seccomp;
pub mod uds;
pub mod vm;
pub mod vstate;

use std::path::{Path, PathBuf};

pub use config::{ConfigError, FsConfig, NetConfig, SerialSink, VmConfig};
pub use vessel_devices::virtio::vsock::{VsockHandle, VsockListener};
pub use vm::{EndWatch, Vm};
pub use vstate::vcpu::{ExitReason, FaultState, ShutdownCause};

/// Why the VMM could not build or drive a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The configuration is invalid.
    #[error("invalid vm config")]
    Config(#[source] ConfigError),
    /// The host's KVM cannot run guests (see `vessel check`).
    #[error("{verdict}; fix: {fix}")]
    UnsupportedHost {
        /// What the host probe found.
        verdict: String,
        /// How to fix it.
        fix: &'static str,
    },
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// `/dev/net/tun` could not be opened ahead of the taps ([`preopen::open`]).
    #[error("cannot open /dev/net/tun for the VM's taps")]
    OpenTaps(#[source] vessel_devices::virtio::net::tap::TapError),
    /// `KVM_CREATE_VM` failed.
    #[error("cannot create kvm vm")]
    CreateVm(#[source] kvm_ioctls::Error),
    /// A VM-wide KVM setup ioctl failed.
    #[error("cannot set up vm {what}")]
    SetupVm {
        /// What was being set up.
        what: &'static str,
        /// The cause.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory setup failed.
    #[error("cannot set up guest memory")]
    Memory(#[source] vstate::memory::MemoryError),
    /// The MP table could not be written.
    #[error("cannot write mp table")]
    Mptable(#[source] arch::x86_64::mptable::MptableError),
    /// Loading kernel, initramfs or boot info failed.
    #[error("cannot load guest")]
    Boot(#[source] arch::x86_64::boot::BootError),
    /// An eventfd could not be created.
    #[error("cannot create eventfd")]
    CreateEventFd(#[source] std::io::Error),
    /// `KVM_IRQFD` failed.
    #[error("cannot register irqfd for gsi {gsi}")]
    RegisterIrqfd {
        /// The GSI.
        gsi: u32,
        /// The cause.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_IOEVENTFD` failed.
    #[error("cannot register ioeventfd at {addr:#x}")]
    RegisterIoevent {
        /// Guest address.
        addr: u64,
        /// The cause.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The serial log file could not be opened.
    #[error("cannot open serial log {path}")]
    OpenSerial {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `KVM_CREATE_VCPU` failed.
    #[error("cannot create vcpu {index}")]
    CreateVcpu {
        /// vCPU index.
        index: u32,
        /// The cause.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_SET_CPUID2` failed.
    #[error("cannot set cpuid of vcpu {index}")]
    SetCpuid {
        /// vCPU index.
        index: u32,
        /// The cause.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Register setup failed.
    #[error("cannot set registers of vcpu {index}")]
    SetRegs {
        /// vCPU index.
        index: u32,
        /// The cause.
        #[source]
        source: arch::x86_64::regs::RegsError,
    },
    /// The vCPU kick signal handler could not be installed.
    #[error("cannot install the vcpu kick signal handler")]
    InstallSignal(#[source] std::io::Error),
    /// A VMM thread's seccomp filter could not be built or installed.
    #[error("cannot confine VMM thread {thread}")]
    Seccomp {
        /// Thread name.
        thread: String,
        /// The cause.
        #[source]
        source: seccomp::SeccompError,
    },
    /// A thread could not be spawned.
    #[error("cannot spawn thread {name}")]
    SpawnThread {
        /// Thread name.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The vsock device could not be created.
    #[error("cannot create vsock device")]
    CreateVsock(#[source] std::io::Error),
    /// A virtio-fs device could not be created (its serving thread could not be confined to the
    /// shared directory, or not started).
    #[error("cannot create virtio-fs device fs[{index}] (tag {tag:?})")]
    CreateFs {
        /// Index in `VmConfig::fs`.
        index: usize,
        /// Its tag.
        tag: String,
        /// The cause.
        #[source]
        source: vessel_devices::virtio::fs::FsError,
    },
    /// The tap of a virtio-net device could not be opened or set up.
    #[error("cannot open tap {tap:?} of net[{index}]")]
    OpenTap {
        /// Index in `VmConfig::net`.
        index: usize,
        /// The tap's name.
        tap: String,
        /// The cause.
        #[source]
        source: vessel_devices::virtio::net::TapError,
    },
    /// A virtio-net device could not be created (its eventfds or epoll set).
    #[error("cannot create virtio-net device net[{index}] (tap {tap:?})")]
    CreateNet {
        /// Index in `VmConfig::net`.
        index: usize,
        /// The tap's name.
        tap: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The vsock Unix socket could not be bound.
    #[error("cannot listen on vsock unix socket {path}")]
    BindVsockUds {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The VM has already ended.
    #[error("vm has ended: {0}")]
    Ended(ExitReason),
}

/// Reads a JSON [`VmConfig`] from `path`, boots it and blocks until the guest ends.
pub fn run_config_file(path: &Path) -> Result<ExitReason, VmmError> {
    let config = VmConfig::from_file(path).map_err(VmmError::Config)?;
    let mut vm = Vm::start(config)?;
    Ok(vm.wait())
}
