//! Path resolution: the host's cgroup hierarchies (from the mount table) and the directory that
//! `linux.cgroupsPath` names in each, by runc's rules (module documentation of `cgroup`).

use std::path::{Component, Path, PathBuf};

use super::{CgroupError, CGROUP_ROOT, DEFAULT_SCOPE_PREFIX};

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
    pub(super) fn is_v2(&self) -> bool {
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

#[cfg(test)]
pub(in crate::host::cgroup) mod tests {
    use super::*;

    pub(in crate::host::cgroup) const HYBRID: &str = "\
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
    pub(in crate::host::cgroup) const UNIFIED: &str = "\
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
}
