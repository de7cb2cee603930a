//! The container's network namespace on the host, which the monitor lives in: the one the spec
//! names (CRI, podman, `--net=container:`), or a new one when the spec's `network` entry has no
//! path (Docker, whose `prestart` hook then moves the veth into `/proc/<monitor pid>/ns/net`).
//! A spec without a `network` entry asks for the host's network, which a VM cannot share.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// Where the container's network namespace comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// The namespace at this path (`linux.namespaces[].path`).
    Join(PathBuf),
    /// A new, empty namespace made by the monitor.
    New,
}

/// Errors of [`plan`] and [`enter`].
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The spec has no `network` namespace: the container would share the host's network.
    #[error(
        "linux.namespaces has no \"network\" entry, which asks for the host's network: a \
         microVM cannot share the host's network stack; add {{\"type\": \"network\"}} (a new \
         namespace, as `--net none`/bridge networking give) or a path to one, or run \
         host-network containers with runc"
    )]
    HostNetwork,
    /// The spec's path names the namespace the runtime itself runs in.
    #[error(
        "linux.namespaces network path {0} is the host's network namespace: a microVM cannot \
         share the host's network stack; give the container a network namespace of its own, or \
         run host-network containers with runc"
    )]
    HostNetworkPath(PathBuf),
    /// The path could not be opened.
    #[error("open network namespace {path}")]
    Open {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `setns` or `unshare` failed.
    #[error("{op} network namespace")]
    Enter {
        /// `join` or `create`.
        op: &'static str,
        /// The cause.
        #[source]
        source: nix::Error,
    },
}

/// The spec's network namespace, refused when it is the host's (`self_ns` is the namespace the
/// runtime runs in, normally `/proc/self/ns/net`).
///
/// # Errors
/// [`NetnsError::HostNetwork`], [`NetnsError::HostNetworkPath`], or a path that cannot be read.
pub fn plan(spec: &Spec, self_ns: &Path) -> Result<Netns, NetnsError> {
    let entry = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network))
        .ok_or(NetnsError::HostNetwork)?;
    let Some(path) = entry.path().as_ref().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(Netns::New);
    };
    let open = |p: &Path| {
        std::fs::metadata(p).map_err(|source| NetnsError::Open {
            path: p.to_path_buf(),
            source,
        })
    };
    let theirs = open(path)?;
    if let Ok(ours) = std::fs::metadata(self_ns) {
        if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
            return Err(NetnsError::HostNetworkPath(path.clone()));
        }
    }
    Ok(Netns::Join(path.clone()))
}

/// The path of the spec's network namespace, if it names one.
pub fn path(spec: &Spec) -> Option<PathBuf> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network))
        .and_then(|n| n.path().clone())
        .filter(|p| !p.as_os_str().is_empty())
}

/// Whether the spec asks for a new network namespace (a `network` entry without a path): the
/// monitor makes it, and the caller (Docker) fills it after `create` has forked the monitor.
pub fn is_new(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network))
        .is_some_and(|n| n.path().as_ref().is_none_or(|p| p.as_os_str().is_empty()))
}

/// Moves the calling thread (in a single-threaded process: the process) into the namespace; a
/// new one gets its `lo` up, as runc's does.
///
/// # Errors
/// See [`NetnsError`].
pub fn enter(netns: &Netns) -> Result<(), NetnsError> {
    match netns {
        Netns::Join(path) => {
            let f = std::fs::File::open(path).map_err(|source| NetnsError::Open {
                path: path.clone(),
                source,
            })?;
            nix::sched::setns(f.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|source| NetnsError::Enter { op: "join", source })
        }
        Netns::New => {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                op: "create",
                source,
            })?;
            if let Err(e) = super::link::set_up_by_name("lo", None) {
                log::warn!(
                    "bring lo up in the new network namespace: {}",
                    vessel_error::chain(&e)
                );
            }
            Ok(())
        }
    }
}

/// `spec` with the network namespace's path removed: the guest makes the container a new
/// namespace of its own, whatever the host's is (the agent then moves the interfaces into it).
pub fn guest_spec(spec: &Spec) -> Spec {
    let mut spec = spec.clone();
    if let Some(linux) = spec.linux_mut() {
        if let Some(namespaces) = linux.namespaces_mut() {
            for ns in namespaces.iter_mut() {
                if ns.typ() == LinuxNamespaceType::Network {
                    ns.set_path(None);
                }
            }
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(namespaces: &str) -> Spec {
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"linux":{{"namespaces":{namespaces}}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn the_network_entry_decides_join_new_or_refused_naming_the_field() {
        let self_ns = Path::new("/proc/self/ns/net");
        assert_eq!(
            plan(&spec(r#"[{"type":"network"}]"#), self_ns).unwrap(),
            Netns::New
        );
        assert_eq!(
            plan(&spec(r#"[{"type":"network","path":""}]"#), self_ns).unwrap(),
            Netns::New
        );
        let e = plan(&spec(r#"[{"type":"pid"}]"#), self_ns).unwrap_err();
        assert!(matches!(e, NetnsError::HostNetwork));
        assert!(
            e.to_string()
                .contains("linux.namespaces has no \"network\" entry"),
            "{e}"
        );
        // The runtime's own namespace, under any name, is the host's.
        let e = plan(
            &spec(r#"[{"type":"network","path":"/proc/self/ns/net"}]"#),
            self_ns,
        )
        .unwrap_err();
        assert!(matches!(e, NetnsError::HostNetworkPath(_)), "{e}");
        let e = plan(
            &spec(r#"[{"type":"network","path":"/nonexistent/ns"}]"#),
            self_ns,
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ns"), "{e}");
        // Another namespace is joined: /proc/1/ns/net compared with a different "self".
        let other = plan(
            &spec(r#"[{"type":"network","path":"/proc/self/ns/net"}]"#),
            Path::new("/nonexistent/self"),
        )
        .unwrap();
        assert_eq!(other, Netns::Join("/proc/self/ns/net".into()));
    }

    #[test]
    fn the_guest_spec_keeps_the_network_entry_without_its_path() {
        let s = guest_spec(&spec(
            r#"[{"type":"pid"},{"type":"network","path":"/run/netns/cni-1"}]"#,
        ));
        let ns = s.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert_eq!(ns.len(), 2);
        assert_eq!(ns[1].typ(), LinuxNamespaceType::Network);
        assert_eq!(ns[1].path(), &None);
    }
}
