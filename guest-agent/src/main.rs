//! `vessel-agent`: PID 1 inside every Vessel microVM.
//!
//! Modes:
//! - PID 1 (the guest's `/init`): mount the guest's file systems, bring up `lo`, serve the
//!   control port (vsock 1024) and the stdio port (vsock 1025), power off on `Shutdown`.
//! - `vessel-agent serve --control SOCK --stdio SOCK [--cgroup-root DIR] [--exit-when-empty]`:
//!   the same service on Unix sockets, for native runs and tests (as a child subreaper); with
//!   `--exit-when-empty` it exits 0 once a `Delete` leaves no container, as the guest's init
//!   powers off then.
//! - `vessel-agent __setup`: the clean single-threaded setup process (internal).

mod container;
mod init;
mod netdev;
mod network;
mod reaper;
mod server;
mod service;
mod stdio;
mod tty;

use std::path::PathBuf;
use std::sync::Arc;

use vessel_protocol::{Hello, CONTROL_PORT, PROTOCOL_VERSION, STDIO_PORT};

use crate::server::Listener;
use crate::service::{Service, ServiceConfig};

/// Logs to stderr (the guest's console).
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        eprintln!("vessel-agent: {}: {}", r.level(), r.args());
    }
    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

fn hello() -> Hello {
    Hello {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        protocol_version: PROTOCOL_VERSION,
        boot_to_ready_us: init::boot_time_us(),
        kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

fn run_init() -> ! {
    if let Err(e) = init::init_system() {
        log::error!("{}", vessel_error::chain(&e));
        init::power_off();
    }
    let listeners =
        Listener::vsock(CONTROL_PORT).and_then(|c| Ok((c, Listener::vsock(STDIO_PORT)?)));
    let (control, stdio) = match listeners {
        Ok(l) => l,
        Err(e) => {
            log::error!("listen on vsock: {e}");
            init::power_off();
        }
    };
    let cfg = ServiceConfig {
        exe: PathBuf::from("/proc/self/exe"),
        cgroup_root: Some(PathBuf::from("/sys/fs/cgroup/vessel")),
        hello: hello(),
        shutdown_when_empty: true,
    };
    let service = Arc::new(Service::new(cfg, reaper::Reaper::start()));
    server::serve(service, control, stdio, || init::power_off())
}

fn run_serve(args: &[String]) -> anyhow_free::Result {
    let mut control = None;
    let mut stdio = None;
    let mut cgroup_root = None;
    let mut exit_when_empty = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--exit-when-empty" {
            exit_when_empty = true;
            continue;
        }
        let v = it.next().cloned();
        match a.as_str() {
            "--control" => control = v,
            "--stdio" => stdio = v,
            "--cgroup-root" => cgroup_root = v.map(PathBuf::from),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let (Some(control), Some(stdio)) = (control, stdio) else {
        return Err(
            "usage: vessel-agent serve --control SOCK --stdio SOCK [--cgroup-root DIR] [--exit-when-empty]".into(),
        );
    };
    // Orphans of containers without their own PID namespace come back to us, as to PID 1.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let control =
        Listener::unix(control.as_ref()).map_err(|e| format!("listen on {control}: {e}"))?;
    let stdio = Listener::unix(stdio.as_ref()).map_err(|e| format!("listen on {stdio}: {e}"))?;
    if let Some(root) = &cgroup_root {
        std::fs::create_dir_all(root).map_err(|e| format!("create {}: {e}", root.display()))?;
    }
    let cfg = ServiceConfig {
        exe: PathBuf::from("/proc/self/exe"),
        cgroup_root,
        hello: hello(),
        shutdown_when_empty: exit_when_empty,
    };
    let service = Arc::new(Service::new(cfg, reaper::Reaper::start()));
    server::serve(service, control, stdio, || std::process::exit(0))
}

/// Result type of the tiny CLI (no anyhow in the static agent).
mod anyhow_free {
    /// Ok or a message.
    pub type Result = std::result::Result<(), String>;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__setup") {
        container::setup::main();
    }
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    if std::process::id() == 1 {
        run_init();
    }
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            if let Err(e) = run_serve(&args[2..]) {
                eprintln!("vessel-agent: {e}");
                std::process::exit(1);
            }
        }
        Some("--version") => println!("vessel-agent {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!("usage: vessel-agent serve --control SOCK --stdio SOCK [--cgroup-root DIR] [--exit-when-empty] (as PID 1 it runs as the guest's init)");
            std::process::exit(2);
        }
    }
}
