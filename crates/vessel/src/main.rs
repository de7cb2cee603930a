//! `vessel`: an OCI runtime with runc's command line that runs each container in a KVM microVM.
//!
//! This binary is thin: it normalises and parses arguments (clap), turns each subcommand into one
//! library call (`vessel-runtime`, `vessel-vmm`), logs the error chain to `--log` and maps
//! failures to runc's exit codes.

mod argv;
mod commands;
mod logging;

use std::path::PathBuf;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};

use commands::{Context, ExitWith, UsageError};

/// Command line: global flags, then one subcommand (runc man/runc.8.md "GLOBAL OPTIONS").
#[derive(Debug, Parser)]
#[command(
    name = "vessel",
    disable_version_flag = true,
    about = "OCI runtime that runs every container in its own KVM microVM"
)]
struct Cli {
    /// Root directory for container state (should be on tmpfs); the default is
    /// `$XDG_RUNTIME_DIR/vessel` when not root.
    #[arg(long, value_name = "PATH", default_value_os_t = default_root())]
    root: PathBuf,
    /// Log file to write Vessel's logs to, appended to and never truncated [default: stderr].
    #[arg(long, value_name = "PATH")]
    log: Option<PathBuf>,
    /// Log format: text or json (any other value is refused).
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: String,
    /// Enable debug logging.
    #[arg(long)]
    debug: bool,
    /// Use the systemd cgroup driver: `linux.cgroupsPath` must then be `slice:prefix:name`, e.g.
    /// `system.slice:vessel:434234` (recorded at create for later commands).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "false", action = ArgAction::Set)]
    systemd_cgroup: bool,
    /// Rootless mode: true, false or auto (recorded at create for later commands).
    #[arg(long, value_name = "VALUE", default_value = "auto")]
    rootless: String,
    /// Accepted for compatibility with older callers and ignored (runc ≥1.2 ignores it).
    #[arg(long, value_name = "PATH", hide = true)]
    criu: Option<String>,
    /// Print the version.
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a container (runc create).
    #[command(override_usage = "vessel create [command options] <container-id>")]
    Create(commands::create::CreateArgs),
    /// Start a created container.
    #[command(override_usage = "vessel start <container-id>")]
    Start(commands::start::StartArgs),
    /// Create and run a container.
    #[command(override_usage = "vessel run [command options] <container-id>")]
    Run(commands::run::RunArgs),
    /// Print the state of a container as JSON.
    #[command(override_usage = "vessel state <container-id>")]
    State(commands::state::StateArgs),
    /// Send a signal to a container's init.
    #[command(override_usage = "vessel kill [command options] <container-id> [signal]")]
    Kill(commands::kill::KillArgs),
    /// Delete a container and its state.
    #[command(override_usage = "vessel delete [command options] <container-id>")]
    Delete(commands::delete::DeleteArgs),
    /// List containers.
    List(commands::list::ListArgs),
    /// Write a starter config.json.
    Spec(commands::spec::SpecArgs),
    /// Print the features this runtime supports, as JSON.
    Features(commands::features::FeaturesArgs),
    /// Run a new process in a container.
    #[command(
        override_usage = "vessel exec [command options] <container-id> <command> [command options]  || -p process.json <container-id>"
    )]
    Exec(commands::exec::ExecArgs),
    /// List the processes of a container.
    #[command(override_usage = "vessel ps [command options] <container-id> [ps options]")]
    Ps(commands::ps::PsArgs),
    /// Freeze a container.
    #[command(override_usage = "vessel pause <container-id>")]
    Pause(commands::pause::PauseArgs),
    /// Thaw a paused container.
    #[command(override_usage = "vessel resume <container-id>")]
    Resume(commands::resume::ResumeArgs),
    /// Print container events and statistics.
    #[command(override_usage = "vessel events [command options] <container-id>")]
    Events(commands::events::EventsArgs),
    /// Update a container's resource limits.
    #[command(override_usage = "vessel update [command options] <container-id>")]
    Update(commands::update::UpdateArgs),
    /// Checkpoint a container (not supported).
    Checkpoint(commands::checkpoint::CheckpointArgs),
    /// Restore a container from a checkpoint (not supported).
    Restore(commands::checkpoint::CheckpointArgs),
    /// Report whether this host can run microVMs and which artefacts were found.
    Check(commands::check::CheckArgs),
    /// Boot a microVM from a JSON VmConfig file and wait for it (development tool).
    #[command(hide = true)]
    Vmm(commands::vmm::VmmArgs),
}

/// The default `--root`: `/run/vessel`, or `$XDG_RUNTIME_DIR/vessel` when not root (runc main.go).
fn default_root() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(xdg) if !nix::unistd::geteuid().is_root() && !xdg.is_empty() => {
            PathBuf::from(xdg).join("vessel")
        }
        _ => PathBuf::from("/run/vessel"),
    }
}

fn print_version() {
    println!("vessel version {}", env!("CARGO_PKG_VERSION"));
    println!("spec: {}", vessel_runtime::verbs::spec::OCI_VERSION);
}

/// Runs the subcommand; `root_explicit` says whether `--root` was given (a missing default root
/// lists as empty, a missing explicit one is an error, as runc list.go).
fn dispatch(cli: Cli, root_explicit: bool) -> anyhow::Result<i32> {
    if cli.root == std::path::Path::new("/") {
        anyhow::bail!("Option --root argument should not be set to /")
    }
    let root = std::path::absolute(&cli.root)?;
    let ctx = Context {
        store: vessel_runtime::StateStore::new(root),
        root_explicit,
        systemd_cgroup: cli.systemd_cgroup,
        rootless: cli.rootless,
    };
    let Some(command) = cli.command else {
        let mut cmd = Cli::command();
        cmd.print_help()?;
        return Ok(0);
    };
    match command {
        Command::Create(a) => commands::create::run(&ctx, a),
        Command::Start(a) => commands::start::run(&ctx, a),
        Command::Run(a) => commands::run::run(&ctx, a),
        Command::State(a) => commands::state::run(&ctx, a),
        Command::Kill(a) => commands::kill::run(&ctx, a),
        Command::Delete(a) => commands::delete::run(&ctx, a),
        Command::List(a) => commands::list::run(&ctx, a),
        Command::Spec(a) => commands::spec::run(&ctx, a),
        Command::Features(a) => commands::features::run(&ctx, a),
        Command::Exec(a) => commands::exec::run(&ctx, a),
        Command::Ps(a) => commands::ps::run(&ctx, a),
        Command::Pause(a) => commands::pause::run(&ctx, a),
        Command::Resume(a) => commands::resume::run(&ctx, a),
        Command::Events(a) => commands::events::run(&ctx, a),
        Command::Update(a) => commands::update::run(&ctx, a),
        Command::Checkpoint(a) => commands::checkpoint::run("checkpoint", a),
        Command::Restore(a) => commands::checkpoint::run("restore", a),
        Command::Check(a) => commands::check::run(a),
        Command::Vmm(a) => commands::vmm::run(a),
    }
}

/// Prints runc's `Incorrect Usage.` and the subcommand's help on stdout.
fn print_usage(command: &str) {
    println!("Incorrect Usage.\n");
    let mut cmd = Cli::command();
    cmd.build();
    if let Some(sub) = cmd.find_subcommand_mut(command) {
        let _ = sub.print_help();
    }
}

/// Logs a panic (with the thread's name) to Vessel's log before the default hook prints it:
/// the monitor's stderr is `/dev/null`, and release builds then abort, ending that container's
/// monitor and its VM (docs/decisions/0008-panic-aborts-the-monitor.md).
fn log_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        log::error!(
            "panic in thread {}: {info}",
            thread.name().unwrap_or("<unnamed>")
        );
        default(info);
    }));
}

fn main() {
    let args = argv::normalize(&Cli::command(), std::env::args_os().collect());
    let parsed = Cli::command().try_get_matches_from(args).and_then(|m| {
        let root_explicit = m.value_source("root") == Some(clap::parser::ValueSource::CommandLine);
        Cli::from_arg_matches(&m).map(|cli| (cli, root_explicit))
    });
    let (cli, root_explicit) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if cli.version {
        print_version();
        std::process::exit(0);
    }
    let log_is_stderr = match logging::init(cli.log.as_deref(), &cli.log_format, cli.debug) {
        Ok(to_stderr) => to_stderr,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(1);
        }
    };
    log_panics();
    match dispatch(cli, root_explicit) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            if let Some(usage) = err.downcast_ref::<UsageError>() {
                print_usage(usage.command);
            }
            let code = err.downcast_ref::<ExitWith>().map_or(1, |e| e.code);
            let message = format!("{err:#}");
            log::error!("{message}");
            if !log_is_stderr {
                eprintln!("{message}");
            }
            // A create stopped by SIGHUP, SIGINT or SIGTERM during its hooks has cleaned up;
            // it now dies of that signal, as a process that did not catch it would.
            let interrupted = err
                .downcast_ref::<vessel_runtime::verbs::create::CreateError>()
                .and_then(|e| e.interrupted())
                .or_else(|| {
                    err.downcast_ref::<vessel_runtime::verbs::run::RunError>()
                        .and_then(|e| e.interrupted())
                });
            if let Some(signal) = interrupted {
                vessel_runtime::host::signal::die_of(signal);
            }
            std::process::exit(code);
        }
    }
}
