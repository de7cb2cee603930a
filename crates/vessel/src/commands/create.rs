//! `vessel create [flags] <id>` (runc create.go).

use std::path::PathBuf;

use clap::Args;
use vessel_runtime::verbs::create::{self, CreateOptions};

use super::{check_args, Arity, Context};

/// Flags shared by `create` and `run` (runc create.go, run.go).
#[derive(Debug, Args)]
pub struct CreateFlags {
    /// Path to the bundle directory (default: the current directory).
    #[arg(short = 'b', long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master when process.terminal is set.
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Unix socket that receives a pidfd of the init (accepted; not sent yet).
    #[arg(long, value_name = "PATH")]
    pub pidfd_socket: Option<PathBuf>,
    /// File to write the pid-file process's PID to.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Do not use pivot_root (accepted; the guest agent decides).
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a new session keyring (accepted; the guest agent decides).
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many extra fds (3..3+N-1) to the container.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
}

impl CreateFlags {
    /// The library options for container `id`.
    pub fn options(&self, ctx: &Context, id: &str, detach: bool) -> CreateOptions {
        CreateOptions {
            id: id.to_owned(),
            bundle: self.bundle.clone(),
            pid_file: self.pid_file.clone(),
            console_socket: self.console_socket.clone(),
            detach,
            systemd_cgroup: ctx.systemd_cgroup,
            rootless: ctx.rootless.clone(),
            terminal_size: None,
        }
    }
}

/// Arguments of `vessel create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    flags: CreateFlags,
    /// The container ID (hidden from the help, whose usage line names it, as runc's does).
    #[arg(value_name = "container-id", hide = true)]
    args: Vec<String>,
}

/// Creates the container; prints nothing on success (stdio belongs to the container).
pub fn run(ctx: &Context, args: CreateArgs) -> anyhow::Result<i32> {
    check_args("create", &args.args, &[Arity::Exact(1)])?;
    let opts = args.flags.options(ctx, &args.args[0], true);
    create::create(&ctx.store, &opts)?;
    Ok(0)
}
