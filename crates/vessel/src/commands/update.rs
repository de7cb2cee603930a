//! `vessel update [flags] <id>` (runc update.go).
//!
//! Parsing (`--resources FILE|-` with a JSON `LinuxResources`, and the per-value flags) and the
//! state check are complete; applying limits to the guest cgroup needs the agent's Update
//! request (issue 7), so a live container gets a clear error.

use std::io::Read;

use clap::Args;
use oci_spec::runtime::LinuxResources;
use vessel_runtime::Status;

use super::{check_args, load_in_state, Arity, Context};

/// Arguments of `vessel update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// JSON LinuxResources from a file, or `-` for stdin; every other flag is then ignored.
    #[arg(short = 'r', long, value_name = "FILE")]
    resources: Option<String>,
    /// Block IO weight (10-1000).
    #[arg(long)]
    blkio_weight: Option<u16>,
    /// CPU CFS period in microseconds.
    #[arg(long)]
    cpu_period: Option<u64>,
    /// CPU CFS quota in microseconds.
    #[arg(long)]
    cpu_quota: Option<i64>,
    /// CPU CFS burst in microseconds.
    #[arg(long)]
    cpu_burst: Option<u64>,
    /// CPU shares (relative weight).
    #[arg(long)]
    cpu_share: Option<u64>,
    /// CPU real-time period in microseconds.
    #[arg(long)]
    cpu_rt_period: Option<u64>,
    /// CPU real-time runtime in microseconds.
    #[arg(long)]
    cpu_rt_runtime: Option<i64>,
    /// SCHED_IDLE for the cgroup (0 or 1).
    #[arg(long)]
    cpu_idle: Option<i64>,
    /// CPUs allowed (`0-3`, `0,1`).
    #[arg(long)]
    cpuset_cpus: Option<String>,
    /// Memory nodes allowed.
    #[arg(long)]
    cpuset_mems: Option<String>,
    /// Memory limit, with unit suffix (`512m`), `-1` unlimited.
    #[arg(long, allow_hyphen_values = true)]
    memory: Option<String>,
    /// Memory reservation, with unit suffix.
    #[arg(long, allow_hyphen_values = true)]
    memory_reservation: Option<String>,
    /// Memory plus swap limit, with unit suffix, `-1` unlimited.
    #[arg(long, allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Maximum number of pids, `-1` unlimited.
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Intel RDT L3 cache schema (accepted; not supported).
    #[arg(long)]
    l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema (accepted; not supported).
    #[arg(long)]
    mem_bw_schema: Option<String>,
    /// Obsolete, ignored.
    #[arg(long, hide = true)]
    kernel_memory: Option<String>,
    /// Obsolete, ignored.
    #[arg(long, hide = true)]
    kernel_memory_tcp: Option<String>,
    /// The container ID.
    #[arg(value_name = "container-id")]
    args: Vec<String>,
}

/// Parses a memory value as runc does (go-units `RAMInBytes`): a number with an optional
/// binary-unit suffix `b k m g t p` (any case, optional trailing `b`/`ib`), or `-1`.
pub fn parse_memory(text: &str) -> Result<i64, String> {
    if text == "-1" {
        return Ok(-1);
    }
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("invalid size: {text:?}"))?;
    let unit = unit.trim_end_matches("ib").trim_end_matches('b');
    let scale: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(format!("invalid size: {text:?}")),
    };
    Ok((value * scale) as i64)
}

/// Validates the request and the container's state; see the module documentation.
pub fn run(ctx: &Context, args: UpdateArgs) -> anyhow::Result<i32> {
    check_args("update", &args.args, &[Arity::Exact(1)])?;
    let id = &args.args[0];
    load_in_state(ctx, id, |s| {
        (s == Status::Stopped).then(|| "container not running".to_owned())
    })?;
    if let Some(source) = &args.resources {
        let mut text = String::new();
        if source == "-" {
            std::io::stdin().read_to_string(&mut text)?;
        } else {
            text = std::fs::read_to_string(source)?;
        }
        let _: LinuxResources =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("decode resources: {e}"))?;
    } else {
        for value in [&args.memory, &args.memory_reservation, &args.memory_swap]
            .into_iter()
            .flatten()
        {
            parse_memory(value).map_err(anyhow::Error::msg)?;
        }
    }
    anyhow::bail!("update of container {id}: resource updates in the guest are not supported yet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_memory_units() {
        assert_eq!(parse_memory("-1"), Ok(-1));
        assert_eq!(parse_memory("1024"), Ok(1024));
        assert_eq!(parse_memory("512m"), Ok(512 << 20));
        assert_eq!(parse_memory("1G"), Ok(1 << 30));
        assert_eq!(parse_memory("2kb"), Ok(2048));
        assert_eq!(parse_memory("1.5KiB"), Ok(1536));
        assert!(parse_memory("12x").is_err());
        assert!(parse_memory("").is_err());
    }
}
