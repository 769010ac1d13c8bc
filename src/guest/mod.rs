//! The guest process: one OS process per container process, so that signals, namespaces and
//! cgroups apply to it for real and the shim itself never runs guest code.
//!
//! The shim re-executes its own binary in a hidden mode ([`GUEST_MODE_ARG`], then the container
//! id, so `ps` and the `delete` action can tell whose guest a process is) — never a fork of the
//! multi-threaded shim — and talks to it over two pipes:
//!
//! * control (shim → guest, guest fd 3): the [`RunPlan`] as one JSON line, later one byte
//!   that means "start". EOF before that byte means "never start": the guest exits.
//! * status (guest → shim, guest fd 4), one line per step:
//!   - `ok` once the guest is confined and its filesystem set up, or `error <reason>`.
//!     `Create` answers only after it (within the ready timeout), so setup errors reach the
//!     client. A guest that makes a user namespace first sends [`ID_MAPS_REQUEST`]: the shim
//!     writes the namespace's uid and gid maps and answers [`ID_MAPS_WRITTEN`] on the control
//!     pipe.
//!   - [`LOADED`] once the module is compiled (or loaded from the cache), or `error <reason>`
//!     if it cannot run. `Start` waits for it (a bounded time, see [`GuestProcess::start`]),
//!     so a module that does not load fails `Start` with the reason, as an exec that fails
//!     fails runc's start.
//!
//! Descriptors in the guest: 0/1 the container's stdin/stdout, 2 the shim log (so anything
//! the engine prints lands in containerd's log, not in the container's output), 5 the
//! container's stderr, 6 the module's bytes (a sealed copy of the bytes the shim hashed for
//! the cache key, or a committed image layer's file whose digest the shim recorded), 7 the cache entry for those bytes when there is one (read-only), 8 the
//! pipe on which the guest sends back the artifact it compiled, for the shim to cache.
//!
//! A spec with a pid namespace gets it here: a new one through the clone itself, one given by
//! path from a thread that has entered it (`confine::namespaces`), so the guest is PID 1 of it
//! from the start.

pub mod child;
pub mod exit;
pub mod identity;
pub mod mounts;
pub mod signals;
pub mod spawn;

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::confine::namespaces;
use crate::error::{Error, IoContext, Result};
use crate::spec::RunPlan;

/// argv[1] that makes the shim binary run as a guest process.
pub const GUEST_MODE_ARG: &str = "__wasm_guest";

/// Descriptor numbers inside the guest process.
pub const CONTROL_FD: RawFd = 3;
pub const STATUS_FD: RawFd = 4;
pub const STDERR_FD: RawFd = 5;
pub const MODULE_FD: RawFd = 6;
pub const CACHE_ENTRY_FD: RawFd = 7;
pub const ARTIFACT_OUT_FD: RawFd = 8;

/// The byte on the control pipe that releases the guest.
pub const START_BYTE: u8 = b'S';

/// The status line by which a guest that made a user namespace asks for its id maps.
pub const ID_MAPS_REQUEST: &str = "id-maps";
/// The byte on the control pipe that says the id maps are written.
pub const ID_MAPS_WRITTEN: u8 = b'M';
/// The status line that says the module is ready to run.
pub const LOADED: &str = "loaded";

/// Descriptors handed to a new guest process.
#[derive(Debug)]
pub struct GuestFds {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Where the guest process logs (the bundle's `log` FIFO, or /dev/null).
    pub log: OwnedFd,
    /// The module's bytes, as the shim hashed them (a sealed memfd).
    pub module: File,
    /// The compiled-module cache entry for those bytes, if the cache has one.
    pub cache_entry: Option<File>,
    /// Where the guest sends the artifact it compiles, if the shim will cache it.
    pub artifact_out: Option<OwnedFd>,
    /// stdin is a terminal that must become the guest's controlling terminal.
    pub terminal: bool,
}

/// A guest process that has been created: confined, compiling, waiting to be started.
#[derive(Debug)]
pub struct GuestProcess {
    pub pid: i32,
    /// Refers to this process only, whatever later reuses its pid.
    pidfd: OwnedFd,
    /// The write end of the control pipe; `None` once the guest is released or abandoned.
    control: Mutex<Option<File>>,
    /// The read end of the status pipe, until the guest has said its module is loaded.
    status: Mutex<Option<StatusPipe>>,
}

impl GuestProcess {
    /// Starts a guest process for `plan` and waits until it is confined and set up, at most
    /// `ready_timeout` (then it is killed and Create fails). Blocking: call it from a blocking
    /// task. The new process joins its cgroup through `cgroup_tasks` (v1) before it execs, or
    /// `place` puts it there after the spawn; either way before it is sent the plan, so nothing
    /// of the guest runs outside it. If `place` fails the process is killed.
    pub fn spawn(
        plan: &RunPlan,
        fds: GuestFds,
        cgroup_tasks: &[std::path::PathBuf],
        place: impl FnOnce(i32) -> Result<()>,
        ready_timeout: Duration,
    ) -> Result<GuestProcess> {
        if plan.cache.entry != fds.cache_entry.is_some()
            || plan.cache.store != fds.artifact_out.is_some()
        {
            return Err(Error::Internal(
                "the run plan and the guest's cache descriptors disagree".into(),
            ));
        }
        let (control_r, control_w) = pipe()?;
        let (status_r, status_w) = pipe()?;
        let mut targets = vec![
            (fds.stdin.as_raw_fd(), 0),
            (fds.stdout.as_raw_fd(), 1),
            (fds.log.as_raw_fd(), 2),
            (control_r.as_raw_fd(), CONTROL_FD),
            (status_w.as_raw_fd(), STATUS_FD),
            (fds.stderr.as_raw_fd(), STDERR_FD),
            (fds.module.as_raw_fd(), MODULE_FD),
        ];
        if let Some(entry) = &fds.cache_entry {
            targets.push((entry.as_raw_fd(), CACHE_ENTRY_FD));
        }
        if let Some(out) = &fds.artifact_out {
            targets.push((out.as_raw_fd(), ARTIFACT_OUT_FD));
        }
        let args = [
            OsStr::new("containerd-shim-wasm-v1"),
            OsStr::new(GUEST_MODE_ARG),
            OsStr::new(&plan.id),
        ];
        let exec = spawn::Exec::new(&args, targets, fds.terminal)
            .and_then(|exec| exec.joining_cgroup(cgroup_tasks))
            .context(|| "prepare the guest process".into())?;
        let child =
            spawn_in_pid_namespace(&exec, plan).context(|| "start the guest process".into())?;
        // The child has its copies; ours of its ends must go so EOFs are seen.
        drop((control_r, status_w, fds));
        let guest = GuestProcess {
            pid: child.pid,
            pidfd: child.pidfd,
            control: Mutex::new(Some(File::from(control_w))),
            status: Mutex::new(Some(StatusPipe::new(File::from(status_r)))),
        };
        if let Err(e) = place(guest.pid) {
            // It never read a plan, so it never ran anything.
            guest.kill();
            return Err(e);
        }
        let ready = guest
            .send_plan(plan)
            .and_then(|()| guest.wait_ready(plan, Instant::now() + ready_timeout));
        if let Err(e) = ready {
            guest.kill();
            return Err(e);
        }
        Ok(guest)
    }

    /// Sends `signal` to this very process (never to a later one with the same pid).
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        spawn::signal_pidfd(&self.pidfd, signal)
    }

    fn kill(&self) {
        let _ = self.signal(libc::SIGKILL);
    }

    fn send_plan(&self, plan: &RunPlan) -> Result<()> {
        let mut line = serde_json::to_vec(plan).map_err(|e| Error::Internal(e.to_string()))?;
        line.push(b'\n');
        self.write_control(&line)
            .context(|| "send the run plan to the guest process".into())
    }

    fn write_control(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        match control.as_mut() {
            Some(pipe) => pipe.write_all(bytes),
            None => Err(std::io::Error::from_raw_os_error(libc::EPIPE)),
        }
    }

    /// Reads the guest's status until it is set up, writing its user namespace's id maps when
    /// it asks for them.
    fn wait_ready(&self, plan: &RunPlan, deadline: Instant) -> Result<()> {
        loop {
            let line = self.read_status(Some(deadline))?;
            if line == ID_MAPS_REQUEST && plan.confinement.new_user_namespace() {
                self.write_id_maps(plan)?;
                continue;
            }
            return match line.split_once(' ') {
                _ if line == "ok" => Ok(()),
                Some(("error", why)) => Err(Error::InvalidArgument(why.to_string())),
                _ => Err(Error::Internal(
                    "the guest process exited during setup; see the shim log".into(),
                )),
            };
        }
    }

    /// One status line; "" once the guest has closed the pipe (it exited).
    fn read_status(&self, deadline: Option<Instant>) -> Result<String> {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let pipe = status.as_mut().ok_or_else(|| {
            Error::FailedPrecondition("the guest's status was already read".into())
        })?;
        pipe.read_line(deadline)
    }

    /// Writes the spec's maps into the guest's new user namespace (one write each, as the
    /// kernel requires), then tells the guest.
    fn write_id_maps(&self, plan: &RunPlan) -> Result<()> {
        let c = &plan.confinement;
        for (file, maps) in [("uid_map", &c.uid_mappings), ("gid_map", &c.gid_mappings)] {
            let text: String = maps
                .iter()
                .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
                .collect();
            let path = std::path::PathBuf::from(format!("/proc/{}/{file}", self.pid));
            std::fs::write(&path, text.as_bytes()).map_err(|e| {
                Error::InvalidArgument(format!(
                    "write the user namespace's {file} ({}): {e}; check linux.uidMappings and linux.gidMappings",
                    text.trim_end().replace('\n', ", ")
                ))
            })?;
        }
        self.write_control(&[ID_MAPS_WRITTEN])
            .context(|| "tell the guest its id maps are written".into())
    }

    /// Waits up to `load_wait` for the module to load, then releases the guest: it runs the
    /// module as soon as it is loaded. A module that cannot run and says so within that time
    /// fails here with the reason (and the guest exits without running anything); one still
    /// compiling is released anyway, so Start answers promptly, and a load failure after that
    /// ends it with 126 and the reason on its stderr. A guest that died meanwhile (killed, or
    /// by the OOM killer while it compiled) counts as started: its exit follows, as for a
    /// process that died at once. Blocking: call it from a blocking task.
    pub fn start(&self, load_wait: Duration) -> Result<()> {
        let line = match self.read_status(Some(Instant::now() + load_wait)) {
            Ok(line) => Some(line),
            Err(Error::DeadlineExceeded(_)) => None,
            Err(e) => return Err(e),
        };
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = None;
        match line.as_deref() {
            Some("") => {
                self.abandon();
                return Ok(());
            }
            Some(LOADED) | None => {}
            Some(other) => {
                self.abandon();
                return Err(match other.split_once(' ') {
                    Some(("error", why)) => Error::InvalidArgument(why.to_string()),
                    _ => Error::Internal(format!(
                        "guest process {} sent {other:?} instead of its module's state",
                        self.pid
                    )),
                });
            }
        }
        self.write_control(&[START_BYTE])
            .context(|| format!("release guest process {}", self.pid))?;
        self.abandon();
        Ok(())
    }

    /// Closes the control pipe: a guest that was not released exits without running.
    pub fn abandon(&self) {
        self.control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

/// The status pipe, read a line at a time with an optional deadline.
#[derive(Debug)]
struct StatusPipe {
    file: File,
    pending: Vec<u8>,
}

impl StatusPipe {
    fn new(file: File) -> StatusPipe {
        StatusPipe {
            file,
            pending: Vec::new(),
        }
    }

    /// The next line without its newline; "" at EOF.
    fn read_line(&mut self, deadline: Option<Instant>) -> Result<String> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            if let Some(deadline) = deadline {
                self.wait_readable(deadline)?;
            }
            let mut chunk = [0u8; 512];
            match self.file.read(&mut chunk) {
                Ok(0) => return Ok(String::new()),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read the guest process status", e)),
            }
        }
    }

    fn wait_readable(&self, deadline: Instant) -> Result<()> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(0) if left.is_zero() => {
                    return Err(Error::DeadlineExceeded(
                        "the guest process did not finish its setup in time".into(),
                    ))
                }
                Ok(0) => continue,
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::io("wait for the guest process status", e.into())),
            }
        }
    }
}

/// Clones the guest, in the spec's pid namespace if it names one. A new one comes with the
/// clone itself. Joining one by path (`setns`) applies to the calling thread's future children
/// only, so that is done on a thread that exists just for this clone and ends with it: no
/// other thread of the shim changes.
fn spawn_in_pid_namespace(exec: &spawn::Exec, plan: &RunPlan) -> std::io::Result<spawn::Child> {
    let Some(ns) = plan.confinement.pid_namespace() else {
        return exec.spawn(false);
    };
    if ns.path.is_none() {
        return exec.spawn(true);
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                namespaces::enter_pid_namespace_for_children(ns).map_err(std::io::Error::other)?;
                exec.spawn(false)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread panicked")))
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context(|| "create a pipe".into())
}
