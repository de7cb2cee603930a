//! The guest console's log file, bounded: the guest decides what it prints, so a hostile or
//! chatty guest must not fill the host's disk through it.
//!
//! [`RotatingLog`] appends to its file until it holds [`CONSOLE_LOG_CAP`] bytes, then renames
//! it to `<name>.1` (replacing an older one) and starts a new file with a line saying so. The
//! log's latest output (what a guest that dies last printed) is always in the file itself, and
//! the two files together never exceed twice the cap.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Bytes one console log file holds before it is rotated.
pub const CONSOLE_LOG_CAP: u64 = 1 << 20;

/// An append-only log file rotated at a cap; see the module documentation.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    len: u64,
    cap: u64,
}

impl RotatingLog {
    /// Opens (creating or appending to) the log at `path`, rotated at `cap` bytes.
    ///
    /// # Errors
    /// The file could not be opened or its size read.
    pub fn open(path: &Path, cap: u64) -> io::Result<RotatingLog> {
        let file = Self::append(path)?;
        let len = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file,
            len,
            cap: cap.max(1),
        })
    }

    fn append(path: &Path) -> io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.file = Self::append(&self.path)?;
        self.len = 0;
        let note = format!(
            "[vessel: console log rotated at {} bytes, earlier output in {}]\n",
            self.cap,
            Path::new(&old)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        );
        self.file.write_all(note.as_bytes())?;
        self.len = note.len() as u64;
        Ok(())
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.len >= self.cap {
            self.rotate()?;
        }
        // Never past the cap in one file: the rest goes to the next write (and file).
        let room = (self.cap - self.len.min(self.cap)).max(1);
        let n = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.file.write(&buf[..n])?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_at_its_cap_and_keeps_the_latest_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, "from an earlier boot\n").unwrap();
        let mut log = RotatingLog::open(&path, 1000).unwrap();
        for i in 0..500 {
            writeln!(log, "line {i:04}").unwrap();
        }
        log.flush().unwrap();
        let current = std::fs::read_to_string(&path).unwrap();
        let previous = std::fs::read_to_string(dir.path().join("console.log.1")).unwrap();
        assert!(current.len() <= 1000, "{}", current.len());
        assert!(previous.len() <= 1000, "{}", previous.len());
        // The newest line is in the log itself, the older ones before it in `.1`, and the
        // rotation says where they went.
        assert!(current.ends_with("line 0499\n"), "{current}");
        assert!(
            current.starts_with(
                "[vessel: console log rotated at 1000 bytes, earlier output in console.log.1]\n"
            ),
            "{current}"
        );
        let joined = previous + &current;
        let at = |s: &str| joined.find(s).unwrap();
        assert!(at("line 0400") < at("line 0499"));
        // Nothing else was written in the directory: two files, whatever the guest printed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_single_write_larger_than_the_cap_is_split_over_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = RotatingLog::open(&path, 200).unwrap();
        log.write_all(&[b'x'; 1000]).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 200);
        assert_eq!(
            std::fs::metadata(dir.path().join("c.log.1")).unwrap().len(),
            200
        );
    }
}
