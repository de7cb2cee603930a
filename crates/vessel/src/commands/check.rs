//! `vessel check`: can this host run microVMs, and are the guest artefacts in place?

use clap::Args;
use vessel_vmm::host;

/// Arguments of `vessel check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Prints the host report; returns exit code 0 when guests can run, 1 otherwise.
pub fn run(args: CheckArgs) -> anyhow::Result<i32> {
    let report = host::probe();
    let artefacts = vessel_vmm::artefacts::locate();
    let ok = report.verdict.can_run_guests();
    if args.json {
        let value = serde_json::json!({
            "kvm": report.kvm_path,
            "backend": report.backend.map(|b| b.to_string()),
            "apiVersion": report.api_version,
            "cpuFlags": report.cpu_flags,
            "kernel": artefacts.kernel,
            "initramfs": artefacts.initramfs,
            "canRunGuests": ok,
            "verdict": report.verdict.to_string(),
            "fix": (!ok).then(|| report.verdict.fix()),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let show = |p: &Option<std::path::PathBuf>| match p {
            Some(p) => p.display().to_string(),
            None => "not found".to_owned(),
        };
        println!("kvm device:   {}", report.kvm_path.display());
        println!(
            "kvm backend:  {}",
            report.backend.map_or("none".to_owned(), |b| b.to_string())
        );
        if let Some(v) = report.api_version {
            println!("kvm api:      {v}");
        }
        println!("cpu flags:    {}", report.cpu_flags.join(" "));
        println!("guest kernel: {}", show(&artefacts.kernel));
        println!("initramfs:    {}", show(&artefacts.initramfs));
        println!("verdict:      {}", report.verdict);
        if !ok {
            println!("fix:          {}", report.verdict.fix());
        }
    }
    Ok(if ok { 0 } else { 1 })
}
