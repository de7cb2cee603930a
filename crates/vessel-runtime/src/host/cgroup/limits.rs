//! The limits of `linux.resources` that go to the host cgroup, and the file each is written to.

use oci_spec::runtime::{LinuxCpu, Spec};

use super::Hierarchy;

/// The limits of `linux.resources` that Vessel applies to the host cgroup (docs/design.md
/// "Host cgroup"): CPU bandwidth and weight, and the cpuset. Memory, pids, block I/O and
/// hugepages are not: they govern the guest, where the agent applies them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostLimits {
    /// `cpu.quota` in µs per period (> 0), with `cpu.period` (default 100000 µs).
    pub quota: Option<(i64, u64)>,
    /// `cpu.shares` (v1 value; converted for v2).
    pub shares: Option<u64>,
    /// `cpu.cpus`.
    pub cpus: Option<String>,
    /// `cpu.mems`.
    pub mems: Option<String>,
}

impl HostLimits {
    /// The limits in `spec`'s `linux.resources.cpu`.
    pub fn from_spec(spec: &Spec) -> HostLimits {
        let cpu: Option<&LinuxCpu> = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.cpu().as_ref());
        let Some(cpu) = cpu else {
            return HostLimits::default();
        };
        HostLimits {
            quota: cpu
                .quota()
                .filter(|q| *q > 0)
                .map(|q| (q, cpu.period().filter(|p| *p > 0).unwrap_or(100_000))),
            shares: cpu.shares().filter(|s| *s > 0),
            cpus: cpu.cpus().clone().filter(|s| !s.is_empty()),
            mems: cpu.mems().clone().filter(|s| !s.is_empty()),
        }
    }

    /// True when nothing is to be written.
    pub fn is_empty(&self) -> bool {
        *self == HostLimits::default()
    }

    /// The `(field, file, value)` writes for a directory of `hierarchy`. The v2 hierarchy of
    /// a hybrid host has no controllers (they are bound to v1): it is only joined.
    pub(super) fn writes(
        &self,
        hierarchy: &Hierarchy,
        unified: bool,
    ) -> Vec<(&'static str, &'static str, String)> {
        if hierarchy.is_v2() && !unified {
            return Vec::new();
        }
        let has = |c: &str| hierarchy.is_v2() || hierarchy.controllers.iter().any(|h| h == c);
        let mut w = Vec::new();
        if hierarchy.is_v2() {
            if let Some((quota, period)) = self.quota {
                w.push((
                    "linux.resources.cpu.quota",
                    "cpu.max",
                    format!("{quota} {period}"),
                ));
            }
            if let Some(shares) = self.shares {
                w.push((
                    "linux.resources.cpu.shares",
                    "cpu.weight",
                    shares_to_weight(shares).to_string(),
                ));
            }
        } else if has("cpu") {
            if let Some((quota, period)) = self.quota {
                w.push((
                    "linux.resources.cpu.period",
                    "cpu.cfs_period_us",
                    period.to_string(),
                ));
                w.push((
                    "linux.resources.cpu.quota",
                    "cpu.cfs_quota_us",
                    quota.to_string(),
                ));
            }
            if let Some(shares) = self.shares {
                w.push((
                    "linux.resources.cpu.shares",
                    "cpu.shares",
                    shares.to_string(),
                ));
            }
        }
        if has("cpuset") {
            if let Some(cpus) = &self.cpus {
                w.push(("linux.resources.cpu.cpus", "cpuset.cpus", cpus.clone()));
            }
            if let Some(mems) = &self.mems {
                w.push(("linux.resources.cpu.mems", "cpuset.mems", mems.clone()));
            }
        }
        w
    }
}

/// runc's conversion of v1 `cpu.shares` (2..262144) to v2 `cpu.weight` (1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::cgroup::parse_mountinfo;
    use crate::host::cgroup::path::tests::{HYBRID, UNIFIED};

    #[test]
    fn limits_map_to_v1_and_v2_files() {
        let limits = HostLimits {
            quota: Some((150_000, 100_000)),
            shares: Some(1024),
            cpus: Some("0-1".into()),
            mems: None,
        };
        let unified = parse_mountinfo(UNIFIED);
        let files: Vec<(&str, String)> = limits
            .writes(&unified.hierarchies[0], true)
            .into_iter()
            .map(|(_, f, v)| (f, v))
            .collect();
        assert_eq!(
            files,
            [
                ("cpu.max", "150000 100000".to_owned()),
                ("cpu.weight", "39".to_owned()),
                ("cpuset.cpus", "0-1".to_owned())
            ]
        );
        let hybrid = parse_mountinfo(HYBRID);
        let cpu = limits.writes(&hybrid.hierarchies[0], false);
        assert_eq!(cpu.len(), 3, "{cpu:?}");
        assert_eq!(cpu[1].1, "cpu.cfs_quota_us");
        assert_eq!(
            limits.writes(&hybrid.hierarchies[2], false),
            vec![],
            "memory: nothing"
        );
        assert_eq!(
            limits.writes(&hybrid.hierarchies[4], false),
            vec![],
            "the v2 hierarchy of a hybrid host is only joined"
        );
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
