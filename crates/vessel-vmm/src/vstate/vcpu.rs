//! vCPU threads: one per vCPU, each looping on `KVM_RUN`, dispatching port and MMIO exits to the
//! device manager, and ending the VM with an [`ExitReason`] on anything else.
//!
//! Pause, resume and stop go through [`VcpuControl`]: the controller sets the wanted state and
//! kicks every vCPU thread with a real-time signal (whose handler does nothing) until each one has
//! acknowledged; a kick that lands outside `KVM_RUN` is simply repeated, so none is lost.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::time::Duration;

use kvm_ioctls::{VcpuExit, VcpuFd};

use super::profile::Profile;
use crate::devices::{BusOutcome, DeviceManager};

/// Why the guest stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest shut down (see [`ShutdownCause`]).
    Shutdown(ShutdownCause),
    /// `KVM_EXIT_SYSTEM_EVENT` (kind from `include/uapi/linux/kvm.h`, `KVM_SYSTEM_EVENT_*`).
    SystemEvent {
        /// Event kind (1 shutdown, 2 reset, 3 crash ...).
        kind: u32,
        /// vCPU index that reported it.
        vcpu: u32,
    },
    /// `KVM_EXIT_INTERNAL_ERROR` (e.g. emulation failure, suberror 1).
    InternalError {
        /// `KVM_INTERNAL_ERROR_*` suberror.
        suberror: u32,
        /// vCPU index.
        vcpu: u32,
    },
    /// `KVM_EXIT_FAIL_ENTRY`: the hardware refused to enter the guest.
    FailEntry {
        /// Hardware entry failure reason.
        reason: u64,
        /// Physical CPU it happened on.
        cpu: u32,
        /// vCPU index.
        vcpu: u32,
    },
    /// A guest MMIO access hit no device.
    UnhandledMmio {
        /// Guest physical address.
        addr: u64,
        /// Whether it was a store.
        write: bool,
        /// vCPU index.
        vcpu: u32,
    },
    /// Another `KVM_RUN` exit the VMM does not handle.
    UnexpectedExit {
        /// Debug text of the exit.
        exit: String,
        /// vCPU index.
        vcpu: u32,
    },
    /// `KVM_RUN` itself failed.
    RunFailed {
        /// errno.
        errno: i32,
        /// vCPU index.
        vcpu: u32,
    },
    /// A device can no longer serve the guest (its worker thread died), so the guest would wait
    /// for it forever: the VMM ended the VM.
    DeviceFailed {
        /// The device (`virtio-fs <tag>`).
        device: String,
        /// What failed, with its causes.
        error: String,
    },
    /// The host stopped the VM (`Vm::stop`).
    Stopped,
}

/// How the guest shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownCause {
    /// The guest pulsed reset through the i8042 (its power-off and reboot path with `reboot=k`).
    KeyboardReset,
    /// `KVM_EXIT_SHUTDOWN`: a triple fault, with where the vCPU was if KVM could say.
    TripleFault(Option<FaultState>),
}

/// Where a vCPU was when the guest triple-faulted (`KVM_GET_REGS`, `KVM_GET_SREGS`): a triple
/// fault leaves the guest no chance to print a panic, so this is its only trace. On Intel (VMX)
/// it is the faulting state; on AMD (SVM) KVM re-initialises the vCPU on a shutdown intercept
/// (`shutdown_interception`), so it reads as the reset state (`rip=0xfff0 cs=0xf000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultState {
    /// Index of the vCPU that took the fault.
    pub vcpu: u32,
    /// Instruction pointer.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Code segment selector.
    pub cs: u16,
    /// Control registers 0, 2 (last page-fault address), 3 (page-table root) and 4.
    pub cr: [u64; 4],
    /// Extended feature enable register.
    pub efer: u64,
    /// Flags register.
    pub rflags: u64,
}

impl fmt::Display for FaultState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [cr0, cr2, cr3, cr4] = self.cr;
        write!(
            f,
            "vcpu {} rip={:#x} rsp={:#x} cs={:#x} cr0={cr0:#x} cr2={cr2:#x} cr3={cr3:#x} \
             cr4={cr4:#x} efer={:#x} rflags={:#x}",
            self.vcpu, self.rip, self.rsp, self.cs, self.efer, self.rflags
        )
    }
}

impl ExitReason {
    /// True for the orderly end: the guest itself asked for reset/power-off.
    pub fn is_clean_shutdown(&self) -> bool {
        matches!(self, ExitReason::Shutdown(ShutdownCause::KeyboardReset))
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Shutdown(ShutdownCause::KeyboardReset) => {
                write!(f, "guest shut down (i8042 reset)")
            }
            ExitReason::Shutdown(ShutdownCause::TripleFault(state)) => {
                write!(f, "guest triple fault (kvm shutdown exit)")?;
                match state {
                    Some(s) => write!(f, " at {s}"),
                    None => Ok(()),
                }
            }
            ExitReason::SystemEvent { kind, vcpu } => {
                write!(f, "system event {kind} on vcpu {vcpu}")
            }
            ExitReason::InternalError { suberror, vcpu } => {
                write!(f, "kvm internal error, suberror {suberror}, on vcpu {vcpu}")
            }
            ExitReason::FailEntry { reason, cpu, vcpu } => write!(
                f,
                "vm entry failed on vcpu {vcpu} (hardware reason {reason:#x}, cpu {cpu})"
            ),
            ExitReason::UnhandledMmio { addr, write, vcpu } => write!(
                f,
                "unhandled mmio {} at {addr:#x} on vcpu {vcpu}",
                if *write { "write" } else { "read" }
            ),
            ExitReason::UnexpectedExit { exit, vcpu } => {
                write!(f, "unexpected kvm exit {exit} on vcpu {vcpu}")
            }
            ExitReason::RunFailed { errno, vcpu } => {
                write!(f, "KVM_RUN failed on vcpu {vcpu}: errno {errno}")
            }
            ExitReason::DeviceFailed { device, error } => {
                write!(f, "device {device} failed: {error}")
            }
            ExitReason::Stopped => write!(f, "stopped by the host"),
        }
    }
}

/// What the controller wants the vCPUs to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Run,
    Pause,
    Stop,
}

/// Where one vCPU thread is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Running,
    Paused,
    Exited,
}

struct ControlState {
    wanted: Wanted,
    at: Vec<Where>,
    reason: Option<ExitReason>,
}

/// Shared state between the VM owner and its vCPU threads.
pub struct VcpuControl {
    state: Mutex<ControlState>,
    cv: Condvar,
}

/// Signal used to kick vCPU threads out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn noop_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the no-op kick handler (once per process) so the kick interrupts `KVM_RUN` with
/// EINTR instead of killing the process.
pub fn install_kick_handler() -> std::io::Result<()> {
    static ONCE: Once = Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        res = vmm_sys_util::signal::register_signal_handler(kick_signal(), noop_handler)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
    });
    res
}

impl VcpuControl {
    /// Control for `n` vCPUs that start paused (before their first `KVM_RUN`).
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(ControlState {
                wanted: Wanted::Pause,
                at: vec![Where::Running; n],
                reason: None,
            }),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exit reason once the VM has ended.
    pub fn reason(&self) -> Option<ExitReason> {
        self.lock().reason.clone()
    }

    /// Lets every vCPU run; false when the VM has already ended.
    pub fn resume(&self) -> bool {
        let mut s = self.lock();
        if s.wanted == Wanted::Stop {
            return false;
        }
        s.wanted = Wanted::Run;
        self.cv.notify_all();
        true
    }

    /// Stops every vCPU at its next exit and waits until all are paused; false when the VM has
    /// ended.
    pub fn pause(&self, threads: &[libc::pthread_t]) -> bool {
        {
            let mut s = self.lock();
            if s.wanted == Wanted::Stop {
                return false;
            }
            s.wanted = Wanted::Pause;
        }
        self.kick_until(threads, |w| w != Where::Running);
        self.lock().wanted != Wanted::Stop
    }

    /// Ends the VM (recording `reason` if none is recorded yet) and waits until every vCPU thread
    /// has left its loop.
    pub fn stop(&self, threads: &[libc::pthread_t], reason: ExitReason) {
        {
            let mut s = self.lock();
            s.wanted = Wanted::Stop;
            s.reason.get_or_insert(reason);
            self.cv.notify_all();
        }
        self.kick_until(threads, |w| w == Where::Exited);
    }

    /// Ends the VM from a thread other than a vCPU's (a device worker that died): records
    /// `reason` if none is recorded yet and asks every vCPU to exit, which wakes
    /// [`Self::wait_exit`]. vCPUs leave at their next exit; the owner's teardown (`Vm::wait`,
    /// `Vm::stop`) kicks those still in `KVM_RUN`.
    pub fn fail(&self, reason: ExitReason) {
        let mut s = self.lock();
        s.reason.get_or_insert(reason);
        s.wanted = Wanted::Stop;
        self.cv.notify_all();
    }

    /// Blocks until some vCPU ended the VM (or `stop` was called) and returns the reason.
    pub fn wait_exit(&self) -> ExitReason {
        let mut s = self.lock();
        loop {
            if let Some(r) = &s.reason {
                return r.clone();
            }
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// [`Self::wait_exit`] giving up after `timeout` (`None`: still running).
    pub fn wait_exit_timeout(&self, timeout: Duration) -> Option<ExitReason> {
        let deadline = std::time::Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if let Some(r) = &s.reason {
                return Some(r.clone());
            }
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            s = self
                .cv
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn kick_until(&self, threads: &[libc::pthread_t], done: impl Fn(Where) -> bool) {
        loop {
            let s = self.lock();
            let pending: Vec<usize> = (0..s.at.len()).filter(|&i| !done(s.at[i])).collect();
            if pending.is_empty() {
                return;
            }
            drop(s);
            for i in pending {
                if let Some(t) = threads.get(i) {
                    // SAFETY: `t` is the pthread id of a vCPU thread that has not been joined (the
                    // owner joins only after this returns), so it names a live or zombie thread;
                    // the signal has a no-op handler installed before any vCPU thread starts.
                    unsafe { libc::pthread_kill(*t, kick_signal()) };
                }
            }
            let s = self.lock();
            let _ = self
                .cv
                .wait_timeout(s, Duration::from_millis(1))
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Called by vCPU `i` between runs: blocks while paused; returns false when it must exit.
    fn checkpoint(&self, i: usize) -> bool {
        let mut s = self.lock();
        loop {
            match s.wanted {
                Wanted::Run => {
                    s.at[i] = Where::Running;
                    return true;
                }
                Wanted::Pause => {
                    if s.at[i] != Where::Paused {
                        s.at[i] = Where::Paused;
                        self.cv.notify_all();
                    }
                    s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
                }
                Wanted::Stop => {
                    s.at[i] = Where::Exited;
                    self.cv.notify_all();
                    return false;
                }
            }
        }
    }

    fn exit_with(&self, i: usize, reason: ExitReason) {
        let mut s = self.lock();
        s.reason.get_or_insert(reason);
        s.wanted = Wanted::Stop;
        s.at[i] = Where::Exited;
        self.cv.notify_all();
    }
}

enum Step {
    Continue,
    Exit(ExitReason),
    InternalError,
}

/// Where vCPU `index` was when the guest triple-faulted, also logged at error level; `None` if
/// KVM would not say.
fn fault_state(vcpu: &VcpuFd, index: u32) -> Option<FaultState> {
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) => {
            let state = FaultState {
                vcpu: index,
                rip: r.rip,
                rsp: r.rsp,
                cs: s.cs.selector,
                cr: [s.cr0, s.cr2, s.cr3, s.cr4],
                efer: s.efer,
                rflags: r.rflags,
            };
            log::error!("triple fault: {state}");
            Some(state)
        }
        (r, s) => {
            log::error!(
                "vcpu {index} triple fault; registers unavailable: {:?} {:?}",
                r.err(),
                s.err()
            );
            None
        }
    }
}

/// Counts an exit in the profile, if profiling.
fn count(profile: &mut Option<Profile>, kind: &'static str, addr: u64) {
    if let Some(p) = profile.as_mut() {
        p.exit(kind, addr);
    }
}

/// The body of vCPU thread `index`: runs until the VM ends (with [`Profile`] when
/// `VESSEL_VCPU_PROFILE_MS` is set).
///
/// `confine` runs once on this thread before anything else reaches the guest (after the profile's
/// sampler thread, if any, is started): it installs the thread's seccomp filter and says whether
/// it could; if not, the vCPU ends the VM before its first `KVM_RUN`.
pub fn run_loop(
    mut vcpu: VcpuFd,
    index: u32,
    devices: Arc<DeviceManager>,
    ctl: Arc<VcpuControl>,
    confine: impl FnOnce() -> bool,
) {
    let i = index as usize;
    let mut profile = Profile::from_env();
    if !confine() {
        if let Some(p) = profile.take() {
            p.finish(index);
        }
        ctl.exit_with(
            i,
            ExitReason::DeviceFailed {
                device: format!("vcpu{index}"),
                error: "its seccomp filter could not be installed".into(),
            },
        );
        return;
    }
    let mut first_run = true;
    while ctl.checkpoint(i) {
        if first_run {
            // `make bench` times process start to this line (the setup row): logged just
            // before the vCPU's first `KVM_RUN`.
            log::debug!("vcpu {index}: first KVM_RUN");
            first_run = false;
        }
        let step = match vcpu.run() {
            Ok(exit) => match exit {
                VcpuExit::IoIn(port, data) => {
                    count(&mut profile, "io-in", port.into());
                    devices.pio_read(port, data);
                    Step::Continue
                }
                VcpuExit::IoOut(port, data) => {
                    count(&mut profile, "io-out", port.into());
                    match devices.pio_write(port, data) {
                        BusOutcome::Reset => {
                            Step::Exit(ExitReason::Shutdown(ShutdownCause::KeyboardReset))
                        }
                        _ => Step::Continue,
                    }
                }
                VcpuExit::MmioRead(addr, data) => {
                    count(&mut profile, "mmio-read", addr);
                    match devices.mmio_read(addr, data) {
                        BusOutcome::Unhandled => Step::Exit(ExitReason::UnhandledMmio {
                            addr,
                            write: false,
                            vcpu: index,
                        }),
                        _ => Step::Continue,
                    }
                }
                VcpuExit::MmioWrite(addr, data) => {
                    count(&mut profile, "mmio-write", addr);
                    match devices.mmio_write(addr, data) {
                        BusOutcome::Unhandled => Step::Exit(ExitReason::UnhandledMmio {
                            addr,
                            write: true,
                            vcpu: index,
                        }),
                        _ => Step::Continue,
                    }
                }
                // With the in-kernel irqchip HLT stays in the kernel; an exit here is harmless.
                VcpuExit::Hlt | VcpuExit::Intr => Step::Continue,
                VcpuExit::Shutdown => Step::Exit(ExitReason::Shutdown(ShutdownCause::TripleFault(
                    fault_state(&vcpu, index),
                ))),
                VcpuExit::SystemEvent(kind, _) => {
                    Step::Exit(ExitReason::SystemEvent { kind, vcpu: index })
                }
                VcpuExit::InternalError => Step::InternalError,
                VcpuExit::FailEntry(reason, cpu) => Step::Exit(ExitReason::FailEntry {
                    reason,
                    cpu,
                    vcpu: index,
                }),
                other => Step::Exit(ExitReason::UnexpectedExit {
                    exit: format!("{other:?}"),
                    vcpu: index,
                }),
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
                if let Some(p) = profile.as_mut() {
                    p.sample(&vcpu);
                }
                Step::Continue
            }
            Err(e) => Step::Exit(ExitReason::RunFailed {
                errno: e.errno(),
                vcpu: index,
            }),
        };
        match step {
            Step::Continue => {}
            Step::InternalError => {
                let run = vcpu.get_kvm_run();
                // SAFETY: the last exit reason was KVM_EXIT_INTERNAL_ERROR, for which the kernel
                // fills the `internal` member of the kvm_run exit union.
                let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
                if let Some(p) = profile.take() {
                    p.finish(index);
                }
                ctl.exit_with(
                    i,
                    ExitReason::InternalError {
                        suberror,
                        vcpu: index,
                    },
                );
                return;
            }
            Step::Exit(reason) => {
                if let Some(p) = profile.take() {
                    p.finish(index);
                }
                log::debug!("vcpu {index} ends the vm: {reason}");
                ctl.exit_with(i, reason);
                return;
            }
        }
    }
    if let Some(p) = profile.take() {
        p.finish(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_failure_ends_the_vm_and_wakes_the_owner_and_the_vcpus() {
        let ctl = VcpuControl::new(1);
        let owner = {
            let c = Arc::clone(&ctl);
            std::thread::spawn(move || c.wait_exit())
        };
        // A vCPU parked before its first run (the VM is set up, not resumed).
        let vcpu = {
            let c = Arc::clone(&ctl);
            std::thread::spawn(move || c.checkpoint(0))
        };
        let reason = ExitReason::DeviceFailed {
            device: "virtio-fs vessel".into(),
            error: "virtio-fs thread vessel-fs-vessel panicked: boom".into(),
        };
        ctl.fail(reason.clone());
        assert_eq!(owner.join().unwrap(), reason);
        assert!(!vcpu.join().unwrap(), "the vCPU leaves its loop");
        assert!(!ctl.resume(), "an ended VM does not resume");
        ctl.fail(ExitReason::Stopped);
        assert_eq!(ctl.reason(), Some(reason.clone()), "the first reason wins");
        assert_eq!(
            reason.to_string(),
            "device virtio-fs vessel failed: virtio-fs thread vessel-fs-vessel panicked: boom"
        );
    }
}
