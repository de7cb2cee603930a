//! VM size from the container's spec (docs/design.md "VM sizing").
//!
//! - vCPUs: `io.vessel.vcpus` if set; else `ceil(linux.resources.cpu.quota / period)` when both
//!   are positive (period defaults to 100000 µs, the kernel's default); else the number of CPUs
//!   in `linux.resources.cpu.cpus` (a cpuset list such as `0-3,8`); else 1. Capped at
//!   `max_vcpus` (the host's CPU count).
//! - Memory: `io.vessel.memory_mib` if set (the whole guest, no overhead added); else
//!   `ceil(linux.resources.memory.limit / 1 MiB)` plus [`GUEST_OVERHEAD_MIB`] for the guest
//!   kernel and agent; else [`DEFAULT_MEMORY_MIB`]. Never below [`MIN_MEMORY_MIB`].
//! - A CRI pod's sandbox container (`io.kubernetes.cri.container-type: sandbox`) is sized for
//!   the whole pod by the annotations containerd (1.6+, with kubelets from 1.23) copies from the
//!   pod's resources, in place of its own (empty) `linux.resources`: vCPUs from
//!   `io.kubernetes.cri.sandbox-cpu-quota` / `-cpu-period`, or, without a quota, from
//!   `-cpu-shares` / 1024 (the pod's CPU requests); memory from `io.kubernetes.cri.sandbox-memory`
//!   (bytes) plus the overhead. `io.vessel.*` still win.
//! - A container that joins a pod's VM ([`check_member`]) must fit it: its memory limit within
//!   the VM's memory less the overhead, its CPU limit within the VM's vCPUs.

use oci_spec::runtime::Spec;

/// Guest memory added to the container's own limit for the kernel, page cache and agent.
pub const GUEST_OVERHEAD_MIB: u64 = 64;
/// Guest memory when the spec sets no memory limit.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// Smallest guest Vessel boots.
pub const MIN_MEMORY_MIB: u64 = 128;
/// Annotation overriding the vCPU count.
pub const VCPUS_ANNOTATION: &str = "io.vessel.vcpus";
/// Annotation overriding the guest memory, in MiB.
pub const MEMORY_ANNOTATION: &str = "io.vessel.memory_mib";
/// CFS period the kernel uses when none is given, in µs.
const DEFAULT_CFS_PERIOD_US: u64 = 100_000;
/// CRI's annotation of the pod's memory limit in bytes, on the sandbox container.
pub const CRI_SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
/// CRI's annotation of the pod's CFS quota in µs, on the sandbox container.
pub const CRI_SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
/// CRI's annotation of the pod's CFS period in µs, on the sandbox container.
pub const CRI_SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
/// CRI's annotation of the pod's CPU shares, on the sandbox container.
pub const CRI_SANDBOX_CPU_SHARES: &str = "io.kubernetes.cri.sandbox-cpu-shares";

/// Errors of [`size_vm`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizingError {
    /// An `io.vessel.*` sizing annotation is not a positive integer.
    #[error("annotation {name}: {value:?} is not a positive integer")]
    ParseAnnotation {
        /// The annotation.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// `linux.resources.cpu.cpus` is not a cpuset list.
    #[error("linux.resources.cpu.cpus: {0:?} is not a cpu list")]
    ParseCpuset(String),
    /// A CRI sandbox sizing annotation is not an integer.
    #[error("annotation {name}: {value:?} is not an integer")]
    ParseCriAnnotation {
        /// The annotation.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// A container joining a pod's VM asks for more than the VM has.
    #[error(
        "{field} {wanted} does not fit pod {sandbox}'s VM, which has {has}: size the pod's VM \
         when its sandbox container is created, with the pod's resources (containerd passes \
         them as {annotation}) or the annotation {vessel_annotation} on the sandbox container"
    )]
    MemberTooLarge {
        /// The member's field.
        field: &'static str,
        /// What it asks for.
        wanted: String,
        /// The pod's sandbox container.
        sandbox: String,
        /// What the VM has for containers.
        has: String,
        /// The CRI annotation that sizes the VM.
        annotation: &'static str,
        /// The Vessel annotation that sizes the VM.
        vessel_annotation: &'static str,
    },
}

/// The size of a container's VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmSize {
    /// Number of vCPUs, at least 1.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
}

fn annotation(spec: &Spec, name: &'static str) -> Result<Option<u64>, SizingError> {
    let Some(value) = spec.annotations().as_ref().and_then(|a| a.get(name)) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(SizingError::ParseAnnotation {
            name,
            value: value.clone(),
        }),
    }
}

/// Counts the CPUs of a cpuset list (`0-3,8` is 5).
pub fn count_cpuset(list: &str) -> Result<u32, SizingError> {
    let bad = || SizingError::ParseCpuset(list.to_owned());
    let mut count = 0u32;
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (
                a.parse::<u32>().map_err(|_| bad())?,
                b.parse::<u32>().map_err(|_| bad())?,
            ),
            None => {
                let n = part.parse::<u32>().map_err(|_| bad())?;
                (n, n)
            }
        };
        if hi < lo {
            return Err(bad());
        }
        count += hi - lo + 1;
    }
    Ok(count)
}

/// The host's online CPUs, the cap on a VM's vCPUs (1 when unknown).
pub fn host_cpus() -> u32 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .unwrap_or(1) as u32
}

/// The spec the guest agent applies, with `linux.resources.cpu.cpus` and `.mems` renumbered for the
/// guest: the host CPUs a cpuset names are enforced on the host (the monitor's cgroup, whose
/// threads are the vCPUs), while the guest only has CPUs `0..vcpus` and memory node 0, so writing
/// the host's numbers into the guest's `cpuset.cpus` would fail (`EINVAL`). A cpuset becomes
/// `0-<vcpus-1>` (`0` for one vCPU), mems become `0`; everything else is kept.
pub fn guest_cpuset(spec: &Spec, vcpus: u32) -> Spec {
    let mut out = spec.clone();
    let Some(mut linux) = out.linux().clone() else {
        return out;
    };
    let Some(mut resources) = linux.resources().clone() else {
        return out;
    };
    let Some(mut cpu) = resources.cpu().clone() else {
        return out;
    };
    if cpu.cpus().is_some() {
        let last = vcpus.max(1) - 1;
        cpu.set_cpus(Some(if last == 0 {
            "0".into()
        } else {
            format!("0-{last}")
        }));
    }
    if cpu.mems().is_some() {
        cpu.set_mems(Some("0".into()));
    }
    resources.set_cpu(Some(cpu));
    linux.set_resources(Some(resources));
    out.set_linux(Some(linux));
    out
}

/// A CRI sizing annotation of a sandbox container as an integer (`None` when absent).
fn cri_annotation(spec: &Spec, name: &'static str) -> Result<Option<i64>, SizingError> {
    let Some(value) = spec.annotations().as_ref().and_then(|a| a.get(name)) else {
        return Ok(None);
    };
    value
        .trim()
        .parse::<i64>()
        .map(Some)
        .map_err(|_| SizingError::ParseCriAnnotation {
            name,
            value: value.clone(),
        })
}

/// The pod's size from a CRI sandbox container's annotations, when it is one and has them:
/// (vCPUs, memory MiB with the overhead), each `None` when not given.
fn cri_pod_size(spec: &Spec) -> Result<(Option<u32>, Option<u64>), SizingError> {
    let is_sandbox = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(crate::sandbox::pod::CRI_CONTAINER_TYPE))
        .is_some_and(|t| t == "sandbox");
    if !is_sandbox {
        return Ok((None, None));
    }
    let quota = cri_annotation(spec, CRI_SANDBOX_CPU_QUOTA)?.unwrap_or(0);
    let period = cri_annotation(spec, CRI_SANDBOX_CPU_PERIOD)?
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_CFS_PERIOD_US as i64);
    let shares = cri_annotation(spec, CRI_SANDBOX_CPU_SHARES)?.unwrap_or(0);
    let vcpus = if quota > 0 {
        Some((quota as u64).div_ceil(period as u64) as u32)
    } else if shares > 1024 {
        Some((shares as u64).div_ceil(1024) as u32)
    } else {
        None
    };
    let memory = cri_annotation(spec, CRI_SANDBOX_MEMORY)?
        .filter(|m| *m > 0)
        .map(|m| (m as u64).div_ceil(1 << 20) + GUEST_OVERHEAD_MIB);
    Ok((vcpus, memory))
}

/// The VM size for `spec`; see the module documentation for the rule.
pub fn size_vm(spec: &Spec, max_vcpus: u32) -> Result<VmSize, SizingError> {
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let cpu = resources.and_then(|r| r.cpu().as_ref());
    let (pod_vcpus, pod_memory) = cri_pod_size(spec)?;
    let vcpus = match annotation(spec, VCPUS_ANNOTATION)?
        .map(|n| n as u32)
        .or(pod_vcpus)
    {
        Some(n) => n,
        None => {
            let quota = cpu.and_then(|c| c.quota()).unwrap_or(0);
            // Zero means unset (Docker sends `period: 0` and `cpus: ""` for no limit).
            let period = cpu
                .and_then(|c| c.period())
                .filter(|p| *p > 0)
                .unwrap_or(DEFAULT_CFS_PERIOD_US);
            if quota > 0 {
                (quota as u64).div_ceil(period) as u32
            } else if let Some(cpus) = cpu
                .and_then(|c| c.cpus().as_deref())
                .filter(|c| !c.is_empty())
            {
                count_cpuset(cpus)?
            } else {
                1
            }
        }
    };
    let memory_mib = match annotation(spec, MEMORY_ANNOTATION)?.or(pod_memory) {
        Some(n) => n,
        None => match resources
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
        {
            Some(limit) if limit > 0 => (limit as u64).div_ceil(1 << 20) + GUEST_OVERHEAD_MIB,
            _ => DEFAULT_MEMORY_MIB,
        },
    };
    Ok(VmSize {
        vcpus: vcpus.clamp(1, max_vcpus.max(1)),
        memory_mib: memory_mib.max(MIN_MEMORY_MIB),
    })
}

/// Checks that a container joining the VM of pod `sandbox`, of size `vm`, fits it
/// ([`SizingError::MemberTooLarge`] names the field, the VM's size and how to size it).
pub fn check_member(spec: &Spec, vm: VmSize, sandbox: &str) -> Result<(), SizingError> {
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let too_large = |field, wanted: String, has: String, annotation, vessel_annotation| {
        SizingError::MemberTooLarge {
            field,
            wanted,
            sandbox: sandbox.to_owned(),
            has,
            annotation,
            vessel_annotation,
        }
    };
    if let Some(limit) = resources
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0)
    {
        let wanted = (limit as u64).div_ceil(1 << 20);
        let room = vm.memory_mib.saturating_sub(GUEST_OVERHEAD_MIB);
        if wanted > room {
            return Err(too_large(
                "linux.resources.memory.limit",
                format!("{wanted} MiB"),
                format!(
                    "{} MiB, {room} MiB for containers after the guest's {GUEST_OVERHEAD_MIB} MiB",
                    vm.memory_mib
                ),
                CRI_SANDBOX_MEMORY,
                MEMORY_ANNOTATION,
            ));
        }
    }
    let cpu = resources.and_then(|r| r.cpu().as_ref());
    if let Some(quota) = cpu.and_then(|c| c.quota()).filter(|q| *q > 0) {
        let period = cpu
            .and_then(|c| c.period())
            .filter(|p| *p > 0)
            .unwrap_or(DEFAULT_CFS_PERIOD_US);
        let wanted = (quota as u64).div_ceil(period);
        if wanted > u64::from(vm.vcpus) {
            return Err(too_large(
                "linux.resources.cpu.quota",
                format!("{quota} µs per {period} µs ({wanted} CPUs)"),
                format!("{} vCPUs", vm.vcpus),
                CRI_SANDBOX_CPU_QUOTA,
                VCPUS_ANNOTATION,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cri_sandbox_is_sized_for_its_pod() {
        let pause = |annotations: serde_json::Value| -> Spec {
            serde_json::from_value(serde_json::json!({
                "ociVersion": "1.0.2",
                "annotations": annotations,
                "linux": {"resources": {"cpu": {"shares": 2}}}
            }))
            .unwrap()
        };
        let s = pause(serde_json::json!({
            "io.kubernetes.cri.container-type": "sandbox",
            CRI_SANDBOX_MEMORY: "1073741824",
            CRI_SANDBOX_CPU_QUOTA: "250000",
            CRI_SANDBOX_CPU_PERIOD: "100000",
            CRI_SANDBOX_CPU_SHARES: "2048"
        }));
        assert_eq!(
            size_vm(&s, 8).unwrap(),
            VmSize {
                vcpus: 3,
                memory_mib: 1024 + GUEST_OVERHEAD_MIB
            }
        );
        // Requests only (no limits): shares / 1024 vCPUs, the default memory.
        let s = pause(serde_json::json!({
            "io.kubernetes.cri.container-type": "sandbox",
            CRI_SANDBOX_MEMORY: "0",
            CRI_SANDBOX_CPU_QUOTA: "-1",
            CRI_SANDBOX_CPU_SHARES: "2048"
        }));
        assert_eq!(
            size_vm(&s, 8).unwrap(),
            VmSize {
                vcpus: 2,
                memory_mib: DEFAULT_MEMORY_MIB
            }
        );
        // Only on a sandbox; Vessel's own annotation wins.
        let s = pause(serde_json::json!({
            "io.kubernetes.cri.container-type": "container",
            CRI_SANDBOX_MEMORY: "1073741824"
        }));
        assert_eq!(size_vm(&s, 8).unwrap().memory_mib, DEFAULT_MEMORY_MIB);
        let s = pause(serde_json::json!({
            "io.kubernetes.cri.container-type": "sandbox",
            CRI_SANDBOX_MEMORY: "1073741824",
            MEMORY_ANNOTATION: "300"
        }));
        assert_eq!(size_vm(&s, 8).unwrap().memory_mib, 300);
        let s = pause(serde_json::json!({
            "io.kubernetes.cri.container-type": "sandbox",
            CRI_SANDBOX_MEMORY: "lots"
        }));
        assert_eq!(
            size_vm(&s, 8).unwrap_err().to_string(),
            "annotation io.kubernetes.cri.sandbox-memory: \"lots\" is not an integer"
        );
    }

    #[test]
    fn a_member_must_fit_its_pods_vm() {
        let member = |resources: serde_json::Value| -> Spec {
            serde_json::from_value(serde_json::json!({
                "ociVersion": "1.0.2",
                "linux": {"resources": resources}
            }))
            .unwrap()
        };
        let vm = VmSize {
            vcpus: 2,
            memory_mib: 512,
        };
        check_member(&member(serde_json::json!({})), vm, "pod").unwrap();
        check_member(
            &member(serde_json::json!({"memory": {"limit": 448u64 << 20},
                                       "cpu": {"quota": 200000, "period": 100000}})),
            vm,
            "pod",
        )
        .unwrap();
        let e = check_member(
            &member(serde_json::json!({"memory": {"limit": 449u64 << 20}})),
            vm,
            "pod",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "linux.resources.memory.limit 449 MiB does not fit pod pod's VM, which has 512 MiB, \
             448 MiB for containers after the guest's 64 MiB: size the pod's VM when its sandbox \
             container is created, with the pod's resources (containerd passes them as \
             io.kubernetes.cri.sandbox-memory) or the annotation io.vessel.memory_mib on the \
             sandbox container"
        );
        let e = check_member(
            &member(serde_json::json!({"cpu": {"quota": 300000, "period": 100000}})),
            vm,
            "pod",
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "linux.resources.cpu.quota 300000 µs per 100000 µs (3 CPUs) does not fit pod \
                 pod's VM, which has 2 vCPUs"
            ),
            "{e}"
        );
    }

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_without_resources() {
        let s = spec(r#"{"ociVersion":"1.0.2"}"#);
        assert_eq!(
            size_vm(&s, 8).unwrap(),
            VmSize {
                vcpus: 1,
                memory_mib: DEFAULT_MEMORY_MIB
            }
        );
    }

    #[test]
    fn docker_zeros_mean_the_default_size() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"resources": {
                "memory": {"limit": 0, "reservation": 0, "swap": 0},
                "cpu": {"shares": 0, "quota": 0, "period": 0, "cpus": "", "mems": ""},
                "pids": {"limit": 0}
            }}
        }))
        .unwrap();
        let size = size_vm(&spec, 8).unwrap();
        assert_eq!((size.vcpus, size.memory_mib), (1, DEFAULT_MEMORY_MIB));
        // A quota with a period of 0 counts against the default period.
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"resources": {"cpu": {"quota": 250000, "period": 0}}}
        }))
        .unwrap();
        assert_eq!(size_vm(&spec, 8).unwrap().vcpus, 3);
    }

    #[test]
    fn quota_period_and_memory_limit() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","linux":{"resources":{"cpu":{"quota":150000,"period":100000},
                "memory":{"limit":268435456}}}}"#,
        );
        assert_eq!(
            size_vm(&s, 8).unwrap(),
            VmSize {
                vcpus: 2,
                memory_mib: 256 + GUEST_OVERHEAD_MIB
            }
        );
        assert_eq!(
            size_vm(&s, 1).unwrap().vcpus,
            1,
            "capped at the host's CPUs"
        );
    }

    #[test]
    fn guest_cpuset_renumbers_host_cpus_and_mems_for_the_guest() {
        fn cpu_of(s: &Spec) -> oci_spec::runtime::LinuxCpu {
            let linux = s.linux().as_ref().unwrap();
            linux.resources().as_ref().unwrap().cpu().clone().unwrap()
        }
        let s: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","linux":{"resources":{"cpu":{"cpus":"2-3","mems":"1","shares":512}}}}"#,
        )
        .unwrap();
        let size = size_vm(&s, 8).unwrap();
        assert_eq!(size.vcpus, 2);
        let g = guest_cpuset(&s, size.vcpus);
        let cpu = g
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .cpu()
            .clone()
            .unwrap();
        assert_eq!(
            (cpu.cpus().as_deref(), cpu.mems().as_deref(), cpu.shares()),
            (Some("0-1"), Some("0"), Some(512))
        );
        let one = guest_cpuset(&s, 1);
        let cpu = one
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .cpu()
            .clone()
            .unwrap();
        assert_eq!(cpu.cpus().as_deref(), Some("0"));
        // No cpuset: nothing added.
        let plain: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","linux":{"resources":{"cpu":{"shares":2}}}}"#,
        )
        .unwrap();
        let cpu = cpu_of(&guest_cpuset(&plain, 2));
        assert_eq!((cpu.cpus().as_deref(), cpu.mems().as_deref()), (None, None));
    }

    #[test]
    fn cpuset_count_and_small_limits() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","linux":{"resources":{"cpu":{"cpus":"0-2,7"},
                "memory":{"limit":1048576}}}}"#,
        );
        assert_eq!(
            size_vm(&s, 16).unwrap(),
            VmSize {
                vcpus: 4,
                memory_mib: MIN_MEMORY_MIB
            }
        );
        assert!(count_cpuset("3-1").is_err());
        assert!(count_cpuset("a").is_err());
    }

    #[test]
    fn annotations_override_and_are_checked() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","annotations":{"io.vessel.vcpus":"3","io.vessel.memory_mib":"1024"},
                "linux":{"resources":{"cpu":{"quota":500000,"period":100000}}}}"#,
        );
        assert_eq!(
            size_vm(&s, 8).unwrap(),
            VmSize {
                vcpus: 3,
                memory_mib: 1024
            }
        );
        let bad = spec(r#"{"ociVersion":"1.0.2","annotations":{"io.vessel.vcpus":"many"}}"#);
        assert_eq!(
            size_vm(&bad, 8).unwrap_err().to_string(),
            "annotation io.vessel.vcpus: \"many\" is not a positive integer"
        );
    }
}
