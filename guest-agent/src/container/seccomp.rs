//! OCI seccomp profiles (`linux.seccomp`) translated to BPF with seccompiler.
//!
//! seccompiler builds one filter with a single on-match action, while an OCI profile gives each
//! rule its own action. The profile is therefore compiled to a small stack of filters, which the
//! kernel runs together, taking the most severe result (`seccomp(2)`, "Filter return values":
//! kill > trap > errno > trace > log > allow):
//!
//! - one filter per distinct non-allow rule action A: matching rules return A, others allow;
//! - when the default action is not allow, one more: every rule of the profile (any action)
//!   returns allow, everything else the default action.
//!
//! A syscall hit by a rule thus gets that rule's action, and one hit by no rule the default.
//! As in runc (libseccomp): unknown syscall names are skipped; `errnoRet` defaults to `EPERM`;
//! conditions of one rule are ANDed, except when one argument index appears twice, where runc
//! adds each condition as its own rule (ORed); `SCMP_CMP_MASKED_EQ` compares
//! `(arg & value) == valueTwo`. Only native x86_64 system calls are allowed through: the filters
//! kill a process making a system call of another architecture.

use std::collections::BTreeMap;
use std::io;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::syscall_table;

/// Errors translating or installing a seccomp profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile uses an action Vessel cannot enforce.
    #[error("linux.seccomp: action {action} is not supported")]
    CheckAction {
        /// The action.
        action: String,
    },
    /// seccompiler refused a rule or filter.
    #[error("linux.seccomp: build filter for {what}")]
    BuildFilter {
        /// Which syscall or filter.
        what: String,
        /// The cause.
        #[source]
        source: seccompiler::BackendError,
    },
    /// The kernel refused a filter.
    #[error("install seccomp filter {index} of {count}")]
    InstallFilter {
        /// Index in the stack.
        index: usize,
        /// Filters in the stack.
        count: usize,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

const EPERM: u32 = libc::EPERM as u32;

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction, SeccompError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(EPERM)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(EPERM)),
        other => {
            return Err(SeccompError::CheckAction {
                action: other.to_string(),
            })
        }
    })
}

/// Rules per syscall number; `None` = matches unconditionally.
type Chains = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn add_rules(chains: &mut Chains, nr: i64, rules: Option<Vec<SeccompRule>>) {
    match (chains.get_mut(&nr), rules) {
        (Some(None), _) => {}
        (Some(slot), None) => *slot = None,
        (Some(Some(existing)), Some(mut more)) => existing.append(&mut more),
        (None, r) => {
            chains.insert(nr, r);
        }
    }
}

fn to_filter(
    chains: &Chains,
    mismatch: SeccompAction,
    on_match: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> = chains
        .iter()
        .map(|(nr, r)| (*nr, r.clone().unwrap_or_default()))
        .collect();
    let what = format!("action {on_match:?}");
    SeccompFilter::new(rules, mismatch, on_match, TargetArch::x86_64)
        .and_then(BpfProgram::try_from)
        .map_err(|source| SeccompError::BuildFilter { what, source })
}

/// Compiles a profile to the stack of BPF programs described in the module docs. An empty
/// result means nothing needs installing (everything allowed).
///
/// # Errors
/// [`SeccompError::CheckAction`] for `SCMP_ACT_NOTIFY`, [`SeccompError::BuildFilter`] for a
/// condition seccompiler refuses (argument index above 5).
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>, SeccompError> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut by_action: BTreeMap<u32, (SeccompAction, Chains)> = BTreeMap::new();
    let mut all = Chains::new();
    for sc in profile.syscalls().as_deref().unwrap_or(&[]) {
        let act = action(sc.action(), sc.errno_ret())?;
        let args = sc.args().as_deref().unwrap_or(&[]);
        let mut conds = Vec::new();
        for a in args {
            let op = match a.op() {
                LinuxSeccompOperator::ScmpCmpNe => SeccompCmpOp::Ne,
                LinuxSeccompOperator::ScmpCmpLt => SeccompCmpOp::Lt,
                LinuxSeccompOperator::ScmpCmpLe => SeccompCmpOp::Le,
                LinuxSeccompOperator::ScmpCmpEq => SeccompCmpOp::Eq,
                LinuxSeccompOperator::ScmpCmpGe => SeccompCmpOp::Ge,
                LinuxSeccompOperator::ScmpCmpGt => SeccompCmpOp::Gt,
                LinuxSeccompOperator::ScmpCmpMaskedEq => SeccompCmpOp::MaskedEq(a.value()),
            };
            let value = match a.op() {
                LinuxSeccompOperator::ScmpCmpMaskedEq => a.value_two().unwrap_or(0),
                _ => a.value(),
            };
            let index = u8::try_from(a.index()).unwrap_or(u8::MAX);
            let c = SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).map_err(
                |source| SeccompError::BuildFilter {
                    what: format!("{:?} argument {}", sc.names(), a.index()),
                    source,
                },
            )?;
            conds.push((a.index(), c));
        }
        let repeated = conds
            .iter()
            .enumerate()
            .any(|(i, (idx, _))| conds[..i].iter().any(|(j, _)| j == idx));
        let rules: Option<Vec<SeccompRule>> = if conds.is_empty() {
            None
        } else {
            let groups: Vec<Vec<SeccompCondition>> = if repeated {
                conds.into_iter().map(|(_, c)| vec![c]).collect()
            } else {
                vec![conds.into_iter().map(|(_, c)| c).collect()]
            };
            let rules = groups
                .into_iter()
                .map(|g| {
                    SeccompRule::new(g).map_err(|source| SeccompError::BuildFilter {
                        what: format!("{:?}", sc.names()),
                        source,
                    })
                })
                .collect::<Result<_, _>>()?;
            Some(rules)
        };
        for name in sc.names() {
            // Unknown names are skipped, as runc does for syscalls libseccomp does not know.
            let Some(nr) = syscall_table::number(name) else {
                continue;
            };
            add_rules(&mut all, nr, rules.clone());
            if act != SeccompAction::Allow {
                let entry = by_action
                    .entry(u32::from(act.clone()))
                    .or_insert_with(|| (act.clone(), Chains::new()));
                add_rules(&mut entry.1, nr, rules.clone());
            }
        }
    }
    let mut out = Vec::new();
    for (act, chains) in by_action.values() {
        out.push(to_filter(chains, SeccompAction::Allow, act.clone())?);
    }
    if default != SeccompAction::Allow {
        out.push(to_filter(&all, default, SeccompAction::Allow)?);
    }
    Ok(out)
}

/// Installs compiled filters on the calling thread with `seccomp(SECCOMP_SET_MODE_FILTER)`.
/// Does not set `no_new_privs` (runc sets it only for `noNewPrivileges`), so without it the
/// caller needs `CAP_SYS_ADMIN`.
///
/// # Errors
/// [`SeccompError::InstallFilter`].
pub fn install(filters: &[BpfProgram]) -> Result<(), SeccompError> {
    for (index, f) in filters.iter().enumerate() {
        let prog = libc::sock_fprog {
            len: f.len() as u16,
            filter: f.as_ptr().cast_mut().cast(),
        };
        // SAFETY: `prog` points at `f`'s instructions (seccompiler's `sock_filter` has the
        // kernel's layout), valid for the call; the kernel copies the program.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(SeccompError::InstallFilter {
                index,
                count: filters.len(),
                source: io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn allow_default_with_errno_rule_is_one_filter() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir","mkdirat","no_such_syscall"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
        );
        assert_eq!(compile(&p).unwrap().len(), 1);
    }

    #[test]
    fn errno_default_adds_the_default_filter() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
                {"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                {"names":["personality"],"action":"SCMP_ACT_ALLOW",
                 "args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"},
                         {"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                {"names":["clone"],"action":"SCMP_ACT_ALLOW",
                 "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
        );
        // errno(1) filter + default filter.
        assert_eq!(compile(&p).unwrap().len(), 2);
    }

    #[test]
    fn notify_is_refused() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert_eq!(
            compile(&p).unwrap_err().to_string(),
            "linux.seccomp: action SCMP_ACT_NOTIFY is not supported"
        );
    }

    #[test]
    fn bad_argument_index_names_the_syscall() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir"],"action":"SCMP_ACT_ERRNO",
                 "args":[{"index":7,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let e = compile(&p).unwrap_err().to_string();
        assert!(e.contains("mkdir") && e.contains("argument 7"), "{e}");
    }
}
