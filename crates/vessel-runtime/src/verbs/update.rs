//! `update` (runc update.go; libcontainer `Container.Set`): new resource limits for a running
//! container, applied to its cgroup in the guest by the agent's `update` request.
//!
//! - The request is a partial OCI `linux.resources` (from `--resources` or the per-value
//!   flags). It is merged over the container's current resources, which start as the bundle's
//!   `linux.resources` and are kept, after each successful update, in
//!   `<root>/<id>/resources.json` (runc keeps them in its `state.json`).
//! - The agent gets the partial request, completed where one cgroup file needs two values:
//!   `cpu.max` takes quota and period, `memory.swap.max` is worked out from swap and limit.
//! - The VM's size is fixed at create (docs/design.md "VM sizing"), so a limit the VM cannot
//!   give is refused, naming the value and the VM's size: a memory limit or reservation above
//!   the guest's memory, a CPU quota above its vCPUs, a cpuset naming CPUs or memory nodes the
//!   guest does not have. Realtime CPU limits (cgroup v1 only) and Intel RDT are refused too.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;
use serde_json::Value;

use crate::host::bundle::Bundle;
use crate::host::state::{self, StateError, StateStore, Status};
use crate::sandbox::sizing::{self, SizingError, VmSize};
use crate::verbs::guest::{self, GuestError};

/// File under `<root>/<id>` holding the container's current `linux.resources` (JSON).
pub const RESOURCES_FILE: &str = "resources.json";

/// Errors of [`update`].
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// Unknown ID, invalid ID, or store failure.
    #[error(transparent)]
    Store(#[from] StateError),
    /// The container has stopped (runc's `ErrNotRunning` text).
    #[error("container not running")]
    NotRunning,
    /// The container's bundle could not be loaded (its VM size comes from it).
    #[error("load the container's bundle")]
    LoadBundle(#[source] crate::host::bundle::BundleError),
    /// The VM size could not be worked out from the bundle.
    #[error("work out the container's VM size")]
    SizeVm(#[source] SizingError),
    /// The request cannot be met by this container's VM.
    #[error("{0}")]
    ExceedsVm(String),
    /// The request asks for something Vessel's guests do not have.
    #[error("{0}")]
    Unsupported(String),
    /// The resources could not be merged or decoded.
    #[error("linux.resources: {0}")]
    DecodeResources(String),
    /// The agent refused or could not be reached.
    #[error("update the container's cgroup in the guest")]
    Apply(#[source] GuestError),
    /// `resources.json` could not be read or written.
    #[error("{op} {path}")]
    PersistResources {
        /// `read` or `write`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Applies `request` (a partial `linux.resources`) to container `id`; see the module docs.
pub fn update(store: &StateStore, id: &str, request: &LinuxResources) -> Result<(), UpdateError> {
    let _lock = store.lock(id)?;
    let record = store.load(id)?;
    if record.status() == Status::Stopped {
        return Err(UpdateError::NotRunning);
    }
    let bundle = Bundle::load(&record.bundle).map_err(UpdateError::LoadBundle)?;
    // The VM's size as create recorded it: a pod member's is its pod's sandbox's.
    let recorded = match &record.pod {
        Some(sandbox) => store.load_any(sandbox).ok().and_then(|r| r.vm_size),
        None => record.vm_size,
    };
    let size = match recorded {
        Some(size) => size,
        None => sizing::size_vm(&bundle.spec, sizing::host_cpus()).map_err(UpdateError::SizeVm)?,
    };
    check_supported(request)?;
    let file = store.container_dir(id)?.join(RESOURCES_FILE);
    let current = match read_current(&file)? {
        Some(r) => r,
        None => bundle
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .unwrap_or_default(),
    };
    let merged = merge(&current, request)?;
    check_fits(&merged, size)?;
    let sent = completed(request, &merged)?;
    guest::update(store, id, &sent).map_err(UpdateError::Apply)?;
    let json = serde_json::to_vec(&merged).expect("resources always serialise");
    state::write_atomic(&file, &json, 0o600).map_err(|source| UpdateError::PersistResources {
        op: "write",
        path: file,
        source,
    })
}

/// The container's current resources: `resources.json`, or `None` before the first update.
pub fn current(store: &StateStore, id: &str) -> Result<Option<LinuxResources>, UpdateError> {
    read_current(&store.container_dir(id)?.join(RESOURCES_FILE))
}

fn read_current(file: &Path) -> Result<Option<LinuxResources>, UpdateError> {
    match std::fs::read(file) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| UpdateError::PersistResources {
                    op: "read",
                    path: file.to_owned(),
                    source: e.into(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(UpdateError::PersistResources {
            op: "read",
            path: file.to_owned(),
            source,
        }),
    }
}

fn to_value(r: &LinuxResources) -> Value {
    serde_json::to_value(r).expect("resources always serialise")
}

fn from_value(v: Value) -> Result<LinuxResources, UpdateError> {
    serde_json::from_value(v).map_err(|e| UpdateError::DecodeResources(e.to_string()))
}

/// `over` merged into `base`, object by object; any other value of `over` replaces `base`'s.
fn merge_values(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge_values(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) if !o.is_null() => *b = o.clone(),
        _ => {}
    }
}

/// `request` merged over `current`: the container's resources after the update.
pub fn merge(
    current: &LinuxResources,
    request: &LinuxResources,
) -> Result<LinuxResources, UpdateError> {
    let mut v = to_value(current);
    merge_values(&mut v, &to_value(request));
    from_value(v)
}

/// `request` with the values one cgroup file needs together taken from `merged`: the CFS period
/// with a quota (and the quota with a period), the memory limit with a swap limit.
fn completed(
    request: &LinuxResources,
    merged: &LinuxResources,
) -> Result<LinuxResources, UpdateError> {
    let mut v = to_value(request);
    let m = to_value(merged);
    let cpu = &v["cpu"];
    if !cpu["quota"].is_null() || !cpu["period"].is_null() {
        for key in ["quota", "period"] {
            if v["cpu"][key].is_null() && !m["cpu"][key].is_null() {
                v["cpu"][key] = m["cpu"][key].clone();
            }
        }
    }
    if !v["memory"]["swap"].is_null()
        && v["memory"]["limit"].is_null()
        && !m["memory"]["limit"].is_null()
    {
        v["memory"]["limit"] = m["memory"]["limit"].clone();
    }
    from_value(v)
}

fn check_supported(r: &LinuxResources) -> Result<(), UpdateError> {
    let cpu = r.cpu().as_ref();
    if cpu.is_some_and(|c| c.realtime_period().is_some() || c.realtime_runtime().is_some()) {
        return Err(UpdateError::Unsupported(
            "cpu.realtimePeriod/realtimeRuntime (--cpu-rt-period, --cpu-rt-runtime): realtime \
             CPU limits need cgroup v1; Vessel's guests use cgroup v2"
                .into(),
        ));
    }
    Ok(())
}

/// Refuses what the container's VM of `size` cannot give.
pub fn check_fits(r: &LinuxResources, size: VmSize) -> Result<(), UpdateError> {
    let vm_bytes = size.memory_mib.saturating_mul(1 << 20);
    let memory = r.memory().as_ref();
    for (name, flag, value) in [
        ("memory.limit", "--memory", memory.and_then(|m| m.limit())),
        (
            "memory.reservation",
            "--memory-reservation",
            memory.and_then(|m| m.reservation()),
        ),
    ] {
        if let Some(v) = value.filter(|v| *v > 0 && *v as u64 > vm_bytes) {
            return Err(UpdateError::ExceedsVm(format!(
                "{name} ({flag}) {v} bytes ({} MiB) exceeds the container's VM memory of {} MiB; \
                 a VM's memory is fixed at create: give the container more memory there \
                 (linux.resources.memory.limit or the {} annotation)",
                (v as u64).div_ceil(1 << 20),
                size.memory_mib,
                sizing::MEMORY_ANNOTATION
            )));
        }
    }
    let vcpus = size.vcpus;
    let fixed = format!(
        "a VM's vCPUs are fixed at create: give the container more there (linux.resources.cpu \
         or the {} annotation)",
        sizing::VCPUS_ANNOTATION
    );
    let Some(cpu) = r.cpu().as_ref() else {
        return Ok(());
    };
    if let Some(quota) = cpu.quota().filter(|q| *q > 0) {
        let period = cpu.period().unwrap_or(100_000).max(1);
        let wanted = (quota as u64).div_ceil(period);
        if wanted > u64::from(vcpus) {
            return Err(UpdateError::ExceedsVm(format!(
                "cpu.quota ({}) {quota} over cpu.period {period} asks for {wanted} CPUs, but the \
                 container's VM has {vcpus} vCPU(s); {fixed}",
                "--cpu-quota"
            )));
        }
    }
    if let Some(list) = cpu.cpus().as_deref() {
        let highest = highest_in_list(list).map_err(|_| {
            UpdateError::DecodeResources(format!("cpu.cpus {list:?} is not a cpu list"))
        })?;
        if let Some(cpu_id) = highest.filter(|h| *h >= vcpus) {
            return Err(UpdateError::ExceedsVm(format!(
                "cpu.cpus (--cpuset-cpus) {list:?} names CPU {cpu_id}, but the container's VM \
                 has {vcpus} vCPU(s), numbered 0-{}; {fixed}",
                vcpus - 1
            )));
        }
    }
    if let Some(list) = cpu.mems().as_deref() {
        let highest = highest_in_list(list).map_err(|_| {
            UpdateError::DecodeResources(format!("cpu.mems {list:?} is not a node list"))
        })?;
        if let Some(node) = highest.filter(|h| *h > 0) {
            return Err(UpdateError::ExceedsVm(format!(
                "cpu.mems (--cpuset-mems) {list:?} names memory node {node}, but the container's \
                 VM has one memory node, 0"
            )));
        }
    }
    Ok(())
}

/// The highest number in a cpuset list (`0-3,8` gives 8), `None` for an empty list.
fn highest_in_list(list: &str) -> Result<Option<u32>, SizingError> {
    sizing::count_cpuset(list)?;
    Ok(list
        .split([',', '-'])
        .filter_map(|p| p.trim().parse::<u32>().ok())
        .max())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    const VM: VmSize = VmSize {
        vcpus: 2,
        memory_mib: 576,
    };

    #[test]
    fn merge_keeps_what_the_request_leaves_out() {
        let current = res(
            r#"{"memory":{"limit":536870912},"cpu":{"quota":50000,"period":100000},"pids":{"limit":100}}"#,
        );
        let merged = merge(
            &current,
            &res(r#"{"cpu":{"quota":150000},"pids":{"limit":5}}"#),
        )
        .unwrap();
        let v = to_value(&merged);
        assert_eq!(v["memory"]["limit"], 536870912);
        assert_eq!(v["cpu"]["quota"], 150000);
        assert_eq!(v["cpu"]["period"], 100000);
        assert_eq!(v["pids"]["limit"], 5);
    }

    #[test]
    fn the_agent_gets_both_values_a_cgroup_file_needs() {
        let merged = res(r#"{"memory":{"limit":104857600},"cpu":{"quota":50000,"period":200000}}"#);
        let sent = completed(&res(r#"{"cpu":{"quota":100000}}"#), &merged).unwrap();
        assert_eq!(
            to_value(&sent),
            serde_json::json!({"cpu":{"quota":100000,"period":200000}})
        );
        let sent = completed(&res(r#"{"memory":{"swap":209715200}}"#), &merged).unwrap();
        assert_eq!(
            to_value(&sent)["memory"],
            serde_json::json!({"limit":104857600,"swap":209715200})
        );
        let sent = completed(&res(r#"{"pids":{"limit":5}}"#), &merged).unwrap();
        assert_eq!(to_value(&sent), serde_json::json!({"pids":{"limit":5}}));
    }

    #[test]
    fn limits_beyond_the_vm_are_refused_with_both_sizes() {
        assert!(check_fits(
            &res(
                r#"{"memory":{"limit":536870912},"cpu":{"quota":200000,"cpus":"0-1","mems":"0"}}"#
            ),
            VM
        )
        .is_ok());
        assert!(check_fits(&res(r#"{"memory":{"limit":-1}}"#), VM).is_ok());
        let e = check_fits(&res(r#"{"memory":{"limit":4294967296}}"#), VM)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--memory") && e.contains("4096 MiB") && e.contains("576 MiB"),
            "{e}"
        );
        let e = check_fits(&res(r#"{"memory":{"reservation":1073741824}}"#), VM)
            .unwrap_err()
            .to_string();
        assert!(e.contains("memory.reservation"), "{e}");
        let e = check_fits(&res(r#"{"cpu":{"quota":300000,"period":100000}}"#), VM)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 CPUs") && e.contains("2 vCPU(s)"), "{e}");
        let e = check_fits(&res(r#"{"cpu":{"cpus":"0-3"}}"#), VM)
            .unwrap_err()
            .to_string();
        assert!(e.contains("CPU 3") && e.contains("0-1"), "{e}");
        let e = check_fits(&res(r#"{"cpu":{"mems":"0-1"}}"#), VM)
            .unwrap_err()
            .to_string();
        assert!(e.contains("memory node 1"), "{e}");
        assert!(matches!(
            check_fits(&res(r#"{"cpu":{"cpus":"x"}}"#), VM),
            Err(UpdateError::DecodeResources(_))
        ));
    }

    #[test]
    fn realtime_limits_are_refused() {
        let e = check_supported(&res(r#"{"cpu":{"realtimeRuntime":1000}}"#)).unwrap_err();
        assert!(e.to_string().contains("cgroup v2"), "{e}");
        assert!(check_supported(&res(r#"{"cpu":{"shares":512}}"#)).is_ok());
    }
}
