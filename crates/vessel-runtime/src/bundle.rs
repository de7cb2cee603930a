//! Loading and validating an OCI bundle: `<bundle>/config.json` (runtime-spec bundle.md) with the
//! checks runc makes before it creates anything (runc spec.go `loadSpec`, utils_linux.go
//! `validateProcessSpec`).

use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

/// Errors of [`Bundle::load`].
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle directory could not be made absolute.
    #[error("resolve bundle path {path}")]
    ResolveBundle {
        /// The path given.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The bundle directory does not exist or is not a directory (runc fails its `chdir` into
    /// it first: `chdir <bundle>: no such file or directory`).
    #[error("chdir {path}")]
    OpenBundle {
        /// The absolute bundle path.
        path: PathBuf,
        /// The cause (`NotFound`, `NotADirectory`, `PermissionDenied`).
        #[source]
        source: io::Error,
    },
    /// `config.json` does not exist in the bundle (runc's message).
    #[error("JSON specification file config.json not found")]
    FindConfig,
    /// `config.json` could not be read.
    #[error("read {path}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `config.json` is not a valid runtime spec. The message names the offending field as a
    /// path (`linux.namespaces[2].type`), then serde's reason (the accepted values for an enum).
    #[error("parse {path}: field {field}")]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// Where in the document the value failed, as `serde_path_to_error` spells it (`.` when
        /// the document itself is malformed).
        field: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A field is missing or has a value runc refuses; the message names the field.
    #[error("{0}")]
    InvalidSpec(String),
    /// `root.path` names a directory that does not exist.
    #[error("rootfs ({path}) does not exist")]
    FindRootfs {
        /// The absolute rootfs path.
        path: PathBuf,
    },
}

/// A validated bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute bundle directory (what `state` reports as `bundle`).
    pub path: PathBuf,
    /// The parsed `config.json`.
    pub spec: Spec,
    /// Absolute root filesystem path (`root.path` joined to the bundle when relative).
    pub rootfs: PathBuf,
}

impl Bundle {
    /// Loads `<dir>/config.json` and checks it: `process` present, `process.cwd` absolute,
    /// `process.args` not empty, `root.path` set and existing.
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        let path = std::path::absolute(dir).map_err(|source| BundleError::ResolveBundle {
            path: dir.to_owned(),
            source,
        })?;
        match std::fs::metadata(&path) {
            Err(source) => return Err(BundleError::OpenBundle { path, source }),
            Ok(m) if !m.is_dir() => {
                return Err(BundleError::OpenBundle {
                    path,
                    source: io::ErrorKind::NotADirectory.into(),
                })
            }
            Ok(_) => {}
        }
        let config = path.join("config.json");
        let text = match std::fs::read_to_string(&config) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BundleError::FindConfig),
            Err(source) => {
                return Err(BundleError::ReadConfig {
                    path: config,
                    source,
                })
            }
        };
        let mut de = serde_json::Deserializer::from_str(&text);
        let spec: Spec =
            serde_path_to_error::deserialize(&mut de).map_err(|e| BundleError::ParseConfig {
                path: config,
                field: e.path().to_string(),
                source: e.into_inner(),
            })?;
        validate_process(&spec)?;
        validate_linux(&spec)?;
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| BundleError::InvalidSpec("root must be specified".into()))?;
        let rootfs = path.join(root.path());
        if !rootfs.is_dir() {
            return Err(BundleError::FindRootfs { path: rootfs });
        }
        Ok(Bundle { path, spec, rootfs })
    }

    /// `process.terminal` (false when absent).
    pub fn terminal(&self) -> bool {
        self.spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false)
    }
}

fn validate_process(spec: &Spec) -> Result<(), BundleError> {
    let invalid = |m: &str| Err(BundleError::InvalidSpec(m.to_owned()));
    let Some(process) = spec.process() else {
        return invalid("process property must not be empty");
    };
    if process.cwd().as_os_str().is_empty() {
        return invalid("Cwd property must not be empty");
    }
    if !process.cwd().is_absolute() {
        return invalid("Cwd must be an absolute path");
    }
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return invalid("args must not be empty");
    }
    Ok(())
}

/// Checks the host can make before booting a VM, so a bad spec fails `create` at once instead of
/// after the guest agent refuses it: mount destinations must be absolute (OCI runtime spec,
/// "Mounts": `destination` MUST be an absolute path), and a namespace type may appear only once
/// (runc's specconv: `malformed spec file: duplicated ns "<type>"`).
fn validate_linux(spec: &Spec) -> Result<(), BundleError> {
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !m.destination().is_absolute() {
            return Err(BundleError::InvalidSpec(format!(
                "mounts[{i}].destination {:?} is not an absolute path",
                m.destination()
            )));
        }
    }
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for ns in &namespaces {
        let typ = ns.typ();
        if !seen.insert(typ) {
            return Err(BundleError::InvalidSpec(format!(
                "malformed spec file: duplicated ns {:?}",
                typ.to_string()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        dir
    }

    const GOOD: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
        "process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}}"#;

    #[test]
    fn loads_a_good_bundle() {
        let dir = bundle_with(GOOD);
        let b = Bundle::load(dir.path()).unwrap();
        assert_eq!(b.rootfs, dir.path().join("rootfs"));
        assert!(b.path.is_absolute());
        assert!(!b.terminal());
    }

    #[test]
    fn missing_bundle_directory_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = Bundle::load(&missing).unwrap_err();
        assert_eq!(err.to_string(), format!("chdir {}", missing.display()));
        let BundleError::OpenBundle { source, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(source.kind(), io::ErrorKind::NotFound);
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = Bundle::load(&file).unwrap_err();
        let BundleError::OpenBundle { source, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(source.kind(), io::ErrorKind::NotADirectory);
    }

    #[test]
    fn missing_config_uses_runc_text() {
        let dir = tempfile::tempdir().unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "JSON specification file config.json not found"
        );
    }

    #[test]
    fn parse_error_names_the_field() {
        let bad = GOOD.replace(
            r#""process":"#,
            r#""linux":{"namespaces":[{"type":"pid"},{"type":"bogus"}]},"process":"#,
        );
        let dir = bundle_with(&bad);
        let err = Bundle::load(dir.path()).unwrap_err();
        let config = dir.path().canonicalize().unwrap().join("config.json");
        assert_eq!(
            err.to_string(),
            format!("parse {}: field linux.namespaces[1].type", config.display())
        );
        let BundleError::ParseConfig { source, .. } = err else {
            panic!("not a parse error: {err:?}");
        };
        assert!(
            source
                .to_string()
                .starts_with("unknown variant `bogus`, expected one of `mount`"),
            "{source}"
        );
    }

    #[test]
    fn refuses_relative_cwd_and_empty_args() {
        let rel = GOOD.replace(r#""cwd":"/""#, r#""cwd":"tmp""#);
        let err = Bundle::load(bundle_with(&rel).path()).unwrap_err();
        assert_eq!(err.to_string(), "Cwd must be an absolute path");
        let empty = GOOD.replace(r#""args":["sh"]"#, r#""args":[]"#);
        let err = Bundle::load(bundle_with(&empty).path()).unwrap_err();
        assert_eq!(err.to_string(), "args must not be empty");
    }

    #[test]
    fn refuses_relative_mount_destination_and_duplicate_namespaces() {
        let rel = GOOD.replace(
            r#""process":"#,
            r#""mounts":[{"destination":"/proc","type":"proc","source":"proc"},{"destination":"rel/dst","type":"tmpfs","source":"tmpfs"}],"process":"#,
        );
        let err = Bundle::load(bundle_with(&rel).path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"mounts[1].destination "rel/dst" is not an absolute path"#
        );
        let dup = GOOD.replace(
            r#""process":"#,
            r#""linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"pid"}]},"process":"#,
        );
        let err = Bundle::load(bundle_with(&dup).path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"malformed spec file: duplicated ns "pid""#
        );
    }

    #[test]
    fn refuses_missing_rootfs() {
        let cfg = GOOD.replace("\"rootfs\"", "\"nope\"");
        let dir = bundle_with(&cfg);
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("nope) does not exist"), "{err}");
    }
}
