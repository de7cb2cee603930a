//! `vessel start <id>` (runc start.go).

use clap::Args;

use super::{check_args, Arity, Context};

/// Arguments of `vessel start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The container ID (hidden from the help, whose usage line names it, as runc's does).
    #[arg(value_name = "container-id", hide = true)]
    args: Vec<String>,
}

/// Releases a created container.
pub fn run(ctx: &Context, args: StartArgs) -> anyhow::Result<i32> {
    check_args("start", &args.args, &[Arity::Exact(1)])?;
    vessel_runtime::verbs::start::start(&ctx.store, &args.args[0])?;
    Ok(0)
}
