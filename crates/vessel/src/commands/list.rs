//! `vessel list [--format table|json] [--quiet]` (runc list.go).

use clap::{Args, ValueEnum};

use super::{check_args, Arity, Context};

/// Output format of `list` and `ps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}

/// Arguments of `vessel list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value = "table")]
    format: Format,
    /// Print only the container IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
    #[arg(hide = true)]
    args: Vec<String>,
}

/// Prints the containers; `null` for none in JSON (runc prints a nil Go slice).
pub fn run(ctx: &Context, args: ListArgs) -> anyhow::Result<i32> {
    check_args("list", &args.args, &[Arity::Exact(0)])?;
    let listing = vessel_runtime::verbs::list::list(&ctx.store, !ctx.root_explicit)?;
    for (id, err) in &listing.failures {
        eprintln!("load container {id}: {err}");
    }
    let states = listing.states;
    if args.quiet {
        for s in &states {
            println!("{}", s.id);
        }
    } else if args.format == Format::Json {
        if states.is_empty() {
            println!("null");
        } else {
            println!("{}", serde_json::to_string(&states)?);
        }
    } else {
        print!("{}", vessel_runtime::verbs::list::table(&states));
    }
    Ok(0)
}
