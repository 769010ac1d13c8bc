//! The guest's filesystem: a private mount namespace whose root is the container rootfs.
//!
//! [`prepare`] mounts everything beneath the rootfs while the guest still sees the host, then
//! [`enter`] pivots into it. Three rules keep a hostile image or a racing volume from reaching
//! the host:
//! * every mount target is resolved by the kernel inside the root (`openat2` with
//!   `RESOLVE_IN_ROOT`) and mounted through the resulting descriptor (`move_mount`), so no
//!   symlink swap between the check and the mount can redirect it;
//! * the rootfs and every bind mount are `nosuid,nodev` unless the spec says `suid`/`dev`, so
//!   a device node in an image layer or a volume cannot be opened;
//! * `/dev` is a tmpfs holding only the devices bound from the host here and the spec's
//!   `linux.devices`; it is `nodev` unless the spec lists devices of its own.
//!
//! Mount attributes are set on each new mount with `mount_setattr(2)` (recursively for
//! `rbind`), which also makes `ro` on an `rbind` read-only all the way down.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{mkdirat, Mode, SFlag};
use nix::unistd::{chdir, pivot_root};
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, open_tree, FsMountFlags,
    FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags,
};

use crate::confine::{Confinement, DeviceKind, DevicePlan, NamespaceKind};
use crate::spec::{MountAttrs, MountKind, MountPlan, RunPlan};

/// Devices runc creates in a container's /dev by default.
const DEFAULT_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What went wrong, as one line for the client.
pub type SetupResult<T> = Result<T, String>;

/// The propagation flag a spec name stands for, and whether it applies recursively.
pub fn propagation_flags(name: &str) -> Option<(MsFlags, bool)> {
    let (recursive, base) = match name.strip_prefix('r') {
        Some(rest) if !rest.is_empty() => (true, rest),
        _ => (false, name),
    };
    let flag = match base {
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "private" => MsFlags::MS_PRIVATE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => return None,
    };
    Some((flag, recursive))
}

/// Creates the mount namespace and mounts the rootfs, the spec's mounts and the masked and
/// read-only paths beneath it. Must run while the process is single-threaded.
pub fn prepare(plan: &RunPlan) -> SetupResult<()> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("create a mount namespace: {e}"))?;
    root_propagation(&plan.confinement)?;
    let root = plan.rootfs.as_path();
    mount(
        Some(root),
        root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind the rootfs: {e}"))?;
    let root_fd = open_path(root).map_err(|e| format!("open the rootfs: {e}"))?;
    let nosuid_nodev = MountAttrs {
        nosuid: true,
        nodev: true,
        ..MountAttrs::default()
    };
    set_attrs(root_fd.as_fd(), &nosuid_nodev, false, true)
        .map_err(|e| format!("make the rootfs nosuid,nodev: {e}"))?;
    for m in &plan.mounts {
        mount_one(&root_fd, m, &plan.confinement)
            .map_err(|e| format!("mount {}: {e}", m.destination.display()))?;
    }
    mask_paths(&root_fd, &plan.confinement)?;
    ensure_cwd(&root_fd, &plan.cwd, plan.readonly_root)
}

/// Our mounts never propagate back to the host; the host's still reach us (rslave) unless
/// the spec's `rootfsPropagation` says private. Shared is applied to the new root after the
/// pivot, since pivot_root refuses a shared parent.
fn root_propagation(confinement: &Confinement) -> SetupResult<()> {
    let wanted = confinement
        .rootfs_propagation
        .as_deref()
        .unwrap_or("rslave");
    let flag = match propagation_flags(wanted) {
        Some((MsFlags::MS_PRIVATE, _)) => MsFlags::MS_PRIVATE,
        _ => MsFlags::MS_SLAVE,
    };
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | flag,
        None::<&str>,
    )
    .map_err(|e| format!("set the propagation of /: {e}"))
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
    let root = open_path(Path::new("/")).map_err(|e| format!("open /: {e}"))?;
    if plan.readonly_root {
        let ro = MountAttrs {
            readonly: true,
            ..MountAttrs::default()
        };
        set_attrs(root.as_fd(), &ro, false, true)
            .map_err(|e| format!("make the root read-only: {e}"))?;
    }
    if let Some(p) = plan.confinement.rootfs_propagation.as_deref() {
        if let Some((flag @ MsFlags::MS_SHARED, recursive)) = propagation_flags(p) {
            let rec = if recursive {
                MsFlags::MS_REC
            } else {
                MsFlags::empty()
            };
            mount(None::<&str>, "/", None::<&str>, flag | rec, None::<&str>)
                .map_err(|e| format!("make / {p}: {e}"))?;
        }
    }
    chdir(&plan.cwd).map_err(|e| format!("chdir to process.cwd {}: {e}", plan.cwd.display()))
}

/// Names in the root directory, for the preopens (see `engine::wasmer::preopens`). Read
/// after `enter`, so the kernel resolves them inside the container.
pub fn root_entries() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn mount_one(root: &OwnedFd, m: &MountPlan, confinement: &Confinement) -> SetupResult<()> {
    match &m.kind {
        MountKind::Bind { source, recursive } => {
            let is_dir = std::fs::metadata(source)
                .map_err(|e| format!("bind source {}: {e}", source.display()))?
                .is_dir();
            let target = mountpoint(root, &m.destination, is_dir)?;
            let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
            if *recursive {
                flags |= OpenTreeFlags::AT_RECURSIVE;
            }
            let tree = open_tree(rustix::fs::CWD, source.as_path(), flags)
                .map_err(|e| format!("bind {}: {e}", source.display()))?;
            set_attrs(tree.as_fd(), &attrs_of(m), *recursive, true)
                .map_err(|e| format!("set mount options: {e}"))?;
            attach(&tree, &target)?;
            propagate(&tree, &m.attrs)
        }
        MountKind::Tmpfs { data } => {
            let target = mountpoint(root, &m.destination, true)?;
            let tmpfs = new_tmpfs(data, &attrs_of(m))?;
            attach(&tmpfs, &target)?;
            propagate(&tmpfs, &m.attrs)
        }
        MountKind::Dev => {
            let target = mountpoint(root, &m.destination, true)?;
            let dev = dev_tmpfs(m, confinement)?;
            attach(&dev, &target)
        }
    }
}

/// The container's `/dev`: a tmpfs with the devices runc creates by default, bound from the
/// host, and the spec's `linux.devices`. It is `nodev` (so only the bound devices work)
/// unless the spec's own nodes are made in it; nobody else can make a node there (a guest
/// has no mknod). In a user namespace a tmpfs cannot hold working nodes, so the spec's
/// devices are bound from the same path on the host, as runc does.
fn dev_tmpfs(m: &MountPlan, confinement: &Confinement) -> SetupResult<OwnedFd> {
    let devices = &confinement.devices;
    let make_nodes = !devices.is_empty() && !confinement.has_namespace(NamespaceKind::User);
    let attrs = MountAttrs {
        nodev: !make_nodes,
        nosuid: true,
        ..attrs_of(m)
    };
    let dev = new_tmpfs("mode=755", &attrs)?;
    for name in DEFAULT_DEVICES {
        let path = Path::new("/dev").join(name);
        // A device the spec lists itself is made as the spec says.
        if !devices.iter().any(|d| d.path == path) {
            bind_device(&dev, &path)?;
        }
    }
    for device in devices {
        if make_nodes {
            make_device(&dev, device)
        } else {
            bind_device(&dev, &device.path).and_then(|()| same_device(device))
        }
        .map_err(|e| format!("linux.devices {}: {e}", device.path.display()))?;
    }
    Ok(dev)
}

/// Makes one of `linux.devices` in the detached /dev tmpfs, with the spec's mode and owner
/// (set after mknod, so the process's umask takes nothing away).
fn make_device(dev: &OwnedFd, device: &DevicePlan) -> SetupResult<()> {
    let (parent, name) = dev_parent(dev, &device.path)?;
    let kind = match device.kind {
        DeviceKind::Char => SFlag::S_IFCHR,
        DeviceKind::Block => SFlag::S_IFBLK,
        DeviceKind::Fifo => SFlag::S_IFIFO,
    };
    let mode = Mode::from_bits_truncate(device.mode as libc::mode_t);
    let number = nix::sys::stat::makedev(device.major, device.minor);
    match nix::sys::stat::mknodat(&parent, name.as_path(), kind, mode, number) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(format!("mknod: {e}")),
    }
    nix::unistd::fchownat(
        &parent,
        name.as_path(),
        Some(nix::unistd::Uid::from_raw(device.uid)),
        Some(nix::unistd::Gid::from_raw(device.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| format!("chown to {}:{}: {e}", device.uid, device.gid))?;
    nix::sys::stat::fchmodat(
        &parent,
        name.as_path(),
        mode,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| format!("chmod {:o}: {e}", device.mode))
}

/// A device bound from the host must be the one the spec describes.
fn same_device(device: &DevicePlan) -> SetupResult<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(&device.path).map_err(|e| format!("host node: {e}"))?;
    let kind_matches = match device.kind {
        DeviceKind::Char => meta.file_type().is_char_device(),
        DeviceKind::Block => meta.file_type().is_block_device(),
        DeviceKind::Fifo => meta.file_type().is_fifo(),
    };
    let numbers = (
        libc::major(meta.rdev()) as u64,
        libc::minor(meta.rdev()) as u64,
    );
    if kind_matches && (device.kind == DeviceKind::Fifo || numbers == (device.major, device.minor))
    {
        Ok(())
    } else {
        Err(format!(
            "in a user namespace devices are bound from the host, and the host's {} is not {:?} {}:{}",
            device.path.display(),
            device.kind,
            device.major,
            device.minor
        ))
    }
}

/// The directory of a `/dev/...` path inside the detached /dev tmpfs (made as needed), and
/// the last component's name.
fn dev_parent(dev: &OwnedFd, path: &Path) -> SetupResult<(OwnedFd, PathBuf)> {
    let inside = path.strip_prefix("/dev").unwrap_or(path);
    let name = inside
        .file_name()
        .map(PathBuf::from)
        .ok_or_else(|| format!("{} has no name", path.display()))?;
    let mut dir = dev
        .try_clone()
        .map_err(|e| format!("duplicate the /dev descriptor: {e}"))?;
    for component in inside.parent().into_iter().flat_map(Path::components) {
        if let Component::Normal(part) = component {
            dir = create_child(&dir, Path::new(part), true)
                .map_err(|e| format!("create {}: {e}", Path::new(part).display()))?;
        }
    }
    Ok((dir, name))
}

fn attrs_of(m: &MountPlan) -> MountAttrs {
    MountAttrs {
        readonly: m.readonly,
        ..m.attrs.clone()
    }
}

/// A new tmpfs, not yet attached anywhere, with its data options and mount attributes.
fn new_tmpfs(data: &str, attrs: &MountAttrs) -> SetupResult<OwnedFd> {
    let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| format!("tmpfs: {e}"))?;
    for option in data.split(',').filter(|o| !o.is_empty()) {
        let (key, value) = option.split_once('=').unwrap_or((option, ""));
        fsconfig_set_string(fs.as_fd(), key, value)
            .map_err(|e| format!("tmpfs option {option}: {e}"))?;
    }
    fsconfig_create(fs.as_fd()).map_err(|e| format!("create the tmpfs: {e}"))?;
    fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        mount_attr_flags(attrs),
    )
    .map_err(|e| format!("mount the tmpfs: {e}"))
}

fn mount_attr_flags(attrs: &MountAttrs) -> MountAttrFlags {
    let mut flags = MountAttrFlags::empty();
    for (on, flag) in [
        (attrs.readonly, MountAttrFlags::MOUNT_ATTR_RDONLY),
        (attrs.nosuid, MountAttrFlags::MOUNT_ATTR_NOSUID),
        (attrs.nodev, MountAttrFlags::MOUNT_ATTR_NODEV),
        (attrs.noexec, MountAttrFlags::MOUNT_ATTR_NOEXEC),
    ] {
        if on {
            flags |= flag;
        }
    }
    flags
}

/// Attaches a detached mount onto the object `target` refers to.
fn attach(mount: &OwnedFd, target: &OwnedFd) -> SetupResult<()> {
    move_mount(
        mount.as_fd(),
        "",
        target.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| format!("attach the mount: {e}"))
}

/// The spec's propagation option (`rslave`, `private`, ...) on an attached mount.
fn propagate(mount_fd: &OwnedFd, attrs: &MountAttrs) -> SetupResult<()> {
    let Some(name) = &attrs.propagation else {
        return Ok(());
    };
    let (flag, recursive) =
        propagation_flags(name).ok_or_else(|| format!("unknown propagation {name}"))?;
    let rec = if recursive {
        MsFlags::MS_REC
    } else {
        MsFlags::empty()
    };
    let path = format!("/proc/self/fd/{}", mount_fd.as_raw_fd());
    mount(
        None::<&str>,
        path.as_str(),
        None::<&str>,
        flag | rec,
        None::<&str>,
    )
    .map_err(|e| format!("set propagation {name}: {e}"))
}

/// Sets (or, with `add_only`, only adds) attributes on the mount `fd` refers to.
fn set_attrs(
    fd: BorrowedFd<'_>,
    attrs: &MountAttrs,
    recursive: bool,
    add_only: bool,
) -> std::io::Result<()> {
    let set = u64::from(mount_attr_flags(attrs).bits());
    let all = libc::MOUNT_ATTR_RDONLY
        | libc::MOUNT_ATTR_NOSUID
        | libc::MOUNT_ATTR_NODEV
        | libc::MOUNT_ATTR_NOEXEC;
    let mut attr = libc::mount_attr {
        attr_set: set,
        attr_clr: if add_only { 0 } else { all & !set },
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: mount_setattr(2) reads `attr` (a live, correctly sized mount_attr) and the empty
    // C string; it writes nothing of ours. No wrapper exists in nix or rustix.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &mut attr as *mut libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Binds the host's device node at `path` (a `/dev/...` path) to the same place in the
/// detached /dev tmpfs, over an empty file made there. A default device the host lacks is
/// skipped.
fn bind_device(dev: &OwnedFd, path: &Path) -> SetupResult<()> {
    if !path.exists()
        && DEFAULT_DEVICES
            .iter()
            .any(|d| Path::new("/dev").join(d) == path)
    {
        return Ok(());
    }
    let node = open_tree(
        rustix::fs::CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| format!("bind {}: {e}", path.display()))?;
    let (parent, name) = dev_parent(dev, path)?;
    let target = create_child(&parent, &name, false)
        .map_err(|e| format!("create {}: {e}", path.display()))?;
    attach(&node, &target).map_err(|e| format!("bind {}: {e}", path.display()))
}

/// Hides each of `linux.maskedPaths` (a file behind /dev/null, a directory behind an empty
/// read-only tmpfs) and makes each of `linux.readonlyPaths` read-only, as runc does. A path
/// that is not in the root is skipped: there is nothing to hide.
fn mask_paths(root: &OwnedFd, confinement: &Confinement) -> SetupResult<()> {
    let ro = MountAttrs {
        readonly: true,
        nosuid: true,
        nodev: true,
        ..MountAttrs::default()
    };
    for path in &confinement.masked_paths {
        let Some(target) = existing(root, path)? else {
            continue;
        };
        let cover = if is_dir(&target) {
            new_tmpfs("", &ro)?
        } else {
            open_tree(
                rustix::fs::CWD,
                "/dev/null",
                OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
            )
            .map_err(|e| format!("mask {}: {e}", path.display()))?
        };
        attach(&cover, &target).map_err(|e| format!("mask {}: {e}", path.display()))?;
    }
    for path in &confinement.readonly_paths {
        let Some(target) = existing(root, path)? else {
            continue;
        };
        let tree = open_tree(
            target.as_fd(),
            "",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_EMPTY_PATH
                | OpenTreeFlags::AT_RECURSIVE,
        )
        .map_err(|e| format!("read-only {}: {e}", path.display()))?;
        set_attrs(tree.as_fd(), &ro, true, true)
            .map_err(|e| format!("read-only {}: {e}", path.display()))?;
        attach(&tree, &target).map_err(|e| format!("read-only {}: {e}", path.display()))?;
    }
    Ok(())
}

fn existing(root: &OwnedFd, path: &Path) -> SetupResult<Option<OwnedFd>> {
    match resolve_in_root(root, path) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => Ok(None),
        Err(e) => Err(format!("resolve {}: {e}", path.display())),
    }
}

fn is_dir(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd)
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
        .unwrap_or(false)
}

/// An O_PATH descriptor of `path` resolved by the kernel inside `root`: `..` stops at the
/// root, symlinks (absolute or relative) resolve inside it, magic links are refused.
fn resolve_in_root(root: &OwnedFd, path: &Path) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root, &relative(path), how)
}

/// How often a mount point is created and resolved again when something keeps moving the
/// path away in between (a racing rename in a shared volume): then Create fails, it never
/// mounts elsewhere.
const MOUNTPOINT_TRIES: usize = 16;

/// The mount point for `destination`: resolved inside the root, created (with its parents)
/// as a directory or an empty file when it does not exist, as runc does.
fn mountpoint(root: &OwnedFd, destination: &Path, directory: bool) -> SetupResult<OwnedFd> {
    for _ in 0..MOUNTPOINT_TRIES {
        match resolve_in_root(root, destination) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(format!("resolve {}: {e}", destination.display())),
        }
        let parent = destination.parent().unwrap_or(Path::new("/"));
        let name = destination
            .file_name()
            .ok_or_else(|| format!("{} has no name to create", destination.display()))?;
        let parent_fd = mountpoint(root, parent, true)?;
        create_child(&parent_fd, Path::new(name), directory)
            .map_err(|e| format!("create mount point {}: {e}", destination.display()))?;
    }
    Err(format!(
        "resolve {}: the path kept changing while its mount point was made ({MOUNTPOINT_TRIES} tries)",
        destination.display()
    ))
}

/// Creates `name` in the directory `dir` (an existing one is fine) and opens it O_PATH.
fn create_child(dir: &OwnedFd, name: &Path, directory: bool) -> nix::Result<OwnedFd> {
    let made = if directory {
        mkdirat(dir, name, Mode::from_bits_truncate(0o755))
    } else {
        nix::fcntl::openat(
            dir,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_WRONLY,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop)
    };
    match made {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    openat2(dir, name, how)
}

/// Makes sure `process.cwd` exists, creating it as runc does when the root is writable.
fn ensure_cwd(root: &OwnedFd, cwd: &Path, readonly: bool) -> SetupResult<()> {
    match resolve_in_root(root, cwd) {
        Ok(fd) if is_dir(&fd) => Ok(()),
        Ok(_) => Err(format!("process.cwd {} is not a directory", cwd.display())),
        Err(Errno::ENOENT) if !readonly => mountpoint(root, cwd, true).map(drop),
        Err(Errno::ENOENT) => Err(format!(
            "process.cwd {} does not exist in the read-only root filesystem",
            cwd.display()
        )),
        Err(e) => Err(format!("process.cwd {}: {e}", cwd.display())),
    }
}

fn open_path(path: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(path)
        .map(OwnedFd::from)
}

/// A container path as a path relative to the root ("." for the root itself).
fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}
