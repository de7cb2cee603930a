//! Docker's embedded DNS server (`nameserver 127.0.0.11` in the `/etc/resolv.conf` Docker
//! bind-mounts for a user-defined network) is served by iptables rules inside the container's
//! network namespace on the host. From the guest, 127.0.0.11 is the VM's own loopback, so names
//! do not resolve: `create` detects the file and warns, naming the workaround (Docker forwards
//! `--dns` servers through that same embedded server on such networks, so `--dns` is no way out
//! there; a resolv.conf mounted by the user replaces Docker's).

use std::path::Path;

use oci_spec::runtime::Spec;

/// The address Docker's embedded DNS server answers on.
pub const DOCKER_EMBEDDED_DNS: &str = "127.0.0.11";

/// The warning for a spec whose `/etc/resolv.conf` mount names Docker's embedded DNS server,
/// or `None`. A source that cannot be read gives `None`: the mount itself reports it later.
pub fn embedded_dns_warning(spec: &Spec) -> Option<String> {
    let mount = spec
        .mounts()
        .as_ref()?
        .iter()
        .rev()
        .find(|m| m.destination() == Path::new("/etc/resolv.conf"))?;
    let source = mount.source().as_ref()?;
    let text = std::fs::read_to_string(source).ok()?;
    names_embedded_dns(&text).then(|| {
        format!(
            "{}: nameserver {DOCKER_EMBEDDED_DNS} is Docker's embedded DNS (a user-defined \
             network), which answers only in the network namespace on the host, not from the \
             microVM: names will not resolve in the container; use Docker's default bridge \
             network, or mount a resolv.conf naming a reachable server over it (`docker run \
             -v /path/resolv.conf:/etc/resolv.conf:ro`) (docs/runc-compat.md \"Networking\")",
            source.display()
        )
    })
}

/// Whether resolv.conf text has a `nameserver 127.0.0.11` line.
fn names_embedded_dns(text: &str) -> bool {
    text.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("nameserver") && words.next() == Some(DOCKER_EMBEDDED_DNS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with_resolv(source: &Path) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/resolv.conf", "type": "bind",
                 "source": source, "options": ["rbind", "ro"]}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn docker_user_network_resolv_conf_is_named_with_the_workaround() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "search example.org\nnameserver 127.0.0.11\noptions ndots:0\n",
        )
        .unwrap();
        let warning = embedded_dns_warning(&spec_with_resolv(&path)).unwrap();
        assert!(warning.starts_with(&format!("{}: nameserver 127.0.0.11", path.display())));
        assert!(
            warning.contains("-v /path/resolv.conf:/etc/resolv.conf:ro"),
            "{warning}"
        );
    }

    #[test]
    fn other_servers_comments_and_missing_files_give_no_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "# nameserver 127.0.0.11\nnameserver 127.0.0.110\nnameserver 10.0.0.1\n",
        )
        .unwrap();
        assert_eq!(embedded_dns_warning(&spec_with_resolv(&path)), None);
        assert_eq!(
            embedded_dns_warning(&spec_with_resolv(&dir.path().join("absent"))),
            None
        );
        let no_mounts: Spec =
            serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2"})).unwrap();
        assert_eq!(embedded_dns_warning(&no_mounts), None);
    }
}
