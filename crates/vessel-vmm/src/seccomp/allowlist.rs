//! What each VMM thread kind may call: the system calls seen on that thread under `strace` over
//! the lab's real workloads (podman's bridge network, exec, pause and resume, update, a file
//! system workout on the share), plus those its code paths can reach that a run may not show
//! (a panic's abort, the console log's rotation, every FUSE operation the file server answers).
//! The monitor's list is the other way round: the calls it never makes ([`MONITOR_DENIED`]).
//! `docs/threat-model.md` lists them; keep the two together.

use std::collections::BTreeMap;

use seccompiler::{BackendError, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

use super::ThreadKind;

/// Every confined thread: memory, locks, signals (the vCPU kick, an abort), clocks, its own
/// end, and I/O on descriptors it already holds.
const COMMON: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_close,
    // Debug builds of the standard library check a descriptor with `F_GETFD` before closing it.
    libc::SYS_fcntl,
    libc::SYS_futex,
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_tgkill,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_getrandom,
];

/// A vCPU: `KVM_RUN` and the device emulation it does on exits: a driver's activation or reset
/// (re)registers a device's descriptors with that device's epoll (`epoll_ctl`) and sets a tap's
/// offloads. Serial output goes to the console log, which is rotated on this thread (a rename
/// and an open for append only, see `rules`).
const VCPU: &[libc::c_long] = &[
    libc::SYS_epoll_ctl,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_statx,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
];

/// The device thread: epoll over queue eventfds, taps and the vsock backend's host sockets,
/// which it accepts and (for a port the host listens on) connects, Unix sockets only.
const DEVICES: &[libc::c_long] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_shutdown,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_getsockopt,
];

/// A file server: every operation `PassthroughFs` performs for a FUSE request, relative to the
/// descriptors it holds inside its share (its thread's root is the share: `virtio/fs/confine.rs`),
/// its per-request credential switch (`setresuid`/`setresgid` of this thread only) and the
/// capability it drops for a write that must clear set-id bits (`CAP_FSETID`).
const FILE_SERVER: &[libc::c_long] = &[
    libc::SYS_openat,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_dup,
    libc::SYS_lseek,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_copy_file_range,
    libc::SYS_getdents64,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fstatfs,
    libc::SYS_statfs,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_ftruncate,
    libc::SYS_flock,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_unlinkat,
    libc::SYS_mkdirat,
    libc::SYS_mknodat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_readlinkat,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_utimensat,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_flistxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    libc::SYS_setresuid,
    libc::SYS_setresgid,
    libc::SYS_getuid,
    libc::SYS_getgid,
    libc::SYS_umask,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_ppoll,
    libc::SYS_poll,
];

/// A stdio or terminal relay: reads and writes on the sockets, pipes, files and terminals it
/// holds (`recvfrom`/`sendto` are the standard library's socket reads and writes), and the
/// half-close of a stream whose input ended.
const RELAY: &[libc::c_long] = &[
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
];

/// What the monitor's threads never make once the container is set up (the one list of calls
/// denied rather than allowed): a program run, another process traced or its memory read,
/// kernel code or BPF loaded, the host rebooted, its clock, name, keys, swap or accounting
/// changed, a new root, raw port I/O, a file opened by handle.
pub(super) const MONITOR_DENIED: &[libc::c_long] = &[
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_personality,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_open_by_handle_at,
];

/// `_IOC(dir, 0xAE, nr, size)` of a KVM vCPU ioctl.
const fn kvm_ioc(dir: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | (0xAE << 8) | nr
}
const IOC_READ: u64 = 2;

/// The vCPU ioctls: run, and the register reads of a triple fault's report.
const VCPU_IOCTLS: &[u64] = &[
    kvm_ioc(0, 0x80, 0), // KVM_RUN
    kvm_ioc(
        IOC_READ,
        0x81,
        std::mem::size_of::<kvm_bindings::kvm_regs>() as u64,
    ), // KVM_GET_REGS
    kvm_ioc(
        IOC_READ,
        0x83,
        std::mem::size_of::<kvm_bindings::kvm_sregs>() as u64,
    ), // KVM_GET_SREGS
];

/// The tap ioctl the net device makes when the driver acks its features (on a vCPU).
const TAP_IOCTLS: &[u64] = &[libc::TUNSETOFFLOAD];

/// The device thread's ioctls: a vsock host socket it accepted made non-blocking.
const DEVICE_IOCTLS: &[u64] = &[libc::FIONBIO];

/// `openat`'s flags of glibc's read of `/proc/sys/vm/overcommit_memory`: allowed by the lists
/// only so that the stacked refusal (`super::Filters`) answers it with `ENOENT`.
pub(super) const READ_ONLY_FLAGS: u64 = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;

/// `openat`'s flags for a directory opened only to name a path under it (`O_PATH`).
const DIRECTORY_PATH_FLAGS: u64 = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;

/// `openat`'s flags for the console log's reopen after rotation: write, append, create.
const APPEND_FLAGS: u64 =
    (libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC) as u64;

/// The rules of `kind`: each allowed call, unconditionally or under its argument conditions.
pub(super) fn rules(kind: ThreadKind) -> Result<BTreeMap<i64, Vec<SeccompRule>>, BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let always = |rules: &mut BTreeMap<i64, Vec<SeccompRule>>, calls: &[libc::c_long]| {
        for &c in calls {
            rules.insert(c, Vec::new());
        }
    };
    if kind == ThreadKind::Monitor {
        always(&mut rules, MONITOR_DENIED);
        return Ok(rules);
    }
    always(&mut rules, COMMON);
    match kind {
        ThreadKind::Vcpu => {
            always(&mut rules, VCPU);
            let ioctls: Vec<u64> = VCPU_IOCTLS.iter().chain(TAP_IOCTLS).copied().collect();
            rules.insert(libc::SYS_ioctl, one_of(1, &ioctls)?);
            rules.insert(
                libc::SYS_openat,
                vec![arg_is(2, APPEND_FLAGS)?, arg_is(2, READ_ONLY_FLAGS)?],
            );
        }
        ThreadKind::Devices => {
            always(&mut rules, DEVICES);
            rules.insert(libc::SYS_socket, vec![arg_is(0, libc::AF_UNIX as u64)?]);
            // A guest connection to a port a host thread listens on in-process (`VsockListener`).
            rules.insert(libc::SYS_socketpair, vec![arg_is(0, libc::AF_UNIX as u64)?]);
            rules.insert(libc::SYS_ioctl, one_of(1, DEVICE_IOCTLS)?);
            // The parent directory of a host socket whose path is too long for `sockaddr_un`
            // (`crate::uds::connect`): a path-only descriptor, nothing can be read through it.
            rules.insert(
                libc::SYS_openat,
                vec![
                    arg_is(2, DIRECTORY_PATH_FLAGS)?,
                    arg_is(2, READ_ONLY_FLAGS)?,
                ],
            );
        }
        ThreadKind::FileServer => always(&mut rules, FILE_SERVER),
        ThreadKind::Relay => {
            always(&mut rules, RELAY);
            rules.insert(libc::SYS_openat, vec![arg_is(2, READ_ONLY_FLAGS)?]);
        }
        // Its list is of the calls denied, made above.
        ThreadKind::Monitor => {}
    }
    Ok(rules)
}

/// One rule per value: argument `index` (its low 32 bits, as the kernel reads an ioctl's
/// request) equals one of `values`.
fn one_of(index: u8, values: &[u64]) -> Result<Vec<SeccompRule>, BackendError> {
    values.iter().map(|&v| arg_is(index, v)).collect()
}

pub(super) fn arg_is(index: u8, value: u64) -> Result<SeccompRule, BackendError> {
    SeccompRule::new(vec![SeccompCondition::new(
        index,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        value,
    )?])
}
