//! `vessel resume <id>` (runc pause.go).

use clap::Args;

use super::{check_args, Arity, Context};

/// Arguments of `vessel resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The container ID (hidden from the help, whose usage line names it, as runc's does).
    #[arg(value_name = "container-id", hide = true)]
    args: Vec<String>,
}

/// Thaws the container.
pub fn run(ctx: &Context, args: ResumeArgs) -> anyhow::Result<i32> {
    check_args("resume", &args.args, &[Arity::Exact(1)])?;
    vessel_runtime::verbs::pause::resume(&ctx.store, &args.args[0])?;
    Ok(0)
}
