//! Entering the container's namespaces: new ones (the user namespace first, with its id maps
//! written by the agent) for a container's init, the init's for an exec'd process.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespace, LinuxNamespaceType};
use vessel_protocol::{write_message, CreateContainer};

use super::super::syscall::{LinuxSyscall, Syscall};
use super::{step, SetupError, SetupReport};

/// The clone flag of a namespace type.
pub fn namespace_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Unshares every namespace of `linux.namespaces` without a path and joins those with one.
/// Returns whether a new network namespace was made (its `lo` must be brought up).
pub(super) fn enter_new_namespaces(
    sock: &mut File,
    c: &CreateContainer,
) -> Result<bool, SetupError> {
    let namespaces = entry_order(
        c.linux
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default(),
    );
    let flags = unshare_flags(&namespaces);
    for ns in &namespaces {
        let t = ns.typ();
        match ns.path() {
            Some(p) => {
                let f = std::fs::File::open(p).map_err(|source| SetupError::EnterNamespace {
                    op: "open",
                    what: format!("{t} ({})", p.display()),
                    source,
                })?;
                nix::sched::setns(&f, namespace_flag(t)).map_err(|e| {
                    SetupError::EnterNamespace {
                        op: "setns",
                        what: format!("{t} ({})", p.display()),
                        source: e.into(),
                    }
                })?;
            }
            None if t == LinuxNamespaceType::User => enter_new_user_namespace(sock)?,
            None => {}
        }
    }
    check_unshare_flags(flags, c.hostname.as_deref())?;
    nix::sched::unshare(flags).map_err(|e| SetupError::EnterNamespace {
        op: "unshare",
        what: format!("{flags:?}"),
        source: e.into(),
    })?;
    let new_net = flags.contains(CloneFlags::CLONE_NEWNET);
    if new_net {
        crate::network::loopback::bring_up_lo()
            .map_err(step("bring up lo in the new network namespace"))?;
    }
    Ok(new_net)
}

/// `linux.namespaces` in the order they are entered: the user namespace first (it owns the
/// others), the rest as given.
fn entry_order(mut namespaces: Vec<LinuxNamespace>) -> Vec<LinuxNamespace> {
    namespaces.sort_by_key(|ns| ns.typ() != LinuxNamespaceType::User);
    namespaces
}

/// The flags of one `unshare` for the namespaces to create: every one without a path but the
/// user namespace, which is entered on its own first.
fn unshare_flags(namespaces: &[LinuxNamespace]) -> CloneFlags {
    namespaces
        .iter()
        .filter(|ns| ns.path().is_none() && ns.typ() != LinuxNamespaceType::User)
        .fold(CloneFlags::empty(), |flags, ns| {
            flags | namespace_flag(ns.typ())
        })
}

/// Refuses new namespaces a container cannot run with: no new mount namespace, or a hostname
/// without a new UTS namespace (runc's text).
fn check_unshare_flags(flags: CloneFlags, hostname: Option<&str>) -> Result<(), SetupError> {
    if !flags.contains(CloneFlags::CLONE_NEWNS) {
        return Err(SetupError::CheckNamespaces {
            reason: "a new mount namespace (\"mount\") is required".into(),
        });
    }
    if hostname.is_some_and(|h| !h.is_empty()) && !flags.contains(CloneFlags::CLONE_NEWUTS) {
        return Err(SetupError::CheckNamespaces {
            reason: "unable to set hostname without a private UTS namespace".into(),
        });
    }
    Ok(())
}

/// Unshares a user namespace, has the agent write its uid and gid maps (only a process outside
/// it may write more than one range), then becomes root in it (runc's nsexec does the same).
fn enter_new_user_namespace(sock: &mut File) -> Result<(), SetupError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| SetupError::EnterNamespace {
        op: "unshare",
        what: "user".into(),
        source: e.into(),
    })?;
    write_message(sock, &SetupReport::MapIds)
        .map_err(|e| SetupError::ExchangeMessage(io::Error::other(e)))?;
    let mut ack = [0u8; 1];
    sock.read_exact(&mut ack)
        .map_err(SetupError::ExchangeMessage)?;
    if ack[0] != 1 {
        return Err(SetupError::CheckNamespaces {
            reason: "the agent could not write linux.uidMappings/gidMappings".into(),
        });
    }
    let sys = LinuxSyscall;
    sys.setgid(0)
        .map_err(step("become gid 0 in the user namespace"))?;
    sys.setuid(0)
        .map_err(step("become uid 0 in the user namespace"))?;
    Ok(())
}

/// Agent side: writes `/proc/<pid>/uid_map` and `gid_map` from the container's mappings, each
/// in one `write(2)` as the kernel requires, and answers the setup process (1 = done).
///
/// # Errors
/// A map could not be written (the setup process is told, and fails).
pub fn write_id_maps(
    sock: &mut UnixStream,
    pid: u32,
    linux: Option<&oci_spec::runtime::Linux>,
) -> io::Result<()> {
    let uid = id_map(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gid = id_map(linux.and_then(|l| l.gid_mappings().as_ref()));
    let result = std::fs::write(format!("/proc/{pid}/uid_map"), uid)
        .and_then(|()| std::fs::write(format!("/proc/{pid}/gid_map"), gid));
    sock.write_all(&[u8::from(result.is_ok())])?;
    result
}

/// The text of a `uid_map` or `gid_map`: one `inside outside count` line per mapping.
fn id_map(maps: Option<&Vec<LinuxIdMapping>>) -> String {
    maps.map(|m| {
        m.iter()
            .map(|e| format!("{} {} {}\n", e.container_id(), e.host_id(), e.size()))
            .collect()
    })
    .unwrap_or_default()
}

/// Joins the namespaces of `pid` that differ from this process's (mount last).
pub(super) fn join_namespaces(pid: i32) -> Result<(), SetupError> {
    use std::os::unix::fs::MetadataExt;
    let kinds = [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    // Open them all first: after joining the mount namespace /proc may be another one.
    let mut files = Vec::new();
    for (name, flag) in kinds {
        let path = format!("/proc/{pid}/ns/{name}");
        let theirs = std::fs::metadata(&path).map_err(|source| SetupError::EnterNamespace {
            op: "stat",
            what: path.clone(),
            source,
        })?;
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}")).ok();
        if ours.is_some_and(|o| o.ino() == theirs.ino() && o.dev() == theirs.dev()) {
            continue;
        }
        let f = std::fs::File::open(&path).map_err(|source| SetupError::EnterNamespace {
            op: "open",
            what: path.clone(),
            source,
        })?;
        files.push((path, f, flag));
    }
    for (path, f, flag) in files {
        nix::sched::setns(&f, flag).map_err(|e| SetupError::EnterNamespace {
            op: "setns",
            what: path,
            source: e.into(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vessel_protocol::Code;

    fn namespaces(v: serde_json::Value) -> Vec<LinuxNamespace> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_user_namespace_is_entered_first_and_the_rest_in_one_unshare() {
        let given = namespaces(serde_json::json!([
            {"type": "pid"},
            {"type": "network", "path": "/proc/7/ns/net"},
            {"type": "mount"},
            {"type": "user"},
            {"type": "uts"},
        ]));
        let order: Vec<_> = entry_order(given).iter().map(|ns| ns.typ()).collect();
        assert_eq!(
            order,
            [
                LinuxNamespaceType::User,
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Network,
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Uts,
            ]
        );
        let flags = unshare_flags(&namespaces(serde_json::json!([
            {"type": "pid"},
            {"type": "network", "path": "/proc/7/ns/net"},
            {"type": "mount"},
            {"type": "user"},
            {"type": "uts"},
            {"type": "time"},
        ])));
        assert_eq!(
            flags,
            CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWUTS
                | CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)
        );
        assert_eq!(
            namespace_flag(LinuxNamespaceType::Cgroup),
            CloneFlags::CLONE_NEWCGROUP
        );
    }

    #[test]
    fn a_mount_namespace_is_required_and_a_hostname_needs_uts() {
        check_unshare_flags(CloneFlags::CLONE_NEWNS, None).unwrap();
        check_unshare_flags(CloneFlags::CLONE_NEWNS, Some("")).unwrap();
        check_unshare_flags(
            CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS,
            Some("box"),
        )
        .unwrap();
        let e = check_unshare_flags(CloneFlags::CLONE_NEWUTS, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "linux.namespaces: a new mount namespace (\"mount\") is required"
        );
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = check_unshare_flags(CloneFlags::CLONE_NEWNS, Some("box")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "linux.namespaces: unable to set hostname without a private UTS namespace"
        );
    }

    #[test]
    fn id_maps_are_one_line_per_mapping() {
        let maps: Vec<LinuxIdMapping> = serde_json::from_value(serde_json::json!([
            {"containerID": 0, "hostID": 100000, "size": 1},
            {"containerID": 1, "hostID": 200000, "size": 65535},
        ]))
        .unwrap();
        assert_eq!(id_map(Some(&maps)), "0 100000 1\n1 200000 65535\n");
        assert_eq!(id_map(None), "");
    }
}
