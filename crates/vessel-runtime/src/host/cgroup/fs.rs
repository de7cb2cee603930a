//! The cgroup directories on the file system: created (with their limits written), joined,
//! and removed again.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{resolve, CgroupError, CgroupRecord, Hierarchy, HostLimits, Layout};

/// How long removal waits for a killed monitor's threads to leave the cgroup.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates the container's cgroup in every hierarchy of `layout` and writes `limits`. On
/// error, whatever was created is removed again. `spec_path` is `linux.cgroupsPath` as given,
/// for messages. Before each directory is made, `note` gets the record as it will be once it
/// is (so that a caller killed at any point has written down every directory that may exist).
pub fn create(
    layout: &Layout,
    inner: &Path,
    spec_path: &str,
    limits: &HostLimits,
    note: &mut dyn FnMut(&CgroupRecord) -> io::Result<()>,
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
            make_dirs(h, &dir, spec_path, &mut record, note)?;
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
    record: &mut CgroupRecord,
    note: &mut dyn FnMut(&CgroupRecord) -> io::Result<()>,
) -> Result<(), CgroupError> {
    // A parent shared with another container can vanish (that container's delete removed it)
    // between our check and our mkdir below it: start over a few times.
    let mut attempts = 0;
    loop {
        match make_dirs_once(h, dir, spec, record, note) {
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
    record: &mut CgroupRecord,
    note: &mut dyn FnMut(&CgroupRecord) -> io::Result<()>,
) -> Result<(), CgroupError> {
    let rel = dir.strip_prefix(&h.mountpoint).unwrap_or(dir);
    let mut cur = h.mountpoint.clone();
    for part in rel.components() {
        let parent = cur.clone();
        cur.push(part);
        if h.is_v2() {
            enable_controllers(&parent);
        }
        if !cur.exists() {
            let mut planned = record.clone();
            planned.paths.push(dir.to_owned());
            planned.created.push(cur.clone());
            note(&planned).map_err(CgroupError::NoteCgroup)?;
        }
        match std::fs::DirBuilder::new().mode(0o755).create(&cur) {
            Ok(()) => record.created.push(cur.clone()),
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

/// Moves the calling process to the root of each hierarchy of `record` (the one cgroup that
/// takes processes whatever its controllers) and removes `record`'s directories: for a monitor
/// whose `create` was killed before it recorded the container, which nobody else can clean up
/// after (`delete` finds no record of the cgroup).
pub fn leave_and_remove(record: &CgroupRecord) -> Result<(), CgroupError> {
    let pid = std::process::id() as i32;
    for dir in &record.paths {
        let root = dir
            .ancestors()
            .skip(1)
            .take_while(|a| a.join("cgroup.procs").exists())
            .last();
        if let Some(root) = root {
            let path = root.join("cgroup.procs");
            std::fs::write(&path, pid.to_string()).map_err(|source| CgroupError::JoinCgroup {
                pid,
                path: root.to_owned(),
                source,
            })?;
        }
    }
    remove(record)
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
