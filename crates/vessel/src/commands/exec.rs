//! `vessel exec [flags] <id> <cmd> [args...]` and `exec -p process.json <id>` (runc exec.go).
//!
//! The process comes from `-p` or from the bundle's `process` with the flags applied; the
//! library forks a relay that runs it in the guest (`vessel_runtime::verbs::exec`). Any failure before
//! the process runs is `exec failed: ...` with exit 255, as in runc.

use std::path::PathBuf;

use clap::Args;
use vessel_runtime::verbs::exec::{ExecOptions, ProcessFlags};
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

/// Runs the process; returns its status in the foreground, 0 when detached.
pub fn run(ctx: &Context, args: ExecArgs) -> anyhow::Result<i32> {
    check_args("exec", &args.args, &[Arity::Min(1)])?;
    let failed = |error: anyhow::Error| ExitWith {
        code: 255,
        error: error.context("exec failed"),
    };
    let id = &args.args[0];
    let opts = (|| -> anyhow::Result<ExecOptions> {
        load_in_state(ctx, id, |s| refuse(s, args.ignore_paused))?;
        let process = match &args.process {
            Some(path) => vessel_runtime::verbs::exec::load_process_file(path)?,
            None => {
                if args.args.len() < 2 {
                    anyhow::bail!("args must not be empty");
                }
                let flags = ProcessFlags {
                    args: args.args[1..].to_vec(),
                    cwd: args.cwd.clone(),
                    env: args.env.clone(),
                    user: args.user.clone(),
                    additional_gids: args.additional_gids.clone(),
                    caps: args.cap.clone(),
                    no_new_privs: args.no_new_privs,
                    tty: args.tty,
                };
                vessel_runtime::verbs::exec::process_from_flags(&ctx.store, id, &flags)?
            }
        };
        Ok(ExecOptions {
            id: id.clone(),
            process,
            detach: args.detach,
            pid_file: args.pid_file.clone(),
            console_socket: args.console_socket.clone(),
        })
    })()
    .map_err(failed)?;
    vessel_runtime::verbs::exec::exec(&ctx.store, &opts)
        .map_err(|e| failed(e.into()))
        .map_err(anyhow::Error::from)
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
