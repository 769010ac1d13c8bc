//! The five capability sets, as a runc container's process holds them.
//!
//! runc sets the spec's sets and then `execve`s the container's binary, and the kernel's
//! execve rules change them once more. The guest never execs after confinement, so it sets
//! the sets that execve would have left (capabilities(7), "Transformation of capabilities
//! during execve()", for a binary without file capabilities):
//! * root (uid 0): permitted = effective = bounding | inheritable;
//! * any other uid: permitted = effective = ambient.
//!
//! Bounding and inheritable are the spec's; ambient keeps only what is also permitted and
//! inheritable, as the kernel allows. A capability name that this build does not know is
//! skipped with a warning, as runc does.

use std::collections::HashSet;
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};

use super::CapabilityPlan;

/// The sets the guest ends with, for a process running as `uid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilitySets {
    pub bounding: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
    pub permitted: CapsHashSet,
    pub effective: CapsHashSet,
}

fn parse(names: &[String]) -> CapsHashSet {
    names
        .iter()
        .filter_map(|name| match Capability::from_str(name) {
            Ok(cap) => Some(cap),
            Err(_) => {
                log::warn!("unknown capability {name} in the spec; skipped");
                None
            }
        })
        .collect()
}

/// What execve would leave of the spec's sets for `uid` (see the module doc).
pub fn after_exec(plan: &CapabilityPlan, uid: u32) -> CapabilitySets {
    let bounding = parse(&plan.bounding);
    let inheritable: CapsHashSet = parse(&plan.inheritable)
        .intersection(&bounding)
        .copied()
        .collect();
    let spec_permitted = parse(&plan.permitted);
    let ambient: CapsHashSet = parse(&plan.ambient)
        .into_iter()
        .filter(|c| spec_permitted.contains(c) && inheritable.contains(c))
        .collect();
    let permitted: CapsHashSet = if uid == 0 {
        bounding.union(&inheritable).copied().collect()
    } else {
        ambient.clone()
    };
    CapabilitySets {
        bounding,
        inheritable,
        ambient,
        effective: permitted.clone(),
        permitted,
    }
}

/// Drops what the bounding set must not hold. Needs CAP_SETPCAP: call it before the uid
/// changes.
pub fn limit_bounding(sets: &CapabilitySets) -> Result<(), String> {
    let current = caps::read(None, CapSet::Bounding).map_err(|e| format!("read bounding: {e}"))?;
    for cap in current.difference(&sets.bounding) {
        caps::drop(None, CapSet::Bounding, *cap)
            .map_err(|e| format!("drop {cap} from the bounding set: {e}"))?;
    }
    Ok(())
}

/// Sets inheritable, ambient, effective and permitted, after the uid change (which kept the
/// permitted set through PR_SET_KEEPCAPS and cleared the effective one).
pub fn apply(sets: &CapabilitySets) -> Result<(), String> {
    let set = |which: CapSet, value: &CapsHashSet| {
        caps::set(None, which, value).map_err(|e| format!("set the {which:?} capabilities: {e}"))
    };
    let permitted_now: HashSet<Capability> =
        caps::read(None, CapSet::Permitted).map_err(|e| format!("read permitted: {e}"))?;
    // Effective must hold CAP_SETPCAP while the inheritable set is raised.
    set(CapSet::Effective, &permitted_now)?;
    set(CapSet::Inheritable, &sets.inheritable)?;
    set(CapSet::Ambient, &sets.ambient)?;
    set(CapSet::Effective, &sets.effective)?;
    set(CapSet::Permitted, &sets.permitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn set(v: &[Capability]) -> CapsHashSet {
        v.iter().copied().collect()
    }

    #[test]
    fn root_keeps_bounding_and_others_keep_only_ambient() {
        let plan = CapabilityPlan {
            bounding: names(&["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]),
            effective: names(&["CAP_CHOWN", "CAP_KILL"]),
            permitted: names(&["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]),
            inheritable: names(&["CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"]),
            ambient: names(&["CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_NOT_A_CAP"]),
        };
        let root = after_exec(&plan, 0);
        let all_three = set(&[
            Capability::CAP_CHOWN,
            Capability::CAP_KILL,
            Capability::CAP_NET_BIND_SERVICE,
        ]);
        assert_eq!(root.permitted, all_three);
        assert_eq!(root.effective, all_three);
        // CAP_SYS_ADMIN is not in the bounding set, so it cannot be inheritable either.
        assert_eq!(root.inheritable, set(&[Capability::CAP_NET_BIND_SERVICE]));
        // CAP_KILL is not inheritable, so it cannot be ambient.
        assert_eq!(root.ambient, set(&[Capability::CAP_NET_BIND_SERVICE]));
        let user = after_exec(&plan, 1000);
        assert_eq!(user.permitted, set(&[Capability::CAP_NET_BIND_SERVICE]));
        assert_eq!(user.effective, user.permitted);
        assert_eq!(user.bounding, all_three);
        let bare = after_exec(&CapabilityPlan::default(), 1000);
        assert!(bare.permitted.is_empty() && bare.bounding.is_empty());
    }
}
