//! `vessel checkpoint` and `vessel restore`: not supported. Both fail, `--help` included, because
//! podman takes `checkpoint --help` exiting 0 as a sign of support (podman
//! pkg/checkpoint/crutils).

use clap::Args;

/// Any arguments; none are interpreted.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct CheckpointArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

/// Always fails with a clear message.
pub fn run(command: &str, _args: CheckpointArgs) -> anyhow::Result<i32> {
    anyhow::bail!(
        "{command} is not supported by vessel (microVM checkpoint/restore is not implemented)"
    )
}
