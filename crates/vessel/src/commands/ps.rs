//! `vessel ps [--format table|json] <id> [ps args...]` (runc ps.go).
//!
//! The workload's processes live in the guest; the host PIDs that stand for them are the
//! monitor's (and, later, the exec relays'). `json` prints those; `table` runs the host's `ps`
//! and keeps the header and those rows (runc does the same with the cgroup's PIDs).

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

/// Keeps the header and the rows of `output` whose PID column is in `pids`.
fn filter_table(output: &str, pids: &[i32]) -> anyhow::Result<String> {
    let mut lines = output.lines();
    let header = lines.next().unwrap_or_default();
    let column = header
        .split_whitespace()
        .position(|c| c == "PID")
        .ok_or_else(|| anyhow::anyhow!("couldn't find PID field in ps output"))?;
    let mut out = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(column)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Prints the host PIDs standing for the container's processes.
pub fn run(ctx: &Context, args: PsArgs) -> anyhow::Result<i32> {
    check_args("ps", &args.args, &[Arity::Min(1)])?;
    let record = load_in_state(ctx, &args.args[0], |s| {
        (s == Status::Stopped).then(|| "container not running".to_owned())
    })?;
    let pids = vec![record.monitor_pid];
    if args.format == Format::Json {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(0);
    }
    let ps_args: Vec<String> = if args.args.len() > 1 {
        args.args[1..].to_vec()
    } else {
        vec!["-ef".to_owned()]
    };
    let output = std::process::Command::new("ps").args(&ps_args).output()?;
    if !output.status.success() {
        anyhow::bail!(
            "ps {}: {}",
            ps_args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    print!(
        "{}",
        filter_table(&String::from_utf8_lossy(&output.stdout), &pids)?
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_header_and_matching_rows() {
        let out = "UID PID PPID CMD\nroot 1 0 init\nroot 42 1 vessel\nroot 420 1 x\n";
        assert_eq!(
            filter_table(out, &[42]).unwrap(),
            "UID PID PPID CMD\nroot 42 1 vessel\n"
        );
        assert!(filter_table("A B\n1 2\n", &[1]).is_err());
    }
}
