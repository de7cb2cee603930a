//! The monitor's capabilities: the set the whole process keeps from its start, and the smaller
//! set its main thread keeps once the container is set up.
//!
//! Capabilities are per thread on Linux and a thread starts with its creator's, so the monitor
//! limits its main thread twice: right after it has joined the container's namespaces (the last
//! step that may need `CAP_SYS_PTRACE`, to open another process's `/proc/<pid>/ns/net`) to
//! [`monitor`], which every VMM thread then inherits, and after set-up to [`AFTER_SET_UP`],
//! which the control and signal-forwarding threads it starts then inherit. The vCPU and device
//! threads drop the rest themselves (`vessel_vmm::seccomp`), the file servers keep their ten
//! (`vessel_devices::virtio::fs::confine`). An unprivileged monitor has none to drop.

use caps::{CapSet, Capability, CapsHashSet};
use vessel_devices::virtio::fs::confine::KEPT_CAPABILITIES as KEPT_BY_FILE_SERVERS;

/// Why the capabilities could not be limited.
#[derive(Debug, thiserror::Error)]
pub enum CapabilitiesError {
    /// The kernel refused a change of the calling thread's capability sets.
    #[error("cannot limit the monitor's {set} capabilities to {kept}")]
    Limit {
        /// The set being changed (bounding, ambient, inheritable, effective, permitted).
        set: &'static str,
        /// The capabilities it was to keep.
        kept: String,
        /// The cause.
        #[source]
        source: caps::errors::CapsError,
    },
}

/// Every capability the monitor uses at any point after joining the container's namespaces:
/// the share's bind mounts and their teardown and the file servers' confinement (`SYS_ADMIN`),
/// the taps and tc filters (`NET_ADMIN`), the ten a file server keeps for the guest's users
/// (`CHOWN`, `DAC_OVERRIDE`, `DAC_READ_SEARCH`, `FOWNER`, `FSETID`, `SETUID`, `SETGID`,
/// `MKNOD`, `SETFCAP`, `SYS_ADMIN`) and raising its descriptor limit (`SYS_RESOURCE`). Gone
/// for good: `SYS_MODULE`, `SYS_RAWIO`,
/// `SYS_PTRACE`, `SYS_BOOT`, `SYS_TIME`, `KILL`, `NET_RAW`, `BPF`, `PERFMON` and the rest.
pub fn monitor() -> Vec<Capability> {
    KEPT_BY_FILE_SERVERS
        .into_iter()
        .chain([Capability::CAP_NET_ADMIN, Capability::CAP_SYS_RESOURCE])
        .collect()
}

/// What the monitor's main thread, its control thread and its signal-forwarding thread keep
/// once the container is created: the late wiring of an interface a prestart hook brings in
/// and the taps' teardown (`NET_ADMIN`), the share's unmounting (`SYS_ADMIN`), and reaching
/// files of the state directory and bundle whoever owns them (`DAC_OVERRIDE`).
pub const AFTER_SET_UP: [Capability; 3] = [
    Capability::CAP_NET_ADMIN,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_DAC_OVERRIDE,
];

/// Limits the calling thread to `kept` (those of them it holds): its bounding set where it holds
/// `CAP_SETPCAP` (so no later `execve` regains the rest; a thread already limited without
/// `CAP_SETPCAP` keeps its bounding set), then its ambient, inheritable, effective and
/// permitted sets.
///
/// # Errors
/// The kernel refused a change; the thread may be left between the two sets and must not go
/// on with set-up.
pub fn limit(kept: &[Capability]) -> Result<(), CapabilitiesError> {
    let names = || {
        let mut n: Vec<String> = kept.iter().map(|c| c.to_string()).collect();
        n.sort();
        n.join(",")
    };
    let fail = |set: &'static str| {
        move |source| CapabilitiesError::Limit {
            set,
            kept: names(),
            source,
        }
    };
    let kept: CapsHashSet = kept.iter().copied().collect();
    let held = caps::read(None, CapSet::Permitted).map_err(fail("permitted"))?;
    let keep: CapsHashSet = held.intersection(&kept).copied().collect();
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::read(None, CapSet::Bounding).map_err(fail("bounding"))? {
            if !kept.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(fail("bounding"))?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(fail("ambient"))?;
    caps::clear(None, CapSet::Inheritable).map_err(fail("inheritable"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(fail("effective"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(fail("permitted"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread limited to `AFTER_SET_UP` holds exactly those (as root) in every set but the
    /// ambient and inheritable ones; a thread it starts inherits that; other threads keep theirs.
    #[test]
    fn a_limited_thread_and_the_threads_it_starts_hold_only_what_it_kept() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "a_limited_thread_and_the_threads_it_starts_hold_only_what_it_kept: skipped: \
                 needs root (the capabilities to drop)"
            );
            return;
        }
        let sets = || {
            [
                CapSet::Effective,
                CapSet::Permitted,
                CapSet::Bounding,
                CapSet::Inheritable,
                CapSet::Ambient,
            ]
            .map(|s| caps::read(None, s).unwrap())
        };
        let (own, child) = std::thread::spawn(move || {
            limit(&AFTER_SET_UP).unwrap();
            let own = sets();
            let child = std::thread::spawn(sets).join().unwrap();
            (own, child)
        })
        .join()
        .unwrap();
        let kept: CapsHashSet = AFTER_SET_UP.into_iter().collect();
        for (name, got) in [("limited thread", own), ("thread it started", child)] {
            assert_eq!(got[0], kept, "{name}: effective");
            assert_eq!(got[1], kept, "{name}: permitted");
            assert_eq!(got[2], kept, "{name}: bounding");
            assert!(
                got[3].is_empty() && got[4].is_empty(),
                "{name}: inheritable, ambient"
            );
        }
        assert!(
            caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_PTRACE).unwrap(),
            "the test's own thread keeps CAP_SYS_PTRACE"
        );
    }

    #[test]
    fn the_monitor_set_holds_what_a_file_server_keeps() {
        for cap in vessel_devices::virtio::fs::confine::KEPT_CAPABILITIES {
            assert!(
                monitor().contains(&cap),
                "{cap} is not in the monitor's set"
            );
        }
        for cap in AFTER_SET_UP {
            assert!(
                monitor().contains(&cap),
                "{cap} is not in the monitor's set"
            );
        }
    }
}
