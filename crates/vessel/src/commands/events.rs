//! `vessel events [--interval DUR] [--stats] <id>` (runc events.go).
//!
//! The statistics come from the guest's cgroup through the agent (`vessel_runtime::verbs::guest::stats`),
//! one `{"type":"stats","id":...,"data":{...}}` line each. `--stats` prints one; otherwise one
//! every `--interval` until the container stops, along with an `{"type":"oom","id":...}` line
//! for each OOM kill in the guest cgroup (the agent's `wait_oom`, from `memory.events`).

use std::io::Write;
use std::time::Duration;

use clap::Args;
use vessel_runtime::{StateStore, Status};

use super::{check_args, load_in_state, Arity, Context};

/// Arguments of `vessel events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Interval between stats events, Go duration syntax (`5s`, `1m30s`, `250ms`).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_go_duration)]
    interval: Duration,
    /// Print one stats object and exit.
    #[arg(long)]
    stats: bool,
    /// The container ID (hidden from the help, whose usage line names it, as runc's does).
    #[arg(value_name = "container-id", hide = true)]
    args: Vec<String>,
}

/// Parses a Go `time.ParseDuration` string: signed sequence of decimal numbers with units `ns`,
/// `us`/`µs`, `ms`, `s`, `m`, `h`; `0` alone is allowed. Negative durations are refused.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("time: invalid duration {text:?}");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() || rest.starts_with('-') {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// One runc event (libcontainer/events.go `Event`): its keys in runc's order, `type`, `id`,
/// then `data` when there is any.
#[derive(serde::Serialize)]
struct Event<'a, T: serde::Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
}

/// One runc stats event line.
fn stats_line(id: &str, stats: &vessel_runtime::verbs::guest::Stats) -> anyhow::Result<String> {
    let event = Event {
        kind: "stats",
        id,
        data: Some(stats),
    };
    Ok(serde_json::to_string(&event)?)
}

/// runc's OOM event: no `data`.
fn oom_line(id: &str) -> String {
    let event: Event<'_, ()> = Event {
        kind: "oom",
        id,
        data: None,
    };
    serde_json::to_string(&event).expect("two strings serialise")
}

fn print_line(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

fn stopped(store: &StateStore, id: &str) -> bool {
    store
        .load(id)
        .map(|r| r.status() == Status::Stopped)
        .unwrap_or(true)
}

/// Prints one `oom` event per OOM kill in the guest cgroup counted after the start, until the
/// container stops. The agent is asked again after a failed call (for example while the
/// container is paused and the guest cannot answer a new connection).
fn watch_oom(store: &StateStore, id: &str) {
    let mut seen = None;
    loop {
        match vessel_runtime::verbs::guest::wait_oom(store, id, seen) {
            Ok((count, exited)) => {
                if let Some(before) = seen {
                    for _ in before..count {
                        if print_line(&oom_line(id)).is_err() {
                            return;
                        }
                    }
                }
                seen = Some(count);
                if exited {
                    return;
                }
            }
            Err(_) if stopped(store, id) => return,
            Err(e) => {
                log::warn!("events: {}", anyhow::Error::from(e));
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Prints stats events for the container, and without `--stats` its OOM events.
pub fn run(ctx: &Context, args: EventsArgs) -> anyhow::Result<i32> {
    check_args("events", &args.args, &[Arity::Exact(1)])?;
    let id = &args.args[0];
    let not_running =
        |s| (s == Status::Stopped).then(|| format!("container with id {id} is not running"));
    load_in_state(ctx, id, not_running)?;
    if args.stats {
        let stats = vessel_runtime::verbs::guest::stats(&ctx.store, id)?;
        println!("{}", stats_line(id, &stats)?);
        return Ok(0);
    }
    // Not joined unconditionally: it ends with the container, and must not hold the command up
    // if stdout fails. Once the container has stopped, it gets a moment to print the OOM kills
    // that ended it.
    let (store, oom_id) = (ctx.store.clone(), id.clone());
    let (done, oom_done) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        watch_oom(&store, &oom_id);
        let _ = done.send(());
    });
    let end = || {
        let _ = oom_done.recv_timeout(Duration::from_secs(2));
        Ok(0)
    };
    loop {
        // The first sample comes after one interval, as runc's `time.Tick` gives it. Sleep in
        // short steps so that the end of the container ends the stream promptly.
        let deadline = std::time::Instant::now() + args.interval;
        loop {
            if stopped(&ctx.store, id) {
                return end();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
        match vessel_runtime::verbs::guest::stats(&ctx.store, id) {
            Ok(stats) => print_line(&stats_line(id, &stats)?)?,
            // The stream ends when the container stops.
            Err(_) if stopped(&ctx.store, id) => return end(),
            Err(e) => log::warn!("events: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_runc_s_key_order() {
        assert_eq!(oom_line("c1"), r#"{"type":"oom","id":"c1"}"#);
        let stats = vessel_runtime::verbs::guest::Stats::default();
        let line = stats_line("c1", &stats).unwrap();
        assert!(
            line.starts_with(r#"{"type":"stats","id":"c1","data":{"#),
            "{line}"
        );
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_go_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "5", "s", "-1s", "5x", "1..2s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }
}
