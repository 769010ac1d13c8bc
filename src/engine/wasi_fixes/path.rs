//! The fixes to the calls taking paths: ".." climbing out of a directory descriptor,
//! `path_open` (and `sock_accept`) numbering new descriptors, `path_filestat_get` and
//! `path_filestat_set_times` reaching the file itself, `path_readlink`, `path_symlink`,
//! `path_unlink_file` and `path_rename`. Descriptor arguments are wasmer's numbers here.

use wasmer::{RuntimeError, Value};
use wasmer_wasix::types::wasi::{Errno, Rights};

use super::host;
use super::memory::{
    memory_error, read_bytes, read_u32, write_host_stat, FILESTAT_SIZE, FILETYPE_DIRECTORY,
};
use super::{errno, errno_of, i32_arg, i64_arg, Call, FILE_ONLY_RIGHTS};

/// The argument positions of one path: (descriptor, path, path length).
type PathArg = (usize, usize, usize);

/// The path arguments of each call taking paths.
const PATH_ARGS: &[(&str, &[PathArg])] = &[
    ("path_create_directory", &[(0, 1, 2)]),
    ("path_filestat_get", &[(0, 2, 3)]),
    ("path_filestat_set_times", &[(0, 2, 3)]),
    ("path_link", &[(0, 2, 3), (4, 5, 6)]),
    ("path_open", &[(0, 2, 3)]),
    ("path_readlink", &[(0, 1, 2)]),
    ("path_remove_directory", &[(0, 1, 2)]),
    ("path_rename", &[(0, 1, 2), (3, 4, 5)]),
    ("path_symlink", &[(2, 3, 4)]),
    ("path_unlink_file", &[(0, 1, 2)]),
];

/// WASI's `lookupflags`: follow a final symlink.
const LOOKUP_SYMLINK_FOLLOW: u32 = 1;

/// A path with ".." that climbs above the directory descriptor it is resolved under is
/// refused (PERM), as WASI requires: a directory the guest opened is a capability for what
/// is below it. wasmer's `WasiFs::get_inode_at_path_inner` follows ".." up to its root from
/// any directory. The kernel decides (`host::escapes`: ".." after a symlink is the parent of
/// its target), falling back to counting components when the directory is not known on the
/// host. Preopens are not checked: here they stand for the container's file system, where
/// ".." goes up to the container root as on Linux.
pub(super) fn refuse_escapes(
    call: &mut Call<'_>,
    name: &str,
    args: &[Value],
) -> Result<Option<Errno>, RuntimeError> {
    let Some((_, paths)) = PATH_ARGS.iter().find(|(n, _)| *n == name) else {
        return Ok(None);
    };
    let Some(memory) = call.memory()? else {
        return Ok(None);
    };
    for &(fd, path, len) in *paths {
        let (path, len) = (i32_arg(args, path)? as u64, i32_arg(args, len)? as u64);
        let bytes = read_bytes(&call.view(&memory), path, len)?;
        let Some(climb) = up_to_last_parent(&bytes) else {
            continue;
        };
        let Some(dir) = call.descriptors()?.beneath(i32_arg(args, fd)?) else {
            continue;
        };
        let escapes = match dir.map(|dir| host::escapes(&dir, climb)) {
            Some(Ok(escapes)) => escapes,
            _ => climbs_out(climb),
        };
        if escapes {
            return Ok(Some(Errno::Perm));
        }
    }
    Ok(None)
}

/// `path` up to the end of its last ".." component, if it has one.
fn up_to_last_parent(path: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    let mut end = None;
    for part in path.split(|b| *b == b'/') {
        if part == b".." {
            end = Some(at + part.len());
        }
        at += part.len() + 1;
    }
    end.map(|end| &path[..end])
}

/// Whether `path`, read without following anything, climbs above where it starts.
fn climbs_out(path: &[u8]) -> bool {
    let mut depth = 0i64;
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => depth -= 1,
            _ => depth += 1,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// `path_filestat_set_times(fd, flags, path, path_len, atim, mtim, fstflags)`: wasmer's
/// `path_filestat_set_times_internal` never reaches the file system; it stores the times in
/// its cached stat of the *directory* descriptor's inode. Here the file's (or, without
/// SYMLINK_FOLLOW, the symlink's own) times are set with utimensat(2) under the directory's
/// host descriptor, after the checks wasmer makes (fstflags, a directory, its
/// PATH_FILESTAT_SET_TIMES right).
pub(super) fn set_times_on_the_file(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let (fd, flags) = (i32_arg(args, 0)?, i32_arg(args, 1)?);
    let (path, len) = (i32_arg(args, 2)? as u64, i32_arg(args, 3)? as u64);
    let (atim, mtim) = (i64_arg(args, 4)?, i64_arg(args, 5)?);
    let fstflags = i32_arg(args, 6)? as u16;
    let (Some(dir), Some(memory)) = (call.descriptors()?.host(fd), call.memory()?) else {
        return call.original("path_filestat_set_times", args);
    };
    if let Some(e) = refuse_without(call, fd, Rights::PATH_FILESTAT_SET_TIMES)? {
        return Ok(vec![errno(e)]);
    }
    let times = match host::times(atim, mtim, fstflags) {
        Ok(times) => times,
        Err(e) => return Ok(vec![errno(e)]),
    };
    let path = read_bytes(&call.view(&memory), path, len)?;
    if path.first() == Some(&b'/') {
        return Ok(vec![errno(Errno::Perm)]);
    }
    let follow = flags & LOOKUP_SYMLINK_FOLLOW != 0;
    Ok(vec![errno(host::set_times_at(&dir, &path, follow, times))])
}

/// The errno for a path call under `fd` that needs `right`, as wasmer would check before the
/// call: NOTDIR for a descriptor that is not a directory, NOTCAPABLE without the right, the
/// error of `fd_fdstat_get` (BADF); None when the call may go on.
fn refuse_without(
    call: &mut Call<'_>,
    fd: u32,
    right: Rights,
) -> Result<Option<Errno>, RuntimeError> {
    Ok(match call.fdstat(fd)? {
        Some(Ok(info)) if info.filetype != FILETYPE_DIRECTORY => Some(Errno::Notdir),
        Some(Ok(info)) if info.base & right.bits() == 0 => Some(Errno::Notcapable),
        Some(Err(e)) => Some(e),
        _ => None,
    })
}

/// `path_filestat_get(fd, flags, path, path_len, buf)`: the stat is the kernel's
/// (fstatat(2) under the directory's host descriptor; see [`write_host_stat`]). wasmer's stat
/// of a symlink has times 0 (`WasiFs::get_stat_for_kind`, Kind::Symlink), its times can be
/// stale cached ones, and its inode numbers are hashes of the path, so two hard links to one
/// file differ. wasmer's answer stands where the host cannot tell (and for the filetype).
pub(super) fn stat_from_host(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let results = call.original("path_filestat_get", args)?;
    if errno_of(&results) != Some(Errno::Success) {
        return Ok(results);
    }
    let (fd, flags) = (i32_arg(args, 0)?, i32_arg(args, 1)?);
    let (path, len, buf) = (
        i32_arg(args, 2)? as u64,
        i32_arg(args, 3)? as u64,
        i32_arg(args, 4)? as u64,
    );
    let (Some(dir), Some(memory)) = (call.descriptors()?.host(fd), call.memory()?) else {
        return Ok(results);
    };
    let path = read_bytes(&call.view(&memory), path, len)?;
    if let Some(stat) = host::stat_at(&dir, &path, flags & LOOKUP_SYMLINK_FOLLOW != 0) {
        write_host_stat(&call.view(&memory), buf, &stat)?;
    }
    Ok(results)
}

/// `path_link(old_fd, old_flags, old_path, old_len, new_fd, new_path, new_len)`: linkat(2)
/// under the two directories' host descriptors, after the checks wasmer makes (directories,
/// PATH_LINK_SOURCE and PATH_LINK_TARGET). wasmer's own never reaches the file system: its
/// `path_link` asks virtual-fs for a hard link, but virtual-fs's `FileSystem` impl for
/// `Arc<dyn FileSystem>` (lib.rs, the blanket impl for `Deref`) does not forward
/// `hard_link`, so the answer is Unsupported and wasmer makes a second name for its
/// in-memory inode only.
pub(super) fn link_on_the_host(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let (old_fd, flags, new_fd) = (i32_arg(args, 0)?, i32_arg(args, 1)?, i32_arg(args, 4)?);
    let dirs = {
        let table = call.descriptors()?;
        (table.host(old_fd), table.host(new_fd))
    };
    let (Some(old_dir), Some(new_dir), Some(memory)) = (dirs.0, dirs.1, call.memory()?) else {
        return call.original("path_link", args);
    };
    for (fd, right) in [
        (old_fd, Rights::PATH_LINK_SOURCE),
        (new_fd, Rights::PATH_LINK_TARGET),
    ] {
        if let Some(e) = refuse_without(call, fd, right)? {
            return Ok(vec![errno(e)]);
        }
    }
    let view = call.view(&memory);
    let old_path = read_bytes(&view, i32_arg(args, 2)?.into(), i32_arg(args, 3)?.into())?;
    let new_path = read_bytes(&view, i32_arg(args, 5)?.into(), i32_arg(args, 6)?.into())?;
    if old_path.first() == Some(&b'/') || new_path.first() == Some(&b'/') {
        return Ok(vec![errno(Errno::Perm)]);
    }
    let follow = flags & LOOKUP_SYMLINK_FOLLOW != 0;
    Ok(vec![errno(host::link_at(
        (&old_dir, &old_path),
        (&new_dir, &new_path),
        follow,
    ))])
}

/// `sock_accept(fd, flags, fd_out)`: the accepted descriptor gets a guest number.
pub(super) fn accept_numbered(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let results = call.original("sock_accept", args)?;
    if errno_of(&results) == Some(Errno::Success) {
        let out = i32_arg(args, 2)? as u64;
        let wasmer_fd = read_new_fd(call, out)?;
        let fd = call.descriptors()?.opened(wasmer_fd, None);
        write_new_fd(call, out, fd)?;
    }
    Ok(results)
}

/// The descriptor wasmer wrote at `out`.
fn read_new_fd(call: &mut Call<'_>, out: u64) -> Result<u32, RuntimeError> {
    match call.memory()? {
        Some(memory) => read_u32(&call.view(&memory), out),
        None => Err(RuntimeError::new("a new descriptor without guest memory")),
    }
}

/// Writes the guest's number of a new descriptor at `out`.
fn write_new_fd(call: &mut Call<'_>, out: u64, fd: u32) -> Result<(), RuntimeError> {
    if let Some(memory) = call.memory()? {
        call.view(&memory)
            .write(out, &fd.to_le_bytes())
            .map_err(memory_error)?;
    }
    Ok(())
}

/// The longest symlink target read back whole for a truncating `path_readlink` (PATH_MAX).
const READLINK_MAX: u64 = 4096;

/// `path_open(dirfd, dirflags, path, path_len, oflags, base, inheriting, fdflags, fd_out)`,
/// checked where wasmer's `path_open_internal` (syscalls/wasix/path_open2.rs) is lax:
/// - an absolute path is resolved from the root (`VIRTUAL_ROOT_FD`) instead of refused: WASI
///   paths are relative to their directory descriptor (PERM);
/// - OFLAGS_TRUNC is honoured without the directory's PATH_FILESTAT_SET_SIZE right;
/// - a base descriptor that is not a directory fails the PATH_OPEN rights check (ACCES)
///   rather than NOTDIR;
/// - the new descriptor gets rights the guest did not ask for (see [`narrow_rights`]);
/// - no descriptor limit (see `Descriptors::is_full`).
///
/// The new descriptor gets a guest number (see `descriptors`), and a directory its host
/// directory.
pub(super) fn open_checked(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let (dirfd, dirflags) = (i32_arg(args, 0)?, i32_arg(args, 1)?);
    let (path, path_len) = (i32_arg(args, 2)? as u64, i32_arg(args, 3)? as u64);
    let oflags = i32_arg(args, 4)?;
    let out = i32_arg(args, 8)? as u64;
    if let Some(memory) = call.memory()? {
        if read_bytes(&call.view(&memory), path, path_len.min(1))?.first() == Some(&b'/') {
            return Ok(vec![errno(Errno::Perm)]);
        }
    }
    if call.descriptors()?.is_full() {
        return Ok(vec![errno(Errno::Mfile)]);
    }
    let dir = call.fdstat(dirfd)?;
    if oflags & OFLAGS_TRUNC != 0 {
        if let Some(Ok(info)) = dir {
            if info.base & Rights::PATH_FILESTAT_SET_SIZE.bits() == 0 {
                return Ok(vec![errno(Errno::Notcapable)]);
            }
        }
    }
    let results = call.original("path_open", args)?;
    match errno_of(&results) {
        Some(Errno::Access) => {
            if let Some(Ok(info)) = dir {
                if info.filetype != FILETYPE_DIRECTORY {
                    return Ok(vec![errno(Errno::Notdir)]);
                }
                if info.base & Rights::PATH_OPEN.bits() == 0 {
                    return Ok(vec![errno(Errno::Notcapable)]);
                }
            }
        }
        Some(Errno::Success) => {
            let wasmer_fd = read_new_fd(call, out)?;
            let requested = (i64_arg(args, 5)?, i64_arg(args, 6)?);
            narrow_rights(call, wasmer_fd, requested)?;
            let host = match (call.descriptors()?.host(dirfd), call.memory()?) {
                (Some(base), Some(memory)) => {
                    let path = read_bytes(&call.view(&memory), path, path_len)?;
                    host::open_at(&base, &path, dirflags & LOOKUP_SYMLINK_FOLLOW != 0)
                }
                _ => None,
            };
            let fd = call.descriptors()?.opened(wasmer_fd, host);
            write_new_fd(call, out, fd)?;
        }
        _ => {}
    }
    Ok(results)
}

const OFLAGS_TRUNC: u32 = 1 << 3;

/// Gives wasmer's new descriptor `fd` no rights beyond those the guest asked for. WASI's
/// rights of a new descriptor are the requested ones (within the directory's inheriting
/// rights), but wasmer's `path_open_internal` adds `implied_fd_rights`: FD_SEEK, FD_TELL and
/// FD_ADVISE always, and every write right when the open creates, truncates or appends — so
/// a file created without FD_WRITE could be written, and two opens of one file with the
/// same request got different rights. A directory also loses the [`FILE_ONLY_RIGHTS`].
fn narrow_rights(
    call: &mut Call<'_>,
    fd: u32,
    (base, inheriting): (u64, u64),
) -> Result<(), RuntimeError> {
    let Some(Ok(info)) = call.fdstat(fd)? else {
        return Ok(());
    };
    let mut narrowed = (info.base & base, info.inheriting & inheriting);
    if info.filetype == FILETYPE_DIRECTORY {
        narrowed.0 &= !FILE_ONLY_RIGHTS.bits();
    }
    if narrowed != (info.base, info.inheriting) {
        let args = [
            Value::I32(fd as i32),
            Value::I64(narrowed.0 as i64),
            Value::I64(narrowed.1 as i64),
        ];
        call.original("fd_fdstat_set_rights", &args)?;
    }
    Ok(())
}

/// `path_readlink(fd, path, path_len, buf, buf_len, bufused)`: wasmer's answers OVERFLOW when
/// the target is longer than the buffer; WASI (like readlink(2)) fills the buffer with the
/// first `buf_len` bytes. The whole target is read into scratch memory and cut.
pub(super) fn readlink_truncating(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let results = call.original("path_readlink", args)?;
    if errno_of(&results) != Some(Errno::Overflow) {
        return Ok(results);
    }
    let (buf, buf_len, used) = (
        i32_arg(args, 3)? as u64,
        i32_arg(args, 4)? as u64,
        i32_arg(args, 5)? as u64,
    );
    // The target and its length, read into scratch memory (the length 8 bytes past the end).
    let whole = call.with_scratch(READLINK_MAX + 8, |call, memory, at| {
        let mut inner = args.to_vec();
        inner[3] = Value::I32(at as i32);
        inner[4] = Value::I32(READLINK_MAX as i32);
        inner[5] = Value::I32((at + READLINK_MAX) as i32);
        if call.original_errno("path_readlink", &inner)? != Errno::Success {
            return Ok(None);
        }
        let view = call.view(memory);
        let len = u64::from(u32::from_le_bytes(
            read_bytes(&view, at + READLINK_MAX, 4)?
                .try_into()
                .unwrap_or([0; 4]),
        ));
        Ok(Some(read_bytes(&view, at, len.min(buf_len))?))
    })?;
    let (Some(Some(target)), Some(memory)) = (whole, call.memory()?) else {
        return Ok(results);
    };
    let view = call.view(&memory);
    view.write(buf, &target).map_err(memory_error)?;
    view.write(used, &(target.len() as u32).to_le_bytes())
        .map_err(memory_error)?;
    Ok(vec![errno(Errno::Success)])
}

/// `path_symlink(old_path, old_len, fd, new_path, new_len)`, two checks wasmer's
/// `path_symlink` lacks:
/// - an absolute target ("/", "/etc/passwd") is refused with PERM, as WASI runtimes refuse it:
///   a WASI path is relative to a descriptor, and wasmer would resolve the link from its root.
///   Absolute symlinks already in the image still resolve, inside the container root;
/// - a link path ending in "/" names a directory, so no symlink can be created there
///   (symlinkat(2): EEXIST if something is there, else ENOENT); wasmer strips the slash and
///   creates the link.
pub(super) fn symlink_checked(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let (old_path, old_len) = (i32_arg(args, 0)? as u64, i32_arg(args, 1)? as u64);
    let (fd, new_path, new_len) = (
        i32_arg(args, 2)?,
        i32_arg(args, 3)? as u64,
        i32_arg(args, 4)? as u64,
    );
    let Some(memory) = call.memory()? else {
        return call.original("path_symlink", args);
    };
    if read_bytes(&call.view(&memory), old_path, old_len.min(1))?.first() == Some(&b'/') {
        return Ok(vec![errno(Errno::Perm)]);
    }
    let path = read_bytes(&call.view(&memory), new_path, new_len)?;
    let trimmed = path.iter().rposition(|b| *b != b'/').map_or(0, |i| i + 1);
    if trimmed == path.len() || trimmed == 0 {
        return call.original("path_symlink", args);
    }
    let exists = call.with_scratch(FILESTAT_SIZE, |call, _, at| {
        call.lstat_into(fd, new_path, trimmed as u64, at)
    })?;
    Ok(vec![errno(match exists {
        Some(Errno::Success) => Errno::Exist,
        Some(other) => other,
        None => return call.original("path_symlink", args),
    })])
}

/// `path_unlink_file(fd, path, path_len)`: wasmer's `path_unlink_file_internal` drops the
/// entry from its directory cache and its link count before it finds that the entry is a
/// directory (ISDIR), after which the directory can no longer be removed (NOENT). A directory
/// is answered ISDIR here without calling wasmer, and a path ending in "/" that names a
/// non-directory NOTDIR (unlink(2)).
pub(super) fn unlink_checking_type(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let (fd, path, path_len) = (
        i32_arg(args, 0)?,
        i32_arg(args, 1)? as u64,
        i32_arg(args, 2)? as u64,
    );
    let Some(memory) = call.memory()? else {
        return call.original("path_unlink_file", args);
    };
    let trailing_slash = read_bytes(&call.view(&memory), path, path_len)?.ends_with(b"/");
    let filetype = call.filetype_at(fd, path, path_len)?;
    match filetype {
        Some(FILETYPE_DIRECTORY) => Ok(vec![errno(Errno::Isdir)]),
        Some(_) if trailing_slash => Ok(vec![errno(Errno::Notdir)]),
        _ => call.original("path_unlink_file", args),
    }
}

/// `path_rename`: renaming a directory onto a non-directory, or a non-directory onto a
/// directory, fails in the kernel with ENOTDIR / EISDIR, but virtual-fs turns both into
/// `UnknownError` (`From<io::Error> for FsError`), which wasmer answers as IO. When wasmer says
/// IO, the two paths' types give the errno WASI specifies.
pub(super) fn rename_checking_types(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let results = call.original("path_rename", args)?;
    if errno_of(&results) != Some(Errno::Io) {
        return Ok(results);
    }
    let (old_fd, old_path, old_len) = (i32_arg(args, 0)?, i32_arg(args, 1)?, i32_arg(args, 2)?);
    let (new_fd, new_path, new_len) = (i32_arg(args, 3)?, i32_arg(args, 4)?, i32_arg(args, 5)?);
    let old = call.filetype_at(old_fd, old_path.into(), old_len.into())?;
    let new = call.filetype_at(new_fd, new_path.into(), new_len.into())?;
    Ok(match (old, new) {
        (Some(FILETYPE_DIRECTORY), Some(t)) if t != FILETYPE_DIRECTORY => {
            vec![errno(Errno::Notdir)]
        }
        (Some(t), Some(FILETYPE_DIRECTORY)) if t != FILETYPE_DIRECTORY => vec![errno(Errno::Isdir)],
        _ => results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_climb_is_the_path_up_to_its_last_parent_component() {
        assert_eq!(
            up_to_last_parent(b"a/b/../c/../d"),
            Some(&b"a/b/../c/.."[..])
        );
        assert_eq!(up_to_last_parent(b".."), Some(&b".."[..]));
        assert_eq!(up_to_last_parent(b"a/..b/c.."), None);
        assert_eq!(up_to_last_parent(b"a/b"), None);
    }

    #[test]
    fn climbing_out_is_counted_without_following_anything() {
        assert!(!climbs_out(b"dir/.//nested/../../dir/nested/.."));
        assert!(climbs_out(b"dir/nested/../../.."));
        assert!(climbs_out(b"./.."));
        assert!(!climbs_out(b"a//b/../.."));
    }
}
