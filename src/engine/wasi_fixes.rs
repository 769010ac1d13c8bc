//! Corrections to wasmer-wasix 0.704.2 WASI calls, applied by wrapping their imports (through
//! wasmer-wasix's public `InstantiationHook`), never by patching wasmer. Every wrapper calls
//! wasmer's own functions; it only answers for the case wasmer gets wrong, or adjusts the
//! arguments or the errno around wasmer's answer. What each fix corrects, and which wasmer
//! function it works around, is said at the fix.
//!
//! Wrappers that need to learn something about a descriptor (its type, its rights) ask
//! wasmer's own `fd_fdstat_get`, writing its answer into a few bytes of guest memory that are
//! borrowed and restored around the call (see [`Scratch`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use wasmer::{
    Function, FunctionEnv, FunctionEnvMut, Imports, Instance, Memory, MemoryView, Module,
    RuntimeError, StoreMut, Value,
};
use wasmer_wasix::runtime::{InstantiationHook, InstantiationState};
use wasmer_wasix::types::wasi::{Errno, Rights};
use wasmer_wasix::VIRTUAL_ROOT_FD;

const WASI_P1: &str = "wasi_snapshot_preview1";

/// A `prestat` whose tag is not `preopentype::dir` (0): "not a preopened directory". Callers
/// that enumerate preopens (wasi-libc, the Rust `wasi` crate) skip it and go on to fd 4.
const NOT_A_PREOPEN: [u8; 8] = [1, 0, 0, 0, 0, 0, 0, 0];

/// Rights that only make sense on a regular file. wasmer's `path_open` (syscalls/wasix/
/// path_open2.rs, `implied_fd_rights`) grants FD_SEEK, FD_TELL and FD_ADVISE to every
/// descriptor it opens, directories included, so `fd_seek` on a directory succeeds; WASI
/// runtimes give directories none of these, and the WASI test suite checks it.
pub const FILE_ONLY_RIGHTS: Rights = Rights::FD_SEEK
    .union(Rights::FD_TELL)
    .union(Rights::FD_ALLOCATE)
    .union(Rights::FD_FILESTAT_SET_SIZE);

/// Errnos wasmer answers that WASI says differently, per call: (call, wasmer's, WASI's).
const ERRNO_FIXES: &[(&str, Errno, Errno)] = &[
    // syscalls/wasi/fd_prestat_dir_name.rs: a too-short buffer; WASI runtimes say NAMETOOLONG.
    ("fd_prestat_dir_name", Errno::Overflow, Errno::Nametoolong),
    // `__sock_actor_mut` (syscalls/mod.rs) checks the SOCK_SHUTDOWN right, which only sockets
    // carry, before it checks that the descriptor is a socket. POSIX and WASI say NOTSOCK.
    ("sock_shutdown", Errno::Access, Errno::Notsock),
    // These calls answer ACCES only from their rights check (a descriptor without FD_READ,
    // FD_WRITE, FD_SEEK, ...): WASI's errno for a missing right is NOTCAPABLE.
    ("fd_read", Errno::Access, Errno::Notcapable),
    ("fd_pread", Errno::Access, Errno::Notcapable),
    ("fd_write", Errno::Access, Errno::Notcapable),
    ("fd_pwrite", Errno::Access, Errno::Notcapable),
    ("fd_seek", Errno::Access, Errno::Notcapable),
    ("fd_tell", Errno::Access, Errno::Notcapable),
    ("fd_allocate", Errno::Access, Errno::Notcapable),
    ("fd_filestat_set_size", Errno::Access, Errno::Notcapable),
];

/// The WASI calls taking descriptors, with the positions of their descriptor arguments; each
/// answers BADF for fd 3 (see [`reserved_fd`]). `fd_close` and `fd_prestat_get` are handled by
/// their own fixes.
const FD_ARGS: &[(&str, &[usize])] = &[
    ("fd_advise", &[0]),
    ("fd_allocate", &[0]),
    ("fd_datasync", &[0]),
    ("fd_fdstat_get", &[0]),
    ("fd_fdstat_set_flags", &[0]),
    ("fd_fdstat_set_rights", &[0]),
    ("fd_filestat_get", &[0]),
    ("fd_filestat_set_size", &[0]),
    ("fd_filestat_set_times", &[0]),
    ("fd_pread", &[0]),
    ("fd_prestat_dir_name", &[0]),
    ("fd_pwrite", &[0]),
    ("fd_read", &[0]),
    ("fd_readdir", &[0]),
    ("fd_renumber", &[0, 1]),
    ("fd_seek", &[0]),
    ("fd_sync", &[0]),
    ("fd_tell", &[0]),
    ("fd_write", &[0]),
    ("path_create_directory", &[0]),
    ("path_filestat_get", &[0]),
    ("path_filestat_set_times", &[0]),
    ("path_link", &[0, 3]),
    ("path_open", &[0]),
    ("path_readlink", &[0]),
    ("path_remove_directory", &[0]),
    ("path_rename", &[0, 3]),
    ("path_symlink", &[2]),
    ("path_unlink_file", &[0]),
    ("sock_accept", &[0]),
    ("sock_recv", &[0]),
    ("sock_send", &[0]),
    ("sock_shutdown", &[0]),
];

/// A fix that replaces wasmer's function for one call (it may still call it).
type Handler = fn(&mut Call<'_>, &[Value]) -> Result<Vec<Value>, RuntimeError>;

/// The calls with a fix of their own.
const HANDLERS: &[(&str, Handler)] = &[
    ("fd_prestat_get", prestat_hiding_root),
    ("fd_close", close_reserved_root),
    ("fd_fdstat_get", fdstat_fixed),
    ("fd_readdir", readdir_with_inodes),
    ("fd_renumber", renumber_closing_source),
    ("path_open", open_checked),
    ("path_readlink", readlink_truncating),
    ("path_symlink", symlink_checked),
    ("path_unlink_file", unlink_checking_type),
    ("poll_oneoff", poll_zero_timeouts_fire),
];

#[derive(Debug, Default)]
pub struct WasiFixes;

/// What every wrapper of one instance shares: wasmer's functions, the guest's memory (known
/// once the instance exists), and whether the guest closed fd 3.
#[derive(Default)]
struct Shared {
    originals: HashMap<String, Function>,
    memory: Mutex<Option<Memory>>,
    root_fd_closed: AtomicBool,
}

/// The environment of one wrapped import.
struct Wrapper {
    name: &'static str,
    shared: Arc<Shared>,
}

impl InstantiationHook for WasiFixes {
    fn prepare_imports(
        &self,
        _module: &Module,
        store: &mut StoreMut,
        imports: &mut Imports,
    ) -> anyhow::Result<InstantiationState> {
        let names = wrapped_names();
        let mut originals = HashMap::new();
        for name in &names {
            if let Some(wasmer::Extern::Function(f)) = imports.get_export(WASI_P1, name) {
                originals.insert(name.to_string(), f);
            }
        }
        let types: Vec<_> = names
            .iter()
            .filter_map(|n| originals.get(*n).map(|f| (*n, f.ty(store))))
            .collect();
        let shared = Arc::new(Shared {
            originals,
            ..Shared::default()
        });
        for (name, ty) in types {
            let env = FunctionEnv::new(
                store,
                Wrapper {
                    name,
                    shared: shared.clone(),
                },
            );
            imports.define(
                WASI_P1,
                name,
                Function::new_with_env(store, &env, ty, wrapped),
            );
        }
        Ok(InstantiationState::new(shared))
    }

    fn configure_new_instance(
        &self,
        _module: &Module,
        _store: &mut StoreMut,
        instance: &Instance,
        imported_memory: Option<&Memory>,
        state: InstantiationState,
    ) -> anyhow::Result<()> {
        let shared: Arc<Shared> = state.take()?;
        let memory = imported_memory
            .cloned()
            .or_else(|| instance.exports.get_memory("memory").ok().cloned());
        *shared
            .memory
            .lock()
            .map_err(|_| anyhow::anyhow!("memory slot poisoned"))? = memory;
        Ok(())
    }
}

/// Every call some fix applies to.
fn wrapped_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = ERRNO_FIXES.iter().map(|(n, _, _)| *n).collect();
    names.extend(FD_ARGS.iter().map(|(n, _)| *n));
    names.extend(HANDLERS.iter().map(|(n, _)| *n));
    names.sort_unstable();
    names.dedup();
    names
}

/// Every wrapped import: fd 3 is refused, then the call's own fix (or wasmer's function)
/// runs, then wasmer's errno is translated where WASI says otherwise.
fn wrapped(mut env: FunctionEnvMut<Wrapper>, args: &[Value]) -> Result<Vec<Value>, RuntimeError> {
    let (wrapper, store) = env.data_and_store_mut();
    let name = wrapper.name;
    let mut call = Call {
        shared: &wrapper.shared,
        store,
    };
    if reserved_fd(name, args) {
        return Ok(vec![errno(Errno::Badf)]);
    }
    let results = match HANDLERS.iter().find(|(n, _)| *n == name) {
        Some((_, handler)) => handler(&mut call, args)?,
        None => call.original(name, args)?,
    };
    Ok(translate_errno(name, results))
}

/// fd 3 is wasmer's fixed root descriptor (`VIRTUAL_ROOT_FD`), which wasmer special-cases:
/// `WasiFs::get_fd`/`get_fd_inode` fall back to the root for it even once closed, `fdstat`
/// reports all rights, and it can be neither closed nor renumbered over. The guest's root is
/// the preopen "/" at fd 4 (see `wasmer::setup_guest_fs`), so fd 3 is reserved: it is not a
/// preopened directory (`fd_prestat_get`), it can be closed once, and every other call on it
/// answers BADF, as for a descriptor the guest was never given.
fn reserved_fd(name: &str, args: &[Value]) -> bool {
    let Some((_, positions)) = FD_ARGS.iter().find(|(n, _)| *n == name) else {
        return false;
    };
    positions
        .iter()
        .any(|&i| matches!(args.get(i), Some(Value::I32(fd)) if *fd as u32 == VIRTUAL_ROOT_FD))
}

fn translate_errno(name: &str, mut results: Vec<Value>) -> Vec<Value> {
    for (call, from, to) in ERRNO_FIXES {
        if *call == name && errno_of(&results) == Some(*from) {
            results[0] = errno(*to);
        }
    }
    results
}

fn errno(e: Errno) -> Value {
    Value::I32(e as i32)
}

fn errno_of(results: &[Value]) -> Option<Errno> {
    match results.first() {
        Some(Value::I32(code)) => u16::try_from(*code)
            .ok()
            .and_then(|c| Errno::try_from(c).ok()),
        _ => None,
    }
}

fn i32_arg(args: &[Value], i: usize) -> Result<u32, RuntimeError> {
    match args.get(i) {
        Some(Value::I32(v)) => Ok(*v as u32),
        _ => Err(RuntimeError::new("WASI call with an unexpected signature")),
    }
}

/// One call of a wrapped import: wasmer's functions and the guest's memory.
struct Call<'a> {
    shared: &'a Shared,
    store: StoreMut<'a>,
}

/// What `fd_fdstat_get` says of a descriptor.
#[derive(Debug, Clone, Copy)]
struct FdInfo {
    filetype: u8,
    base: u64,
    inheriting: u64,
}

const FILETYPE_DIRECTORY: u8 = 3;
/// Offsets in WASI's `fdstat` (24 bytes): filetype (u8) at 0, rights base and inheriting
/// (u64) at 8 and 16.
const FDSTAT_SIZE: u64 = 24;
const FDSTAT_RIGHTS_BASE: u64 = 8;
const FDSTAT_RIGHTS_INHERITING: u64 = 16;
/// WASI's `filestat` is 64 bytes, its filetype (u8) at 16.
const FILESTAT_SIZE: u64 = 64;
const FILESTAT_FILETYPE: u64 = 16;
/// WASI's `dirent` header (24 bytes, the name follows): d_next (u64) at 0, d_ino (u64) at 8,
/// d_namlen (u32) at 16, d_type (u8) at 20.
const DIRENT_SIZE: u64 = 24;
const DIRENT_INO: u64 = 8;
const DIRENT_NAMLEN: u64 = 16;
/// WASI's `filestat`: st_ino (u64) at 8.
const FILESTAT_INO: u64 = 8;
/// The longest symlink target read back whole for a truncating `path_readlink` (PATH_MAX).
const READLINK_MAX: u64 = 4096;

impl Call<'_> {
    /// wasmer's own function for `name`.
    fn original(&mut self, name: &str, args: &[Value]) -> Result<Vec<Value>, RuntimeError> {
        let f = self
            .shared
            .originals
            .get(name)
            .ok_or_else(|| RuntimeError::new(format!("{name} is not imported")))?;
        Ok(f.call(&mut self.store, args)?.into_vec())
    }

    /// wasmer's function for `name`, for its errno alone.
    fn original_errno(&mut self, name: &str, args: &[Value]) -> Result<Errno, RuntimeError> {
        let results = self.original(name, args)?;
        Ok(errno_of(&results).unwrap_or(Errno::Inval))
    }

    fn memory(&self) -> Result<Option<Memory>, RuntimeError> {
        Ok(self
            .shared
            .memory
            .lock()
            .map_err(|_| RuntimeError::new("memory slot poisoned"))?
            .clone())
    }

    fn view(&self, memory: &Memory) -> MemoryView<'_> {
        memory.view(&self.store)
    }

    /// wasmer's `fd_fdstat_get` for `fd`: Ok(None) when no scratch memory is at hand.
    fn fdstat(&mut self, fd: u32) -> Result<Option<Result<FdInfo, Errno>>, RuntimeError> {
        self.with_scratch(FDSTAT_SIZE, |call, memory, at| {
            let args = [Value::I32(fd as i32), Value::I32(at as i32)];
            let e = call.original_errno("fd_fdstat_get", &args)?;
            if e != Errno::Success {
                return Ok(Err(e));
            }
            let view = call.view(memory);
            Ok(Ok(FdInfo {
                filetype: read_u8(&view, at)?,
                base: read_u64(&view, at + FDSTAT_RIGHTS_BASE)?,
                inheriting: read_u64(&view, at + FDSTAT_RIGHTS_INHERITING)?,
            }))
        })
    }

    /// st_ino from wasmer's `fd_filestat_get` for `fd`: Ok(None) when it cannot be had (no
    /// scratch memory, or the descriptor lacks FD_FILESTAT_GET).
    fn inode(&mut self, fd: u32) -> Result<Option<u64>, RuntimeError> {
        let ino = self.with_scratch(FILESTAT_SIZE, |call, memory, at| {
            let args = [Value::I32(fd as i32), Value::I32(at as i32)];
            if call.original_errno("fd_filestat_get", &args)? != Errno::Success {
                return Ok(None);
            }
            read_u64(&call.view(memory), at + FILESTAT_INO).map(Some)
        })?;
        Ok(ino.flatten())
    }

    /// st_ino from wasmer's `path_filestat_get(fd, 0, path)` (the entry itself, not followed),
    /// `path` being `len` bytes of guest memory at `at`: Ok(None) when it cannot be had.
    fn inode_at(&mut self, fd: u32, path: u64, len: u64) -> Result<Option<u64>, RuntimeError> {
        let ino = self.with_scratch(FILESTAT_SIZE, |call, memory, at| {
            let args = [
                Value::I32(fd as i32),
                Value::I32(0),
                Value::I32(path as i32),
                Value::I32(len as i32),
                Value::I32(at as i32),
            ];
            if call.original_errno("path_filestat_get", &args)? != Errno::Success {
                return Ok(None);
            }
            read_u64(&call.view(memory), at + FILESTAT_INO).map(Some)
        })?;
        Ok(ino.flatten())
    }

    /// Runs `f` with `len` bytes of guest memory it may overwrite, at the top of the memory,
    /// restored afterwards. The guest is inside this very call, so it cannot observe them —
    /// unless another thread shares the memory: with a shared memory this answers Ok(None).
    fn with_scratch<R>(
        &mut self,
        len: u64,
        f: impl FnOnce(&mut Self, &Memory, u64) -> Result<R, RuntimeError>,
    ) -> Result<Option<R>, RuntimeError> {
        let Some(memory) = self.memory()? else {
            return Ok(None);
        };
        if memory.ty(&self.store).shared {
            return Ok(None);
        }
        let size = self.view(&memory).data_size();
        if size < len {
            return Ok(None);
        }
        let scratch = Scratch::borrow(&self.view(&memory), size - len, len)?;
        let result = f(self, &memory, scratch.at);
        scratch.restore(&self.view(&memory))?;
        result.map(Some)
    }
}

/// Guest memory borrowed by a wrapper, with what it held.
struct Scratch {
    at: u64,
    saved: Vec<u8>,
}

impl Scratch {
    fn borrow(view: &MemoryView, at: u64, len: u64) -> Result<Scratch, RuntimeError> {
        let mut saved = vec![0; len as usize];
        view.read(at, &mut saved).map_err(memory_error)?;
        Ok(Scratch { at, saved })
    }

    fn restore(self, view: &MemoryView) -> Result<(), RuntimeError> {
        view.write(self.at, &self.saved).map_err(memory_error)
    }
}

fn memory_error(e: wasmer::MemoryAccessError) -> RuntimeError {
    RuntimeError::new(format!("guest memory: {e}"))
}

fn read_u8(view: &MemoryView, at: u64) -> Result<u8, RuntimeError> {
    let mut b = [0u8; 1];
    view.read(at, &mut b).map_err(memory_error)?;
    Ok(b[0])
}

fn read_u32(view: &MemoryView, at: u64) -> Result<u32, RuntimeError> {
    let mut b = [0u8; 4];
    view.read(at, &mut b).map_err(memory_error)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(view: &MemoryView, at: u64) -> Result<u64, RuntimeError> {
    let mut b = [0u8; 8];
    view.read(at, &mut b).map_err(memory_error)?;
    Ok(u64::from_le_bytes(b))
}

fn read_bytes(view: &MemoryView, at: u64, len: u64) -> Result<Vec<u8>, RuntimeError> {
    let mut b = vec![0; len as usize];
    view.read(at, &mut b).map_err(memory_error)?;
    Ok(b)
}

/// `fd_prestat_get(fd, buf)`: fd 3 answers "not a preopen" (BADF once the guest closed it);
/// every other fd goes to wasmer.
fn prestat_hiding_root(call: &mut Call<'_>, args: &[Value]) -> Result<Vec<Value>, RuntimeError> {
    let (fd, buf) = (i32_arg(args, 0)?, i32_arg(args, 1)? as u64);
    if fd != VIRTUAL_ROOT_FD {
        return call.original("fd_prestat_get", args);
    }
    if call.shared.root_fd_closed.load(Ordering::SeqCst) {
        return Ok(vec![errno(Errno::Badf)]);
    }
    let e = match call.memory()? {
        Some(memory) => match call.view(&memory).write(buf, &NOT_A_PREOPEN) {
            Ok(()) => Errno::Success,
            Err(_) => Errno::Fault,
        },
        None => Errno::Badf,
    };
    Ok(vec![errno(e)])
}

/// `fd_close(fd)`: the reserved fd 3 closes once (then it is BADF everywhere); wasmer's
/// `close_fd_and_capture_flush` would skip it as a preopen and leave it open.
fn close_reserved_root(call: &mut Call<'_>, args: &[Value]) -> Result<Vec<Value>, RuntimeError> {
    if i32_arg(args, 0)? != VIRTUAL_ROOT_FD {
        return call.original("fd_close", args);
    }
    let was_closed = call.shared.root_fd_closed.swap(true, Ordering::SeqCst);
    Ok(vec![errno(if was_closed {
        Errno::Badf
    } else {
        Errno::Success
    })])
}

/// `fd_fdstat_get(fd, buf)`, two corrections to `WasiFs::fdstat`:
/// - fds 0, 1 and 2 are answered from constants even once closed or renumbered away; wasmer's
///   `fd_advise` (no effect, no memory) tells whether the descriptor is still open;
/// - a directory reports FD_WRITE in its base rights (wasmer uses it on a directory to mean
///   "files may be written below", `path_open2.rs` `parent_rights`), but `path_open` refuses
///   to open a directory with FD_WRITE: a guest reopening a directory with the rights it was
///   told would get ISDIR. Directories are reported without FD_WRITE.
fn fdstat_fixed(call: &mut Call<'_>, args: &[Value]) -> Result<Vec<Value>, RuntimeError> {
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
    let view = call.view(&memory);
    if read_u8(&view, buf)? == FILETYPE_DIRECTORY {
        let base = read_u64(&view, buf + FDSTAT_RIGHTS_BASE)? & !Rights::FD_WRITE.bits();
        view.write(buf + FDSTAT_RIGHTS_BASE, &base.to_le_bytes())
            .map_err(memory_error)?;
    }
    Ok(results)
}

/// `fd_readdir(fd, buf, buf_len, cookie, bufused)`: wasmer's (syscalls/wasi/fd_readdir.rs)
/// writes d_ino 0 for every entry it reads from the host directory and for "." and ".." (its
/// own TODO). An entry's d_ino is the inode of what the name refers to without following it,
/// so each entry written whole in `buf` with d_ino 0 gets the st_ino wasmer itself reports for
/// it: "." the directory's own (`fd_filestat_get(fd)`), any other name that of
/// `path_filestat_get(fd, 0, name)` — what a guest compares d_ino with. ".." keeps 0: its
/// inode lies outside the descriptor. An entry stays 0 when the descriptor lacks the right to
/// ask (FD_FILESTAT_GET, PATH_FILESTAT_GET) or the name no longer resolves.
fn readdir_with_inodes(call: &mut Call<'_>, args: &[Value]) -> Result<Vec<Value>, RuntimeError> {
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

/// `fd_renumber(from, to)`: wasmer's `WasiFs::dup2_at` copies `from` onto `to` but leaves
/// `from` open (POSIX dup2); WASI's renumber closes it.
fn renumber_closing_source(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let (from, to) = (i32_arg(args, 0)?, i32_arg(args, 1)?);
    let results = call.original("fd_renumber", args)?;
    if errno_of(&results) == Some(Errno::Success) && from != to {
        call.original("fd_close", &[Value::I32(from as i32)])?;
    }
    Ok(results)
}

/// `path_open(dirfd, dirflags, path, path_len, oflags, base, inheriting, fdflags, fd_out)`,
/// checked where wasmer's `path_open_internal` (syscalls/wasix/path_open2.rs) is lax:
/// - an absolute path is resolved from the root (`VIRTUAL_ROOT_FD`) instead of refused: WASI
///   paths are relative to their directory descriptor (PERM);
/// - OFLAGS_TRUNC is honoured without the directory's PATH_FILESTAT_SET_SIZE right;
/// - a base descriptor that is not a directory fails the PATH_OPEN rights check (ACCES)
///   rather than NOTDIR;
/// - a directory is opened with the file-only rights wasmer implies ([`FILE_ONLY_RIGHTS`]),
///   which are dropped again.
fn open_checked(call: &mut Call<'_>, args: &[Value]) -> Result<Vec<Value>, RuntimeError> {
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
fn readlink_truncating(call: &mut Call<'_>, args: &[Value]) -> Result<Vec<Value>, RuntimeError> {
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
fn symlink_checked(call: &mut Call<'_>, args: &[Value]) -> Result<Vec<Value>, RuntimeError> {
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
fn unlink_checking_type(call: &mut Call<'_>, args: &[Value]) -> Result<Vec<Value>, RuntimeError> {
    let (fd, path, path_len) = (
        i32_arg(args, 0)?,
        i32_arg(args, 1)? as u64,
        i32_arg(args, 2)? as u64,
    );
    let Some(memory) = call.memory()? else {
        return call.original("path_unlink_file", args);
    };
    let trailing_slash = read_bytes(&call.view(&memory), path, path_len)?.ends_with(b"/");
    let filetype = call.with_scratch(FILESTAT_SIZE, |call, memory, at| {
        let stat = [
            Value::I32(fd as i32),
            Value::I32(0),
            Value::I32(path as i32),
            Value::I32(path_len as i32),
            Value::I32(at as i32),
        ];
        if call.original_errno("path_filestat_get", &stat)? != Errno::Success {
            return Ok(None);
        }
        read_u8(&call.view(memory), at + FILESTAT_FILETYPE).map(Some)
    })?;
    match filetype.flatten() {
        Some(FILETYPE_DIRECTORY) => Ok(vec![errno(Errno::Isdir)]),
        Some(_) if trailing_slash => Ok(vec![errno(Errno::Notdir)]),
        _ => call.original("path_unlink_file", args),
    }
}

/// WASI's `subscription`: 48 bytes, the tag (0 = clock) at 8, the clock's timeout at 24.
const SUBSCRIPTION_SIZE: u64 = 48;
const SUBSCRIPTION_TAG: u64 = 8;
const SUBSCRIPTION_CLOCK_TIMEOUT: u64 = 24;
const EVENTTYPE_CLOCK: u8 = 0;

/// `poll_oneoff(in, out, n, nevents)`: a clock subscription with timeout 0 must fire at once
/// (a zero-length sleep, or an absolute time already past), but wasmer's `poll_oneoff_internal`
/// reads 0 as "no timeout" and blocks forever. wasmer reads 1 as "fire now", so zero timeouts
/// are handed to it as 1 ns and the guest's subscriptions restored afterwards.
fn poll_zero_timeouts_fire(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let (input, count) = (u64::from(i32_arg(args, 0)?), u64::from(i32_arg(args, 2)?));
    let Some(memory) = call.memory()? else {
        return call.original("poll_oneoff", args);
    };
    let mut zeroed = Vec::new();
    {
        let view = call.view(&memory);
        for i in 0..count {
            let sub = input + i * SUBSCRIPTION_SIZE;
            let timeout_at = sub + SUBSCRIPTION_CLOCK_TIMEOUT;
            if read_u8(&view, sub + SUBSCRIPTION_TAG)? == EVENTTYPE_CLOCK
                && read_u64(&view, timeout_at)? == 0
            {
                view.write(timeout_at, &1u64.to_le_bytes())
                    .map_err(memory_error)?;
                zeroed.push(timeout_at);
            }
        }
    }
    let results = call.original("poll_oneoff", args);
    let view = call.view(&memory);
    for at in zeroed {
        view.write(at, &0u64.to_le_bytes()).map_err(memory_error)?;
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wrapped_call_is_listed_once() {
        let names = wrapped_names();
        assert!(names.contains(&"fd_close") && names.contains(&"sock_shutdown"));
        let mut sorted = names.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
    }

    #[test]
    fn fd_3_is_refused_wherever_it_is_a_descriptor_argument() {
        let (fd3, other) = (Value::I32(3), Value::I32(5));
        assert!(reserved_fd("fd_read", &[fd3.clone(), other.clone()]));
        assert!(!reserved_fd("fd_read", &[other.clone(), fd3.clone()]));
        let rename = [other.clone(), other.clone(), other.clone(), fd3.clone()];
        assert!(reserved_fd("path_rename", &rename));
        assert!(reserved_fd(
            "path_symlink",
            &[other.clone(), other.clone(), fd3.clone()]
        ));
        // Their own fixes decide for these.
        assert!(!reserved_fd("fd_close", &[fd3.clone(), other.clone()]));
        assert!(!reserved_fd("fd_prestat_get", &[fd3, other]));
    }

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

    #[test]
    fn errnos_are_translated_only_for_their_call() {
        let acces = vec![errno(Errno::Access)];
        assert_eq!(
            errno_of(&translate_errno("fd_write", acces.clone())),
            Some(Errno::Notcapable)
        );
        assert_eq!(
            errno_of(&translate_errno("path_open", acces)),
            Some(Errno::Access)
        );
    }
}
