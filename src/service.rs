//! The task service's behaviour, one plain async method per RPC (no ttrpc types beyond the
//! request and response messages), so tests can call them directly. `task.rs` only
//! translates ttrpc calls to these methods.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use containerd_shim::api::{CreateTaskRequest, ExecProcessRequest, StateResponse};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::ExitSignal;
use log::{debug, info, warn};

use crate::cgroup::is_systemd_path;
use crate::cgroup::Cgroup;
use crate::container::{Container, ExitInfo, Process, Runner, StdioPaths};
use crate::engine::cache::ModuleCache;
use crate::engine::wasmer::engine_key;
use crate::engine::EXIT_NOT_RUNNABLE;
use crate::error::{Error, IoContext, Result};
use crate::events::{timestamp, Events};
use crate::guest::exit::ExitWatch;
use crate::guest::{GuestFds, GuestProcess};
use crate::native::{NativeExec, NativeRuntime, NativeStdio};
use crate::options::RuntimeOptions;
use crate::spec::{CacheUse, Plan, RunPlan};
use crate::{artifact, console, containerd, module, rootfs, spec, stdio};

/// The file in the bundle that records the init process's identity (pid and start time), so
/// `delete` can end a guest whose shim is gone, and only that guest.
pub const IDENTITY_FILE: &str = "guest-identity";

/// The file in the bundle that says Delete left nothing behind: the guest reaped, the rootfs
/// unmounted and the cgroup removed. containerd runs the shim's `delete` action after every
/// shim exit, clean or not, and waits for it before it answers the client's Delete; with this
/// record the action has nothing to look for (it would otherwise parse the mount table once
/// per cgroup controller to find a cgroup that is gone).
pub const CLEANED_UP_FILE: &str = "cleaned-up";

/// Exit status reported when the shim kills a process itself (SIGKILL).
pub const EXIT_KILLED: u32 = 128 + libc::SIGKILL as u32;

/// How long Start waits for the module to load before it releases the guest anyway (see
/// `GuestProcess::start`): long enough for a cached load or a module that fails to compile
/// to answer, short enough that Start answers promptly while a big module compiles.
const START_LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long an exit waits for the client to read what the process wrote to its output FIFOs.
/// A client learns of the exit only once it has read the output, so it cannot stop reading
/// too early: ctr, seeing the exit, cancels a FIFO open still under way and drops what the
/// FIFO holds (even with runc's shim an empty output now and then comes of it). A reader that
/// does not read at all delays the exit by this much, no more.
const OUTPUT_READ_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long an exit waits for a terminal's output to drain before it is reported anyway.
const OUTPUT_DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What Create made: the init process, its cgroup, the watch on its exit, and runc for a
/// native container.
struct Created {
    init: Arc<Process>,
    cgroup: Arc<Cgroup>,
    exit: ExitWatch,
    native: Option<NativeRuntime>,
    /// The image's wasm layer, when the init runs one (execs may run it too).
    image_module: Option<artifact::ModuleLayer>,
}

/// An entry of the container map: reserved while its Create runs (invisible to every other
/// request), then the container.
enum Slot {
    Creating,
    Ready(Arc<Container>),
}

pub struct Service {
    /// containerd's namespace of this shim's containers.
    namespace: String,
    /// containerd's gRPC socket (`-address`), where a wasm artifact's module is read from;
    /// empty when containerd gave none.
    containerd_address: String,
    /// Locked only to find, add or remove a container, never across a wait.
    containers: Mutex<HashMap<String, Slot>>,
    events: Events,
    exit: Arc<ExitSignal>,
    /// The runtime options of the first Create (every container of a shim comes through the
    /// same runtime handler, so they share them).
    options: OnceLock<RuntimeOptions>,
    /// The compiled-module cache; `None` if its directory cannot be used (modules then
    /// compile at every start).
    cache: OnceLock<Option<ModuleCache>>,
    /// The threads storing freshly compiled modules: the shim waits for them before it
    /// exits, or a short-lived container's compile would never reach the cache.
    stores: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// How long a Create waits for containerd to say what the container's image is.
const CONTAINERD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a wasm process's module comes from.
enum ModuleSource {
    /// The file `process.args[0]` names in the container; with the layers of its overlay
    /// rootfs when containerd gave one (a module of an image layer is hashed once).
    Rootfs(Option<rootfs::OverlayLayers>),
    /// The wasm layer of the container's image, read from containerd's content store.
    Artifact(containerd::Client, artifact::ModuleLayer),
}

/// How long an exiting shim waits for compiled modules still being stored (a large artifact
/// is written and synced in well under this).
const STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Removes a Create's reservation unless the container took its place.
struct Reservation<'a> {
    service: &'a Service,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut containers = self.service.map();
        if matches!(containers.get(&self.id), Some(Slot::Creating)) {
            containers.remove(&self.id);
        }
    }
}

impl Service {
    pub fn new(
        namespace: &str,
        containerd_address: &str,
        events: Events,
        exit: Arc<ExitSignal>,
    ) -> Service {
        Service {
            namespace: namespace.to_string(),
            containerd_address: containerd_address.to_string(),
            containers: Mutex::new(HashMap::new()),
            events,
            exit,
            options: OnceLock::new(),
            cache: OnceLock::new(),
            stores: Mutex::new(Vec::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The container `id`, once its Create has finished.
    fn container(&self, id: &str) -> Result<Arc<Container>> {
        match self.map().get(id) {
            Some(Slot::Ready(container)) => Ok(container.clone()),
            _ => Err(Error::not_found_container(id)),
        }
    }

    fn reserve(&self, id: &str) -> Result<Reservation<'_>> {
        let mut containers = self.map();
        if containers.contains_key(id) {
            return Err(Error::AlreadyExists(format!(
                "container {id} already exists"
            )));
        }
        containers.insert(id.to_string(), Slot::Creating);
        Ok(Reservation {
            service: self,
            id: id.to_string(),
        })
    }

    /// The options of this shim's runtime, from the first Create's request.
    fn options(&self, req: &CreateTaskRequest) -> Result<&RuntimeOptions> {
        if let Some(options) = self.options.get() {
            return Ok(options);
        }
        let options = RuntimeOptions::from_request(req.options.as_ref())?;
        if let Some(level) = options.log_level {
            log::set_max_level(level);
        }
        Ok(self.options.get_or_init(|| options))
    }

    fn cache(&self, options: &RuntimeOptions) -> Option<&ModuleCache> {
        self.cache
            .get_or_init(|| {
                ModuleCache::open(&options.cache_dir, &engine_key())
                    .map(|cache| cache.with_limit(options.max_cache_bytes))
                    .map_err(|e| warn!("module cache disabled: {e}"))
                    .ok()
            })
            .as_ref()
    }

    /// Create: no lock is held while the guest sets itself up, so other containers' requests
    /// answer meanwhile; the id is reserved so a second Create of it fails at once.
    pub async fn create(&self, req: &CreateTaskRequest) -> Result<u32> {
        let reservation = self.reserve(&req.id)?;
        if crate::cgroup::host_is_unified() {
            crate::cgroup::warm_up_attach();
        }
        let options = self.options(req)?.clone();
        let bundle = PathBuf::from(&req.bundle);
        let spec = spec::load_spec(&bundle)?;
        let rootfs = spec::rootfs_path(&spec, &bundle)?;
        let mounted = rootfs::mount(&req.rootfs, &rootfs)?;
        let started = std::time::Instant::now();
        let created = self
            .create_in_rootfs(req, &spec, &bundle, &rootfs, &options)
            .await;
        debug!("create id={} took {:?}", req.id, started.elapsed());
        let Created {
            init,
            cgroup,
            exit,
            native,
            image_module,
        } = match created {
            Ok(created) => created,
            Err(e) => {
                if mounted {
                    let _ = rootfs::unmount(&rootfs);
                }
                return Err(e);
            }
        };
        let pid = init.pid() as u32;
        info!("create id={} pid={pid} bundle={}", req.id, bundle.display());
        let container = Arc::new(Container {
            id: req.id.clone(),
            bundle,
            rootfs,
            rootfs_mounted: mounted,
            init,
            cgroup,
            native,
            image_module,
            execs: Default::default(),
        });
        // TaskCreate is queued before anything can queue this container's TaskExit.
        self.events.task_create(&req.id, &req.bundle, pid);
        self.watch_exit(&container, &container.init, exit, "");
        self.map().insert(req.id.clone(), Slot::Ready(container));
        drop(reservation);
        Ok(pid)
    }

    async fn create_in_rootfs(
        &self,
        req: &CreateTaskRequest,
        spec: &oci_spec::runtime::Spec,
        bundle: &Path,
        rootfs: &Path,
        options: &RuntimeOptions,
    ) -> Result<Created> {
        let linux = spec.linux().as_ref();
        let cgroups_path = linux.and_then(|l| l.cgroups_path().as_deref());
        // libcgroups reads the mount table once per controller (a few ms on cgroup v1): on
        // another thread, while this one resolves the module (for a wasm artifact, asking
        // containerd for the image's layer).
        let cgroup = {
            let (path, id) = (cgroups_path.map(Path::to_path_buf), req.id.clone());
            tokio::task::spawn_blocking(move || Cgroup::new(path.as_deref(), &id))
        };
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let planned = self.plan(&req.id, spec, rootfs).await;
        let cgroup = cgroup
            .await
            .map_err(|e| Error::Internal(format!("cgroup set-up task failed: {e}")))??;
        let (mut plan, source) = match planned? {
            (Plan::Wasm(plan), ModuleSource::Rootfs(_)) => {
                let layers = rootfs::overlay_layers(&req.rootfs);
                (plan, ModuleSource::Rootfs(layers))
            }
            (Plan::Wasm(plan), source) => (plan, source),
            (Plan::Native { entrypoint }, _) => {
                info!(
                    "create id={} entrypoint={} is a native executable: it runs under runc",
                    req.id,
                    entrypoint.display()
                );
                // runc attaches its process by pid.
                crate::cgroup::warm_up_attach();
                let systemd = cgroups_path.is_some_and(|p| is_systemd_path(&p.to_string_lossy()));
                let runtime = NativeRuntime::new(&self.namespace, bundle, systemd)?;
                return self
                    .create_native(req, bundle, runtime, cgroup, stdio)
                    .await;
            }
        };
        let resources = linux.and_then(|l| l.resources().as_ref());
        if !cgroup.enforces_device_rules() {
            drop_denied_devices(&mut plan, resources);
        }
        let cgroup = Arc::new(cgroup);
        let placement = Placement {
            cgroup: cgroup.clone(),
            resources: Some(resources.cloned().unwrap_or_default()),
            ready_timeout: options.ready_timeout,
        };
        let image_module = match &source {
            ModuleSource::Artifact(_, layer) => Some(layer.clone()),
            ModuleSource::Rootfs(_) => None,
        };
        let spawned = self
            .wasm_process(plan, source, bundle, stdio, placement, options)
            .await;
        let (init, exit) = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                let _ = remove_cgroup_when_empty(cgroup).await;
                return Err(e);
            }
        };
        write_identity_file(bundle, init.pid());
        Ok(Created {
            init,
            cgroup,
            exit,
            native: None,
            image_module,
        })
    }

    /// The init process's plan, and where its module comes from: the rootfs, or, when
    /// `process.args[0]` names no module there, the container's image if it is a wasm
    /// artifact (see `artifact`). Any other failure is the rootfs's own.
    async fn plan(
        &self,
        id: &str,
        spec: &oci_spec::runtime::Spec,
        rootfs: &Path,
    ) -> Result<(Plan, ModuleSource)> {
        let unresolved = match spec::plan(id, spec, rootfs) {
            Ok(plan) => return Ok((plan, ModuleSource::Rootfs(None))),
            Err(e) => e,
        };
        let cri_image_name = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(artifact::CRI_IMAGE_NAME_ANNOTATION));
        let Some((client, layer)) = self.artifact_layer(id, cri_image_name).await? else {
            return Err(unresolved);
        };
        info!(
            "create id={id}: process.args[0] is no file of the rootfs; running the wasm layer {} ({}) of image {}",
            layer.digest, layer.media_type, layer.image
        );
        let plan = spec::artifact_plan(id, spec, rootfs)?;
        Ok((
            Plan::Wasm(Box::new(plan)),
            ModuleSource::Artifact(client, layer),
        ))
    }

    /// The wasm layer of container `id`'s image, if containerd can be asked and the image is
    /// a wasm artifact; errors only for an artifact that cannot run (with the reason).
    async fn artifact_layer(
        &self,
        id: &str,
        cri_image_name: Option<&String>,
    ) -> Result<Option<(containerd::Client, artifact::ModuleLayer)>> {
        if self.containerd_address.is_empty() {
            return Ok(None);
        }
        let lookup = async {
            let client = containerd::Client::connect(&self.containerd_address, &self.namespace)
                .await
                .map_err(Error::Internal)?;
            let layer = artifact::find(&client, id, cri_image_name.map(String::as_str)).await?;
            Ok::<_, Error>(layer.map(|layer| (client, layer)))
        };
        match tokio::time::timeout(CONTAINERD_TIMEOUT, lookup).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e @ Error::InvalidArgument(_))) => Err(e),
            Ok(Err(e)) => {
                warn!("create id={id}: could not read the container's image from containerd: {e}");
                Ok(None)
            }
            Err(_) => {
                warn!("create id={id}: containerd did not give the container's image in {CONTAINERD_TIMEOUT:?}");
                Ok(None)
            }
        }
    }

    /// A wasm guest process for `plan` with the `stdio` containerd gave, placed as `placement`
    /// says: the process, created (set up, compiling), and the watch on its exit.
    async fn wasm_process(
        &self,
        mut plan: Box<RunPlan>,
        source: ModuleSource,
        bundle: &Path,
        stdio: StdioPaths,
        placement: Placement,
        options: &RuntimeOptions,
    ) -> Result<(Arc<Process>, ExitWatch)> {
        // Reading and hashing a big module takes a while, and waiting for another
        // container's compile longer: off the runtime's threads, so the pod's other
        // containers are answered meanwhile.
        let (rootfs, module_path) = (plan.rootfs.clone(), plan.module.clone());
        let (cache, max_bytes) = (self.cache(options).cloned(), options.max_module_bytes);
        let (sealed, layers) = match source {
            ModuleSource::Rootfs(layers) => (None, layers),
            ModuleSource::Artifact(client, layer) => (
                Some(artifact::seal(&client, &layer, max_bytes).await?),
                None,
            ),
        };
        let handoff = tokio::task::spawn_blocking(move || match sealed {
            Some((sealed, digest)) => module::hand_off_sealed(sealed, digest, cache.as_ref()),
            None => module::hand_off(
                &rootfs,
                &module_path,
                cache.as_ref(),
                max_bytes,
                layers.as_ref(),
            ),
        })
        .await
        .map_err(|e| Error::Internal(format!("module hand-off task failed: {e}")))??;
        plan.cache = CacheUse {
            entry: handoff.cache_entry.is_some(),
            store: handoff.artifact_out.is_some(),
        };
        plan.module_digest = handoff.digest.clone();
        let log = open_log(bundle)?;
        let guest_stdio = open_stdio(&stdio).await?;
        if let Some(store) = handoff.store {
            let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
            stores.retain(|s| !s.is_finished());
            stores.push(store);
        }
        let fds = GuestFds {
            stdin: guest_stdio.stdin,
            stdout: guest_stdio.stdout,
            stderr: guest_stdio.stderr,
            log,
            module: handoff.module,
            cache_entry: handoff.cache_entry,
            artifact_out: handoff.artifact_out,
            terminal: stdio.terminal,
        };
        let exit = ExitWatch::subscribe().await?;
        let guest = spawn_guest(*plan, fds, placement).await?;
        let mut process = Process::new(
            Runner::Guest(guest),
            stdio,
            guest_stdio.stdin_hold,
            guest_stdio.output_holds,
        );
        if let Some((console, output_done)) = guest_stdio.console {
            process = process.with_console(console, output_done);
        }
        Ok((Arc::new(process), exit))
    }

    /// A native container: `runc create` with the container's stdio (runc confines it and
    /// places it in its cgroup itself).
    async fn create_native(
        &self,
        req: &CreateTaskRequest,
        bundle: &Path,
        runtime: NativeRuntime,
        cgroup: Cgroup,
        stdio: StdioPaths,
    ) -> Result<Created> {
        let cgroup = Arc::new(cgroup);
        if req.terminal {
            return Err(Error::Unimplemented(
                "a terminal for a native container is not supported by the wasm shim yet".into(),
            ));
        }
        let opened = open_stdio(&stdio).await?;
        let native_stdio = NativeStdio {
            stdin: opened.stdin,
            stdout: opened.stdout,
            stderr: opened.stderr,
        };
        let exit = ExitWatch::subscribe().await?;
        let (id, creating) = (req.id.clone(), runtime.clone());
        let native = tokio::task::spawn_blocking(move || creating.create(&id, native_stdio))
            .await
            .map_err(|e| Error::Internal(format!("runc create task failed: {e}")))??;
        write_identity_file(bundle, native.pid);
        let process = Process::new(
            Runner::Native(native),
            stdio,
            opened.stdin_hold,
            opened.output_holds,
        );
        Ok(Created {
            init: Arc::new(process),
            cgroup,
            exit,
            native: Some(runtime),
            image_module: None,
        })
    }

    /// Watches one process until it exits, on a task of its own (so exits and terminal
    /// drains of different containers never wait on each other): the terminal's output is
    /// drained, TaskOOM published if the OOM killer ended it, TaskExit queued, and only then
    /// is the exit recorded, so a Delete that follows a Wait queues TaskDelete after it.
    fn watch_exit(
        &self,
        container: &Arc<Container>,
        process: &Arc<Process>,
        exit: ExitWatch,
        exec_id: &str,
    ) {
        let (container, process) = (container.clone(), process.clone());
        let exec_id = exec_id.to_string();
        let events = self.events.clone();
        tokio::spawn(async move {
            let pid = process.pid();
            let status = exit.wait(pid).await as u32;
            process.set_ended();
            // The guest side of a terminal is closed now: the copy ends at once with what is
            // buffered.
            if let Some(done) = process.take_output_done() {
                let _ = tokio::time::timeout(OUTPUT_DRAIN_LIMIT, done).await;
            }
            // What it wrote is read before anyone hears of the exit (see `OUTPUT_READ_LIMIT`).
            let unread_until = std::time::Instant::now() + OUTPUT_READ_LIMIT;
            while process.output_unread() > 0
                && !process.output_abandoned()
                && std::time::Instant::now() < unread_until
            {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            // A guest that died while Start waited for its module: TaskStart goes first.
            process.start_settled().await;
            // The OOM killer's kill shows in the cgroup's count; TaskOOM goes first, so that
            // CRI has it when it records the exit (reason OOMKilled).
            if status == EXIT_KILLED && container.cgroup.oom_kills() > 0 {
                info!("oom id={} pid={pid}", container.id);
                events.task_oom(&container.id);
            }
            let at = SystemTime::now();
            info!(
                "exit id={} exec_id={exec_id} pid={pid} status={status}",
                container.id
            );
            events.task_exit(&container.id, &exec_id, pid as u32, status, at);
            process.set_exited(status, at);
            // As runc's shim: when the init ends, so do the processes exec'd into it.
            if exec_id.is_empty() {
                for exec in container.processes().iter().skip(1) {
                    let _ = exec.kill(libc::SIGKILL as u32);
                }
            }
        });
    }

    /// Start: waits (without any lock) for the module to load, then releases the guest. A
    /// module that cannot run fails here with the reason.
    pub async fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        let container = self.container(id)?;
        let process = container.process(exec_id)?.clone();
        // A native exec's process comes to be in this Start: its exit is watched from before.
        let exit = match process.runs_at_start() {
            true => Some(ExitWatch::subscribe().await?),
            false => None,
        };
        process.begin_start()?;
        let starting = process.clone();
        let started = tokio::task::spawn_blocking(move || starting.finish_start(START_LOAD_WAIT))
            .await
            .map_err(|e| Error::Internal(format!("start task failed: {e}")))
            .and_then(|r| r);
        let pid = process.pid() as u32;
        match &started {
            Ok(()) if exec_id.is_empty() => {
                info!("start id={id} pid={pid}");
                self.events.task_start(id, pid);
                process.settle_start();
            }
            Ok(()) => {
                if let Some(exit) = exit {
                    self.watch_exit(&container, &process, exit, exec_id);
                }
                info!("start id={id} exec_id={exec_id} pid={pid}");
                self.events.task_exec_started(id, exec_id, pid);
                process.settle_start();
            }
            Err(e) => {
                warn!("start id={id} exec_id={exec_id}: {e}");
                process.settle_start();
                if process.runs_at_start() {
                    // runc could not run it: as a program that cannot be executed.
                    process.set_exited(EXIT_NOT_RUNNABLE as u32, SystemTime::now());
                }
                // The guest ends without running; answer once it has, so the task is STOPPED
                // and the client's Delete goes through, as after runc's failed start.
                end_unstarted(&process).await;
            }
        }
        started.map(|()| pid)
    }

    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let container = self.container(id)?;
        info!("kill id={id} signal={signal} all={all}");
        if all && exec_id.is_empty() {
            // Every process of the container; one that already finished is not an error.
            for process in container.processes() {
                let _ = process.kill(signal);
            }
            if let Some(runtime) = &container.native {
                let (runtime, id) = (runtime.clone(), id.to_string());
                let _ = blocking(move || runtime.kill_all(&id, signal)).await;
            }
        } else {
            container.process(exec_id)?.kill(signal)?;
        }
        // On cgroup v1 a frozen process does not act on SIGKILL until it is thawed: thaw a
        // paused container after SIGKILL, as runc does, so Kill ends it. Other signals wait
        // for Resume.
        if container.init.is_paused() && signal == libc::SIGKILL as u32 {
            freeze(&container, false).await?;
        }
        Ok(())
    }

    /// Waits until the process exits; returns at once if it already has.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<ExitInfo> {
        let mut exit = self.container(id)?.process(exec_id)?.subscribe_exit();
        let info = exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::NotFound(format!("container {id} was deleted while waiting")))?;
        Ok(info.expect("wait_for returned a recorded exit"))
    }

    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<(u32, ExitInfo)> {
        if !exec_id.is_empty() {
            return self.delete_exec(id, exec_id).await;
        }
        let container = self.container(id)?;
        container.init.settle_ended().await;
        container.check_deletable(exec_id)?;
        stop_if_never_started(&container.init).await;
        {
            let mut containers = self.map();
            match containers.get(id) {
                Some(Slot::Ready(c)) if Arc::ptr_eq(c, &container) => {
                    containers.remove(id);
                }
                // A concurrent Delete took it.
                _ => return Err(Error::not_found_container(id)),
            }
        }
        let pid = container.init.pid() as u32;
        let exit = container.init.exit().unwrap_or(ExitInfo {
            status: EXIT_KILLED,
            at: SystemTime::now(),
        });
        let mut cleaned_up = true;
        if let Some(runtime) = &container.native {
            let (runtime, native_id) = (runtime.clone(), id.to_string());
            if let Err(e) = blocking(move || runtime.delete(&native_id)).await {
                warn!("delete id={id}: {e}");
                cleaned_up = false;
            }
        }
        if container.rootfs_mounted {
            if let Err(e) = rootfs::unmount(&container.rootfs) {
                warn!("delete id={id}: {e}");
                cleaned_up = false;
            }
        }
        let _ = std::fs::remove_file(container.bundle.join(IDENTITY_FILE));
        cleaned_up &= remove_cgroup_when_empty(container.cgroup.clone()).await;
        if cleaned_up {
            if let Err(e) = std::fs::write(container.bundle.join(CLEANED_UP_FILE), b"") {
                warn!("delete id={id}: record the clean-up in the bundle: {e}");
            }
        }
        info!("delete id={id} pid={pid} exit_status={}", exit.status);
        self.events.task_delete(id, pid, exit.status, exit.at);
        Ok((pid, exit))
    }

    /// Delete of an exec: it goes from the container (ended first if it never started). No
    /// event: containerd publishes none for an exec's delete, as runc's shim does.
    async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<(u32, ExitInfo)> {
        let container = self.container(id)?;
        let process = container.process(exec_id)?;
        process.settle_ended().await;
        crate::container::check_deletable(id, &process)?;
        stop_if_never_started(&process).await;
        container.remove_exec(exec_id)?;
        let exit = process.exit().unwrap_or(ExitInfo {
            status: EXIT_KILLED,
            at: SystemTime::now(),
        });
        info!(
            "delete id={id} exec_id={exec_id} exit_status={}",
            exit.status
        );
        Ok((process.pid() as u32, exit))
    }

    /// Exec: a new process in the running container (`kubectl exec`, CRI's ExecSync, exec
    /// probes), created now and released by Start with its exec id. A wasm module runs in a
    /// guest that joins the container's namespaces and cgroup, confined as the exec's own
    /// process spec says (user, capabilities, no_new_privs) with the container's seccomp.
    pub async fn exec(&self, req: &ExecProcessRequest) -> Result<()> {
        let (id, exec_id) = (req.id.as_str(), req.exec_id.as_str());
        let container = self.container(id)?;
        if container.init.status() != containerd_shim::api::Status::RUNNING {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running: there is nothing to exec into"
            )));
        }
        if container.process(exec_id).is_ok() {
            return Err(Error::AlreadyExists(format!(
                "exec {exec_id} of container {id} already exists"
            )));
        }
        if container.native.is_some() || !container.cgroup.joins_by_itself() {
            crate::cgroup::warm_up_attach();
        }
        let process: oci_spec::runtime::Process =
            serde_json::from_slice(&req.spec.value).map_err(|e| {
                Error::InvalidArgument(format!("the exec's spec is not an OCI process: {e}"))
            })?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let spec = spec::load_spec(&container.bundle)?;
        let (plan, source) = self.exec_plan(&container, &spec, &process).await?;
        let exec = match plan {
            Plan::Wasm(plan) => self.exec_wasm(&container, plan, source, stdio).await?,
            Plan::Native { .. } => exec_native(&container, exec_id, process, stdio).await?,
        };
        if let Err(e) = container.add_exec(exec_id, exec.process.clone()) {
            end_unstarted(&exec.process).await;
            return Err(e);
        }
        if let Some(exit) = exec.exit {
            self.watch_exit(&container, &exec.process, exit, exec_id);
        }
        info!("exec id={id} exec_id={exec_id} pid={}", exec.process.pid());
        self.events.task_exec_added(id, exec_id);
        Ok(())
    }

    /// An exec's plan and where its module comes from: the rootfs, or, in a container that
    /// runs its image's wasm layer, that layer when the exec's `args[0]` names no file there
    /// (an exec probe that runs the app's module with other arguments).
    async fn exec_plan(
        &self,
        container: &Container,
        spec: &oci_spec::runtime::Spec,
        process: &oci_spec::runtime::Process,
    ) -> Result<(Plan, ModuleSource)> {
        let (id, rootfs, init_pid) = (&container.id, &container.rootfs, container.init.pid());
        let unresolved = match spec::exec_plan(id, spec, process, rootfs, init_pid) {
            Ok(plan) => return Ok((plan, ModuleSource::Rootfs(None))),
            Err(e) => e,
        };
        let Some(layer) = container.image_module.clone() else {
            return Err(unresolved);
        };
        let plan = spec::artifact_exec_plan(id, spec, process, rootfs, init_pid)?;
        let client = containerd::Client::connect(&self.containerd_address, &self.namespace)
            .await
            .map_err(Error::Internal)?;
        Ok((
            Plan::Wasm(Box::new(plan)),
            ModuleSource::Artifact(client, layer),
        ))
    }

    /// A wasm exec: its guest, created now, joins the container and waits for Start.
    async fn exec_wasm(
        &self,
        container: &Arc<Container>,
        plan: Box<RunPlan>,
        source: ModuleSource,
        stdio: StdioPaths,
    ) -> Result<Exec> {
        let options = self.options.get().cloned().unwrap_or_default();
        let placement = Placement {
            cgroup: container.cgroup.clone(),
            resources: None,
            ready_timeout: options.ready_timeout,
        };
        let (process, exit) = self
            .wasm_process(plan, source, &container.bundle, stdio, placement, &options)
            .await?;
        Ok(Exec {
            process,
            exit: Some(exit),
        })
    }

    pub async fn state(&self, id: &str, exec_id: &str) -> Result<StateResponse> {
        let container = self.container(id)?;
        let process = container.process(exec_id)?;
        let mut resp = StateResponse {
            id: id.to_string(),
            bundle: container.bundle.display().to_string(),
            pid: process.pid() as u32,
            status: process.status().into(),
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.stdio.terminal,
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        if let Some(exit) = process.exit() {
            resp.exit_status = exit.status;
            resp.exited_at = MessageField::some(timestamp(exit.at));
        }
        Ok(resp)
    }

    pub async fn pids(&self, id: &str) -> Result<Vec<u32>> {
        let container = self.container(id)?;
        match &container.native {
            // runc knows every process of a native container (a sidecar may fork).
            Some(runtime) => {
                let (runtime, id) = (runtime.clone(), id.to_string());
                Ok(tokio::task::spawn_blocking(move || runtime.pids(&id))
                    .await
                    .unwrap_or_default())
            }
            None => Ok(container.pids()),
        }
    }

    pub async fn close_io(&self, id: &str, exec_id: &str) -> Result<()> {
        self.container(id)?.process(exec_id)?.close_stdin();
        Ok(())
    }

    /// ResizePty: sets the window size of the process's terminal.
    pub async fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let container = self.container(id)?;
        match &container.process(exec_id)?.console {
            Some(console) => console.resize(width, height),
            None => Err(Error::FailedPrecondition(format!(
                "{id} was not created with a terminal"
            ))),
        }
    }

    /// Pause: freezes the container's cgroup; State shows PAUSED.
    pub async fn pause(&self, id: &str) -> Result<()> {
        let container = self.container(id)?;
        if container.init.status() != containerd_shim::api::Status::RUNNING {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running, so it cannot be paused"
            )));
        }
        freeze(&container, true).await?;
        container.init.set_paused()?;
        info!("pause id={id}");
        self.events.task_paused(id);
        Ok(())
    }

    /// Resume: thaws the container's cgroup.
    pub async fn resume(&self, id: &str) -> Result<()> {
        let container = self.container(id)?;
        if !container.init.is_paused() {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not paused"
            )));
        }
        freeze(&container, false).await?;
        container.init.set_resumed()?;
        info!("resume id={id}");
        self.events.task_resumed(id);
        Ok(())
    }

    /// Update: new `linux.resources` (the JSON containerd sends) for a running container.
    pub async fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(resources)
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "the update's resources are not OCI linux.resources: {e}"
                ))
            })?;
        let container = self.container(id)?;
        if container.init.is_stopped() {
            return Err(Error::FailedPrecondition(format!(
                "container {id} has exited; there is nothing to update"
            )));
        }
        match &container.native {
            Some(runtime) => {
                let (runtime, id) = (runtime.clone(), id.to_string());
                blocking(move || runtime.update(&id, &resources)).await?;
            }
            None => {
                let cgroup = container.cgroup.clone();
                blocking(move || cgroup.apply(resources)).await?;
            }
        }
        info!("update id={id}");
        Ok(())
    }

    /// Stats: the cgroup's metrics, as containerd's cgroups v1 or v2 Metrics.
    pub async fn stats(
        &self,
        id: &str,
    ) -> Result<containerd_shim::protos::protobuf::well_known_types::any::Any> {
        self.container(id)?.cgroup.metrics()
    }

    /// The init pid of a container, for Connect.
    pub async fn init_pid(&self, id: &str) -> Option<u32> {
        self.container(id).ok().map(|c| c.init.pid() as u32)
    }

    /// containerd asks the shim to exit; it does once no container is left, after the
    /// events it queued have reached containerd. The answer comes at once: containerd gives
    /// Shutdown 3 s, and may call it while it cannot take events (it cleans up shims before it
    /// listens, after a restart), so the flush runs after the reply.
    pub async fn shutdown(&self) {
        let left = self.map().len();
        if left > 0 {
            debug!("shutdown: {left} containers remain, staying up");
            return;
        }
        info!("shutdown: no containers left, exiting");
        let (events, exit) = (self.events.clone(), self.exit.clone());
        let stores = std::mem::take(&mut *self.stores.lock().unwrap_or_else(|e| e.into_inner()));
        tokio::spawn(async move {
            let _ = tokio::task::spawn_blocking(move || finish_stores(stores)).await;
            events.flush().await;
            exit.signal();
        });
    }
}

/// Deleting a created task ends its guest first, as runc's delete does.
async fn stop_if_never_started(process: &Arc<Process>) {
    if process.status() == containerd_shim::api::Status::CREATED {
        end_unstarted(process).await;
    }
}

/// Waits (up to [`STORE_WAIT`] in all) for the compiled modules still being stored.
fn finish_stores(stores: Vec<std::thread::JoinHandle<()>>) {
    let deadline = std::time::Instant::now() + STORE_WAIT;
    for store in stores {
        while !store.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if store.is_finished() {
            let _ = store.join();
        } else {
            warn!("exiting with a compiled module still being stored; it will compile again");
        }
    }
}

/// An exec process, and the watch on its exit when it already exists.
struct Exec {
    process: Arc<Process>,
    exit: Option<ExitWatch>,
}

/// An exec into a native container: runc runs it at Start (see `NativeExec`), in the
/// container's namespaces and cgroup, confined by the exec's process spec.
async fn exec_native(
    container: &Arc<Container>,
    exec_id: &str,
    process: oci_spec::runtime::Process,
    stdio: StdioPaths,
) -> Result<Exec> {
    let Some(runtime) = container.native.clone() else {
        return Err(Error::InvalidArgument(format!(
            "{} is a native program, and container {} runs a wasm module: exec a module of its rootfs",
            process.args().as_deref().unwrap_or_default().join(" "),
            container.id
        )));
    };
    if stdio.terminal {
        return Err(Error::Unimplemented(
            "a terminal for an exec into a native container is not supported by the wasm shim yet"
                .into(),
        ));
    }
    let opened = open_stdio(&stdio).await?;
    let native_stdio = NativeStdio {
        stdin: opened.stdin,
        stdout: opened.stdout,
        stderr: opened.stderr,
    };
    let exec = NativeExec::new(runtime, &container.id, exec_id, process, native_stdio);
    let process = Process::new(
        Runner::NativeExec(Box::new(exec)),
        stdio,
        opened.stdin_hold,
        opened.output_holds,
    );
    Ok(Exec {
        process: Arc::new(process),
        exit: None,
    })
}

/// Ends a guest that was never released: it is never started, and SIGKILL ends it if it is
/// still setting up or compiling. Returns once its exit is recorded.
async fn end_unstarted(process: &Arc<Process>) {
    process.abandon();
    let _ = process.kill(libc::SIGKILL as u32);
    let mut exit = process.subscribe_exit();
    let _ = exit.wait_for(Option::is_some).await;
}

/// Runs cgroup work (libcgroups polls and sleeps) off the runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("cgroup task failed: {e}")))?
}

/// Freezes or thaws the container: its cgroup's freezer, or runc's pause and resume for a
/// native container (so runc's own state agrees).
async fn freeze(container: &Arc<Container>, frozen: bool) -> Result<()> {
    match &container.native {
        Some(runtime) => {
            let (runtime, id) = (runtime.clone(), container.id.clone());
            blocking(move || runtime.freeze(&id, frozen)).await
        }
        None => {
            let cgroup = container.cgroup.clone();
            blocking(move || {
                if frozen {
                    cgroup.freeze()
                } else {
                    cgroup.thaw()
                }
            })
            .await
        }
    }
}

/// The guest's stdio: plain descriptors, or a terminal the shim copies through.
struct GuestStdio {
    stdin: std::os::fd::OwnedFd,
    stdout: std::os::fd::OwnedFd,
    stderr: std::os::fd::OwnedFd,
    stdin_hold: Option<std::fs::File>,
    output_holds: Vec<std::os::fd::OwnedFd>,
    console: Option<(console::Console, tokio::sync::oneshot::Receiver<()>)>,
}

/// Opens what containerd gave for stdio (waiting, off the runtime, for an output FIFO's
/// reader; see `stdio`).
async fn open_stdio(stdio: &StdioPaths) -> Result<GuestStdio> {
    let (stdin, stdout, stderr, terminal) = (
        stdio.stdin.clone(),
        stdio.stdout.clone(),
        stdio.stderr.clone(),
        stdio.terminal,
    );
    tokio::task::spawn_blocking(move || {
        if !terminal {
            let opened = stdio::open(&stdin, &stdout, &stderr)?;
            return Ok(GuestStdio {
                stdin: opened.stdin,
                stdout: opened.stdout,
                stderr: opened.stderr,
                stdin_hold: opened.stdin_hold,
                output_holds: opened.output_holds,
                console: None,
            });
        }
        let tty = console::open(&stdin, &stdout)?;
        let slave = |what: &str| {
            tty.slave
                .try_clone()
                .context(|| format!("duplicate the terminal for {what}"))
        };
        Ok(GuestStdio {
            stdin: slave("stdin")?,
            stdout: slave("stdout")?,
            stderr: tty.slave,
            stdin_hold: tty.stdin_hold,
            output_holds: tty.output_holds,
            console: Some((tty.console, tty.output_done)),
        })
    })
    .await
    .map_err(|e| Error::Internal(format!("stdio task failed: {e}")))?
}

/// Where the kernel does not enforce the device rules (see `Cgroup::enforces_device_rules`),
/// a device node they deny is not created at all: the guest cannot open what is not there.
fn drop_denied_devices(plan: &mut RunPlan, resources: Option<&oci_spec::runtime::LinuxResources>) {
    use crate::confine::DeviceKind;
    use oci_spec::runtime::LinuxDeviceType;
    let rules = resources
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    plan.confinement.devices.retain(|d| {
        let kind = match d.kind {
            DeviceKind::Char => LinuxDeviceType::C,
            DeviceKind::Block => LinuxDeviceType::B,
            // No device rule covers a FIFO.
            DeviceKind::Fifo => return true,
        };
        let allowed =
            crate::cgroup::device_rules_allow(&rules, kind, d.major as i64, d.minor as i64);
        if !allowed {
            warn!(
                "create id={}: linux.devices {} is not created: linux.resources.devices denies it",
                plan.id,
                d.path.display()
            );
        }
        allowed
    });
}

/// Where a new guest goes: its cgroup, with the spec's `linux.resources`, and how long it
/// has to get ready there.
struct Placement {
    cgroup: Arc<Cgroup>,
    /// Applied once the guest is in the cgroup; `None` for an exec, which joins its
    /// container's cgroup as it is.
    resources: Option<oci_spec::runtime::LinuxResources>,
    ready_timeout: std::time::Duration,
}

/// Starts the guest process (blocking work, off the runtime) and places it in its cgroup
/// before it runs anything.
async fn spawn_guest(plan: RunPlan, fds: GuestFds, placement: Placement) -> Result<GuestProcess> {
    tokio::task::spawn_blocking(move || {
        let Placement {
            cgroup,
            resources,
            ready_timeout,
        } = placement;
        let started = std::time::Instant::now();
        // cgroup v1: the guest joins by itself before it execs; elsewhere it is placed by pid.
        let joins = cgroup.prepare_join(resources.as_ref())?;
        let mut placed_at = None;
        let place = |pid| {
            let placed = match joins {
                Some(_) => Ok(()),
                None => cgroup.place(pid, resources.as_ref()),
            };
            placed_at = Some(started.elapsed());
            placed
        };
        let tasks = joins.as_deref().unwrap_or_default();
        let spawned = GuestProcess::spawn(&plan, fds, tasks, place, ready_timeout).map_err(|e| {
            match e {
                Error::DeadlineExceeded(_) => Error::DeadlineExceeded(format!(
                    "the guest process did not finish its setup within {ready_timeout:?} (the runtime option ReadyTimeoutSeconds); it was killed"
                )),
                other => other,
            }
        });
        // Where a Create's time goes: spawn + cgroup placement, then the guest's confinement
        // until it reports ready.
        debug!(
            "spawn id={} placed in {:?}, ready after {:?}",
            plan.id,
            placed_at.unwrap_or_default(),
            started.elapsed()
        );
        spawned
    })
    .await
    .map_err(|e| Error::Internal(format!("guest spawn task failed: {e}")))?
}

/// Removes a cgroup whose processes are ending (killed, or exited): their exit can lag the
/// call by a moment, during which the kernel refuses to remove a cgroup that holds them.
/// Whether it is gone.
pub async fn remove_cgroup_when_empty(cgroup: Arc<Cgroup>) -> bool {
    let mut last = None;
    for _ in 0..100 {
        // libcgroups retries with sleeps of its own: off the runtime's threads.
        let attempt = cgroup.clone();
        let removed = tokio::task::spawn_blocking(move || attempt.remove()).await;
        match removed {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => last = Some(e),
            Err(e) => last = Some(Error::Internal(format!("cgroup removal task failed: {e}"))),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if let Some(e) = last {
        warn!("{e}");
    }
    false
}

/// The bundle's `log` FIFO, where containerd reads the shim's log; /dev/null if it has none.
/// Opened non-blocking so a FIFO without a reader cannot stall Create, then switched back so
/// the guest's log writes are plain blocking writes.
fn open_log(bundle: &Path) -> Result<std::os::fd::OwnedFd> {
    let fifo = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"));
    let file = match fifo {
        Ok(file) => file,
        Err(_) => OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .with_path("open", Path::new("/dev/null"))?,
    };
    let fd = std::os::fd::OwnedFd::from(file);
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .context(|| "make the log descriptor blocking".into())?;
    Ok(fd)
}

/// Records the guest's identity in the bundle: its pid and the start time the kernel gives
/// it (`/proc/<pid>/stat`), which together no other process can share.
fn write_identity_file(bundle: &Path, pid: i32) {
    let identity = match crate::guest::identity::start_time(pid) {
        Some(start) => format!("{pid} {start}"),
        None => pid.to_string(),
    };
    if let Err(e) = std::fs::write(bundle.join(IDENTITY_FILE), identity) {
        warn!("write {}: {e}", bundle.join(IDENTITY_FILE).display());
    }
}
