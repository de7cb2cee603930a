//! The host cgroup of a container: the monitor process (which owns the microVM, so the VM's
//! whole host cost) is placed in the cgroup named by `linux.cgroupsPath`, as runc places the
//! container's init, because callers read stats and OOM events from the cgroup of the pid-file
//! process (containerd's shim, conmon: runc-cli-contract.md §4.7).
//!
//! Path rules, as runc's drivers (runc libcontainer/specconv `CreateCgroupConfig`,
//! cgroups/fs2/defaultpath.go, cgroups/fs/paths.go, cgroups/systemd/common.go `ExpandSlice`):
//! - cgroupfs driver: `cgroupsPath` is cleaned (no `..` above the root). Absolute: below each
//!   hierarchy's mount point. Relative: on cgroup v2 below the *parent* of Vessel's own cgroup,
//!   on v1 below Vessel's own cgroup in that hierarchy. Absent: the container ID, relative.
//! - `--systemd-cgroup`: `slice:prefix:name`, absent meaning `system.slice:vessel:<id>`; the
//!   unit is `<prefix>-<name>.scope` (`<name>.scope` with no prefix, `<name>` itself if it ends
//!   in `.slice`) under the expanded slice (`a-b.slice` -> `/a.slice/a-b.slice`, empty slice ->
//!   `system.slice`). Vessel does not talk to systemd: it creates the same directories in
//!   cgroupfs, as runc's fs driver would.
//! - cgroup v2 (`/sys/fs/cgroup` is cgroup2) uses one directory; v1 one per mounted hierarchy,
//!   plus the v2 hierarchy of a hybrid host.
//!
//! Missing directories are created and recorded; only those are removed at `delete` (or when
//! `create` fails). Which `linux.resources` are applied to the host cgroup, and why memory is
//! not, is in docs/design.md "Host cgroup".

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxCpu, Spec};
use serde::{Deserialize, Serialize};

/// Where cgroup file systems are mounted on hosts that follow the convention.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The systemd scope prefix used when `--systemd-cgroup` is given without a `cgroupsPath`
/// (runc uses `runc`).
pub const DEFAULT_SCOPE_PREFIX: &str = "vessel";

/// How long removal waits for a killed monitor's threads to leave the cgroup.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the host cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A systemd `cgroupsPath` is not `slice:prefix:name` (runc's text).
    #[error(
        "linux.cgroupsPath: expected cgroupsPath to be of format \"slice:prefix:name\" for systemd cgroups, got {0:?} instead"
    )]
    ParseSystemdPath(String),
    /// A slice name systemd would refuse (runc's `invalid slice name`).
    #[error("linux.cgroupsPath: invalid slice name: {0} (a slice is `a-b.slice`, no `/`, no empty `-` parts)")]
    ExpandSlice(String),
    /// The mount table or `/proc/self/cgroup` could not be read.
    #[error("read {path}")]
    ReadProc {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No cgroup file system is mounted.
    #[error("linux.cgroupsPath {0:?}: no cgroup file system is mounted (mount cgroup2 on /sys/fs/cgroup)")]
    FindHierarchy(String),
    /// Vessel's own cgroup in a hierarchy is not in `/proc/self/cgroup`.
    #[error("find this process's cgroup for the hierarchy at {0}")]
    FindOwnCgroup(PathBuf),
    /// A cgroup directory could not be created.
    #[error("linux.cgroupsPath {spec:?}: create cgroup {path}")]
    CreateCgroup {
        /// `linux.cgroupsPath` as given.
        spec: String,
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The cgroup exists and already has processes (runc refuses this too).
    #[error("linux.cgroupsPath {spec:?}: cgroup {path} is not empty; remove its processes or choose another path")]
    UseBusyCgroup {
        /// `linux.cgroupsPath` as given.
        spec: String,
        /// The directory.
        path: PathBuf,
    },
    /// The controller a limit needs is not enabled for the container's cgroup.
    #[error("{field}: {path} does not exist: enable the controller in the parent's cgroup.subtree_control, or drop the limit")]
    FindController {
        /// The spec field the limit comes from.
        field: &'static str,
        /// The missing cgroup file.
        path: PathBuf,
    },
    /// A limit could not be written.
    #[error("{field}: write {path}")]
    WriteLimit {
        /// The spec field the limit comes from.
        field: &'static str,
        /// The cgroup file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The monitor could not be moved into the cgroup.
    #[error("move process {pid} into cgroup {path}")]
    JoinCgroup {
        /// The process.
        pid: i32,
        /// The cgroup directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A cgroup Vessel created could not be removed.
    #[error("remove cgroup {path}")]
    RemoveCgroup {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The container's host cgroup as recorded in `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupRecord {
    /// The directories the monitor joins: one on cgroup v2, one per hierarchy on v1.
    pub paths: Vec<PathBuf>,
    /// The directories Vessel created, parents before children; removed in reverse order.
    pub created: Vec<PathBuf>,
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The cgroup path that is the root of this mount (field 4 of mountinfo).
    pub mount_root: String,
    /// The v1 controllers (and `name=...` names) of this hierarchy; empty for cgroup v2.
    pub controllers: Vec<String>,
}

impl Hierarchy {
    fn is_v2(&self) -> bool {
        self.controllers.is_empty()
    }
}

/// The host's cgroup layout: unified (only v2), or legacy/hybrid (v1 hierarchies, plus v2 on a
/// hybrid host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The hierarchies the monitor joins.
    pub hierarchies: Vec<Hierarchy>,
    /// True when the host is cgroup v2 only.
    pub unified: bool,
}

impl Layout {
    /// Reads the layout from `/proc/self/mountinfo`: unified when `/sys/fs/cgroup` itself is
    /// cgroup2; otherwise every cgroup (v1) mount below it plus a cgroup2 mount there (hybrid).
    pub fn detect() -> Result<Layout, CgroupError> {
        let path = PathBuf::from("/proc/self/mountinfo");
        let text = std::fs::read_to_string(&path)
            .map_err(|source| CgroupError::ReadProc { path, source })?;
        Ok(parse_mountinfo(&text))
    }
}

/// Parses a mount table into a [`Layout`] (see [`Layout::detect`]).
pub fn parse_mountinfo(text: &str) -> Layout {
    let mut v1 = Vec::new();
    let mut v2 = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        if fields.len() < 5 || rfields.len() < 3 {
            continue;
        }
        let mountpoint = crate::host::procfs::unescape_mountinfo(fields[4]);
        if !mountpoint.starts_with(CGROUP_ROOT) {
            continue;
        }
        let mount_root = crate::host::procfs::unescape_mountinfo(fields[3])
            .to_string_lossy()
            .into_owned();
        match rfields[0] {
            "cgroup2" => v2.push(Hierarchy {
                mountpoint,
                mount_root,
                controllers: Vec::new(),
            }),
            "cgroup" => {
                let controllers = rfields[2]
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains("release_agent"))
                    .filter(|o| !matches!(*o, "clone_children" | "noprefix" | "xattr"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>();
                if !controllers.is_empty()
                    && !v1.iter().any(|h: &Hierarchy| h.mountpoint == mountpoint)
                {
                    v1.push(Hierarchy {
                        mountpoint,
                        mount_root,
                        controllers,
                    });
                }
            }
            _ => {}
        }
    }
    if let Some(root) = v2.iter().find(|h| h.mountpoint == Path::new(CGROUP_ROOT)) {
        return Layout {
            hierarchies: vec![root.clone()],
            unified: true,
        };
    }
    let mut hierarchies = v1;
    hierarchies.extend(v2.into_iter().take(1));
    Layout {
        hierarchies,
        unified: false,
    }
}

/// The cgroup path of this process in `hierarchy`, from `/proc/self/cgroup` text
/// (`ID:controllers:path`; `0::path` for v2).
pub fn own_cgroup(proc_cgroup: &str, hierarchy: &Hierarchy) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if hierarchy.is_v2() {
            ctrls.is_empty()
        } else {
            ctrls
                .split(',')
                .any(|c| hierarchy.controllers.iter().any(|h| h == c))
        };
        matches.then(|| path.to_owned())
    })
}

/// Cleans a path lexically as runc's `CleanPath`: `.` and empty parts dropped, `..` never
/// climbs above the start; keeps it absolute or relative.
fn clean(path: &str) -> PathBuf {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().unwrap_or_default()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    let joined = parts.join("/");
    if path.starts_with('/') {
        PathBuf::from(format!("/{joined}"))
    } else {
        PathBuf::from(joined)
    }
}

/// systemd's slice expansion (runc `ExpandSlice`): `a-b.slice` -> `/a.slice/a-b.slice`,
/// `-.slice` -> `/`.
pub fn expand_slice(slice: &str) -> Result<String, CgroupError> {
    let bad = || CgroupError::ExpandSlice(slice.to_owned());
    let name = slice.strip_suffix(".slice").ok_or_else(bad)?;
    if name.is_empty() || slice.contains('/') {
        return Err(bad());
    }
    if name == "-" {
        return Ok("/".to_owned());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for component in name.split('-') {
        if component.is_empty() {
            return Err(bad());
        }
        path.push('/');
        path.push_str(&prefix);
        path.push_str(component);
        path.push_str(".slice");
        prefix.push_str(component);
        prefix.push('-');
    }
    Ok(path)
}

/// The cgroup path (absolute, inside each hierarchy, or relative to the own cgroup) that
/// `cgroups_path` names for container `id` (module documentation).
pub fn inner_path(
    cgroups_path: Option<&str>,
    id: &str,
    systemd: bool,
) -> Result<PathBuf, CgroupError> {
    let given = cgroups_path.filter(|p| !p.is_empty());
    if !systemd {
        return Ok(clean(given.unwrap_or(id)));
    }
    let (slice, prefix, name) = match given {
        None => ("system.slice", DEFAULT_SCOPE_PREFIX, id),
        Some(p) => {
            let parts: Vec<&str> = p.split(':').collect();
            let [slice, prefix, name] = parts[..] else {
                return Err(CgroupError::ParseSystemdPath(p.to_owned()));
            };
            if name.is_empty() || name.contains('/') {
                return Err(CgroupError::ParseSystemdPath(p.to_owned()));
            }
            (slice, prefix, name)
        }
    };
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let unit = if name.ends_with(".slice") {
        name.to_owned()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(clean(&format!("{}/{unit}", expand_slice(slice)?)))
}

/// The directory in `hierarchy` for `inner` (from [`inner_path`]), given this process's
/// `/proc/self/cgroup`.
pub fn resolve(
    inner: &Path,
    hierarchy: &Hierarchy,
    unified: bool,
    proc_cgroup: &str,
) -> Result<PathBuf, CgroupError> {
    let base = if inner.is_absolute() {
        PathBuf::from("/")
    } else {
        let own = own_cgroup(proc_cgroup, hierarchy)
            .ok_or_else(|| CgroupError::FindOwnCgroup(hierarchy.mountpoint.clone()))?;
        // Inside a cgroup namespace or a bind-mounted subtree, the mount shows `mount_root`.
        let own = own
            .strip_prefix(hierarchy.mount_root.trim_end_matches('/'))
            .unwrap_or(&own);
        let own = clean(&format!("/{own}"));
        if unified {
            // runc fs2: the own cgroup has processes; its parent can take a sibling.
            own.parent().map(Path::to_path_buf).unwrap_or(own)
        } else {
            own
        }
    };
    let rel = base.join(inner);
    let rel = rel.strip_prefix("/").unwrap_or(&rel);
    Ok(hierarchy.mountpoint.join(rel))
}

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
    fn writes(
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

/// Creates the container's cgroup in every hierarchy of `layout` and writes `limits`. On
/// error, whatever was created is removed again. `spec_path` is `linux.cgroupsPath` as given,
/// for messages.
pub fn create(
    layout: &Layout,
    inner: &Path,
    spec_path: &str,
    limits: &HostLimits,
) -> Result<CgroupRecord, CgroupError> {
    if layout.hierarchies.is_empty() {
        return Err(CgroupError::FindHierarchy(spec_path.to_owned()));
    }
    let proc_cgroup = {
        let path = PathBuf::from("/proc/self/cgroup");
        std::fs::read_to_string(&path).map_err(|source| CgroupError::ReadProc { path, source })?
    };
    let mut record = CgroupRecord::default();
    let result = (|| {
        for h in &layout.hierarchies {
            let dir = resolve(inner, h, layout.unified, &proc_cgroup)?;
            make_dirs(h, &dir, spec_path, &mut record.created)?;
            if procs(&dir).is_some_and(|p| !p.is_empty()) {
                return Err(CgroupError::UseBusyCgroup {
                    spec: spec_path.to_owned(),
                    path: dir,
                });
            }
            for (field, file, value) in limits.writes(h, layout.unified) {
                let path = dir.join(file);
                if !path.exists() {
                    return Err(CgroupError::FindController { field, path });
                }
                std::fs::write(&path, &value).map_err(|source| CgroupError::WriteLimit {
                    field,
                    path,
                    source,
                })?;
            }
            record.paths.push(dir);
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(record),
        Err(e) => {
            let _ = remove(&record);
            Err(e)
        }
    }
}

/// `mkdir -p` of `dir` inside hierarchy `h`, recording what it made. On v2 each new level's
/// parent gets the controllers it has available enabled for its children (runc does the same);
/// on v1 a new cpuset level inherits its parent's `cpuset.cpus`/`cpuset.mems`, without which no
/// process could join it.
fn make_dirs(
    h: &Hierarchy,
    dir: &Path,
    spec: &str,
    created: &mut Vec<PathBuf>,
) -> Result<(), CgroupError> {
    // A parent shared with another container can vanish (that container's delete removed it)
    // between our check and our mkdir below it: start over a few times.
    let mut attempts = 0;
    loop {
        match make_dirs_once(h, dir, spec, created) {
            Err(CgroupError::CreateCgroup { source, .. })
                if source.kind() == io::ErrorKind::NotFound && attempts < 5 =>
            {
                attempts += 1;
            }
            other => return other,
        }
    }
}

fn make_dirs_once(
    h: &Hierarchy,
    dir: &Path,
    spec: &str,
    created: &mut Vec<PathBuf>,
) -> Result<(), CgroupError> {
    let rel = dir.strip_prefix(&h.mountpoint).unwrap_or(dir);
    let mut cur = h.mountpoint.clone();
    for part in rel.components() {
        let parent = cur.clone();
        cur.push(part);
        if h.is_v2() {
            enable_controllers(&parent);
        }
        match std::fs::DirBuilder::new().mode(0o755).create(&cur) {
            Ok(()) => created.push(cur.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && cur.is_dir() => continue,
            Err(source) => {
                return Err(CgroupError::CreateCgroup {
                    spec: spec.to_owned(),
                    path: cur,
                    source,
                })
            }
        }
        if h.controllers.iter().any(|c| c == "cpuset") {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let own = std::fs::read_to_string(cur.join(file)).unwrap_or_default();
                if own.trim().is_empty() {
                    let inherited = std::fs::read_to_string(parent.join(file)).unwrap_or_default();
                    std::fs::write(cur.join(file), inherited.trim()).map_err(|source| {
                        CgroupError::CreateCgroup {
                            spec: spec.to_owned(),
                            path: cur.join(file),
                            source,
                        }
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// Best effort: enables in `dir`'s `cgroup.subtree_control` the controllers listed in its
/// `cgroup.controllers` that are not yet enabled (fails harmlessly where `dir` has processes
/// of its own and is not the root).
fn enable_controllers(dir: &Path) {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in available.split_whitespace() {
        if !enabled.split_whitespace().any(|e| e == c) {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
        }
    }
}

/// The PIDs in `dir`'s `cgroup.procs`, or `None` if it cannot be read.
fn procs(dir: &Path) -> Option<Vec<i32>> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    Some(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Moves process `pid` into every directory of `record`.
pub fn join(record: &CgroupRecord, pid: i32) -> Result<(), CgroupError> {
    for dir in &record.paths {
        let path = dir.join("cgroup.procs");
        std::fs::write(&path, pid.to_string()).map_err(|source| CgroupError::JoinCgroup {
            pid,
            path: dir.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Removes the directories Vessel created, deepest first. Processes still in a container cgroup
/// once its monitor is gone (stray helpers of the test sandbox, exec relays) are SIGKILLed; a
/// directory that stays busy for 5 s is an error. Directories already gone are fine, and a
/// parent that another container still uses (busy or not empty) is left alone.
pub fn remove(record: &CgroupRecord) -> Result<(), CgroupError> {
    let mut first_error = None;
    for dir in record.created.iter().rev() {
        let leaf = record.paths.contains(dir);
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e)
                    if leaf
                        && e.raw_os_error() == Some(libc::EBUSY)
                        && Instant::now() < deadline =>
                {
                    for pid in procs(dir).unwrap_or_default() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) if !leaf => break,
                Err(source) => {
                    first_error.get_or_insert(CgroupError::RemoveCgroup {
                        path: dir.clone(),
                        source,
                    });
                    break;
                }
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:40 / /proc rw - proc proc rw";
    const HYBRID_SELF: &str = "\
9:name=systemd:/user.slice/s.scope
4:memory:/process_api/abc
3:cpuset:/
1:cpu,cpuacct:/
0::/user.slice/s.scope";
    const UNIFIED: &str = "\
29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
30 23 0:27 / /run rw - tmpfs tmpfs rw";

    #[test]
    fn layouts_are_detected_from_mountinfo() {
        let unified = parse_mountinfo(UNIFIED);
        assert!(unified.unified);
        assert_eq!(unified.hierarchies.len(), 1);
        assert_eq!(
            unified.hierarchies[0].mountpoint,
            Path::new("/sys/fs/cgroup")
        );
        let hybrid = parse_mountinfo(HYBRID);
        assert!(!hybrid.unified);
        let names: Vec<_> = hybrid
            .hierarchies
            .iter()
            .map(|h| (h.mountpoint.to_str().unwrap(), h.controllers.join(",")))
            .collect();
        assert_eq!(
            names,
            [
                ("/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct".to_owned()),
                ("/sys/fs/cgroup/cpuset", "cpuset".to_owned()),
                ("/sys/fs/cgroup/memory", "memory".to_owned()),
                ("/sys/fs/cgroup/systemd", "name=systemd".to_owned()),
                ("/sys/fs/cgroup/unified", String::new()),
            ]
        );
    }

    #[test]
    fn cgroupfs_paths_follow_runc() {
        let unified = parse_mountinfo(UNIFIED);
        let v2 = &unified.hierarchies[0];
        let own = "0::/user.slice/user-0.slice/session-1.scope\n";
        // Absent: the ID, below the parent of our own cgroup (v2).
        let inner = inner_path(None, "c1", false).unwrap();
        assert_eq!(
            resolve(&inner, v2, true, own).unwrap(),
            Path::new("/sys/fs/cgroup/user.slice/user-0.slice/c1")
        );
        // Absolute, cleaned: `..` cannot climb out of the hierarchy.
        let inner = inner_path(Some("/kubepods/../../pod1/c1"), "x", false).unwrap();
        assert_eq!(inner, Path::new("/pod1/c1"));
        assert_eq!(
            resolve(&inner, v2, true, own).unwrap(),
            Path::new("/sys/fs/cgroup/pod1/c1")
        );
        // Root cgroup: its parent is itself.
        let inner = inner_path(Some("rel/c2"), "x", false).unwrap();
        assert_eq!(
            resolve(&inner, v2, true, "0::/\n").unwrap(),
            Path::new("/sys/fs/cgroup/rel/c2")
        );
        // v1: relative to our own cgroup of that hierarchy (not its parent).
        let hybrid = parse_mountinfo(HYBRID);
        let dirs: Vec<PathBuf> = hybrid
            .hierarchies
            .iter()
            .map(|h| resolve(Path::new("c3"), h, false, HYBRID_SELF).unwrap())
            .collect();
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/cpu,cpuacct/c3",
                "/sys/fs/cgroup/cpuset/c3",
                "/sys/fs/cgroup/memory/process_api/abc/c3",
                "/sys/fs/cgroup/systemd/user.slice/s.scope/c3",
                "/sys/fs/cgroup/unified/user.slice/s.scope/c3",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn systemd_paths_follow_runc() {
        assert_eq!(
            expand_slice("a-b-c.slice").unwrap(),
            "/a.slice/a-b.slice/a-b-c.slice"
        );
        assert_eq!(expand_slice("system.slice").unwrap(), "/system.slice");
        assert_eq!(expand_slice("-.slice").unwrap(), "/");
        for bad in ["a--b.slice", "-a.slice", "a.scope", ".slice", "a/b.slice"] {
            let e = expand_slice(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("invalid slice name: {bad}")), "{e}");
        }
        let p = |s| inner_path(Some(s), "id", true);
        assert_eq!(
            p("kubepods-besteffort.slice:cri-containerd:abc").unwrap(),
            Path::new("/kubepods.slice/kubepods-besteffort.slice/cri-containerd-abc.scope")
        );
        assert_eq!(
            p(":vessel:x").unwrap(),
            Path::new("/system.slice/vessel-x.scope")
        );
        assert_eq!(
            p("machine.slice::x").unwrap(),
            Path::new("/machine.slice/x.scope")
        );
        assert_eq!(
            p("a.slice:p:b.slice").unwrap(),
            Path::new("/a.slice/b.slice")
        );
        assert_eq!(
            inner_path(None, "id", true).unwrap(),
            Path::new("/system.slice/vessel-id.scope")
        );
        let e = p("/kubepods/pod/c1").unwrap_err().to_string();
        assert_eq!(
            e,
            "linux.cgroupsPath: expected cgroupsPath to be of format \"slice:prefix:name\" for systemd cgroups, got \"/kubepods/pod/c1\" instead"
        );
        assert!(p("a.slice:p:x/y").is_err());
    }

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
