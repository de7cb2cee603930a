//! `vessel state <id>` (runc state.go): runc's JSON, 2-space indent, no trailing newline.

use std::io::Write;

use clap::Args;

use super::{check_args, Arity, Context};

/// Arguments of `vessel state`.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// The container ID (hidden from the help, whose usage line names it, as runc's does).
    #[arg(value_name = "container-id", hide = true)]
    args: Vec<String>,
}

/// Prints the container's state.
pub fn run(ctx: &Context, args: StateArgs) -> anyhow::Result<i32> {
    check_args("state", &args.args, &[Arity::Exact(1)])?;
    let record = ctx.store.load(&args.args[0])?;
    let mut out = std::io::stdout().lock();
    out.write_all(record.oci_state().to_json().as_bytes())?;
    out.flush()?;
    Ok(0)
}
