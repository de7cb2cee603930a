//! One module per subcommand; each turns parsed arguments into one library call.

pub mod check;
pub mod checkpoint;
pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod features;
pub mod kill;
pub mod list;
pub mod pause;
pub mod ps;
pub mod resume;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;
pub mod vmm;

use vessel_runtime::host::state::ContainerRecord;
use vessel_runtime::{StateStore, Status};

/// What every command gets from the global flags.
#[derive(Debug)]
pub struct Context {
    /// The state store at `--root`.
    pub store: StateStore,
    /// Whether `--root` was given (a missing explicit root is an error for `list`).
    pub root_explicit: bool,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// `--rootless`.
    pub rootless: String,
}

/// A wrong number of arguments (runc utils.go `checkArgs`): main prints `Incorrect Usage.` and
/// the command's help on stdout, then this message as the error.
#[derive(Debug)]
pub struct UsageError {
    /// The subcommand.
    pub command: &'static str,
    message: String,
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UsageError {}

/// An error that exits with a code other than 1 (`exec` failures exit 255).
#[derive(Debug)]
pub struct ExitWith {
    /// The exit status.
    pub code: i32,
    /// The error.
    pub error: anyhow::Error,
}

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for ExitWith {}

/// An argument-count rule of runc's `checkArgs`.
#[derive(Debug, Clone, Copy)]
pub enum Arity {
    /// Exactly n.
    Exact(usize),
    /// At least n.
    Min(usize),
    /// At most n.
    Max(usize),
}

/// Checks the positional arguments of `command` against `rules`, with runc's messages.
pub fn check_args(
    command: &'static str,
    args: &[String],
    rules: &[Arity],
) -> Result<(), UsageError> {
    let n = args.len();
    for rule in rules {
        let message = match *rule {
            Arity::Exact(e) if n != e => {
                format!("vessel: {command:?} requires exactly {e} argument(s)")
            }
            Arity::Min(m) if n < m => {
                format!("vessel: {command:?} requires a minimum of {m} argument(s)")
            }
            Arity::Max(m) if n > m => {
                format!("vessel: {command:?} requires a maximum of {m} argument(s)")
            }
            _ => continue,
        };
        return Err(UsageError { command, message });
    }
    Ok(())
}

/// Loads container `id` and fails with runc's text unless its live status is one of `allowed`;
/// `refuse` gives the message for a given status.
pub fn load_in_state(
    ctx: &Context,
    id: &str,
    refuse: impl Fn(Status) -> Option<String>,
) -> anyhow::Result<ContainerRecord> {
    let record = ctx.store.load(id)?;
    if let Some(message) = refuse(record.status()) {
        anyhow::bail!(message);
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arity_messages_match_runc() {
        let two = vec!["a".to_owned(), "b".to_owned()];
        let e = check_args("state", &two, &[Arity::Exact(1)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "vessel: \"state\" requires exactly 1 argument(s)"
        );
        let e = check_args("kill", &[], &[Arity::Min(1), Arity::Max(2)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "vessel: \"kill\" requires a minimum of 1 argument(s)"
        );
        assert!(check_args("kill", &two, &[Arity::Min(1), Arity::Max(2)]).is_ok());
    }
}
