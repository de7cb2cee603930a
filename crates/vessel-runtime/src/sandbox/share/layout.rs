//! The share's layout (where the rootfs and each bind mount's source sit in it), runc's rules
//! for which OCI mounts are bind mounts, and the spec as the guest sees it.

use std::ffi::CString;
use std::io;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{Mount, Spec};
use serde::{Deserialize, Serialize};

use super::{ShareError, GUEST_MOUNT};

/// What an entry of the share is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A directory: the agent bind-mounts it onto a directory.
    Dir,
    /// Anything else (regular file, socket, device node): the agent bind-mounts it onto a file.
    File,
}

/// One bind or rbind mount of the spec, as found in the share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareEntry {
    /// Index of the mount in config.json `mounts`.
    pub index: usize,
    /// Path relative to the share root (`mounts/<index>`), plain components only.
    pub path: String,
    /// Directory or file.
    pub kind: EntryKind,
    /// Mounted read-only in the share (the mount's options contain `ro`).
    pub readonly: bool,
}

/// What the agent needs to build the container from the share: where the rootfs is and where
/// each bind mount's source is. Serialisable so it can travel in the create request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareLayout {
    /// The share on the host (`<root>/<id>/share`, symlinks resolved): the virtio-fs shared dir.
    pub dir: PathBuf,
    /// The rootfs entry relative to the share (always [`ROOTFS_ENTRY`]).
    pub rootfs: String,
    /// The rootfs is mounted read-only (`root.readonly`).
    pub rootfs_readonly: bool,
    /// One entry per bind or rbind mount, in config.json order.
    pub mounts: Vec<ShareEntry>,
}

impl ShareLayout {
    /// The entry for OCI mount `index`, if that mount is a bind mount.
    pub fn entry(&self, index: usize) -> Option<&ShareEntry> {
        self.mounts.iter().find(|e| e.index == index)
    }

    /// The spec as the agent must see it (docs/design.md, "File sharing"): `root.path` is
    /// `<GUEST_MOUNT>/rootfs` and the `source` of every bind mount in the layout is
    /// `<GUEST_MOUNT>/mounts/<n>`; everything else is unchanged.
    pub fn guest_spec(&self, spec: &Spec) -> Spec {
        let guest = Path::new(GUEST_MOUNT);
        let mut out = spec.clone();
        if let Some(mut root) = out.root().clone() {
            root.set_path(guest.join(&self.rootfs));
            out.set_root(Some(root));
        }
        if let Some(mut mounts) = out.mounts().clone() {
            for (index, m) in mounts.iter_mut().enumerate() {
                if let Some(e) = self.entry(index) {
                    m.set_source(Some(guest.join(&e.path)));
                }
            }
            out.set_mounts(Some(mounts));
        }
        out
    }
}

/// Whether an OCI mount is a bind mount, by runc's rule: type `bind`, or `bind`/`rbind` among its
/// options (runc libcontainer/specconv `createLibcontainerMount`).
pub fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind") || options(m).any(|o| o == "bind" || o == "rbind")
}

/// Whether an OCI bind mount is recursive: `rbind` among its options (runc: a plain `bind` type
/// with no `rbind` option is not recursive).
pub fn is_recursive(m: &Mount) -> bool {
    options(m).any(|o| o == "rbind")
}

/// Whether an OCI mount asks for read-only: the last of `ro`/`rw` in its options wins.
pub fn is_readonly(m: &Mount) -> bool {
    options(m)
        .filter(|o| *o == "ro" || *o == "rw")
        .last()
        .is_some_and(|o| o == "ro")
}

fn options(m: &Mount) -> impl Iterator<Item = &str> {
    m.options().iter().flatten().map(String::as_str)
}
/// Checks that `rel` is a plain relative path (no root, no `..`, no `.`), as every path of a
/// [`ShareLayout`] is; the agent applies the same rule before it joins one to its mount of the
/// share.
pub fn check_relative(rel: &str) -> Result<(), ShareError> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(ShareError::EscapeShare {
            path: p.to_owned(),
            source: io::Error::from_raw_os_error(libc::EXDEV),
        });
    }
    let _ = CString::new(rel).map_err(|e| ShareError::EscapeShare {
        path: p.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, e),
    })?;
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::share::ROOTFS_ENTRY;

    #[test]
    fn layout_paths_must_be_plain_relative() {
        for ok in ["rootfs", "mounts/3"] {
            check_relative(ok).unwrap();
        }
        for bad in ["", "/etc", "../x", "mounts/../../x", "./rootfs"] {
            let e = check_relative(bad).unwrap_err();
            assert!(e.to_string().starts_with(&format!("{bad} escapes")), "{e}");
        }
    }

    #[test]
    fn guest_spec_points_root_and_bind_sources_into_the_guest_share() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": true},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/x/hosts",
                 "options": ["rbind", "ro"]},
            ],
        }))
        .unwrap();
        let layout = ShareLayout {
            dir: "/run/vessel/c1/share".into(),
            rootfs: ROOTFS_ENTRY.into(),
            rootfs_readonly: true,
            mounts: vec![ShareEntry {
                index: 1,
                path: "mounts/1".into(),
                kind: EntryKind::File,
                readonly: true,
            }],
        };
        let g = layout.guest_spec(&spec);
        let root = g.root().as_ref().unwrap();
        assert_eq!(root.path(), Path::new("/run/vessel/shared/rootfs"));
        assert_eq!(root.readonly(), Some(true));
        let m = g.mounts().as_ref().unwrap();
        assert_eq!(m[0].source().as_deref(), Some(Path::new("proc")));
        assert_eq!(
            m[1].source().as_deref(),
            Some(Path::new("/run/vessel/shared/mounts/1"))
        );
        assert_eq!(m[1].options(), spec.mounts().as_ref().unwrap()[1].options());
        let json = serde_json::to_value(&layout).unwrap();
        assert_eq!(json["mounts"][0]["kind"], "file");
    }

    #[test]
    fn bind_rules_follow_runc() {
        let m = |v: serde_json::Value| -> Mount { serde_json::from_value(v).unwrap() };
        assert!(is_bind(&m(
            serde_json::json!({"destination": "/a", "type": "bind"})
        )));
        assert!(is_bind(&m(
            serde_json::json!({"destination": "/a", "type": "none", "options": ["rbind"]})
        )));
        assert!(!is_bind(&m(
            serde_json::json!({"destination": "/a", "type": "tmpfs"})
        )));
        let ro = m(serde_json::json!({"destination": "/a", "options": ["ro", "rw"]}));
        assert!(!is_readonly(&ro));
        let ro = m(serde_json::json!({"destination": "/a", "options": ["bind", "ro"]}));
        assert!(is_readonly(&ro) && !is_recursive(&ro));
    }
}
