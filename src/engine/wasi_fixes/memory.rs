//! Guest memory for the fixes: reading and writing it, and borrowing a few bytes of it as
//! scratch space to ask wasmer's own calls about a descriptor or a path.

use nix::sys::stat::FileStat;
use wasmer::{Memory, MemoryView, RuntimeError, Value};
use wasmer_wasix::types::wasi::Errno;

use super::{host, Call};

/// What `fd_fdstat_get` says of a descriptor.
#[derive(Debug, Clone, Copy)]
pub(super) struct FdInfo {
    pub(super) filetype: u8,
    pub(super) base: u64,
    pub(super) inheriting: u64,
}

pub(super) const FILETYPE_DIRECTORY: u8 = 3;
/// Offsets in WASI's `fdstat` (24 bytes): filetype (u8) at 0, rights base and inheriting
/// (u64) at 8 and 16.
const FDSTAT_SIZE: u64 = 24;
pub(super) const FDSTAT_RIGHTS_BASE: u64 = 8;
const FDSTAT_RIGHTS_INHERITING: u64 = 16;
/// WASI's `filestat` is 64 bytes, its filetype (u8) at 16.
pub(super) const FILESTAT_SIZE: u64 = 64;
pub(super) const FILESTAT_FILETYPE: u64 = 16;
/// WASI's `filestat`: st_ino (u64) at 8.
const FILESTAT_INO: u64 = 8;
/// WASI's `filestat` fields a host stat gives, as (offset, field): dev, ino, nlink, size,
/// atim, mtim, ctim, each a u64 (times in nanoseconds). The filetype at 16 stays wasmer's.
fn host_fields(stat: &FileStat) -> [(u64, u64); 7] {
    let ns = |s: i64, ns: i64| {
        (s as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ns as u64)
    };
    [
        (0, stat.st_dev),
        (FILESTAT_INO, stat.st_ino),
        (24, stat.st_nlink),
        (32, stat.st_size as u64),
        (40, ns(stat.st_atime, stat.st_atime_nsec)),
        (48, ns(stat.st_mtime, stat.st_mtime_nsec)),
        (56, ns(stat.st_ctime, stat.st_ctime_nsec)),
    ]
}

/// Overwrites the `filestat` wasmer wrote at `buf` with what the host's `stat` says.
pub(super) fn write_host_stat(
    view: &MemoryView,
    buf: u64,
    stat: &FileStat,
) -> Result<(), RuntimeError> {
    for (at, value) in host_fields(stat) {
        view.write(buf + at, &value.to_le_bytes())
            .map_err(memory_error)?;
    }
    Ok(())
}

impl Call<'_> {
    pub(super) fn memory(&self) -> Result<Option<Memory>, RuntimeError> {
        Ok(self
            .shared
            .memory
            .lock()
            .map_err(|_| RuntimeError::new("memory slot poisoned"))?
            .clone())
    }

    pub(super) fn view(&self, memory: &Memory) -> MemoryView<'_> {
        memory.view(&self.store)
    }

    /// wasmer's `fd_fdstat_get` for `fd`: Ok(None) when no scratch memory is at hand.
    pub(super) fn fdstat(
        &mut self,
        fd: u32,
    ) -> Result<Option<Result<FdInfo, Errno>>, RuntimeError> {
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

    /// st_ino of `fd`: the host's when the table knows the descriptor on the host, else from
    /// wasmer's `fd_filestat_get`; Ok(None) when it cannot be had (no scratch memory, or the
    /// descriptor lacks FD_FILESTAT_GET).
    pub(super) fn inode(&mut self, fd: u32) -> Result<Option<u64>, RuntimeError> {
        if let Some(stat) = self.descriptors()?.host(fd).and_then(|h| host::stat(&h)) {
            return Ok(Some(stat.st_ino));
        }
        let ino = self.with_scratch(FILESTAT_SIZE, |call, memory, at| {
            let args = [Value::I32(fd as i32), Value::I32(at as i32)];
            if call.original_errno("fd_filestat_get", &args)? != Errno::Success {
                return Ok(None);
            }
            read_u64(&call.view(memory), at + FILESTAT_INO).map(Some)
        })?;
        Ok(ino.flatten())
    }

    /// st_ino of `path` under `fd` (the entry itself, not followed): the host's when it can
    /// tell, else from wasmer's `path_filestat_get(fd, 0, path)`,
    /// `path` being `len` bytes of guest memory: Ok(None) when it cannot be had.
    pub(super) fn inode_at(
        &mut self,
        fd: u32,
        path: u64,
        len: u64,
    ) -> Result<Option<u64>, RuntimeError> {
        if let (Some(dir), Some(memory)) = (self.descriptors()?.host(fd), self.memory()?) {
            let name = read_bytes(&self.view(&memory), path, len)?;
            if let Some(stat) = host::stat_at(&dir, &name, false) {
                return Ok(Some(stat.st_ino));
            }
        }
        self.path_filestat(fd, path, len, |view, at| read_u64(view, at + FILESTAT_INO))
    }

    /// The filetype of `path` (not following a final symlink) under `fd`, if wasmer can say.
    pub(super) fn filetype_at(
        &mut self,
        fd: u32,
        path: u64,
        len: u64,
    ) -> Result<Option<u8>, RuntimeError> {
        self.path_filestat(fd, path, len, |view, at| {
            read_u8(view, at + FILESTAT_FILETYPE)
        })
    }

    /// One field of wasmer's `path_filestat_get(fd, 0, path)`, read by `field` from the
    /// filestat at the given address: Ok(None) when it cannot be had.
    fn path_filestat<T>(
        &mut self,
        fd: u32,
        path: u64,
        len: u64,
        field: fn(&MemoryView, u64) -> Result<T, RuntimeError>,
    ) -> Result<Option<T>, RuntimeError> {
        let value = self.with_scratch(FILESTAT_SIZE, |call, memory, at| {
            if call.lstat_into(fd, path, len, at)? != Errno::Success {
                return Ok(None);
            }
            field(&call.view(memory), at).map(Some)
        })?;
        Ok(value.flatten())
    }

    /// wasmer's `path_filestat_get(fd, 0, path)` (a final symlink not followed), `path` being
    /// `len` bytes of guest memory, its filestat written at `at`: its errno.
    pub(super) fn lstat_into(
        &mut self,
        fd: u32,
        path: u64,
        len: u64,
        at: u64,
    ) -> Result<Errno, RuntimeError> {
        let args = [
            Value::I32(fd as i32),
            Value::I32(0),
            Value::I32(path as i32),
            Value::I32(len as i32),
            Value::I32(at as i32),
        ];
        self.original_errno("path_filestat_get", &args)
    }

    /// Runs `f` with `len` bytes of guest memory it may overwrite, at the top of the memory,
    /// restored afterwards. The guest is inside this very call, so it cannot observe them —
    /// unless another thread shares the memory: with a shared memory this answers Ok(None).
    pub(super) fn with_scratch<R>(
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
pub(super) struct Scratch {
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

pub(super) fn memory_error(e: wasmer::MemoryAccessError) -> RuntimeError {
    RuntimeError::new(format!("guest memory: {e}"))
}

pub(super) fn read_u8(view: &MemoryView, at: u64) -> Result<u8, RuntimeError> {
    let mut b = [0u8; 1];
    view.read(at, &mut b).map_err(memory_error)?;
    Ok(b[0])
}

pub(super) fn read_u32(view: &MemoryView, at: u64) -> Result<u32, RuntimeError> {
    let mut b = [0u8; 4];
    view.read(at, &mut b).map_err(memory_error)?;
    Ok(u32::from_le_bytes(b))
}

pub(super) fn read_u64(view: &MemoryView, at: u64) -> Result<u64, RuntimeError> {
    let mut b = [0u8; 8];
    view.read(at, &mut b).map_err(memory_error)?;
    Ok(u64::from_le_bytes(b))
}

pub(super) fn read_bytes(view: &MemoryView, at: u64, len: u64) -> Result<Vec<u8>, RuntimeError> {
    let mut b = vec![0; len as usize];
    view.read(at, &mut b).map_err(memory_error)?;
    Ok(b)
}
