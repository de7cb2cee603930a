//! `process.ioPriority`, `process.scheduler` and `linux.personality`: the spec values turned into
//! the arguments of `ioprio_set(2)`, `sched_setattr(2)` and `personality(2)`, and applied as runc
//! 1.2 applies them (libcontainer/init_linux.go `setIOPriority`, `setupScheduler`,
//! `setupPersonality`; runc 1.1 ignored the first two). The host has already refused the values
//! runc's validator refuses (vessel-runtime `host/validate.rs`); what is left to fail here is the
//! kernel's own say (`EPERM` for a realtime class without `CAP_SYS_NICE`/`CAP_SYS_ADMIN`).

use std::io;

use oci_spec::runtime::{
    IOPriorityClass, LinuxIOPriority, LinuxPersonalityDomain, LinuxSchedulerFlag,
    LinuxSchedulerPolicy, Scheduler,
};

use super::syscall::{SchedAttr, Syscall};

/// `PER_LINUX` of `linux/personality.h`.
pub const PER_LINUX: u64 = 0x0000;
/// `PER_LINUX32` of `linux/personality.h`.
pub const PER_LINUX32: u64 = 0x0008;

/// Errors applying the scheduling fields; the texts are runc's.
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    /// `ioprio_set` failed.
    #[error("failed to set io priority (process.ioPriority class {class} priority {priority})")]
    SetIoPriority {
        /// The class as config.json names it.
        class: String,
        /// The level, 0 to 7.
        priority: i64,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `sched_setattr` failed.
    #[error("error setting scheduler (process.scheduler policy {policy})")]
    ApplyScheduler {
        /// The policy as config.json names it.
        policy: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `personality` failed.
    #[error("set_personality (linux.personality domain {domain})")]
    SetPersonality {
        /// The domain as config.json names it.
        domain: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl SchedError {
    /// The cause of the failure.
    pub fn io_error(&self) -> &io::Error {
        match self {
            SchedError::SetIoPriority { source, .. }
            | SchedError::ApplyScheduler { source, .. }
            | SchedError::SetPersonality { source, .. } => source,
        }
    }
}

/// The `ioprio` value of `io`: `class << 13 | priority` (`IOPRIO_PRIO_VALUE`), with the classes
/// `RT` 1, `BE` 2, `IDLE` 3.
pub fn io_priority_value(io: &LinuxIOPriority) -> u32 {
    let class: u32 = match io.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    // The host checked 0..=7; the mask keeps a stray value out of the class bits anyway.
    (class << 13) | (io.priority() as u32 & 0x1fff)
}

/// The `struct sched_attr` of `s` (runc `configs.ToSchedAttr`).
pub fn sched_attr(s: &Scheduler) -> SchedAttr {
    let policy = match s.policy() {
        LinuxSchedulerPolicy::SchedOther => 0,
        LinuxSchedulerPolicy::SchedFifo => 1,
        LinuxSchedulerPolicy::SchedRr => 2,
        LinuxSchedulerPolicy::SchedBatch => 3,
        LinuxSchedulerPolicy::SchedIso => 4,
        LinuxSchedulerPolicy::SchedIdle => 5,
        LinuxSchedulerPolicy::SchedDeadline => 6,
    };
    let flags = s
        .flags()
        .iter()
        .flatten()
        .map(|f| match f {
            LinuxSchedulerFlag::SchedResetOnFork => 0x01,
            LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
            LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
            LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
            LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
            LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
            LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
        })
        .fold(0u64, |acc, bit| acc | bit);
    SchedAttr {
        policy,
        flags,
        nice: s.nice().unwrap_or(0),
        priority: s.priority().unwrap_or(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
        ..SchedAttr::new()
    }
}

/// The persona of `domain`.
pub fn persona(domain: LinuxPersonalityDomain) -> u64 {
    match domain {
        LinuxPersonalityDomain::PerLinux => PER_LINUX,
        LinuxPersonalityDomain::PerLinux32 => PER_LINUX32,
    }
}

/// Applies `process.ioPriority` and `process.scheduler`, when set, to the calling process.
pub fn apply_process<S: Syscall>(
    sys: &S,
    io: Option<&LinuxIOPriority>,
    scheduler: Option<&Scheduler>,
) -> Result<(), SchedError> {
    if let Some(io) = io {
        sys.set_io_priority(io_priority_value(io))
            .map_err(|source| SchedError::SetIoPriority {
                class: serde_name(&io.class()),
                priority: io.priority(),
                source,
            })?;
    }
    if let Some(s) = scheduler {
        sys.sched_setattr(&sched_attr(s))
            .map_err(|source| SchedError::ApplyScheduler {
                policy: s.policy().to_string(),
                source,
            })?;
    }
    Ok(())
}

/// Applies `linux.personality`'s domain to the calling process (its flags are ignored, as runc
/// ignores them; the host warns).
pub fn apply_personality<S: Syscall>(
    sys: &S,
    domain: LinuxPersonalityDomain,
) -> Result<(), SchedError> {
    sys.personality(persona(domain))
        .map_err(|source| SchedError::SetPersonality {
            domain: domain.to_string(),
            source,
        })
}

/// The name config.json uses for `value` (its serde form).
fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::syscall::{Call, RecordingSyscall};

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn io_priority_is_class_shifted_by_13_or_level() {
        let io = |class: &str, p: i64| -> LinuxIOPriority {
            from(serde_json::json!({"class": class, "priority": p}))
        };
        assert_eq!(io_priority_value(&io("IOPRIO_CLASS_RT", 0)), 0x2000);
        assert_eq!(io_priority_value(&io("IOPRIO_CLASS_BE", 4)), 0x4004);
        assert_eq!(io_priority_value(&io("IOPRIO_CLASS_IDLE", 7)), 0x6007);
    }

    #[test]
    fn scheduler_becomes_sched_attr_with_runc_s_numbers() {
        let fifo: Scheduler = from(serde_json::json!({
            "policy": "SCHED_FIFO", "priority": 10, "flags": ["SCHED_RESET_ON_FORK"]
        }));
        let a = sched_attr(&fifo);
        assert_eq!(
            (a.size, a.policy, a.priority, a.flags, a.nice),
            (56, 1, 10, 1, 0)
        );
        let dl: Scheduler = from(serde_json::json!({
            "policy": "SCHED_DEADLINE", "runtime": 1_000_000u64, "deadline": 2_000_000u64,
            "period": 3_000_000u64
        }));
        let a = sched_attr(&dl);
        assert_eq!(
            (a.policy, a.runtime, a.deadline, a.period),
            (6, 1_000_000, 2_000_000, 3_000_000)
        );
        let batch: Scheduler = from(serde_json::json!({"policy": "SCHED_BATCH", "nice": -5}));
        assert_eq!(
            (sched_attr(&batch).policy, sched_attr(&batch).nice),
            (3, -5)
        );
    }

    #[test]
    fn applies_io_priority_then_scheduler_and_the_personality() {
        let sys = RecordingSyscall::default();
        let io: LinuxIOPriority =
            from(serde_json::json!({"class": "IOPRIO_CLASS_IDLE", "priority": 7}));
        let s: Scheduler = from(serde_json::json!({"policy": "SCHED_IDLE"}));
        apply_process(&sys, Some(&io), Some(&s)).unwrap();
        apply_personality(&sys, LinuxPersonalityDomain::PerLinux32).unwrap();
        let mut idle = SchedAttr::new();
        idle.policy = 5;
        assert_eq!(
            sys.take(),
            [
                Call::SetIoPriority(0x6007),
                Call::SchedSetattr(idle),
                Call::Personality(PER_LINUX32),
            ]
        );
        apply_process(&sys, None, None).unwrap();
        assert!(sys.take().is_empty());
    }

    #[test]
    fn errors_use_runc_s_words_and_name_the_field() {
        let e = SchedError::SetIoPriority {
            class: "IOPRIO_CLASS_RT".into(),
            priority: 0,
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(
            e.to_string(),
            "failed to set io priority (process.ioPriority class IOPRIO_CLASS_RT priority 0)"
        );
        assert_eq!(e.io_error().raw_os_error(), Some(libc::EPERM));
        let io: LinuxIOPriority =
            from(serde_json::json!({"class": "IOPRIO_CLASS_RT", "priority": 0}));
        assert_eq!(serde_name(&io.class()), "IOPRIO_CLASS_RT");
    }

    /// The real calls, on this process: a best-effort class and a nice level any process may
    /// take, then back; `PER_LINUX` is what the process already has.
    #[test]
    fn real_calls_change_this_thread() {
        use crate::container::syscall::LinuxSyscall;
        let sys = LinuxSyscall;
        std::thread::spawn(move || {
            let io: LinuxIOPriority =
                from(serde_json::json!({"class": "IOPRIO_CLASS_BE", "priority": 7}));
            let s: Scheduler = from(serde_json::json!({"policy": "SCHED_BATCH", "nice": 19}));
            apply_process(&sys, Some(&io), Some(&s)).unwrap();
            // SAFETY: ioprio_get and sched_getscheduler take integers only.
            let ioprio = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, 0) };
            assert_eq!(ioprio, 0x4007);
            // SAFETY: as above.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_BATCH);
            apply_personality(&sys, LinuxPersonalityDomain::PerLinux).unwrap();
            // SAFETY: 0xffffffff queries the persona without changing it.
            assert_eq!(unsafe { libc::personality(0xffff_ffff) } & 0xff, 0);
        })
        .join()
        .unwrap();
    }
}
