//! The guest's filesystem: a private mount namespace whose root is the container rootfs.
//!
//! Done in two steps because compiling (and caching) the module needs the host's view:
//! [`prepare`] mounts everything under the rootfs, then [`enter`] pivots into it. After
//! `enter` the kernel confines the guest: `..`, absolute and relative symlinks and /proc
//! cannot lead out, and read-only mounts are read-only for real.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{chdir, pivot_root};

use crate::rootfs;
use crate::spec::{MountKind, MountPlan, RunPlan};

/// Devices runc creates in a container's /dev by default.
const DEFAULT_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What went wrong, as one line for the client.
pub type SetupResult<T> = Result<T, String>;

/// Creates the mount namespace and mounts the rootfs and the spec's mounts beneath it.
/// Must run while the process is still single-threaded (unshare of CLONE_NEWNS needs it).
pub fn prepare(plan: &RunPlan) -> SetupResult<()> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("create a mount namespace: {e}"))?;
    // Our mounts must never propagate back to the host; the host's still reach us, as runc's
    // default rslave propagation does.
    mount_flags(None, "/", None, MsFlags::MS_REC | MsFlags::MS_SLAVE, None)
        .map_err(|e| format!("make mounts private: {e}"))?;
    let root = plan.rootfs.as_path();
    mount_flags(
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(|e| format!("bind the rootfs: {e}"))?;
    for m in &plan.mounts {
        mount_one(root, m).map_err(|e| format!("mount {}: {e}", m.destination.display()))?;
    }
    ensure_cwd(root, &plan.cwd, plan.readonly_root)
}

/// Enters the prepared root: pivot_root, drop the host's tree, apply `root.readonly`, chdir.
pub fn enter(plan: &RunPlan) -> SetupResult<()> {
    let root = plan.rootfs.as_path();
    chdir(root).map_err(|e| format!("enter the rootfs: {e}"))?;
    // pivot_root(".", ".") stacks the old root on top of the new one; unmounting "." then
    // removes the old root, leaving only the container's tree.
    pivot_root(".", ".").map_err(|e| format!("pivot_root into the rootfs: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach the host root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    if plan.readonly_root {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount_flags(None, "/", None, flags, None)
            .map_err(|e| format!("make the root read-only: {e}"))?;
    }
    chdir(&plan.cwd).map_err(|e| format!("chdir to process.cwd {}: {e}", plan.cwd.display()))
}

/// Names in the root directory, for the preopens (see `engine::wasmer::preopens`).
pub fn root_entries(plan: &RunPlan) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(&plan.rootfs)
        .map(|dir| {
            // file_type() does not follow symlinks: a link in the image may point anywhere
            // on the host while we still see the host's tree.
            dir.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn mount_one(root: &Path, m: &MountPlan) -> SetupResult<()> {
    let target = mount_target(root, &m.destination)?;
    match &m.kind {
        MountKind::Bind { source, recursive } => {
            make_mountpoint(&target, source.is_dir())?;
            let mut flags = MsFlags::MS_BIND;
            if *recursive {
                flags |= MsFlags::MS_REC;
            }
            mount_flags(Some(source), &target, None, flags, None)
                .map_err(|e| format!("bind {}: {e}", source.display()))?;
        }
        MountKind::Tmpfs { data } => {
            make_mountpoint(&target, true)?;
            tmpfs(&target, data)?;
        }
        MountKind::Dev => {
            make_mountpoint(&target, true)?;
            tmpfs(&target, "mode=755")?;
            for name in DEFAULT_DEVICES {
                bind_device(&target, name)?;
            }
        }
    }
    if m.readonly {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount_flags(None, &target, None, flags, None)
            .map_err(|e| format!("make read-only: {e}"))?;
    }
    Ok(())
}

/// The host path of a mount destination, resolved inside the root so that a symlink in the
/// image cannot redirect a mount onto the host.
fn mount_target(root: &Path, destination: &Path) -> SetupResult<PathBuf> {
    let inside = rootfs::resolve(root, destination).map_err(|e| e.to_string())?;
    Ok(rootfs::host_path(root, &inside))
}

fn make_mountpoint(target: &Path, directory: bool) -> SetupResult<()> {
    if target.exists() {
        return Ok(());
    }
    if directory {
        fs::create_dir_all(target).map_err(|e| format!("create mount point: {e}"))
    } else {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("create mount point: {e}"))?;
        }
        fs::write(target, b"").map_err(|e| format!("create mount point: {e}"))
    }
}

fn tmpfs(target: &Path, data: &str) -> SetupResult<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let data = Some(data).filter(|d| !d.is_empty());
    mount_flags(Some(Path::new("tmpfs")), target, Some("tmpfs"), flags, data)
        .map_err(|e| format!("tmpfs: {e}"))
}

/// Binds the host's device node over an empty file, as runc does without mknod rights.
fn bind_device(dev_dir: &Path, name: &str) -> SetupResult<()> {
    let host = Path::new("/dev").join(name);
    if !host.exists() {
        return Ok(());
    }
    let target = dev_dir.join(name);
    fs::write(&target, b"").map_err(|e| format!("create /dev/{name}: {e}"))?;
    mount_flags(Some(&host), &target, None, MsFlags::MS_BIND, None)
        .map_err(|e| format!("bind /dev/{name}: {e}"))
}

/// Makes sure `process.cwd` exists, creating it as runc does when the root is writable.
fn ensure_cwd(root: &Path, cwd: &Path, readonly: bool) -> SetupResult<()> {
    let inside = rootfs::resolve(root, cwd).map_err(|e| e.to_string())?;
    let host = rootfs::host_path(root, &inside);
    match fs::metadata(&host) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!("process.cwd {} is not a directory", cwd.display())),
        Err(_) if !readonly => fs::create_dir_all(&host)
            .map_err(|e| format!("create process.cwd {}: {e}", cwd.display())),
        Err(_) => Err(format!(
            "process.cwd {} does not exist in the read-only root filesystem",
            cwd.display()
        )),
    }
}

fn mount_flags(
    source: Option<&Path>,
    target: impl AsRef<Path>,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> nix::Result<()> {
    mount(source, target.as_ref(), fstype, flags, data)
}
