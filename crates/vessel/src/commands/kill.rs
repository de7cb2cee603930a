//! `vessel kill [--all] <id> [signal]` (runc kill.go).

use clap::Args;

use super::{check_args, Arity, Context};

/// Arguments of `vessel kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Send the signal to every process of the container (obsolete in runc ≥1.2, still accepted).
    #[arg(short = 'a', long)]
    all: bool,
    /// The container ID, then the signal (default SIGTERM): a number or a name, any case, with or
    /// without SIG.
    #[arg(value_name = "container-id [signal]", allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Sends the signal.
pub fn run(ctx: &Context, args: KillArgs) -> anyhow::Result<i32> {
    check_args("kill", &args.args, &[Arity::Min(1), Arity::Max(2)])?;
    // As runc (kill.go): the container is looked up before the signal is parsed, so a missing
    // container is reported even when the signal is bad too.
    ctx.store.load(&args.args[0])?;
    let signal = match args.args.get(1) {
        Some(raw) => vessel_runtime::host::signal::parse(raw)?,
        None => libc::SIGTERM,
    };
    vessel_runtime::verbs::kill::kill(&ctx.store, &args.args[0], signal, args.all)?;
    Ok(0)
}
