//! The checks runc makes on `config.json` fields that the guest agent applies (or that the
//! microVM cannot honour), made on the host before any VM boots, so a bad value fails `create`
//! at once with runc's text followed by the field and the fix in parentheses.
//!
//! Sources: runc libcontainer/specconv/spec_linux.go (`rootfsPropagation=%v is not supported`,
//! personality), libcontainer/configs/validate/validator.go (intelRdt, scheduler, ioPriority),
//! libcontainer/nsenter/nsexec.c (`failed to update /proc/self/oom_score_adj`).

use oci_spec::runtime::{Linux, LinuxSchedulerPolicy, Process, Spec};

/// The values `linux.rootfsPropagation` takes (runc specconv `mountPropagationMapping`).
pub const ROOTFS_PROPAGATIONS: [&str; 8] = [
    "private",
    "rprivate",
    "slave",
    "rslave",
    "shared",
    "rshared",
    "unbindable",
    "runbindable",
];

/// The range the kernel accepts for `/proc/<pid>/oom_score_adj` (`OOM_SCORE_ADJ_MIN`/`MAX`).
pub const OOM_SCORE_ADJ_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

/// Checks the `process` fields runc refuses before its init runs: `oomScoreAdj` in
/// [`OOM_SCORE_ADJ_RANGE`] (runc's nsexec fails writing it), `ioPriority.priority` in 0..=7 and
/// the `scheduler` rules of runc 1.2's validator. `field` is the object's path
/// (`process`). Returns the message to refuse with.
pub fn check_process(p: &Process, field: &str) -> Result<(), String> {
    if let Some(adj) = p.oom_score_adj() {
        if !OOM_SCORE_ADJ_RANGE.contains(&adj) {
            return Err(format!(
                "failed to update /proc/self/oom_score_adj: Invalid argument ({field}.oomScoreAdj \
                 is {adj}: set it between -1000 and 1000)"
            ));
        }
    }
    if let Some(io) = p.io_priority() {
        let priority = io.priority();
        if !(0..=7).contains(&priority) {
            return Err(format!(
                "invalid ioPriority.Priority: {priority} ({field}.ioPriority.priority takes 0 \
                 (highest) to 7 (lowest))"
            ));
        }
    }
    if let Some(s) = p.scheduler() {
        let policy = *s.policy();
        let nice = s.nice().unwrap_or(0);
        if !(-20..=19).contains(&nice) {
            return Err(format!(
                "invalid scheduler.nice: {nice} ({field}.scheduler.nice takes -20 to 19)"
            ));
        }
        let realtime = matches!(
            policy,
            LinuxSchedulerPolicy::SchedFifo | LinuxSchedulerPolicy::SchedRr
        );
        if s.priority().unwrap_or(0) != 0 && !realtime {
            return Err(format!(
                "scheduler.priority can only be specified for SchedFIFO or SchedRR policy \
                 ({field}.scheduler.policy is {policy}: remove {field}.scheduler.priority or use \
                 SCHED_FIFO or SCHED_RR)"
            ));
        }
        let deadline_params = [s.runtime(), s.deadline(), s.period()]
            .iter()
            .any(|v| v.unwrap_or(0) != 0);
        if deadline_params && policy != LinuxSchedulerPolicy::SchedDeadline {
            return Err(format!(
                "scheduler runtime/deadline/period can only be specified for SchedDeadline \
                 policy ({field}.scheduler.policy is {policy}: remove them or use \
                 SCHED_DEADLINE)"
            ));
        }
    }
    Ok(())
}

/// Checks the `linux` fields runc refuses: `rootfsPropagation` must be one of
/// [`ROOTFS_PROPAGATIONS`] (runc specconv), and `intelRdt` needs Intel RDT, which the microVM
/// never has (runc's validator when the host has none). Returns the message to refuse with.
pub fn check_linux(linux: &Linux) -> Result<(), String> {
    if let Some(p) = linux.rootfs_propagation().as_deref() {
        if !p.is_empty() && !ROOTFS_PROPAGATIONS.contains(&p) {
            return Err(format!(
                "rootfsPropagation={p} is not supported (linux.rootfsPropagation takes {})",
                ROOTFS_PROPAGATIONS.join(", ")
            ));
        }
    }
    if linux.intel_rdt().is_some() {
        return Err(
            "intelRdt is specified in config, but Intel RDT is not supported or enabled \
                    (the microVM has no Intel RDT: remove linux.intelRdt from config.json)"
                .to_owned(),
        );
    }
    Ok(())
}

/// Checks the whole spec: [`check_process`] on `process`, [`check_linux`] on `linux`.
pub fn check_spec(spec: &Spec) -> Result<(), String> {
    if let Some(p) = spec.process() {
        check_process(p, "process")?;
    }
    if let Some(linux) = spec.linux() {
        check_linux(linux)?;
    }
    Ok(())
}

/// Warnings for fields Vessel accepts but does not apply, each one line, for `create` to log
/// once:
/// - `linux.personality.flags`: runc's own warning (it ignores them too);
/// - `process.apparmorProfile`, `process.selinuxLabel`, `linux.mountLabel`: the guest kernel has
///   neither AppArmor nor SELinux. runc refuses an SELinux label on a host without SELinux, but
///   containerd and podman set an AppArmor profile whenever the *host* has AppArmor, so refusing
///   would break them; the VM boundary stands in for the profile.
pub fn warnings(spec: &Spec) -> Vec<String> {
    let mut out = Vec::new();
    let linux = spec.linux().as_ref();
    if let Some(flags) = linux
        .and_then(|l| l.personality().as_ref())
        .and_then(|p| p.flags().as_ref())
        .filter(|f| !f.is_empty())
    {
        out.push(format!(
            "ignoring unsupported personality flags: [{}] because personality flag has not \
             supported at this time",
            flags.join(" ")
        ));
    }
    let mut labels = Vec::new();
    let process = spec.process().as_ref();
    let mut add = |field: &str, value: Option<&String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            labels.push(format!("{field} {v:?}"));
        }
    };
    add(
        "process.apparmorProfile",
        process.and_then(|p| p.apparmor_profile().as_ref()),
    );
    add(
        "process.selinuxLabel",
        process.and_then(|p| p.selinux_label().as_ref()),
    );
    add(
        "linux.mountLabel",
        linux.and_then(|l| l.mount_label().as_ref()),
    );
    if !labels.is_empty() {
        out.push(format!(
            "{} not applied: the microVM's kernel has neither AppArmor nor SELinux (the VM \
             isolates the container instead)",
            labels.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        let mut base = serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}},
        });
        for (k, v) in json.as_object().unwrap() {
            match (base.get_mut(k), v) {
                (Some(serde_json::Value::Object(b)), serde_json::Value::Object(v)) => {
                    b.extend(v.clone())
                }
                _ => {
                    base[k] = v.clone();
                }
            }
        }
        serde_json::from_value(base).unwrap()
    }

    fn check(json: serde_json::Value) -> Result<(), String> {
        check_spec(&spec(json))
    }

    #[test]
    fn rootfs_propagation_takes_runc_s_eight_values() {
        for p in ROOTFS_PROPAGATIONS {
            check(serde_json::json!({"linux": {"rootfsPropagation": p}})).unwrap();
        }
        check(serde_json::json!({"linux": {"rootfsPropagation": ""}})).unwrap();
        assert_eq!(
            check(serde_json::json!({"linux": {"rootfsPropagation": "bogus"}})).unwrap_err(),
            "rootfsPropagation=bogus is not supported (linux.rootfsPropagation takes private, \
             rprivate, slave, rslave, shared, rshared, unbindable, runbindable)"
        );
    }

    #[test]
    fn oom_score_adj_must_be_in_the_kernel_s_range() {
        for ok in [-1000, -998, 0, 123, 1000] {
            check(serde_json::json!({"process": {"oomScoreAdj": ok}})).unwrap();
        }
        assert_eq!(
            check(serde_json::json!({"process": {"oomScoreAdj": 1001}})).unwrap_err(),
            "failed to update /proc/self/oom_score_adj: Invalid argument (process.oomScoreAdj \
             is 1001: set it between -1000 and 1000)"
        );
        let err = check(serde_json::json!({"process": {"oomScoreAdj": -1001}})).unwrap_err();
        assert!(err.contains("process.oomScoreAdj is -1001"), "{err}");
        // exec's process.json is checked under its own name.
        let p: Process = serde_json::from_value(serde_json::json!({
            "cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}, "oomScoreAdj": 5000
        }))
        .unwrap();
        assert!(check_process(&p, "process.json")
            .unwrap_err()
            .contains("(process.json.oomScoreAdj is 5000"));
    }

    #[test]
    fn intel_rdt_is_refused_naming_the_field() {
        assert_eq!(
            check(serde_json::json!({"linux": {"intelRdt": {"closID": "guaranteed"}}}))
                .unwrap_err(),
            "intelRdt is specified in config, but Intel RDT is not supported or enabled (the \
             microVM has no Intel RDT: remove linux.intelRdt from config.json)"
        );
        let err = check(serde_json::json!({"linux": {"intelRdt": {"l3CacheSchema": "L3:0=ff"}}}))
            .unwrap_err();
        assert!(err.starts_with("intelRdt is specified in config"), "{err}");
    }

    #[test]
    fn io_priority_and_scheduler_follow_runc_1_2_s_validator() {
        check(serde_json::json!({"process": {"ioPriority":
            {"class": "IOPRIO_CLASS_IDLE", "priority": 7}}}))
        .unwrap();
        assert_eq!(
            check(serde_json::json!({"process": {"ioPriority":
                {"class": "IOPRIO_CLASS_BE", "priority": 8}}}))
            .unwrap_err(),
            "invalid ioPriority.Priority: 8 (process.ioPriority.priority takes 0 (highest) to 7 \
             (lowest))"
        );
        check(serde_json::json!({"process": {"scheduler":
            {"policy": "SCHED_FIFO", "priority": 10}}}))
        .unwrap();
        check(serde_json::json!({"process": {"scheduler":
            {"policy": "SCHED_BATCH", "nice": 19}}}))
        .unwrap();
        check(serde_json::json!({"process": {"scheduler":
            {"policy": "SCHED_DEADLINE", "runtime": 10_000_000u64, "deadline": 20_000_000u64,
             "period": 20_000_000u64}}}))
        .unwrap();
        assert_eq!(
            check(serde_json::json!({"process": {"scheduler":
                {"policy": "SCHED_OTHER", "nice": 20}}}))
            .unwrap_err(),
            "invalid scheduler.nice: 20 (process.scheduler.nice takes -20 to 19)"
        );
        assert_eq!(
            check(serde_json::json!({"process": {"scheduler":
                {"policy": "SCHED_OTHER", "priority": 5}}}))
            .unwrap_err(),
            "scheduler.priority can only be specified for SchedFIFO or SchedRR policy \
             (process.scheduler.policy is SCHED_OTHER: remove process.scheduler.priority or use \
             SCHED_FIFO or SCHED_RR)"
        );
        assert_eq!(
            check(serde_json::json!({"process": {"scheduler":
                {"policy": "SCHED_RR", "priority": 5, "runtime": 1000}}}))
            .unwrap_err(),
            "scheduler runtime/deadline/period can only be specified for SchedDeadline policy \
             (process.scheduler.policy is SCHED_RR: remove them or use SCHED_DEADLINE)"
        );
    }

    #[test]
    fn labels_and_personality_flags_are_warned_about_not_refused() {
        let s = spec(serde_json::json!({
            "process": {"apparmorProfile": "cri-containerd.apparmor.d",
                        "selinuxLabel": "system_u:system_r:container_t:s0"},
            "linux": {"mountLabel": "system_u:object_r:container_file_t:s0",
                      "personality": {"domain": "LINUX32", "flags": ["SHORT_INODE", "WHOLE_SECONDS"]}},
        }));
        check_spec(&s).unwrap();
        assert_eq!(
            warnings(&s),
            [
                "ignoring unsupported personality flags: [SHORT_INODE WHOLE_SECONDS] because \
                 personality flag has not supported at this time"
                    .to_owned(),
                "process.apparmorProfile \"cri-containerd.apparmor.d\", process.selinuxLabel \
                 \"system_u:system_r:container_t:s0\", linux.mountLabel \
                 \"system_u:object_r:container_file_t:s0\" not applied: the microVM's kernel has \
                 neither AppArmor nor SELinux (the VM isolates the container instead)"
                    .to_owned(),
            ]
        );
        let only = spec(serde_json::json!({"process": {"apparmorProfile": "docker-default"}}));
        assert_eq!(
            warnings(&only),
            [
                "process.apparmorProfile \"docker-default\" not applied: the microVM's kernel has \
              neither AppArmor nor SELinux (the VM isolates the container instead)"
                    .to_owned()
            ]
        );
        assert!(warnings(&spec(serde_json::json!({}))).is_empty());
        // Empty labels (what some callers write for "none") are no setting at all.
        assert!(warnings(&spec(
            serde_json::json!({"process": {"apparmorProfile": ""}})
        ))
        .is_empty());
    }
}
