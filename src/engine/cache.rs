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
//! Loading an artifact runs its machine code, so a file is trusted only if it carries our
//! header and the sha256 of its payload matches: a truncated or garbage file is detected and
//! rebuilt. Writes go to a temporary file that is renamed into place, so several containers
//! compiling the same new module at once each leave a whole file behind.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Marks a file as one of ours, and its layout version.
const MAGIC: &[u8; 8] = b"CSWASM1\n";
const DIGEST_LEN: usize = 32;

/// The cache, rooted at one engine's directory.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: PathBuf,
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
        Ok(ModuleCache { dir })
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
        let mut artifact = Vec::new();
        stream.take(len).read_to_end(&mut artifact)?;
        if artifact.len() as u64 != len {
            return Err(std::io::Error::other(format!(
                "artifact ended after {} of {len} bytes",
                artifact.len()
            )));
        }
        self.put(module_digest, &artifact).map(|_| true)
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
        let path = self.entry_path(module_digest);
        let tmp = self.dir.join(format!(
            ".{module_digest}.{}.{}.tmp",
            std::process::id(),
            unique_suffix()
        ));
        let result = write_file(&tmp, artifact).and_then(|()| {
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

/// The hex sha256 of some bytes: the content address of a module.
pub fn digest_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_file(tmp: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| annotate(e, "create cache entry", tmp))?;
    let digest = Sha256::digest(artifact);
    file.write_all(MAGIC)
        .and_then(|()| file.write_all(&digest))
        .and_then(|()| file.write_all(artifact))
        .and_then(|()| file.sync_all())
        .map_err(|e| annotate(e, "write cache entry", tmp))
}

/// Checks our header and digest; returns the payload or what is wrong with the file.
pub fn unwrap_entry(mut data: Vec<u8>) -> Result<Vec<u8>, String> {
    let header = MAGIC.len() + DIGEST_LEN;
    if data.len() < header || &data[..MAGIC.len()] != MAGIC {
        return Err(format!(
            "not a cache entry ({} bytes, bad header)",
            data.len()
        ));
    }
    let expected = data[MAGIC.len()..header].to_vec();
    let payload = data.split_off(header);
    if Sha256::digest(&payload).as_slice() != expected.as_slice() {
        return Err(format!(
            "digest mismatch over {} payload bytes",
            payload.len()
        ));
    }
    Ok(payload)
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
        assert!(matches!(cache.get("m"), Err(Miss::Corrupt(why)) if why.contains("digest")));
        assert!(!path.exists(), "a corrupt entry must be removed");
        fs::write(&path, b"garbage").unwrap();
        assert!(matches!(cache.get("m"), Err(Miss::Corrupt(why)) if why.contains("header")));
        assert_eq!(cache.get("m"), Err(Miss::Absent));
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
    fn digests_are_hex_sha256() {
        assert_eq!(
            digest_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
