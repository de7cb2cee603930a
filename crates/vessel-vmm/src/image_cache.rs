//! The image cache: private copies of the guest kernel and initramfs that the VMM maps into guest
//! memory instead of copying them in, when `VmConfig::image_cache` asks for it (decision 0006,
//! `docs/decisions/`: opt-in, as the mapped guest boots slower in the lab).
//!
//! Mapping a file into a guest is safe only while nobody rewrites it in place: a page the guest
//! has not written yet shows the file's current content. The kernel and initramfs the caller names
//! can be rewritten (a `cp` over an installed `vmlinux`), so the VMM maps a copy it made itself,
//! in a directory only root can write, under a name derived from the source's identity (device,
//! inode, size, modification and change times). A source changed in place gets a new name, so
//! the new copy is made while running VMs keep mapping the old one. Copies are written under a
//! temporary name and renamed into place, so concurrent VMMs never see a partial copy; a copy is
//! never modified afterwards. Nothing removes old copies: one per kernel and initramfs build
//! (about 10-20 MiB each), on the tmpfs of `/run` by default.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Suggested cache directory: on the tmpfs of `/run`, beside (not inside) Vessel's default state
/// root, whose entries are container IDs.
pub const DEFAULT_DIR: &str = "/run/vessel-images";

/// Why a cached copy could not be had. The VMM then copies the source into guest memory instead.
#[derive(Debug, thiserror::Error)]
pub enum ImageCacheError {
    /// The source could not be read or its metadata not be had.
    #[error("cannot read {path}")]
    Source {
        /// The source file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The cache directory could not be created, or it is writable by others than its owner.
    #[error("image cache directory {path} is unusable (it must be a directory only its owner can write)")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The copy could not be written or renamed into place.
    #[error("cannot write the cached copy {path}")]
    Write {
        /// The path being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The source changed while it was being copied; the copy was discarded.
    #[error("{path} changed while it was being copied")]
    Changed {
        /// The source file.
        path: PathBuf,
    },
}

/// A directory of immutable copies of guest images, see the module documentation.
#[derive(Debug, Clone)]
pub struct ImageCache {
    dir: PathBuf,
}

impl ImageCache {
    /// A cache in `dir` (created, mode 0700, on first use).
    pub fn new(dir: impl Into<PathBuf>) -> ImageCache {
        ImageCache { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the cached copy of `source` read-only, making it first if there is none.
    ///
    /// Errors: [`ImageCacheError`]; the caller falls back to reading `source` itself.
    pub fn open(&self, source: &Path) -> Result<File, ImageCacheError> {
        let src_err = |e| ImageCacheError::Source {
            path: source.to_path_buf(),
            source: e,
        };
        let meta = fs::metadata(source).map_err(src_err)?;
        let path = self.dir.join(Self::name(source, &meta));
        if let Ok(file) = File::open(&path) {
            if file.metadata().is_ok_and(|m| m.len() == meta.len()) {
                return Ok(file);
            }
        }
        self.prepare_dir()?;
        let tmp = self.dir.join(format!(
            ".tmp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let write_err = |e| ImageCacheError::Write {
            path: tmp.clone(),
            source: e,
        };
        let result = (|| {
            let mut from = File::open(source).map_err(src_err)?;
            let mut to = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o400)
                .open(&tmp)
                .map_err(write_err)?;
            io::copy(&mut from, &mut to).map_err(write_err)?;
            let after = from.metadata().map_err(src_err)?;
            if Self::name(source, &after) != Self::name(source, &meta) {
                return Err(ImageCacheError::Changed {
                    path: source.to_path_buf(),
                });
            }
            fs::rename(&tmp, &path).map_err(|e| ImageCacheError::Write {
                path: path.clone(),
                source: e,
            })
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        File::open(&path).map_err(|e| ImageCacheError::Write { path, source: e })
    }

    /// The copy's file name: the source's file name and its identity.
    fn name(source: &Path, meta: &fs::Metadata) -> String {
        let base = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!(
            "{base}-{:x}-{:x}-{:x}-{:x}.{:09}-{:x}.{:09}",
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec()
        )
    }

    /// Creates the directory (0700) if missing and checks nobody but its owner can write it.
    fn prepare_dir(&self) -> Result<(), ImageCacheError> {
        let dir_err = |e| ImageCacheError::Dir {
            path: self.dir.clone(),
            source: e,
        };
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(dir_err(e)),
        }
        let meta = fs::symlink_metadata(&self.dir).map_err(dir_err)?;
        // /proc/self belongs to the effective user.
        let euid = fs::metadata("/proc/self").map_err(dir_err)?.uid();
        if !meta.is_dir() || meta.permissions().mode() & 0o022 != 0 || meta.uid() != euid {
            return Err(dir_err(io::Error::from_raw_os_error(libc::EPERM)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read(mut f: File) -> Vec<u8> {
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn a_copy_is_made_once_and_reused_until_the_source_changes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("vmlinux");
        fs::write(&src, b"first kernel").unwrap();
        let cache = ImageCache::new(dir.path().join("cache"));

        let copy = cache.open(&src).unwrap();
        let ino = copy.metadata().unwrap().ino();
        assert_eq!(read(copy), b"first kernel");
        let mode = fs::metadata(cache.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(
            cache.open(&src).unwrap().metadata().unwrap().ino(),
            ino,
            "reused"
        );

        // Rewritten in place, as `cp` does: a new copy, the old one untouched.
        let old = cache.open(&src).unwrap();
        fs::write(&src, b"second kernel, longer").unwrap();
        let new = cache.open(&src).unwrap();
        assert_ne!(new.metadata().unwrap().ino(), ino);
        assert_eq!(read(new), b"second kernel, longer");
        assert_eq!(read(old), b"first kernel");
        let names: Vec<_> = fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "two copies, no temporary left: {names:?}");
        assert!(names.iter().all(|n| n.starts_with("vmlinux-")), "{names:?}");
    }

    #[test]
    fn a_cache_directory_others_can_write_or_a_missing_source_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("initramfs.cpio");
        fs::write(&src, b"cpio").unwrap();
        let open_dir = dir.path().join("open");
        fs::create_dir(&open_dir).unwrap();
        fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).unwrap();
        let e = ImageCache::new(&open_dir).open(&src).unwrap_err();
        assert!(matches!(e, ImageCacheError::Dir { .. }), "{e:?}");
        assert_eq!(fs::read_dir(&open_dir).unwrap().count(), 0);

        let e = ImageCache::new(dir.path().join("c"))
            .open(&dir.path().join("missing"))
            .unwrap_err();
        assert!(matches!(e, ImageCacheError::Source { .. }), "{e:?}");
    }
}
