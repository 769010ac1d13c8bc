//! Containers and their processes: the task state machine, exit status and waiters.
//!
//! A process goes `Created -> Running -> Stopped`, or `Created -> Stopped` when killed before
//! start (or when its module cannot run); `Running <-> Paused` through the freezer; anything
//! else is a FailedPrecondition. The exit status is recorded exactly once, by the task that
//! watches that very process (`Service::watch_exit`), and wakes every waiter through a watch
//! channel.
//!
//! Containers are shared (`Arc`) and keep their mutable state behind locks of their own, held
//! only for a state change: the service's map of containers is locked only to find one, so no
//! request ever waits on another container, and no lock is held while a guest is waited on.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use containerd_shim::api::Status;
use tokio::sync::{oneshot, watch};

use crate::cgroup::Cgroup;
use crate::console::Console;
use crate::error::{Error, Result};
use crate::guest::GuestProcess;
use crate::native::{NativeExec, NativeProcess, NativeRuntime};

/// What runs a process: a wasm guest process of this shim, or runc (a native container).
#[derive(Debug)]
pub enum Runner {
    Guest(GuestProcess),
    Native(NativeProcess),
    /// A process exec'd into a native container: runc runs it at Start.
    NativeExec(Box<NativeExec>),
}

impl Runner {
    pub fn pid(&self) -> i32 {
        match self {
            Runner::Guest(guest) => guest.pid,
            Runner::Native(native) => native.pid,
            Runner::NativeExec(exec) => exec.pid(),
        }
    }

    /// Sends `signal` to the process itself, through its pidfd.
    fn signal(&self, signal: i32) -> std::io::Result<()> {
        match self {
            Runner::Guest(guest) => guest.signal(signal),
            Runner::Native(native) => native.signal(signal),
            Runner::NativeExec(exec) => exec.signal(signal),
        }
    }

    /// Releases the process (see `GuestProcess::start`; `runc start` for a native one).
    fn start(&self, load_wait: std::time::Duration) -> Result<()> {
        match self {
            Runner::Guest(guest) => guest.start(load_wait),
            Runner::Native(native) => native.start(),
            Runner::NativeExec(exec) => exec.start().map(drop),
        }
    }

    /// A process that is never started: a guest exits at once; runc's init waits for the
    /// kill that follows.
    fn abandon(&self) {
        if let Runner::Guest(guest) = self {
            guest.abandon();
        }
    }

    /// Whether no process exists (yet) for it: a native exec before runc ran it.
    fn never_ran(&self) -> bool {
        matches!(self, Runner::NativeExec(exec) if exec.is_unstarted())
    }
}

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

/// Where a process is, until it has exited (the exit itself lives in the watch channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created,
    /// Start is waiting for the module to load; State still answers CREATED.
    Starting,
    Running,
    /// Frozen by Pause (the cgroup freezer); Resume goes back to Running.
    Paused,
}

/// One process of a container: its init process (exec processes come with `kubectl exec`).
#[derive(Debug)]
pub struct Process {
    /// Known from the start, but for a native exec: from its Start on.
    pid: AtomicI32,
    pub stdio: StdioPaths,
    runner: Runner,
    state: Mutex<State>,
    /// The shim's own write end of the stdin FIFO: while held, the guest does not see EOF
    /// just because the client has not opened its end yet. CloseIO drops it.
    stdin_hold: Mutex<Option<File>>,
    /// Read ends of the output FIFOs, held for the life of the process (see
    /// `stdio::OpenedStdio::output_holds`); never read, they tell how much output waits.
    output_holds: Vec<OwnedFd>,
    /// The task's terminal, if it was created with one.
    pub console: Option<Console>,
    /// Resolves once the terminal's output is copied out; the exit waits for it.
    output_done: Mutex<Option<oneshot::Receiver<()>>>,
    /// True while a Start is under way: the exit of a guest that dies meanwhile is reported
    /// only after its TaskStart (see [`Process::settle_start`]).
    starting: watch::Sender<bool>,
    /// The process has ended; its exit is being reported (output read, events queued).
    ended: AtomicBool,
    /// Set by a Delete of an ended process: nobody will read its output any more.
    output_abandoned: AtomicBool,
    exit_tx: watch::Sender<Option<ExitInfo>>,
}

/// The status of a process that never ran: a native exec deleted before its Start (or that
/// runc could not run), and a guest released without a Start (see `guest::child`). What a
/// process killed before it did anything reports.
pub const EXIT_NEVER_RAN: u32 = 137;

/// How long a Delete of an ended process waits for its exit to be recorded: longer than the
/// terminal drain the record may still wait for.
const EXIT_RECORD_LIMIT: Duration = Duration::from_secs(10);

/// Locks a state mutex; a panic elsewhere while it was held leaves a consistent value.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Process {
    pub fn new(
        runner: Runner,
        stdio: StdioPaths,
        stdin_hold: Option<File>,
        output_holds: Vec<OwnedFd>,
    ) -> Process {
        Process {
            pid: AtomicI32::new(runner.pid()),
            stdio,
            runner,
            state: Mutex::new(State::Created),
            stdin_hold: Mutex::new(stdin_hold),
            output_holds,
            console: None,
            output_done: Mutex::new(None),
            starting: watch::channel(false).0,
            ended: AtomicBool::new(false),
            output_abandoned: AtomicBool::new(false),
            exit_tx: watch::channel(None).0,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// Whether its exit must be watched from Start on (a native exec: runc runs it then);
    /// every other process is watched from its creation.
    pub fn runs_at_start(&self) -> bool {
        self.runner.never_ran()
    }

    /// Attaches the task's terminal (see `console.rs`).
    pub fn with_console(mut self, console: Console, output_done: oneshot::Receiver<()>) -> Self {
        self.console = Some(console);
        self.output_done = Mutex::new(Some(output_done));
        self
    }

    /// Bytes the process wrote to its output FIFOs that no reader has taken yet.
    pub fn output_unread(&self) -> usize {
        self.output_holds
            .iter()
            .map(|fd| {
                let mut pending: libc::c_int = 0;
                // SAFETY: FIONREAD writes one int through the pointer, which outlives the call.
                let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut pending) };
                if rc == 0 {
                    pending.max(0) as usize
                } else {
                    0
                }
            })
            .sum()
    }

    /// What must finish before the exit is reported: the terminal output copy, if any.
    pub fn take_output_done(&self) -> Option<oneshot::Receiver<()>> {
        lock(&self.output_done).take()
    }

    pub fn status(&self) -> Status {
        if self.is_stopped() {
            return Status::STOPPED;
        }
        match *lock(&self.state) {
            State::Created | State::Starting => Status::CREATED,
            State::Running => Status::RUNNING,
            State::Paused => Status::PAUSED,
        }
    }

    /// `Running -> Paused`, once the caller has frozen the cgroup.
    pub fn set_paused(&self) -> Result<()> {
        self.transition(State::Running, State::Paused, "is not running")
    }

    /// `Paused -> Running`, once the caller has thawed the cgroup.
    pub fn set_resumed(&self) -> Result<()> {
        self.transition(State::Paused, State::Running, "is not paused")
    }

    fn transition(&self, from: State, to: State, otherwise: &str) -> Result<()> {
        let mut state = lock(&self.state);
        if *state != from || self.is_stopped() {
            return Err(Error::FailedPrecondition(format!(
                "process {} {otherwise}",
                self.pid()
            )));
        }
        *state = to;
        Ok(())
    }

    pub fn is_paused(&self) -> bool {
        !self.is_stopped() && *lock(&self.state) == State::Paused
    }

    pub fn exit(&self) -> Option<ExitInfo> {
        *self.exit_tx.borrow()
    }

    pub fn is_stopped(&self) -> bool {
        self.exit().is_some()
    }

    /// The first half of Start: `Created -> Starting`, or why the process cannot be started.
    /// Until [`Process::settle_start`], the process's exit is held back.
    pub fn begin_start(&self) -> Result<()> {
        let mut state = lock(&self.state);
        let refused = match *state {
            _ if self.is_stopped() => Some("has already exited"),
            State::Created => None,
            State::Starting => Some("is already being started"),
            State::Running | State::Paused => Some("is already running"),
        };
        if let Some(why) = refused {
            return Err(Error::FailedPrecondition(format!(
                "process {} {why}",
                self.pid()
            )));
        }
        *state = State::Starting;
        self.starting.send_replace(true);
        Ok(())
    }

    /// The second half: waits (blocking; call it from a blocking task, no lock held) for the
    /// module to load, at most `load_wait`, then releases the guest: `Starting -> Running`. A
    /// module that cannot run fails with the reason (see `GuestProcess::start`).
    pub fn finish_start(&self, load_wait: std::time::Duration) -> Result<()> {
        let started = self.runner.start(load_wait);
        self.pid.store(self.runner.pid(), Ordering::SeqCst);
        *lock(&self.state) = if started.is_ok() {
            State::Running
        } else {
            State::Created
        };
        started
    }

    /// Called once a Start has queued its TaskStart (or failed): the exit may now be reported.
    pub fn settle_start(&self) {
        self.starting.send_replace(false);
    }

    /// Waits until no Start is under way.
    pub async fn start_settled(&self) {
        let mut starting = self.starting.subscribe();
        let _ = starting.wait_for(|s| !*s).await;
    }

    /// A process deleted before it was started must never run: its guest exits; a native
    /// exec that runc never ran ends here, with the status of a killed process.
    pub fn abandon(&self) {
        self.runner.abandon();
        if self.runner.never_ran() {
            self.set_exited(EXIT_NEVER_RAN, SystemTime::now());
        }
    }

    /// The process has ended: its exit is about to be recorded.
    pub fn set_ended(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }

    /// Whether the exit may still wait for a reader of the output.
    pub fn output_abandoned(&self) -> bool {
        self.output_abandoned.load(Ordering::SeqCst)
    }

    /// Delete of a process that has ended while its exit is still being reported (a reader
    /// that never reads holds the record for up to 2 s): the output is abandoned and the
    /// record awaited, so the Delete succeeds as for any exited process. containerd 1.7 and
    /// 2.x delete, at reload, a shim whose processes have all gone, before any reader is back.
    pub async fn settle_ended(&self) {
        if !self.ended.load(Ordering::SeqCst) || self.is_stopped() {
            return;
        }
        self.output_abandoned.store(true, Ordering::SeqCst);
        let mut exit = self.exit_tx.subscribe();
        let _ = tokio::time::timeout(EXIT_RECORD_LIMIT, exit.wait_for(Option::is_some)).await;
    }

    /// Records the exit (first observation wins) and wakes every waiter.
    pub fn set_exited(&self, status: u32, at: SystemTime) -> Option<ExitInfo> {
        let info = ExitInfo { status, at };
        let first = self.exit_tx.send_if_modified(|exit| {
            if exit.is_some() {
                return false;
            }
            *exit = Some(info);
            true
        });
        if !first {
            return None;
        }
        lock(&self.stdin_hold).take();
        Some(info)
    }

    /// A receiver that yields the exit once recorded; await it without holding any lock.
    pub fn subscribe_exit(&self) -> watch::Receiver<Option<ExitInfo>> {
        self.exit_tx.subscribe()
    }

    /// Sends a signal to the process, as runc's shim does: an exited process is NotFound.
    /// The signal goes through the process's pidfd, so it can never reach another process
    /// that reused the pid.
    pub fn kill(&self, signal: u32) -> Result<()> {
        if self.is_stopped() {
            return Err(finished(self.pid()));
        }
        let signal = i32::try_from(signal)
            .ok()
            .filter(|s| *s == 0 || nix::sys::signal::Signal::try_from(*s).is_ok())
            .ok_or_else(|| Error::InvalidArgument(format!("invalid signal {signal}")))?;
        match self.runner.signal(signal) {
            Ok(()) => Ok(()),
            // Exited, maybe not yet reaped: the exit is on its way.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Err(finished(self.pid())),
            Err(e) => Err(Error::io(format!("kill process {}", self.pid()), e)),
        }
    }

    /// CloseIO: the client has closed stdin; once its writer is gone the guest sees EOF.
    pub fn close_stdin(&self) {
        lock(&self.stdin_hold).take();
    }
}

/// What runc's shim answers for a process that has exited.
fn finished(pid: i32) -> Error {
    Error::NotFound(format!("process {pid} already finished"))
}

/// A container: its bundle, rootfs, cgroup and init process.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// Whether the shim mounted the rootfs (and so must unmount it on delete).
    pub rootfs_mounted: bool,
    pub init: Arc<Process>,
    /// The container's cgroup (placement, limits, stats, freezer).
    pub cgroup: Arc<Cgroup>,
    /// runc, for a native container (see `native`).
    pub native: Option<NativeRuntime>,
    /// The wasm layer of the container's image, when the init runs it (see `artifact`).
    pub image_module: Option<crate::artifact::ModuleLayer>,
    /// Processes exec'd into the container, by exec id, until their Delete.
    pub execs: Mutex<std::collections::HashMap<String, Arc<Process>>>,
}

impl Container {
    /// The process named by `exec_id` (empty: the init process).
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        lock(&self.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| Error::not_found_exec(&self.id, exec_id))
    }

    /// Every process of the container: the init and its execs.
    pub fn processes(&self) -> Vec<Arc<Process>> {
        let mut all = vec![self.init.clone()];
        all.extend(lock(&self.execs).values().cloned());
        all
    }

    /// Records a new exec; an exec id already in use is AlreadyExists, as for runc's shim.
    pub fn add_exec(&self, exec_id: &str, process: Arc<Process>) -> Result<()> {
        let mut execs = lock(&self.execs);
        if execs.contains_key(exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {exec_id} of container {} already exists",
                self.id
            )));
        }
        execs.insert(exec_id.to_string(), process);
        Ok(())
    }

    /// Forgets an exec (its Delete).
    pub fn remove_exec(&self, exec_id: &str) -> Result<Arc<Process>> {
        lock(&self.execs)
            .remove(exec_id)
            .ok_or_else(|| Error::not_found_exec(&self.id, exec_id))
    }

    /// Pids of every live process of the container.
    /// The container's live processes: its cgroup's, as runc's `ps` lists them, so a guest
    /// that has died is gone from the list even before its exit is recorded (containerd 1.7
    /// and 2.x clean up, at reload, a shim whose list is empty: as for runc's). The processes
    /// the shim knows stand in if the cgroup cannot be read.
    pub fn pids(&self) -> Vec<u32> {
        match self.cgroup.pids() {
            Ok(pids) => pids,
            Err(e) => {
                log::warn!("{e}");
                self.known_pids()
            }
        }
    }

    fn known_pids(&self) -> Vec<u32> {
        self.processes()
            .into_iter()
            .filter(|p| !p.is_stopped())
            .map(|p| p.pid() as u32)
            .collect()
    }

    /// Delete is allowed once the process has exited, or before it was ever started.
    pub fn check_deletable(&self, exec_id: &str) -> Result<()> {
        check_deletable(&self.id, &*self.process(exec_id)?)
    }
}

/// Delete is allowed once the process has exited, or before it was ever started.
pub fn check_deletable(id: &str, process: &Process) -> Result<()> {
    {
        match process.status() {
            Status::RUNNING | Status::PAUSED => Err(Error::FailedPrecondition(format!(
                "cannot delete {id}: the process is running; kill it first"
            ))),
            _ => Ok(()),
        }
    }
}
