//! The task service's behaviour, one plain async method per RPC (no ttrpc types beyond the
//! request and response messages), so tests can call them directly. `task.rs` only
//! translates ttrpc calls to these methods.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim::api::{CreateTaskRequest, StateResponse};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::ExitSignal;
use log::{debug, info, warn};
use tokio::sync::Mutex;

use crate::cgroup::Cgroup;
use crate::container::{send_signal, Container, ExitInfo, Process, StdioPaths};
use crate::engine::cache::ModuleCache;
use crate::engine::wasmer::engine_key;
use crate::error::{Error, IoContext, Result};
use crate::events::{timestamp, Events};
use crate::guest::{GuestFds, GuestProcess};
use crate::spec::{CacheUse, RunPlan};
use crate::{console, module, rootfs, spec, stdio};

/// Where compiled modules are cached unless `CONTAINERD_SHIM_WASM_CACHE_DIR` says otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/containerd-shim-wasm/cache";
pub const CACHE_DIR_ENV: &str = "CONTAINERD_SHIM_WASM_CACHE_DIR";

/// The file in the bundle that records the init pid, so `delete` can end a guest whose shim
/// is gone.
pub const PID_FILE: &str = "init.pid";

/// Exit status reported when the shim kills a process itself (SIGKILL).
pub const EXIT_KILLED: u32 = 128 + libc::SIGKILL as u32;

/// How long an exit waits for a terminal's output to drain before it is reported anyway.
const OUTPUT_DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Service {
    containers: Mutex<HashMap<String, Container>>,
    events: Events,
    exit: Arc<ExitSignal>,
    /// The compiled-module cache; `None` if its directory cannot be used (modules then
    /// compile at every start).
    cache: Option<ModuleCache>,
}

impl Service {
    pub fn new(events: Events, exit: Arc<ExitSignal>) -> Service {
        let cache_dir = std::env::var_os(CACHE_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR));
        let cache = ModuleCache::open(&cache_dir, &engine_key())
            .map_err(|e| warn!("module cache disabled: {e}"))
            .ok();
        Service {
            containers: Mutex::new(HashMap::new()),
            events,
            exit,
            cache,
        }
    }

    pub async fn create(&self, req: &CreateTaskRequest) -> Result<u32> {
        let mut containers = self.containers.lock().await;
        if containers.contains_key(&req.id) {
            return Err(Error::AlreadyExists(format!(
                "container {} already exists",
                req.id
            )));
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec = spec::load_spec(&bundle)?;
        let rootfs = spec::rootfs_path(&spec, &bundle)?;
        let mounted = rootfs::mount(&req.rootfs, &rootfs)?;
        let started = std::time::Instant::now();
        let created = self.create_in_rootfs(req, &spec, &bundle, &rootfs).await;
        debug!("create id={} took {:?}", req.id, started.elapsed());
        let (init, cgroup) = match created {
            Ok(created) => created,
            Err(e) => {
                if mounted {
                    let _ = rootfs::unmount(&rootfs);
                }
                return Err(e);
            }
        };
        let pid = init.pid as u32;
        info!("create id={} pid={pid} bundle={}", req.id, bundle.display());
        self.events.task_create(&req.id, &req.bundle, pid);
        containers.insert(
            req.id.clone(),
            Container {
                id: req.id.clone(),
                bundle,
                rootfs,
                rootfs_mounted: mounted,
                init,
                cgroup,
            },
        );
        Ok(pid)
    }

    async fn create_in_rootfs(
        &self,
        req: &CreateTaskRequest,
        spec: &oci_spec::runtime::Spec,
        bundle: &Path,
        rootfs: &Path,
    ) -> Result<(Process, Cgroup)> {
        let mut plan = spec::plan(&req.id, spec, rootfs)?;
        let linux = spec.linux().as_ref();
        let cgroup = Cgroup::new(linux.and_then(|l| l.cgroups_path().as_deref()), &req.id)?;
        let resources = linux.and_then(|l| l.resources().as_ref());
        if !cgroup.enforces_device_rules() {
            drop_denied_devices(&mut plan, resources);
        }
        let placement = Placement {
            cgroup,
            resources: linux.and_then(|l| l.resources().clone()),
        };
        let handoff = module::hand_off(rootfs, &plan.module, self.cache.as_ref())?;
        plan.cache = CacheUse {
            entry: handoff.cache_entry.is_some(),
            store: handoff.artifact_out.is_some(),
        };
        let log = open_log(bundle)?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        if !req.terminal {
            let opened = stdio::open(&req.stdin, &req.stdout, &req.stderr)?;
            let fds = GuestFds {
                stdin: opened.stdin,
                stdout: opened.stdout,
                stderr: opened.stderr,
                log,
                module: handoff.module,
                cache_entry: handoff.cache_entry,
                artifact_out: handoff.artifact_out,
                terminal: false,
            };
            let (guest, cgroup) = spawn_guest(plan, fds, bundle, placement).await?;
            return Ok((Process::new(guest, stdio, opened.stdin_hold), cgroup));
        }
        let tty = console::open(&req.stdin, &req.stdout)?;
        let slave = |what: &str| {
            tty.slave
                .try_clone()
                .context(|| format!("duplicate the terminal for {what}"))
        };
        let fds = GuestFds {
            stdin: slave("stdin")?,
            stdout: slave("stdout")?,
            stderr: tty.slave,
            log,
            module: handoff.module,
            cache_entry: handoff.cache_entry,
            artifact_out: handoff.artifact_out,
            terminal: true,
        };
        let (guest, cgroup) = spawn_guest(plan, fds, bundle, placement).await?;
        let process =
            Process::new(guest, stdio, tty.stdin_hold).with_console(tty.console, tty.output_done);
        Ok((process, cgroup))
    }

    pub async fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        let mut containers = self.containers.lock().await;
        let container = containers
            .get_mut(id)
            .ok_or_else(|| Error::not_found_container(id))?;
        let process = container.process_mut(exec_id)?;
        process.start()?;
        let pid = process.pid as u32;
        info!("start id={id} pid={pid}");
        self.events.task_start(id, pid);
        Ok(pid)
    }

    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let containers = self.containers.lock().await;
        let container = containers
            .get(id)
            .ok_or_else(|| Error::not_found_container(id))?;
        info!("kill id={id} signal={signal} all={all}");
        if all && exec_id.is_empty() {
            // Every process of the container; one that already finished is not an error.
            for pid in container.pids() {
                let _ = send_signal(pid as i32, signal);
            }
            return Ok(());
        }
        let process = container.process(exec_id)?;
        process.kill(signal)?;
        // On cgroup v1 a frozen process does not act on SIGKILL until it is thawed: thaw a
        // paused container after SIGKILL, as runc does, so Kill ends it. Other signals wait
        // for Resume.
        if process.is_paused() && signal == libc::SIGKILL as u32 {
            container.cgroup.thaw()?;
        }
        Ok(())
    }

    /// Waits until the process exits; returns at once if it already has.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<ExitInfo> {
        let mut exit = {
            let containers = self.containers.lock().await;
            let container = containers
                .get(id)
                .ok_or_else(|| Error::not_found_container(id))?;
            container.process(exec_id)?.subscribe_exit()
        };
        let info = exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::NotFound(format!("container {id} was deleted while waiting")))?;
        Ok(info.expect("wait_for returned a recorded exit"))
    }

    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<(u32, ExitInfo)> {
        if !exec_id.is_empty() {
            return Err(Error::not_found_exec(id, exec_id));
        }
        self.stop_if_never_started(id).await?;
        let mut containers = self.containers.lock().await;
        let container = containers
            .get(id)
            .ok_or_else(|| Error::not_found_container(id))?;
        container.check_deletable(exec_id)?;
        let container = containers.remove(id).expect("checked above");
        drop(containers);
        let pid = container.init.pid as u32;
        let exit = container.init.exit().unwrap_or(ExitInfo {
            status: EXIT_KILLED,
            at: SystemTime::now(),
        });
        if container.rootfs_mounted {
            if let Err(e) = rootfs::unmount(&container.rootfs) {
                warn!("delete id={id}: {e}");
            }
        }
        let _ = std::fs::remove_file(container.bundle.join(PID_FILE));
        remove_cgroup_when_empty(container.cgroup).await;
        info!("delete id={id} pid={pid} exit_status={}", exit.status);
        self.events.task_delete(id, pid, exit.status, exit.at);
        Ok((pid, exit))
    }

    /// Deleting a created task ends its guest first, as runc's delete does.
    async fn stop_if_never_started(&self, id: &str) -> Result<()> {
        let exit = {
            let containers = self.containers.lock().await;
            let container = containers
                .get(id)
                .ok_or_else(|| Error::not_found_container(id))?;
            if container.init.status() != containerd_shim::api::Status::CREATED {
                return Ok(());
            }
            let _ = send_signal(container.init.pid, libc::SIGKILL as u32);
            container.init.subscribe_exit()
        };
        let mut exit = exit;
        let _ = exit.wait_for(Option::is_some).await;
        Ok(())
    }

    pub async fn state(&self, id: &str, exec_id: &str) -> Result<StateResponse> {
        let containers = self.containers.lock().await;
        let container = containers
            .get(id)
            .ok_or_else(|| Error::not_found_container(id))?;
        let process = container.process(exec_id)?;
        let mut resp = StateResponse {
            id: id.to_string(),
            bundle: container.bundle.display().to_string(),
            pid: process.pid as u32,
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
        let containers = self.containers.lock().await;
        let container = containers
            .get(id)
            .ok_or_else(|| Error::not_found_container(id))?;
        Ok(container.pids())
    }

    pub async fn close_io(&self, id: &str, exec_id: &str) -> Result<()> {
        let mut containers = self.containers.lock().await;
        let container = containers
            .get_mut(id)
            .ok_or_else(|| Error::not_found_container(id))?;
        container.process_mut(exec_id)?.close_stdin();
        Ok(())
    }

    /// ResizePty: sets the window size of the process's terminal.
    pub async fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let containers = self.containers.lock().await;
        let container = containers
            .get(id)
            .ok_or_else(|| Error::not_found_container(id))?;
        match &container.process(exec_id)?.console {
            Some(console) => console.resize(width, height),
            None => Err(Error::FailedPrecondition(format!(
                "{id} was not created with a terminal"
            ))),
        }
    }

    /// Pause: freezes the container's cgroup; State shows PAUSED.
    pub async fn pause(&self, id: &str) -> Result<()> {
        let mut containers = self.containers.lock().await;
        let container = containers
            .get_mut(id)
            .ok_or_else(|| Error::not_found_container(id))?;
        if container.init.status() != containerd_shim::api::Status::RUNNING {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running, so it cannot be paused"
            )));
        }
        container.cgroup.freeze()?;
        container.init.set_paused()?;
        info!("pause id={id}");
        self.events.task_paused(id);
        Ok(())
    }

    /// Resume: thaws the container's cgroup.
    pub async fn resume(&self, id: &str) -> Result<()> {
        let mut containers = self.containers.lock().await;
        let container = containers
            .get_mut(id)
            .ok_or_else(|| Error::not_found_container(id))?;
        if !container.init.is_paused() {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not paused"
            )));
        }
        container.cgroup.thaw()?;
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
        let containers = self.containers.lock().await;
        let container = containers
            .get(id)
            .ok_or_else(|| Error::not_found_container(id))?;
        if container.init.is_stopped() {
            return Err(Error::FailedPrecondition(format!(
                "container {id} has exited; there is nothing to update"
            )));
        }
        container.cgroup.apply(resources)?;
        info!("update id={id}");
        Ok(())
    }

    /// Stats: the cgroup's metrics, as containerd's cgroups v1 or v2 Metrics.
    pub async fn stats(
        &self,
        id: &str,
    ) -> Result<containerd_shim::protos::protobuf::well_known_types::any::Any> {
        let containers = self.containers.lock().await;
        let container = containers
            .get(id)
            .ok_or_else(|| Error::not_found_container(id))?;
        container.cgroup.metrics()
    }

    /// The init pid of a container, for Connect.
    pub async fn init_pid(&self, id: &str) -> Option<u32> {
        let containers = self.containers.lock().await;
        containers.get(id).map(|c| c.init.pid as u32)
    }

    /// containerd asks the shim to exit; it does once no container is left.
    pub async fn shutdown(&self) {
        let containers = self.containers.lock().await;
        if containers.is_empty() {
            info!("shutdown: no containers left, exiting");
            self.exit.signal();
        } else {
            debug!(
                "shutdown: {} containers remain, staying up",
                containers.len()
            );
        }
    }

    /// Called by the exit observer for every reaped child: records the exit and publishes
    /// TaskExit. Pids that are not a container process (already deleted) are ignored.
    pub async fn on_exit(&self, pid: i32, code: i32) {
        // A terminal's output goes through the shim: let it drain before anyone hears of the
        // exit. The guest side is closed now, so the copy ends at once with what is buffered.
        let output_done = {
            let mut containers = self.containers.lock().await;
            containers
                .values_mut()
                .find(|c| c.init.pid == pid)
                .and_then(|c| c.init.take_output_done())
        };
        if let Some(done) = output_done {
            let _ = tokio::time::timeout(OUTPUT_DRAIN_LIMIT, done).await;
        }
        let mut containers = self.containers.lock().await;
        let Some(container) = containers.values_mut().find(|c| c.init.pid == pid) else {
            debug!("exit of unknown pid {pid} (status {code})");
            return;
        };
        let status = code as u32;
        // The OOM killer's kill shows in the cgroup's count; TaskOOM goes first, so that
        // CRI has it when it records the exit (reason OOMKilled).
        if status == EXIT_KILLED && container.cgroup.oom_kills() > 0 {
            info!("oom id={} pid={pid}", container.id);
            self.events.task_oom(&container.id);
        }
        if let Some(info) = container.init.set_exited(status, SystemTime::now()) {
            info!("exit id={} pid={pid} status={status}", container.id);
            self.events
                .task_exit(&container.id, "", pid as u32, status, info.at);
        }
    }
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

/// Where a new guest goes: its cgroup, with the spec's `linux.resources`.
struct Placement {
    cgroup: Cgroup,
    resources: Option<oci_spec::runtime::LinuxResources>,
}

/// Starts the guest process (blocking work, off the runtime), places it in its cgroup before
/// it runs anything, and records its pid. A failure removes the cgroup again.
async fn spawn_guest(
    plan: RunPlan,
    fds: GuestFds,
    bundle: &Path,
    placement: Placement,
) -> Result<(GuestProcess, Cgroup)> {
    let (spawned, cgroup) = tokio::task::spawn_blocking(move || {
        let Placement { cgroup, resources } = placement;
        let started = std::time::Instant::now();
        let mut placed_at = None;
        let spawned = GuestProcess::spawn(&plan, fds, |pid| {
            let placed = cgroup.place(pid, resources.as_ref());
            placed_at = Some(started.elapsed());
            placed
        });
        // Where a Create's time goes: spawn + cgroup placement, then the guest's confinement
        // until it reports ready.
        debug!(
            "spawn id={} placed in {:?}, ready after {:?}",
            plan.id,
            placed_at.unwrap_or_default(),
            started.elapsed()
        );
        (spawned, cgroup)
    })
    .await
    .map_err(|e| Error::Internal(format!("guest spawn task failed: {e}")))?;
    match spawned {
        Ok(guest) => {
            write_pid_file(bundle, guest.pid);
            Ok((guest, cgroup))
        }
        Err(e) => {
            remove_cgroup_when_empty(cgroup).await;
            Err(e)
        }
    }
}

/// Removes a cgroup whose processes are ending (killed, or exited): their exit can lag the
/// call by a moment, during which the kernel refuses to remove a cgroup that holds them.
pub async fn remove_cgroup_when_empty(cgroup: Cgroup) {
    let cgroup = Arc::new(cgroup);
    let mut last = None;
    for _ in 0..100 {
        // libcgroups retries with sleeps of its own: off the runtime's threads.
        let attempt = cgroup.clone();
        let removed = tokio::task::spawn_blocking(move || attempt.remove()).await;
        match removed {
            Ok(Ok(())) => return,
            Ok(Err(e)) => last = Some(e),
            Err(e) => last = Some(Error::Internal(format!("cgroup removal task failed: {e}"))),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if let Some(e) = last {
        warn!("{e}");
    }
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

fn write_pid_file(bundle: &Path, pid: i32) {
    if let Err(e) = std::fs::write(bundle.join(PID_FILE), pid.to_string()) {
        warn!("write {}: {e}", bundle.join(PID_FILE).display());
    }
}
