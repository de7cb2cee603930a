//! The `--log`/`--log-format`/`--debug` logger (runc main.go): logrus-style lines to a file opened
//! for appending (`O_CREATE|O_WRONLY|O_APPEND|O_SYNC`, 0644) or to stderr.
//!
//! - text: `time="<RFC 3339>" level=<level> msg="<message>"`
//! - json: one object per line with the keys `level`, `msg`, `time` (what containerd and podman
//!   parse back for error messages).
//!
//! The monitor (and an exec's relay) keep this logger for the container's whole life, and much of
//! what they log is caused by the guest (a refused vsock connection, a FUSE request that failed,
//! an agent that misbehaved). So that a guest cannot fill the caller's log, and the disk under
//! it, at the speed it can trigger warnings, lines pass a token bucket ([`RateLimit`]): a burst of
//! [`BURST`] lines, then [`LINES_PER_SEC`] a second. Errors have a bucket of their own, so a flood
//! of warnings never hides the error that explains a failure. Debug lines, which only
//! `--debug` asks for, are not thinned (diagnosis and `make bench` read them). What is dropped is counted and
//! reported with one line, `[vessel: N log lines suppressed]`, before the next line that passes.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context};
use log::{Level, LevelFilter, Log, Metadata, Record};

/// Line format of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

struct Logger {
    out: Mutex<Box<dyn Write + Send>>,
    format: Format,
    level: LevelFilter,
    /// The buckets of error lines and of all other lines.
    limits: Mutex<[RateLimit; 2]>,
}

/// Lines a bucket lets through at once, after a quiet spell.
pub const BURST: u32 = 100;
/// Lines a bucket lets through a second, in the long run: with the suppression notice before
/// each, two lines a second, about 25 KiB a minute of the caller's log per bucket whatever the
/// guest does.
pub const LINES_PER_SEC: u32 = 1;

/// What a [`RateLimit`] says of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Write it, after a line saying that `suppressed` lines were dropped before it (if not 0).
    Write { suppressed: u64 },
    /// Drop it (it is counted).
    Drop,
}

/// Nanotokens a line costs: the bucket counts in billionths of a line so that refilling by
/// elapsed nanoseconds is exact.
const LINE: u64 = 1_000_000_000;

/// A token bucket: up to `burst` lines, refilled at `per_sec` lines a second; a line takes one.
#[derive(Debug)]
struct RateLimit {
    /// Capacity, nanotokens.
    burst: u64,
    per_sec: u64,
    /// Tokens now, nanotokens.
    tokens: u64,
    last: Instant,
    suppressed: u64,
}

impl RateLimit {
    /// A full bucket at `now`.
    fn new(burst: u32, per_sec: u32, now: Instant) -> RateLimit {
        let burst = u64::from(burst) * LINE;
        RateLimit {
            burst,
            per_sec: u64::from(per_sec),
            tokens: burst,
            last: now,
            suppressed: 0,
        }
    }

    /// Whether a line logged at `now` is written. An instant before the last one seen adds
    /// nothing.
    fn admit(&mut self, now: Instant) -> Admit {
        let elapsed =
            u64::try_from(now.saturating_duration_since(self.last).as_nanos()).unwrap_or(u64::MAX);
        self.tokens = self
            .tokens
            .saturating_add(elapsed.saturating_mul(self.per_sec))
            .min(self.burst);
        self.last = self.last.max(now);
        if self.tokens < LINE {
            self.suppressed += 1;
            return Admit::Drop;
        }
        self.tokens -= LINE;
        Admit::Write {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

impl Logger {
    fn new(out: Box<dyn Write + Send>, format: Format, level: LevelFilter, now: Instant) -> Logger {
        let bucket = || RateLimit::new(BURST, LINES_PER_SEC, now);
        Logger {
            out: Mutex::new(out),
            format,
            level,
            limits: Mutex::new([bucket(), bucket()]),
        }
    }

    /// The lines to write for a record of `level` with `msg` at `now`: none, the line, or the
    /// suppression notice and the line.
    fn lines(&self, level: Level, msg: &str, now: Instant) -> Vec<String> {
        if level >= Level::Debug {
            // Asked for with `--debug` (diagnosis, `make bench`'s timings): never thinned.
            return vec![format_line(self.format, level, msg)];
        }
        let bucket = usize::from(level != Level::Error);
        let admit = match self.limits.lock() {
            Ok(mut limits) => limits[bucket].admit(now),
            Err(_) => Admit::Write { suppressed: 0 },
        };
        match admit {
            Admit::Drop => Vec::new(),
            Admit::Write { suppressed: 0 } => vec![format_line(self.format, level, msg)],
            Admit::Write { suppressed } => vec![
                format_line(
                    self.format,
                    Level::Warn,
                    &format!("[vessel: {suppressed} log lines suppressed]"),
                ),
                format_line(self.format, level, msg),
            ],
        }
    }
}

/// logrus's level names.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// One log line, newline included.
fn format_line(format: Format, level: Level, msg: &str) -> String {
    let time = vessel_runtime::host::time::rfc3339_secs(std::time::SystemTime::now());
    match format {
        // serde_json's map is ordered by key: level, msg, time, as logrus writes them.
        Format::Json => {
            let obj = serde_json::json!({ "level": level_name(level), "msg": msg, "time": time });
            format!("{obj}\n")
        }
        Format::Text => format!(
            "time={:?} level={} msg={}\n",
            time,
            level_name(level),
            serde_json::Value::from(msg)
        ),
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let lines = self.lines(record.level(), &record.args().to_string(), Instant::now());
        if lines.is_empty() {
            return;
        }
        if let Ok(mut out) = self.out.lock() {
            for line in lines {
                let _ = out.write_all(line.as_bytes());
            }
            let _ = out.flush();
        }
    }

    fn flush(&self) {}
}

/// Parses `--log-format`; anything but `text` and `json` is runc's `invalid log-format: X`.
fn parse_format(value: &str) -> anyhow::Result<Format> {
    match value {
        "text" => Ok(Format::Text),
        "json" => Ok(Format::Json),
        other => bail!("invalid log-format: {other}"),
    }
}

/// Installs the logger. Returns whether the destination is stderr (then errors are not printed a
/// second time).
pub fn init(path: Option<&Path>, format: &str, debug: bool) -> anyhow::Result<bool> {
    let format = parse_format(format)?;
    let (out, to_stderr): (Box<dyn Write + Send>, bool) = match path {
        Some(p) if !p.as_os_str().is_empty() && p != Path::new("/dev/stderr") => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(libc::O_SYNC)
                .mode(0o644)
                .open(p)
                .with_context(|| format!("open log file {}", p.display()))?;
            (Box::new(file), false)
        }
        _ => (Box::new(std::io::stderr()), true),
    };
    let level = if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Warn
    };
    let logger = Logger::new(out, format, level, Instant::now());
    log::set_logger(Box::leak(Box::new(logger)))
        .map_err(|_| anyhow::anyhow!("install the logger: a logger is already set"))?;
    log::set_max_level(level);
    Ok(to_stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_logrus_keys() {
        let line = format_line(Format::Json, Level::Error, "container does not exist");
        assert!(line.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container does not exist");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert!(line.starts_with("{\"level\":\"error\",\"msg\":"));
    }

    #[test]
    fn text_line_quotes_message() {
        let line = format_line(Format::Text, Level::Warn, "a \"b\"");
        assert!(
            line.contains(" level=warning msg=\"a \\\"b\\\"\"\n"),
            "{line}"
        );
    }

    #[test]
    fn a_bucket_lets_a_burst_through_then_one_line_a_second_and_counts_the_rest() {
        use std::time::Duration;
        let t0 = Instant::now();
        let mut b = RateLimit::new(3, 1, t0);
        for _ in 0..3 {
            assert_eq!(b.admit(t0), Admit::Write { suppressed: 0 });
        }
        for _ in 0..5 {
            assert_eq!(b.admit(t0 + Duration::from_millis(500)), Admit::Drop);
        }
        // One token a second: the next line passes, with the count of what was dropped.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.admit(t1), Admit::Write { suppressed: 5 });
        assert_eq!(b.admit(t1), Admit::Drop);
        // A long quiet spell refills the burst, no more.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(matches!(b.admit(t2), Admit::Write { .. }));
        }
        assert_eq!(b.admit(t2), Admit::Drop);
        // A clock that goes back (two threads' instants out of order) takes nothing away.
        assert_eq!(b.admit(t1), Admit::Drop);
        assert_eq!(
            b.admit(t2 + Duration::from_secs(1)),
            Admit::Write { suppressed: 2 }
        );
    }

    #[test]
    fn a_flood_of_warnings_is_cut_to_the_rate_and_errors_still_pass() {
        use std::time::Duration;
        let t0 = Instant::now();
        let logger = Logger::new(
            Box::new(std::io::sink()),
            Format::Text,
            LevelFilter::Debug,
            t0,
        );
        // A guest triggering warnings for a minute, a thousand a second.
        let mut written = Vec::new();
        for ms in 0..60_000u64 {
            let now = t0 + Duration::from_millis(ms);
            written.extend(logger.lines(Level::Warn, "vsock: refused", now));
        }
        let notices = written.iter().filter(|l| l.contains("suppressed]")).count();
        let warnings = written.len() - notices;
        // The burst, then one a second (each with its notice).
        assert_eq!(warnings, BURST as usize + 59, "{}", written.len());
        assert_eq!(notices, 59);
        assert!(written[BURST as usize]
            .contains("level=warning msg=\"[vessel: 900 log lines suppressed]\""));
        // Errors keep their own budget.
        let now = t0 + Duration::from_secs(60);
        let e = logger.lines(Level::Error, "container failed", now);
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("level=error msg=\"container failed\""));
        for _ in 0..200 {
            logger.lines(Level::Error, "again", now);
        }
        assert!(logger.lines(Level::Error, "again", now).is_empty());
    }

    #[test]
    fn bad_format_uses_runc_text() {
        let err = parse_format("xml").unwrap_err();
        assert_eq!(err.to_string(), "invalid log-format: xml");
    }
}
