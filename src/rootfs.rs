//! The container root filesystem on the host side: mounting what containerd hands over in
//! `Create`, and resolving container paths without ever leaving the root.
//!
//! The shim reads inside the rootfs only to check the entrypoint; the guest itself sees the
//! rootfs through the kernel after `pivot_root` (see `guest::mounts`), so the kernel, not this
//! code, confines the running guest.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;
use nix::mount::{umount2, MntFlags};

use crate::error::{Error, Result};

/// More symlinks than this in one path is a loop, as for the kernel's ELOOP.
const MAX_SYMLINKS: usize = 40;

/// The host path of a container path (which is absolute inside the container).
pub fn host_path(root: &Path, container_path: &Path) -> PathBuf {
    let relative: PathBuf = container_path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    root.join(relative)
}

/// Resolves `path` (absolute, or relative to the container's `/`) inside `root` the way the
/// kernel would inside a chroot: `..` stops at the root and symlinks, absolute or relative,
/// are followed relative to the root. Returns the container path; components that do not
/// exist are kept as they are so the caller can report the path it looked for.
pub fn resolve(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut resolved = PathBuf::from("/");
    let mut pending: VecDeque<OsString> = components(path);
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let next = resolved.join(&part);
        match std::fs::symlink_metadata(host_path(root, &next)) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(host_path(root, &next))?;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                for (i, c) in components(&target).into_iter().enumerate() {
                    pending.insert(i, c);
                }
            }
            Ok(_) => resolved = next,
            Err(e) if e.kind() == io::ErrorKind::NotFound => resolved = next,
            Err(e) => return Err(e),
        }
    }
    Ok(resolved)
}

/// The normal and `..` components of a path; `.` and the root are dropped.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// The directories of an overlay rootfs: the container's own writable upper directory and
/// the image's read-only lower ones, top first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayLayers {
    pub upper: Option<PathBuf>,
    pub lower: Vec<PathBuf>,
}

/// The layers of the rootfs containerd passed in `Create` when it is one overlay mount (what
/// the overlayfs snapshotter gives); `None` for anything else.
pub fn overlay_layers(mounts: &[Mount]) -> Option<OverlayLayers> {
    let [mount] = mounts else {
        return None;
    };
    if mount.type_ != "overlay" {
        return None;
    }
    let mut layers = OverlayLayers {
        upper: None,
        lower: Vec::new(),
    };
    for option in &mount.options {
        // An escaped ':' or ',' in a path is not worth decoding: such a rootfs is not used.
        if option.contains('\\') {
            return None;
        }
        if let Some(dirs) = option.strip_prefix("lowerdir=") {
            layers.lower = dirs.split(':').map(PathBuf::from).collect();
        } else if let Some(dir) = option.strip_prefix("lowerdir+=") {
            layers.lower.push(PathBuf::from(dir));
        } else if let Some(dir) = option.strip_prefix("upperdir=") {
            layers.upper = Some(PathBuf::from(dir));
        }
    }
    let usable = !layers.lower.is_empty() && layers.lower.iter().all(|d| d.is_absolute());
    usable.then_some(layers)
}

/// Mounts the rootfs that containerd passed in `Create` onto `target`. Returns whether
/// anything was mounted (an empty list means the bundle's rootfs is already in place).
pub fn mount(mounts: &[Mount], target: &Path) -> Result<bool> {
    match mounts {
        [] => Ok(false),
        [m] => {
            let options = m.options.to_vec();
            containerd_shim::mount::mount_rootfs(
                Some(m.type_.as_str()).filter(|t| !t.is_empty()),
                Some(m.source.as_str()).filter(|s| !s.is_empty()),
                &options,
                target,
            )
            .map_err(|e| {
                Error::Internal(format!(
                    "mount the container rootfs ({} {}) on {}: {e}",
                    m.type_,
                    m.source,
                    target.display()
                ))
            })?;
            Ok(true)
        }
        _ => Err(Error::InvalidArgument(format!(
            "{} rootfs mounts given; the shim takes exactly one (as containerd sends)",
            mounts.len()
        ))),
    }
}

/// Unmounts the rootfs (and anything left mounted below it). Not mounted is not an error:
/// `delete` after a lost shim may run when containerd already cleaned up.
pub fn unmount(target: &Path) -> Result<()> {
    loop {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(Error::io(
                    format!("unmount the container rootfs {}", target.display()),
                    e.into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(options: &[&str]) -> Mount {
        let mut mount = Mount::new();
        mount.type_ = "overlay".into();
        mount.source = "overlay".into();
        mount.options = options.iter().map(|o| o.to_string()).collect();
        mount
    }

    #[test]
    fn an_overlay_rootfs_gives_its_upper_and_lower_directories_top_first() {
        let mount = overlay(&[
            "index=off",
            "workdir=/s/3/work",
            "upperdir=/s/3/fs",
            "lowerdir=/s/2/fs:/s/1/fs",
        ]);
        assert_eq!(
            overlay_layers(&[mount]),
            Some(OverlayLayers {
                upper: Some("/s/3/fs".into()),
                lower: vec!["/s/2/fs".into(), "/s/1/fs".into()],
            })
        );
        let read_only = overlay(&["lowerdir=/s/2/fs:/s/1/fs"]);
        assert_eq!(overlay_layers(&[read_only]).unwrap().upper, None);
    }

    #[test]
    fn other_rootfs_have_no_layers() {
        let mut bind = overlay(&["rbind", "rw"]);
        bind.type_ = "bind".into();
        assert_eq!(overlay_layers(&[bind]), None);
        assert_eq!(overlay_layers(&[]), None);
        assert_eq!(overlay_layers(&[overlay(&["upperdir=/u"])]), None);
        assert_eq!(overlay_layers(&[overlay(&["lowerdir=/a\\:b"])]), None);
    }

    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolution_stays_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../etc", root.join("a/b/rel")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let r = |p: &str| resolve(root, Path::new(p));
        assert_eq!(r("/abs/passwd").unwrap(), Path::new("/etc/passwd"));
        assert_eq!(r("/a/b/rel/passwd").unwrap(), Path::new("/etc/passwd"));
        assert_eq!(r("/../../../etc").unwrap(), Path::new("/etc"));
        assert_eq!(r("a/./b/../b").unwrap(), Path::new("/a/b"));
        assert_eq!(r("/loop1").unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(
            host_path(root, Path::new("/etc/passwd")),
            root.join("etc/passwd")
        );
    }
}
