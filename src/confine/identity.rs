//! Resource limits, `oom_score_adj`, and the process's user, groups and umask.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

use super::{Confinement, RlimitPlan};
use crate::error::{Error, Result};

/// The kernel resource an OCI rlimit name stands for.
pub fn rlimit_resource(name: &str) -> Result<Resource> {
    Ok(match name {
        "RLIMIT_AS" => Resource::RLIMIT_AS,
        "RLIMIT_CORE" => Resource::RLIMIT_CORE,
        "RLIMIT_CPU" => Resource::RLIMIT_CPU,
        "RLIMIT_DATA" => Resource::RLIMIT_DATA,
        "RLIMIT_FSIZE" => Resource::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => Resource::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => Resource::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => Resource::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => Resource::RLIMIT_NICE,
        "RLIMIT_NOFILE" => Resource::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => Resource::RLIMIT_NPROC,
        "RLIMIT_RSS" => Resource::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => Resource::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => Resource::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => Resource::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => Resource::RLIMIT_STACK,
        other => {
            return Err(Error::InvalidArgument(format!(
                "process.rlimits has an unknown type {other:?}"
            )))
        }
    })
}

/// Applies `process.rlimits`, while the process still has the privilege to raise them.
pub fn apply_rlimits(rlimits: &[RlimitPlan]) -> Result<(), String> {
    for r in rlimits {
        let resource = rlimit_resource(&r.kind).map_err(|e| e.to_string())?;
        setrlimit(resource, r.soft, r.hard).map_err(|e| {
            let current = getrlimit(resource)
                .map(|(s, h)| format!(" (the shim's is {s}/{h})"))
                .unwrap_or_default();
            format!("set {} to {}/{}{current}: {e}", r.kind, r.soft, r.hard)
        })?;
    }
    Ok(())
}

/// Writes the spec's `oom_score_adj`. Lowering it below the shim's own needs
/// CAP_SYS_RESOURCE; where the host forbids that, the value is clamped to the shim's, as
/// containerd's `restrict_oom_score_adj` does, rather than failing the container.
pub fn apply_oom_score_adj(value: Option<i32>) -> Result<(), String> {
    let Some(wanted) = value else { return Ok(()) };
    const PATH: &str = "/proc/self/oom_score_adj";
    match std::fs::write(PATH, wanted.to_string()) {
        Ok(()) => Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EPERM) =>
        {
            let current: i32 = std::fs::read_to_string(PATH)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| format!("set oom_score_adj to {wanted}: {e}"))?;
            if wanted < current {
                log::warn!(
                    "oom_score_adj {wanted} is below the shim's {current} and the host forbids lowering it; keeping {current}"
                );
                Ok(())
            } else {
                Err(format!("set oom_score_adj to {wanted}: {e}"))
            }
        }
        Err(e) => Err(format!("set oom_score_adj to {wanted}: {e}")),
    }
}

/// Becomes `process.user`: supplementary groups, gid, uid, umask. Capabilities survive the
/// uid change (PR_SET_KEEPCAPS) so that the capability step can set exactly the spec's sets.
pub fn become_user(confinement: &Confinement) -> Result<(), String> {
    let user = &confinement.user;
    nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("keep capabilities: {e}"))?;
    let groups: Vec<Gid> = user
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    setgroups(&groups).map_err(|e| format!("set supplementary groups {groups:?}: {e}"))?;
    let gid = Gid::from_raw(user.gid);
    setresgid(gid, gid, gid).map_err(|e| format!("set gid {gid}: {e}"))?;
    let uid = Uid::from_raw(user.uid);
    setresuid(uid, uid, uid).map_err(|e| format!("set uid {uid}: {e}"))?;
    nix::sys::prctl::set_keepcaps(false).map_err(|e| format!("clear keepcaps: {e}"))?;
    if let Some(mask) = user.umask {
        umask(Mode::from_bits_truncate(mask as libc::mode_t));
    }
    Ok(())
}

/// `no_new_privs`, when the spec asks for it.
pub fn apply_no_new_privileges(confinement: &Confinement) -> Result<(), String> {
    if confinement.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("set no_new_privs: {e}"))?;
    }
    Ok(())
}
