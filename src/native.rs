//! Native containers: an ELF entrypoint (a pod's pause sandbox, a sidecar, a native image)
//! runs under runc, confined exactly as runc confines any container, through containerd's
//! `runc` crate. The shim never runs native code itself, and never unconfined.
//!
//! runc keeps its state where containerd's own runc shim keeps it
//! (`/run/containerd/runc/<namespace>`), and writes its log to the bundle's `log.json`, from
//! which a failure's reason is taken. The container's init is held by a pidfd opened right
//! after `runc create` returns: until `runc start` it waits on runc's exec FIFO, so the pid
//! cannot have been reused in between.

use std::fs::File;
use std::io::BufRead;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use runc::options::{CreateOpts, DeleteOpts, ExecOpts, KillOpts};
use runc::{Io, Runc, Spawner};

use crate::error::{Error, Result};
use crate::guest::exit::ExitWatch;
use crate::guest::spawn;

/// Where runc keeps the state of a namespace's containers: containerd's runc shim's place.
const RUNC_ROOT: &str = "/run/containerd/runc";
/// runc's own log, in the bundle.
const RUNC_LOG: &str = "log.json";
/// The init's pid, written by runc into the bundle.
const PID_FILE: &str = "init.pid";

/// Whether runc keeps state for container `id` of `namespace`.
pub fn has_state(namespace: &str, id: &str) -> bool {
    Path::new(RUNC_ROOT).join(namespace).join(id).exists()
}

/// One runc, for the containers of one containerd namespace.
#[derive(Debug, Clone)]
pub struct NativeRuntime {
    runc: Arc<Runc>,
    bundle: PathBuf,
}

/// The stdio a native container's init gets: runc passes its own to the init.
#[derive(Debug)]
pub struct NativeStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl Io for NativeStdio {
    fn set(&self, cmd: &mut runc::Command) -> std::io::Result<()> {
        cmd.stdin(Stdio::from(self.stdin.try_clone()?))
            .stdout(Stdio::from(self.stdout.try_clone()?))
            .stderr(Stdio::from(self.stderr.try_clone()?));
        Ok(())
    }

    fn close_after_start(&self) {}
}

/// A native container's init process, created by runc.
#[derive(Debug)]
pub struct NativeProcess {
    pub pid: i32,
    pidfd: OwnedFd,
    id: String,
    runtime: NativeRuntime,
}

/// A process exec'd into a native container (`kubectl exec` into a sidecar): runc runs it
/// at Start, as containerd's runc shim does, since `runc exec` starts it at once.
#[derive(Debug)]
pub struct NativeExec {
    runtime: NativeRuntime,
    id: String,
    exec_id: String,
    process: oci_spec::runtime::Process,
    stdio: std::sync::Mutex<Option<NativeStdio>>,
    started: std::sync::OnceLock<ExecProcess>,
}

/// An exec'd process once runc has started it. Its pidfd is opened after `runc exec`
/// returns, so a process that has already exited (and been reaped) has none: its exit is
/// on the subscription made before runc ran.
#[derive(Debug)]
struct ExecProcess {
    pid: i32,
    pidfd: Option<OwnedFd>,
}

impl NativeRuntime {
    /// runc for containerd's `namespace`, logging into `bundle`; `systemd` when the spec's
    /// cgroupsPath is systemd's `slice:prefix:name`.
    pub fn new(namespace: &str, bundle: &Path, systemd: bool) -> Result<NativeRuntime> {
        let mut opts = runc::options::GlobalOpts::new()
            .root(Path::new(RUNC_ROOT).join(namespace))
            .log(bundle.join(RUNC_LOG))
            .log_json()
            .systemd_cgroup(systemd);
        let reaper = ReaperSpawner {
            runtime: tokio::runtime::Handle::current(),
        };
        opts.custom_spawner(Arc::new(reaper));
        let runc = opts
            .build()
            .map_err(|e| {
                Error::FailedPrecondition(format!(
                    "native containers run under runc, which cannot be used: {e}; install runc on the node"
                ))
            })?;
        Ok(NativeRuntime {
            runc: Arc::new(runc),
            bundle: bundle.to_path_buf(),
        })
    }

    /// `runc create`: the container exists, confined, its init waiting for `start`. Blocking.
    pub fn create(&self, id: &str, stdio: NativeStdio) -> Result<NativeProcess> {
        let pid_file = self.bundle.join(PID_FILE);
        let opts = CreateOpts {
            io: Some(Arc::new(stdio)),
            pid_file: Some(pid_file.clone()),
            ..CreateOpts::default()
        };
        self.runc
            .create(id, &self.bundle, Some(&opts))
            .map_err(|e| self.failed("create", e))?;
        let pid = read_pid_file(&pid_file, "create")?;
        let pidfd = spawn::open_pidfd(pid)
            .map_err(|e| Error::io(format!("hold the init process {pid} of {id}"), e))?;
        Ok(NativeProcess {
            pid,
            pidfd,
            id: id.to_string(),
            runtime: self.clone(),
        })
    }

    /// `runc exec --detach`: `process` runs in container `id` (its namespaces, cgroup,
    /// confinement by the process spec, with the container's seccomp), at once. Blocking.
    fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        stdio: NativeStdio,
    ) -> Result<ExecProcess> {
        // containerd's exec ids are its own identifiers; the file name keeps only what is safe.
        let name: String = exec_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let pid_file = self.bundle.join(format!("exec-{name}.pid"));
        let opts = ExecOpts {
            io: Some(Arc::new(stdio)),
            pid_file: Some(pid_file.clone()),
            console_socket: None,
            detach: true,
        };
        self.runc
            .exec(id, process, Some(&opts))
            .map_err(|e| self.failed("exec", e))?;
        let pid = read_pid_file(&pid_file, "exec");
        let _ = std::fs::remove_file(&pid_file);
        let pid = pid?;
        Ok(ExecProcess {
            pid,
            pidfd: spawn::open_pidfd(pid).ok(),
        })
    }

    /// A runc failure, with the reason runc logged (its stderr may be the container's).
    fn failed(&self, what: &str, e: runc::error::Error) -> Error {
        let logged = last_error(&self.bundle.join(RUNC_LOG));
        Error::InvalidArgument(match logged {
            Some(reason) => format!("runc {what}: {reason}"),
            None => format!("runc {what}: {e}"),
        })
    }

    /// `runc pause` / `runc resume` of the container.
    pub fn freeze(&self, id: &str, frozen: bool) -> Result<()> {
        let done = if frozen {
            self.runc.pause(id)
        } else {
            self.runc.resume(id)
        };
        done.map_err(|e| self.failed(if frozen { "pause" } else { "resume" }, e))
    }

    /// `runc update` with new `linux.resources`.
    pub fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        self.runc
            .update(id, resources)
            .map_err(|e| self.failed("update", e))
    }

    /// `runc kill --all`: every process of the container.
    pub fn kill_all(&self, id: &str, signal: u32) -> Result<()> {
        self.runc
            .kill(id, signal, Some(&KillOpts { all: true }))
            .map_err(|e| self.failed("kill", e))
    }

    /// `runc delete --force`: the container's state, and any process left in it.
    pub fn delete(&self, id: &str) -> Result<()> {
        self.runc
            .delete(id, Some(&DeleteOpts { force: true }))
            .map_err(|e| self.failed("delete", e))
    }

    /// The pids of every process in the container.
    pub fn pids(&self, id: &str) -> Vec<u32> {
        self.runc
            .ps(id)
            .map(|pids| pids.into_iter().map(|p| p as u32).collect())
            .unwrap_or_default()
    }
}

impl NativeProcess {
    /// `runc start`: the init execs the entrypoint. Blocking.
    pub fn start(&self) -> Result<()> {
        self.runtime
            .runc
            .start(&self.id)
            .map(drop)
            .map_err(|e| self.runtime.failed("start", e))
    }

    /// Sends `signal` to the init process itself (never to a later holder of its pid).
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        spawn::signal_pidfd(&self.pidfd, signal)
    }

    pub fn runtime(&self) -> &NativeRuntime {
        &self.runtime
    }
}

impl NativeExec {
    pub fn new(
        runtime: NativeRuntime,
        id: &str,
        exec_id: &str,
        process: oci_spec::runtime::Process,
        stdio: NativeStdio,
    ) -> NativeExec {
        NativeExec {
            runtime,
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            process,
            stdio: std::sync::Mutex::new(Some(stdio)),
            started: std::sync::OnceLock::new(),
        }
    }

    /// The pid, once started (0 before, as containerd shows an exec not yet started).
    pub fn pid(&self) -> i32 {
        self.started.get().map_or(0, |p| p.pid)
    }

    /// `runc exec`: the process runs from now on. Blocking; call it once, with a subscription
    /// to exits already made.
    pub fn start(&self) -> Result<i32> {
        let stdio = self
            .stdio
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| {
                Error::FailedPrecondition(format!("exec {} was already started", self.exec_id))
            })?;
        let started = self
            .runtime
            .exec(&self.id, &self.exec_id, &self.process, stdio)?;
        let pid = started.pid;
        let _ = self.started.set(started);
        Ok(pid)
    }

    /// Sends `signal` to the exec'd process itself; ESRCH before it started or after it
    /// ended.
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        match self.started.get().and_then(|p| p.pidfd.as_ref()) {
            Some(pidfd) => spawn::signal_pidfd(pidfd, signal),
            None => Err(std::io::Error::from_raw_os_error(libc::ESRCH)),
        }
    }

    /// Whether runc has not run it (yet).
    pub fn is_unstarted(&self) -> bool {
        self.started.get().is_none()
    }
}

/// The pid runc wrote for `what` (create, exec).
fn read_pid_file(pid_file: &Path, what: &str) -> Result<i32> {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| {
            Error::Internal(format!("runc {what} left no pid in {}", pid_file.display()))
        })
}

/// Runs the runc binary and takes its exit status from the containerd-shim crate's reaper:
/// the shim reaps every child itself (`waitpid(-1)`), so a plain `wait` on runc would find it
/// gone (ECHILD). As for a guest, the subscription is made before the spawn, and the first
/// report for runc's pid is runc's (see `guest::exit`). Call only from a blocking thread of
/// the runtime.
#[derive(Debug)]
struct ReaperSpawner {
    runtime: tokio::runtime::Handle,
}

impl Spawner for ReaperSpawner {
    fn execute(
        &self,
        mut cmd: runc::Command,
    ) -> runc::Result<(std::process::ExitStatus, u32, String, String)> {
        use std::io::Read;
        use std::os::unix::process::ExitStatusExt;
        let invalid = |e: String| runc::error::Error::InvalidCommand(std::io::Error::other(e));
        let exit = self
            .runtime
            .block_on(ExitWatch::subscribe())
            .map_err(|e| invalid(e.to_string()))?;
        let mut child = cmd
            .spawn()
            .map_err(runc::error::Error::ProcessSpawnFailed)?;
        let pid = child.id();
        // What runc prints (when its stdio are not the container's): read to the end on
        // threads of their own, so neither pipe can fill and stall runc.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_string(&mut text);
                }
                text
            })
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let code = self.runtime.block_on(exit.wait(pid as i32));
        let status = std::process::ExitStatus::from_raw((code & 0xff) << 8);
        let (stdout, stderr) = (
            stdout.join().unwrap_or_default(),
            stderr.join().unwrap_or_default(),
        );
        Ok((status, pid, stdout, stderr))
    }
}

/// The last error runc wrote to its JSON log (`{"level":"error","msg":...}`).
fn last_error(log: &Path) -> Option<String> {
    let file = File::open(log).ok()?;
    std::io::BufReader::new(file)
        .lines()
        .map_while(|l| l.ok())
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .filter(|entry| entry["level"] == "error")
        .filter_map(|entry| entry["msg"].as_str().map(str::to_string))
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_comes_from_runcs_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(RUNC_LOG);
        std::fs::write(
            &log,
            "{\"level\":\"warning\",\"msg\":\"x\"}\n{\"level\":\"error\",\"msg\":\"exec: \\\"/nope\\\": no such file\"}\n",
        )
        .unwrap();
        assert_eq!(
            last_error(&log).as_deref(),
            Some("exec: \"/nope\": no such file")
        );
        assert_eq!(last_error(&dir.path().join("missing")), None);
    }
}
