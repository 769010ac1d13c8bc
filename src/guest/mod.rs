//! The guest process: one OS process per container process, so that signals, namespaces and
//! cgroups apply to it for real and the shim itself never runs guest code.
//!
//! The shim re-executes its own binary in a hidden mode ([`GUEST_MODE_ARG`]) — never a fork of
//! the multi-threaded shim — and talks to it over two pipes:
//!
//! * control (shim → guest, guest fd 3): the [`RunPlan`] as one JSON line, later one byte
//!   that means "start". EOF before that byte means "never start": the guest exits.
//! * status (guest → shim, guest fd 4): one line, `ok` once the guest's filesystem is set up,
//!   or `error <reason>`. `Create` answers only after it, so setup errors reach the client.
//!   A guest that makes a user namespace first sends [`ID_MAPS_REQUEST`]: the shim writes the
//!   namespace's uid and gid maps and answers [`ID_MAPS_WRITTEN`] on the control pipe.
//!
//! Descriptors in the guest: 0/1 the container's stdin/stdout, 2 the shim log (so anything
//! the engine prints lands in containerd's log, not in the container's output), 5 the
//! container's stderr, 6 a sealed copy of the module's bytes (the bytes the shim hashed for
//! the cache key), 7 the cache entry for those bytes when there is one (read-only), 8 the
//! pipe on which the guest sends back the artifact it compiled, for the shim to cache.
//!
//! A spec with a pid namespace gets it here: the guest is spawned from a thread that has
//! entered it (`confine::namespaces`), so it is PID 1 of the namespace from the start.

pub mod child;
pub mod mounts;
pub mod signals;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

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

/// A guest process that has been created: set up, compiling, waiting to be started.
#[derive(Debug)]
pub struct GuestProcess {
    pub pid: i32,
    /// The write end of the control pipe; `None` once the guest has been released.
    control: Option<File>,
}

impl GuestProcess {
    /// Starts a guest process for `plan` and waits until its filesystem is set up.
    /// Blocking: call it from a blocking task.
    /// `place` puts the new process in its cgroup before it is sent the plan, so nothing of
    /// the guest runs outside it; if it fails the process is killed.
    pub fn spawn(
        plan: &RunPlan,
        fds: GuestFds,
        place: impl FnOnce(i32) -> Result<()>,
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
        let mut command = Command::new("/proc/self/exe");
        command
            .arg0("containerd-shim-wasm-v1")
            .arg(GUEST_MODE_ARG)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::from(fds.stdin))
            .stdout(Stdio::from(fds.stdout))
            .stderr(Stdio::from(fds.log));
        let mut targets = vec![
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
        // SAFETY: the closure runs in the forked child before exec and only calls fcntl and
        // dup2, which are async-signal-safe; it touches no memory shared with other threads.
        let terminal = fds.terminal;
        unsafe {
            command.pre_exec(move || {
                place_fds(&targets)?;
                close_others_on_exec(&targets)?;
                if terminal {
                    take_controlling_terminal()?;
                }
                Ok(())
            });
        }
        let child = spawn_in_pid_namespace(&mut command, plan)
            .context(|| "start the guest process".into())?;
        let pid = child.id() as i32;
        // The child has its copies; ours of its ends must go so EOFs are seen.
        drop((control_r, status_w, fds.stderr, fds.module));
        drop((fds.cache_entry, fds.artifact_out));
        if let Err(e) = place(pid) {
            // The monitor reaps it; it never read a plan, so it never ran anything.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(e);
        }
        let mut guest = GuestProcess {
            pid,
            control: Some(File::from(control_w)),
        };
        guest.send_plan(plan)?;
        guest.wait_ready(File::from(status_r), plan)?;
        Ok(guest)
    }

    /// Reads the guest's status until it is set up, writing its user namespace's id maps when
    /// it asks for them.
    fn wait_ready(&mut self, status: File, plan: &RunPlan) -> Result<()> {
        let mut status = BufReader::new(status);
        loop {
            let mut line = String::new();
            status
                .read_line(&mut line)
                .context(|| "read the guest process status".into())?;
            let line = line.trim_end();
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

    /// Writes the spec's maps into the guest's new user namespace (one write each, as the
    /// kernel requires), then tells the guest.
    fn write_id_maps(&mut self, plan: &RunPlan) -> Result<()> {
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
        self.control
            .as_mut()
            .expect("control pipe is open until start")
            .write_all(&[ID_MAPS_WRITTEN])
            .context(|| "tell the guest its id maps are written".into())
    }

    fn send_plan(&mut self, plan: &RunPlan) -> Result<()> {
        let mut line = serde_json::to_vec(plan).map_err(|e| Error::Internal(e.to_string()))?;
        line.push(b'\n');
        self.control
            .as_mut()
            .expect("control pipe is open until start")
            .write_all(&line)
            .context(|| "send the run plan to the guest process".into())
    }

    /// Releases the guest: it runs the module as soon as it is compiled.
    pub fn start(&mut self) -> Result<()> {
        let mut control = self
            .control
            .take()
            .ok_or_else(|| Error::FailedPrecondition("the guest was already started".into()))?;
        control
            .write_all(&[START_BYTE])
            .context(|| format!("release guest process {}", self.pid))
    }
}

/// Spawns the guest, in the spec's pid namespace if it names one. `unshare`/`setns` of a pid
/// namespace applies to the calling thread's future children only, so it is done on a thread
/// that exists just for this spawn and ends with it: no other thread of the shim changes.
fn spawn_in_pid_namespace(command: &mut Command, plan: &RunPlan) -> std::io::Result<Child> {
    let Some(ns) = plan.confinement.pid_namespace() else {
        return command.spawn();
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                namespaces::enter_pid_namespace_for_children(ns).map_err(std::io::Error::other)?;
                command.spawn()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread panicked")))
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context(|| "create a pipe".into())
}

/// In the forked child: a new session whose controlling terminal is stdin, so the terminal
/// sends SIGINT to the guest on ^C as it would to a native process.
fn take_controlling_terminal() -> std::io::Result<()> {
    // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe and touch no shared memory.
    unsafe {
        if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// In the forked child: every descriptor above the guest's own numbers closes at exec. The
/// shim may hold descriptors it did not open (containerd's, or its parent's, inherited without
/// close-on-exec); none of them may reach a guest. Marked rather than closed, so std's own
/// exec-error pipe keeps working until the exec.
fn close_others_on_exec(targets: &[(RawFd, RawFd)]) -> std::io::Result<()> {
    let first = targets.iter().map(|(_, t)| *t).max().unwrap_or(2) + 1;
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets flags on descriptors of this
    // process; it is a plain syscall, async-signal-safe.
    let rc = unsafe {
        libc::close_range(
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// In the forked child: moves each source descriptor to its target number. Sources are first
/// copied above every target so that no move overwrites a source that is still needed.
fn place_fds(targets: &[(RawFd, RawFd)]) -> std::io::Result<()> {
    let mut high = [0 as RawFd; 8];
    if targets.len() > high.len() {
        return Err(std::io::Error::from_raw_os_error(libc::E2BIG));
    }
    for (i, (src, _)) in targets.iter().enumerate() {
        // SAFETY: plain fcntl on a descriptor this process holds.
        let fd = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 64) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        high[i] = fd;
    }
    for (i, (_, target)) in targets.iter().enumerate() {
        // SAFETY: dup2 onto a fixed number; the new descriptor is not close-on-exec.
        if unsafe { libc::dup2(high[i], *target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
