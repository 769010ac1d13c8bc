//! Corrections to the errno of two wasmer-wasix 0.704.2 WASI calls, applied by wrapping their
//! imports (through wasmer-wasix's public `InstantiationHook`), never by patching wasmer.
//!
//! * `fd_prestat_dir_name` with a buffer shorter than the name answers OVERFLOW
//!   (syscalls/wasi/fd_prestat_dir_name.rs); WASI runtimes answer NAMETOOLONG, as the WASI test
//!   suite's `dir_fd_op_failures` expects.
//! * `sock_shutdown` on a descriptor that is not a socket answers ACCES: `__sock_actor_mut`
//!   (syscalls/mod.rs) checks the SOCK_SHUTDOWN right, which only sockets carry, before it
//!   checks that the descriptor is a socket. POSIX and WASI say NOTSOCK.
//!
//! Each wrapper calls wasmer's own function and only translates its result.

use wasmer::{
    Function, FunctionEnv, FunctionEnvMut, Imports, Module, RuntimeError, StoreMut, Value,
};
use wasmer_wasix::runtime::{InstantiationHook, InstantiationState};
use wasmer_wasix::types::wasi::Errno;

const WASI_P1: &str = "wasi_snapshot_preview1";

/// (import name, errno wasmer answers, errno the guest gets instead).
const FIXES: &[(&str, Errno, Errno)] = &[
    ("fd_prestat_dir_name", Errno::Overflow, Errno::Nametoolong),
    ("sock_shutdown", Errno::Access, Errno::Notsock),
];

#[derive(Debug, Default)]
pub struct WasiErrnoFixes;

impl InstantiationHook for WasiErrnoFixes {
    fn prepare_imports(
        &self,
        _module: &Module,
        store: &mut StoreMut,
        imports: &mut Imports,
    ) -> anyhow::Result<InstantiationState> {
        for (name, from, to) in FIXES {
            if let Some(wasmer::Extern::Function(original)) = imports.get_export(WASI_P1, name) {
                let wrapped = translate_errno(store, original, *from, *to);
                imports.define(WASI_P1, name, wrapped);
            }
        }
        Ok(InstantiationState::empty())
    }
}

/// What a wrapper needs: wasmer's function and the translation.
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
