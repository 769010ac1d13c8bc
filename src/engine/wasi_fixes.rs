//! Corrections to a few wasmer-wasix 0.704.2 WASI calls, applied by wrapping their imports
//! (through wasmer-wasix's public `InstantiationHook`), never by patching wasmer. Each wrapper
//! calls wasmer's own function, or answers for the one descriptor wasmer gets wrong.
//!
//! * `fd_prestat_dir_name` with a buffer shorter than the name answers OVERFLOW
//!   (syscalls/wasi/fd_prestat_dir_name.rs); WASI runtimes answer NAMETOOLONG, as the WASI test
//!   suite's `dir_fd_op_failures` expects.
//! * `sock_shutdown` on a descriptor that is not a socket answers ACCES: `__sock_actor_mut`
//!   (syscalls/mod.rs) checks the SOCK_SHUTDOWN right, which only sockets carry, before it
//!   checks that the descriptor is a socket. POSIX and WASI say NOTSOCK.
//! * `fd_fdstat_get` of a directory reports FD_WRITE in its base rights (wasmer uses it on a
//!   directory to mean "files may be written below"), but `path_open` refuses to open a
//!   directory with FD_WRITE: a guest reopening a directory with the rights it was told gets
//!   ISDIR. Directories are reported without FD_WRITE in their base rights.
//! * `fd_fdstat_get` of a directory reports FD_WRITE in its base rights (wasmer uses it on a
//!   directory to mean "files may be written below"), but `path_open` refuses to open a
//!   directory with FD_WRITE: a guest reopening a directory with the rights it was told gets
//!   ISDIR. Directories are reported without FD_WRITE in their base rights.
//! * `fd_prestat_get(3)`: fd 3 is wasmer's fixed root descriptor, which wasmer special-cases
//!   (it can be neither closed nor renumbered, and reports all rights). It is answered as a
//!   descriptor that is not a preopened directory, so guests find the container root by name
//!   at fd 4, an ordinary descriptor (see `wasmer::setup_guest_fs`).

use std::sync::{Arc, Mutex};

use wasmer::{
    Function, FunctionEnv, FunctionEnvMut, Imports, Instance, Memory, Module, RuntimeError,
    StoreMut, Value,
};
use wasmer_wasix::runtime::{InstantiationHook, InstantiationState};
use wasmer_wasix::types::wasi::Errno;
use wasmer_wasix::VIRTUAL_ROOT_FD;

const WASI_P1: &str = "wasi_snapshot_preview1";

/// (import name, errno wasmer answers, errno the guest gets instead).
const ERRNO_FIXES: &[(&str, Errno, Errno)] = &[
    ("fd_prestat_dir_name", Errno::Overflow, Errno::Nametoolong),
    ("sock_shutdown", Errno::Access, Errno::Notsock),
];

/// A `prestat` whose tag is not `preopentype::dir` (0): "not a preopened directory". Callers
/// that enumerate preopens (wasi-libc, the Rust `wasi` crate) skip it and go on to fd 4.
const NOT_A_PREOPEN: [u8; 8] = [1, 0, 0, 0, 0, 0, 0, 0];

/// The guest's memory, known only once the instance exists.
type MemorySlot = Arc<Mutex<Option<Memory>>>;

#[derive(Debug, Default)]
pub struct WasiFixes;

impl InstantiationHook for WasiFixes {
    fn prepare_imports(
        &self,
        _module: &Module,
        store: &mut StoreMut,
        imports: &mut Imports,
    ) -> anyhow::Result<InstantiationState> {
        for (name, from, to) in ERRNO_FIXES {
            if let Some(wasmer::Extern::Function(original)) = imports.get_export(WASI_P1, name) {
                let wrapped = translate_errno(store, original, *from, *to);
                imports.define(WASI_P1, name, wrapped);
            }
        }
        let memory: MemorySlot = Arc::default();
        let memory_fixes: [(&str, MemoryFix); 2] = [
            ("fd_prestat_get", prestat_hiding_root),
            ("fd_fdstat_get", fdstat_of_directories),
        ];
        for (name, fix) in memory_fixes {
            if let Some(wasmer::Extern::Function(original)) = imports.get_export(WASI_P1, name) {
                let ty = original.ty(store);
                let with_memory = WithMemory {
                    original,
                    memory: memory.clone(),
                };
                let env = FunctionEnv::new(store, with_memory);
                imports.define(WASI_P1, name, Function::new_with_env(store, &env, ty, fix));
            }
        }
        Ok(InstantiationState::new(memory))
    }

    fn configure_new_instance(
        &self,
        _module: &Module,
        _store: &mut StoreMut,
        instance: &Instance,
        imported_memory: Option<&Memory>,
        state: InstantiationState,
    ) -> anyhow::Result<()> {
        let slot: MemorySlot = state.take()?;
        let memory = imported_memory
            .cloned()
            .or_else(|| instance.exports.get_memory("memory").ok().cloned());
        *slot
            .lock()
            .map_err(|_| anyhow::anyhow!("memory slot poisoned"))? = memory;
        Ok(())
    }
}

/// What an errno wrapper needs: wasmer's function and the translation.
struct Translation {
    original: Function,
    from: i32,
    to: i32,
}

/// A function of the same type as `original` that calls it and maps errno `from` to `to`.
fn translate_errno(store: &mut StoreMut, original: Function, from: Errno, to: Errno) -> Function {
    let ty = original.ty(store);
    let env = FunctionEnv::new(
        store,
        Translation {
            original,
            from: from as i32,
            to: to as i32,
        },
    );
    Function::new_with_env(store, &env, ty, call_and_translate)
}

fn call_and_translate(
    mut env: FunctionEnvMut<Translation>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let (fix, mut store) = env.data_and_store_mut();
    let results = fix.original.call(&mut store, args)?;
    Ok(results
        .iter()
        .map(|v| match v {
            Value::I32(errno) if *errno == fix.from => Value::I32(fix.to),
            other => other.clone(),
        })
        .collect())
}

/// A wrapper that reads or writes the guest's memory around wasmer's function.
struct WithMemory {
    original: Function,
    memory: MemorySlot,
}

type MemoryFix = fn(FunctionEnvMut<WithMemory>, &[Value]) -> Result<Vec<Value>, RuntimeError>;

impl WithMemory {
    fn memory(&self) -> Result<Option<Memory>, RuntimeError> {
        Ok(self
            .memory
            .lock()
            .map_err(|_| RuntimeError::new("memory slot poisoned"))?
            .clone())
    }
}

/// The (fd, pointer) arguments of the WASI calls wrapped here.
fn fd_and_pointer(args: &[Value]) -> Result<(u32, u64), RuntimeError> {
    match (args.first(), args.get(1)) {
        (Some(Value::I32(fd)), Some(Value::I32(ptr))) => Ok((*fd as u32, *ptr as u32 as u64)),
        _ => Err(RuntimeError::new("WASI call with an unexpected signature")),
    }
}

/// `fd_prestat_get(fd, buf)`: fd 3 answers "not a preopen"; every other fd goes to wasmer.
fn prestat_hiding_root(
    mut env: FunctionEnvMut<WithMemory>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let (fix, mut store) = env.data_and_store_mut();
    let (fd, buf) = fd_and_pointer(args)?;
    if fd != VIRTUAL_ROOT_FD {
        return Ok(fix.original.call(&mut store, args)?.into_vec());
    }
    let errno = match fix.memory()? {
        Some(memory) => match memory.view(&store).write(buf, &NOT_A_PREOPEN) {
            Ok(()) => Errno::Success,
            Err(_) => Errno::Fault,
        },
        None => Errno::Badf,
    };
    Ok(vec![Value::I32(errno as i32)])
}

/// Offsets in WASI's `fdstat`: filetype (u8) at 0, fs_rights_base (u64) at 8.
const FDSTAT_FILETYPE: u64 = 0;
const FDSTAT_RIGHTS_BASE: u64 = 8;
const FILETYPE_DIRECTORY: u8 = 3;
const RIGHT_FD_WRITE: u64 = 1 << 6;

/// `fd_fdstat_get(fd, buf)`: wasmer's answer, with FD_WRITE cleared for a directory.
fn fdstat_of_directories(
    mut env: FunctionEnvMut<WithMemory>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let (fix, mut store) = env.data_and_store_mut();
    let (_, buf) = fd_and_pointer(args)?;
    let results = fix.original.call(&mut store, args)?;
    if !matches!(results.first(), Some(Value::I32(0))) {
        return Ok(results.into_vec());
    }
    let Some(memory) = fix.memory()? else {
        return Ok(results.into_vec());
    };
    let view = memory.view(&store);
    let mut filetype = [0u8; 1];
    let mut rights = [0u8; 8];
    let read = view
        .read(buf + FDSTAT_FILETYPE, &mut filetype)
        .and_then(|()| view.read(buf + FDSTAT_RIGHTS_BASE, &mut rights));
    if read.is_ok() && filetype[0] == FILETYPE_DIRECTORY {
        let cleared = u64::from_le_bytes(rights) & !RIGHT_FD_WRITE;
        let _ = view.write(buf + FDSTAT_RIGHTS_BASE, &cleared.to_le_bytes());
    }
    Ok(results.into_vec())
}
