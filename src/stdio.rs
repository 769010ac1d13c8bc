//! Opening the stdio containerd gives a task: FIFO paths (ctr, CRI), `file://` URIs, or
//! nothing at all. The guest process gets the descriptors themselves; the shim copies no
//! bytes, so output written just before the guest exits is in the FIFO when it ends.
//!
//! An output FIFO is opened for the guest only once its reader (ctr, containerd's CRI) has it
//! open, as runc's shim does: a FIFO that no process holds open drops what is in it when its
//! last writer closes, so a guest that wrote and exited before the client's reader got to
//! the FIFO would lose its output. The shim then also holds a read end for the life of the
//! process, so the guest's writes never fail with EPIPE while the client reattaches (a
//! restarted containerd); that end is never read.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// How long an output FIFO is given to get a reader before the shim opens it without one.
const READER_WAIT: Duration = Duration::from_secs(5);

/// The guest's three streams, plus what the shim holds open beside them.
#[derive(Debug)]
pub struct OpenedStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// The shim's write end of the stdin FIFO (see `container::Process::close_stdin`).
    pub stdin_hold: Option<File>,
    /// The shim's read ends of the output FIFOs (see the module doc).
    pub output_holds: Vec<OwnedFd>,
}

/// Opens the streams for a task. Empty strings mean "no stream": /dev/null, as runc gives.
/// Blocking (it may wait for a FIFO's reader): call it from a blocking task.
pub fn open(stdin: &str, stdout: &str, stderr: &str) -> Result<OpenedStdio> {
    let (stdin_fd, stdin_hold) = match stdin {
        "" => (dev_null(false)?, None),
        uri => open_stdin(fifo_path(uri)?)?,
    };
    let (stdout, stdout_hold) = open_output(stdout)?;
    let (stderr, stderr_hold) = open_output(stderr)?;
    Ok(OpenedStdio {
        stdin: stdin_fd,
        stdout,
        stderr,
        stdin_hold,
        output_holds: stdout_hold.into_iter().chain(stderr_hold).collect(),
    })
}

/// The path of a stdin URI: a bare path or `fifo://`; files and binaries cannot feed stdin.
pub(crate) fn fifo_path(uri: &str) -> Result<&Path> {
    match uri.split_once("://") {
        None => Ok(Path::new(uri)),
        Some(("fifo", path)) => Ok(Path::new(path)),
        Some((scheme, _)) => Err(Error::InvalidArgument(format!(
            "stdin {uri:?}: the {scheme}:// scheme cannot be used for stdin"
        ))),
    }
}

/// Opens the read end for the guest and a write end for the shim to hold. Neither open
/// blocks: the read end is opened non-blocking first, after which the FIFO has a reader.
pub(crate) fn open_stdin(path: &Path) -> Result<(OwnedFd, Option<File>)> {
    let read = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_path("open stdin FIFO", path)?;
    let hold = OpenOptions::new()
        .write(true)
        .open(path)
        .with_path("open stdin FIFO for writing", path)?;
    Ok((OwnedFd::from(read), Some(hold)))
}

/// stdout or stderr: a FIFO path, `fifo://`, `file://` (appended to), or empty (/dev/null).
/// Returns the guest's descriptor and, for a FIFO, the shim's read end to hold.
pub(crate) fn open_output(uri: &str) -> Result<(OwnedFd, Option<OwnedFd>)> {
    let (scheme, path) = match uri.split_once("://") {
        None if uri.is_empty() => return Ok((dev_null(true)?, None)),
        None => ("fifo", uri),
        Some(parts) => parts,
    };
    let path = Path::new(path);
    match scheme {
        "fifo" => open_output_fifo(path).map(|(w, r)| (w, Some(r))),
        "file" => OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .with_path("open log file", path)
            .map(|f| (OwnedFd::from(f), None)),
        other => Err(Error::Unimplemented(format!(
            "stdio {uri:?}: the {other}:// scheme is not supported by the wasm shim (use a FIFO or file://)"
        ))),
    }
}

/// The guest's write end of an output FIFO, opened once a reader has the FIFO open (see the
/// module doc), and the shim's read end. A FIFO that gets no reader within [`READER_WAIT`] is
/// opened anyway, read-write, with a warning: its output waits in the FIFO for a reader.
fn open_output_fifo(path: &Path) -> Result<(OwnedFd, OwnedFd)> {
    let deadline = Instant::now() + READER_WAIT;
    let writer = loop {
        let opened = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path);
        match opened {
            Ok(file) => break OwnedFd::from(file),
            // No reader yet: the client's reader opens it concurrently.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                log::warn!(
                    "no reader opened {} within {READER_WAIT:?}; its output waits there",
                    path.display()
                );
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .with_path("open output FIFO", path)?;
                break OwnedFd::from(file);
            }
            Err(e) => return Err(Error::io_path("open output FIFO", path, e)),
        }
    };
    // The guest's writes block as on any pipe.
    nix::fcntl::fcntl(
        &writer,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .with_path("make the output FIFO blocking", path)?;
    let hold = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_path("hold the output FIFO", path)?;
    Ok((writer, OwnedFd::from(hold)))
}

fn dev_null(write: bool) -> Result<OwnedFd> {
    let path = Path::new("/dev/null");
    let file = OpenOptions::new()
        .read(!write)
        .write(write)
        .open(path)
        .with_path("open", path)?;
    Ok(OwnedFd::from(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    #[test]
    fn stdin_sees_eof_only_after_the_hold_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("stdin");
        mkfifo(&fifo);
        let opened = open(fifo.to_str().unwrap(), "", "").unwrap();
        let mut client = OpenOptions::new().write(true).open(&fifo).unwrap();
        client.write_all(b"hi").unwrap();
        drop(client);
        let mut reader = File::from(opened.stdin);
        let mut buf = [0u8; 8];
        assert_eq!(reader.read(&mut buf).unwrap(), 2);
        // The client closed, but the shim's hold keeps the FIFO open: no EOF yet (EAGAIN).
        assert_eq!(
            reader.read(&mut buf).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        drop(opened.stdin_hold);
        assert_eq!(
            reader.read(&mut buf).unwrap(),
            0,
            "EOF once the hold is gone"
        );
    }

    #[test]
    fn output_written_before_a_late_reader_opens_the_fifo_is_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out");
        mkfifo(&fifo);
        let reader_path = fifo.clone();
        let reader = std::thread::spawn(move || {
            // The client's reader comes late, as ctr's asynchronous open may.
            std::thread::sleep(Duration::from_millis(100));
            let mut text = String::new();
            File::open(reader_path)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            text
        });
        let (writer, hold) = open_output(fifo.to_str().unwrap()).unwrap();
        // The guest writes and exits at once; only the shim's hold stays open.
        File::from(writer).write_all(b"last words").unwrap();
        assert_eq!(reader.join().unwrap(), "last words");
        drop(hold);
    }

    #[test]
    fn output_uris_open_fifos_and_files_and_refuse_binaries() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out");
        mkfifo(&fifo);
        // A reader, as the client has before Create.
        let _reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let log = dir.path().join("log.txt");
        let opened = open(
            "",
            fifo.to_str().unwrap(),
            &format!("file://{}", log.display()),
        )
        .unwrap();
        File::from(opened.stderr).write_all(b"to file").unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"to file");
        let err = open("", "binary:///usr/bin/logger", "").unwrap_err();
        assert!(err.to_string().contains("binary://"), "{err}");
        assert!(open("file:///x", "", "").is_err());
    }
}
