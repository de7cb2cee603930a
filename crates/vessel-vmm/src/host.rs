//! Host capability check: can this machine's KVM run a standard Linux guest?
//!
//! Vessel needs hardware-assisted KVM (Intel VT-x through `kvm_intel`, AMD-V through `kvm_amd`).
//! Some hosts expose `/dev/kvm` from `kvm_pvm` (pagetable-based virtual machines), which runs guest
//! ring 3 natively but emulates guest ring 0 instruction by instruction and fails on `int3`,
//! `xrstor` and `cmpxchg16b`: no standard kernel boots there, so a VM would hang or die with a KVM
//! internal error. [`probe`] finds out which case applies from `/dev/kvm` and the module list in
//! `/sys/module` (kernel doc: Documentation/virt/kvm/api.rst, "KVM_GET_API_VERSION").

use std::fmt;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

/// The KVM API version every kernel since 2.6.22 reports (`KVM_GET_API_VERSION`).
pub const KVM_API_VERSION: i32 = 12;

/// Which KVM implementation backs `/dev/kvm`, read from the loaded modules in `/sys/module`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmBackend {
    /// `kvm_intel`: Intel VT-x.
    Intel,
    /// `kvm_amd`: AMD-V (SVM).
    Amd,
    /// `kvm_pvm`: software ring-0 emulation that cannot boot standard guest kernels.
    Pvm,
    /// `/dev/kvm` exists but no known vendor module is loaded (or KVM is built in without
    /// `/sys/module` entries).
    Unknown,
}

impl fmt::Display for KvmBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KvmBackend::Intel => "kvm_intel (Intel VT-x)",
            KvmBackend::Amd => "kvm_amd (AMD-V)",
            KvmBackend::Pvm => "kvm_pvm (software ring-0 emulation)",
            KvmBackend::Unknown => "unknown",
        })
    }
}

/// Whether guests can run here, and if not, why and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hardware-backed KVM is usable: microVMs can boot on this host.
    Ready,
    /// `/dev/kvm` does not exist.
    NoKvmDevice,
    /// `/dev/kvm` exists but could not be opened read-write (errno text inside).
    NoAccess(String),
    /// `/dev/kvm` answers `KVM_GET_API_VERSION` with something other than 12.
    BadApiVersion(i32),
    /// `/dev/kvm` comes from `kvm_pvm`: no standard guest kernel can boot.
    PvmOnly,
}

impl Verdict {
    /// True when microVMs can boot.
    pub fn can_run_guests(&self) -> bool {
        matches!(self, Verdict::Ready)
    }

    /// One line saying what to do about this verdict.
    pub fn fix(&self) -> &'static str {
        match self {
            Verdict::Ready => "nothing to fix",
            Verdict::NoKvmDevice => {
                "load kvm_intel or kvm_amd (modprobe kvm_intel / kvm_amd) on a host with VT-x/AMD-V enabled, or use `make lab` to run inside the nested lab"
            }
            Verdict::NoAccess(_) => {
                "run as root or add the user to the group owning /dev/kvm (usually `kvm`)"
            }
            Verdict::BadApiVersion(_) => "upgrade the host kernel: KVM API version 12 is required",
            Verdict::PvmOnly => {
                "run on a host with kvm_intel or kvm_amd, or inside the nested lab (`make lab CMD=...` in a Vessel checkout)"
            }
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Ready => write!(f, "guests can run on this host"),
            Verdict::NoKvmDevice => write!(f, "guests cannot run: /dev/kvm does not exist"),
            Verdict::NoAccess(e) => write!(f, "guests cannot run: cannot open /dev/kvm: {e}"),
            Verdict::BadApiVersion(v) => {
                write!(f, "guests cannot run: KVM API version {v}, expected {KVM_API_VERSION}")
            }
            Verdict::PvmOnly => write!(
                f,
                "guests cannot run: KVM is provided by kvm_pvm, which emulates guest ring 0 and fails on int3, xrstor and cmpxchg16b"
            ),
        }
    }
}

/// What [`probe`] found out about this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReport {
    /// Path of the KVM device that was probed (normally `/dev/kvm`).
    pub kvm_path: PathBuf,
    /// Backend behind `/dev/kvm`, or `None` when the device is missing.
    pub backend: Option<KvmBackend>,
    /// `KVM_GET_API_VERSION` result when the device could be opened.
    pub api_version: Option<i32>,
    /// CPU flags relevant to virtualisation seen in `/proc/cpuinfo` (`vmx`, `svm`, `hypervisor`).
    pub cpu_flags: Vec<String>,
    /// The overall verdict.
    pub verdict: Verdict,
}

/// Probes `/dev/kvm` and `/sys/module` on this host.
///
/// Never fails: every problem becomes a [`Verdict`] with a fix.
pub fn probe() -> HostReport {
    probe_at(
        Path::new("/dev/kvm"),
        Path::new("/sys/module"),
        Path::new("/proc/cpuinfo"),
    )
}

/// [`probe`] with explicit paths, for tests.
pub fn probe_at(kvm_path: &Path, sys_module: &Path, cpuinfo: &Path) -> HostReport {
    let cpu_flags = read_cpu_flags(cpuinfo);
    let backend = kvm_path
        .exists()
        .then(|| detect_backend(sys_module, &cpu_flags));
    let mut api_version = None;
    let verdict = match backend {
        None => Verdict::NoKvmDevice,
        Some(backend) => match OpenOptions::new().read(true).write(true).open(kvm_path) {
            Err(e) => Verdict::NoAccess(e.to_string()),
            Ok(file) => {
                let version = api_version_of(&file);
                api_version = Some(version);
                if version != KVM_API_VERSION {
                    Verdict::BadApiVersion(version)
                } else if backend == KvmBackend::Pvm {
                    Verdict::PvmOnly
                } else {
                    Verdict::Ready
                }
            }
        },
    };
    HostReport {
        kvm_path: kvm_path.to_path_buf(),
        backend,
        api_version,
        cpu_flags,
        verdict,
    }
}

/// Reads which vendor module provides KVM. `kvm_pvm` wins over the others because a host with it
/// loaded routes `/dev/kvm` through it. A kernel with both vendor modules built in (such as our
/// lab's) has `/sys/module` entries for both, so the CPU's own flag (`vmx` or `svm`) decides.
fn detect_backend(sys_module: &Path, cpu_flags: &[String]) -> KvmBackend {
    let loaded = |m: &str| sys_module.join(m).exists();
    let flag = |f: &str| cpu_flags.iter().any(|c| c == f);
    let (intel, amd) = (loaded("kvm_intel"), loaded("kvm_amd"));
    if loaded("kvm_pvm") {
        KvmBackend::Pvm
    } else if intel && (!amd || flag("vmx")) {
        KvmBackend::Intel
    } else if amd {
        KvmBackend::Amd
    } else {
        KvmBackend::Unknown
    }
}

fn read_cpu_flags(cpuinfo: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(cpuinfo).unwrap_or_default();
    let flags_line = text.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let wanted = ["vmx", "svm", "npt", "ept", "hypervisor"];
    flags_line
        .split_whitespace()
        .filter(|f| wanted.contains(f))
        .map(str::to_owned)
        .collect()
}

fn api_version_of(file: &std::fs::File) -> i32 {
    use std::os::fd::AsRawFd;
    // KVM_GET_API_VERSION = _IO(KVMIO, 0x00) with KVMIO = 0xAE (include/uapi/linux/kvm.h).
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    // SAFETY: `file` is an open fd for the whole call; KVM_GET_API_VERSION takes no argument and
    // touches no user memory, so a non-KVM fd merely fails with ENOTTY (-1).
    unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION as _) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_host(
        modules: &[&str],
        with_kvm: bool,
    ) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("module");
        for m in modules {
            std::fs::create_dir_all(sys.join(m)).unwrap();
        }
        let cpuinfo = dir.path().join("cpuinfo");
        std::fs::write(
            &cpuinfo,
            "processor\t: 0\nflags\t\t: fpu svm lm hypervisor sse\n",
        )
        .unwrap();
        let kvm = dir.path().join("kvm");
        if with_kvm {
            // A regular file stands in for /dev/kvm: it opens, but the ioctl fails with ENOTTY.
            std::fs::write(&kvm, b"").unwrap();
        }
        (dir, kvm, sys, cpuinfo)
    }

    #[test]
    fn missing_device_is_reported_with_a_fix() {
        let (_d, kvm, sys, cpu) = fake_host(&["kvm"], false);
        let r = probe_at(&kvm, &sys, &cpu);
        assert_eq!(r.verdict, Verdict::NoKvmDevice);
        assert_eq!(r.backend, None);
        assert!(r.verdict.fix().contains("make lab"));
        assert_eq!(r.cpu_flags, vec!["svm", "hypervisor"]);
    }

    #[test]
    fn pvm_wins_over_vendor_modules() {
        let (_d, _kvm, sys, _cpu) = fake_host(&["kvm", "kvm_amd", "kvm_pvm"], false);
        assert_eq!(detect_backend(&sys, &["svm".into()]), KvmBackend::Pvm);
    }

    #[test]
    fn both_vendor_modules_built_in_are_told_apart_by_the_cpu_flag() {
        // The lab kernel builds in kvm_intel and kvm_amd: both show up in /sys/module.
        let (_d, _kvm, sys, _cpu) = fake_host(&["kvm", "kvm_amd", "kvm_intel"], false);
        assert_eq!(detect_backend(&sys, &["svm".into()]), KvmBackend::Amd);
        assert_eq!(detect_backend(&sys, &["vmx".into()]), KvmBackend::Intel);
        let (_d, _kvm, sys, _cpu) = fake_host(&["kvm", "kvm_amd"], false);
        assert_eq!(detect_backend(&sys, &[]), KvmBackend::Amd);
    }

    #[test]
    fn non_kvm_device_gives_bad_api_version() {
        let (_d, kvm, sys, cpu) = fake_host(&["kvm", "kvm_intel"], true);
        let r = probe_at(&kvm, &sys, &cpu);
        assert_eq!(r.backend, Some(KvmBackend::Intel));
        assert_eq!(r.verdict, Verdict::BadApiVersion(-1));
        assert!(!r.verdict.can_run_guests());
    }

    #[test]
    fn this_host_matches_its_modules() {
        // On the development machines /dev/kvm is kvm_pvm; in the lab it is kvm_amd. Either way the
        // verdict must agree with the module list, never claim Ready for kvm_pvm.
        let r = probe();
        if r.backend == Some(KvmBackend::Pvm) {
            assert!(matches!(r.verdict, Verdict::PvmOnly | Verdict::NoAccess(_)));
        }
        if r.verdict == Verdict::Ready {
            assert_eq!(r.api_version, Some(KVM_API_VERSION));
            assert_ne!(r.backend, Some(KvmBackend::Pvm));
        }
    }
}
