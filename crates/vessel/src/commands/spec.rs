//! `vessel spec [--bundle DIR] [--rootless]` (runc spec.go).

use std::path::PathBuf;

use clap::Args;

use super::{check_args, Arity, Context};

/// Arguments of `vessel spec`.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Bundle directory to write config.json into (default: the current directory).
    #[arg(short = 'b', long, value_name = "DIR", default_value = ".")]
    bundle: PathBuf,
    /// Write a spec for a rootless container.
    #[arg(long)]
    rootless: bool,
    #[arg(hide = true)]
    args: Vec<String>,
}

/// Writes the starter config.json.
pub fn run(_ctx: &Context, args: SpecArgs) -> anyhow::Result<i32> {
    check_args("spec", &args.args, &[Arity::Exact(0)])?;
    vessel_runtime::verbs::spec::write_spec(&args.bundle, args.rootless)?;
    Ok(0)
}
