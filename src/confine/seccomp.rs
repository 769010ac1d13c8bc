//! The spec's seccomp profile (`linux.seccomp`), through libseccomp, as runc applies it.
//!
//! A syscall this libseccomp does not know is skipped, and a rule whose action is the default
//! action adds nothing; runc does the same. Several conditions on one argument index mean
//! "any of them" (one rule each), as in runc and docker's default profile.

use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg};

use crate::error::{Error, Result};

/// What the shim checks before any guest exists: the profile uses only actions and features
/// this runtime implements.
pub fn check(profile: &LinuxSeccomp) -> Result<()> {
    let refuse = |what: String| {
        Err(Error::InvalidArgument(format!(
            "linux.seccomp {what}, which the wasm runtime does not support"
        )))
    };
    if profile.listener_path().is_some() {
        return refuse("names a listenerPath (SCMP_ACT_NOTIFY)".into());
    }
    let actions = std::iter::once(profile.default_action())
        .chain(profile.syscalls().iter().flatten().map(|s| s.action()));
    for action in actions {
        if action == LinuxSeccompAction::ScmpActNotify {
            return refuse("uses SCMP_ACT_NOTIFY".into());
        }
    }
    for arch in profile.architectures().iter().flatten() {
        let name = json_name(arch);
        if ScmpArch::from_str(&name).is_err() {
            return refuse(format!("names the architecture {name}"));
        }
    }
    Ok(())
}

/// Builds the filter and loads it into the calling process (all its threads: it has one).
pub fn load(profile: &LinuxSeccomp) -> Result<(), String> {
    let filter = build(profile).map_err(|e| format!("build the seccomp filter: {e}"))?;
    filter
        .load()
        .map_err(|e| format!("load the seccomp filter: {e}"))
}

fn build(profile: &LinuxSeccomp) -> Result<ScmpFilterContext, libseccomp::error::SeccompError> {
    let default = action(profile.default_action(), profile.default_errno_ret());
    let mut filter = ScmpFilterContext::new(default)?;
    // no_new_privs is the spec's decision, applied by `identity`, not a side effect of seccomp.
    filter.set_ctl_nnp(false)?;
    for arch in profile.architectures().iter().flatten() {
        let arch = ScmpArch::from_str(&json_name(arch))?;
        if !filter.is_arch_present(arch)? {
            filter.add_arch(arch)?;
        }
    }
    for flag in profile.flags().iter().flatten() {
        match json_name(flag).as_str() {
            "SECCOMP_FILTER_FLAG_LOG" => filter.set_ctl_log(true)?,
            "SECCOMP_FILTER_FLAG_TSYNC" => filter.set_ctl_tsync(true)?,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => filter.set_ctl_ssb(true)?,
            _ => &mut filter,
        };
    }
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret());
        if act == default {
            continue;
        }
        let groups = condition_groups(rule.args().as_deref().unwrap_or_default());
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            for conditions in &groups {
                filter.add_rule_conditional(act, syscall, conditions)?;
            }
        }
    }
    Ok(filter)
}

/// The OCI action as libseccomp's; errno-returning actions default to EPERM, as in runc.
fn action(action: LinuxSeccompAction, errno: Option<u32>) -> ScmpAction {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        // Refused by `check` before any guest exists.
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Errno(libc::ENOSYS),
    }
}

/// The rules one syscall entry stands for: all conditions in one rule, unless two share an
/// argument index, then one rule per condition.
fn condition_groups(args: &[LinuxSeccompArg]) -> Vec<Vec<ScmpArgCompare>> {
    let conditions: Vec<ScmpArgCompare> = args.iter().map(compare).collect();
    let mut indexes: Vec<usize> = args.iter().map(|a| a.index()).collect();
    indexes.sort_unstable();
    indexes.dedup();
    if indexes.len() == args.len() {
        vec![conditions]
    } else {
        conditions.into_iter().map(|c| vec![c]).collect()
    }
}

fn compare(arg: &LinuxSeccompArg) -> ScmpArgCompare {
    let op = match json_name(&arg.op()).as_str() {
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        // For a masked compare the spec's value is the mask and valueTwo the datum.
        "SCMP_CMP_MASKED_EQ" => {
            return ScmpArgCompare::new(
                arg.index() as u32,
                ScmpCompareOp::MaskedEqual(arg.value()),
                arg.value_two().unwrap_or(0),
            )
        }
        _ => ScmpCompareOp::Equal,
    };
    ScmpArgCompare::new(arg.index() as u32, op, arg.value())
}

/// The spec's own spelling of an enum value ("SCMP_ARCH_X86_64").
fn json_name(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_profile_becomes_a_filter_and_unsupported_parts_are_refused() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
                "syscalls":[{"names":["read","write","no_such_call"],"action":"SCMP_ACT_ALLOW"},
                            {"names":["personality"],"action":"SCMP_ACT_ALLOW",
                             "args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"},{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                            {"names":["clone"],"action":"SCMP_ACT_ALLOW",
                             "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
                            {"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        check(&p).unwrap();
        build(&p).unwrap();
        let notify = profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#);
        assert!(check(&notify).unwrap_err().to_string().contains("NOTIFY"));
        assert_eq!(
            condition_groups(&[]).len(),
            1,
            "an entry without args is one unconditional rule"
        );
    }
}
