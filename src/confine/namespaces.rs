//! Namespaces: joined by path or new, for every type the spec names.
//!
//! The pid namespace is special: `unshare(CLONE_NEWPID)` moves only the caller's future
//! children, so the shim enters it on a thread of its own just before it spawns the guest
//! ([`enter_pid_namespace_for_children`]) and the guest is PID 1 of it from its first
//! instruction. Every other type is entered by the guest itself while it is single-threaded
//! ([`enter`]). A new pid namespace therefore belongs to the host's user namespace even when
//! the guest makes a user namespace of its own (runc makes it inside); the guest does not mount
//! a /proc, where the difference would show.

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
        NamespaceKind::User => CloneFlags::CLONE_NEWUSER,
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

/// In the guest, single-threaded, before the mounts, in runc's order: a user namespace given
/// by path (the others given by path may belong to it, and joining them needs its
/// privileges), the other namespaces given by path (joined while the process still holds the
/// host's privileges), a new user namespace (`await_id_maps` returns once the shim has written
/// its uid and gid maps), then every new namespace, owned by that user namespace, with cgroup
/// last. The pid namespace was entered at spawn and a new mount namespace is made by
/// `guest::mounts`, which also sets its propagation; an exec joins the container's.
pub fn enter(
    confinement: &Confinement,
    await_id_maps: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let namespaces = &confinement.namespaces;
    let user_by_path = namespaces
        .iter()
        .find(|n| n.kind == NamespaceKind::User && n.path.is_some());
    if let Some(user) = user_by_path {
        join_or_create(user)?;
    }
    let others = || {
        namespaces.iter().filter(|n| {
            !matches!(
                n.kind,
                NamespaceKind::Pid | NamespaceKind::Mount | NamespaceKind::User
            )
        })
    };
    for ns in others().filter(|n| n.path.is_some()) {
        join_or_create(ns)?;
    }
    // An exec joins the container's mount namespace last: the paths above are the host's
    // /proc, which the container's mount namespace does not show. setns(2) then puts the
    // process at that namespace's root, the container's.
    let mount_by_path = namespaces
        .iter()
        .find(|n| n.kind == NamespaceKind::Mount && n.path.is_some());
    if let Some(mount) = mount_by_path {
        join_or_create(mount)?;
    }
    if confinement.new_user_namespace() {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("create a user namespace: {e}"))?;
        await_id_maps()?;
    }
    if confinement.has_namespace(NamespaceKind::User) {
        become_namespace_root()?;
    }
    let new = || others().filter(|n| n.path.is_none());
    for ns in new().filter(|n| n.kind != NamespaceKind::Cgroup) {
        join_or_create(ns)?;
    }
    for ns in new().filter(|n| n.kind == NamespaceKind::Cgroup) {
        join_or_create(ns)?;
    }
    Ok(())
}

/// In a user namespace the process keeps its host ids until it changes them: becoming the
/// namespace's root (as runc does) makes what it creates during setup belong to the mapped
/// root, and keeps its capabilities in the namespace (capabilities(7): a change to euid 0
/// sets effective from permitted).
fn become_namespace_root() -> Result<(), String> {
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid)
        .map_err(|e| format!("become gid 0 of the user namespace (is gid 0 mapped?): {e}"))?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid)
        .map_err(|e| format!("become uid 0 of the user namespace (is uid 0 mapped?): {e}"))
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
