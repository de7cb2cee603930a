//! Signal arguments as `kill` takes them (runc kill.go `parseSignal`).

use std::str::FromStr;

use nix::sys::signal::{SigSet, Signal};

/// Errors of [`parse`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignalError {
    /// Neither a decimal number nor a known signal name; carries the argument as given.
    #[error("unknown signal {0:?}")]
    ParseSignal(String),
}

/// Parses a signal given as a decimal number (`9`, passed through as is, real-time signals
/// included) or a name in any case with or without the `SIG` prefix (`KILL`, `sigkill`).
pub fn parse(raw: &str) -> Result<i32, SignalError> {
    if let Ok(n) = raw.parse::<i32>() {
        return Ok(n);
    }
    let upper = raw.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name)
        .map(|s| s as i32)
        .map_err(|_| SignalError::ParseSignal(raw.to_owned()))
}

/// The signals a process passes on to a container's init: every signal except those that cannot
/// be caught (SIGKILL, SIGSTOP), SIGCHLD (the forwarder's own children), the synchronous faults
/// and SIGPIPE, and the ones in `except` (runc signals.go leaves out SIGWINCH and SIGURG).
pub fn forwarded(except: &[Signal]) -> SigSet {
    let mut set = SigSet::empty();
    for sig in Signal::iterator() {
        let never = matches!(
            sig,
            Signal::SIGKILL
                | Signal::SIGSTOP
                | Signal::SIGCHLD
                | Signal::SIGSEGV
                | Signal::SIGBUS
                | Signal::SIGILL
                | Signal::SIGFPE
                | Signal::SIGTRAP
                | Signal::SIGSYS
                | Signal::SIGPIPE
        );
        if !never && !except.contains(&sig) {
            set.add(sig);
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_and_names() {
        assert_eq!(parse("9"), Ok(9));
        assert_eq!(parse("34"), Ok(34));
        assert_eq!(parse("KILL"), Ok(libc::SIGKILL));
        assert_eq!(parse("sigkill"), Ok(libc::SIGKILL));
        assert_eq!(parse("SigTerm"), Ok(libc::SIGTERM));
        assert_eq!(parse("hup"), Ok(libc::SIGHUP));
        assert_eq!(parse("SIGUSR2"), Ok(libc::SIGUSR2));
    }

    #[test]
    fn forwarded_set_leaves_out_uncatchable_and_excepted() {
        let set = forwarded(&[Signal::SIGWINCH]);
        assert!(set.contains(Signal::SIGTERM) && set.contains(Signal::SIGHUP));
        assert!(!set.contains(Signal::SIGKILL) && !set.contains(Signal::SIGCHLD));
        assert!(!set.contains(Signal::SIGWINCH));
        assert!(forwarded(&[]).contains(Signal::SIGWINCH));
    }

    #[test]
    fn unknown_names_keep_the_raw_text() {
        let err = parse("sigfoo").unwrap_err();
        assert_eq!(err.to_string(), "unknown signal \"sigfoo\"");
        assert!(parse("").is_err());
    }
}
