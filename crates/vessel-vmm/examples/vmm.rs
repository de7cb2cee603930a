//! Debug entry point until `vessel vmm --config <file>` exists: boots the VM described by a JSON
//! `VmConfig` and prints the exit reason. Exit status 0 only for a clean guest shutdown.
//!
//! Usage: `cargo run -p vessel-vmm --example vmm -- vm.json`

use std::path::PathBuf;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("usage: vmm <vm.json>"))?;
    let t0 = Instant::now();
    let reason = vessel_vmm::run_config_file(&path)?;
    eprintln!("vmm: {reason} after {:?}", t0.elapsed());
    std::process::exit(if reason.is_clean_shutdown() { 0 } else { 1 });
}
