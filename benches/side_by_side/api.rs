//! containerd's own gRPC API, driven as a kubelet's CRI plugin drives it: for each run one
//! container record, its snapshot, its task created, started, waited for and deleted, then the
//! record and the snapshot removed, all over one connection the bench keeps open. `ctr run --rm`
//! does the same calls, but from a new ctr process each time, whose start and image handling
//! (about 20 ms here, alike for every runtime) are not the runtime's.
//!
//! The container record of each (runtime, image, argv) is `ctr containers create`'s own, read
//! back once before any timing, so both clients run exactly the same spec; each run gets its
//! own id, snapshot and cgroup (`linux.cgroupsPath` is `/<namespace>/<id>`, as ctr makes it).
//! Messages are declared with prost's derive, field numbers as in containerd's
//! `api/services/{containers,snapshots,tasks}/v1/*.proto` (the same in 1.6, 1.7 and 2.x).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use containerd_shim_wasm::containerd::Client;
use prost::Message;

use crate::ctr::{new_id, Ctr, Runtime, Workload, NAMESPACE};
use crate::Config;

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `containerd.services.containers.v1.Container.Runtime`.
#[derive(Clone, PartialEq, Message)]
struct ContainerRuntime {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    options: Option<Any>,
}

/// `containerd.services.containers.v1.Container` (the fields a create needs; timestamps and
/// extensions are containerd's to set).
#[derive(Clone, PartialEq, Message)]
struct Container {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(map = "string, string", tag = "2")]
    labels: HashMap<String, String>,
    #[prost(string, tag = "3")]
    image: String,
    #[prost(message, optional, tag = "4")]
    runtime: Option<ContainerRuntime>,
    #[prost(message, optional, tag = "5")]
    spec: Option<Any>,
    #[prost(string, tag = "6")]
    snapshotter: String,
    #[prost(string, tag = "7")]
    snapshot_key: String,
}

/// `GetContainerRequest`, `DeleteContainerRequest`.
#[derive(Clone, PartialEq, Message)]
struct ContainerId {
    #[prost(string, tag = "1")]
    id: String,
}

/// `GetContainerResponse`, `CreateContainerRequest`, `CreateContainerResponse`.
#[derive(Clone, PartialEq, Message)]
struct ContainerMessage {
    #[prost(message, optional, tag = "1")]
    container: Option<Container>,
}

/// `containerd.types.Mount`.
#[derive(Clone, PartialEq, Message)]
struct Mount {
    #[prost(string, tag = "1")]
    r#type: String,
    #[prost(string, tag = "2")]
    source: String,
    #[prost(string, tag = "3")]
    target: String,
    #[prost(string, repeated, tag = "4")]
    options: Vec<String>,
}

/// `PrepareSnapshotRequest` (no labels), `StatSnapshotRequest` and `RemoveSnapshotRequest`
/// (no parent): snapshotter = 1, key = 2, parent = 3.
#[derive(Clone, PartialEq, Message)]
struct SnapshotRequest {
    #[prost(string, tag = "1")]
    snapshotter: String,
    #[prost(string, tag = "2")]
    key: String,
    #[prost(string, tag = "3")]
    parent: String,
}

/// `PrepareSnapshotResponse`.
#[derive(Clone, PartialEq, Message)]
struct Mounts {
    #[prost(message, repeated, tag = "1")]
    mounts: Vec<Mount>,
}

/// `StatSnapshotResponse` and its `Info` (name = 1, parent = 2).
#[derive(Clone, PartialEq, Message)]
struct SnapshotStat {
    #[prost(message, optional, tag = "1")]
    info: Option<SnapshotInfo>,
}

#[derive(Clone, PartialEq, Message)]
struct SnapshotInfo {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    parent: String,
}

/// `containerd.services.tasks.v1.CreateTaskRequest` (no checkpoint, options or runtime path).
#[derive(Clone, PartialEq, Message)]
struct CreateTaskRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(message, repeated, tag = "3")]
    rootfs: Vec<Mount>,
    #[prost(string, tag = "4")]
    stdin: String,
    #[prost(string, tag = "5")]
    stdout: String,
    #[prost(string, tag = "6")]
    stderr: String,
    #[prost(bool, tag = "7")]
    terminal: bool,
}

/// `StartRequest`, `WaitRequest`, `DeleteTaskRequest` (container_id = 1, exec_id = 2), and
/// `KillRequest` (signal = 3, all = 4).
#[derive(Clone, PartialEq, Message)]
struct TaskRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(string, tag = "2")]
    exec_id: String,
    #[prost(uint32, tag = "3")]
    signal: u32,
    #[prost(bool, tag = "4")]
    all: bool,
}

/// `WaitResponse` (exit_status = 1).
#[derive(Clone, PartialEq, Message)]
struct WaitResponse {
    #[prost(uint32, tag = "1")]
    exit_status: u32,
}

/// Any answer the bench does not read (its fields are skipped).
#[derive(Clone, PartialEq, Message)]
struct Ignored {}

/// The full gRPC paths of the methods the bench calls.
macro_rules! containers {
    ($method:literal) => {
        concat!("/containerd.services.containers.v1.Containers/", $method)
    };
}
macro_rules! snapshots {
    ($method:literal) => {
        concat!("/containerd.services.snapshots.v1.Snapshots/", $method)
    };
}
macro_rules! tasks {
    ($method:literal) => {
        concat!("/containerd.services.tasks.v1.Tasks/", $method)
    };
}

/// One container record to copy: ctr's, for one runtime, image and argv.
struct Template {
    container: Container,
    /// The image's snapshot (its chain id), the parent of each run's own.
    parent: String,
}

type TemplateKey = (&'static str, String, Vec<String>);

/// A connection to containerd's gRPC API and the records runs are made from.
pub struct Api<'a> {
    config: &'a Config,
    runtime: tokio::runtime::Runtime,
    client: Client,
    templates: Mutex<HashMap<TemplateKey, Arc<Template>>>,
}

impl<'a> Api<'a> {
    pub fn connect(config: &'a Config) -> Result<Api<'a>, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("start a tokio runtime: {e}"))?;
        let client = runtime.block_on(Client::connect(&config.socket, NAMESPACE))?;
        Ok(Api {
            config,
            runtime,
            client,
            templates: Mutex::new(HashMap::new()),
        })
    }

    /// A container of `work` under `runtime`, run to its exit and removed, as `ctr run --rm`
    /// does; its wall time (from the container's creation to its snapshot's removal), and its
    /// stdout if it exited 0 with the output expected.
    pub fn run_rm(
        &self,
        runtime: Runtime,
        work: &Workload,
        timeout_secs: u32,
    ) -> (Duration, Result<String, String>) {
        let template = match self.template(runtime, work) {
            Ok(t) => t,
            Err(e) => return (Duration::ZERO, Err(e)),
        };
        let id = new_id();
        let io_dir = self.config.work.join("io").join(&id);
        let started = Instant::now();
        let ran = self.runtime.block_on(async {
            let run = self.run(&template, &id, &io_dir);
            match tokio::time::timeout(Duration::from_secs(timeout_secs.into()), run).await {
                Ok(ran) => ran,
                Err(_) => Err(format!("no exit within {timeout_secs} s")),
            }
        });
        let elapsed = started.elapsed();
        if ran.is_err() {
            self.runtime.block_on(self.remove(&template, &id));
        }
        let _ = std::fs::remove_dir_all(&io_dir);
        let checked = ran.and_then(|(status, stdout)| match (status, &work.expect) {
            (0, Some(want)) if &stdout != want => {
                Err(format!("stdout {stdout:?}, expected {want:?}"))
            }
            (0, _) => Ok(stdout),
            (status, _) => Err(format!("exit status {status}, stdout {stdout:?}")),
        });
        (elapsed, checked)
    }

    /// Create, start, wait, delete: the exit status and what the task wrote on stdout.
    async fn run(&self, t: &Template, id: &str, io_dir: &Path) -> Result<(u32, String), String> {
        let mut container = t.container.clone();
        container.id = id.to_string();
        container.snapshot_key = id.to_string();
        container.spec = Some(with_cgroups_path(container.spec.as_ref(), id)?);
        let snapshotter = container.snapshotter.clone();
        let _: Ignored = self
            .client
            .unary(
                containers!("Create"),
                ContainerMessage {
                    container: Some(container),
                },
            )
            .await?;
        let prepare = SnapshotRequest {
            snapshotter,
            key: id.to_string(),
            parent: t.parent.clone(),
        };
        let rootfs: Mounts = self.client.unary(snapshots!("Prepare"), prepare).await?;
        // Both, as ctr and CRI give them: runc's shim refuses a stdout without a stderr.
        let (stdout, stderr) = (
            Output::open(io_dir, "stdout")?,
            Output::open(io_dir, "stderr")?,
        );
        let create = CreateTaskRequest {
            container_id: id.to_string(),
            rootfs: rootfs.mounts,
            stdout: stdout.path.clone(),
            stderr: stderr.path.clone(),
            ..Default::default()
        };
        let _: Ignored = self.client.unary(tasks!("Create"), create).await?;
        let (reading, _stderr) = (stdout.read_to_end(), stderr.read_to_end());
        let _: Ignored = self.client.unary(tasks!("Start"), task(id)).await?;
        let waited: WaitResponse = self.client.unary(tasks!("Wait"), task(id)).await?;
        let _: Ignored = self.client.unary(tasks!("Delete"), task(id)).await?;
        let output = reading
            .join()
            .map_err(|_| "the stdout reader panicked".to_string())??;
        self.remove_record(&t.container.snapshotter, id).await?;
        Ok((waited.exit_status, output))
    }

    /// What a failed run left: its task (killed first), record and snapshot.
    async fn remove(&self, t: &Template, id: &str) {
        let kill = TaskRequest {
            signal: libc::SIGKILL as u32,
            all: true,
            ..task(id)
        };
        let _: Result<Ignored, _> = self.client.unary(tasks!("Kill"), kill).await;
        let _: Result<WaitResponse, _> = self.client.unary(tasks!("Wait"), task(id)).await;
        let _: Result<Ignored, _> = self.client.unary(tasks!("Delete"), task(id)).await;
        let _ = self.remove_record(&t.container.snapshotter, id).await;
    }

    async fn remove_record(&self, snapshotter: &str, id: &str) -> Result<(), String> {
        let record = ContainerId { id: id.to_string() };
        let _: Ignored = self.client.unary(containers!("Delete"), record).await?;
        let snapshot = SnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: id.to_string(),
            parent: String::new(),
        };
        // The record's deletion may have let containerd's garbage collector take the
        // snapshot first; gone is what was asked (ctr's snapshot clean-up takes it so too).
        match self
            .client
            .unary::<_, Ignored>(snapshots!("Remove"), snapshot)
            .await
        {
            Err(e) if !e.contains(": NotFound:") => Err(e),
            _ => Ok(()),
        }
    }

    /// ctr's record for (runtime, image, argv), made once with `ctr containers create` and
    /// read back, its container then removed; and its snapshot's parent.
    fn template(&self, runtime: Runtime, work: &Workload) -> Result<Arc<Template>, String> {
        let key = (runtime.name(), work.image.clone(), work.args.clone());
        let mut templates = self.templates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = templates.get(&key) {
            return Ok(t.clone());
        }
        let id = new_id();
        let mut args = vec![
            "containers",
            "create",
            "--runtime",
            runtime.name(),
            &work.image,
            &id,
            // Unlike `ctr run`, `containers create` would take an argv's `-c` for its own.
            "--",
        ];
        args.extend(work.args.iter().map(String::as_str));
        let ctr = Ctr {
            config: self.config,
        };
        ctr.ok(&args)?;
        let read = self.runtime.block_on(self.read_template(&id));
        let _ = ctr.ok(&["containers", "delete", &id]);
        let template = Arc::new(read?);
        templates.insert(key, template.clone());
        Ok(template)
    }

    async fn read_template(&self, id: &str) -> Result<Template, String> {
        let got: ContainerMessage = self
            .client
            .unary(containers!("Get"), ContainerId { id: id.to_string() })
            .await?;
        let container = got
            .container
            .ok_or_else(|| format!("containerd has no container {id}"))?;
        let stat = SnapshotRequest {
            snapshotter: container.snapshotter.clone(),
            key: container.snapshot_key.clone(),
            parent: String::new(),
        };
        let stat: SnapshotStat = self.client.unary(snapshots!("Stat"), stat).await?;
        let parent = stat
            .info
            .map(|i| i.parent)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("container {id}'s snapshot has no parent"))?;
        Ok(Template { container, parent })
    }
}

fn task(id: &str) -> TaskRequest {
    TaskRequest {
        container_id: id.to_string(),
        ..Default::default()
    }
}

/// The spec (JSON in an Any, as containerd stores it) with this run's own cgroup.
fn with_cgroups_path(spec: Option<&Any>, id: &str) -> Result<Any, String> {
    let spec = spec.ok_or("the template container has no spec")?;
    let mut json: serde_json::Value =
        serde_json::from_slice(&spec.value).map_err(|e| format!("the template's spec: {e}"))?;
    json["linux"]["cgroupsPath"] = format!("/{NAMESPACE}/{id}").into();
    Ok(Any {
        type_url: spec.type_url.clone(),
        value: serde_json::to_vec(&json).map_err(|e| e.to_string())?,
    })
}

/// One of the task's output FIFOs, read as a client reads it: opened before the task is created, read
/// to EOF (every writer closed) on a thread of its own.
struct Output {
    path: String,
    reader: File,
    /// Our own write end, so reading cannot see EOF before the shim has opened its end; it
    /// goes once the task is created (the shim opens its end in Create).
    keep_open: File,
}

impl Output {
    fn open(dir: &Path, name: &str) -> Result<Output, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let path = dir.join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| format!("mkfifo {}: {e}", path.display()))?;
        // O_RDWR on a FIFO opens at once (it is its own writer), then the read end does too.
        let keep_open = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        let reader = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        Ok(Output {
            path: path.to_string_lossy().into_owned(),
            reader,
            keep_open,
        })
    }

    fn read_to_end(self) -> std::thread::JoinHandle<Result<String, String>> {
        let Output {
            mut reader,
            keep_open,
            ..
        } = self;
        drop(keep_open);
        std::thread::spawn(move || {
            let mut out = String::new();
            reader
                .read_to_string(&mut out)
                .map_err(|e| format!("read the task's stdout: {e}"))?;
            Ok(out)
        })
    }
}
