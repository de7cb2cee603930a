//! `spec`: write a starter `config.json` (runc spec.go, libcontainer/specconv `Example` and
//! `ToRootless`).
//!
//! The content comes from oci-spec's defaults, which follow runc's example (`sh` as the process,
//! the usual mounts, masked and read-only paths, a pid/network/ipc/uts/mount namespace set), with
//! `process.terminal` true as in runc's and the hostname set to `vessel`. Written with tab indentation, as runc does.

use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    get_rootless_mounts, LinuxBuilder, LinuxIdMappingBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, Spec,
};
use serde::Serialize;

/// The runtime-spec version Vessel writes and reports (`spec:` of `--version`, `features`).
pub const OCI_VERSION: &str = "1.2.0";

/// Errors of [`write_spec`].
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// `config.json` is already there (runc's text).
    #[error("File config.json exists. Remove it first")]
    CreateExisting,
    /// The file could not be written.
    #[error("write {path}")]
    WriteConfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The rootless variant could not be built.
    #[error("build the rootless spec: {0}")]
    BuildRootless(String),
}

/// The starter spec; with `rootless`, the variant for an unprivileged user: a user namespace
/// mapping the caller's uid and gid to 0, no network or cgroup namespace, `/sys` bind-mounted,
/// and no resources (runc specconv `ToRootless`).
pub fn example(rootless: bool) -> Result<Spec, SpecError> {
    let mut spec = Spec::default();
    // runc's example runs `sh` on a terminal (specconv.Example: `Terminal: true`).
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_terminal(Some(true));
    spec.set_process(Some(process));
    spec.set_version(OCI_VERSION.to_owned())
        .set_hostname(Some("vessel".to_owned()))
        .set_annotations(None);
    if rootless {
        make_rootless(&mut spec).map_err(|e| SpecError::BuildRootless(e.to_string()))?;
    }
    Ok(spec)
}

fn make_rootless(spec: &mut Spec) -> Result<(), oci_spec::OciSpecError> {
    let linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|ns| {
            !matches!(
                ns.typ(),
                LinuxNamespaceType::Network | LinuxNamespaceType::User | LinuxNamespaceType::Cgroup
            )
        })
        .collect();
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .build()?,
    );
    let map = |id: u32| {
        LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(id)
            .size(1u32)
            .build()
    };
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let rootless = LinuxBuilder::default()
        .namespaces(namespaces)
        .uid_mappings(vec![map(uid)?])
        .gid_mappings(vec![map(gid)?])
        .masked_paths(linux.masked_paths().clone().unwrap_or_default())
        .readonly_paths(linux.readonly_paths().clone().unwrap_or_default())
        .build()?;
    spec.set_linux(Some(rootless))
        .set_mounts(Some(get_rootless_mounts()));
    Ok(())
}

/// Serialises `value` as JSON indented with `indent` (runc uses a tab for `spec` and four spaces
/// for `features`).
pub fn to_json_indented<T: Serialize>(value: &T, indent: &[u8]) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(indent);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    value
        .serialize(&mut ser)
        .expect("spec types always serialise");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Writes the starter spec to `<bundle>/config.json`, refusing to overwrite one.
pub fn write_spec(bundle: &Path, rootless: bool) -> Result<PathBuf, SpecError> {
    let path = bundle.join("config.json");
    let spec = example(rootless)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(SpecError::CreateExisting)
        }
        Err(source) => return Err(SpecError::WriteConfig { path, source }),
    };
    io::Write::write_all(&mut file, to_json_indented(&spec, b"\t").as_bytes()).map_err(
        |source| SpecError::WriteConfig {
            path: path.clone(),
            source,
        },
    )?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_runs_sh_from_rootfs() {
        let spec = example(false).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &vec!["sh".to_owned()]);
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(spec.root().as_ref().unwrap().path(), Path::new("rootfs"));
        assert_eq!(spec.version(), OCI_VERSION);
    }

    #[test]
    fn rootless_has_user_namespace_and_no_network() {
        let spec = example(true).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let types: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(types.contains(&LinuxNamespaceType::User));
        assert!(!types.contains(&LinuxNamespaceType::Network));
        assert_eq!(linux.uid_mappings().as_ref().unwrap().len(), 1);
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        write_spec(dir.path(), false).unwrap();
        let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        assert!(text.starts_with("{\n\t\"ociVersion\": \"1.2.0\""), "{text}");
        let err = write_spec(dir.path(), false).unwrap_err();
        assert_eq!(err.to_string(), "File config.json exists. Remove it first");
    }
}
