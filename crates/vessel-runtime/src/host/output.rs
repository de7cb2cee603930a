//! Output relays (a process's stdout, stderr or terminal, from the agent's stream to the caller's
//! fd) and how long the host waits for them once the process has exited.
//!
//! While the process runs, a relay blocks like the pipe it stands for: a caller that does not
//! read holds the workload back, as runc's pipe would. Once the process's exit is known, the
//! host waits for each relay to reach end-of-stream, so the caller's output is complete, but
//! only while bytes are moving: a relay that has moved nothing for [`STALL`] is given up (its
//! thread is left blocked and ends with the process), and the output it still held is dropped.
//! That happens when nobody reads the caller's end (a full FIFO: the container must still stop
//! when it is killed) or when the stream cannot end because another process still holds the
//! process's pipe or terminal (a background child of an `exec -t`): runc returns at once in both
//! cases, as the process's own exit is all it waits for.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an output relay may move no byte after the process exited before it is given up.
pub const STALL: Duration = Duration::from_secs(2);

/// How often [`OutputRelay::finish`] looks at a relay's progress.
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct Progress {
    /// Bytes read from the stream plus bytes written to the caller: any movement counts.
    moved: AtomicU64,
    done: AtomicBool,
}

/// One output relay thread; see the module documentation.
#[derive(Debug)]
pub struct OutputRelay {
    name: &'static str,
    progress: Arc<Progress>,
    thread: JoinHandle<()>,
}

/// How an output relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// It reached end-of-stream (or an error) and every byte read was written.
    Drained,
    /// Nothing moved for [`STALL`] after the process exited: the relay was given up.
    GivenUp,
}

impl OutputRelay {
    /// Starts a thread named `name` copying `from` to `to` until end-of-stream or an error,
    /// forwarding each read at once (as [`vessel_protocol::stdio::relay`]); `to` is closed when
    /// the copy ends.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn spawn(
        name: &'static str,
        from: impl Read + Send + 'static,
        to: impl Write + Send + 'static,
    ) -> io::Result<OutputRelay> {
        let progress = Arc::new(Progress::default());
        let p = progress.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                confine_relay(name);
                let _ = copy(from, to, &p);
                p.done.store(true, Ordering::Release);
            })?;
        Ok(OutputRelay {
            name,
            progress,
            thread,
        })
    }

    /// Waits, once the process has exited, for the relay to end while it makes progress (module
    /// documentation); logs what was given up.
    pub fn finish(self, stall: Duration) -> Finished {
        let mut last = self.progress.moved.load(Ordering::Acquire);
        let mut since = Instant::now();
        loop {
            if self.progress.done.load(Ordering::Acquire) {
                let _ = self.thread.join();
                return Finished::Drained;
            }
            let now = self.progress.moved.load(Ordering::Acquire);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= stall {
                log::warn!(
                    "{}: no byte moved for {stall:?} after the process exited (nobody reads the \
                     output, or another process still holds the stream): the rest of it is \
                     dropped",
                    self.name
                );
                return Finished::GivenUp;
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Confines the calling relay thread named `name`: it only moves bytes between descriptors it
/// holds, so it gives up every capability and runs under the relay's seccomp filter
/// ([`vessel_vmm::seccomp::confine_relay`]; `docs/threat-model.md`). A kernel that refuses is
/// logged and the relay goes on unconfined, as a relay of runc's would run.
pub fn confine_relay(name: &str) {
    if let Err(e) = vessel_vmm::seccomp::confine_relay() {
        log::warn!("{name}: {}", vessel_error::chain(&e));
    }
}

/// [`OutputRelay::finish`] for every relay, one after the other (each has its own [`STALL`]
/// measured from when its turn comes, so a stalled stdout does not cut stderr short).
pub fn finish_all(relays: impl IntoIterator<Item = OutputRelay>) -> Vec<Finished> {
    relays.into_iter().map(|r| r.finish(STALL)).collect()
}

fn copy(mut from: impl Read, mut to: impl Write, progress: &Progress) -> io::Result<()> {
    let mut buf = vec![0u8; vessel_protocol::stdio::RELAY_BUFFER];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        progress.moved.fetch_add(n as u64, Ordering::AcqRel);
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            match to.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => {
                    rest = &rest[k..];
                    progress.moved.fetch_add(k as u64, Ordering::AcqRel);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn drains_everything_sent_before_the_end() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let (mut out, pipe_w) = std::io::pipe().unwrap();
        let relay = OutputRelay::spawn("t-out", rx, pipe_w).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let d2 = data.clone();
        let writer = std::thread::spawn(move || {
            tx.write_all(&d2).unwrap();
        });
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            out.read_to_end(&mut got).unwrap();
            got
        });
        writer.join().unwrap();
        assert_eq!(relay.finish(Duration::from_secs(5)), Finished::Drained);
        assert_eq!(reader.join().unwrap(), data);
    }

    #[test]
    fn a_reader_that_never_reads_is_given_up_after_the_stall() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        // A pipe whose read end is held and never read: the relay blocks once it is full.
        let (held, pipe_w) = std::io::pipe().unwrap();
        let relay = OutputRelay::spawn("t-stalled", rx, pipe_w).unwrap();
        tx.set_nonblocking(true).unwrap();
        let chunk = vec![b'x'; 4096];
        let mut sent = 0;
        let t0 = Instant::now();
        // Fill the pipe and the socket: the relay is blocked writing.
        while t0.elapsed() < Duration::from_secs(2) {
            match tx.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(sent > 64 * 1024, "only {sent} bytes went in");
        let t1 = Instant::now();
        assert_eq!(relay.finish(Duration::from_millis(300)), Finished::GivenUp);
        let waited = t1.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        drop(held);
    }

    #[test]
    fn a_stream_that_never_ends_is_given_up_but_a_slow_one_is_not() {
        // Never ends: a writer that keeps the stream open and sends nothing more.
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let (mut out, pipe_w) = std::io::pipe().unwrap();
        let relay = OutputRelay::spawn("t-open", rx, pipe_w).unwrap();
        tx.write_all(b"last words\n").unwrap();
        let mut got = [0u8; 11];
        out.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"last words\n");
        assert_eq!(relay.finish(Duration::from_millis(200)), Finished::GivenUp);

        // Slow but moving: one byte every 50 ms, for longer than the stall, then the end.
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let (mut out, pipe_w) = std::io::pipe().unwrap();
        let relay = OutputRelay::spawn("t-slow", rx, pipe_w).unwrap();
        let writer = std::thread::spawn(move || {
            for _ in 0..20 {
                tx.write_all(b".").unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            out.read_to_end(&mut got).unwrap();
            got
        });
        assert_eq!(relay.finish(Duration::from_millis(200)), Finished::Drained);
        writer.join().unwrap();
        assert_eq!(reader.join().unwrap(), vec![b'.'; 20]);
    }
}
