//! A diagnosis aid for where a guest spends its boot: with `VESSEL_VCPU_PROFILE_MS=<n>` in the
//! VMM's environment, each vCPU thread counts its exits to the VMM per kind and address (port or
//! guest-physical address, with the time of the first) and samples the guest's instruction
//! pointer every `n` ms (a helper thread kicks the vCPU out of `KVM_RUN` with the kick signal, the
//! vCPU reads `RIP` with `KVM_GET_REGS` and goes back in). Both go to the log at `debug` level
//! when the vCPU ends (`VMM_LOG=debug` on the debug entry point); resolve the addresses with
//! `nm -n vmlinux`. Each sample costs the guest an exit, so keep `n` at 1 or more. Off (nothing
//! counted, no thread) without the variable.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuFd;

/// The environment variable that turns profiling on: the sampling period in milliseconds.
pub const PROFILE_ENV: &str = "VESSEL_VCPU_PROFILE_MS";

/// One vCPU thread's exit counts and `RIP` samples, see the module documentation.
#[derive(Debug)]
pub struct Profile {
    start: Instant,
    /// (kind, port or address) -> (count, ms of the first).
    exits: BTreeMap<(&'static str, u64), (u64, u128)>,
    /// (ms since start, RIP).
    samples: Vec<(u128, u64)>,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

impl Profile {
    /// A profile of the calling vCPU thread if [`PROFILE_ENV`] holds a period of 1 ms or more,
    /// with its sampler thread started; `None` otherwise (or if the thread cannot be spawned).
    pub fn from_env() -> Option<Profile> {
        let period: u64 = std::env::var(PROFILE_ENV).ok()?.parse().ok()?;
        if period == 0 {
            return None;
        }
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::Builder::new()
            .name("vcpu-profile".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(period));
                    // SAFETY: `target` is the vCPU thread, which joins this thread (in `finish`)
                    // before it returns, so it is alive; the kick signal's handler does nothing.
                    unsafe { libc::pthread_kill(target, super::vcpu::kick_signal()) };
                }
            })
            .ok()?;
        Some(Profile {
            start: Instant::now(),
            exits: BTreeMap::new(),
            samples: Vec::new(),
            stop,
            sampler: Some(sampler),
        })
    }

    /// Counts one exit of `kind` (`io-in`, `io-out`, `mmio-read`, `mmio-write`) at `addr`.
    pub fn exit(&mut self, kind: &'static str, addr: u64) {
        let now = self.start.elapsed().as_millis();
        self.exits.entry((kind, addr)).or_insert((0, now)).0 += 1;
    }

    /// Records the guest's `RIP` now (after a kick).
    pub fn sample(&mut self, vcpu: &VcpuFd) {
        if let Ok(regs) = vcpu.get_regs() {
            self.samples
                .push((self.start.elapsed().as_millis(), regs.rip));
        }
    }

    /// Stops the sampler and logs the counts and the samples for vCPU `index`.
    pub fn finish(mut self, index: u32) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.sampler.take() {
            let _ = t.join();
        }
        let exits: Vec<String> = self
            .exits
            .iter()
            .map(|((kind, addr), (n, first))| format!("{kind} {addr:#x} x{n} from {first} ms"))
            .collect();
        log::debug!("vcpu {index} exits to the vmm: {}", exits.join(", "));
        let samples: Vec<String> = self
            .samples
            .iter()
            .map(|(ms, rip)| format!("{ms}:{rip:x}"))
            .collect();
        log::debug!("vcpu {index} rip samples (ms:rip): {}", samples.join(" "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiling_is_on_only_for_a_positive_period_and_counts_exits_per_address() {
        super::super::vcpu::install_kick_handler().unwrap();
        // The variable is process-wide: other tests' vCPUs may profile meanwhile, which only
        // adds debug log lines.
        for off in ["", "0", "soon"] {
            std::env::set_var(PROFILE_ENV, off);
            assert!(Profile::from_env().is_none(), "{off:?}");
        }
        std::env::set_var(PROFILE_ENV, "1");
        let mut p = Profile::from_env().expect("profiling on");
        std::env::remove_var(PROFILE_ENV);
        p.exit("io-out", 0x3f8);
        p.exit("io-out", 0x3f8);
        p.exit("mmio-read", 0xd000_0000);
        // The sampler kicks this thread: its no-op handler must let the sleep go on.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(p.exits[&("io-out", 0x3f8)].0, 2);
        assert_eq!(p.exits[&("mmio-read", 0xd000_0000)].0, 1);
        assert_eq!(p.exits.len(), 2);
        p.finish(0);
    }
}
