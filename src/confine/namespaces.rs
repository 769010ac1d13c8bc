//! Namespaces: joined by path or new, for every type the spec names.
//!
//! The pid namespace is special: `unshare(CLONE_NEWPID)` moves only the caller's future
//! children, so the shim enters it on a thread of its own just before it spawns the guest
//! ([`enter_pid_namespace_for_children`]) and the guest is PID 1 of it from its first
//! instruction. Every other type is entered by the guest itself while it is single-threaded
//! ([`enter`]).

use std::fs::File;
use std::os::fd::AsFd;

use nix::sched::{setns, unshare, CloneFlags};

use super::{Confinement, NamespaceKind, NamespacePlan};

fn clone_flag(kind: NamespaceKind) -> CloneFlags {
    match kind {
        NamespaceKind::Mount => CloneFlags::CLONE_NEWNS,
        NamespaceKind::Pid => CloneFlags::CLONE_NEWPID,
        NamespaceKind::Ipc => CloneFlags::CLONE_NEWIPC,
        NamespaceKind::Uts => CloneFlags::CLONE_NEWUTS,
        NamespaceKind::Network => CloneFlags::CLONE_NEWNET,
        NamespaceKind::Cgroup => CloneFlags::CLONE_NEWCGROUP,
    }
}

/// Joins or creates one namespace for the calling thread (and, for pid, its children).
fn join_or_create(ns: &NamespacePlan) -> Result<(), String> {
    let flag = clone_flag(ns.kind);
    match &ns.path {
        Some(path) => {
            let file = File::open(path)
                .map_err(|e| format!("open the {:?} namespace {}: {e}", ns.kind, path.display()))?;
            setns(file.as_fd(), flag)
                .map_err(|e| format!("join the {:?} namespace {}: {e}", ns.kind, path.display()))
        }
        None => unshare(flag).map_err(|e| format!("create a {:?} namespace: {e}", ns.kind)),
    }
}

/// In the shim, on a thread that exists only to spawn one guest: makes that thread's next
/// child start in the spec's pid namespace (new, or the one at the path).
pub fn enter_pid_namespace_for_children(ns: &NamespacePlan) -> Result<(), String> {
    join_or_create(ns)
}

/// In the guest, single-threaded, before the mounts: every namespace but pid (entered at
/// spawn) and mount (created by `guest::mounts`, which must also set its propagation), and
/// cgroup last, so that its root is the cgroup the shim placed the guest in.
pub fn enter(confinement: &Confinement) -> Result<(), String> {
    let early = confinement.namespaces.iter().filter(|n| {
        !matches!(
            n.kind,
            NamespaceKind::Pid | NamespaceKind::Mount | NamespaceKind::Cgroup
        )
    });
    for ns in early {
        join_or_create(ns)?;
    }
    Ok(())
}

/// The cgroup namespace, after the shim placed the guest in its cgroup.
pub fn enter_cgroup(confinement: &Confinement) -> Result<(), String> {
    match confinement
        .namespaces
        .iter()
        .find(|n| n.kind == NamespaceKind::Cgroup)
    {
        Some(ns) => join_or_create(ns),
        None => Ok(()),
    }
}

/// Hostname and domainname, inside the guest's own uts namespace (checked by `from_spec`).
pub fn set_names(confinement: &Confinement) -> Result<(), String> {
    if let Some(name) = &confinement.hostname {
        nix::unistd::sethostname(name).map_err(|e| format!("set the hostname {name:?}: {e}"))?;
    }
    if let Some(name) = &confinement.domainname {
        // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call.
        let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
        if rc != 0 {
            return Err(format!(
                "set the domainname {name:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
