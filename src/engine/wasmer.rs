//! wasmer and wasmer-wasix: compile (or load from the cache) and run one module.
//!
//! Runs inside the guest process, after it has entered the container's root (so the host
//! filesystem wasmer sees at `/` is the container's root, and the kernel enforces read-only
//! mounts and keeps symlinks inside).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use log::{info, warn};
use wasmer::{Engine, Module, RuntimeError, Store};
use wasmer_wasix::fs::{Fd, InodeGuard, Kind};
use wasmer_wasix::runtime::task_manager::tokio::TokioTaskManager;
use wasmer_wasix::virtual_fs::host_fs;
use wasmer_wasix::{
    PluggableRuntime, WasiEnv, WasiEnvBuilder, WasiError, WasiFs, WasiInodes, VIRTUAL_ROOT_FD,
};

use super::cache::{digest_hex, map_entry};
use super::container_fs::ContainerFs;
use super::stdio::StdioFile;
use super::wasi_fixes::{WasiFixes, FILE_ONLY_RIGHTS};
use super::{Invocation, Outcome};

/// The wasmer release this shim is built against (pinned in Cargo.toml); part of the cache key.
pub const WASMER_VERSION: &str = "7.4.2";

/// Frames of the wasm backtrace written after a trap; deeper ones add nothing for a reader.
const MAX_TRACE_FRAMES: usize = 16;

/// A compiled module, ready to instantiate, and the engine that holds its code.
#[derive(Clone)]
pub struct LoadedModule {
    module: Module,
    engine: Engine,
    /// `sha256:<hex>` of the module bytes, for log lines.
    pub digest: String,
    /// Whether this load compiled the module (false: it came from the cache).
    pub compiled: bool,
}

impl LoadedModule {
    /// The artifact of the compiled module, for the shim to store in the cache.
    pub fn serialize(&self) -> Result<bytes::Bytes, String> {
        self.module.serialize().map_err(|e| e.to_string())
    }
}

pub struct WasmerEngine {
    memory_cap: Option<wasmer::Pages>,
    runtime: tokio::runtime::Runtime,
}

impl WasmerEngine {
    /// Engines for the host's CPU (what [`engine_key`] describes): cranelift to compile, a
    /// headless one (no compiler built) to load a cached artifact. With a `memory_cap`, no
    /// linear memory grows past it (see `tunables`).
    pub fn new(memory_cap: Option<wasmer::Pages>) -> std::io::Result<WasmerEngine> {
        // wasmer-wasix needs a tokio runtime for its file system and task manager. One worker
        // is enough: the guest's own code runs on the thread that calls `run`.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wasm-io")
            // No signal driver: it would open a socket pair, and the guest process handles
            // its signals itself (guest::signals).
            .enable_io()
            .enable_time()
            .build()?;
        Ok(WasmerEngine {
            memory_cap,
            runtime,
        })
    }

    /// An engine: with cranelift to compile, headless to load an artifact.
    fn engine(&self, compiler: bool) -> Engine {
        use wasmer::sys::NativeEngineExt;
        let mut engine = if compiler {
            Engine::default()
        } else {
            <Engine as NativeEngineExt>::headless()
        };
        engine.set_tunables(super::tunables::GuestTunables::new(self.memory_cap));
        engine
    }

    /// The compiled module for `bytes`: from `cached` when it loads, else compiled.
    pub fn load(&self, bytes: &[u8], cached: Option<File>) -> Result<LoadedModule, String> {
        let digest = digest_hex(bytes);
        self.load_from(&digest, cached, || Ok(bytes.to_vec()))
    }

    /// The compiled module whose bytes hash to `digest` (hex sha256, computed by the shim):
    /// from `cached` (the cache entry the shim opened for that digest) when it loads, else
    /// compiled from the bytes `read` gives, which are only read then.
    /// A module that is not a WASI command (no `_start`) is refused here, before Start.
    pub fn load_from(
        &self,
        digest: &str,
        cached: Option<File>,
        read: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<LoadedModule, String> {
        let digest = format!("sha256:{digest}");
        if let Some((module, engine)) = cached.and_then(|entry| self.load_cached(entry, &digest)) {
            check_command(&module)?;
            return Ok(LoadedModule {
                module,
                engine,
                digest,
                compiled: false,
            });
        }
        let bytes = read()?;
        let started = Instant::now();
        let engine = self.engine(true);
        let module = Module::new(&engine, &bytes)
            .map_err(|e| format!("the module does not compile: {e}"))?;
        info!(
            "compiled module {digest} ({} bytes) in {} ms",
            bytes.len(),
            started.elapsed().as_millis()
        );
        check_command(&module)?;
        Ok(LoadedModule {
            module,
            engine,
            digest,
            compiled: true,
        })
    }

    fn load_cached(&self, entry: File, digest: &str) -> Option<(Module, Engine)> {
        let started = Instant::now();
        let artifact = match map_entry(&entry) {
            Ok(artifact) => artifact,
            Err(why) => {
                warn!("discarded corrupt cache entry for module {digest}: {why}");
                return None;
            }
        };
        let engine = self.engine(false);
        // SAFETY: the entry is the one the shim keeps for this module's digest under this
        // engine's key, written whole (synced, then renamed into place) only by the shim
        // (guests cannot write the cache), and its header and length were just checked, so it
        // is a whole artifact this engine produced for these bytes.
        match unsafe { Module::deserialize(&engine, artifact) } {
            Ok(module) => {
                info!(
                    "loaded compiled module {digest} from cache in {} ms",
                    started.elapsed().as_millis()
                );
                Some((module, engine))
            }
            Err(e) => {
                warn!("discarded corrupt cache entry for module {digest}: it did not load ({e}); recompiling");
                None
            }
        }
    }

    /// Runs `_start` of the module on the calling thread until the guest exits or traps.
    pub fn run(&self, loaded: &LoadedModule, invocation: Invocation) -> Outcome {
        let _entered = self.runtime.enter();
        let builder = match self.builder(&loaded.engine, invocation) {
            Ok(builder) => builder,
            Err(why) => return Outcome::NotRunnable(why),
        };
        let mut store = Store::new(loaded.engine.clone());
        let (instance, env) = match builder.instantiate(loaded.module.clone(), &mut store) {
            Ok(pair) => pair,
            Err(e) => {
                return Outcome::NotRunnable(format!("the module cannot be instantiated: {e}"))
            }
        };
        let outcome = match instance.exports.get_function("_start") {
            Ok(start) => outcome_of(start.call(&mut store, &[]).map(|_| ())),
            Err(e) => Outcome::NotRunnable(e.to_string()),
        };
        // Closes the guest's files (flushing what wasmer buffers) before the process exits.
        let code = wasmer_wasix::types::wasi::ExitCode::from(outcome.exit_status() as u16);
        env.on_exit(&mut store, Some(code));
        outcome
    }

    fn builder(&self, engine: &Engine, inv: Invocation) -> Result<WasiEnvBuilder, String> {
        let handle = self.runtime.handle().clone();
        let root = host_fs::FileSystem::new(handle.clone(), "/")
            .map_err(|e| format!("cannot open the container root: {e}"))?;
        let tasks = TokioTaskManager::new(handle);
        let mut runtime = PluggableRuntime::new(Arc::new(tasks));
        runtime.set_engine(engine.clone());
        let is_terminal = |fd: &std::os::fd::OwnedFd| std::io::IsTerminal::is_terminal(fd);
        let fixes = WasiFixes::new([
            is_terminal(&inv.stdin),
            is_terminal(&inv.stdout),
            is_terminal(&inv.stderr),
        ]);
        let preopened = fixes.preopens();
        runtime.with_instantiation_hook(fixes);

        let (argv0, rest) = inv
            .args
            .split_first()
            .map_or(("", &[][..]), |(a, r)| (a.as_str(), r));
        let mut builder = WasiEnv::builder(argv0)
            .args(rest)
            .envs(inv.env.iter().map(|(k, v)| (k.clone(), v.clone())))
            .runtime(Arc::new(runtime))
            .fs(Arc::new(ContainerFs::new(root))
                as Arc<
                    dyn wasmer_wasix::virtual_fs::FileSystem + Send + Sync,
                >)
            .current_dir(&inv.cwd)
            .stdin(Box::new(StdioFile::stdin(inv.stdin)))
            .stdout(Box::new(StdioFile::output(inv.stdout, 1)))
            .stderr(Box::new(StdioFile::output(inv.stderr, 2)))
            .setup_fs(Box::new(move |inodes, fs| {
                setup_guest_fs(inodes, fs)?;
                *preopened.lock().map_err(poisoned)? = preopened_dirs(fs)?;
                Ok(())
            }));
        for (name, dir) in preopens(&inv.cwd, &inv.root_entries) {
            builder = builder
                .preopen_build(|p| {
                    // An alias loses its leading '/' in wasmer (alias "/" would be named
                    // ""); without one, the preopen is named after its directory.
                    if name != dir {
                        p.alias(&name);
                    }
                    p.directory(&dir).read(true).write(true).create(true)
                })
                .map_err(|e| format!("cannot preopen {dir}: {e}"))?;
        }
        Ok(builder)
    }
}

/// The preopened directories, as (name the guest sees, directory), in registration order.
/// The first, named "/", is the container root: the preopen guests look for by name.
///
/// WASI preview 1 has no working directory: wasi-libc resolves every path, absolute or
/// relative, against the preopen whose name is the longest prefix of the path after it strips
/// leading `/` and `./` — so a preopen named "/" and one named "." look the same to it, and
/// the one registered last wins. With `cwd` at `/` the root alone is exact. Otherwise the cwd
/// is preopened as "." (last, so relative paths land there) and each top-level directory of
/// the root under its own name, so absolute paths into them still resolve from the root.
/// What remains ambiguous is documented in the README ("Working directory").
pub fn preopens(cwd: &Path, root_entries: &[String]) -> Vec<(String, String)> {
    let mut list = vec![("/".to_string(), "/".to_string())];
    if cwd == Path::new("/") {
        return list;
    }
    for entry in root_entries {
        list.push((format!("/{entry}"), format!("/{entry}")));
    }
    list.push((".".to_string(), cwd.display().to_string()));
    list
}

/// Gives the guest a real `/`. Runs once wasmer-wasix has set up the preopens.
///
/// wasmer-wasix always makes fd 3 a virtual root named "/" that can only hold the other
/// preopens (wasmerio/wasmer#2098), and special-cases fd 3 throughout: `WasiFs::fdstat`
/// reports all rights for it, and `get_fd`/`get_fd_inode` fall back to the root inode, so it
/// can be neither closed nor replaced by `fd_renumber`. So:
/// - that root inode becomes an ordinary directory at the guest's `/` (the container root,
///   after pivot_root); the preopen "/" (fd 4) is an ordinary descriptor of it, and wasmer's
///   own resolution of absolute paths (symlink targets) goes through it for real;
/// - fd 3 is reserved (`wasi_fixes`, which gives the guest descriptor numbers of its own): not
///   a preopen to discovery, BADF to every other call until the guest renumbers over it, so a
///   guest that takes the first preopen named "/" — as most of the WASI test suite does —
///   gets fd 4;
/// - the preopen "/" shares the root inode (see `share_root_inode`), and preopens lose the
///   file-only rights wasmer gives every descriptor (`wasi_fixes::FILE_ONLY_RIGHTS`);
/// - directories report their base rights without FD_WRITE (`wasi_fixes`): wasmer refuses to
///   open a directory with FD_WRITE, and guests reopen a preopen with the rights it reports.
fn setup_guest_fs(_inodes: &WasiInodes, fs: &mut WasiFs) -> Result<(), String> {
    let root = fs.root_inode.clone();
    {
        let mut kind = root.write();
        let entries = match &mut *kind {
            Kind::Root { entries } => std::mem::take(entries)
                .into_iter()
                .filter(|(name, _)| name != "." && name != "/")
                .collect(),
            _ => return Err("wasmer's fd 3 is not its virtual root".into()),
        };
        *kind = Kind::Dir {
            parent: root.downgrade(),
            path: PathBuf::from("/"),
            entries,
        };
    }
    let preopens: Vec<u32> = fs.preopen_fds.read().map_err(poisoned)?.clone();
    for fd in preopens.into_iter().filter(|fd| *fd != VIRTUAL_ROOT_FD) {
        share_root_inode(fs, fd, &root)?;
        if let Some(inner) = fs.fd_map.write().map_err(poisoned)?.get_mut(fd) {
            inner.rights &= !FILE_ONLY_RIGHTS;
        }
    }
    Ok(())
}

/// wasmer's preopened descriptors and their directories, for the guest's descriptor table
/// (`wasi_fixes`), which keeps a host descriptor of each.
fn preopened_dirs(fs: &WasiFs) -> Result<Vec<(u32, PathBuf)>, String> {
    let preopens: Vec<u32> = fs.preopen_fds.read().map_err(poisoned)?.clone();
    let fds = fs.fd_map.read().map_err(poisoned)?;
    Ok(preopens
        .into_iter()
        .filter(|fd| *fd != VIRTUAL_ROOT_FD)
        .filter_map(|fd| match &*fds.get(fd)?.inode.read() {
            Kind::Dir { path, .. } => Some((fd, path.clone())),
            _ => None,
        })
        .collect())
}

/// Makes the preopen of "/" at `fd` a descriptor of the root inode itself. wasmer keeps a
/// cache of directory entries per inode, and resolves absolute paths (the targets of
/// symlinks created by `path_symlink`) from the root inode: with a second inode for "/", the
/// two caches drift apart, and a file removed and recreated as a directory under one is still
/// a file under the other (`path_open` through a symlink then answers NOTDIR).
fn share_root_inode(fs: &WasiFs, fd: u32, root: &InodeGuard) -> Result<(), String> {
    let mut fds = fs.fd_map.write().map_err(poisoned)?;
    let is_root_dir = fds.get(fd).is_some_and(
        |entry| matches!(&*entry.inode.read(), Kind::Dir { path, .. } if path == Path::new("/")),
    );
    if !is_root_dir {
        return Ok(());
    }
    if let Some(entry) = fds.remove(fd) {
        let shared = Fd {
            inode: root.clone(),
            ..entry
        };
        fds.insert(false, fd, shared);
    }
    Ok(())
}

fn poisoned<T>(_: T) -> String {
    "wasmer's file descriptor table is poisoned".into()
}

/// The cache key of the engine [`WasmerEngine::new`] builds: artifacts are only valid for the
/// same wasmer, compiler, target triple and CPU features (cranelift uses the host's features,
/// so an artifact built on a CPU with AVX-512 must never load on one without). Computed
/// without building a compiler, so the shim can key its cache.
pub fn engine_key() -> String {
    let target = wasmer::sys::Target::default();
    let mut features: Vec<String> = target
        .cpu_features()
        .iter()
        .map(|f| format!("{f:?}"))
        .collect();
    features.sort();
    let features = digest_hex(features.join(",").as_bytes());
    format!(
        "wasmer-{WASMER_VERSION}-cranelift-{}-cpu{}",
        target.triple(),
        &features[..16]
    )
}

/// A WASI command exports `_start`; anything else (a reactor, a library) cannot be run.
fn check_command(module: &Module) -> Result<(), String> {
    if module.exports().functions().any(|f| f.name() == "_start") {
        Ok(())
    } else {
        Err("the module exports no _start function: it is not a WASI command".into())
    }
}

/// Turns the result of calling `_start` into an outcome.
fn outcome_of(result: Result<(), RuntimeError>) -> Outcome {
    let err = match result {
        Ok(()) => return Outcome::Exited(0),
        Err(err) => err,
    };
    match err.downcast::<WasiError>() {
        Ok(WasiError::Exit(code)) => Outcome::Exited(code.raw()),
        Ok(other) => Outcome::NotRunnable(other.to_string()),
        Err(trap) => Outcome::Trapped(describe_trap(&trap)),
    }
}

/// One line with the reason, then the wasm backtrace, innermost frame first.
fn describe_trap(trap: &RuntimeError) -> String {
    let mut text = trap.message();
    for frame in trap.trace().iter().take(MAX_TRACE_FRAMES) {
        let name = frame
            .function_name()
            .map(str::to_string)
            .unwrap_or_else(|| format!("<function {}>", frame.func_index()));
        text.push_str(&format!(
            "\n    at {name} ({}:0x{:x})",
            frame.module_name(),
            frame.module_offset()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_alone_is_preopened_when_cwd_is_the_root() {
        let list = preopens(Path::new("/"), &["etc".into()]);
        assert_eq!(list, vec![("/".to_string(), "/".to_string())]);
    }

    #[test]
    fn cwd_is_preopened_last_so_relative_paths_resolve_there() {
        let list = preopens(Path::new("/app"), &["app".into(), "etc".into()]);
        let names: Vec<_> = list.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["/", "/app", "/etc", "."]);
        assert_eq!(list.last().unwrap().1, "/app");
    }
}
