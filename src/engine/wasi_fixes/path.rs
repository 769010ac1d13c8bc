//! The fixes to the `path_*` calls: `path_open`, `path_readlink`, `path_symlink` and
//! `path_unlink_file`.

use wasmer::{RuntimeError, Value};
use wasmer_wasix::types::wasi::{Errno, Rights};

use super::memory::{memory_error, read_bytes, FILESTAT_SIZE, FILETYPE_DIRECTORY};
use super::{errno, errno_of, i32_arg, Call, FILE_ONLY_RIGHTS};

/// The longest symlink target read back whole for a truncating `path_readlink` (PATH_MAX).
const READLINK_MAX: u64 = 4096;

/// `path_open(dirfd, dirflags, path, path_len, oflags, base, inheriting, fdflags, fd_out)`,
/// checked where wasmer's `path_open_internal` (syscalls/wasix/path_open2.rs) is lax:
/// - an absolute path is resolved from the root (`VIRTUAL_ROOT_FD`) instead of refused: WASI
///   paths are relative to their directory descriptor (PERM);
/// - OFLAGS_TRUNC is honoured without the directory's PATH_FILESTAT_SET_SIZE right;
/// - a base descriptor that is not a directory fails the PATH_OPEN rights check (ACCES)
///   rather than NOTDIR;
/// - a directory is opened with the file-only rights wasmer implies ([`FILE_ONLY_RIGHTS`]),
///   which are dropped again.
pub(super) fn open_checked(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let dirfd = i32_arg(args, 0)?;
    let (path, path_len) = (i32_arg(args, 2)? as u64, i32_arg(args, 3)? as u64);
    let oflags = i32_arg(args, 4)?;
    let out = i32_arg(args, 8)? as u64;
    if let Some(memory) = call.memory()? {
        if read_bytes(&call.view(&memory), path, path_len.min(1))?.first() == Some(&b'/') {
            return Ok(vec![errno(Errno::Perm)]);
        }
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
        Some(Errno::Success) => drop_file_rights_of_directory(call, out)?,
        _ => {}
    }
    Ok(results)
}

const OFLAGS_TRUNC: u32 = 1 << 3;

/// After `path_open` wrote the new descriptor at `out`: if it is a directory, drops the
/// [`FILE_ONLY_RIGHTS`] wasmer gave it.
fn drop_file_rights_of_directory(call: &mut Call<'_>, out: u64) -> Result<(), RuntimeError> {
    let Some(memory) = call.memory()? else {
        return Ok(());
    };
    let mut fd = [0u8; 4];
    call.view(&memory)
        .read(out, &mut fd)
        .map_err(memory_error)?;
    let fd = u32::from_le_bytes(fd);
    if let Some(Ok(info)) = call.fdstat(fd)? {
        if info.filetype == FILETYPE_DIRECTORY && info.base & FILE_ONLY_RIGHTS.bits() != 0 {
            let args = [
                Value::I32(fd as i32),
                Value::I64((info.base & !FILE_ONLY_RIGHTS.bits()) as i64),
                Value::I64(info.inheriting as i64),
            ];
            call.original("fd_fdstat_set_rights", &args)?;
        }
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
        let stat = [
            Value::I32(fd as i32),
            Value::I32(0),
            Value::I32(new_path as i32),
            Value::I32(trimmed as i32),
            Value::I32(at as i32),
        ];
        call.original_errno("path_filestat_get", &stat)
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
