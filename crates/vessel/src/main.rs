//! `vessel`: an OCI runtime with runc's command line that runs each container in a KVM microVM.
//!
//! This binary is thin: it parses arguments (clap), turns each subcommand into one library call
//! (`vessel-runtime`, `vessel-vmm`), prints the error chain and maps failures to exit codes.

mod commands;

use clap::{Parser, Subcommand};

/// Command line: global flags, then one subcommand (runc man/runc.8.md "GLOBAL OPTIONS").
#[derive(Debug, Parser)]
#[command(
    name = "vessel",
    version,
    about = "OCI runtime that runs every container in its own KVM microVM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report whether this host can run microVMs and which artefacts were found.
    Check(commands::check::CheckArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => commands::check::run(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("vessel: {err:#}");
            std::process::exit(1);
        }
    }
}
