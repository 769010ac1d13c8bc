//! A minimal client of containerd's own gRPC API, for the calls `ctr` does not offer (ctr 1.6,
//! 1.7 and 2.x have no `task update`). Messages are declared here with prost's derive, field
//! numbers as in containerd's `api/services/tasks/v1/tasks.proto`, so no protoc is needed.

use std::path::{Path, PathBuf};

use prost::Message;

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `containerd.services.tasks.v1.UpdateTaskRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct UpdateTaskRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(message, optional, tag = "2")]
    pub resources: Option<Any>,
    #[prost(map = "string, string", tag = "3")]
    pub annotations: std::collections::HashMap<String, String>,
}

/// `containerd.services.tasks.v1.GetRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct GetRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(string, tag = "2")]
    pub exec_id: String,
}

/// `containerd.services.tasks.v1.GetResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct GetResponse {
    #[prost(message, optional, tag = "1")]
    pub process: Option<Process>,
}

/// `containerd.v1.types.Process` (the fields tests read).
#[derive(Clone, PartialEq, Message)]
pub struct Process {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(uint32, tag = "3")]
    pub pid: u32,
    /// containerd's `Status`: 1 created, 2 running, 3 stopped, 4 paused.
    #[prost(int32, tag = "4")]
    pub status: i32,
    #[prost(uint32, tag = "9")]
    pub exit_status: u32,
}

/// `containerd.v1.types.Status` STOPPED.
pub const STATUS_STOPPED: i32 = 3;
/// `containerd.v1.types.Status` RUNNING.
pub const STATUS_RUNNING: i32 = 2;

/// `google.protobuf.Empty`.
#[derive(Clone, PartialEq, Message)]
pub struct Empty {}

/// The type URL containerd's client gives OCI `LinuxResources` (typeurl's registration).
const LINUX_RESOURCES_TYPE: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// `Tasks.Update` of container `id` in `namespace` with new `linux.resources`, as
/// containerd's Go client (`task.Update(ctx, WithResources(...))`) sends it.
pub fn update_resources(
    socket: &Path,
    namespace: &str,
    id: &str,
    resources: &serde_json::Value,
) -> Result<(), String> {
    let request = UpdateTaskRequest {
        container_id: id.to_string(),
        resources: Some(Any {
            type_url: LINUX_RESOURCES_TYPE.to_string(),
            value: resources.to_string().into_bytes(),
        }),
        annotations: Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(unary::<_, Empty>(
        socket.to_path_buf(),
        namespace,
        "/containerd.services.tasks.v1.Tasks/Update",
        request,
    ))?;
    Ok(())
}

/// `Tasks.Get`: the task's process as containerd knows it (status, pid, exit status).
pub fn get_task(socket: &Path, namespace: &str, id: &str) -> Result<Process, String> {
    let request = GetRequest {
        container_id: id.to_string(),
        exec_id: String::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let response: GetResponse = runtime.block_on(unary(
        socket.to_path_buf(),
        namespace,
        "/containerd.services.tasks.v1.Tasks/Get",
        request,
    ))?;
    response
        .process
        .ok_or_else(|| format!("Tasks.Get of {id} has no process"))
}

/// One unary gRPC call over containerd's unix socket, in `namespace` (the shim's own client).
async fn unary<Req, Resp>(
    socket: PathBuf,
    namespace: &str,
    method: &'static str,
    request: Req,
) -> Result<Resp, String>
where
    Req: Message + Send + Sync + 'static,
    Resp: Message + Default + Send + Sync + 'static,
{
    containerd_shim_wasm::containerd::Client::connect(socket, namespace)
        .await?
        .unary(method, request)
        .await
}
