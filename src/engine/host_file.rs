//! A regular file of the container, as the guest's open descriptors use it: plain blocking
//! reads, writes and seeks on the host file, in the guest's own thread.
//!
//! virtual-fs's host file wraps a tokio file, whose writes return before they are done (the
//! data is handed to a background thread): another process (a sidecar reading a shared
//! volume, the host) may not see what the guest has written when `fd_write` returns, and a
//! failed write (ENOSPC, EIO, EDQUOT) is reported on some later call instead. It also reads
//! the times given to `set_times` as seconds, and panics when the file's metadata cannot be
//! read. Here every call is the system call itself, as for a native process.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use nix::sys::stat::futimens;
use nix::sys::time::TimeSpec;
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use wasmer_wasix::virtual_fs::{self, FsError, VirtualFile};

/// How much `poll_write_ready` says may be written without blocking; a regular file never
/// blocks for long, so this only sizes wasmer's chunks.
const WRITE_READY_HINT: usize = 8192;

#[derive(Debug)]
pub struct HostFile {
    file: File,
    /// The path it was opened at, for `unlink`.
    path: PathBuf,
    /// The answer to the last `start_seek`, for `poll_complete`.
    seeked: Option<io::Result<u64>>,
}

impl HostFile {
    pub fn new(file: File, path: PathBuf) -> HostFile {
        HostFile {
            file,
            path,
            seeked: None,
        }
    }

    /// A time of the file's metadata in nanoseconds since the epoch, 0 if it cannot be had.
    fn time(&self, which: fn(&std::fs::Metadata) -> io::Result<SystemTime>) -> u64 {
        self.file
            .metadata()
            .and_then(|m| which(&m))
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64)
    }
}

/// A time for futimens(2): nanoseconds since the epoch, or left alone.
fn timespec(ns: Option<u64>) -> TimeSpec {
    match ns {
        Some(ns) => TimeSpec::from(std::time::Duration::from_nanos(ns)),
        None => TimeSpec::UTIME_OMIT,
    }
}

impl VirtualFile for HostFile {
    fn last_accessed(&self) -> u64 {
        self.time(std::fs::Metadata::accessed)
    }

    fn last_modified(&self) -> u64 {
        self.time(std::fs::Metadata::modified)
    }

    fn created_time(&self) -> u64 {
        self.time(std::fs::Metadata::created)
    }

    fn set_times(&mut self, atime: Option<u64>, mtime: Option<u64>) -> virtual_fs::Result<()> {
        futimens(&self.file, &timespec(atime), &timespec(mtime))
            .map_err(|e| FsError::from(io::Error::from(e)))
    }

    fn size(&self) -> u64 {
        self.file.metadata().map_or(0, |m| m.len())
    }

    fn set_len(&mut self, new_size: u64) -> virtual_fs::Result<()> {
        self.file.set_len(new_size).map_err(FsError::from)
    }

    fn unlink(&mut self) -> virtual_fs::Result<()> {
        std::fs::remove_file(&self.path).map_err(FsError::from)
    }

    fn get_special_fd(&self) -> Option<u32> {
        None
    }

    /// The bytes between the position and the end: what a read can return at once.
    fn poll_read_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let file = &self.file;
        let remaining = (&mut &*file)
            .stream_position()
            .map(|at| file.metadata().map_or(0, |m| m.len()).saturating_sub(at));
        Poll::Ready(remaining.map(|n| n as usize))
    }

    fn poll_write_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(WRITE_READY_HINT))
    }
}

impl AsyncRead for HostFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = self.file.read(buf.initialize_unfilled());
        Poll::Ready(read.map(|n| buf.advance(n)))
    }
}

impl AsyncWrite for HostFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.file.write(buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.file.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Nothing is buffered here: written is written.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for HostFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        let seeked = self.file.seek(position);
        self.seeked = Some(seeked);
        Ok(())
    }

    fn poll_complete(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match self.seeked.take() {
            Some(seeked) => Poll::Ready(seeked),
            None => Poll::Ready(self.file.stream_position()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    fn scratch(name: &str) -> (PathBuf, HostFile) {
        let path = std::env::temp_dir().join(format!("host-file-{}-{name}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        (path.clone(), HostFile::new(file, path))
    }

    #[tokio::test]
    async fn a_write_is_on_the_file_when_it_returns() {
        let (path, mut file) = scratch("write");
        file.write_all(b"hello").await.unwrap();
        // No flush: another reader of the path sees it at once.
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        assert_eq!(file.size(), 5);
        file.seek(io::SeekFrom::Start(1)).await.unwrap();
        let ready = poll_fn(|cx| Pin::new(&mut file).poll_read_ready(cx)).await;
        assert_eq!(ready.unwrap(), 4);
        let mut rest = String::new();
        file.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "ello");
        file.unlink().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn times_are_nanoseconds_and_none_leaves_one_alone() {
        let (path, mut file) = scratch("times");
        file.set_times(Some(2_000_000_001), None).unwrap();
        let before = file.last_modified();
        assert_eq!(file.last_accessed(), 2_000_000_001);
        file.set_times(None, Some(3_000_000_000)).unwrap();
        assert_eq!(file.last_accessed(), 2_000_000_001);
        assert_eq!(file.last_modified(), 3_000_000_000);
        assert_ne!(before, 3_000_000_000);
        file.set_len(3).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3);
        std::fs::remove_file(path).unwrap();
    }
}
