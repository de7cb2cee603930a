//! `vessel features` (runc features.go): the features document, 4-space indented.

use clap::Args;

use super::{check_args, Arity, Context};

/// Arguments of `vessel features` (none).
#[derive(Debug, Args)]
pub struct FeaturesArgs {
    #[arg(hide = true)]
    args: Vec<String>,
}

/// Prints the features document.
pub fn run(_ctx: &Context, args: FeaturesArgs) -> anyhow::Result<i32> {
    check_args("features", &args.args, &[Arity::Exact(0)])?;
    println!("{}", vessel_runtime::verbs::features::to_json());
    Ok(0)
}
