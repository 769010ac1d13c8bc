//! The content-addressed cache of compiled modules, kept by the shim.
//!
//! A module is compiled once per engine; later starts of the same bytes (any container, any
//! pod) load the artifact. Entries live at `<dir>/<engine key>/<module sha256>.bin` where the
//! engine key covers wasmer's version, the compiler, the target and its CPU features
//! (`engine::wasmer::engine_key`), so an upgrade or another CPU never loads a foreign artifact.
//!
//! Only the shim touches the directory (mode 0700, never visible in a container). The shim
//! computes the module's digest from the bytes it hands the guest; on a hit it opens the entry
//! read-only for the guest ([`ModuleCache::open_entry`]), on a miss the confined guest
//! compiles and streams the artifact back over a pipe and the shim stores it under the digest
//! it computed ([`ModuleCache::store_stream`]). So a hostile module can at worst spoil the
//! entry of its own bytes.
//!
//! Loading an artifact runs its machine code, so its integrity is settled when it is written:
//! only the shim writes the directory, each entry goes to a temporary file that is synced and
//! then renamed into place, so an entry is either absent or whole (several containers
//! compiling the same new module at once each leave a whole file behind). A start maps the
//! entry and checks what is cheap and catches a foreign or cut file: our header, the payload
//! length it records against the file's size ([`map_entry`]); wasmer then checks its own
//! header. The sha256 of the payload, recorded too, is checked by [`ModuleCache::get`] (not on
//! the start path, where hashing a large artifact would cost more than loading it).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Marks a file as one of ours, and its layout version: magic, payload length (u64 LE),
/// sha256 of the payload, payload.
const MAGIC: &[u8; 8] = b"CSWASM2\n";
const LEN_LEN: usize = 8;
const DIGEST_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + LEN_LEN + DIGEST_LEN;

/// The cache, rooted at one engine's directory.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: PathBuf,
    /// The most the entries may take together; the least recently used go first.
    max_bytes: u64,
}

/// How a temporary entry's name ends; one left by a writer that died is removed later.
const TMP_SUFFIX: &str = ".tmp";
/// Temporary entries older than this are a dead writer's (a live one renames within seconds).
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(600);

/// The directory of the digests recorded for modules of image layers (see
/// [`ModuleCache::record_layer_file`]).
const LAYER_FILES_DIR: &str = "layer-files";

/// The file whose byte ranges stand for modules being compiled (see
/// [`ModuleCache::lock_compile`]).
const COMPILE_LOCK_FILE: &str = "compile.lock";

/// Holds the compile of one module for this process: dropped (closed), it is released.
#[derive(Debug)]
pub struct CompileLock {
    _file: File,
}

/// Why a cache entry was not used.
#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    /// No entry for this module yet.
    Absent,
    /// An entry existed but failed its integrity check; it has been removed.
    Corrupt(String),
}

impl ModuleCache {
    /// Opens (creating if needed, mode 0700: artifacts are code) the cache for one engine.
    pub fn open(root: &Path, engine_key: &str) -> std::io::Result<ModuleCache> {
        let dir = root.join(sanitize(engine_key));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| annotate(e, "create module cache directory", &dir))?;
        Ok(ModuleCache {
            dir,
            max_bytes: u64::MAX,
        })
    }

    /// The same cache, kept under `max_bytes` by evicting the least recently used entries.
    pub fn with_limit(mut self, max_bytes: u64) -> ModuleCache {
        self.max_bytes = max_bytes;
        self
    }

    /// Marks an entry as used now (its mtime is the cache's clock for eviction).
    pub fn touch(&self, entry: &File) {
        let _ = entry.set_modified(std::time::SystemTime::now());
    }

    /// Takes the compile of `module_digest` for this process, waiting (up to `wait`) while
    /// another container, of this shim or another, compiles the same module: then the caller
    /// finds its entry and compiles nothing. `None` when the wait ran out (the caller
    /// compiles anyway). An open-file-description lock on one byte of one file, chosen by the
    /// digest: released by the kernel when the holder closes it or dies, however it ends.
    pub fn lock_compile(
        &self,
        module_digest: &str,
        wait: std::time::Duration,
    ) -> Option<CompileLock> {
        let path = self.dir.join(COMPILE_LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .ok()?;
        // The first 12 hex digits of the digest pick the byte (a collision only means a wait).
        let start = i64::from_str_radix(module_digest.get(..12).unwrap_or("0"), 16).unwrap_or(0);
        let deadline = std::time::Instant::now() + wait;
        loop {
            match lock_byte(&file, start) {
                Ok(()) => return Some(CompileLock { _file: file }),
                Err(e)
                    if e.raw_os_error() != Some(libc::EAGAIN)
                        && e.raw_os_error() != Some(libc::EACCES) =>
                {
                    return None
                }
                Err(_) if std::time::Instant::now() >= deadline => return None,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    }

    /// Removes the least recently used entries (oldest mtime first) until the rest fit in
    /// the limit; `keep` stays whatever its size. A running guest that mapped a removed
    /// entry keeps its pages.
    fn evict(&self, keep: &Path) {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return;
        };
        let paths: Vec<PathBuf> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        remove_stale_tmp(&paths);
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = paths
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "bin"))
            .filter_map(|p| {
                let meta = fs::metadata(&p).ok()?;
                Some((meta.modified().ok()?, meta.len(), p))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if path != keep && fs::remove_file(&path).is_ok() {
                log::info!(
                    "evicted {} ({len} bytes) from the module cache",
                    path.display()
                );
                total -= len;
            }
        }
        self.prune_layer_files();
    }

    /// The digest recorded for the layer file named `key` (see `module::LayerFile`), if any.
    pub fn layer_file_digest(&self, key: &str) -> Option<String> {
        recorded_digest(&self.dir.join(LAYER_FILES_DIR).join(key))
    }

    /// Removes the layer-file records whose module has no entry: evicted, or never stored.
    /// Each record names one file of one image layer, so without this the directory would
    /// only grow, a record for every module layer the node ever ran. A record whose module
    /// another container is compiling right now goes too: its next start hashes the module
    /// again and records it anew.
    fn prune_layer_files(&self) {
        let Ok(records) = fs::read_dir(self.dir.join(LAYER_FILES_DIR)) else {
            return;
        };
        for record in records.filter_map(|r| r.ok()) {
            let path = record.path();
            let cached = recorded_digest(&path).is_some_and(|d| self.entry_path(&d).exists());
            if !cached {
                let _ = fs::remove_file(&path);
            }
        }
    }

    /// Records that the layer file named `key` holds the bytes whose sha256 is `digest`: a
    /// symlink whose target is the digest, created whole or not at all.
    pub fn record_layer_file(&self, key: &str, digest: &str) {
        let dir = self.dir.join(LAYER_FILES_DIR);
        let made = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .and_then(|()| std::os::unix::fs::symlink(digest, dir.join(key)));
        match made {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => log::warn!("could not record the digest of layer file {key}: {e}"),
        }
    }

    /// The path an artifact for `module_digest` (hex sha256 of the module bytes) lives at.
    pub fn entry_path(&self, module_digest: &str) -> PathBuf {
        self.dir.join(format!("{module_digest}.bin"))
    }

    /// The entry for a module, opened read-only for a guest to verify and load.
    pub fn open_entry(&self, module_digest: &str) -> Option<File> {
        File::open(self.entry_path(module_digest)).ok()
    }

    /// Reads one artifact a guest streams back (`u64` little-endian length, then the bytes)
    /// and stores it. Nothing is stored unless the whole announced artifact arrived: a guest
    /// killed mid-write leaves no truncated entry. `Ok(false)`: the guest sent nothing (it
    /// loaded from the cache, or failed before compiling).
    pub fn store_stream(
        &self,
        module_digest: &str,
        mut stream: impl Read,
        max_len: u64,
    ) -> std::io::Result<bool> {
        let mut len = [0u8; 8];
        match stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        let len = u64::from_le_bytes(len);
        if len > max_len {
            return Err(std::io::Error::other(format!(
                "artifact of {len} bytes is over the {max_len} byte limit"
            )));
        }
        // Streamed to the file: a large artifact never sits whole in the shim's memory.
        let path = self.store(module_digest, &mut stream.take(len), len)?;
        self.evict(&path);
        Ok(true)
    }

    /// Returns the verified artifact bytes for a module, or why there are none.
    pub fn get(&self, module_digest: &str) -> Result<Vec<u8>, Miss> {
        let path = self.entry_path(module_digest);
        let mut data = Vec::new();
        match File::open(&path).and_then(|mut f| f.read_to_end(&mut data)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
            Err(e) => return Err(self.discard(&path, format!("unreadable: {e}"))),
        }
        match unwrap_entry(data) {
            Ok(payload) => Ok(payload),
            Err(why) => Err(self.discard(&path, why)),
        }
    }

    /// Stores an artifact atomically: readers see the old state or the whole new file.
    pub fn put(&self, module_digest: &str, artifact: &[u8]) -> std::io::Result<PathBuf> {
        self.store(module_digest, &mut &artifact[..], artifact.len() as u64)
    }

    /// Writes the `len` bytes `artifact` gives as the entry of `module_digest`: to a
    /// temporary file, synced, then renamed into place; nothing is left if it fails.
    fn store(
        &self,
        module_digest: &str,
        artifact: &mut impl Read,
        len: u64,
    ) -> std::io::Result<PathBuf> {
        let path = self.entry_path(module_digest);
        let tmp = self.dir.join(format!(
            ".{module_digest}.{}.{}{TMP_SUFFIX}",
            std::process::id(),
            unique_suffix()
        ));
        let result = write_entry(&tmp, artifact, len).and_then(|()| {
            fs::rename(&tmp, &path).map_err(|e| annotate(e, "rename cache entry to", &path))
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| path)
    }

    fn discard(&self, path: &Path, why: String) -> Miss {
        // Removing lets the next start rebuild it; failing to remove only costs a recompile.
        let _ = fs::remove_file(path);
        Miss::Corrupt(why)
    }
}

/// The digest a layer-file record at `path` holds (its symlink's target), if it is one.
fn recorded_digest(path: &Path) -> Option<String> {
    let digest = fs::read_link(path).ok()?;
    let digest = digest.to_str()?;
    let hex = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| digest.to_string())
}

/// Removes the temporary entries of writers that died mid-write (a shim killed while it
/// stored an artifact).
fn remove_stale_tmp(paths: &[PathBuf]) {
    let now = std::time::SystemTime::now();
    for path in paths {
        let stale = path.to_string_lossy().ends_with(TMP_SUFFIX)
            && fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|at| now.duration_since(at).unwrap_or_default() > STALE_TMP);
        if stale && fs::remove_file(path).is_ok() {
            log::info!("removed {}, left by a writer that died", path.display());
        }
    }
}

/// The hex sha256 of some bytes: the content address of a module.
pub fn digest_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The header first as zeros (the length and digest are known once the payload is through),
/// then the payload, hashed on its way, then the real header, then sync.
fn write_entry(tmp: &Path, artifact: &mut impl Read, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| annotate(e, "create cache entry", tmp))?;
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 1 << 16];
    let mut written: u64 = 0;
    file.write_all(&[0u8; HEADER_LEN])
        .map_err(|e| annotate(e, "write cache entry", tmp))?;
    loop {
        let n = match artifact.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&chunk[..n]);
        file.write_all(&chunk[..n])
            .map_err(|e| annotate(e, "write cache entry", tmp))?;
        written += n as u64;
    }
    if written != len {
        return Err(std::io::Error::other(format!(
            "artifact ended after {written} of {len} bytes"
        )));
    }
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&len.to_le_bytes());
    header.extend_from_slice(&hasher.finalize());
    file.write_all_at(&header, 0)
        .and_then(|()| file.sync_all())
        .map_err(|e| annotate(e, "write cache entry", tmp))
}

/// A non-blocking write lock on one byte of `file`, owned by its open file description.
fn lock_byte(file: &File, start: i64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero flock is a valid value of this plain C struct.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = start;
    lock.l_len = 1;
    // SAFETY: fcntl reads the flock through the pointer, which outlives the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Checks our header and the recorded length against the entry's size; returns the
/// payload's range.
fn check_header(data: &[u8]) -> Result<std::ops::Range<usize>, String> {
    if data.len() < HEADER_LEN || &data[..MAGIC.len()] != MAGIC {
        return Err(format!(
            "not a cache entry ({} bytes, bad header)",
            data.len()
        ));
    }
    let mut len = [0u8; LEN_LEN];
    len.copy_from_slice(&data[MAGIC.len()..MAGIC.len() + LEN_LEN]);
    let len = u64::from_le_bytes(len);
    let actual = (data.len() - HEADER_LEN) as u64;
    if len != actual {
        return Err(format!(
            "truncated: the header says {len} payload bytes, the file has {actual}"
        ));
    }
    Ok(HEADER_LEN..data.len())
}

/// Checks our header, length and digest; returns the payload or what is wrong with the file.
pub fn unwrap_entry(mut data: Vec<u8>) -> Result<Vec<u8>, String> {
    let payload = check_header(&data)?;
    let expected = data[HEADER_LEN - DIGEST_LEN..HEADER_LEN].to_vec();
    let payload = data.split_off(payload.start);
    if Sha256::digest(&payload).as_slice() != expected.as_slice() {
        return Err(format!(
            "digest mismatch over {} payload bytes",
            payload.len()
        ));
    }
    Ok(payload)
}

/// The payload of an entry the shim opened, mapped (not read: the pages are the page cache's,
/// shared by every container that loads the same artifact), after the cheap checks above.
pub fn map_entry(entry: &File) -> Result<bytes::Bytes, String> {
    // SAFETY: the entry is never written in place (entries are replaced by rename), so the
    // mapped file does not change under the mapping; it is mapped read-only and private.
    let map = unsafe { memmap2::Mmap::map(entry) }.map_err(|e| format!("unmappable: {e}"))?;
    let payload = check_header(&map)?;
    Ok(bytes::Bytes::from_owner(map).slice(payload))
}

fn unique_suffix() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos) ^ (u64::from(std::process::id()) << 32)
}

/// Engine keys come from wasmer; keep them to characters safe in a file name.
fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn annotate(e: std::io::Error, op: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_artifact_comes_back_verified() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::open(dir.path(), "wasmer-7.4.2/cranelift").unwrap();
        assert_eq!(cache.get("abc"), Err(Miss::Absent));
        cache.put("abc", b"machine code").unwrap();
        assert_eq!(cache.get("abc").unwrap(), b"machine code");
        assert!(dir.path().join("wasmer-7.4.2_cranelift/abc.bin").exists());
    }

    #[test]
    fn truncated_or_garbage_entries_are_detected_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::open(dir.path(), "k").unwrap();
        let path = cache.put("m", &[7u8; 4096]).unwrap();
        let whole = fs::read(&path).unwrap();
        fs::write(&path, &whole[..whole.len() - 100]).unwrap();
        let cut = File::open(&path).unwrap();
        assert_eq!(
            map_entry(&cut).unwrap_err(),
            "truncated: the header says 4096 payload bytes, the file has 3996"
        );
        assert!(matches!(cache.get("m"), Err(Miss::Corrupt(why)) if why.contains("truncated")));
        assert!(!path.exists(), "a corrupt entry must be removed");
        let mut flipped = whole.clone();
        flipped[HEADER_LEN + 10] ^= 1;
        fs::write(&path, &flipped).unwrap();
        assert!(matches!(cache.get("m"), Err(Miss::Corrupt(why)) if why.contains("digest")));
        assert!(!path.exists(), "a corrupt entry must be removed");
        fs::write(&path, b"garbage").unwrap();
        assert!(matches!(cache.get("m"), Err(Miss::Corrupt(why)) if why.contains("header")));
        assert_eq!(cache.get("m"), Err(Miss::Absent));
    }

    #[test]
    fn a_start_maps_exactly_the_stored_payload() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::open(dir.path(), "k").unwrap();
        cache.put("m", b"machine code").unwrap();
        let mapped = map_entry(&cache.open_entry("m").unwrap()).unwrap();
        assert_eq!(&mapped[..], b"machine code");
        let garbage = dir.path().join("garbage");
        fs::write(&garbage, b"CSWASM1\nold layout").unwrap();
        assert!(map_entry(&File::open(&garbage).unwrap())
            .unwrap_err()
            .contains("bad header"));
    }

    #[test]
    fn one_compile_of_a_module_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::open(dir.path(), "k").unwrap();
        let wait = std::time::Duration::from_millis(200);
        let held = cache.lock_compile("abcdef012345aa", wait).unwrap();
        // Another holder (another shim: locks belong to open files, so a thread shows it).
        let other = cache.clone();
        let started = std::time::Instant::now();
        let waited = std::thread::spawn(move || other.lock_compile("abcdef012345aa", wait))
            .join()
            .unwrap();
        assert!(waited.is_none(), "the compile is held");
        assert!(started.elapsed() >= wait, "it waited for the holder");
        let another_module = cache.clone();
        assert!(
            std::thread::spawn(move || another_module.lock_compile("99", wait))
                .join()
                .unwrap()
                .is_some()
        );
        drop(held);
        let other = cache.clone();
        assert!(
            std::thread::spawn(move || other.lock_compile("abcdef012345aa", wait))
                .join()
                .unwrap()
                .is_some()
        );
    }

    /// A cache in `dir` that keeps at most `max_bytes`.
    fn cache_with_limit(dir: &tempfile::TempDir, max_bytes: u64) -> ModuleCache {
        ModuleCache::open(dir.path(), "k")
            .unwrap()
            .with_limit(max_bytes)
    }

    /// Sets the modification time of the file at `path`, the cache's clock for eviction and
    /// for a dead writer's leftovers.
    fn set_mtime(path: &Path, at: std::time::SystemTime) {
        File::options()
            .append(true)
            .open(path)
            .unwrap()
            .set_modified(at)
            .unwrap();
    }

    #[test]
    fn the_least_recently_used_entries_go_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_with_limit(&dir, 10_000);
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let path = cache.put(name, &[0u8; 3000]).unwrap();
            let at = old + std::time::Duration::from_secs(i as u64 * 60);
            set_mtime(&path, at);
        }
        // "a" is the oldest, but used since: "b" is now the least recently used.
        cache.touch(&cache.open_entry("a").unwrap());
        let artifact = [1u8; 3000];
        let stream = [(artifact.len() as u64).to_le_bytes().as_slice(), &artifact].concat();
        assert!(cache.store_stream("d", stream.as_slice(), 1 << 20).unwrap());
        let left: Vec<bool> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| cache.entry_path(n).exists())
            .collect();
        assert_eq!(
            left,
            [true, false, true, true],
            "4 x 3,048 bytes over 10,000: b goes"
        );
    }

    #[test]
    fn a_dead_writers_temporary_file_goes_at_the_next_store() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::open(dir.path(), "k").unwrap();
        let dead = dir.path().join("k/.m.123.456.tmp");
        fs::write(&dead, b"half an artifact").unwrap();
        let fresh = dir.path().join("k/.n.789.1.tmp");
        fs::write(&fresh, b"being written").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        set_mtime(&dead, old);
        let stream = [3u64.to_le_bytes().as_slice(), b"abc"].concat();
        assert!(cache.store_stream("m", stream.as_slice(), 1 << 20).unwrap());
        assert!(!dead.exists(), "a dead writer's file is removed");
        assert!(fresh.exists(), "a live writer's file is left alone");
        assert_eq!(cache.get("m").unwrap(), b"abc");
    }

    #[test]
    fn concurrent_writers_leave_one_whole_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::open(dir.path(), "k").unwrap();
        let writers: Vec<_> = (0..8u8)
            .map(|i| {
                let cache = cache.clone();
                std::thread::spawn(move || cache.put("same", &vec![i; 1 << 16]).unwrap())
            })
            .collect();
        writers.into_iter().for_each(|w| {
            w.join().unwrap();
        });
        let payload = cache.get("same").unwrap();
        assert_eq!(payload.len(), 1 << 16);
        assert!(payload.iter().all(|b| *b == payload[0]), "mixed writers");
        let leftovers = fs::read_dir(dir.path().join("k")).unwrap().count();
        assert_eq!(leftovers, 1, "temporary files left behind");
    }

    #[test]
    fn a_recorded_layer_file_gives_back_its_digest_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::open(dir.path(), "k").unwrap();
        let digest = digest_hex(b"module");
        assert_eq!(cache.layer_file_digest("key"), None);
        cache.record_layer_file("key", &digest);
        cache.record_layer_file("key", &digest);
        assert_eq!(cache.layer_file_digest("key"), Some(digest));
        cache.record_layer_file("bad", "not-a-digest");
        assert_eq!(cache.layer_file_digest("bad"), None);
    }

    #[test]
    fn a_store_drops_the_layer_file_records_of_modules_no_longer_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_with_limit(&dir, 5_000);
        let [old, kept, never] = ["old", "kept", "never"].map(|m| digest_hex(m.as_bytes()));
        cache.record_layer_file("old-layer", &old);
        cache.record_layer_file("kept-layer", &kept);
        cache.record_layer_file("never-stored-layer", &never);
        cache.put(&old, &[0u8; 3000]).unwrap();
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        set_mtime(&cache.entry_path(&old), long_ago);
        // Storing `kept` takes the cache over its limit: `old`, the least recently used, goes.
        let stream = [3000u64.to_le_bytes().as_slice(), &[1u8; 3000]].concat();
        assert!(cache
            .store_stream(&kept, stream.as_slice(), 1 << 20)
            .unwrap());
        assert!(!cache.entry_path(&old).exists());
        assert_eq!(cache.layer_file_digest("old-layer"), None);
        assert_eq!(cache.layer_file_digest("never-stored-layer"), None);
        assert_eq!(cache.layer_file_digest("kept-layer"), Some(kept));
        let records = fs::read_dir(dir.path().join("k").join(LAYER_FILES_DIR)).unwrap();
        assert_eq!(records.count(), 1, "the other records' files are removed");
    }

    #[test]
    fn digests_are_hex_sha256() {
        assert_eq!(
            digest_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
