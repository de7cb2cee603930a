//! `vessel exec [flags] <id> <cmd> [args...]` and `exec -p process.json <id>` (runc exec.go).
//!
//! Parsing and runc's state errors are complete; running the process needs the guest agent
//! (issue 7), so after the checks it fails with `exec failed: ...` and exit 255, as runc does for
//! any failure before the process runs.

use std::path::PathBuf;

use clap::Args;
use vessel_runtime::Status;

use super::{check_args, load_in_state, Arity, Context, ExitWith};

/// Arguments of `vessel exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Unix socket that receives the pty master (with --tty).
    #[arg(long, value_name = "PATH")]
    console_socket: Option<PathBuf>,
    /// Unix socket that receives a pidfd of the process.
    #[arg(long, value_name = "PATH")]
    pidfd_socket: Option<PathBuf>,
    /// Working directory of the process.
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// Environment variable, `NAME=value` (repeat).
    #[arg(short = 'e', long, value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// User, `uid[:gid]`.
    #[arg(short = 'u', long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// Additional group (repeat).
    #[arg(short = 'g', long, value_name = "GID")]
    additional_gids: Vec<u32>,
    /// A process.json (a full OCI `process`); the other process flags are then ignored.
    #[arg(short = 'p', long, value_name = "FILE")]
    process: Option<PathBuf>,
    /// Detach: return once the process has started.
    #[arg(short = 'd', long)]
    detach: bool,
    /// File to write the process's PID to.
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,
    /// SELinux process label (accepted).
    #[arg(long, value_name = "LABEL")]
    process_label: Option<String>,
    /// AppArmor profile (accepted).
    #[arg(long, value_name = "PROFILE")]
    apparmor: Option<String>,
    /// Set no_new_privs.
    #[arg(long)]
    no_new_privs: bool,
    /// Capability to add (repeat).
    #[arg(short = 'c', long, value_name = "CAP")]
    cap: Vec<String>,
    /// Pass this many extra fds (3..3+N-1) to the process.
    #[arg(long, value_name = "N", default_value_t = 0)]
    preserve_fds: u32,
    /// Cgroup to join, `[ctrl[,ctrl]:]path` (repeat).
    #[arg(long, value_name = "PATH")]
    cgroup: Vec<String>,
    /// Allow exec in a paused container.
    #[arg(long)]
    ignore_paused: bool,
    /// The container ID, then the command and its arguments.
    #[arg(
        value_name = "container-id [command...]",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

/// runc's exec state errors (runc exec.go `execProcess`).
fn refuse(status: Status, ignore_paused: bool) -> Option<String> {
    match status {
        Status::Stopped => Some("cannot exec in a stopped container".into()),
        Status::Paused if !ignore_paused => {
            Some("cannot exec in a paused container (use --ignore-paused to override)".into())
        }
        _ => None,
    }
}

/// Checks the request; see the module documentation for what is missing.
pub fn run(ctx: &Context, args: ExecArgs) -> anyhow::Result<i32> {
    check_args("exec", &args.args, &[Arity::Min(1)])?;
    let failed = |error: anyhow::Error| ExitWith {
        code: 255,
        error: error.context("exec failed"),
    };
    let checks = || -> anyhow::Result<()> {
        load_in_state(ctx, &args.args[0], |s| refuse(s, args.ignore_paused))?;
        if args.process.is_none() && args.args.len() < 2 {
            anyhow::bail!("args must not be empty");
        }
        anyhow::bail!("exec in the guest is not supported yet (needs the agent's Exec request)")
    };
    checks().map_err(failed)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_errors_match_runc() {
        assert_eq!(
            refuse(Status::Stopped, true).unwrap(),
            "cannot exec in a stopped container"
        );
        assert!(refuse(Status::Paused, false)
            .unwrap()
            .contains("--ignore-paused"));
        assert!(refuse(Status::Paused, true).is_none());
        assert!(refuse(Status::Running, false).is_none());
        assert!(refuse(Status::Created, false).is_none());
    }
}
