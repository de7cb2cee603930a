//! `features`: what this build of Vessel supports, in the runtime-spec features document shape
//! (runtime-spec features.md, features-linux.md). Absent fields mean "unknown"; only what Vessel
//! really does is claimed, and the content is fixed at build time.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::verbs::spec::OCI_VERSION;

/// The features document (runtime-spec specs-go/features `Features`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    /// Oldest runtime-spec version accepted.
    pub oci_version_min: &'static str,
    /// Newest runtime-spec version accepted.
    pub oci_version_max: &'static str,
    /// Hook kinds run, as config.json names them (all six, as runc lists them; see
    /// [`crate::host::hooks`] for where each runs).
    pub hooks: Vec<&'static str>,
    /// Linux-specific features.
    pub linux: LinuxFeatures,
    /// Runtime information (`io.vessel.*`).
    pub annotations: BTreeMap<&'static str, String>,
    /// Annotations that change the sandbox and deserve the caller's scrutiny (prefix form).
    pub potentially_unsafe_config_annotations: Vec<&'static str>,
}

/// `linux` of the features document.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxFeatures {
    /// Namespaces the guest agent creates.
    pub namespaces: Vec<&'static str>,
    /// Seccomp support.
    pub seccomp: Enabled,
    /// AppArmor support (none inside the guest).
    pub apparmor: Enabled,
    /// SELinux support (none inside the guest).
    pub selinux: Enabled,
    /// Intel RDT support (none).
    pub intel_rdt: Enabled,
}

/// `{"enabled": bool}`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Enabled {
    /// Whether the feature is available.
    pub enabled: bool,
}

/// The features of this build.
pub fn features() -> Features {
    let mut annotations = BTreeMap::new();
    annotations.insert("io.vessel.version", env!("CARGO_PKG_VERSION").to_owned());
    annotations.insert("io.vessel.isolation", "kvm-microvm".to_owned());
    Features {
        oci_version_min: "1.0.0",
        oci_version_max: OCI_VERSION,
        hooks: crate::host::hooks::HookKind::ALL
            .iter()
            .map(|k| k.name())
            .collect(),
        linux: LinuxFeatures {
            namespaces: vec!["cgroup", "ipc", "mount", "network", "pid", "uts"],
            seccomp: Enabled { enabled: false },
            apparmor: Enabled { enabled: false },
            selinux: Enabled { enabled: false },
            intel_rdt: Enabled { enabled: false },
        },
        annotations,
        potentially_unsafe_config_annotations: vec!["io.vessel."],
    }
}

/// The document as `features` prints it: JSON with a 4-space indent (runc features.go).
pub fn to_json() -> String {
    crate::verbs::spec::to_json_indented(&features(), b"    ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn prints_four_space_json_with_required_keys() {
        let text = super::to_json();
        assert!(text
            .starts_with("{\n    \"ociVersionMin\": \"1.0.0\",\n    \"ociVersionMax\": \"1.2.0\""));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["linux"]["seccomp"]["enabled"], false);
        assert_eq!(v["potentiallyUnsafeConfigAnnotations"][0], "io.vessel.");
        assert_eq!(
            v["hooks"],
            serde_json::json!([
                "prestart",
                "createRuntime",
                "createContainer",
                "startContainer",
                "poststart",
                "poststop"
            ])
        );
    }
}
