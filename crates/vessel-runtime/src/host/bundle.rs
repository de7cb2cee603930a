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
    /// `config.json` is not well-formed JSON: it ends early (a truncated or empty file) or has a
    /// syntax error. The message says where (the innermost field reached, when there is one) and
    /// what to fix; the cause gives serde_json's reason with the line and column.
    #[error("parse {path}: {}", json_fix(*.truncated, .inside.as_deref()))]
    ReadJson {
        /// The file.
        path: PathBuf,
        /// The innermost field the parser had reached, as a path (`mounts[1]`), if any.
        inside: Option<String>,
        /// The file ends early (serde_json's `Category::Eof`) rather than being malformed.
        truncated: bool,
        /// The cause (`EOF while parsing a value at line 15 column 2`).
        #[source]
        source: serde_json::Error,
    },
    /// `config.json` is JSON but not a valid runtime spec. The message names the offending field
    /// as a path (`linux.namespaces[2].type`); the cause is serde's reason, which says what the
    /// field takes (`expected u32`, the accepted values of an enum, the missing key), with the
    /// line and column when known.
    #[error("parse {path}{}", field_prefix(.field.as_deref()))]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// Where in the document the value failed (`process.user.uid`); `None` for the document
        /// itself (a missing top-level key).
        field: Option<String>,
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
    /// `root.path` goes through a symbolic link (runc's `validateRootfs` refuses it: the path
    /// must be the directory itself, as resolved from the bundle's physical path).
    #[error(
        "invalid rootfs: not an absolute path, or a symlink: root.path {path} resolves to \
         {resolved}; set root.path to the real directory"
    )]
    SymlinkRootfs {
        /// The rootfs path as the config names it (joined to the bundle when relative).
        path: PathBuf,
        /// Where it leads.
        resolved: PathBuf,
    },
}

/// `p` with `.` and `..` components removed lexically, as Go's `filepath.Clean` (`..` above the
/// root stays at the root).
fn lexically_clean(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
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
    /// Capability names `config.json` gave that are unknown, dropped from [`Bundle::spec`] as runc
    /// drops them (with a warning: [`unknown_capabilities_warning`]).
    pub unknown_capabilities: Vec<UnknownCapability>,
}

/// A capability name in one of `process.capabilities`' sets that no kernel capability has.
///
/// runc (since 1.1) ignores such names with the warning `ignoring unknown or unavailable
/// capabilities: [...]` rather than failing (runc libcontainer/capabilities `New`); Vessel does
/// the same, naming the sets too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCapability {
    /// The set, as a field path: `process.capabilities.bounding`.
    pub field: String,
    /// The name as given: `CAP_FOO`.
    pub name: String,
}

/// The five capability sets of `process.capabilities` (runtime-spec config.md "Linux process").
const CAPABILITY_SETS: [&str; 5] = [
    "bounding",
    "effective",
    "inheritable",
    "permitted",
    "ambient",
];

/// The warning for dropped capability names, runc's text plus the sets they were in:
/// `ignoring unknown or unavailable capabilities: [CAP_FOO X] (in process.capabilities.bounding,
/// process.capabilities.effective)`; `None` when nothing was dropped.
pub fn unknown_capabilities_warning(unknown: &[UnknownCapability]) -> Option<String> {
    if unknown.is_empty() {
        return None;
    }
    let names: std::collections::BTreeSet<&str> = unknown.iter().map(|u| u.name.as_str()).collect();
    let mut fields: Vec<&str> = Vec::new();
    for u in unknown {
        if !fields.contains(&u.field.as_str()) {
            fields.push(&u.field);
        }
    }
    Some(format!(
        "ignoring unknown or unavailable capabilities: [{}] (in {})",
        names.into_iter().collect::<Vec<_>>().join(" "),
        fields.join(", ")
    ))
}

/// The part of [`BundleError::ReadJson`]'s message that says where and what to fix.
fn json_fix(truncated: bool, inside: Option<&str>) -> String {
    match (truncated, inside) {
        (true, Some(field)) => {
            format!("the JSON ends inside {field}; complete it (is the file truncated?)")
        }
        (true, None) => "the JSON ends early; complete it (is the file truncated or empty?)".into(),
        (false, Some(field)) => {
            format!("invalid JSON in {field}; fix the syntax at the line and column given")
        }
        (false, None) => "invalid JSON; fix the syntax at the line and column given".into(),
    }
}

/// `: field <path>` when the failing field is known.
fn field_prefix(field: Option<&str>) -> String {
    field.map(|f| format!(": field {f}")).unwrap_or_default()
}

/// The field path of a `serde_path_to_error` path without its unknown tail (`mounts[1].?` is
/// `mounts[1]`); `None` when nothing is left (the document itself).
fn known_field(path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut segments: Vec<&Segment> = path.iter().collect();
    while matches!(segments.last(), Some(Segment::Unknown)) {
        segments.pop();
    }
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Turns a parse failure into [`BundleError::ReadJson`] (malformed JSON) or
/// [`BundleError::ParseConfig`] (a value the spec cannot hold).
fn parse_error(path: &Path, field: Option<String>, source: serde_json::Error) -> BundleError {
    use serde_json::error::Category;
    match source.classify() {
        Category::Eof | Category::Syntax | Category::Io => BundleError::ReadJson {
            path: path.to_owned(),
            inside: field,
            truncated: source.classify() == Category::Eof,
            source,
        },
        Category::Data => BundleError::ParseConfig {
            path: path.to_owned(),
            field,
            source,
        },
    }
}

/// Parses `config.json`'s text. Unknown capability names are dropped (and returned) as runc
/// drops them; any other failure names the field and keeps serde_json's line and column.
fn parse_spec(path: &Path, text: &str) -> Result<(Spec, Vec<UnknownCapability>), BundleError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let first = serde_path_to_error::deserialize::<_, Spec>(&mut de);
    match first {
        // Text after the document is not read, as runc's `json.Decoder.Decode` does not.
        Ok(spec) => return Ok((spec, Vec::new())),
        // Only a value refused inside a capability set (not a syntax error there) can be an
        // unknown name.
        Err(e)
            if e.inner().classify() != serde_json::error::Category::Data
                || !(e.path().to_string().starts_with("process.capabilities.")
                    || e.path().to_string().starts_with("process.scheduler.flags")) =>
        {
            let field = known_field(e.path());
            return Err(parse_error(path, field, e.into_inner()));
        }
        Err(_) => {}
    }
    // A capability name oci-spec does not type: drop the unknown ones from the tree and parse
    // that (its errors then have a field path but no line: the tree has no text positions).
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| parse_error(path, None, e))?;
    let unknown = match value.pointer_mut("/process/capabilities") {
        Some(caps) => drop_unknown_capabilities(caps, "process.capabilities"),
        None => Vec::new(),
    };
    if let Some(process) = value.get_mut("process") {
        spec_scheduler_flag_names(process);
    }
    let spec = serde_path_to_error::deserialize::<_, Spec>(value).map_err(|e| {
        let field = known_field(e.path());
        parse_error(path, field, e.into_inner())
    })?;
    Ok((spec, unknown))
}

/// Renames, in a process object's `scheduler.flags`, the two flags whose runtime-spec names
/// oci-spec 0.8 does not take (`SCHED_FLAG_RESET_ON_FORK`, `SCHED_FLAG_DL_OVERRUN`; it reads
/// `SCHED_RESET_ON_FORK` and `SCHED_FLAG_D_L_OVERRUN`) to the names it takes, so that a config
/// using the spec's names parses. Used for config.json and for `exec`'s process.
pub fn spec_scheduler_flag_names(process: &mut serde_json::Value) {
    let Some(serde_json::Value::Array(flags)) = process.pointer_mut("/scheduler/flags") else {
        return;
    };
    for flag in flags {
        let renamed = match flag.as_str() {
            Some("SCHED_FLAG_RESET_ON_FORK") => "SCHED_RESET_ON_FORK",
            Some("SCHED_FLAG_DL_OVERRUN") => "SCHED_FLAG_D_L_OVERRUN",
            _ => continue,
        };
        *flag = serde_json::Value::String(renamed.to_owned());
    }
}

/// Removes from the five sets of a `capabilities` object (`field` is its path, for the report:
/// `process.capabilities`) every string that is not a capability name oci-spec knows (it takes
/// `CAP_X`, `X`, any case), returning them in order. Values that are not strings are left for
/// the typed parse to refuse. Used for config.json and for `exec`'s process.
pub fn drop_unknown_capabilities(
    capabilities: &mut serde_json::Value,
    field: &str,
) -> Vec<UnknownCapability> {
    let mut unknown = Vec::new();
    for set in CAPABILITY_SETS {
        let Some(serde_json::Value::Array(names)) = capabilities.get_mut(set) else {
            continue;
        };
        names.retain(|name| {
            let serde_json::Value::String(s) = name else {
                return true;
            };
            let known =
                serde_json::from_value::<oci_spec::runtime::Capability>(name.clone()).is_ok();
            if !known {
                unknown.push(UnknownCapability {
                    field: format!("{field}.{set}"),
                    name: s.clone(),
                });
            }
            known
        });
    }
    unknown
}

impl Bundle {
    /// Loads `<dir>/config.json` and checks it: `process` present, `process.cwd` absolute,
    /// `process.args` not empty, the fields [`crate::host::validate::check_spec`] checks, `root.path`
    /// set and existing.
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
        let (spec, unknown_capabilities) = parse_spec(&config, &text)?;
        validate_process(&spec)?;
        validate_linux(&spec)?;
        crate::host::validate::check_spec(&spec).map_err(BundleError::InvalidSpec)?;
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| BundleError::InvalidSpec("root must be specified".into()))?;
        let rootfs = path.join(root.path());
        if !rootfs.is_dir() {
            return Err(BundleError::FindRootfs { path: rootfs });
        }
        // As runc: a relative root.path is joined to the bundle's physical path (runc's cwd after
        // chdir), cleaned lexically, and must then be where it resolves to.
        let physical = path.canonicalize().unwrap_or_else(|_| path.clone());
        let named = lexically_clean(&physical.join(root.path()));
        let resolved = rootfs.canonicalize().unwrap_or_else(|_| rootfs.clone());
        if named != resolved {
            return Err(BundleError::SymlinkRootfs {
                path: rootfs,
                resolved,
            });
        }
        let rootfs = resolved;
        // runc records the bundle as its working directory after `chdir` into it, i.e. its
        // physical path: `..` and symlinks resolved.
        Ok(Bundle {
            path: physical,
            spec,
            rootfs,
            unknown_capabilities,
        })
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

    /// Loads a bundle whose config.json is `config`; returns the error chain and config.json's
    /// absolute path.
    fn load_error(config: &str) -> (String, String) {
        let dir = bundle_with(config);
        let err = Bundle::load(dir.path()).unwrap_err();
        let path = dir.path().canonicalize().unwrap().join("config.json");
        (vessel_error::chain(&err), path.display().to_string())
    }

    #[test]
    fn parse_error_names_the_field() {
        let bad = GOOD.replace(
            r#""process":"#,
            r#""linux":{"namespaces":[{"type":"pid"},{"type":"bogus"}]},"process":"#,
        );
        let (err, config) = load_error(&bad);
        assert_eq!(
            err,
            format!(
                "parse {config}: field linux.namespaces[1].type: unknown variant `bogus`, \
                 expected one of `mount`, `cgroup`, `uts`, `ipc`, `user`, `pid`, `network`, \
                 `time` at line 2 column 61"
            )
        );
        // A wrong type in a nested field: the field, then what it takes.
        let bad = GOOD.replace(r#""uid":0"#, r#""uid":"zero""#);
        let (err, config) = load_error(&bad);
        assert_eq!(
            err,
            format!(
                "parse {config}: field process.user.uid: invalid type: string \"zero\", \
                 expected u32 at line 2 column 63"
            )
        );
        // A missing key: the object that lacks it.
        let bad = GOOD.replace(r#""cwd":"/","#, "");
        let (err, config) = load_error(&bad);
        assert_eq!(
            err,
            format!("parse {config}: field process: missing field `cwd` at line 2 column 58")
        );
    }

    #[test]
    fn malformed_json_says_where_and_what_to_fix() {
        // Truncated inside a field: that field, never serde_path_to_error's `?`.
        let (err, config) = load_error(&GOOD[..GOOD.find("\"sh\"").unwrap() + 4]);
        assert_eq!(
            err,
            format!(
                "parse {config}: the JSON ends inside process.args; complete it (is the file \
                 truncated?): EOF while parsing a list at line 2 column 41"
            )
        );
        // Truncated before any field, and empty.
        for (text, what) in [("{", "an object"), ("", "a value")] {
            let (err, config) = load_error(text);
            assert_eq!(
                err,
                format!(
                    "parse {config}: the JSON ends early; complete it (is the file truncated or \
                     empty?): EOF while parsing {what} at line 1 column {}",
                    text.len()
                )
            );
        }
        // A syntax error inside a field, and text after the document.
        let (err, config) = load_error(&GOOD.replace(r#"["sh"]"#, r#"["sh" "-c"]"#));
        assert_eq!(
            err,
            format!(
                "parse {config}: invalid JSON in process.args; fix the syntax at the line and \
                 column given: expected `,` or `]` at line 2 column 43"
            )
        );
        // Text after the document is not read, as runc's decoder does not read it.
        assert!(Bundle::load(bundle_with(&format!("{GOOD}}}")).path()).is_ok());
    }

    #[test]
    fn unknown_capabilities_are_dropped_with_runc_s_warning_naming_the_sets() {
        let caps = GOOD.replace(
            r#""cwd":"/","#,
            r#""cwd":"/","capabilities":{"bounding":["CAP_CHOWN","CAP_FOO","CAP_KILL"],
               "effective":["CAP_FOO","cap_kill","UNKNOWN_CAP"],"permitted":["CAP_CHOWN"]},"#,
        );
        let dir = bundle_with(&caps);
        let b = Bundle::load(dir.path()).unwrap();
        let names: Vec<_> = b
            .unknown_capabilities
            .iter()
            .map(|u| (u.field.as_str(), u.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("process.capabilities.bounding", "CAP_FOO"),
                ("process.capabilities.effective", "CAP_FOO"),
                ("process.capabilities.effective", "UNKNOWN_CAP"),
            ]
        );
        let process = b.spec.process().as_ref().unwrap();
        let c = process.capabilities().as_ref().unwrap();
        use oci_spec::runtime::Capability;
        assert_eq!(
            c.bounding().as_ref().unwrap(),
            &[Capability::Chown, Capability::Kill].into()
        );
        assert_eq!(c.effective().as_ref().unwrap(), &[Capability::Kill].into());
        assert_eq!(
            unknown_capabilities_warning(&b.unknown_capabilities).unwrap(),
            "ignoring unknown or unavailable capabilities: [CAP_FOO UNKNOWN_CAP] \
             (in process.capabilities.bounding, process.capabilities.effective)"
        );
        assert_eq!(unknown_capabilities_warning(&[]), None);
        assert!(Bundle::load(bundle_with(GOOD).path())
            .unwrap()
            .unknown_capabilities
            .is_empty());
        // Other errors behind an unknown name still name their field (without a line: the
        // document is parsed again as a tree).
        let (err, config) =
            load_error(&caps.replace(r#""permitted":["CAP_CHOWN"]"#, r#""permitted":[7]"#));
        assert_eq!(
            err,
            format!(
                "parse {config}: field process.capabilities.permitted[0]: invalid type: \
                 integer `7`, expected a string"
            )
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
    fn refuses_fields_runc_refuses_before_any_vm_and_names_them() {
        let bogus = GOOD.replace(
            r#""process":"#,
            r#""linux":{"rootfsPropagation":"bogus"},"process":"#,
        );
        let err = Bundle::load(bundle_with(&bogus).path()).unwrap_err();
        assert!(matches!(err, BundleError::InvalidSpec(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("rootfsPropagation=bogus is not supported (linux.rootfsPropagation"),
            "{err}"
        );
        let oom = GOOD.replace(r#""cwd":"/","#, r#""cwd":"/","oomScoreAdj":1001,"#);
        let err = Bundle::load(bundle_with(&oom).path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("(process.oomScoreAdj is 1001: set it between -1000 and 1000)"),
            "{err}"
        );
        // A personality domain other than LINUX and LINUX32 (runc: `invalid personality domain
        // X`) is refused by the parse, naming the field and the values it takes.
        let domain = GOOD.replace(
            r#""process":"#,
            r#""linux":{"personality":{"domain":"LINUX64"}},"process":"#,
        );
        let (err, config) = load_error(&domain);
        assert_eq!(
            err,
            format!(
                "parse {config}: field linux.personality.domain: unknown variant `LINUX64`, \
                 expected `LINUX` or `LINUX32` at line 2 column 50"
            )
        );
        let ok = GOOD.replace(
            r#""process":"#,
            r#""linux":{"personality":{"domain":"LINUX32"},"rootfsPropagation":"rslave"},"process":"#,
        );
        assert!(Bundle::load(bundle_with(&ok).path()).is_ok());
    }

    #[test]
    fn scheduler_flags_with_the_runtime_spec_s_names_parse() {
        let flags = GOOD.replace(
            r#""cwd":"/","#,
            r#""cwd":"/","scheduler":{"policy":"SCHED_DEADLINE","runtime":1000000,
               "deadline":2000000,"period":2000000,
               "flags":["SCHED_FLAG_RESET_ON_FORK","SCHED_FLAG_DL_OVERRUN","SCHED_FLAG_RECLAIM"]},"#,
        );
        let b = Bundle::load(bundle_with(&flags).path()).unwrap();
        use oci_spec::runtime::LinuxSchedulerFlag as F;
        let s = b
            .spec
            .process()
            .as_ref()
            .unwrap()
            .scheduler()
            .clone()
            .unwrap();
        assert_eq!(
            s.flags().as_deref().unwrap(),
            [
                F::SchedResetOnFork,
                F::SchedFlagDLOverrun,
                F::SchedFlagReclaim
            ]
        );
        let (err, config) = load_error(&flags.replace("SCHED_FLAG_RECLAIM", "SCHED_FLAG_BOGUS"));
        assert!(
            err.starts_with(&format!(
                "parse {config}: field process.scheduler.flags[2]: unknown variant `SCHED_FLAG_BOGUS`"
            )),
            "{err}"
        );
    }

    #[test]
    fn refuses_missing_rootfs() {
        let cfg = GOOD.replace("\"rootfs\"", "\"nope\"");
        let dir = bundle_with(&cfg);
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("nope) does not exist"), "{err}");
    }

    #[test]
    fn refuses_a_rootfs_through_a_symlink_as_runc_but_not_a_symlinked_bundle_path() {
        let base = tempfile::tempdir().unwrap();
        let real = base.path().join("real-rootfs");
        std::fs::create_dir(&real).unwrap();
        let dir = bundle_with(GOOD);
        std::fs::remove_dir(dir.path().join("rootfs")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("rootfs")).unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        let BundleError::SymlinkRootfs { resolved, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(resolved, &real.canonicalize().unwrap());
        assert!(
            err.to_string()
                .starts_with("invalid rootfs: not an absolute path, or a symlink: root.path "),
            "{err}"
        );

        // An absolute root.path to the real directory, and ".." on the way, are fine; so is a
        // bundle reached through a symlink (runc resolves its cwd physically).
        let abs = GOOD.replace(
            "\"rootfs\"",
            &format!("\"{}/../real-rootfs\"", real.display()),
        );
        let ok = bundle_with(&abs);
        assert_eq!(
            Bundle::load(ok.path()).unwrap().rootfs,
            real.canonicalize().unwrap()
        );
        let good = bundle_with(GOOD);
        let link = base.path().join("bundle-link");
        std::os::unix::fs::symlink(good.path(), &link).unwrap();
        let b = Bundle::load(&link).unwrap();
        assert_eq!(b.rootfs, good.path().canonicalize().unwrap().join("rootfs"));
    }
}
