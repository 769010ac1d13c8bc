//! The shim binary's lifecycle with containerd: `start` (spawn or reuse the shim server),
//! `delete` (clean up after a lost shim), the server's task service.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{spawn, Config, ExitSignal, Flags, Shim, StartOpts};
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
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        WasmShim {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            bundle,
            id: args.id.clone(),
            containerd_address: args.address.clone(),
        }
    }

    /// Starts the shim server, or points containerd at the pod's existing one: the socket
    /// address is derived from the grouping id, so a second container of a pod finds it.
    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let grouping = grouping_id(&self.bundle).unwrap_or_else(|| opts.id.clone());
        discard_runtime_options_on_stdin().map_err(|e| containerd_shim::Error::IoError {
            context: "replace start's stdin (the runtime options) with /dev/null".into(),
            err: e,
        })?;
        // Two containers of a new pod started at once must not both start a server: the
        // second would replace the first's socket (the crate waits only 1 s for it).
        let lock = StartLock::acquire(&self.namespace, &grouping).map_err(|e| {
            containerd_shim::Error::IoError {
                context: format!("lock the start of the shim of {grouping}"),
                err: e,
            }
        })?;
        let address = spawn(opts, &grouping, Vec::new()).await;
        drop(lock);
        let address = address?;
        // containerd reads the address back from the bundle when it reconnects.
        std::fs::write(self.bundle.join("address"), &address).map_err(|e| {
            containerd_shim::Error::IoError {
                context: "write the shim address file".into(),
                err: e,
            }
        })?;
        Ok(address)
    }

    /// Run by containerd when it lost the shim: end the guest if it still runs, unmount the
    /// rootfs, and report the task as killed (137), as runc's shim does.
    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        if self.bundle.join(CLEANED_UP_FILE).exists() {
            // The shim's own Delete left nothing: the same answer, without the search.
            return Ok(killed_response(None));
        }
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
/// `runtimeoptions.v1.Options` in an Any). The crate's `spawn` decodes whatever is there as
/// runc's options without looking at the type, and would take the TOML body (field 3) for runc's
/// `shim_cgroup` (also field 3), failing every start. The shim reads its options from Create
/// instead (src/options.rs), so start drains them and leaves the crate an empty stdin.
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
