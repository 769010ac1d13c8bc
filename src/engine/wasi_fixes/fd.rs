//! The fixes to the `fd_*` calls: `fd_close` and `fd_renumber` on the guest's descriptor
//! table, the reserved fd 3 in `fd_prestat_get`, `fd_fdstat_get` and `fd_readdir`.

use wasmer::{RuntimeError, Value};
use wasmer_wasix::types::wasi::{Errno, Rights};

use super::descriptors::Closed;
use super::host;
use super::memory::{
    memory_error, read_bytes, read_u32, read_u64, read_u8, write_host_stat, FDSTAT_RIGHTS_BASE,
    FILETYPE_DIRECTORY,
};
use super::{errno, errno_of, i32_arg, i64_arg, Call};

/// WASI's `filetype::unknown` and `filetype::character_device`.
const FILETYPE_UNKNOWN: u8 = 0;
const FILETYPE_CHARACTER_DEVICE: u8 = 2;

/// A `prestat` whose tag is not `preopentype::dir` (0): "not a preopened directory". Callers
/// that enumerate preopens (wasi-libc, the Rust `wasi` crate) skip it and go on to fd 4.
const NOT_A_PREOPEN: [u8; 8] = [1, 0, 0, 0, 0, 0, 0, 0];

/// WASI's `dirent` header (24 bytes, the name follows): d_next (u64) at 0, d_ino (u64) at 8,
/// d_namlen (u32) at 16, d_type (u8) at 20.
const DIRENT_SIZE: u64 = 24;
const DIRENT_INO: u64 = 8;
const DIRENT_NAMLEN: u64 = 16;

/// `fd_prestat_get(fd, buf)` on the reserved fd 3: "not a preopened directory".
pub(super) fn not_a_preopen(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let buf = i32_arg(args, 1)? as u64;
    let e = match call.memory()? {
        Some(memory) => match call.view(&memory).write(buf, &NOT_A_PREOPEN) {
            Ok(()) => Errno::Success,
            Err(_) => Errno::Fault,
        },
        None => Errno::Badf,
    };
    Ok(vec![errno(e)])
}

/// `fd_close(fd)`: the guest's descriptor goes from the table, and wasmer's with it.
/// wasmer's `close_fd_and_capture_flush` keeps a descriptor of a preopened directory open
/// (answering success); the guest's is closed all the same.
pub(super) fn close(call: &mut Call<'_>, args: &[Value]) -> Result<Vec<Value>, RuntimeError> {
    let fd = i32_arg(args, 0)?;
    let closed = call.descriptors()?.close(fd);
    match closed {
        Ok(Closed::Wasmer(wasmer_fd)) => call.original("fd_close", &[Value::I32(wasmer_fd as i32)]),
        Ok(Closed::Reserved) => Ok(vec![errno(Errno::Success)]),
        Err(e) => Ok(vec![errno(e)]),
    }
}

/// `fd_fdstat_get(fd, buf)`, three corrections to `WasiFs::fdstat`:
/// - fds 0, 1 and 2 are answered from constants even once closed or renumbered away; wasmer's
///   `fd_advise` (no effect, no memory) tells whether the descriptor is still open;
/// - wasmer calls stdin, stdout and stderr character devices whatever they are, so
///   wasi-libc's `isatty()` (a character device without FD_SEEK and FD_TELL) was true for a
///   FIFO or a log file, and programs coloured their logs with terminal escapes. As wasmtime
///   does, stdio is a character device (without FD_SEEK, FD_TELL) only when it is a terminal,
///   else of unknown type;
/// - a directory reports FD_WRITE in its base rights (wasmer uses it on a directory to mean
///   "files may be written below", `path_open2.rs` `parent_rights`), but `path_open` refuses
///   to open a directory with FD_WRITE: a guest reopening a directory with the rights it was
///   told would get ISDIR. Directories are reported without FD_WRITE.
pub(super) fn fdstat_fixed(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let (fd, buf) = (i32_arg(args, 0)?, i32_arg(args, 1)? as u64);
    if fd <= 2 {
        let advise = [
            Value::I32(fd as i32),
            Value::I64(0),
            Value::I64(0),
            Value::I32(0),
        ];
        if call.original_errno("fd_advise", &advise)? == Errno::Badf {
            return Ok(vec![errno(Errno::Badf)]);
        }
    }
    let results = call.original("fd_fdstat_get", args)?;
    if errno_of(&results) != Some(Errno::Success) {
        return Ok(results);
    }
    let Some(memory) = call.memory()? else {
        return Ok(results);
    };
    let terminals = call.shared.stdio_terminals;
    let view = call.view(&memory);
    if let Some(terminal) = terminals.get(fd as usize) {
        let (filetype, base) = if *terminal {
            let not_seekable = Rights::FD_SEEK.bits() | Rights::FD_TELL.bits();
            (
                FILETYPE_CHARACTER_DEVICE,
                read_u64(&view, buf + FDSTAT_RIGHTS_BASE)? & !not_seekable,
            )
        } else {
            (FILETYPE_UNKNOWN, read_u64(&view, buf + FDSTAT_RIGHTS_BASE)?)
        };
        view.write(buf, &[filetype]).map_err(memory_error)?;
        view.write(buf + FDSTAT_RIGHTS_BASE, &base.to_le_bytes())
            .map_err(memory_error)?;
    }
    if read_u8(&view, buf)? == FILETYPE_DIRECTORY {
        let base = read_u64(&view, buf + FDSTAT_RIGHTS_BASE)? & !Rights::FD_WRITE.bits();
        view.write(buf + FDSTAT_RIGHTS_BASE, &base.to_le_bytes())
            .map_err(memory_error)?;
    }
    Ok(results)
}

/// `fd_filestat_get(fd, buf)`: the stat is the kernel's (fstat(2) of the descriptor's host
/// descriptor), for the reasons at `path::stat_from_host`; stdio and descriptors the table
/// does not know on the host keep wasmer's. (Writes are done when `fd_write` returns, see
/// `engine::host_file`, so size and times are current.)
pub(super) fn fd_stat_from_host(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let results = call.original("fd_filestat_get", args)?;
    if errno_of(&results) != Some(Errno::Success) {
        return Ok(results);
    }
    let (fd, buf) = (i32_arg(args, 0)?, i32_arg(args, 1)? as u64);
    let stat = call.descriptors()?.host(fd).and_then(|h| host::stat(&h));
    if let (Some(stat), Some(memory)) = (stat, call.memory()?) {
        write_host_stat(&call.view(&memory), buf, &stat)?;
    }
    Ok(results)
}

/// `fd_filestat_set_times(fd, atim, mtim, fstflags)`: wasmer's checks the rights and flags
/// and records the times in its own stat; for a directory that is all, and for a file its
/// error is dropped. After wasmer's answer, the times are set through the descriptor's host
/// descriptor (see `host::set_times`), and the kernel's refusal, if any, is the answer.
pub(super) fn fd_times_on_the_file(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let results = call.original("fd_filestat_set_times", args)?;
    if errno_of(&results) != Some(Errno::Success) {
        return Ok(results);
    }
    let fd = i32_arg(args, 0)?;
    let (atim, mtim, fstflags) = (i64_arg(args, 1)?, i64_arg(args, 2)?, i32_arg(args, 3)?);
    let (Some(host), Ok(times)) = (
        call.descriptors()?.host(fd),
        host::times(atim, mtim, fstflags as u16),
    ) else {
        return Ok(results);
    };
    Ok(match host::set_times(&host, times) {
        Some(e) => vec![errno(e)],
        None => results,
    })
}

/// `fd_readdir(fd, buf, buf_len, cookie, bufused)`: wasmer's (syscalls/wasi/fd_readdir.rs)
/// writes d_ino 0 for every entry it reads from the host directory and for "." and ".." (its
/// own TODO). An entry's d_ino is the inode of what the name refers to without following it,
/// so each entry written whole in `buf` with d_ino 0 gets the st_ino the guest is told
/// elsewhere: "." the directory's own (as `fd_filestat_get(fd)`), any other name that of
/// `path_filestat_get(fd, 0, name)` — the kernel's when the directory is known on the host
/// (see `Call::inode`), else wasmer's. ".." keeps 0: its inode lies outside the descriptor.
/// An entry stays 0 when neither can say (wasmer needs FD_FILESTAT_GET / PATH_FILESTAT_GET)
/// or the name no longer resolves.
pub(super) fn readdir_with_inodes(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let results = call.original("fd_readdir", args)?;
    if errno_of(&results) != Some(Errno::Success) {
        return Ok(results);
    }
    let (fd, buf, bufused) = (
        i32_arg(args, 0)?,
        i32_arg(args, 1)? as u64,
        i32_arg(args, 4)? as u64,
    );
    let Some(memory) = call.memory()? else {
        return Ok(results);
    };
    let entries = {
        let view = call.view(&memory);
        let used = u64::from(read_u32(&view, bufused)?);
        entries_without_inode(&read_bytes(&view, buf, used)?)
    };
    let mut dir_ino = None;
    for (at, name) in entries {
        // Each lookup borrows scratch memory, restored to what wasmer wrote before the patch.
        let ino = match name.as_slice() {
            b".." => continue,
            b"." => {
                if dir_ino.is_none() {
                    dir_ino = call.inode(fd)?;
                }
                dir_ino
            }
            _ => call.inode_at(fd, buf + at + DIRENT_SIZE, name.len() as u64)?,
        };
        if let Some(ino) = ino {
            call.view(&memory)
                .write(buf + at + DIRENT_INO, &ino.to_le_bytes())
                .map_err(memory_error)?;
        }
    }
    Ok(results)
}

/// The whole entries with d_ino 0 among the `dirent`s in `bytes`: (offset, name).
fn entries_without_inode(bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let field = |at: u64, len: u64| &bytes[at as usize..(at + len) as usize];
    let mut found = Vec::new();
    let mut at = 0u64;
    while at + DIRENT_SIZE <= bytes.len() as u64 {
        let namlen = u32::from_le_bytes(field(at + DIRENT_NAMLEN, 4).try_into().unwrap_or([0; 4]));
        let end = at + DIRENT_SIZE + u64::from(namlen);
        if end > bytes.len() as u64 {
            break;
        }
        if field(at + DIRENT_INO, 8).iter().all(|b| *b == 0) {
            found.push((at, field(at + DIRENT_SIZE, u64::from(namlen)).to_vec()));
        }
        at = end;
    }
    found
}

/// `fd_renumber(from, to)`: a move in the guest's table (see `descriptors`); wasmer's
/// descriptor that `to` held is closed. wasmer's own renumber (`WasiFs::dup2_at`) refuses to
/// replace a preopen, gives `to` the source's inheriting rights as its base rights, and leaves
/// `from` open. For a WASIX module (numbers are wasmer's) it is wasmer's renumber, then the
/// source closed.
pub(super) fn renumber(call: &mut Call<'_>, args: &[Value]) -> Result<Vec<Value>, RuntimeError> {
    let (from, to) = (i32_arg(args, 0)?, i32_arg(args, 1)?);
    if call.descriptors()?.same_numbers() {
        let (Ok(_), Ok(_)) = (call.resolve(from), call.resolve(to)) else {
            return Ok(vec![errno(Errno::Badf)]);
        };
        let results = call.original("fd_renumber", args)?;
        if errno_of(&results) == Some(Errno::Success) && from != to {
            call.original("fd_close", &[Value::I32(from as i32)])?;
            call.descriptors()?.close(from).ok();
        }
        return Ok(results);
    }
    let displaced = call.descriptors()?.renumber(from, to);
    match displaced {
        Ok(Some(wasmer_fd)) => {
            call.original("fd_close", &[Value::I32(wasmer_fd as i32)])?;
            Ok(vec![errno(Errno::Success)])
        }
        Ok(None) => Ok(vec![errno(Errno::Success)]),
        Err(e) => Ok(vec![errno(e)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirent(ino: u64, name: &str) -> Vec<u8> {
        let mut d = vec![0u8; DIRENT_SIZE as usize];
        d[8..16].copy_from_slice(&ino.to_le_bytes());
        d[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
        d.extend_from_slice(name.as_bytes());
        d
    }

    #[test]
    fn only_whole_entries_without_an_inode_are_found() {
        let mut buf = dirent(0, ".");
        buf.extend(dirent(7, "known"));
        let file = buf.len() as u64;
        buf.extend(dirent(0, "file"));
        let dots = buf.len() as u64;
        buf.extend(dirent(0, ".."));
        let found = entries_without_inode(&buf);
        let want: Vec<(u64, Vec<u8>)> = vec![
            (0, b".".to_vec()),
            (file, b"file".to_vec()),
            (dots, b"..".to_vec()),
        ];
        assert_eq!(found, want);
        // An entry whose name did not fit in the buffer is left alone.
        assert_eq!(
            entries_without_inode(&buf[..buf.len() - 1]),
            want[..2].to_vec()
        );
    }
}
