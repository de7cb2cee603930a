//! The guest agent is reachable by the host alone (issue 16), through a real microVM: a process
//! inside the container, as root and as uid 1000, tries the agent's control and stdio ports
//! (1024, 1025) over vsock loopback (CID 1), the guest's own CID (3) and the host's CID (2).
//! Every attempt must fail without a byte of the agent's protocol, and the container and its
//! agent must go on serving the host afterwards (exec, ps, kill, delete).
//!
//! The attempts are made by the test probe's `vsock-connect` mode (`tests/guest-probe`, a static
//! binary that `make probe-initramfs` builds; `VESSEL_PROBE_BIN` names it in the lab), copied into
//! the BusyBox bundle. Needs hardware-backed KVM: natively it prints why it skips; `make
//! test-lab` runs it.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// The agent's ports (`vessel_protocol::CONTROL_PORT`, `STDIO_PORT`).
const AGENT_PORTS: [u32; 2] = [1024, 1025];
/// Loopback, the guest's own CID, the host.
const CIDS: [u32; 3] = [
    libc::VMADDR_CID_LOCAL,
    vessel_runtime::sandbox::microvm::GUEST_CID,
    libc::VMADDR_CID_HOST,
];

fn probe_bin() -> PathBuf {
    std::env::var_os("VESSEL_PROBE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/x86_64-unknown-linux-gnu/release/vessel-guest-probe")
        })
}

#[test]
fn lab_vsock_container_cannot_reach_the_agent() {
    if !can_run_guests("lab_vsock_container_cannot_reach_the_agent") {
        return;
    }
    assert_eq!(
        (vessel_protocol::CONTROL_PORT, vessel_protocol::STDIO_PORT),
        (AGENT_PORTS[0], AGENT_PORTS[1]),
        "the agent's ports moved: update AGENT_PORTS"
    );
    let probe = probe_bin();
    assert!(
        probe.is_file(),
        "{} is missing: run `make probe-initramfs`",
        probe.display()
    );
    let lab = Lab::new();
    let bundle = lab.bundle("b", "sleep 600");
    let inside = bundle.join("rootfs/vessel-probe");
    std::fs::copy(&probe, &inside).unwrap();
    let run = lab
        .cmd(&["run", "-d", "--bundle", bundle.to_str().unwrap(), "v1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(run.success(), "console: {}", lab.console("v1"));

    let script: String = CIDS
        .iter()
        .flat_map(|c| AGENT_PORTS.iter().map(move |p| (c, p)))
        .map(|(c, p)| format!("/vessel-probe vsock-connect {c} {p}; "))
        .collect();
    for user in ["0", "1000"] {
        let t0 = Instant::now();
        let out = lab
            .cmd(&["exec", "-u", user, "v1", "sh", "-c", &script])
            .output()
            .unwrap();
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "exec as {user}: {}\n{stdout}",
            text(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), CIDS.len() * AGENT_PORTS.len(), "{stdout}");
        for (line, (cid, port)) in lines.iter().zip(
            CIDS.iter()
                .flat_map(|c| AGENT_PORTS.iter().map(move |p| (*c, *p))),
        ) {
            let head = format!("VSOCK cid={cid} port={port} refused ");
            assert!(
                line.starts_with(&head),
                "as uid {user}, a container process reached the agent's port {port} at CID \
                 {cid}: {line}\nall attempts:\n{stdout}"
            );
            assert!(!line.contains("VSSL"), "{line}");
        }
        eprintln!(
            "as uid {user}: {} attempts refused in {:?}:\n{stdout}",
            lines.len(),
            t0.elapsed()
        );
    }

    // The agent still serves the host: exec, ps, then kill and delete as usual.
    let out = lab
        .cmd(&["exec", "v1", "sh", "-c", "echo alive"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "alive\n", "{}", text(&out.stderr));
    let table = lab.cmd(&["ps", "v1"]).output().unwrap();
    assert!(
        text(&table.stdout).contains("sleep 600"),
        "{}",
        text(&table.stdout)
    );
    assert_eq!(lab.state("v1")["status"], "running");
    assert!(lab.cmd(&["kill", "v1", "KILL"]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.state("v1")["status"] != "stopped" {
        assert!(Instant::now() < deadline, "container did not stop");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(lab.cmd(&["delete", "v1"]).status().unwrap().success());
}
