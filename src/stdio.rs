//! Opening the stdio containerd gives a task: FIFO paths (ctr, CRI), `file://` URIs, or
//! nothing at all. The guest process gets the descriptors themselves; the shim copies no
//! bytes, so output written just before the guest exits is in the FIFO when it ends.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// The guest's three streams, plus the shim's hold on the stdin FIFO.
#[derive(Debug)]
pub struct OpenedStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// The shim's write end of the stdin FIFO (see `container::Process::close_stdin`).
    pub stdin_hold: Option<File>,
}

/// Opens the streams for a task. Empty strings mean "no stream": /dev/null, as runc gives.
pub fn open(stdin: &str, stdout: &str, stderr: &str) -> Result<OpenedStdio> {
    let (stdin_fd, stdin_hold) = match stdin {
        "" => (dev_null(false)?, None),
        uri => open_stdin(fifo_path(uri)?)?,
    };
    Ok(OpenedStdio {
        stdin: stdin_fd,
        stdout: open_output(stdout)?,
        stderr: open_output(stderr)?,
        stdin_hold,
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
pub(crate) fn open_output(uri: &str) -> Result<OwnedFd> {
    let (scheme, path) = match uri.split_once("://") {
        None if uri.is_empty() => return dev_null(true),
        None => ("fifo", uri),
        Some(parts) => parts,
    };
    let path = Path::new(path);
    let file = match scheme {
        // Read-write: opening never blocks for want of a reader, and writes do not fail with
        // EPIPE while the client reattaches, as containerd's own FIFO helpers behave.
        "fifo" => OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_path("open output FIFO", path)?,
        "file" => OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .with_path("open log file", path)?,
        other => {
            return Err(Error::Unimplemented(format!(
                "stdio {uri:?}: the {other}:// scheme is not supported by the wasm shim (use a FIFO or file://)"
            )))
        }
    };
    Ok(OwnedFd::from(file))
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
    fn output_uris_open_fifos_and_files_and_refuse_binaries() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out");
        mkfifo(&fifo);
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
