//! The `--log`/`--log-format`/`--debug` logger (runc main.go): logrus-style lines to a file opened
//! for appending (`O_CREATE|O_WRONLY|O_APPEND|O_SYNC`, 0644) or to stderr.
//!
//! - text: `time="<RFC 3339>" level=<level> msg="<message>"`
//! - json: one object per line with the keys `level`, `msg`, `time` (what containerd and podman
//!   parse back for error messages).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

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
        let line = format_line(self.format, record.level(), &record.args().to_string());
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
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
    let logger = Logger {
        out: Mutex::new(out),
        format,
        level,
    };
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
    fn bad_format_uses_runc_text() {
        let err = parse_format("xml").unwrap_err();
        assert_eq!(err.to_string(), "invalid log-format: xml");
    }
}
