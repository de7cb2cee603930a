//! `vessel pause <id>` (runc pause.go).

use clap::Args;

use super::{check_args, Arity, Context};

/// Arguments of `vessel pause`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The container ID (hidden from the help, whose usage line names it, as runc's does).
    #[arg(value_name = "container-id", hide = true)]
    args: Vec<String>,
}

/// Freezes the container.
pub fn run(ctx: &Context, args: PauseArgs) -> anyhow::Result<i32> {
    check_args("pause", &args.args, &[Arity::Exact(1)])?;
    vessel_runtime::verbs::pause::pause(&ctx.store, &args.args[0])?;
    Ok(0)
}
