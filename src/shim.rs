//! The shim binary's lifecycle with containerd: `start` (spawn or reuse the shim server),
//! `delete` (clean up after a lost shim), the server's task service.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, ExitSignal, Flags, Shim, StartOpts};
use log::{info, warn};

use crate::cgroup::Cgroup;
use crate::events::{timestamp, Events};
use crate::guest::{identity, spawn};
use crate::logger::LineLogger;
use crate::native::NativeRuntime;
use crate::service::{
    remove_cgroup_when_empty, Service, CLEANED_UP_FILE, EXIT_KILLED, IDENTITY_FILE,
};
use crate::task::TaskService;
use crate::{rootfs, spec};

/// The runtime name containerd knows this shim by.
pub const RUNTIME_NAME: &str = "io.containerd.wasm.v1";

/// The annotation CRI puts on every container of a pod: containers that share it share one
/// shim process.
const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

pub struct WasmShim {
    exit: Arc<ExitSignal>,
    namespace: String,
    bundle: PathBuf,
    /// The container id containerd passed (`-id`).
    id: String,
    /// containerd's gRPC socket (`-address`).
    containerd_address: String,
}

#[async_trait]
impl Shim for WasmShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        // Only the server logs: for `start` and `delete` stdout is the protocol channel and
        // containerd reads no log.
        if args.action.is_empty() {
            init_server_log(args.debug);
        }
        let bundle = bundle_of(args);
        WasmShim {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            bundle,
            id: args.id.clone(),
            containerd_address: args.address.clone(),
        }
    }

    /// The `start` action runs without the crate (see [`start`]); this is the same.
    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        start(
            &opts.namespace,
            &opts.id,
            &opts.address,
            opts.debug,
            &self.bundle,
        )
    }

    /// Run by containerd when it lost the shim: end the guest if it still runs, unmount the
    /// rootfs, and report the task as killed (137), as runc's shim does.
    /// (A bundle the shim's own Delete left clean is answered before this, by
    /// `answer_delete_after_clean_up`.)
    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let pid = kill_leftover_guest(&self.bundle, &self.id);
        // A native container's runc state: `runc delete --force` ends what is left of it.
        if crate::native::has_state(&self.namespace, &self.id) {
            let deleted = NativeRuntime::new(&self.namespace, &self.bundle, false)
                .and_then(|runc| runc.delete(&self.id));
            if let Err(e) = deleted {
                warn!("delete: {e}");
            }
        }
        let spec = spec::load_spec(&self.bundle).ok();
        if let Some(root) = spec
            .as_ref()
            .and_then(|s| spec::rootfs_path(s, &self.bundle).ok())
        {
            if let Err(e) = rootfs::unmount(&root) {
                warn!("delete: {e}");
            }
        }
        // The lost shim's cgroup goes too, once the killed guest has left it.
        let cgroups_path = spec
            .as_ref()
            .and_then(|s| s.linux().as_ref())
            .and_then(|l| l.cgroups_path().clone());
        match Cgroup::new(cgroups_path.as_deref(), &self.id) {
            Ok(cgroup) => {
                let _ = remove_cgroup_when_empty(Arc::new(cgroup)).await;
            }
            Err(e) => warn!("delete: {e}"),
        }
        Ok(killed_response(pid))
    }

    async fn wait(&mut self) {
        self.exit.wait().await
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        // A new shim's first request is a Create, which places a guest in a cgroup by pid on
        // cgroup v2: the attach's wait for the kernel starts here, before it arrives.
        if crate::cgroup::host_is_unified() {
            crate::cgroup::warm_up_attach();
        }
        // Events go through a publisher of this shim's own (see `events`), to the same socket.
        let events = Events::spawn(publisher.address.clone(), self.namespace.clone());
        let service = Arc::new(Service::new(
            &self.namespace,
            &self.containerd_address,
            events,
            self.exit.clone(),
        ));
        TaskService::new(service)
    }
}

/// The `start` action: starts the shim server, or points containerd at the pod's existing
/// one (the socket address is derived from the grouping id, so a second container of a pod
/// finds it); the address to give containerd. Synchronous, and run by `main` without the
/// crate's tokio runtime, signal handlers and writer thread, which it needs no more than
/// `delete` does (see `answer_delete_after_clean_up`); it runs once per container.
pub fn start(
    namespace: &str,
    id: &str,
    containerd_address: &str,
    debug: bool,
    bundle: &Path,
) -> containerd_shim::Result<String> {
    let grouping = grouping_id(bundle).unwrap_or_else(|| id.to_string());
    discard_runtime_options_on_stdin().map_err(|e| {
        io_error(
            "replace start's stdin (the runtime options) with /dev/null",
            e,
        )
    })?;
    // Two containers of a new pod started at once must not both start a server: the
    // second would replace the first's socket (the crate waits only 1 s for it).
    let lock = StartLock::acquire(namespace, &grouping)
        .map_err(|e| io_error(&format!("lock the start of the shim of {grouping}"), e))?;
    let address = containerd_shim::socket_address(containerd_address, namespace, &grouping);
    let started = spawn_server(namespace, id, containerd_address, &address, debug);
    drop(lock);
    started?;
    // containerd reads the address back from the bundle when it reconnects.
    std::fs::write(bundle.join("address"), &address)
        .map_err(|e| io_error("write the shim address file", e))?;
    Ok(address)
}

/// Starts this binary as the shim server on `socket` and waits until it listens: the server
/// closes its stdout then (or exits, finding a server already there). Its OOM score is
/// containerd's plus one, as the crate sets it, so that the kernel ends a shim before
/// containerd.
fn spawn_server(
    namespace: &str,
    id: &str,
    containerd_address: &str,
    socket: &str,
    debug: bool,
) -> containerd_shim::Result<()> {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().map_err(|e| io_error("find the shim binary", e))?;
    let mut command = Command::new(exe);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .args(["-namespace", namespace, "-id", id])
        .args(["-address", containerd_address, "-socket", socket]);
    if debug {
        command.arg("-debug");
    }
    let mut server = command
        .spawn()
        .map_err(|e| io_error("spawn the shim server", e))?;
    containerd_shim::cgroup::set_cgroup_and_oom_score(server.id())?;
    if let Some(mut listening) = server.stdout.take() {
        std::io::copy(&mut listening, &mut std::io::stderr())
            .map_err(|e| io_error("wait for the shim server to listen", e))?;
    }
    Ok(())
}

/// The crate's error for a failed I/O step of an action, with what the step was.
fn io_error(context: &str, err: std::io::Error) -> containerd_shim::Error {
    containerd_shim::Error::IoError {
        context: context.into(),
        err,
    }
}

/// The bundle containerd runs the shim in: `-bundle`, or the working directory.
pub fn bundle_of(flags: &Flags) -> PathBuf {
    if flags.bundle.is_empty() {
        std::env::current_dir().unwrap_or_default()
    } else {
        PathBuf::from(&flags.bundle)
    }
}

/// The `delete` action's answer when the shim's own Delete left the bundle clean (its
/// `CLEANED_UP_FILE`), from the flags alone; `None` for any other action or bundle.
/// containerd runs the action after every shim exit, clean or not (it cannot tell), so this
/// is the action's usual case: answered here, it needs none of the crate's tokio runtime,
/// signal handlers and writer thread, which were half of the action's CPU time (perf stat:
/// 3.0 ms per run before, 1.7 after, 1.3 for a bare start of the binary).
pub fn answer_delete_after_clean_up(flags: &Flags) -> Option<Vec<u8>> {
    use containerd_shim::protos::protobuf::Message;
    if flags.action != "delete" || !bundle_of(flags).join(CLEANED_UP_FILE).exists() {
        return None;
    }
    // The same answer as for a lost task, without the search for what it left.
    killed_response(None).write_to_bytes().ok()
}

/// What `delete` reports: the task was killed (137), as runc's shim reports a lost task.
fn killed_response(pid: Option<i32>) -> DeleteResponse {
    DeleteResponse {
        pid: pid.unwrap_or(0) as u32,
        exit_status: EXIT_KILLED,
        exited_at: MessageField::some(timestamp(SystemTime::now())),
        ..Default::default()
    }
}

/// The server logs to the `log` FIFO containerd opened in the bundle (the working directory).
fn init_server_log(debug: bool) {
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    match std::fs::OpenOptions::new().write(true).open("log") {
        Ok(fifo) => LineLogger::install(fifo, String::new(), level),
        Err(e) => eprintln!("containerd-shim-wasm: cannot open the log FIFO: {e}"),
    }
}

/// The pod's sandbox id from the bundle's spec, if CRI created this container.
/// Where the start locks live (a tmpfs: gone at reboot, as the shims are).
const START_LOCK_DIR: &str = "/run/containerd-shim-wasm/start";

/// Serialises the `start` of the shim of one pod (or container): held while the server is
/// started or found, released (and its file removed) once the server listens.
struct StartLock {
    /// Holds the lock until dropped.
    _file: std::fs::File,
    path: std::path::PathBuf,
}

impl StartLock {
    fn acquire(namespace: &str, grouping: &str) -> std::io::Result<StartLock> {
        use std::os::fd::AsRawFd;
        let safe = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        std::fs::create_dir_all(START_LOCK_DIR)?;
        let path =
            Path::new(START_LOCK_DIR).join(format!("{}-{}.lock", safe(namespace), safe(grouping)));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        // SAFETY: flock(2) on a descriptor we own; it blocks until the lock is ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(StartLock { _file: file, path })
    }
}

impl Drop for StartLock {
    /// The server listens now: a later start finds it by its socket, so the file can go (a
    /// start still waiting on it then finds the socket too).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn grouping_id(bundle: &Path) -> Option<String> {
    let spec = spec::load_spec(bundle).ok()?;
    spec.annotations()
        .as_ref()?
        .get(SANDBOX_ID_ANNOTATION)
        .filter(|id| !id.is_empty())
        .cloned()
}

/// SIGKILLs the guest recorded in the bundle, if that process is still this container's guest:
/// the recorded pid may have been reused by any process since. The process is held by a
/// pidfd while it is checked, so the signal goes to the process that was checked.
fn kill_leftover_guest(bundle: &Path, id: &str) -> Option<i32> {
    let record = std::fs::read_to_string(bundle.join(IDENTITY_FILE)).ok()?;
    let (pid, start) = identity::parse(&record)?;
    let Ok(pidfd) = spawn::open_pidfd(pid) else {
        return Some(pid);
    };
    if identity::is_guest_of(pid, start, id) {
        if let Err(e) = spawn::signal_pidfd(&pidfd, libc::SIGKILL) {
            warn!("delete: kill guest {pid}: {e}");
        }
    } else {
        info!("delete: process {pid} is no longer the guest of {id}; left alone");
    }
    Some(pid)
}

/// containerd 1.7 and 2.x write the runtime's options table on `start`'s stdin (a
/// `runtimeoptions.v1.Options` in an Any). The crate's `set_cgroup_and_oom_score`, which
/// `start` calls, decodes whatever is there as runc's options without looking at the type,
/// and would take the TOML body (field 3) for runc's `shim_cgroup` (also field 3), failing
/// every start. The shim reads its options from Create instead (src/options.rs), so start
/// drains them and leaves the crate an empty stdin.
fn discard_runtime_options_on_stdin() -> std::io::Result<()> {
    use std::io::Read;
    let mut options = Vec::new();
    std::io::stdin().read_to_end(&mut options)?;
    let null = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2_stdin(&null).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    #[test]
    fn a_pods_second_start_waits_for_the_first() {
        let grouping = format!("unit-{}", std::process::id());
        let held = StartLock::acquire("ns", &grouping).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let grouping = grouping.clone();
            std::thread::spawn(move || {
                let lock = StartLock::acquire("ns", &grouping).unwrap();
                tx.send(Instant::now()).unwrap();
                drop(lock);
            })
        };
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "the second start went ahead while the first held the lock"
        );
        let released = Instant::now();
        drop(held);
        let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(got >= released);
        waiter.join().unwrap();
        assert!(
            !Path::new(START_LOCK_DIR)
                .join(format!("ns-{grouping}.lock"))
                .exists(),
            "the lock file goes with the last holder"
        );
    }
}
