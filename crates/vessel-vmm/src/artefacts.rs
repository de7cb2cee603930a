//! Where the guest kernel (`vmlinux`) and the agent initramfs (`initramfs.cpio`) are found.
//!
//! Search order, first hit wins for each file:
//! 1. `VESSEL_KERNEL` / `VESSEL_INITRAMFS` (explicit paths);
//! 2. `<dir of the running executable>/../share/vessel/` (the Makefile's `build/` tree and an
//!    installed `PREFIX`);
//! 3. `/usr/local/share/vessel/`, then `/usr/share/vessel/`.

use std::path::{Path, PathBuf};

/// File name of the guest kernel inside a share directory.
pub const KERNEL_FILE: &str = "vmlinux";
/// File name of the agent initramfs inside a share directory.
pub const INITRAMFS_FILE: &str = "initramfs.cpio";

/// The artefacts found, `None` where no candidate exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Artefacts {
    /// Uncompressed guest kernel with a PVH entry point.
    pub kernel: Option<PathBuf>,
    /// Initramfs holding the guest agent as `/init`.
    pub initramfs: Option<PathBuf>,
}

/// Looks the artefacts up in the search order above.
pub fn locate() -> Artefacts {
    let exe_share = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("../share/vessel")));
    let mut dirs: Vec<PathBuf> = exe_share.into_iter().collect();
    dirs.push(PathBuf::from("/usr/local/share/vessel"));
    dirs.push(PathBuf::from("/usr/share/vessel"));
    Artefacts {
        kernel: find("VESSEL_KERNEL", KERNEL_FILE, &dirs),
        initramfs: find("VESSEL_INITRAMFS", INITRAMFS_FILE, &dirs),
    }
}

fn find(var: &str, file: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    dirs.iter()
        .map(|d| d.join(file))
        .find(|p| p.is_file())
        .map(|p| canonical(&p))
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}
