//! Debug entry point until `vessel vmm --config <file>` exists: boots the VM described by a JSON
//! `VmConfig` and prints the exit reason. Exit status 0 only for a clean guest shutdown.
//!
//! Usage: `cargo run -p vessel-vmm --example vmm -- vm.json`; with `VMM_LOG=debug` (or `info`,
//! `trace`) the VMM's log goes to stderr with milliseconds since start (`vm set up in ...`).

use std::path::PathBuf;
use std::time::Instant;

/// Minimal stderr logger: `<ms since start> <level> <message>`.
struct StderrLog(Instant);

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        let ms = self.0.elapsed().as_secs_f64() * 1000.0;
        eprintln!("{ms:9.3} {} {}", r.level(), r.args());
    }
    fn flush(&self) {}
}

fn main() -> anyhow::Result<()> {
    if let Some(level) = std::env::var("VMM_LOG").ok().and_then(|l| l.parse().ok()) {
        let logger = Box::leak(Box::new(StderrLog(Instant::now())));
        if log::set_logger(logger).is_ok() {
            log::set_max_level(level);
        }
    }
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("usage: vmm <vm.json>"))?;
    let t0 = Instant::now();
    let reason = vessel_vmm::run_config_file(&path)?;
    eprintln!("vmm: {reason} after {:?}", t0.elapsed());
    std::process::exit(if reason.is_clean_shutdown() { 0 } else { 1 });
}
