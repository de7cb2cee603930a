//! Argument normalisation before clap: go-style single-dash long flags (`-no-subreaper`,
//! `-bundle=x`, as go-runc emits for `restore`) become `--no-subreaper`, `--bundle=x`.
//!
//! Only names that are long flags of the command being parsed are rewritten, so short flag
//! clusters stay as they are. For `exec`, `kill` and `ps`, rewriting stops at the first
//! positional argument, as runc stops flag parsing there (`StopOnNthArg`), so `exec <id> sh -c`
//! keeps the command's own flags.

use std::collections::HashMap;
use std::ffi::OsString;

use clap::Command;

/// Long and short flags of one command level: whether each takes a value.
#[derive(Debug, Default)]
struct Flags {
    long: HashMap<String, bool>,
    short: HashMap<char, bool>,
}

fn flags_of(cmd: &Command) -> Flags {
    let mut flags = Flags::default();
    for arg in cmd.get_arguments() {
        // A flag whose value must be attached (`--systemd-cgroup=true`) never takes the next
        // argument.
        let takes_value = arg.get_action().takes_values() && !arg.is_require_equals_set();
        if let Some(long) = arg.get_long() {
            flags.long.insert(long.to_owned(), takes_value);
        }
        for alias in arg.get_all_aliases().unwrap_or_default() {
            flags.long.insert(alias.to_owned(), takes_value);
        }
        if let Some(short) = arg.get_short() {
            flags.short.insert(short, takes_value);
        }
    }
    flags
}

/// Commands whose flag parsing ends at the first positional argument.
const STOP_AT_FIRST_POSITIONAL: &[&str] = &["exec", "kill", "ps"];

/// Rewrites `args` (program name first) for clap; see the module documentation.
pub fn normalize(cmd: &Command, args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    out.extend(iter.next());
    let mut level = flags_of(cmd);
    let mut subcommand: Option<String> = None;
    let mut verbatim = false;
    while let Some(arg) = iter.next() {
        if verbatim {
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str().map(str::to_owned) else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            out.push(arg);
            verbatim = true;
            continue;
        }
        let single_dash_long = text.len() > 2 && text.starts_with('-') && !text.starts_with("--");
        let (name, has_value) = match text.trim_start_matches('-').split_once('=') {
            Some((n, _)) => (n.to_owned(), true),
            None => (text.trim_start_matches('-').to_owned(), false),
        };
        if text.starts_with("--") || (single_dash_long && level.long.contains_key(&name)) {
            let takes = level.long.get(&name).copied().unwrap_or(false);
            out.push(if single_dash_long {
                OsString::from(format!("-{text}"))
            } else {
                arg
            });
            if takes && !has_value {
                out.extend(iter.next());
            }
            continue;
        }
        if text.len() == 2 && text.starts_with('-') {
            let short = text.chars().nth(1).unwrap_or('-');
            out.push(arg);
            if level.short.get(&short).copied().unwrap_or(false) {
                out.extend(iter.next());
            }
            continue;
        }
        if text.starts_with('-') {
            out.push(arg);
            continue;
        }
        // A positional argument.
        out.push(arg);
        match &subcommand {
            None => {
                if let Some(sub) = cmd.find_subcommand(&text) {
                    level = flags_of(sub);
                    subcommand = Some(sub.get_name().to_owned());
                } else {
                    verbatim = true;
                }
            }
            Some(name) if STOP_AT_FIRST_POSITIONAL.contains(&name.as_str()) => verbatim = true,
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cli() -> Command {
        Command::new("vessel")
            .arg(Arg::new("root").long("root"))
            .arg(Arg::new("debug").long("debug").action(ArgAction::SetTrue))
            .subcommand(
                Command::new("restore")
                    .arg(Arg::new("bundle").long("bundle").short('b'))
                    .arg(
                        Arg::new("no-subreaper")
                            .long("no-subreaper")
                            .action(ArgAction::SetTrue),
                    )
                    .arg(Arg::new("id")),
            )
            .subcommand(
                Command::new("exec")
                    .arg(Arg::new("user").long("user").short('u'))
                    .arg(
                        Arg::new("tty")
                            .long("tty")
                            .short('t')
                            .action(ArgAction::SetTrue),
                    )
                    .arg(Arg::new("args").num_args(0..)),
            )
    }

    fn norm(args: &[&str]) -> Vec<String> {
        let args = args.iter().map(OsString::from).collect();
        normalize(&cli(), args)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn rewrites_single_dash_long_flags() {
        assert_eq!(
            norm(&[
                "v",
                "-root",
                "/r",
                "-debug",
                "restore",
                "-no-subreaper",
                "-bundle=/b",
                "id"
            ]),
            [
                "v",
                "--root",
                "/r",
                "--debug",
                "restore",
                "--no-subreaper",
                "--bundle=/b",
                "id"
            ]
        );
    }

    #[test]
    fn keeps_values_and_short_flags() {
        assert_eq!(
            norm(&["v", "--root", "-weird", "restore", "-b", "-bundle", "id"]),
            ["v", "--root", "-weird", "restore", "-b", "-bundle", "id"]
        );
    }

    #[test]
    fn exec_command_is_left_alone() {
        assert_eq!(
            norm(&["v", "exec", "-user", "1", "-t", "id", "sh", "-user", "-c", "x"]),
            ["v", "exec", "--user", "1", "-t", "id", "sh", "-user", "-c", "x"]
        );
    }
}
