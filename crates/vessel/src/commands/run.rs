//! `vessel run [flags] <id>` (runc run.go): create, start, and in the foreground wait for the
//! container, forwarding signals, returning its status.

use clap::Args;
use vessel_runtime::verbs::run::RunOptions;

use super::create::CreateFlags;
use super::{check_args, Arity, Context};

/// Arguments of `vessel run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    flags: CreateFlags,
    /// Detach: return once the container has started.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Keep the container's state after it exits (foreground only).
    #[arg(long)]
    keep: bool,
    /// Do not become a child subreaper.
    #[arg(long)]
    no_subreaper: bool,
    /// The container ID (hidden from the help, whose usage line names it, as runc's does).
    #[arg(value_name = "container-id", hide = true)]
    args: Vec<String>,
}

/// Runs the container; returns its exit status in the foreground, 0 when detached.
pub fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<i32> {
    check_args("run", &args.args, &[Arity::Exact(1)])?;
    let id = &args.args[0];
    let create = args.flags.options(ctx, id, args.detach);
    if args.detach {
        vessel_runtime::verbs::run::create_and_start(&ctx.store, &create)?;
        return Ok(0);
    }
    let opts = RunOptions {
        create,
        keep: args.keep,
        no_subreaper: args.no_subreaper,
    };
    Ok(vessel_runtime::verbs::run::run(&ctx.store, &opts)?)
}
