//! The agent's side of standard I/O streams (`vessel_protocol::stdio`): the pipes or pty of
//! every process, and the relays that join them to the host's stdio connections.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use vessel_protocol::{Code, RemoteError, StdioConfig, StdioHeader, StreamKind};

/// Identifies a process: container id and exec id (`None` for init).
pub type ProcKey = (String, Option<String>);

/// The agent's ends of one process's streams, until the host attaches them.
#[derive(Debug, Default)]
pub struct ProcStdio {
    stdin: Option<Arc<Mutex<Option<File>>>>,
    stdout: Option<File>,
    stderr: Option<File>,
    tty: Option<File>,
}

impl ProcStdio {
    /// Sets the pty master the process allocated.
    pub fn set_tty(&mut self, master: File) {
        self.tty = Some(master);
    }
}

/// Builds the streams of a new process: pipes (or `/dev/null`) per `cfg`; with `terminal`,
/// `/dev/null` until the process hands back its pty master ([`ProcStdio::set_tty`]). Returns
/// the agent's ends and the process's three fds.
///
/// # Errors
/// Creating a pipe, pty or opening `/dev/null` failed.
pub fn make(terminal: bool, cfg: StdioConfig) -> io::Result<(ProcStdio, [OwnedFd; 3])> {
    let null = || -> io::Result<OwnedFd> {
        Ok(std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?
            .into())
    };
    let pipe = || -> io::Result<(OwnedFd, OwnedFd)> {
        Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
    };
    let mut ends = ProcStdio::default();
    if terminal {
        // The process allocates its terminal in the container and hands the master back.
        return Ok((ends, [null()?, null()?, null()?]));
    }
    let stdin = if cfg.stdin {
        let (r, w) = pipe()?;
        ends.stdin = Some(Arc::new(Mutex::new(Some(File::from(w)))));
        r
    } else {
        null()?
    };
    let stdout = if cfg.stdout {
        let (r, w) = pipe()?;
        ends.stdout = Some(File::from(r));
        w
    } else {
        null()?
    };
    let stderr = if cfg.stderr {
        let (r, w) = pipe()?;
        ends.stderr = Some(File::from(r));
        w
    } else {
        null()?
    };
    Ok((ends, [stdin, stdout, stderr]))
}

/// Every process's unattached stream ends.
#[derive(Debug, Default)]
pub struct StdioRegistry {
    procs: Mutex<HashMap<ProcKey, ProcStdio>>,
}

/// How long [`relay_out`] waits for more output after a read before sending what it has.
const GATHER_MS: u8 = 1;
/// [`relay_out`] sends at once when it holds this much.
const GATHER_UP_TO: usize = 32 * 1024;

/// Relays a process's output (pipe, or pty master) to its stdio connection until end-of-file,
/// an error (`EIO` from a pty master: the terminal was hung up, the end of output) or a closed
/// connection.
///
/// Output is gathered before it is sent: after each read, more is read for as long as it keeps
/// coming within [`GATHER_MS`], up to [`GATHER_UP_TO`] bytes. A process writing line by line (a
/// terminal's line discipline makes every line its own write) would otherwise cost one vsock
/// packet, and one round of guest exits and host wake-ups, per line: 50,000 lines through a
/// terminal took 41 s in the lab. Interactive output waits at most one millisecond more.
fn relay_out(mut from: File, mut to: UnixStream) {
    let mut buf = vec![0u8; vessel_protocol::stdio::RELAY_BUFFER];
    loop {
        let (n, end) = gather(&mut from, &mut buf);
        if n > 0 && to.write_all(&buf[..n]).is_err() {
            break;
        }
        if end {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Reads into `buf` as [`relay_out`] describes; returns the bytes read and whether the output
/// has ended (end-of-file or an error, after those bytes).
fn gather(from: &mut File, buf: &mut [u8]) -> (usize, bool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut n = 0;
    loop {
        match from.read(&mut buf[n..]) {
            Ok(0) => return (n, true),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return (n, true),
        }
        if n >= GATHER_UP_TO.min(buf.len()) {
            return (n, false);
        }
        let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(GATHER_MS)) {
            // Readable, or hung up (the next read says which: data, 0 or EIO).
            Ok(k) if k > 0 => {}
            _ => return (n, false),
        }
    }
}

fn relay_in(mut from: UnixStream, to: Arc<Mutex<Option<File>>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut g = to.lock().unwrap_or_else(|e| e.into_inner());
        let written = g.as_mut().map(|f| f.write_all(&buf[..n]).is_ok());
        if written != Some(true) {
            break;
        }
    }
    // EOF from the host: the process reads EOF.
    to.lock().unwrap_or_else(|e| e.into_inner()).take();
}

impl StdioRegistry {
    /// Registers a process's stream ends.
    pub fn insert(&self, key: ProcKey, ends: ProcStdio) {
        self.lock().insert(key, ends);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProcKey, ProcStdio>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops a process's unattached ends.
    pub fn remove_container(&self, container_id: &str) {
        self.lock().retain(|k, _| k.0 != container_id);
    }

    /// Closes a process's stdin (now, or as soon as its relay is done writing).
    ///
    /// # Errors
    /// `NotFound` if the process has no stdin pipe.
    pub fn close_stdin(&self, key: &ProcKey) -> Result<(), RemoteError> {
        let g = self.lock();
        let stdin = g.get(key).and_then(|p| p.stdin.clone()).ok_or_else(|| {
            RemoteError::new(
                Code::NotFound,
                format!("process {key:?} has no stdin stream"),
            )
        })?;
        drop(g);
        stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(())
    }

    /// Hands the stream named by `h` to `conn` and starts its relay thread(s).
    ///
    /// # Errors
    /// `NotFound` for an unknown process, `FailedPrecondition` for a stream that does not exist
    /// or is already attached.
    pub fn attach(
        &self,
        h: &StdioHeader,
        conn: UnixStream,
    ) -> Result<(), (RemoteError, UnixStream)> {
        let key = (h.container_id.clone(), h.exec_id.clone());
        let mut g = self.lock();
        let Some(p) = g.get_mut(&key) else {
            let e = RemoteError::new(
                Code::NotFound,
                format!("no process {:?} in container {}", h.exec_id, h.container_id),
            );
            return Err((e, conn));
        };
        let gone = |conn| {
            Err((
                RemoteError::new(
                    Code::FailedPrecondition,
                    format!(
                        "stream {:?} of {key:?} is not available (unused or attached)",
                        h.stream
                    ),
                ),
                conn,
            ))
        };
        let spawn = |f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name("stdio".into())
                .spawn(f)
                .map(|_| ())
        };
        let started = match h.stream {
            StreamKind::Stdout | StreamKind::Stderr => {
                let slot = if h.stream == StreamKind::Stdout {
                    &mut p.stdout
                } else {
                    &mut p.stderr
                };
                let Some(f) = slot.take() else {
                    return gone(conn);
                };
                ack(&conn);
                spawn(Box::new(move || relay_out(f, conn)))
            }
            StreamKind::Stdin => {
                let Some(f) = p.stdin.clone() else {
                    return gone(conn);
                };
                ack(&conn);
                spawn(Box::new(move || relay_in(conn, f)))
            }
            StreamKind::Tty => {
                let Some(m) = p.tty.take() else {
                    return gone(conn);
                };
                ack(&conn);
                let (m2, c2) = match (m.try_clone(), conn.try_clone()) {
                    (Ok(m2), Ok(c2)) => (m2, c2),
                    _ => return Ok(()),
                };
                let input = Arc::new(Mutex::new(Some(m2)));
                spawn(Box::new(move || relay_in(c2, input)))
                    .and_then(|()| spawn(Box::new(move || relay_out(m, conn))))
            }
        };
        if let Err(e) = started {
            log::error!("start stdio relay: {e}");
        }
        Ok(())
    }
}

fn ack(mut conn: &UnixStream) {
    let ok: Result<(), RemoteError> = Ok(());
    let _ = vessel_protocol::write_message(&mut conn, &ok);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn output_written_line_by_line_is_sent_in_few_chunks_and_complete() {
        let (r, w) = std::io::pipe().unwrap();
        let (conn, mut peer) = UnixStream::pair().unwrap();
        let relay = std::thread::spawn(move || relay_out(File::from(OwnedFd::from(r)), conn));
        let writer = std::thread::spawn(move || {
            let mut w = w;
            // One line every 100 us: each write would be its own chunk if not gathered.
            for i in 0..2_000 {
                writeln!(w, "{i}").unwrap();
                std::thread::sleep(Duration::from_micros(100));
            }
        });
        // Count the chunks as they arrive: each read of the peer returns at most one chunk
        // the relay wrote (a stream socket may merge them, never split a small one).
        let mut all = Vec::new();
        let mut reads = 0;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = peer.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            reads += 1;
            all.extend_from_slice(&buf[..k]);
        }
        writer.join().unwrap();
        relay.join().unwrap();
        let want: String = (0..2_000).map(|i| format!("{i}\n")).collect();
        assert_eq!(String::from_utf8(all).unwrap(), want);
        assert!(reads < 500, "{reads} chunks for 2,000 lines: not gathered");
    }

    #[test]
    fn a_lone_line_goes_out_at_once() {
        let (r, mut w) = std::io::pipe().unwrap();
        let (conn, mut peer) = UnixStream::pair().unwrap();
        let relay = std::thread::spawn(move || relay_out(File::from(OwnedFd::from(r)), conn));
        let t0 = Instant::now();
        w.write_all(b"prompt$ ").unwrap();
        let mut got = [0u8; 8];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"prompt$ ");
        // Sent while the writer is still open, well before any end.
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
        drop(w);
        relay.join().unwrap();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}
