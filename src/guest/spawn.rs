//! Starting a guest process and holding it by identity.
//!
//! The guest is started with `clone3(CLONE_PIDFD)`: the shim gets a pidfd for the child in
//! the same system call that makes it, so every later signal goes to that very process
//! (`pidfd_send_signal`), never to whatever process reuses its pid after it was reaped. The
//! containerd-shim crate reaps every child (`waitpid(-1)`) and reports exits by pid; the
//! guest's exit is taken from a subscription made before the clone (see `guest::exit`).
//!
//! After the clone, the child is a copy of one thread of a multi-threaded process: until it
//! execs it only makes async-signal-safe system calls on memory prepared before the clone.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// The kernel's `struct clone_args` (version 2, 88 bytes), which libc does not declare for
/// this target.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What the child does between the clone and the exec, prepared before the clone.
#[derive(Debug)]
pub struct Exec {
    argv: Vec<CString>,
    /// Each source descriptor and the number the guest gets it as.
    fds: Vec<(RawFd, RawFd)>,
    /// stdin is a terminal that becomes the guest's controlling terminal.
    terminal: bool,
    /// cgroup v1 `tasks` files the child writes "0" to before it execs, joining its cgroup
    /// by itself (see `Cgroup::prepare_join`).
    cgroup_tasks: Vec<CString>,
}

/// A started process: its pid and a pidfd that refers to it for as long as the shim holds it.
#[derive(Debug)]
pub struct Child {
    pub pid: i32,
    pub pidfd: OwnedFd,
}

/// The guest process's only environment variable (the module's environment is in its plan):
/// glibc's allocator advises huge pages for the large blocks it maps, such as a big module's
/// data as wasmer loads it (CPython's cached start: 6 ms less in `make bench`). A small
/// guest's heap stays in small pages: footprint per idle container unchanged.
const GUEST_ENVIRONMENT: &std::ffi::CStr = c"GLIBC_TUNABLES=glibc.malloc.hugetlb=1";

/// At most this many descriptors are placed (see `place_fds`).
const MAX_FDS: usize = 16;

impl Exec {
    /// The shim's own binary (`/proc/self/exe`) with `args`, `GUEST_ENVIRONMENT`, and the
    /// descriptors `fds` placed at their numbers; every other descriptor closes at exec.
    pub fn new(args: &[&OsStr], fds: Vec<(RawFd, RawFd)>, terminal: bool) -> std::io::Result<Exec> {
        if fds.len() > MAX_FDS {
            return Err(std::io::Error::from_raw_os_error(libc::E2BIG));
        }
        let argv = args
            .iter()
            .map(|a| CString::new(a.as_bytes()).map_err(std::io::Error::other))
            .collect::<std::io::Result<_>>()?;
        Ok(Exec {
            argv,
            fds,
            terminal,
            cgroup_tasks: Vec::new(),
        })
    }

    /// The child joins its cgroup by writing "0" to each of `tasks` (cgroup v1) before it
    /// execs: it has one thread then, so the thread that moves is the whole process.
    pub fn joining_cgroup(mut self, tasks: &[std::path::PathBuf]) -> std::io::Result<Exec> {
        self.cgroup_tasks = tasks
            .iter()
            .map(|t| CString::new(t.as_os_str().as_bytes()).map_err(std::io::Error::other))
            .collect::<std::io::Result<_>>()?;
        Ok(self)
    }

    /// Clones and execs; `new_pid_namespace` makes the child PID 1 of a new pid namespace.
    pub fn spawn(&self, new_pid_namespace: bool) -> std::io::Result<Child> {
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let envp: [*const libc::c_char; 2] = [GUEST_ENVIRONMENT.as_ptr(), std::ptr::null()];
        let mut pidfd: RawFd = -1;
        let mut args = CloneArgs {
            flags: libc::CLONE_PIDFD as u64,
            pidfd: &mut pidfd as *mut RawFd as u64,
            exit_signal: libc::SIGCHLD as u64,
            ..CloneArgs::default()
        };
        if new_pid_namespace {
            args.flags |= libc::CLONE_NEWPID as u64;
        }
        // SAFETY: clone3 with a zero stack duplicates this thread as fork(2) does; `args` and
        // `pidfd` outlive the call. In the child only `exec_child` runs, which never returns.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match pid {
            -1 => Err(std::io::Error::last_os_error()),
            // SAFETY: the child runs only async-signal-safe calls on memory prepared above.
            0 => unsafe { self.exec_child(argv.as_ptr(), envp.as_ptr()) },
            pid => Ok(Child {
                pid: pid as i32,
                // SAFETY: the kernel wrote a new descriptor (close-on-exec) that nothing else owns.
                pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
            }),
        }
    }

    /// In the child: signals back to their defaults, descriptors placed, a new session with
    /// the terminal if there is one, then exec. Never returns.
    ///
    /// # Safety
    /// Must only run in the child of `spawn`'s clone; `argv` and `envp` are null-terminated
    /// arrays of C strings that live in the copied address space.
    unsafe fn exec_child(
        &self,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
    ) -> ! {
        // SAFETY: each call below is async-signal-safe and touches only this process's own
        // state and the memory prepared before the clone.
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            // The Rust runtime ignores SIGPIPE, and an ignored signal stays ignored across exec.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            let ready = place_fds(&self.fds)
                && close_others_on_exec(&self.fds)
                && (!self.terminal || take_controlling_terminal())
                && libc::chdir(c"/".as_ptr()) == 0;
            if ready && !join_cgroup(&self.cgroup_tasks) {
                libc::_exit(127);
            }
            if ready {
                libc::execve(c"/proc/self/exe".as_ptr(), argv, envp);
            }
            // The log is on fd 2 once the descriptors are placed; the shim sees the status
            // pipe close and says so.
            let why = b"containerd-shim-wasm: cannot start the guest process\n";
            libc::write(2, why.as_ptr().cast(), why.len());
            libc::_exit(127)
        }
    }
}

/// Writes "0" (the calling thread) to each `tasks` file; on a failure says which on fd 2 (the
/// log, once the descriptors are placed) and returns false.
///
/// # Safety
/// Async-signal-safe: open, write and close on C strings prepared before the clone.
unsafe fn join_cgroup(tasks: &[CString]) -> bool {
    for file in tasks {
        // SAFETY: `file` is a valid C string; the descriptor is closed before the next one.
        let joined = unsafe {
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            let written = fd >= 0 && libc::write(fd, c"0".as_ptr().cast(), 1) == 1;
            if fd >= 0 {
                libc::close(fd);
            }
            written
        };
        if !joined {
            let path = file.as_bytes();
            for part in [
                &b"containerd-shim-wasm: the guest process cannot join its cgroup: "[..],
                path,
                b"\n",
            ] {
                // SAFETY: a write of a live buffer to fd 2.
                unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
            }
            return false;
        }
    }
    true
}

/// Moves each source descriptor to its target number. Sources are first copied above every
/// target so that no move overwrites a source that is still needed.
///
/// # Safety
/// Async-signal-safe: only fcntl and dup2 on a stack array.
unsafe fn place_fds(targets: &[(RawFd, RawFd)]) -> bool {
    let mut high = [0 as RawFd; MAX_FDS];
    for (i, (src, _)) in targets.iter().enumerate() {
        // SAFETY: plain fcntl on a descriptor this process holds.
        let fd = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 64) };
        if fd < 0 {
            return false;
        }
        high[i] = fd;
    }
    for (i, (_, target)) in targets.iter().enumerate() {
        // SAFETY: dup2 onto a fixed number; the new descriptor is not close-on-exec.
        if unsafe { libc::dup2(high[i], *target) } < 0 {
            return false;
        }
    }
    true
}

/// Every descriptor above the guest's own numbers closes at exec: the shim may hold
/// descriptors it did not open (containerd's, inherited without close-on-exec), and none may
/// reach a guest.
///
/// # Safety
/// Async-signal-safe: one close_range(2).
unsafe fn close_others_on_exec(targets: &[(RawFd, RawFd)]) -> bool {
    let first = targets.iter().map(|(_, t)| *t).max().unwrap_or(2) + 1;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on this process's
    // descriptors.
    unsafe {
        libc::close_range(
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        ) == 0
    }
}

/// A new session whose controlling terminal is stdin, so the terminal sends SIGINT to the
/// guest on ^C as it would to a native process.
///
/// # Safety
/// Async-signal-safe: setsid and ioctl.
unsafe fn take_controlling_terminal() -> bool {
    // SAFETY: setsid and ioctl(TIOCSCTTY) touch no memory of ours.
    unsafe { libc::setsid() >= 0 && libc::ioctl(0, libc::TIOCSCTTY, 0) >= 0 }
}

/// Sends `signal` (0: only check that it lives) to the process the pidfd refers to.
pub fn signal_pidfd(pidfd: &OwnedFd, signal: i32) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal(2) reads no memory of ours (no siginfo is passed).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A pidfd for a process that is not our child (for `delete` after a lost shim).
pub fn open_pidfd(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes two integers and returns a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor (pidfds are close-on-exec) owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_signals_only_its_own_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pidfd = open_pidfd(child.id() as i32).unwrap();
        signal_pidfd(&pidfd, 0).unwrap();
        signal_pidfd(&pidfd, libc::SIGKILL).unwrap();
        child.wait().unwrap();
        // Reaped: the pid may be anyone's now, the pidfd still means the dead process.
        let err = signal_pidfd(&pidfd, libc::SIGKILL).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }
}
