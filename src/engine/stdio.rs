//! The guest's stdin, stdout and stderr: files over the descriptors containerd gave the task.
//!
//! wasmer's own `host_fs::File` seeks in `poll_read_ready`, which fails on a FIFO, and
//! containerd's stdio are FIFOs; so the guest gets these small files instead. Writes go
//! straight to the descriptor with write(2): nothing is buffered in the host, so output
//! written just before the guest exits is already in the FIFO when the process ends.
//! Reads from a pipe or FIFO wait in tokio's reactor, so a guest that polls stdin together
//! with a timer (poll_oneoff) sees honest readiness.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use wasmer_wasix::virtual_fs::{self, VirtualFile};

/// One of the three standard streams of the guest.
#[derive(Debug)]
pub struct StdioFile {
    fd: Fd,
    /// 0, 1 or 2: wasmer asks special files which stream they are.
    stream: u32,
}

#[derive(Debug)]
enum Fd {
    /// A descriptor that epoll can watch (pipe, FIFO, socket): reads wait in the reactor.
    Pollable(AsyncFd<OwnedFd>),
    /// Regular files and devices such as /dev/null: read and written directly.
    Blocking(OwnedFd),
}

impl StdioFile {
    /// Wraps the guest's stdin. Must be called inside the tokio runtime that will poll it.
    pub fn stdin(fd: OwnedFd) -> StdioFile {
        StdioFile {
            fd: pollable_or_blocking(fd),
            stream: 0,
        }
    }

    /// Wraps stdout (`stream` 1) or stderr (`stream` 2). Writes block, as for a native process.
    pub fn output(fd: OwnedFd, stream: u32) -> StdioFile {
        StdioFile {
            fd: Fd::Blocking(fd),
            stream,
        }
    }

    fn raw(&self) -> i32 {
        match &self.fd {
            Fd::Pollable(fd) => fd.get_ref().as_raw_fd(),
            Fd::Blocking(fd) => fd.as_raw_fd(),
        }
    }
}

/// Puts a pipe or FIFO in non-blocking mode under the reactor; keeps anything else blocking.
fn pollable_or_blocking(fd: OwnedFd) -> Fd {
    let raw = fd.as_raw_fd();
    if set_nonblocking(raw, true).is_err() {
        return Fd::Blocking(fd);
    }
    // SAFETY: the OwnedFd moves into the AsyncFd, which owns it until it is dropped; no one
    // else can close the descriptor while it is registered.
    match unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) } {
        Ok(async_fd) => Fd::Pollable(async_fd),
        Err(e) => {
            // epoll refuses regular files and some devices (EPERM): read those directly.
            let (fd, _) = e.into_parts();
            let _ = set_nonblocking(fd.as_raw_fd(), false);
            Fd::Blocking(fd)
        }
    }
}

fn set_nonblocking(fd: i32, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL have no memory effects.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn read_fd(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn write_fd(fd: i32, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Bytes available to read without blocking (FIONREAD); 0 when unknown.
fn readable_bytes(fd: i32) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if rc == 0 && n > 0 {
        n as usize
    } else {
        0
    }
}

impl AsyncRead for StdioFile {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.stream != 0 {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::Unsupported)));
        }
        match &self.fd {
            Fd::Blocking(fd) => {
                let n = read_fd(fd.as_raw_fd(), buf.initialize_unfilled())?;
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Fd::Pollable(fd) => loop {
                let mut guard = ready!(fd.poll_read_ready(cx))?;
                let unfilled = buf.initialize_unfilled();
                match guard.try_io(|inner| read_fd(inner.get_ref().as_raw_fd(), unfilled)) {
                    Ok(result) => {
                        let n = result?;
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(_would_block) => continue,
                }
            },
        }
    }
}

impl AsyncWrite for StdioFile {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.stream == 0 {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::Unsupported)));
        }
        Poll::Ready(write_fd(self.raw(), buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for StdioFile {
    fn start_seek(self: Pin<&mut Self>, _position: io::SeekFrom) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ESPIPE))
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(0))
    }
}

impl VirtualFile for StdioFile {
    fn last_accessed(&self) -> u64 {
        0
    }

    fn last_modified(&self) -> u64 {
        0
    }

    fn created_time(&self) -> u64 {
        0
    }

    fn size(&self) -> u64 {
        0
    }

    fn set_len(&mut self, _new_size: u64) -> virtual_fs::Result<()> {
        Err(virtual_fs::FsError::PermissionDenied)
    }

    fn unlink(&mut self) -> virtual_fs::Result<()> {
        Ok(())
    }

    fn get_special_fd(&self) -> Option<u32> {
        Some(self.stream)
    }

    fn poll_read_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match &self.fd {
            _ if self.stream != 0 => Poll::Ready(Ok(0)),
            // A regular file or device never blocks a reader.
            Fd::Blocking(_) => Poll::Ready(Ok(1)),
            Fd::Pollable(fd) => {
                let guard = ready!(fd.poll_read_ready(cx))?;
                // Readable with nothing buffered means end of file: report it as ready too.
                let n = readable_bytes(guard.get_inner().as_raw_fd());
                Poll::Ready(Ok(n.max(1)))
            }
        }
    }

    fn poll_write_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.stream == 0 {
            return Poll::Ready(Ok(0));
        }
        // PIPE_BUF: a write of up to this many bytes to a pipe is atomic.
        Poll::Ready(Ok(4096))
    }
}
