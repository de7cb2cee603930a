//! Per-thread seccomp filters for the VMM's threads that handle what the guest sends (as
//! Firecracker confines its vCPU and VMM threads): each thread kind may make only the system
//! calls its work needs ([`allowlist`]); any other call kills the whole monitor process
//! (`SECCOMP_RET_KILL_PROCESS`), which ends the VM with it, as a panic does
//! (`docs/decisions/0008-panic-aborts-the-monitor.md`), so a guest that takes over a device
//! model gets no more of the host than that thread's list.
//!
//! The filters are compiled once per VM ([`Filters::compile`]) before its threads start, and each
//! thread installs its own after its set-up and before it handles anything from the guest
//! ([`install`]): the vCPUs before their first `KVM_RUN`, the device thread before its first
//! event, a file server once it is confined to its share. A filter binds the calling thread and
//! threads it starts, not the rest of the process (no `TSYNC`). The monitor's own threads, which
//! tear the container down and so need much of the system call table, get a list of what they
//! never make instead ([`confine_monitor`]: no `execve`, `ptrace`, module loading, `bpf`, ...). `docs/threat-model.md` lists what each
//! kind may call.
//!
//! Before its filter, a vCPU or device thread also gives up every capability (effective,
//! permitted, inheritable, ambient): its work after set-up (`KVM_RUN`, MMIO, the queues, the
//! console log and the vsock sockets in the root-owned state directory, the open taps) needs
//! none, and capabilities are per thread, so the rest of the monitor keeps its own. A file
//! server keeps the few its passthrough needs (`vessel_devices::virtio::fs::confine`).

mod allowlist;

use std::collections::BTreeMap;
use std::fmt;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The kinds of VMM threads that run under a filter of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// A vCPU thread (`vcpuN`): `KVM_RUN` and the MMIO/PIO emulation of the devices.
    Vcpu,
    /// The device thread (`vmm-devices`): the vsock and virtio-net queues and their host
    /// sockets and taps.
    Devices,
    /// A virtio-fs serving thread (`vessel-fs-<tag>`): FUSE requests against its share.
    FileServer,
    /// A stdio or terminal relay of the monitor or of `vessel exec`/`run` (`stdout-relay`,
    /// `tty-input`, ...): copies bytes the guest sends between descriptors it already holds.
    Relay,
    /// The monitor's own threads once the container is set up (its main thread, and so its
    /// control and signal-forwarding threads, started after; `vm-watch`): they tear the
    /// container down (unmounts, netlink, cgroups), so theirs is a list of the calls they never
    /// make (`allowlist::MONITOR_DENIED`), not of those they may.
    Monitor,
}

impl ThreadKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ThreadKind; 5] = [
        ThreadKind::Vcpu,
        ThreadKind::Devices,
        ThreadKind::FileServer,
        ThreadKind::Relay,
        ThreadKind::Monitor,
    ];
}

impl fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Devices => "device",
            ThreadKind::FileServer => "file server",
            ThreadKind::Relay => "stdio relay",
            ThreadKind::Monitor => "monitor",
        })
    }
}

/// Why a filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The allowlist could not be turned into a filter (a bug in the list).
    #[error("cannot build the {kind} thread's seccomp filter")]
    Build {
        /// The thread kind.
        kind: ThreadKind,
        /// The cause.
        #[source]
        source: seccompiler::BackendError,
    },
    /// The filter could not be compiled to BPF.
    #[error("cannot compile the {kind} thread's seccomp filter")]
    Compile {
        /// The thread kind.
        kind: ThreadKind,
        /// The cause.
        #[source]
        source: seccompiler::BackendError,
    },
    /// The thread's capabilities could not be cleared.
    #[error("cannot drop the {kind} thread's capabilities")]
    DropCapabilities {
        /// The thread kind.
        kind: ThreadKind,
        /// The cause.
        #[source]
        source: caps::errors::CapsError,
    },
    /// An earlier compilation of the filters, shared by the process's relays and monitor
    /// threads, failed.
    #[error("the seccomp filters did not compile: {message}")]
    Precompiled {
        /// The first compilation's error.
        message: String,
    },
    /// The kernel refused the filter (no seccomp support: `CONFIG_SECCOMP_FILTER`).
    #[error("cannot install the {kind} thread's seccomp filter (the host kernel needs CONFIG_SECCOMP_FILTER)")]
    Install {
        /// The thread kind.
        kind: ThreadKind,
        /// The cause.
        #[source]
        source: seccompiler::Error,
    },
}

/// The compiled filter of every thread kind, shared by the threads of one VM.
#[derive(Debug, Clone)]
pub struct Filters {
    vcpu: BpfProgram,
    devices: BpfProgram,
    file_server: BpfProgram,
    relay: BpfProgram,
    monitor: BpfProgram,
    /// Stacked under the monitor's denylist: any x32 system call (number with
    /// `__X32_SYSCALL_BIT`) kills the process. The arch field of an x32 call is x86_64's, so
    /// the denylist, which lets through every number not on it, would let `execve` in by its
    /// x32 number on a kernel built with `CONFIG_X86_X32_ABI`; the allowlists need no such
    /// guard (a number not on them kills).
    no_x32: BpfProgram,
    /// Stacked under the vCPU's, device thread's and relays' own: `openat(..., O_RDONLY | O_CLOEXEC)`
    /// fails with `ENOENT` instead of killing the process. glibc's `malloc` opens
    /// `/proc/sys/vm/overcommit_memory` that way the first time any thread shrinks a heap of a
    /// per-thread arena (`check_may_shrink_heap`), which can be one of these threads; without
    /// the file it falls back to `madvise`. No read of a file reaches the host.
    refuse_reads: BpfProgram,
}

impl Filters {
    /// Compiles the filter of every kind.
    ///
    /// # Errors
    /// A list could not be compiled (a bug: the unit tests compile them all).
    pub fn compile() -> Result<Filters, SeccompError> {
        Ok(Filters {
            vcpu: compile(ThreadKind::Vcpu)?,
            devices: compile(ThreadKind::Devices)?,
            file_server: compile(ThreadKind::FileServer)?,
            relay: compile(ThreadKind::Relay)?,
            monitor: compile(ThreadKind::Monitor)?,
            no_x32: no_x32(),
            refuse_reads: compile_refuse_reads()?,
        })
    }

    /// The compiled filter of `kind`.
    pub fn program(&self, kind: ThreadKind) -> &BpfProgram {
        match kind {
            ThreadKind::Vcpu => &self.vcpu,
            ThreadKind::Devices => &self.devices,
            ThreadKind::FileServer => &self.file_server,
            ThreadKind::Relay => &self.relay,
            ThreadKind::Monitor => &self.monitor,
        }
    }

    /// Installs the filter of `kind` on the calling thread, for good; every kind but the file
    /// server and the monitor drops all its capabilities first (see the module doc).
    ///
    /// # Errors
    /// The kernel refused the filter or the capability change.
    pub fn install(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        // The refusal goes first: the kind's own filter does not allow `seccomp` itself.
        if !matches!(kind, ThreadKind::FileServer | ThreadKind::Monitor) {
            drop_capabilities(kind)?;
            install(kind, &self.refuse_reads)?;
        }
        if kind == ThreadKind::Monitor {
            install(kind, &self.no_x32)?;
        }
        install(kind, self.program(kind))
    }
}

/// Confines the calling thread as a stdio relay ([`ThreadKind::Relay`]): no capabilities, the
/// relay's filter. The filters are compiled once per process, on the first relay's call.
///
/// # Errors
/// The filters could not be compiled, or the kernel refused the capability change or the filter.
pub fn confine_relay() -> Result<(), SeccompError> {
    process_filters()?.install(ThreadKind::Relay)
}

/// Puts the calling thread of the monitor, once the container is set up, under the monitor's
/// filter ([`ThreadKind::Monitor`]); the threads it starts afterwards inherit it. Its
/// capabilities are left as they are.
///
/// # Errors
/// The filters could not be compiled, or the kernel refused the filter.
pub fn confine_monitor() -> Result<(), SeccompError> {
    process_filters()?.install(ThreadKind::Monitor)
}

/// The filters of every kind, compiled once per process (for the threads that confine
/// themselves outside a VM's set-up).
fn process_filters() -> Result<&'static Filters, SeccompError> {
    static FILTERS: std::sync::OnceLock<Result<Filters, String>> = std::sync::OnceLock::new();
    FILTERS
        .get_or_init(|| Filters::compile().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|message| SeccompError::Precompiled {
            message: message.clone(),
        })
}

/// Clears the calling thread's capability sets (ambient and inheritable first: they must stay
/// within the permitted set). A thread that had none (an unprivileged monitor) is unchanged.
fn drop_capabilities(kind: ThreadKind) -> Result<(), SeccompError> {
    use caps::CapSet;
    [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ]
    .into_iter()
    .try_for_each(|set| caps::clear(None, set))
    .map_err(|source| SeccompError::DropCapabilities { kind, source })
}

/// The filter that turns a read-only `openat` into `ENOENT` (see [`Filters`]); the kinds'
/// lists allow that one `openat` so that this answer, not theirs, decides. Installed on the
/// vCPUs and the device thread, so a failure is reported against the device thread's kind.
fn compile_refuse_reads() -> Result<BpfProgram, SeccompError> {
    let kind = ThreadKind::Devices;
    let rule = allowlist::arg_is(2, allowlist::READ_ONLY_FLAGS)
        .map_err(|source| SeccompError::Build { kind, source })?;
    let rules = BTreeMap::from([(libc::SYS_openat, vec![rule])]);
    build(
        kind,
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOENT as u32),
    )
}

/// The filter that kills the process on any x32 system call or any architecture but x86_64
/// (see [`Filters`]), written out: seccompiler's rules match system call numbers one by one.
fn no_x32() -> BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const ARCH_OFFSET: u32 = 4; // struct seccomp_data: nr (u32), arch (u32), ...
    const NR_OFFSET: u32 = 0;
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let op = |code, k, jt, jf| sock_filter { code, jt, jf, k };
    vec![
        op(LD_W_ABS, ARCH_OFFSET, 0, 0),
        // Not x86_64: to the kill at the end.
        op(JEQ_K, AUDIT_ARCH_X86_64, 0, 3),
        op(LD_W_ABS, NR_OFFSET, 0, 0),
        // An x32 number: to the kill; else on to the allow.
        op(JGE_K, X32_SYSCALL_BIT, 1, 0),
        op(RET_K, libc::SECCOMP_RET_ALLOW, 0, 0),
        op(RET_K, libc::SECCOMP_RET_KILL_PROCESS, 0, 0),
    ]
}

/// Installs `program` (the filter of `kind`) on the calling thread, with `no_new_privs` set on it.
fn install(kind: ThreadKind, program: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(program).map_err(|source| SeccompError::Install { kind, source })
}

/// `kind`'s allowlist: its calls allowed, any other call kills the process. The monitor's is
/// the other way round: its calls kill the process, any other is allowed.
fn compile(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let rules = allowlist::rules(kind).map_err(|source| SeccompError::Build { kind, source })?;
    let (mismatch, on_match) = match kind {
        ThreadKind::Monitor => (SeccompAction::Allow, SeccompAction::KillProcess),
        _ => (SeccompAction::KillProcess, SeccompAction::Allow),
    };
    build(kind, rules, mismatch, on_match)
}

/// Compiles `rules` to BPF: `on_match` for a call its rules match, `mismatch` for any other.
fn build(
    kind: ThreadKind,
    rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>>,
    mismatch: SeccompAction,
    on_match: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(rules, mismatch, on_match, TargetArch::x86_64)
        .map_err(|source| SeccompError::Build { kind, source })?;
    filter
        .try_into()
        .map_err(|source| SeccompError::Compile { kind, source })
}

#[cfg(test)]
mod tests;
