//! The shim under test for shim-level tests: the real `containerd-shim-wasm-v1` binary,
//! started as containerd starts its server, driven over its real ttrpc socket, with bundles,
//! FIFOs and an events listener made here. Included by `tests/shim.rs` and `tests/faults.rs`.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::api::{
    CreateTaskRequest, DeleteRequest, Empty, KillRequest, ShutdownRequest, StartRequest,
    StateRequest, Status, WaitRequest, WaitResponse,
};
use containerd_shim::protos::api::ForwardRequest;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::shim_async::{create_events, Events, TaskClient};
use containerd_shim::protos::ttrpc::asynchronous::transport::Listener;
use containerd_shim::protos::ttrpc::asynchronous::{Client, Server};
use containerd_shim::protos::ttrpc::{self, context, Code};
use containerd_shim::TtrpcContext;

pub const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-wasm-v1");

/// Records the topic of every event the shim publishes, in order.
#[derive(Default, Clone)]
pub struct EventLog(pub Arc<Mutex<Vec<String>>>);

#[async_trait]
impl Events for EventLog {
    async fn forward(&self, _ctx: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        self.0
            .lock()
            .unwrap()
            .push(req.envelope().topic().to_string());
        Ok(Empty::default())
    }
}

/// One shim server process with its bundle directory, events listener and client.
pub struct ShimUnderTest {
    pub dir: tempfile::TempDir,
    pub shim: Child,
    pub client: TaskClient,
    pub events: EventLog,
    _events_server: Server,
    pub log: Arc<Mutex<String>>,
    bundle_logs: Mutex<Vec<(String, Arc<Mutex<String>>)>>,
}

impl ShimUnderTest {
    pub async fn start() -> ShimUnderTest {
        let dir = tempfile::tempdir().unwrap();
        let events = EventLog::default();
        let events_path = dir.path().join("events.sock");
        let listener = Listener::try_from(UnixListener::bind(&events_path).unwrap()).unwrap();
        let mut events_server = Server::new()
            .add_listener(listener)
            .register_service(create_events(Arc::new(events.clone())));
        events_server.start().await.unwrap();

        // The shim server logs to the `log` FIFO in its working directory, as under containerd.
        let log_fifo = dir.path().join("log");
        mkfifo(&log_fifo);
        let log = collect_fifo(log_fifo);

        let socket = dir.path().join("shim.sock");
        let shim = Command::new(SHIM)
            .args([
                "-namespace",
                "shimtest",
                "-id",
                "shimtest",
                "-address",
                "/dev/null",
            ])
            .arg("-socket")
            .arg(format!("unix://{}", socket.display()))
            .current_dir(dir.path())
            .env("TTRPC_ADDRESS", &events_path)
            .env("CONTAINERD_SHIM_WASM_CACHE_DIR", dir.path().join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let client = connect(&socket).await;
        ShimUnderTest {
            dir,
            shim,
            client: TaskClient::new(client),
            events,
            _events_server: events_server,
            log,
            bundle_logs: Mutex::new(Vec::new()),
        }
    }

    /// A bundle whose rootfs holds `module` at /app.wasm, run with `args`. Like containerd's,
    /// it has a `log` FIFO, read into `bundle_log(id)`.
    pub fn bundle(&self, id: &str, module: &[u8], args: &[&str]) -> PathBuf {
        self.bundle_with(id, module, args, |_| {})
    }

    /// [`Self::bundle`] with `edit` applied to its config.json.
    pub fn bundle_with(
        &self,
        id: &str,
        module: &[u8],
        args: &[&str],
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> PathBuf {
        let bundle = self.dir.path().join(id);
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        mkfifo(&bundle.join("log"));
        let log = collect_fifo(bundle.join("log"));
        self.bundle_logs.lock().unwrap().push((id.to_string(), log));
        std::fs::write(bundle.join("rootfs/app.wasm"), module).unwrap();
        std::fs::write(bundle.join("rootfs/native"), b"\x7fELF\x02\x01\x01").unwrap();
        let mut spec: serde_json::Value = serde_json::from_str(SPEC).unwrap();
        spec["process"]["args"] = serde_json::json!(args);
        edit(&mut spec);
        std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
        bundle
    }

    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdout: &Path,
        stderr: &Path,
    ) -> ttrpc::Result<u32> {
        self.create_with(create_request(id, bundle, stdout, stderr))
            .await
    }

    pub async fn create_with(&self, req: CreateTaskRequest) -> ttrpc::Result<u32> {
        self.client.create(ctx(), &req).await.map(|r| r.pid)
    }

    pub async fn start_task(&self, id: &str) -> ttrpc::Result<u32> {
        let req = StartRequest {
            id: id.into(),
            ..Default::default()
        };
        self.client.start(ctx(), &req).await.map(|r| r.pid)
    }

    pub async fn wait(&self, id: &str) -> WaitResponse {
        let req = WaitRequest {
            id: id.into(),
            ..Default::default()
        };
        tokio::time::timeout(Duration::from_secs(60), self.client.wait(ctx(), &req))
            .await
            .expect("wait timed out")
            .unwrap()
    }

    pub async fn kill(&self, id: &str, signal: u32) -> ttrpc::Result<Empty> {
        let req = KillRequest {
            id: id.into(),
            signal,
            ..Default::default()
        };
        self.client.kill(ctx(), &req).await
    }

    pub async fn delete(&self, id: &str) -> ttrpc::Result<containerd_shim::api::DeleteResponse> {
        let req = DeleteRequest {
            id: id.into(),
            ..Default::default()
        };
        self.client.delete(ctx(), &req).await
    }

    pub async fn status(&self, id: &str) -> Status {
        let req = StateRequest {
            id: id.into(),
            ..Default::default()
        };
        self.client
            .state(ctx(), &req)
            .await
            .unwrap()
            .status
            .enum_value()
            .unwrap()
    }

    /// What was logged to a container's bundle `log` FIFO (its guest process logs there).
    pub fn bundle_log(&self, id: &str) -> String {
        let logs = self.bundle_logs.lock().unwrap();
        let (_, log) = logs
            .iter()
            .find(|(i, _)| i == id)
            .expect("bundle made by this test");
        let text = log.lock().unwrap().clone();
        text
    }

    pub fn events(&self) -> Vec<String> {
        self.events.0.lock().unwrap().clone()
    }

    /// The events once `done` holds for them (events reach the listener after the RPC that
    /// caused them has answered); panics after 10 s with what arrived.
    pub async fn events_when(&self, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the events never came: {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs `module` as `/app.wasm` from create to delete: its exit status, stdout, stderr.
    pub async fn run_to_exit(&self, id: &str, module: &[u8]) -> (u32, String, String) {
        let bundle = self.bundle(id, module, &["/app.wasm"]);
        let (out, err) = self.outputs(id);
        self.create(id, &bundle, &out.path, &err.path)
            .await
            .unwrap();
        self.start_task(id).await.unwrap();
        let status = self.wait(id).await.exit_status;
        let (out, err) = (out.finish(), err.finish());
        self.delete(id).await.unwrap();
        (status, out, err)
    }

    /// Two output FIFOs with readers collecting what the guest writes.
    pub fn outputs(&self, id: &str) -> (Output, Output) {
        (
            Output::new(&self.dir.path().join(format!("{id}-out"))),
            Output::new(&self.dir.path().join(format!("{id}-err"))),
        )
    }

    pub async fn stop(mut self) {
        let _ = self
            .client
            .shutdown(ctx(), &ShutdownRequest::default())
            .await;
        for _ in 0..50 {
            if self.shim.try_wait().unwrap().is_some() {
                self.assert_no_mounts_left();
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the shim did not exit after Shutdown with no containers left");
    }

    /// Nothing of the test's bundles stays mounted in the host's mount table: no rootfs, and
    /// none of the kernel filesystems a container mounts inside its own namespace.
    fn assert_no_mounts_left(&self) {
        let dir = self.dir.path().to_str().unwrap();
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let left: Vec<&str> = table
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(dir))
            .collect();
        assert!(left.is_empty(), "mounts left on the host: {left:?}");
    }
}

impl Drop for ShimUnderTest {
    /// A failed test must not leave its shim behind (it ignores SIGTERM, as under containerd),
    /// nor the guests of its containers: without containerd no `delete` would end them.
    fn drop(&mut self) {
        if self.shim.try_wait().ok().flatten().is_none() {
            for guest in children_of(self.shim.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(guest as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.shim.kill();
            let _ = self.shim.wait();
        }
    }
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .is_some_and(|ppid| ppid == pid.to_string())
        })
        .collect()
}

/// The shape of what `ctr run` hands a shim (see shared/fixtures/oci-spec/ctr-run.json):
/// kernel filesystems, a tmpfs /dev, a PATH, ctr's namespaces (without its mount namespace
/// runc would mount a native entrypoint's /proc, /dev and /sys on the host's mount table, and
/// leave them there when its create fails); args are filled in per test.
pub const SPEC: &str = r#"{"ociVersion":"1.0.2-dev",
 "process":{"user":{"uid":0,"gid":0},"args":[],"env":["PATH=/usr/local/bin:/usr/bin:/bin"],"cwd":"/"},
 "root":{"path":"rootfs"},
 "linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"},{"type":"network"}]},
 "mounts":[{"destination":"/proc","type":"proc","source":"proc","options":["nosuid","noexec","nodev"]},
  {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]},
  {"destination":"/dev/pts","type":"devpts","source":"devpts","options":["nosuid","noexec"]},
  {"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","noexec","nodev","ro"]},
  {"destination":"/run","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]}]}"#;

pub struct Output {
    pub path: PathBuf,
    text: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Output {
    pub fn new(path: &Path) -> Output {
        mkfifo(path);
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        let fifo = path.to_path_buf();
        let reader = std::thread::spawn(move || {
            let mut file = std::fs::File::open(fifo).unwrap();
            let mut buf = String::new();
            let _ = file.read_to_string(&mut buf);
            sink.lock().unwrap().push_str(&buf);
        });
        // No wait for the reader to open: the shim's Create waits for it, as it must for ctr,
        // whose reader opens the FIFO concurrently.
        Output {
            path: path.to_path_buf(),
            text,
            reader: Some(reader),
        }
    }

    /// Everything written, once every writer has closed (the guest has exited).
    pub fn finish(mut self) -> String {
        self.reader.take().unwrap().join().unwrap();
        let text = self.text.lock().unwrap().clone();
        text
    }
}

/// A Create request as containerd sends it for a bundle with output FIFOs.
pub fn create_request(id: &str, bundle: &Path, stdout: &Path, stderr: &Path) -> CreateTaskRequest {
    CreateTaskRequest {
        id: id.into(),
        bundle: bundle.display().to_string(),
        stdout: stdout.display().to_string(),
        stderr: stderr.display().to_string(),
        ..Default::default()
    }
}

/// The runtime's options table as containerd's CRI sends it: `runtimeoptions.v1.Options`
/// with the table as TOML in `config_body` (field 3).
pub fn runtime_options(toml: &str) -> MessageField<Any> {
    let mut value = Vec::new();
    {
        let mut out = containerd_shim::protos::protobuf::CodedOutputStream::vec(&mut value);
        out.write_bytes(3, toml.as_bytes()).unwrap();
        out.flush().unwrap();
    }
    MessageField::some(Any {
        type_url: "runtimeoptions.v1.Options".into(),
        value,
        ..Default::default()
    })
}

/// Waits (up to 30 s) until process `pid` has used `ticks` of CPU: it is at work.
pub async fn wait_for_cpu(pid: u32, ticks: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while crate::procfs::cpu_ticks(pid as i32) < ticks {
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} never used {ticks} ticks of CPU"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

pub fn collect_fifo(path: PathBuf) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = file.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

pub async fn connect(socket: &Path) -> Client {
    for _ in 0..100 {
        if socket.exists() {
            if let Ok(client) = Client::connect(&format!("unix://{}", socket.display())).await {
                return client;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the shim server never listened on {}", socket.display());
}

pub fn ctx() -> context::Context {
    context::with_timeout(30_000_000_000)
}

pub fn code(err: ttrpc::Error) -> (Code, String) {
    match err {
        ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected an RPC status, got {other:?}"),
    }
}
