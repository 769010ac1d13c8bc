//! The module as the shim hands it to a guest process.
//!
//! The shim opens the entrypoint inside the rootfs through the kernel (`openat2` with
//! `RESOLVE_IN_ROOT`, so no symlink swapped in after the check leads out), copies its bytes
//! into a sealed memfd and hashes exactly those bytes. The guest compiles what the shim
//! hashed, so the cache key ([`ModuleCache`]) always names the bytes behind an artifact, even
//! if the file changes on disk meanwhile. The one exception is a file of a committed image
//! layer, which never changes: its digest is recorded once, and a start whose entry is cached
//! hands over the layer file itself (see [`hand_off`]). A wasm OCI artifact's layer comes
//! from containerd's content store into the same kind of sealed memfd (see `artifact`).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::fcntl::{fcntl, openat2, FcntlArg, OFlag, OpenHow, ResolveFlag, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

use sha2::{Digest, Sha256};

use crate::engine::cache::{CompileLock, ModuleCache};
use crate::error::{Error, IoContext, Result};
use crate::rootfs::OverlayLayers;
use crate::spec::WASM_MAGIC;

/// The largest artifact the shim accepts back from a guest (wasmer's output for the biggest
/// real modules is a few hundred MB).
const MAX_ARTIFACT_BYTES: u64 = 4 << 30;

/// How long a Create waits for another container's compile of the same module before it
/// compiles the module itself: the compile of a large module takes tens of seconds here, and
/// kubelet gives CreateContainer two minutes.
const COMPILE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What the guest gets for its module.
#[derive(Debug)]
pub struct ModuleHandoff {
    /// A sealed memfd holding the module's bytes, or the read-only layer file they are in
    /// (a module of an image layer whose digest is recorded and whose entry is cached).
    pub module: File,
    /// Hex sha256 of those bytes.
    pub digest: String,
    /// The cache entry for the digest, opened read-only, if there is one.
    pub cache_entry: Option<File>,
    /// The write end of the pipe the shim reads a newly compiled artifact from.
    pub artifact_out: Option<OwnedFd>,
    /// The thread that stores what arrives on that pipe; it ends when the guest closes it.
    pub store: Option<JoinHandle<()>>,
}

/// Opens `module` (a container path) inside `rootfs`, seals a copy of it, and sets up its
/// cache entry and the artifact return pipe when there is a cache.
///
/// A module that is a file of an image layer under an overlay rootfs (`layers`) is copied and
/// hashed once: its digest is recorded for the layer file, and a later start whose entry is
/// cached hands the guest the layer file itself and copies and hashes nothing (27 ms for a
/// 25 MiB module here).
pub fn hand_off(
    rootfs: &Path,
    module: &Path,
    cache: Option<&ModuleCache>,
    max_bytes: u64,
    layers: Option<&OverlayLayers>,
) -> Result<ModuleHandoff> {
    let layer_file = match (cache, layers) {
        (Some(_), Some(layers)) => LayerFile::find(rootfs, layers, module, max_bytes),
        _ => None,
    };
    if let (Some(cache), Some(file)) = (cache, &layer_file) {
        if let Some(handoff) = known_layer_file(cache, file, module)? {
            return Ok(handoff);
        }
    }
    let (sealed, digest) = sealed_copy(rootfs, module, max_bytes)?;
    if let (Some(cache), Some(file)) = (cache, &layer_file) {
        cache.record_layer_file(&file.key, &digest);
    }
    hand_off_sealed(sealed, digest, cache)
}

/// A module file that lies in a read-only lower directory of an overlay rootfs: a layer of an
/// image, which containerd committed and never writes again. Its key names it by its layer
/// directory, path, inode, size and times, so a file changed in any way is another key.
struct LayerFile {
    file: File,
    key: String,
}

impl LayerFile {
    /// The layer file the container sees at `module`, or `None` when the container's own
    /// upper directory has anything there (the module was written or replaced in the
    /// container), no single lower file is plainly it, or it is larger than `max_bytes`.
    fn find(
        rootfs: &Path,
        layers: &OverlayLayers,
        module: &Path,
        max_bytes: u64,
    ) -> Option<LayerFile> {
        let path = relative(module);
        if let Some(upper) = &layers.upper {
            if !matches!(open_plain(upper, &path, OFlag::O_PATH), Err(Errno::ENOENT)) {
                return None;
            }
        }
        let seen = open_in_root(rootfs, module, max_bytes)
            .ok()?
            .metadata()
            .ok()?;
        for lower in &layers.lower {
            let read = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
            match open_plain(lower, &path, read) {
                Ok(file) => return Self::checked(file, lower, &path, &seen, max_bytes),
                Err(Errno::ENOENT) => continue,
                // A symlink on the way, a whiteout, anything unusual: the slow, sure path.
                Err(_) => return None,
            }
        }
        None
    }

    /// `file` (found at `path` in `lower`) if it is the regular file the rootfs shows.
    fn checked(
        file: File,
        lower: &Path,
        path: &Path,
        seen: &std::fs::Metadata,
        max_bytes: u64,
    ) -> Option<LayerFile> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().ok()?;
        let same = meta.is_file()
            && meta.len() == seen.len()
            && meta.mtime() == seen.mtime()
            && meta.mtime_nsec() == seen.mtime_nsec();
        if !same || meta.len() > max_bytes {
            return None;
        }
        let identity = format!(
            "{}\0{}\0{}\0{}\0{}\0{}.{}\0{}.{}",
            lower.display(),
            path.display(),
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec()
        );
        Some(LayerFile {
            file,
            key: crate::engine::cache::digest_hex(identity.as_bytes()),
        })
    }
}

/// Opens `path` under `dir` with `flags` (openat2 takes nothing but O_CLOEXEC, O_NOFOLLOW and
/// O_DIRECTORY beside O_PATH), following no symlink at all.
fn open_plain(dir: &Path, path: &Path, flags: OFlag) -> nix::Result<File> {
    let root =
        File::open(dir).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(
            ResolveFlag::RESOLVE_IN_ROOT
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    openat2(&root, path, how).map(File::from)
}

/// The hand-off of a layer file whose digest is recorded and whose entry is cached: the
/// guest loads the entry, and gets the layer file itself to compile from should the entry
/// not load. `None` when either is missing.
fn known_layer_file(
    cache: &ModuleCache,
    layer_file: &LayerFile,
    module: &Path,
) -> Result<Option<ModuleHandoff>> {
    let Some(digest) = cache.layer_file_digest(&layer_file.key) else {
        return Ok(None);
    };
    let Some(entry) = cache.open_entry(&digest) else {
        return Ok(None);
    };
    cache.touch(&entry);
    let file = layer_file
        .file
        .try_clone()
        .context(|| "duplicate the module's layer file".into())?;
    log::info!(
        "module {} is sha256:{digest} by its layer's record: cached, not copied",
        module.display()
    );
    let (out, store) = collect_artifact(cache, &digest, None)?;
    Ok(Some(ModuleHandoff {
        module: file,
        digest,
        cache_entry: Some(entry),
        artifact_out: Some(out),
        store: Some(store),
    }))
}

/// Sets up the cache entry and the artifact return pipe (when there is a cache) for a module
/// already sealed (`sealed`, whose bytes hash to `digest`).
pub fn hand_off_sealed(
    sealed: File,
    digest: String,
    cache: Option<&ModuleCache>,
) -> Result<ModuleHandoff> {
    let (cache_entry, artifact_out, store) = match cache {
        Some(cache) => {
            let (entry, lock) = match entry_or_compile_lock(cache, &digest) {
                Ok(entry) => {
                    cache.touch(&entry);
                    (Some(entry), None)
                }
                Err(lock) => (None, lock),
            };
            // Also on a hit: an entry that does not load is compiled again and replaced.
            let (out, store) = collect_artifact(cache, &digest, lock)?;
            (entry, Some(out), Some(store))
        }
        None => (None, None, None),
    };
    Ok(ModuleHandoff {
        module: sealed,
        digest,
        cache_entry,
        artifact_out,
        store,
    })
}

/// Opens the module inside the rootfs (the kernel resolves the path there), refusing what is
/// not a regular file or larger than `max_bytes`.
fn open_in_root(rootfs: &Path, module: &Path, max_bytes: u64) -> Result<File> {
    let root = File::open(rootfs).with_path("open the rootfs", rootfs)?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(&root, &relative(module), how)
        .map_err(|e| Error::io_path("open the module", module, e.into()))?;
    let file = File::from(fd);
    let meta = file.metadata().with_path("stat the module", module)?;
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!(
            "entrypoint {} is not a regular file",
            module.display()
        )));
    }
    if meta.len() > max_bytes {
        return Err(too_big(module, meta.len(), max_bytes));
    }
    Ok(file)
}

fn too_big(module: &Path, len: u64, max_bytes: u64) -> Error {
    Error::InvalidArgument(format!(
        "entrypoint {} is {len} bytes, more than the wasm runtime's MaxModuleBytes ({max_bytes}); raise that option to run it",
        module.display()
    ))
}

/// Copies the module into a sealed memfd, hashing exactly the bytes copied: the guest gets
/// those bytes, and the cache key is their digest. Streamed, so the shim never holds a whole
/// module in its own memory; at most `max_bytes` are copied (the file may grow meanwhile).
fn sealed_copy(rootfs: &Path, module: &Path, max_bytes: u64) -> Result<(File, String)> {
    let mut source = open_in_root(rootfs, module, max_bytes)?;
    let mut sealed = SealedModule::new(max_bytes)?;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = match source.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io_path("read the module", module, e)),
        };
        match sealed.append(&chunk[..n]) {
            Ok(()) => {}
            Err(Refusal::NotWasm) => {
                return Err(Error::InvalidArgument(format!(
                    "entrypoint {} changed while the container was created: it is no longer a WebAssembly module",
                    module.display()
                )))
            }
            Err(Refusal::TooBig(len)) => return Err(too_big(module, len, max_bytes)),
            Err(Refusal::Error(e)) => return Err(e),
        }
    }
    let (sealed, digest, _) = sealed.seal()?;
    Ok((sealed, digest))
}

/// A memfd being filled with a module's bytes, hashing exactly what it holds; sealed (no
/// write, grow or shrink, no new seals) once complete, so the guest compiles what was hashed.
pub struct SealedModule {
    file: File,
    hasher: Sha256,
    len: u64,
    max_bytes: u64,
}

/// Why [`SealedModule::append`] refused a chunk.
#[derive(Debug)]
pub enum Refusal {
    /// The first bytes are not wasm's magic number.
    NotWasm,
    /// The module grew past the limit (the length so far).
    TooBig(u64),
    Error(Error),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotWasm => write!(f, "not a WebAssembly module"),
            Refusal::TooBig(len) => write!(f, "more than the limit ({len} bytes so far)"),
            Refusal::Error(e) => write!(f, "{e}"),
        }
    }
}

impl SealedModule {
    pub fn new(max_bytes: u64) -> Result<SealedModule> {
        let fd = memfd_create(
            c"wasm-module",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .context(|| "create a memfd for the module".into())?;
        Ok(SealedModule {
            file: File::from(fd),
            hasher: Sha256::new(),
            len: 0,
            max_bytes,
        })
    }

    /// Appends the next `chunk` of the module.
    pub fn append(&mut self, chunk: &[u8]) -> std::result::Result<(), Refusal> {
        if self.len == 0 && !chunk.is_empty() && !chunk.starts_with(WASM_MAGIC) {
            return Err(Refusal::NotWasm);
        }
        self.len += chunk.len() as u64;
        if self.len > self.max_bytes {
            return Err(Refusal::TooBig(self.len));
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .context(|| "copy the module into its memfd".into())
            .map_err(Refusal::Error)
    }

    /// Seals the memfd: returns it rewound, the hex sha256 of its bytes and their length.
    pub fn seal(mut self) -> Result<(File, String, u64)> {
        let seals = SealFlag::F_SEAL_WRITE
            | SealFlag::F_SEAL_GROW
            | SealFlag::F_SEAL_SHRINK
            | SealFlag::F_SEAL_SEAL;
        fcntl(&self.file, FcntlArg::F_ADD_SEALS(seals))
            .context(|| "seal the module's memfd".into())?;
        self.file
            .rewind()
            .context(|| "rewind the module's memfd".into())?;
        let digest = self
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok((self.file, digest, self.len))
    }
}

/// The cache entry of the module, or the right to compile it: while another container (of
/// this shim or another) compiles the same module, waits for its entry rather than compiling
/// it a second time, up to [`COMPILE_WAIT`].
fn entry_or_compile_lock(
    cache: &ModuleCache,
    digest: &str,
) -> std::result::Result<File, Option<CompileLock>> {
    if let Some(entry) = cache.open_entry(digest) {
        return Ok(entry);
    }
    let lock = cache.lock_compile(digest, COMPILE_WAIT);
    if lock.is_none() {
        log::warn!("module sha256:{digest} is still being compiled by another container after {COMPILE_WAIT:?}; compiling it here too");
    }
    cache.open_entry(digest).ok_or(lock)
}

/// The reader of the artifact a guest compiles, holding the compile of the module (`lock`)
/// until the artifact is stored or the guest sent none.
fn collect_artifact(
    cache: &ModuleCache,
    digest: &str,
    lock: Option<CompileLock>,
) -> Result<(OwnedFd, JoinHandle<()>)> {
    let (read, write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context(|| "create the artifact pipe".into())?;
    let cache = cache.clone();
    let digest = digest.to_string();
    let store = std::thread::Builder::new()
        .name("cache-store".into())
        .spawn(move || {
            match cache.store_stream(&digest, File::from(read), MAX_ARTIFACT_BYTES) {
                Ok(true) => log::info!("stored compiled module sha256:{digest} in the cache"),
                Ok(false) => {}
                Err(e) => log::warn!("did not cache module sha256:{digest}: {e}"),
            }
            drop(lock);
        })
        .context(|| "start the cache writer".into())?;
    Ok((write, store))
}

/// A container path relative to the root ("." for the root itself).
fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn the_guest_gets_a_sealed_copy_of_exactly_the_hashed_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"\0asm\x01\0\0\0payload";
        std::fs::write(dir.path().join("m.wasm"), bytes).unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::open(cache_dir.path(), "k").unwrap();
        let start = || {
            hand_off(
                dir.path(),
                Path::new("/m.wasm"),
                Some(&cache),
                1 << 20,
                None,
            )
        };
        let mut handoff = start().unwrap();
        assert_eq!(handoff.digest, crate::engine::cache::digest_hex(bytes));
        assert!(handoff.cache_entry.is_none(), "nothing cached yet");
        let mut copy = Vec::new();
        handoff.module.read_to_end(&mut copy).unwrap();
        assert_eq!(copy, bytes);
        let err = handoff.module.write_all(b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "sealed: {err}");
        // What the guest streams back lands under the digest the shim computed.
        let mut out = File::from(handoff.artifact_out.take().unwrap());
        out.write_all(&5u64.to_le_bytes()).unwrap();
        out.write_all(b"code!").unwrap();
        drop(out);
        handoff.store.take().unwrap().join().unwrap();
        assert_eq!(cache.get(&handoff.digest).unwrap(), b"code!");
        let again = start().unwrap();
        assert!(again.cache_entry.is_some(), "the entry is handed over now");
    }

    #[test]
    fn a_layer_file_is_hashed_once_then_handed_over_as_it_is() {
        // The rootfs is the lower directory itself here: what an overlay shows of it.
        let lower = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        let bytes = b"\0asm\x01\0\0\0layer";
        std::fs::write(lower.path().join("m.wasm"), bytes).unwrap();
        let layers = OverlayLayers {
            upper: Some(upper.path().to_path_buf()),
            lower: vec![lower.path().to_path_buf()],
        };
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::open(cache_dir.path(), "k").unwrap();
        let start = || {
            hand_off(
                lower.path(),
                Path::new("/m.wasm"),
                Some(&cache),
                1 << 20,
                Some(&layers),
            )
            .unwrap()
        };
        let sealed = |h: &ModuleHandoff| fcntl(&h.module, FcntlArg::F_GET_SEALS).is_ok();
        // A guest that sends no artifact back: the compile it held is released.
        let finish = |mut h: ModuleHandoff| {
            drop(h.artifact_out.take());
            if let Some(store) = h.store.take() {
                store.join().unwrap();
            }
            h
        };
        let first = finish(start());
        assert!(sealed(&first), "the first start copies and hashes");
        let key = LayerFile::find(lower.path(), &layers, Path::new("/m.wasm"), 1 << 20)
            .expect("the module is a layer file")
            .key;
        assert_eq!(cache.layer_file_digest(&key), Some(first.digest.clone()));
        // No entry yet: still a copy, even with the digest recorded.
        assert!(sealed(&finish(start())));
        cache.put(&first.digest, b"code").unwrap();
        let mut known = finish(start());
        assert_eq!(known.digest, first.digest);
        assert!(known.cache_entry.is_some());
        assert!(!sealed(&known), "the layer file itself");
        let mut handed = Vec::new();
        known.module.read_to_end(&mut handed).unwrap();
        assert_eq!(handed, bytes);
        // Anything of the container's own at that path: copied and hashed again.
        std::fs::write(upper.path().join("m.wasm"), b"\0asm\x01\0\0\0other").unwrap();
        assert!(sealed(&finish(start())));
    }

    #[test]
    fn a_symlink_resolves_inside_the_root_and_a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("host.wasm"), b"\0asm\x01\0\0\0").unwrap();
        symlink(
            outside.path().join("host.wasm"),
            dir.path().join("escape.wasm"),
        )
        .unwrap();
        let err = hand_off(dir.path(), Path::new("/escape.wasm"), None, 1 << 20, None).unwrap_err();
        assert!(err.to_string().contains("open the module"), "{err}");
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let err = hand_off(dir.path(), Path::new("/d"), None, 1 << 20, None).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_module_over_the_size_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut big = b"\0asm\x01\0\0\0".to_vec();
        big.resize(4096, 0);
        std::fs::write(dir.path().join("big.wasm"), &big).unwrap();
        let err = hand_off(dir.path(), Path::new("/big.wasm"), None, 1024, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is 4096 bytes, more than the wasm runtime's MaxModuleBytes (1024)"),
            "{err}"
        );
        assert!(hand_off(dir.path(), Path::new("/big.wasm"), None, 4096, None).is_ok());
    }
}
