//! The host-side calls the fixes make on `O_PATH` descriptors of their own
//! ([`Host`](super::descriptors::Host)): the guest process runs inside the container's root,
//! so these see exactly what the guest sees, and the kernel keeps read-only mounts read-only.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno as Sys;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, utimensat, FileStat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use wasmer_wasix::types::wasi::Errno;

use super::descriptors::Host;

/// An `O_PATH` descriptor of the directory `path` (absolute, in the container).
pub(super) fn open_dir(path: &Path) -> Option<Host> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    Some(Host::new(fd))
}

/// A descriptor of `path` under `dir`, following a final symlink only if `follow`: what
/// wasmer's `path_open` just opened. `O_PATH`, except for a regular file the guest process
/// can read, which is opened read-only (non-blocking, never as a controlling terminal) so
/// that its times can be set (futimens(2) refuses `O_PATH` descriptors).
pub(super) fn open_at(dir: &Host, path: &[u8], follow: bool) -> Option<Host> {
    let path = CString::new(path).ok()?;
    let nofollow = if follow {
        OFlag::empty()
    } else {
        OFlag::O_NOFOLLOW
    };
    let open = |flags: OFlag| {
        nix::fcntl::openat(
            dir.as_ref(),
            path.as_c_str(),
            flags | nofollow,
            Mode::empty(),
        )
        .ok()
    };
    let found = open(OFlag::O_PATH | OFlag::O_CLOEXEC)?;
    let stat = nix::sys::stat::fstat(&found).ok()?;
    if stat.st_mode & libc::S_IFMT == libc::S_IFREG {
        let readable =
            open(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC);
        let same = |fd: &OwnedFd| {
            nix::sys::stat::fstat(fd)
                .is_ok_and(|s| (s.st_dev, s.st_ino) == (stat.st_dev, stat.st_ino))
        };
        if let Some(fd) = readable.filter(same) {
            return Some(Host::new(fd));
        }
    }
    Some(Host::new(found))
}

/// Sets the times of what `host` is: a directory with utimensat(2) of ".", a file opened
/// read-only with futimens(2). None when the descriptor allows neither (an `O_PATH`
/// descriptor of anything else).
pub(super) fn set_times(host: &Host, (atime, mtime): (TimeSpec, TimeSpec)) -> Option<Errno> {
    let stat = nix::sys::stat::fstat(host.as_ref()).ok()?;
    let set = if stat.st_mode & libc::S_IFMT == libc::S_IFDIR {
        utimensat(
            host.as_ref(),
            ".",
            &atime,
            &mtime,
            UtimensatFlags::FollowSymlink,
        )
    } else {
        nix::sys::stat::futimens(host.as_ref(), &atime, &mtime)
    };
    match set {
        Ok(()) => Some(Errno::Success),
        Err(Sys::EBADF) => None,
        Err(e) => Some(wasi_errno(e)),
    }
}

/// openat2(2)'s `struct open_how` (libc's is non-exhaustive, so it cannot be built here).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Whether `path` resolved under `dir` leaves it: the kernel resolves it (`openat2` with
/// RESOLVE_BENEATH, which fails with EXDEV for any step above `dir`, through ".." or a
/// symlink). Ok(false) when it stays inside or cannot be resolved (wasmer then answers the
/// missing or wrong entry), Err when the kernel cannot tell (no openat2).
pub(super) fn escapes(dir: &Host, path: &[u8]) -> Result<bool, Sys> {
    let Ok(path) = CString::new(path) else {
        return Ok(false);
    };
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH,
    };
    // SAFETY: openat2 reads `how` (of the size given) and the NUL-terminated path; both
    // outlive the call. A descriptor it returns is owned here and closed on drop.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd >= 0 {
        // SAFETY: the kernel just returned this descriptor and nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        return Ok(false);
    }
    match Sys::last() {
        Sys::EXDEV => Ok(true),
        Sys::ENOSYS => Err(Sys::ENOSYS),
        _ => Ok(false),
    }
}

/// The times WASI's `fstflags` ask for: (atime, mtime), each set, now, or left alone.
pub(super) fn times(atim: u64, mtim: u64, fstflags: u16) -> Result<(TimeSpec, TimeSpec), Errno> {
    const ATIM: u16 = 1;
    const ATIM_NOW: u16 = 2;
    const MTIM: u16 = 4;
    const MTIM_NOW: u16 = 8;
    if fstflags & (ATIM | ATIM_NOW) == ATIM | ATIM_NOW
        || fstflags & (MTIM | MTIM_NOW) == MTIM | MTIM_NOW
        || fstflags & !(ATIM | ATIM_NOW | MTIM | MTIM_NOW) != 0
    {
        return Err(Errno::Inval);
    }
    let one = |ns: u64, set: u16, now: u16| {
        if fstflags & set != 0 {
            TimeSpec::from(std::time::Duration::from_nanos(ns))
        } else if fstflags & now != 0 {
            TimeSpec::UTIME_NOW
        } else {
            TimeSpec::UTIME_OMIT
        }
    };
    Ok((one(atim, ATIM, ATIM_NOW), one(mtim, MTIM, MTIM_NOW)))
}

/// utimensat(2) of `path` under `dir`.
pub(super) fn set_times_at(
    dir: &Host,
    path: &[u8],
    follow: bool,
    (atime, mtime): (TimeSpec, TimeSpec),
) -> Errno {
    let Ok(path) = CString::new(path) else {
        return Errno::Inval;
    };
    let flags = if follow {
        UtimensatFlags::FollowSymlink
    } else {
        UtimensatFlags::NoFollowSymlink
    };
    match utimensat(dir.as_ref(), path.as_c_str(), &atime, &mtime, flags) {
        Ok(()) => Errno::Success,
        Err(e) => wasi_errno(e),
    }
}

/// linkat(2): `new_path` under `new_dir` becomes another name for `old_path` under
/// `old_dir` (a final symlink in `old_path` followed only if `follow`).
pub(super) fn link_at(
    (old_dir, old_path): (&Host, &[u8]),
    (new_dir, new_path): (&Host, &[u8]),
    follow: bool,
) -> Errno {
    let (Ok(old_path), Ok(new_path)) = (CString::new(old_path), CString::new(new_path)) else {
        return Errno::Inval;
    };
    let flags = if follow {
        AtFlags::AT_SYMLINK_FOLLOW
    } else {
        AtFlags::empty()
    };
    let linked = nix::unistd::linkat(
        old_dir.as_ref(),
        old_path.as_c_str(),
        new_dir.as_ref(),
        new_path.as_c_str(),
        flags,
    );
    match linked {
        Ok(()) => Errno::Success,
        Err(e) => wasi_errno(e),
    }
}

/// fstat(2) of what `host` is.
pub(super) fn stat(host: &Host) -> Option<FileStat> {
    nix::sys::stat::fstat(host.as_ref()).ok()
}

/// fstatat(2) of `path` under `dir`.
pub(super) fn stat_at(dir: &Host, path: &[u8], follow: bool) -> Option<FileStat> {
    let path = CString::new(path).ok()?;
    let flags = if follow {
        AtFlags::empty()
    } else {
        AtFlags::AT_SYMLINK_NOFOLLOW
    };
    fstatat(dir.as_ref(), path.as_c_str(), flags).ok()
}

/// WASI's errno for a host errno.
pub(super) fn wasi_errno(e: Sys) -> Errno {
    match e {
        Sys::EACCES => Errno::Access,
        Sys::EPERM => Errno::Perm,
        Sys::ENOENT => Errno::Noent,
        Sys::ENOTDIR => Errno::Notdir,
        Sys::EISDIR => Errno::Isdir,
        Sys::ELOOP => Errno::Loop,
        Sys::EINVAL => Errno::Inval,
        Sys::ENAMETOOLONG => Errno::Nametoolong,
        Sys::EEXIST => Errno::Exist,
        Sys::ENOTEMPTY => Errno::Notempty,
        Sys::EROFS => Errno::Rofs,
        Sys::EBADF => Errno::Badf,
        Sys::EXDEV => Errno::Perm,
        _ => Errno::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> (tempdir::Dir, Host) {
        let dir = tempdir::Dir::new();
        let host = open_dir(dir.path()).expect("open the scratch dir");
        (dir, host)
    }

    /// A directory removed on drop (the crate has no tempfile dependency).
    mod tempdir {
        use std::path::{Path, PathBuf};

        pub struct Dir(PathBuf);

        impl Dir {
            pub fn new() -> Dir {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let path = std::env::temp_dir()
                    .join(format!("wasi-fixes-host-{}-{nanos}", std::process::id()));
                std::fs::create_dir_all(path.join("a/b")).expect("scratch dir");
                Dir(path)
            }

            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn climbing_out_is_an_escape_and_staying_in_is_not() {
        let (dir, host) = scratch();
        std::os::unix::fs::symlink("a/b", dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("abs")).unwrap();
        assert_eq!(escapes(&host, b"a/b/../.."), Ok(false));
        assert_eq!(escapes(&host, b"a/b/../../.."), Ok(true));
        // ".." after a symlink is the parent of its target, as the kernel sees it.
        assert_eq!(escapes(&host, b"link/../.."), Ok(false));
        assert_eq!(escapes(&host, b"link/../../.."), Ok(true));
        assert_eq!(escapes(&host, b"abs"), Ok(true));
        // A missing entry is for wasmer to answer.
        assert_eq!(escapes(&host, b"missing/.."), Ok(false));
    }

    #[test]
    fn links_are_made_by_the_kernel_with_its_errors() {
        let (dir, host) = scratch();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let sub = open_dir(&dir.path().join("a")).unwrap();
        assert_eq!(
            link_at((&host, b"file"), (&sub, b"link"), false),
            Errno::Success
        );
        let (file, link) = (
            stat_at(&host, b"file", false).unwrap(),
            stat_at(&sub, b"link", false).unwrap(),
        );
        assert_eq!((file.st_ino, file.st_nlink), (link.st_ino, 2));
        assert_eq!(
            link_at((&host, b"file"), (&host, b"file"), false),
            Errno::Exist
        );
        assert_eq!(
            link_at((&host, b"a"), (&host, b"dirlink"), false),
            Errno::Perm
        );
        assert_eq!(
            link_at((&host, b"file"), (&host, b"new/"), false),
            Errno::Noent
        );
        std::os::unix::fs::symlink("missing", dir.path().join("dangling")).unwrap();
        assert_eq!(
            link_at((&host, b"dangling"), (&host, b"l2"), false),
            Errno::Success
        );
        assert_eq!(
            link_at((&host, b"dangling"), (&host, b"l3"), true),
            Errno::Noent
        );
    }

    #[test]
    fn times_follow_fstflags_and_refuse_both_a_time_and_now() {
        let (a, m) = times(5, 7, 1 | 4).unwrap();
        assert_eq!((a.tv_nsec(), m.tv_nsec()), (5, 7));
        let (a, m) = times(0, 0, 8).unwrap();
        assert_eq!(a.tv_nsec(), TimeSpec::UTIME_OMIT.tv_nsec());
        assert_eq!(m.tv_nsec(), TimeSpec::UTIME_NOW.tv_nsec());
        assert_eq!(times(0, 0, 1 | 2).err(), Some(Errno::Inval));
        assert_eq!(times(0, 0, 4 | 8).err(), Some(Errno::Inval));
    }

    #[test]
    fn times_are_set_through_descriptors_of_files_and_directories() {
        let (dir, host) = scratch();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let t = times(0, 3_000_000_000, 4).unwrap();
        let file = open_at(&host, b"file", false).unwrap();
        assert_eq!(set_times(&file, t), Some(Errno::Success));
        assert_eq!(stat_at(&host, b"file", false).unwrap().st_mtime, 3);
        let sub = open_at(&host, b"a", false).unwrap();
        assert_eq!(set_times(&sub, t), Some(Errno::Success));
        assert_eq!(stat_at(&host, b"a", false).unwrap().st_mtime, 3);
        // A symlink opened without following is an O_PATH descriptor: it cannot say.
        std::os::unix::fs::symlink("file", dir.path().join("link")).unwrap();
        let link = open_at(&host, b"link", false).unwrap();
        assert_eq!(set_times(&link, t), None);
    }

    #[test]
    fn times_set_on_a_symlink_leave_its_target_alone() {
        let (dir, host) = scratch();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        std::os::unix::fs::symlink("file", dir.path().join("link")).unwrap();
        let before = stat_at(&host, b"file", true).unwrap().st_mtime;
        let t = times(0, 1_000_000_000, 4).unwrap();
        assert_eq!(set_times_at(&host, b"link", false, t), Errno::Success);
        assert_eq!(stat_at(&host, b"link", false).unwrap().st_mtime, 1);
        assert_eq!(stat_at(&host, b"file", true).unwrap().st_mtime, before);
        assert_eq!(set_times_at(&host, b"link", true, t), Errno::Success);
        assert_eq!(stat_at(&host, b"file", true).unwrap().st_mtime, 1);
        assert_eq!(set_times_at(&host, b"nope", true, t), Errno::Noent);
    }
}
