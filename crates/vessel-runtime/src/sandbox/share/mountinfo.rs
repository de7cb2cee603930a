//! What is mounted under the share, from `/proc/self/mountinfo`.

use std::path::{Path, PathBuf};

use super::ShareError;

/// Mount points at or below `dir` in this process's mount namespace, in `/proc/self/mountinfo`
/// order. `dir` must be free of symlinks (canonical) to match.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, ShareError> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(ShareError::ReadMountinfo)?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(crate::host::procfs::unescape_mountinfo)
        .filter(|p| p.starts_with(dir))
        .collect())
}
