//! Corrections to wasmer-wasix 0.704.2 WASI calls, applied by wrapping their imports (through
//! wasmer-wasix's public `InstantiationHook`), never by patching wasmer. Every wrapper calls
//! wasmer's own functions; it only answers for the case wasmer gets wrong, or adjusts the
//! arguments or the errno around wasmer's answer. What each fix corrects, and which wasmer
//! function it works around, is said at the fix.
//!
//! Wrappers that need to learn something about a descriptor (its type, its rights) ask
//! wasmer's own `fd_fdstat_get`, writing its answer into a few bytes of guest memory that are
//! borrowed and restored around the call (see [`Scratch`](memory::Scratch)).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use wasmer::{
    Function, FunctionEnv, FunctionEnvMut, Imports, Instance, Memory, Module, RuntimeError,
    StoreMut, Value,
};
use wasmer_wasix::runtime::{InstantiationHook, InstantiationState};
use wasmer_wasix::types::wasi::{Errno, Rights};

mod descriptors;
mod fd;
mod host;
mod memory;
mod path;
mod poll;

use descriptors::Descriptors;
use fd::{
    close, fd_stat_from_host, fd_times_on_the_file, fdstat_fixed, not_a_preopen,
    readdir_with_inodes, renumber,
};
use path::{
    accept_numbered, link_on_the_host, open_checked, readlink_truncating, refuse_escapes,
    rename_checking_types, set_times_on_the_file, stat_from_host, symlink_checked,
    unlink_checking_type,
};
use poll::poll_translated;

const WASI_P1: &str = "wasi_snapshot_preview1";

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

/// The WASI calls taking descriptors, with the positions of their descriptor arguments, which
/// are translated to wasmer's numbers (see `descriptors`). `fd_close` and `fd_renumber` are
/// operations on the guest's table; `poll_oneoff` has its descriptors in memory.
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
    ("fd_prestat_get", &[0]),
    ("fd_pwrite", &[0]),
    ("fd_read", &[0]),
    ("fd_readdir", &[0]),
    ("fd_seek", &[0]),
    ("fd_sync", &[0]),
    ("fd_tell", &[0]),
    ("fd_write", &[0]),
    ("path_create_directory", &[0]),
    ("path_filestat_get", &[0]),
    ("path_filestat_set_times", &[0]),
    ("path_link", &[0, 4]),
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

/// The calls with a fix of their own, run on wasmer's descriptor numbers.
const HANDLERS: &[(&str, Handler)] = &[
    ("fd_fdstat_get", fdstat_fixed),
    ("fd_filestat_get", fd_stat_from_host),
    ("fd_filestat_set_times", fd_times_on_the_file),
    ("fd_readdir", readdir_with_inodes),
    ("path_filestat_get", stat_from_host),
    ("path_link", link_on_the_host),
    ("path_filestat_set_times", set_times_on_the_file),
    ("path_open", open_checked),
    ("path_readlink", readlink_truncating),
    ("path_symlink", symlink_checked),
    ("path_unlink_file", unlink_checking_type),
    ("path_rename", rename_checking_types),
    ("poll_oneoff", poll_translated),
    ("sock_accept", accept_numbered),
];

/// The calls that are operations on the guest's descriptor table, run on guest numbers.
const TABLE_HANDLERS: &[(&str, Handler)] = &[("fd_close", close), ("fd_renumber", renumber)];

/// The instantiation hook. Its preopens are filled in by the file system set-up
/// ([`WasiFixes::preopens`]), which runs before instantiation.
#[derive(Debug, Default)]
pub struct WasiFixes {
    preopens: Arc<Mutex<Vec<(u32, PathBuf)>>>,
    /// Whether stdin, stdout and stderr are terminals (see `fd::fdstat_fixed`).
    stdio_terminals: [bool; 3],
}

impl WasiFixes {
    /// The hook for a guest whose stdin, stdout and stderr are terminals or not.
    pub fn new(stdio_terminals: [bool; 3]) -> WasiFixes {
        WasiFixes {
            stdio_terminals,
            ..WasiFixes::default()
        }
    }

    /// Where wasmer's preopened descriptors and their directories are recorded.
    pub fn preopens(&self) -> Arc<Mutex<Vec<(u32, PathBuf)>>> {
        self.preopens.clone()
    }

    /// The guest's table at start, each preopen with its host directory.
    fn descriptors(&self, module: &Module) -> Descriptors {
        let preopens = self
            .preopens
            .lock()
            .map(|list| list.clone())
            .unwrap_or_default();
        let wasix = module
            .imports()
            .any(|import| import.module().starts_with("wasix"));
        Descriptors::new(
            preopens
                .into_iter()
                .map(|(fd, dir)| (fd, host::open_dir(&dir)))
                .collect(),
            wasix,
        )
    }
}

/// What every wrapper of one instance shares: wasmer's functions, the guest's memory (known
/// once the instance exists), and the guest's descriptor table.
struct Shared {
    originals: HashMap<String, Function>,
    memory: Mutex<Option<Memory>>,
    descriptors: Mutex<Descriptors>,
    stdio_terminals: [bool; 3],
}

/// The environment of one wrapped import.
struct Wrapper {
    name: &'static str,
    shared: Arc<Shared>,
}

impl InstantiationHook for WasiFixes {
    fn prepare_imports(
        &self,
        module: &Module,
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
            memory: Mutex::new(None),
            descriptors: Mutex::new(self.descriptors(module)),
            stdio_terminals: self.stdio_terminals,
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
    names.extend(TABLE_HANDLERS.iter().map(|(n, _)| *n));
    names.sort_unstable();
    names.dedup();
    names
}

/// Every wrapped import: table operations run on the guest's numbers; any other call has its
/// descriptors translated to wasmer's, paths climbing out of their directory refused, then
/// the call's own fix (or wasmer's function) runs, and wasmer's errno is translated where
/// WASI says otherwise.
fn wrapped(mut env: FunctionEnvMut<Wrapper>, args: &[Value]) -> Result<Vec<Value>, RuntimeError> {
    let (wrapper, store) = env.data_and_store_mut();
    let name = wrapper.name;
    let mut call = Call {
        shared: &wrapper.shared,
        store,
    };
    if let Some((_, handler)) = TABLE_HANDLERS.iter().find(|(n, _)| *n == name) {
        return handler(&mut call, args);
    }
    if name == "fd_prestat_get" && call.descriptors()?.is_reserved(i32_arg(args, 0)?) {
        return not_a_preopen(&mut call, args);
    }
    let translated = translate(&*call.descriptors()?, name, args)?;
    let args = match translated {
        Ok(args) => args,
        Err(e) => return Ok(vec![errno(e)]),
    };
    if let Some(e) = refuse_escapes(&mut call, name, &args)? {
        return Ok(vec![errno(e)]);
    }
    let results = match HANDLERS.iter().find(|(n, _)| *n == name) {
        Some((_, handler)) => handler(&mut call, &args)?,
        None => call.original(name, &args)?,
    };
    Ok(translate_errno(name, results))
}

/// `args` of the call `name` with its descriptors as wasmer's numbers (BADF for a guest
/// descriptor that is not open).
fn translate(
    table: &Descriptors,
    name: &str,
    args: &[Value],
) -> Result<Result<Vec<Value>, Errno>, RuntimeError> {
    let mut args = args.to_vec();
    let Some((_, positions)) = FD_ARGS.iter().find(|(n, _)| *n == name) else {
        return Ok(Ok(args));
    };
    for &i in *positions {
        match table.resolve(i32_arg(&args, i)?) {
            Ok(wasmer_fd) => args[i] = Value::I32(wasmer_fd as i32),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(args))
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

fn i64_arg(args: &[Value], i: usize) -> Result<u64, RuntimeError> {
    match args.get(i) {
        Some(Value::I64(v)) => Ok(*v as u64),
        _ => Err(RuntimeError::new("WASI call with an unexpected signature")),
    }
}

/// One call of a wrapped import: wasmer's functions and the guest's memory.
struct Call<'a> {
    shared: &'a Shared,
    store: StoreMut<'a>,
}

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

    /// The guest's descriptor table.
    fn descriptors(&self) -> Result<MutexGuard<'_, Descriptors>, RuntimeError> {
        self.shared
            .descriptors
            .lock()
            .map_err(|_| RuntimeError::new("descriptor table poisoned"))
    }

    /// wasmer's descriptor for the guest's `fd`.
    fn resolve(&self, fd: u32) -> Result<Result<u32, Errno>, RuntimeError> {
        Ok(self.descriptors()?.resolve(fd))
    }
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
    fn descriptor_arguments_are_translated_and_fd_3_refused_wherever_it_is_one() {
        let mut table = Descriptors::new(vec![(4, None)], false);
        let file = table.opened(6, None);
        table.renumber(file, 4).unwrap();
        let (fd3, fd4, len) = (Value::I32(3), Value::I32(4), Value::I32(3));
        assert_eq!(
            translate(&table, "fd_read", &[fd4.clone(), fd3.clone()]).unwrap(),
            Ok(vec![Value::I32(6), fd3.clone()])
        );
        assert_eq!(
            translate(&table, "fd_read", &[fd3.clone(), fd4.clone()]).unwrap(),
            Err(Errno::Badf)
        );
        // path_link(old_fd, flags, old_path, old_len, new_fd, new_path, new_len): the
        // descriptors are at 0 and 4, the path length at 3 is left alone.
        let link = [
            fd4.clone(),
            Value::I32(0),
            Value::I32(100),
            len.clone(),
            fd4.clone(),
        ];
        assert_eq!(
            translate(&table, "path_link", &link).unwrap(),
            Ok(vec![
                Value::I32(6),
                Value::I32(0),
                Value::I32(100),
                len,
                Value::I32(6)
            ])
        );
        let symlink = [Value::I32(100), Value::I32(1), fd3];
        assert_eq!(
            translate(&table, "path_symlink", &symlink).unwrap(),
            Err(Errno::Badf)
        );
        assert_eq!(
            translate(&table, "random_get", std::slice::from_ref(&fd4)).unwrap(),
            Ok(vec![fd4])
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
