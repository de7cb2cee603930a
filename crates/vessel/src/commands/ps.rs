//! `vessel ps [--format table|json] <id> [ps args...]` (runc ps.go).
//!
//! The workload's processes live in the guest. `json` prints the host PIDs that stand for them:
//! the monitor's and those of the live exec relays (docs/runc-compat.md). `table` shows the
//! guest's processes, from the agent, with a `PID` column (guest PIDs); ps args are ignored.

use clap::Args;
use vessel_runtime::Status;

use super::list::Format;
use super::{check_args, load_in_state, Arity, Context};

/// Arguments of `vessel ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value = "table")]
    format: Format,
    /// The container ID, then arguments for ps(1) (default `-ef`).
    #[arg(
        value_name = "container-id [ps args...]",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

/// Formats the guest's processes like `ps -ef`, with a `PID` column (guest PIDs).
fn format_table(list: &vessel_runtime::verbs::guest::ProcessList) -> String {
    let mut out = format!(
        "{:>8} {:>7} {:>7} {:>4} {:>8} {}\n",
        "UID", "PID", "PPID", "STAT", "TIME", "CMD"
    );
    for p in &list.processes {
        let secs = p.cpu_ticks / 100;
        let time = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
        out.push_str(&format!(
            "{:>8} {:>7} {:>7} {:>4} {:>8} {}\n",
            p.uid, p.pid, p.ppid, p.state, time, p.cmd
        ));
    }
    out
}

/// Prints the container's processes.
pub fn run(ctx: &Context, args: PsArgs) -> anyhow::Result<i32> {
    check_args("ps", &args.args, &[Arity::Min(1)])?;
    let id = &args.args[0];
    let record = load_in_state(ctx, id, |s| {
        (s == Status::Stopped).then(|| "container not running".to_owned())
    })?;
    if args.format == Format::Json {
        let mut pids = vessel_runtime::verbs::exec::relay_pids(&ctx.store, id)?;
        pids.push(record.monitor_pid);
        pids.sort_unstable();
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(0);
    }
    let list = vessel_runtime::verbs::guest::ps(&ctx.store, id)?;
    print!("{}", format_table(&list));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_pid_column() {
        let list = vessel_runtime::verbs::guest::ProcessList {
            pids: vec![1],
            processes: vec![vessel_runtime::verbs::guest::ProcessInfo {
                pid: 1,
                ppid: 0,
                uid: 0,
                state: "S".into(),
                start_ticks: 0,
                cpu_ticks: 6100,
                cmd: "sleep 600".into(),
            }],
        };
        let out = format_table(&list);
        let mut lines = out.lines();
        let header: Vec<_> = lines.next().unwrap().split_whitespace().collect();
        let row: Vec<_> = lines.next().unwrap().split_whitespace().collect();
        let col = header.iter().position(|c| *c == "PID").unwrap();
        assert_eq!(row[col], "1");
        assert_eq!(row[4], "00:01:01");
        assert!(out.contains("sleep 600"));
    }
}
