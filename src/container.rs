//! Containers and their processes: the task state machine, exit status and waiters.
//!
//! A process goes `Created -> Running -> Stopped`, or `Created -> Stopped` when killed before
//! start; anything else is a FailedPrecondition. The exit status is recorded exactly once, by
//! whoever observes the exit, and wakes every waiter through a watch channel, so no lock is
//! held while a client waits.

use std::fs::File;
use std::path::PathBuf;
use std::time::SystemTime;

use containerd_shim::api::Status;
use tokio::sync::{oneshot, watch};

use crate::cgroup::Cgroup;
use crate::console::Console;

use crate::error::{Error, Result};
use crate::guest::GuestProcess;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub status: u32,
    pub at: SystemTime,
}

/// The stdio paths containerd gave, reported back by State.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

#[derive(Debug)]
enum State {
    Created,
    Running,
    /// Frozen by Pause (the cgroup freezer); Resume goes back to Running.
    Paused,
    Stopped(ExitInfo),
}

/// One process of a container: its init process (exec processes come with `kubectl exec`).
#[derive(Debug)]
pub struct Process {
    pub pid: i32,
    pub stdio: StdioPaths,
    state: State,
    guest: GuestProcess,
    /// The shim's own write end of the stdin FIFO: while held, the guest does not see EOF
    /// just because the client has not opened its end yet. CloseIO drops it.
    stdin_hold: Option<File>,
    /// The task's terminal, if it was created with one.
    pub console: Option<Console>,
    /// Resolves once the terminal's output is copied out; the exit waits for it.
    output_done: Option<oneshot::Receiver<()>>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
}

impl Process {
    pub fn new(guest: GuestProcess, stdio: StdioPaths, stdin_hold: Option<File>) -> Process {
        Process {
            pid: guest.pid,
            stdio,
            state: State::Created,
            guest,
            stdin_hold,
            console: None,
            output_done: None,
            exit_tx: watch::channel(None).0,
        }
    }

    /// Attaches the task's terminal (see `console.rs`).
    pub fn with_console(mut self, console: Console, output_done: oneshot::Receiver<()>) -> Self {
        self.console = Some(console);
        self.output_done = Some(output_done);
        self
    }

    /// What must finish before the exit is reported: the terminal output copy, if any.
    pub fn take_output_done(&mut self) -> Option<oneshot::Receiver<()>> {
        self.output_done.take()
    }

    pub fn status(&self) -> Status {
        match self.state {
            State::Created => Status::CREATED,
            State::Running => Status::RUNNING,
            State::Paused => Status::PAUSED,
            State::Stopped(_) => Status::STOPPED,
        }
    }

    /// `Running -> Paused`, once the caller has frozen the cgroup.
    pub fn set_paused(&mut self) -> Result<()> {
        match self.state {
            State::Running => {
                self.state = State::Paused;
                Ok(())
            }
            _ => Err(Error::FailedPrecondition(format!(
                "process {} is not running, so it cannot be paused",
                self.pid
            ))),
        }
    }

    /// `Paused -> Running`, once the caller has thawed the cgroup.
    pub fn set_resumed(&mut self) -> Result<()> {
        match self.state {
            State::Paused => {
                self.state = State::Running;
                Ok(())
            }
            _ => Err(Error::FailedPrecondition(format!(
                "process {} is not paused",
                self.pid
            ))),
        }
    }

    pub fn is_paused(&self) -> bool {
        matches!(self.state, State::Paused)
    }

    pub fn exit(&self) -> Option<ExitInfo> {
        match self.state {
            State::Stopped(info) => Some(info),
            _ => None,
        }
    }

    pub fn is_stopped(&self) -> bool {
        matches!(self.state, State::Stopped(_))
    }

    /// `Created -> Running`: releases the guest.
    pub fn start(&mut self) -> Result<()> {
        match self.state {
            State::Created => {
                self.guest.start()?;
                self.state = State::Running;
                Ok(())
            }
            State::Running | State::Paused => Err(Error::FailedPrecondition(format!(
                "process {} is already running",
                self.pid
            ))),
            State::Stopped(_) => Err(Error::FailedPrecondition(format!(
                "process {} has already exited",
                self.pid
            ))),
        }
    }

    /// Records the exit (first observation wins) and wakes every waiter.
    pub fn set_exited(&mut self, status: u32, at: SystemTime) -> Option<ExitInfo> {
        if self.is_stopped() {
            return None;
        }
        let info = ExitInfo { status, at };
        self.state = State::Stopped(info);
        self.stdin_hold = None;
        self.exit_tx.send_replace(Some(info));
        Some(info)
    }

    /// A receiver that yields the exit once recorded; await it without holding any lock.
    pub fn subscribe_exit(&self) -> watch::Receiver<Option<ExitInfo>> {
        self.exit_tx.subscribe()
    }

    /// Sends a signal to the process, as runc's shim does: an exited process is NotFound.
    pub fn kill(&self, signal: u32) -> Result<()> {
        if self.is_stopped() {
            return Err(finished(self.pid));
        }
        send_signal(self.pid, signal)
    }

    /// CloseIO: the client has closed stdin; once its writer is gone the guest sees EOF.
    pub fn close_stdin(&mut self) {
        self.stdin_hold = None;
    }
}

/// Sends `signal` to `pid`. Signal 0 is kill(2)'s liveness check.
pub fn send_signal(pid: i32, signal: u32) -> Result<()> {
    let sig = match signal {
        0 => None,
        n => Some(
            i32::try_from(n)
                .ok()
                .and_then(|s| nix::sys::signal::Signal::try_from(s).ok())
                .ok_or_else(|| Error::InvalidArgument(format!("invalid signal {signal}")))?,
        ),
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
        Ok(()) => Ok(()),
        // Exited but not yet reaped: the exit event is on its way.
        Err(nix::errno::Errno::ESRCH) => Err(finished(pid)),
        Err(e) => Err(Error::io(format!("kill process {pid}"), e.into())),
    }
}

/// What runc's shim answers for a process that has exited.
fn finished(pid: i32) -> Error {
    Error::NotFound(format!("process {pid} already finished"))
}

/// A container: its bundle, rootfs and init process.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// Whether the shim mounted the rootfs (and so must unmount it on delete).
    pub rootfs_mounted: bool,
    pub init: Process,
    /// The container's cgroup (placement, limits, stats, freezer).
    pub cgroup: Cgroup,
}

impl Container {
    /// The process named by `exec_id` (empty: the init process).
    pub fn process(&self, exec_id: &str) -> Result<&Process> {
        if exec_id.is_empty() {
            Ok(&self.init)
        } else {
            Err(Error::not_found_exec(&self.id, exec_id))
        }
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Result<&mut Process> {
        if exec_id.is_empty() {
            Ok(&mut self.init)
        } else {
            Err(Error::not_found_exec(&self.id, exec_id))
        }
    }

    /// Pids of every live process of the container.
    pub fn pids(&self) -> Vec<u32> {
        [&self.init]
            .iter()
            .filter(|p| !p.is_stopped())
            .map(|p| p.pid as u32)
            .collect()
    }

    /// Delete is allowed once the process has exited, or before it was ever started.
    pub fn check_deletable(&self, exec_id: &str) -> Result<()> {
        let process = self.process(exec_id)?;
        match process.state {
            State::Running | State::Paused => Err(Error::FailedPrecondition(format!(
                "cannot delete {}: the process is running; kill it first",
                self.id
            ))),
            State::Created | State::Stopped(_) => Ok(()),
        }
    }
}
