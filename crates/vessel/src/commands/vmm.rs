//! `vessel vmm --config <file>`: boot a microVM from a JSON `VmConfig` and wait for it to end
//! (a development tool for the VMM; `vessel_vmm::run_config_file`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use vessel_vmm::ExitReason;

/// Arguments of `vessel vmm`.
#[derive(Debug, Args)]
pub struct VmmArgs {
    /// JSON VmConfig file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

/// Runs the VM; exit 0 when the guest shut down, 1 for any other end (printed on stderr).
pub fn run(args: VmmArgs) -> anyhow::Result<i32> {
    let reason = vessel_vmm::run_config_file(&args.config)
        .with_context(|| format!("run vm from {}", args.config.display()))?;
    eprintln!("vm ended: {reason}");
    Ok(if matches!(reason, ExitReason::Shutdown(_)) {
        0
    } else {
        1
    })
}
