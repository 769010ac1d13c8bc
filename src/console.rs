//! The pseudo-terminal of a task created with `terminal: true` (`ctr run -t`,
//! `kubectl run -it`): the guest gets the slave side as stdin, stdout and stderr (and as its
//! controlling terminal, so ^C becomes SIGINT); the shim copies between the master side and
//! containerd's FIFOs, as runc's shim does.
//!
//! Unlike plain stdio, this output passes through the shim; the exit is therefore reported
//! only once the copy has drained the terminal (see `Service::on_exit`), so nothing written
//! before the guest exits is lost.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::pty::{openpty, Winsize};
use tokio::sync::oneshot;

use crate::error::{Error, IoContext, Result};
use crate::stdio;

/// The shim's side of a task's terminal.
#[derive(Debug)]
pub struct Console {
    master: File,
}

/// A terminal ready for a guest: its side, the shim's side, and what the shim holds.
#[derive(Debug)]
pub struct OpenedConsole {
    /// The guest's stdin, stdout and stderr.
    pub slave: OwnedFd,
    pub console: Console,
    /// Resolves once all output reached containerd's FIFO (the guest side closed).
    pub output_done: oneshot::Receiver<()>,
    /// The shim's write end of the stdin FIFO (see `container::Process::close_stdin`).
    pub stdin_hold: Option<File>,
    /// The shim's read end of the output FIFO (see `stdio`).
    pub output_holds: Vec<OwnedFd>,
}

/// Creates the terminal and starts copying: stdin FIFO → terminal, terminal → stdout.
pub fn open(stdin: &str, stdout: &str) -> Result<OpenedConsole> {
    let pty = openpty(None, None).context(|| "create a pseudo-terminal".into())?;
    // openpty(3) makes both ends inheritable: the master must never reach a guest (this or a
    // later one), and the slave reaches this guest only through the dup2 at spawn.
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .context(|| "make the pseudo-terminal close-on-exec".into())?;
    }
    let master = File::from(pty.master);
    let (output, output_hold) = stdio::open_output(stdout)?;
    let output = File::from(output);
    let (done_tx, output_done) = oneshot::channel();
    let reader = master
        .try_clone()
        .context(|| "duplicate the terminal".into())?;
    spawn_copy("tty-out", reader, output, Some(done_tx))?;
    let stdin_hold = match stdin {
        "" => None,
        uri => {
            let (input, hold) = stdio::open_stdin(stdio::fifo_path(uri)?)?;
            let input = File::from(input);
            set_blocking(&input, Path::new(uri))?;
            let writer = master
                .try_clone()
                .context(|| "duplicate the terminal".into())?;
            spawn_copy("tty-in", input, writer, None)?;
            hold
        }
    };
    Ok(OpenedConsole {
        slave: pty.slave,
        console: Console { master },
        output_done,
        stdin_hold,
        output_holds: output_hold.into_iter().collect(),
    })
}

impl Console {
    /// ResizePty: the guest's terminal gets the client's window size.
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let size = Winsize {
            ws_row: u16::try_from(height).unwrap_or(u16::MAX),
            ws_col: u16::try_from(width).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize struct through the pointer.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        if rc < 0 {
            return Err(Error::io(
                "resize the terminal",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

/// Copies until the source ends: EOF, or EIO from a terminal whose guest side is closed.
fn spawn_copy(
    name: &str,
    mut from: File,
    mut to: File,
    done: Option<oneshot::Sender<()>>,
) -> Result<()> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            if let Some(done) = done {
                let _ = done.send(());
            }
        })
        .context(|| format!("start the {name} copier"))?;
    Ok(())
}

fn set_blocking(file: &File, path: &Path) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    fcntl(file, FcntlArg::F_SETFL(OFlag::empty())).with_path("make blocking", path)?;
    Ok(())
}
