//! `vessel update [flags] <id>` (runc update.go).
//!
//! `--resources FILE|-` (a JSON `LinuxResources`; every other flag is then ignored, as in runc)
//! or the per-value flags make a partial `linux.resources`, which `vessel_runtime::verbs::update` merges
//! over the container's current ones, checks against the VM's size and has the agent apply to
//! the guest cgroup.

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
    /// The container ID (hidden from the help, whose usage line names it, as runc's does).
    #[arg(value_name = "container-id", hide = true)]
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

/// The partial `linux.resources` the per-value flags ask for (runc update.go: only the flags
/// given are set).
fn resources_from_flags(args: &UpdateArgs) -> anyhow::Result<LinuxResources> {
    use serde_json::{json, Map, Value};
    let mut r = Map::new();
    let mut put = |section: &str, key: &str, value: Value| {
        let entry = r
            .entry(section.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[key] = value;
    };
    let memory = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<i64>> {
        v.as_deref()
            .map(|t| parse_memory(t).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
            .transpose()
    };
    if let Some(v) = memory("--memory", &args.memory)? {
        put("memory", "limit", json!(v));
    }
    if let Some(v) = memory("--memory-reservation", &args.memory_reservation)? {
        put("memory", "reservation", json!(v));
    }
    if let Some(v) = memory("--memory-swap", &args.memory_swap)? {
        put("memory", "swap", json!(v));
    }
    let cpu = [
        ("shares", args.cpu_share.map(|v| json!(v))),
        ("quota", args.cpu_quota.map(|v| json!(v))),
        ("period", args.cpu_period.map(|v| json!(v))),
        ("burst", args.cpu_burst.map(|v| json!(v))),
        ("idle", args.cpu_idle.map(|v| json!(v))),
        ("realtimePeriod", args.cpu_rt_period.map(|v| json!(v))),
        ("realtimeRuntime", args.cpu_rt_runtime.map(|v| json!(v))),
        ("cpus", args.cpuset_cpus.clone().map(Value::from)),
        ("mems", args.cpuset_mems.clone().map(Value::from)),
    ];
    for (key, value) in cpu {
        if let Some(v) = value {
            put("cpu", key, v);
        }
    }
    if let Some(v) = args.pids_limit {
        put("pids", "limit", json!(v));
    }
    if let Some(v) = args.blkio_weight {
        put("blockIO", "weight", json!(v));
    }
    serde_json::from_value(Value::Object(r)).map_err(|e| anyhow::anyhow!("resources: {e}"))
}

/// Applies the new limits to the container's guest cgroup (`vessel_runtime::verbs::update`).
pub fn run(ctx: &Context, args: UpdateArgs) -> anyhow::Result<i32> {
    check_args("update", &args.args, &[Arity::Exact(1)])?;
    let id = &args.args[0];
    load_in_state(ctx, id, |s| {
        (s == Status::Stopped).then(|| "container not running".to_owned())
    })?;
    if args.l3_cache_schema.is_some() || args.mem_bw_schema.is_some() {
        anyhow::bail!(
            "--l3-cache-schema/--mem-bw-schema: Intel RDT is not available in Vessel's guests"
        );
    }
    let resources = match &args.resources {
        Some(source) => {
            let mut text = String::new();
            if source == "-" {
                std::io::stdin().read_to_string(&mut text)?;
            } else {
                text = std::fs::read_to_string(source)
                    .map_err(|e| anyhow::anyhow!("read resources file {source}: {e}"))?;
            }
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("decode resources: {e}"))?
        }
        None => resources_from_flags(&args)?,
    };
    vessel_runtime::verbs::update::update(&ctx.store, id, &resources)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        update: UpdateArgs,
    }

    fn flags(argv: &[&str]) -> serde_json::Value {
        use clap::Parser;
        let cli =
            Cli::try_parse_from(std::iter::once("update").chain(argv.iter().copied())).unwrap();
        serde_json::to_value(resources_from_flags(&cli.update).unwrap()).unwrap()
    }

    #[test]
    fn flags_make_a_partial_resources_object() {
        assert_eq!(
            flags(&["--pids-limit", "5", "c1"]),
            serde_json::json!({"pids": {"limit": 5}})
        );
        assert_eq!(
            flags(&[
                "--memory=256m",
                "--memory-swap",
                "-1",
                "--cpu-quota",
                "50000",
                "--cpuset-cpus",
                "0",
                "--blkio-weight",
                "300",
                "c1"
            ]),
            serde_json::json!({
                "memory": {"limit": 268435456, "swap": -1},
                "cpu": {"quota": 50000, "cpus": "0"},
                "blockIO": {"weight": 300}
            })
        );
        assert_eq!(flags(&["c1"]), serde_json::json!({}));
    }

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
