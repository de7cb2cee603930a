//! What the runtime reads from `/proc` (proc(5)): from `/proc/<pid>/stat` the state letter and
//! the start time, which together tell whether a recorded PID is still the same live process;
//! and the one unescaper of `/proc/<pid>/mountinfo` fields, for the share and the cgroup code.

use std::io;
use std::path::PathBuf;

/// The fields of `/proc/<pid>/stat` that the runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3, the state letter (`R`, `S`, `D`, `Z`, `T`, ...).
    pub state: char,
    /// Field 22, the start time in clock ticks after boot.
    pub start_time: u64,
}

/// Errors of [`parse_stat`].
#[derive(Debug, thiserror::Error)]
pub enum ProcfsError {
    /// `/proc/<pid>/stat` could not be read (most often: no such process).
    #[error("read /proc/{pid}/stat")]
    ReadStat {
        /// The process asked about.
        pid: i32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The content did not have the layout proc(5) documents.
    #[error("parse /proc/{pid}/stat: {content:?}")]
    ParseStat {
        /// The process asked about.
        pid: i32,
        /// What was read.
        content: String,
    },
}

/// Parses the content of a stat file. The command name (field 2) may hold spaces and `)`, so
/// the fields are counted from the last `)`.
pub fn parse_stat(pid: i32, content: &str) -> Result<ProcStat, ProcfsError> {
    let bad = || ProcfsError::ParseStat {
        pid,
        content: content.to_owned(),
    };
    let rest = &content[content.rfind(')').ok_or_else(bad)? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 is fields[19].
    let state = fields
        .first()
        .and_then(|s| s.chars().next())
        .ok_or_else(bad)?;
    let start_time = fields
        .get(19)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok(ProcStat { state, start_time })
}

/// Reads `/proc/<pid>/stat`.
pub fn stat(pid: i32) -> Result<ProcStat, ProcfsError> {
    let content = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|source| ProcfsError::ReadStat { pid, source })?;
    parse_stat(pid, &content)
}

/// True when `pid` exists, is not a zombie (or dead), and started at `start_time`: the check runc
/// uses to tell its init from a reused PID (container_linux.go `hasInit`).
pub fn is_alive(pid: i32, start_time: u64) -> bool {
    pid > 0
        && matches!(stat(pid), Ok(s) if s.start_time == start_time && !matches!(s.state, 'Z' | 'X' | 'x'))
}

/// Undoes the octal escapes of a `/proc/<pid>/mountinfo` field (`\040` for a space, `\011`
/// tab, `\012` newline, `\134` backslash; proc(5)).
pub fn unescape_mountinfo(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_with_parens_and_spaces() {
        let line =
            "1234 (a) b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50";
        let s = parse_stat(1234, line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.start_time, 987_654);
    }

    #[test]
    fn own_process_is_alive_and_stale_start_time_is_not() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert!(is_alive(me, s.start_time));
        assert!(!is_alive(me, s.start_time + 1));
        assert!(!is_alive(0, s.start_time));
    }

    #[test]
    fn rejects_truncated_content() {
        assert!(matches!(
            parse_stat(7, "7 (x) S 1 2"),
            Err(ProcfsError::ParseStat { pid: 7, .. })
        ));
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(
            unescape_mountinfo(r"/a\040b\011c\134d"),
            PathBuf::from("/a b\tc\\d")
        );
    }
}
