//! `VmConfig`: the user-facing description of one microVM, deserialised from JSON and validated
//! before any KVM object exists. A bad value gets a [`ConfigError`] naming the field and its limit.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vessel_protocol::network::Mac;

use crate::arch::x86_64::layout;

/// Smallest number of vCPUs.
pub const MIN_VCPUS: u32 = 1;
/// Largest number of vCPUs (APIC ids stay below the IOAPIC's id and the MP table stays small).
pub const MAX_VCPUS: u32 = 32;
/// Smallest guest memory, MiB: the kernel is loaded at 16 MiB and needs room above it.
pub const MIN_MEMORY_MIB: u32 = 64;
/// Largest guest memory, MiB (64 GiB: low RAM up to the MMIO gap, the rest above 4 GiB).
pub const MAX_MEMORY_MIB: u32 = 65536;
/// First guest CID a VM may use (0 hypervisor, 1 loopback, 2 host; virtio spec 5.10.4).
pub const MIN_GUEST_CID: u32 = 3;
/// Longest kernel command line the x86 kernel accepts, bytes (`COMMAND_LINE_SIZE`).
pub const MAX_CMDLINE_LEN: usize = 2048;
/// Most virtio-fs devices one VM may have: each takes an MMIO slot, an IRQ and a command-line
/// declaration, which must fit in `layout::BASE_CMDLINE_RESERVED` next to the base line.
pub const MAX_FS_DEVICES: usize = 8;
/// Most virtio-net devices one VM may have: each takes an MMIO slot, an IRQ and a command-line
/// declaration, like a virtio-fs device.
pub const MAX_NET_DEVICES: usize = 8;
/// Longest tap name, bytes (`IFNAMSIZ` less its NUL).
pub const MAX_TAP_NAME_LEN: usize = vessel_devices::virtio::net::tap::MAX_TAP_NAME_LEN;
/// Longest virtio-fs tag, bytes (the config space's `tag[36]`, virtio 1.2, 5.11.4).
pub const MAX_FS_TAG_LEN: usize = vessel_devices::virtio::fs::TAG_LEN;

/// Where the guest's 8250 console output goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialSink {
    /// Discarded.
    #[default]
    None,
    /// The VMM process's standard error.
    Stderr,
    /// Appended to this file (created when missing).
    File(PathBuf),
}

/// One microVM. JSON example:
/// `{"vcpus":2,"memory_mib":256,"kernel":"/path/vmlinux","initramfs":"/path/initrd.cpio",
///   "serial":"stderr","vsock_cid":3}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Number of vCPUs, `MIN_VCPUS..=MAX_VCPUS`.
    pub vcpus: u32,
    /// Guest RAM in MiB, `MIN_MEMORY_MIB..=MAX_MEMORY_MIB`.
    pub memory_mib: u32,
    /// Uncompressed guest kernel (ELF `vmlinux` with a PVH note).
    pub kernel: PathBuf,
    /// Optional initramfs (newc cpio), passed as the first PVH module.
    #[serde(default)]
    pub initramfs: Option<PathBuf>,
    /// Appended to the base kernel command line.
    #[serde(default)]
    pub extra_cmdline: String,
    /// Guest console destination.
    #[serde(default)]
    pub serial: SerialSink,
    /// Guest vsock CID, at least `MIN_GUEST_CID`.
    pub vsock_cid: u32,
    /// Optional Unix socket path where other processes reach guest vsock ports
    /// (`CONNECT <port>\n` -> `OK <local port>\n`). Any length: a path longer than `sun_path`
    /// holds is bound through its directory's fd ([`crate::uds`]).
    #[serde(default)]
    pub vsock_uds: Option<PathBuf>,
    /// Build the VM even when `host::probe()` says guests cannot run here (kvm_pvm). For
    /// setup-only use (tests of VM creation and teardown); a guest started that way will not boot.
    #[serde(default)]
    pub allow_unsupported_host: bool,
    /// Host directories shared with the guest over virtio-fs, one device each (at most
    /// `MAX_FS_DEVICES`), in MMIO slots after the vsock device.
    #[serde(default)]
    pub fs: Vec<FsConfig>,
    /// Network interfaces, one virtio-net device each (at most `MAX_NET_DEVICES`), in MMIO
    /// slots after the virtio-fs devices.
    #[serde(default)]
    pub net: Vec<NetConfig>,
    /// Directory of the image cache (`image_cache.rs`, decision 0006): the kernel and initramfs
    /// are copied there once and mapped into guest memory from there, their read-only pages
    /// shared by every VM that boots them, at the cost of a slower guest boot (4 KiB nested
    /// pages; measured in the decision). Absent (the runtime's choice): they are copied into each
    /// guest's memory. [`crate::image_cache::DEFAULT_DIR`] is the suggested directory.
    #[serde(default)]
    pub image_cache: Option<PathBuf>,
}

/// One virtio-fs share. JSON example: `{"tag":"vessel","shared_dir":"/run/vessel/c1/share"}`;
/// the guest mounts it with `mount -t virtiofs vessel <dir>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsConfig {
    /// Name the guest mounts, 1..=`MAX_FS_TAG_LEN` bytes without NUL, unique within the VM.
    pub tag: String,
    /// Existing host directory served to the guest (the serving thread is confined to it).
    pub shared_dir: PathBuf,
}

/// One virtio-net device. JSON example: `{"tap":"tap0","mac":"02:76:00:00:00:01"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The host tap behind it, 1..=`MAX_TAP_NAME_LEN` bytes without NUL, unique within the VM.
    /// Opened by name in the network namespace of the process that builds the VM, at
    /// [`crate::Vm::setup`]; created (non-persistent, gone with the VM) when missing.
    pub tap: String,
    /// The MAC the device offers the guest in its config space.
    pub mac: Mac,
}

/// Why a `VmConfig` was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A number is out of range.
    #[error("{field} is {value}, must be in {min}..={max}")]
    OutOfRange {
        /// Field name as in the JSON.
        field: &'static str,
        /// Given value.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A file does not exist or is not a regular file.
    #[error("{field} {path} is not a readable file")]
    MissingFile {
        /// Field name as in the JSON.
        field: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// The extra command line is too long or has a NUL byte.
    #[error("extra_cmdline is {len} bytes or contains NUL, must be at most {max} printable bytes")]
    BadCmdline {
        /// Its length.
        len: usize,
        /// Room left for it.
        max: usize,
    },
    /// Too many virtio-fs devices.
    #[error("fs has {count} entries, at most {max} are allowed")]
    TooManyFs {
        /// Entries given.
        count: usize,
        /// `MAX_FS_DEVICES`.
        max: usize,
    },
    /// A virtio-fs tag is empty, too long or contains NUL.
    #[error("{field} {tag:?} is {len} bytes, must be 1..={max} bytes without NUL")]
    BadFsTag {
        /// Field name, e.g. `fs[0].tag`.
        field: String,
        /// The tag given.
        tag: String,
        /// Its length in bytes.
        len: usize,
        /// `MAX_FS_TAG_LEN`.
        max: usize,
    },
    /// Two virtio-fs devices have the same tag.
    #[error("{field} {tag:?} is already the tag of fs[{first}]")]
    DuplicateFsTag {
        /// Field name of the second use, e.g. `fs[1].tag`.
        field: String,
        /// The tag.
        tag: String,
        /// Index of the first device with that tag.
        first: usize,
    },
    /// Too many virtio-net devices.
    #[error("net has {count} entries, at most {max} are allowed")]
    TooManyNet {
        /// Entries given.
        count: usize,
        /// `MAX_NET_DEVICES`.
        max: usize,
    },
    /// A tap name is empty, too long or contains NUL.
    #[error("{field} {tap:?} is {len} bytes, must be 1..={max} bytes without NUL")]
    BadTapName {
        /// Field name, e.g. `net[0].tap`.
        field: String,
        /// The name given.
        tap: String,
        /// Its length in bytes.
        len: usize,
        /// `MAX_TAP_NAME_LEN`.
        max: usize,
    },
    /// Two virtio-net devices have the same tap.
    #[error("{field} {tap:?} is already the tap of net[{first}]")]
    DuplicateTap {
        /// Field name of the second use, e.g. `net[1].tap`.
        field: String,
        /// The tap.
        tap: String,
        /// Index of the first device with that tap.
        first: usize,
    },
    /// Two virtio-net devices have the same MAC (the agent finds a guest interface by it).
    #[error("{field} {mac} is already the mac of net[{first}]")]
    DuplicateMac {
        /// Field name of the second use, e.g. `net[1].mac`.
        field: String,
        /// The MAC.
        mac: Mac,
        /// Index of the first device with that MAC.
        first: usize,
    },
    /// A shared directory does not exist or is not a directory.
    #[error("{field} {path} is not an existing directory")]
    MissingDir {
        /// Field name, e.g. `fs[0].shared_dir`.
        field: String,
        /// The path given.
        path: PathBuf,
    },
    /// The config file could not be read.
    #[error("cannot read vm config {path}")]
    ReadFile {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid JSON for `VmConfig`.
    #[error("cannot parse vm config {path}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl VmConfig {
    /// A config with defaults for everything but the kernel: 1 vCPU, 128 MiB, CID 3.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            vcpus: 1,
            memory_mib: 128,
            kernel: kernel.into(),
            initramfs: None,
            extra_cmdline: String::new(),
            serial: SerialSink::None,
            vsock_cid: MIN_GUEST_CID,
            vsock_uds: None,
            allow_unsupported_host: false,
            fs: Vec::new(),
            net: Vec::new(),
            image_cache: None,
        }
    }

    /// Reads and validates a JSON config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field against its limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        range(
            "vcpus",
            self.vcpus.into(),
            MIN_VCPUS.into(),
            MAX_VCPUS.into(),
        )?;
        range(
            "memory_mib",
            self.memory_mib.into(),
            MIN_MEMORY_MIB.into(),
            MAX_MEMORY_MIB.into(),
        )?;
        range(
            "vsock_cid",
            self.vsock_cid.into(),
            MIN_GUEST_CID.into(),
            u64::from(u32::MAX - 1),
        )?;
        file("kernel", &self.kernel)?;
        if let Some(p) = &self.initramfs {
            file("initramfs", p)?;
        }
        let max = MAX_CMDLINE_LEN - layout::BASE_CMDLINE_RESERVED;
        if self.extra_cmdline.len() > max
            || self.extra_cmdline.bytes().any(|b| b == 0 || b == b'\n')
        {
            return Err(ConfigError::BadCmdline {
                len: self.extra_cmdline.len(),
                max,
            });
        }
        validate_fs(&self.fs)?;
        validate_net(&self.net)
    }

    /// Guest memory size in bytes.
    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mib) << 20
    }
}

fn range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

fn validate_fs(fs: &[FsConfig]) -> Result<(), ConfigError> {
    if fs.len() > MAX_FS_DEVICES {
        return Err(ConfigError::TooManyFs {
            count: fs.len(),
            max: MAX_FS_DEVICES,
        });
    }
    for (i, f) in fs.iter().enumerate() {
        let len = f.tag.len();
        if len == 0 || len > MAX_FS_TAG_LEN || f.tag.contains('\0') {
            return Err(ConfigError::BadFsTag {
                field: format!("fs[{i}].tag"),
                tag: f.tag.clone(),
                len,
                max: MAX_FS_TAG_LEN,
            });
        }
        if let Some(first) = fs[..i].iter().position(|o| o.tag == f.tag) {
            return Err(ConfigError::DuplicateFsTag {
                field: format!("fs[{i}].tag"),
                tag: f.tag.clone(),
                first,
            });
        }
        if !f.shared_dir.is_dir() {
            return Err(ConfigError::MissingDir {
                field: format!("fs[{i}].shared_dir"),
                path: f.shared_dir.clone(),
            });
        }
    }
    Ok(())
}

fn validate_net(net: &[NetConfig]) -> Result<(), ConfigError> {
    if net.len() > MAX_NET_DEVICES {
        return Err(ConfigError::TooManyNet {
            count: net.len(),
            max: MAX_NET_DEVICES,
        });
    }
    for (i, n) in net.iter().enumerate() {
        let len = n.tap.len();
        if len == 0 || len > MAX_TAP_NAME_LEN || n.tap.contains('\0') {
            return Err(ConfigError::BadTapName {
                field: format!("net[{i}].tap"),
                tap: n.tap.clone(),
                len,
                max: MAX_TAP_NAME_LEN,
            });
        }
        if let Some(first) = net[..i].iter().position(|o| o.tap == n.tap) {
            return Err(ConfigError::DuplicateTap {
                field: format!("net[{i}].tap"),
                tap: n.tap.clone(),
                first,
            });
        }
        if let Some(first) = net[..i].iter().position(|o| o.mac == n.mac) {
            return Err(ConfigError::DuplicateMac {
                field: format!("net[{i}].mac"),
                mac: n.mac,
                first,
            });
        }
    }
    Ok(())
}

fn file(field: &'static str, path: &Path) -> Result<(), ConfigError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(ConfigError::MissingFile {
            field,
            path: path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> tempfile::NamedTempFile {
        tempfile::NamedTempFile::new().unwrap()
    }

    #[test]
    fn json_round_trip_with_defaults() {
        let k = kernel();
        let json = format!(
            r#"{{"vcpus":2,"memory_mib":256,"kernel":"{}","serial":{{"file":"/tmp/x.log"}},"vsock_cid":7}}"#,
            k.path().display()
        );
        let c: VmConfig = serde_json::from_str(&json).unwrap();
        c.validate().unwrap();
        assert_eq!(c.vcpus, 2);
        assert_eq!(c.serial, SerialSink::File("/tmp/x.log".into()));
        assert_eq!(c.initramfs, None);
        assert_eq!(c.memory_bytes(), 256 << 20);
        let s: VmConfig = serde_json::from_str(
            r#"{"vcpus":1,"memory_mib":64,"kernel":"/k","serial":"stderr","vsock_cid":3}"#,
        )
        .unwrap();
        assert_eq!(s.serial, SerialSink::Stderr);
    }

    #[test]
    fn each_limit_is_named_in_the_error() {
        let k = kernel();
        let ok = VmConfig::new(k.path());
        ok.validate().unwrap();
        let cases: Vec<(VmConfig, &str)> = vec![
            (
                VmConfig {
                    vcpus: 0,
                    ..ok.clone()
                },
                "vcpus is 0, must be in 1..=32",
            ),
            (
                VmConfig {
                    vcpus: 33,
                    ..ok.clone()
                },
                "vcpus is 33, must be in 1..=32",
            ),
            (
                VmConfig {
                    memory_mib: 63,
                    ..ok.clone()
                },
                "memory_mib is 63, must be in 64..=65536",
            ),
            (
                VmConfig {
                    memory_mib: 65537,
                    ..ok.clone()
                },
                "memory_mib is 65537",
            ),
            (
                VmConfig {
                    vsock_cid: 2,
                    ..ok.clone()
                },
                "vsock_cid is 2, must be in 3..=",
            ),
            (
                VmConfig {
                    kernel: "/nonexistent/vmlinux".into(),
                    ..ok.clone()
                },
                "kernel /nonexistent/vmlinux is not a readable file",
            ),
            (
                VmConfig {
                    initramfs: Some("/nope.cpio".into()),
                    ..ok.clone()
                },
                "initramfs /nope.cpio",
            ),
            (
                VmConfig {
                    extra_cmdline: "x".repeat(5000),
                    ..ok.clone()
                },
                "extra_cmdline is 5000 bytes",
            ),
        ];
        for (cfg, want) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} does not contain {want:?}");
        }
    }

    #[test]
    fn fs_shares_parse_and_each_bad_entry_is_named() {
        let k = kernel();
        let d = tempfile::tempdir().unwrap();
        let json = format!(
            r#"{{"vcpus":1,"memory_mib":64,"kernel":"{}","vsock_cid":3,
                "fs":[{{"tag":"vessel","shared_dir":"{}"}}]}}"#,
            k.path().display(),
            d.path().display()
        );
        let c: VmConfig = serde_json::from_str(&json).unwrap();
        c.validate().unwrap();
        assert_eq!(c.fs[0].tag, "vessel");
        assert_eq!(c.fs[0].shared_dir, d.path());
        assert!(VmConfig::new(k.path()).fs.is_empty());

        let share = |tag: &str, dir: &Path| FsConfig {
            tag: tag.into(),
            shared_dir: dir.into(),
        };
        let with = |fs: Vec<FsConfig>| VmConfig {
            fs,
            ..VmConfig::new(k.path())
        };
        let file = d.path().join("f");
        std::fs::write(&file, "").unwrap();
        let ok = share("a", d.path());
        let cases: Vec<(VmConfig, &str)> = vec![
            (
                with(vec![share("", d.path())]),
                r#"fs[0].tag "" is 0 bytes, must be 1..=36"#,
            ),
            (
                with(vec![ok.clone(), share(&"t".repeat(37), d.path())]),
                "fs[1].tag \"ttt",
            ),
            (with(vec![share("a\0b", d.path())]), "without NUL"),
            (
                with(vec![ok.clone(), share("b", d.path()), share("a", d.path())]),
                r#"fs[2].tag "a" is already the tag of fs[0]"#,
            ),
            (
                with(vec![ok.clone(), share("b", &d.path().join("missing"))]),
                "fs[1].shared_dir",
            ),
            (
                with(vec![share("a", &file)]),
                "is not an existing directory",
            ),
            (
                with((0..9).map(|i| share(&i.to_string(), d.path())).collect()),
                "fs has 9 entries, at most 8",
            ),
        ];
        for (cfg, want) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} does not contain {want:?}");
        }
        with(vec![ok, share(&"t".repeat(36), d.path())])
            .validate()
            .unwrap();
        let e = serde_json::from_str::<FsConfig>(r#"{"tag":"a","shared_dir":"/","ro":true}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `ro`"));
    }

    #[test]
    fn net_devices_parse_and_each_bad_entry_is_named() {
        let k = kernel();
        let json = format!(
            r#"{{"vcpus":1,"memory_mib":64,"kernel":"{}","vsock_cid":3,
                "net":[{{"tap":"tap0","mac":"02:76:00:00:00:01"}}]}}"#,
            k.path().display()
        );
        let c: VmConfig = serde_json::from_str(&json).unwrap();
        c.validate().unwrap();
        assert_eq!(c.net[0].tap, "tap0");
        assert_eq!(c.net[0].mac, Mac([2, 0x76, 0, 0, 0, 1]));
        assert!(VmConfig::new(k.path()).net.is_empty());

        let nic = |tap: &str, last: u8| NetConfig {
            tap: tap.into(),
            mac: Mac([2, 0x76, 0, 0, 0, last]),
        };
        let with = |net: Vec<NetConfig>| VmConfig {
            net,
            ..VmConfig::new(k.path())
        };
        let cases: Vec<(VmConfig, &str)> = vec![
            (
                with(vec![nic("", 1)]),
                r#"net[0].tap "" is 0 bytes, must be 1..=15 bytes without NUL"#,
            ),
            (
                with(vec![nic("a", 1), nic(&"t".repeat(16), 2)]),
                r#"net[1].tap "tttttttttttttttt" is 16 bytes"#,
            ),
            (with(vec![nic("a\0b", 1)]), "net[0].tap \"a\\0b\""),
            (
                with(vec![nic("a", 1), nic("b", 2), nic("a", 3)]),
                r#"net[2].tap "a" is already the tap of net[0]"#,
            ),
            (
                with(vec![nic("a", 1), nic("b", 1)]),
                "net[1].mac 02:76:00:00:00:01 is already the mac of net[0]",
            ),
            (
                with((0..9).map(|i| nic(&format!("t{i}"), i)).collect()),
                "net has 9 entries, at most 8",
            ),
        ];
        for (cfg, want) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} does not contain {want:?}");
        }
        with(vec![nic(&"t".repeat(15), 1)]).validate().unwrap();
        with((0..8).map(|i| nic(&format!("t{i}"), i)).collect())
            .validate()
            .unwrap();
        let e = serde_json::from_str::<NetConfig>(
            r#"{"tap":"a","mac":"02:00:00:00:00:01","mtu":9000}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `mtu`"));
        let e =
            serde_json::from_str::<NetConfig>(r#"{"tap":"a","mac":"02:00:00:00:01"}"#).unwrap_err();
        assert!(e.to_string().contains("not an Ethernet address"), "{e}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_str::<VmConfig>(
            r#"{"vcpus":1,"memory_mib":64,"kernel":"/k","vsock_cid":3,"cpus":4}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `cpus`"));
    }
}
