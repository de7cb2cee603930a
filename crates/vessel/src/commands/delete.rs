//! `vessel delete [--force] <id>` (runc delete.go).

use clap::Args;

use super::{check_args, Arity, Context};

/// Arguments of `vessel delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kill the container with SIGKILL first if it is running or paused; a missing container is
    /// not an error.
    #[arg(short = 'f', long)]
    force: bool,
    /// The container ID (hidden from the help, whose usage line names it, as runc's does).
    #[arg(value_name = "container-id", hide = true)]
    args: Vec<String>,
}

/// Deletes the container.
pub fn run(ctx: &Context, args: DeleteArgs) -> anyhow::Result<i32> {
    check_args("delete", &args.args, &[Arity::Exact(1)])?;
    vessel_runtime::verbs::delete::delete(&ctx.store, &args.args[0], args.force)?;
    Ok(0)
}
