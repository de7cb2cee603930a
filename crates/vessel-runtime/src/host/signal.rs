//! Signal arguments as `kill` takes them (runc kill.go `parseSignal`), the set a foreground
//! process forwards, and [`Interrupts`]: SIGHUP, SIGINT and SIGTERM caught for the time a
//! command waits for something it must clean up after (a create hook).

use std::os::fd::{AsFd, BorrowedFd};
use std::str::FromStr;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

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

/// The signals that end a command run from a terminal or a supervisor: hang-up, Ctrl-C and
/// `kill`'s default.
pub const TERMINATING: [Signal; 3] = [Signal::SIGHUP, Signal::SIGINT, Signal::SIGTERM];

/// While alive, the [`TERMINATING`] signals are blocked in the calling thread and queued on a
/// signalfd, where [`Interrupts::take`] (or a poll on [`Interrupts::as_fd`]) finds them, instead
/// of ending the process on the spot. Dropping it restores the previous mask: a signal still
/// queued is then delivered as usual (by default it ends the process).
///
/// Meant for a single-threaded process (the mask is the calling thread's; another thread would
/// still take the signal). A child spawned meanwhile inherits the blocked mask (Rust's `Command`
/// keeps it): whoever spawns one must reset it, as the hooks runner does.
#[derive(Debug)]
pub struct Interrupts {
    fd: SignalFd,
    old: SigSet,
}

impl Interrupts {
    /// Blocks the [`TERMINATING`] signals and opens the signalfd (non-blocking, close-on-exec).
    pub fn catch() -> nix::Result<Interrupts> {
        let mut set = SigSet::empty();
        for sig in TERMINATING {
            set.add(sig);
        }
        let mut old = SigSet::empty();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))?;
        match SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
            Ok(fd) => Ok(Interrupts { fd, old }),
            Err(e) => {
                let _ =
                    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
                Err(e)
            }
        }
    }

    /// The first terminating signal received and not yet taken, if any (does not wait).
    pub fn take(&mut self) -> Option<Signal> {
        match self.fd.read_signal() {
            Ok(Some(info)) => Signal::try_from(info.ssi_signo as i32).ok(),
            _ => None,
        }
    }
}

impl AsFd for Interrupts {
    /// The signalfd: readable once a terminating signal is queued.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// Ends the process by `sig` as if it had not been caught, so that its parent sees a death by
/// that signal (a shell prints 128 + its number): restores the default action, unblocks it and
/// raises it. Falls back to exiting with 128 + the signal number should the process survive.
pub fn die_of(sig: Signal) -> ! {
    // SAFETY: installing SIG_DFL runs no handler code; nothing else in the process depends on
    // this signal's disposition from here on, as the process is about to end.
    let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
    let mut set = SigSet::empty();
    set.add(sig);
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
    let _ = nix::sys::signal::raise(sig);
    std::process::exit(128 + sig as i32)
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
    fn interrupts_queue_terminating_signals_until_dropped() {
        let blocked = || {
            let mut mask = SigSet::empty();
            nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut mask))
                .unwrap();
            mask.contains(Signal::SIGHUP)
        };
        assert!(!blocked());
        let mut interrupts = Interrupts::catch().unwrap();
        assert!(blocked());
        assert_eq!(interrupts.take(), None);
        // Directed at this thread: the test harness runs others, whose mask is unchanged.
        nix::sys::pthread::pthread_kill(nix::sys::pthread::pthread_self(), Signal::SIGHUP).unwrap();
        assert_eq!(interrupts.take(), Some(Signal::SIGHUP));
        assert_eq!(interrupts.take(), None);
        drop(interrupts);
        assert!(!blocked());
    }

    #[test]
    fn unknown_names_keep_the_raw_text() {
        let err = parse("sigfoo").unwrap_err();
        assert_eq!(err.to_string(), "unknown signal \"sigfoo\"");
        assert!(parse("").is_err());
    }
}
