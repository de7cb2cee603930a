//! The container's cgroup v2: creation, `linux.resources`, freeze, process list, statistics.
//!
//! Values are converted as runc's cgroup v2 manager does (`libcontainer/cgroups/fs2`):
//! `memory.limit` -> `memory.max`, `memory.reservation` -> `memory.low`, `memory.swap` (memory +
//! swap) -> `memory.swap.max` = swap - limit, `cpu.shares` -> `cpu.weight` =
//! `1 + (shares - 2) * 9999 / 262142`, `cpu.quota`/`cpu.period` -> `cpu.max`, `cpu.burst` ->
//! `cpu.max.burst`, `cpu.idle` -> `cpu.idle`, `cpuset.cpus` and
//! `cpuset.mems`, `pids.limit` -> `pids.max`, `blockIO.weight` -> `io.weight` =
//! `1 + (weight - 10) * 9999 / 990`. A negative limit means `max`.

use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;
use vessel_protocol::stats::{MemoryEntry, Stats};

/// Errors on the container's cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file could not be written.
    #[error("write {value:?} to {path}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A cgroup file could not be read.
    #[error("read {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The cgroup directory could not be created or removed.
    #[error("{op} cgroup {path}")]
    Dir {
        /// `create` or `remove`.
        op: &'static str,
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A memory+swap limit without a memory limit (runc: `unable to set swap limit without
    /// memory limit`).
    #[error(
        "linux.resources.memory.swap {swap} is set without memory.limit: set memory.limit too"
    )]
    SwapWithoutLimit {
        /// memory+swap.
        swap: i64,
    },
    /// A memory swap value smaller than the limit.
    #[error("linux.resources.memory.swap {swap} is smaller than memory.limit {limit}")]
    CheckSwap {
        /// memory+swap.
        swap: i64,
        /// memory.
        limit: i64,
    },
}

/// One container's cgroup directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// Absolute path, e.g. `/sys/fs/cgroup/vessel/<id>`.
    pub path: PathBuf,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::WriteFile {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

/// Enables every controller `dir` offers for its children (best effort: a controller the
/// kernel refuses is skipped).
pub fn enable_controllers(dir: &Path) {
    let Ok(avail) = std::fs::read_to_string(dir.join("cgroup.controllers")) else {
        return;
    };
    for c in avail.split_whitespace() {
        let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
    }
}

/// The cpu.weight for OCI `cpu.shares` (runc `ConvertCPUSharesToCgroupV2Value`).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

fn limit(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// The `(file, value)` writes for `resources`, in order; pure, so it is unit-tested.
///
/// # Errors
/// [`CgroupError::CheckSwap`].
pub fn resource_writes(r: &LinuxResources) -> Result<Vec<(&'static str, String)>, CgroupError> {
    // Zero means "not set" for every numeric field below, as in runc's cgroup v2 code (fs2):
    // Docker sends zeros for everything the user left alone (`cpu.shares: 0`, `quota: 0`, ...).
    let set = |v: Option<i64>| v.filter(|v| *v != 0);
    let mut w = Vec::new();
    if let Some(m) = r.memory() {
        if let Some(l) = set(m.limit()) {
            w.push(("memory.max", limit(l)));
        }
        if let Some(res) = set(m.reservation()) {
            w.push(("memory.low", limit(res)));
        }
        // runc's ConvertMemorySwapToCgroupV2Value: memory+swap in the spec, swap alone in v2.
        let swap = match (m.swap().unwrap_or(0), m.limit().unwrap_or(0)) {
            (0, -1) => Some("max".to_string()),
            (0, _) => None,
            (s, _) if s < 0 => Some("max".to_string()),
            (s, l) if l <= 0 => return Err(CgroupError::SwapWithoutLimit { swap: s }),
            (s, l) if s < l => return Err(CgroupError::CheckSwap { swap: s, limit: l }),
            (s, l) => Some((s - l).to_string()),
        };
        if let Some(v) = swap {
            w.push(("memory.swap.max", v));
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(s) = c.shares().filter(|s| *s != 0) {
            w.push(("cpu.weight", shares_to_weight(s).to_string()));
        }
        let (quota, period) = (c.quota().unwrap_or(0), c.period().unwrap_or(0));
        if quota != 0 || period != 0 {
            // A period of 0 keeps the kernel's (runc writes the quota alone then).
            let q = if quota > 0 {
                quota.to_string()
            } else {
                "max".to_string()
            };
            w.push((
                "cpu.max",
                if period != 0 {
                    format!("{q} {period}")
                } else {
                    q
                },
            ));
        }
        if let Some(b) = c.burst() {
            w.push(("cpu.max.burst", b.to_string()));
        }
        if let Some(i) = c.idle() {
            w.push(("cpu.idle", i.to_string()));
        }
        if let Some(cpus) = c.cpus().as_ref().filter(|c| !c.is_empty()) {
            w.push(("cpuset.cpus", cpus.clone()));
        }
        if let Some(mems) = c.mems().as_ref().filter(|m| !m.is_empty()) {
            w.push(("cpuset.mems", mems.clone()));
        }
    }
    if let Some(p) = r.pids().as_ref().filter(|p| p.limit() != 0) {
        w.push((
            "pids.max",
            if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            },
        ));
    }
    if let Some(weight) = r
        .block_io()
        .as_ref()
        .and_then(|b| b.weight())
        .filter(|w| *w != 0)
    {
        let v = 1 + (u64::from(weight).saturating_sub(10) * 9999) / 990;
        w.push(("io.weight", format!("default {v}")));
    }
    Ok(w)
}

impl Cgroup {
    /// Creates `<root>/<id>`, enabling the controllers of `root` for it first.
    ///
    /// # Errors
    /// [`CgroupError::Dir`].
    pub fn create(root: &Path, id: &str) -> Result<Self, CgroupError> {
        let path = root.join(id);
        std::fs::create_dir_all(&path).map_err(|source| CgroupError::Dir {
            op: "create",
            path: path.clone(),
            source,
        })?;
        Ok(Cgroup { path })
    }

    /// Applies `resources`.
    ///
    /// # Errors
    /// [`CgroupError::WriteFile`] naming the file and value.
    pub fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        for (file, value) in resource_writes(r)? {
            write(&self.path.join(file), &value)?;
        }
        Ok(())
    }

    /// Moves `pid` into the cgroup.
    ///
    /// # Errors
    /// [`CgroupError::WriteFile`].
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        write(&self.path.join("cgroup.procs"), &pid.to_string())
    }

    /// Every PID in the cgroup.
    ///
    /// # Errors
    /// [`CgroupError::ReadFile`].
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        Ok(read(&self.path.join("cgroup.procs"))?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    /// Freezes (`true`) or thaws the cgroup and waits until `cgroup.events` says so (at most
    /// one second).
    ///
    /// # Errors
    /// [`CgroupError::WriteFile`].
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        write(
            &self.path.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        )?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        for _ in 0..1000 {
            match std::fs::read_to_string(self.path.join("cgroup.events")) {
                Ok(s) if s.lines().any(|l| l == want) => return Ok(()),
                Err(_) => return Ok(()),
                _ => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        Ok(())
    }

    /// Reads runc-style statistics; counters whose files are missing stay 0.
    pub fn stats(&self) -> Stats {
        let kv = |file: &str| -> Vec<(String, u64)> {
            std::fs::read_to_string(self.path.join(file))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let mut it = l.split_whitespace();
                    Some((it.next()?.to_string(), it.next()?.parse().ok()?))
                })
                .collect()
        };
        let num = |file: &str| -> Option<u64> {
            std::fs::read_to_string(self.path.join(file))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        let max = |file: &str| -> u64 {
            match std::fs::read_to_string(self.path.join(file)) {
                Ok(s) if s.trim() == "max" => u64::MAX,
                Ok(s) => s.trim().parse().unwrap_or(0),
                Err(_) => 0,
            }
        };
        let mut s = Stats::default();
        for (k, v) in kv("cpu.stat") {
            match k.as_str() {
                "usage_usec" => s.cpu.usage.total = v * 1000,
                "user_usec" => s.cpu.usage.user = v * 1000,
                "system_usec" => s.cpu.usage.kernel = v * 1000,
                "nr_periods" => s.cpu.throttling.periods = v,
                "nr_throttled" => s.cpu.throttling.throttled_periods = v,
                "throttled_usec" => s.cpu.throttling.throttled_time = v * 1000,
                _ => {}
            }
        }
        s.memory.raw = kv("memory.stat").into_iter().collect();
        s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
        let failcnt = kv("memory.events")
            .into_iter()
            .find(|(k, _)| k == "max")
            .map_or(0, |(_, v)| v);
        let usage = num("memory.current").unwrap_or(0);
        s.memory.usage = MemoryEntry {
            limit: max("memory.max"),
            usage,
            max: num("memory.peak").unwrap_or(0),
            failcnt,
        };
        s.memory.swap = MemoryEntry {
            limit: max("memory.swap.max"),
            usage: usage + num("memory.swap.current").unwrap_or(0),
            max: 0,
            failcnt: 0,
        };
        s.pids.current = num("pids.current").unwrap_or(0);
        s.pids.limit = match max("pids.max") {
            u64::MAX => 0,
            v => v,
        };
        s
    }

    /// Processes of the cgroup killed by the OOM killer so far (`oom_kill` in `memory.events`;
    /// 0 when the file is missing).
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.path.join("memory.events"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Removes the cgroup directory (it must be empty of processes).
    ///
    /// # Errors
    /// [`CgroupError::Dir`].
    pub fn remove(&self) -> Result<(), CgroupError> {
        std::fs::remove_dir(&self.path).map_err(|source| CgroupError::Dir {
            op: "remove",
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_mean_unset_as_docker_sends_them() {
        // What Docker 20.10 puts in linux.resources for `docker run` with no limits.
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":0,"reservation":0,"swap":0,"disableOOMKiller":false},
                "cpu":{"shares":0,"quota":0,"period":0,"realtimeRuntime":0,
                       "realtimePeriod":0,"cpus":"","mems":""},
                "pids":{"limit":0},"blockIO":{"weight":0}}"#,
        )
        .unwrap();
        assert_eq!(resource_writes(&r).unwrap(), Vec::new());
        // A quota without a period keeps the kernel's period, as runc writes it.
        let r: LinuxResources =
            serde_json::from_str(r#"{"cpu":{"shares":0,"quota":50000,"period":0}}"#).unwrap();
        assert_eq!(
            resource_writes(&r).unwrap(),
            vec![("cpu.max", "50000".to_string())]
        );
    }

    #[test]
    fn resources_convert_like_runc() {
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":104857600,"reservation":52428800,"swap":209715200},
                "cpu":{"shares":1024,"quota":50000,"period":100000,"cpus":"0-1","mems":"0"},
                "pids":{"limit":5},"blockIO":{"weight":500}}"#,
        )
        .unwrap();
        let w = resource_writes(&r).unwrap();
        assert_eq!(
            w,
            vec![
                ("memory.max", "104857600".to_string()),
                ("memory.low", "52428800".into()),
                ("memory.swap.max", "104857600".into()),
                ("cpu.weight", "39".into()),
                ("cpu.max", "50000 100000".into()),
                ("cpuset.cpus", "0-1".into()),
                ("cpuset.mems", "0".into()),
                ("pids.max", "5".into()),
                ("io.weight", "default 4950".into()),
            ]
        );
    }

    #[test]
    fn unlimited_values_become_max() {
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":-1,"swap":-1},"cpu":{"quota":-1},"pids":{"limit":-1}}"#,
        )
        .unwrap();
        assert_eq!(
            resource_writes(&r).unwrap(),
            vec![
                ("memory.max", "max".to_string()),
                ("memory.swap.max", "max".into()),
                ("cpu.max", "max".into()),
                ("pids.max", "max".into()),
            ]
        );
        // An unlimited memory with swap left alone: both unlimited (runc).
        let r: LinuxResources = serde_json::from_str(r#"{"memory":{"limit":-1}}"#).unwrap();
        assert_eq!(
            resource_writes(&r).unwrap(),
            vec![
                ("memory.max", "max".to_string()),
                ("memory.swap.max", "max".into())
            ]
        );
        let swap_alone: LinuxResources =
            serde_json::from_str(r#"{"memory":{"swap":209715200}}"#).unwrap();
        assert!(matches!(
            resource_writes(&swap_alone).unwrap_err(),
            CgroupError::SwapWithoutLimit { swap: 209715200 }
        ));
        let bad: LinuxResources =
            serde_json::from_str(r#"{"memory":{"limit":100,"swap":50}}"#).unwrap();
        assert!(matches!(
            resource_writes(&bad).unwrap_err(),
            CgroupError::CheckSwap {
                swap: 50,
                limit: 100
            }
        ));
    }
}
