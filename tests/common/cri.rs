//! A kubelet-like client of containerd's CRI (runtime.v1) over containerd's socket, through
//! the `k8s-cri` crate: the calls kubelet makes, blocking, for the tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

/// The runtime handler (RuntimeClass) the shim is registered under.
pub const HANDLER: &str = "wasm";

pub struct Cri {
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// A pod as the tests make it: host network (no CNI here), its own pid and ipc namespaces.
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
}

impl Cri {
    pub fn connect(socket: &Path) -> Cri {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let channel = runtime
            .block_on(containerd_shim_wasm::containerd::channel(socket))
            .expect("connect to containerd's CRI");
        Cri {
            runtime,
            client: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        }
    }

    fn call<T>(
        &mut self,
        what: &str,
        call: impl AsyncFnOnce(
            &mut RuntimeServiceClient<Channel>,
        ) -> Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, String> {
        self.runtime
            .block_on(call(&mut self.client))
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("{what}: {} {}", s.code(), s.message()))
    }

    /// RunPodSandbox with the `wasm` handler: a host-network pod named `name`, logging into
    /// `log_directory`.
    pub fn run_pod(&mut self, name: &str, log_directory: &Path) -> Result<Pod, String> {
        self.run_pod_with(name, log_directory, HANDLER)
    }

    /// RunPodSandbox with the runtime handler `handler`.
    pub fn run_pod_with(
        &mut self,
        name: &str,
        log_directory: &Path,
        handler: &str,
    ) -> Result<Pod, String> {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid: format!("uid-{name}"),
                namespace: "default".to_string(),
                attempt: 0,
            }),
            // kubelet sets no hostname for a host-network pod (it has no uts namespace).
            log_directory: log_directory.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Pod as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_string(),
        };
        let response = self.call("RunPodSandbox", async |c| c.run_pod_sandbox(request).await)?;
        Ok(Pod {
            id: response.pod_sandbox_id,
            config,
        })
    }

    /// CreateContainer `name` (attempt `attempt`) of `image` with `args` (the image's
    /// entrypoint stays), its log at `<log_directory>/<name>_<attempt>.log`.
    pub fn create_container(
        &mut self,
        pod: &Pod,
        name: &str,
        attempt: u32,
        image: &str,
        args: &[&str],
    ) -> Result<String, String> {
        self.create_container_with(pod, container_config(name, attempt, image, args))
    }

    /// CreateContainer with a config of the caller's (resources, command, ...).
    pub fn create_container_with(
        &mut self,
        pod: &Pod,
        config: ContainerConfig,
    ) -> Result<String, String> {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        self.call("CreateContainer", async |c| {
            c.create_container(request).await
        })
        .map(|r| r.container_id)
    }

    pub fn start_container(&mut self, id: &str) -> Result<(), String> {
        let request = StartContainerRequest {
            container_id: id.to_string(),
        };
        self.call("StartContainer", async |c| c.start_container(request).await)
            .map(drop)
    }

    pub fn container_status(&mut self, id: &str) -> Result<ContainerStatus, String> {
        let request = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        self.call("ContainerStatus", async |c| {
            c.container_status(request).await
        })?
        .status
        .ok_or_else(|| format!("no status for {id}"))
    }

    /// Polls ContainerStatus until the container has exited (or `timeout`).
    pub fn wait_exited(&mut self, id: &str, timeout: Duration) -> ContainerStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let status = self.container_status(id).unwrap();
            if status.state == ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id} did not exit within {timeout:?}: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop_container(&mut self, id: &str, timeout_seconds: i64) -> Result<(), String> {
        let request = StopContainerRequest {
            container_id: id.to_string(),
            timeout: timeout_seconds,
        };
        self.call("StopContainer", async |c| c.stop_container(request).await)
            .map(drop)
    }

    pub fn remove_container(&mut self, id: &str) -> Result<(), String> {
        let request = RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.call("RemoveContainer", async |c| {
            c.remove_container(request).await
        })
        .map(drop)
    }

    /// ExecSync of `cmd` in the container: (exit code, stdout, stderr).
    pub fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout_seconds: i64,
    ) -> Result<(i32, String, String), String> {
        let request = ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|a| a.to_string()).collect(),
            timeout: timeout_seconds,
        };
        self.call("ExecSync", async |c| c.exec_sync(request).await)
            .map(|r| {
                (
                    r.exit_code,
                    String::from_utf8_lossy(&r.stdout).into_owned(),
                    String::from_utf8_lossy(&r.stderr).into_owned(),
                )
            })
    }

    pub fn container_stats(&mut self, id: &str) -> Result<ContainerStats, String> {
        let request = ContainerStatsRequest {
            container_id: id.to_string(),
        };
        self.call("ContainerStats", async |c| c.container_stats(request).await)?
            .stats
            .ok_or_else(|| format!("no stats for {id}"))
    }

    pub fn list_container_stats(&mut self) -> Result<Vec<ContainerStats>, String> {
        let request = ListContainerStatsRequest::default();
        self.call("ListContainerStats", async |c| {
            c.list_container_stats(request).await
        })
        .map(|r| r.stats)
    }

    pub fn stop_pod(&mut self, pod: &Pod) -> Result<(), String> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        };
        self.call("StopPodSandbox", async |c| {
            c.stop_pod_sandbox(request).await
        })
        .map(drop)
    }

    pub fn remove_pod(&mut self, pod: &Pod) -> Result<(), String> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        };
        self.call("RemovePodSandbox", async |c| {
            c.remove_pod_sandbox(request).await
        })
        .map(drop)
    }

    /// The pod sandbox's state and (verbose) info as containerd reports it.
    pub fn pod_status(&mut self, pod: &Pod) -> Result<PodSandboxStatusResponse, String> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: true,
        };
        self.call("PodSandboxStatus", async |c| {
            c.pod_sandbox_status(request).await
        })
    }

    /// What containerd's CRI says of a container in its verbose status (`info`): its pid,
    /// its runtime, its spec.
    pub fn container_info(&mut self, id: &str) -> Result<serde_json::Value, String> {
        let request = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        };
        let response = self.call("ContainerStatus", async |c| {
            c.container_status(request).await
        })?;
        verbose_info(&response.info)
    }

    /// The same for a pod sandbox (its pause process's pid among it).
    pub fn pod_info(&mut self, pod: &Pod) -> Result<serde_json::Value, String> {
        let response = self.pod_status(pod)?;
        verbose_info(&response.info)
    }

    /// PullImage, as kubelet pulls a pod's image: the image reference CRI resolved.
    /// PullImage of an image with wasm layers (a wasm OCI artifact): its image id where
    /// containerd pulls such images (1.6.25+, 1.7.7+, 2.x); `None` where it cannot, once
    /// containerd's refusal is asserted (it counts every layer as a rootfs layer).
    pub fn pull_wasm_artifact(&mut self, image: &str) -> Option<String> {
        let pulled = self.pull_image(image);
        if super::containerd().unpacks_wasm_artifacts() {
            return Some(pulled.unwrap_or_else(|e| panic!("pull {image}: {e}")));
        }
        let refused = pulled.unwrap_err();
        assert!(
            refused.contains("mismatched image rootfs and manifest layers"),
            "{refused}"
        );
        None
    }

    pub fn pull_image(&mut self, image: &str) -> Result<String, String> {
        let request = PullImageRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.runtime
            .block_on(self.images.pull_image(request))
            .map(|r| r.into_inner().image_ref)
            .map_err(|e| e.to_string())
    }

    /// ImageStatus: whether CRI sees `image`.
    pub fn has_image(&mut self, image: &str) -> bool {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        self.runtime
            .block_on(self.images.image_status(request))
            .is_ok_and(|r| r.into_inner().image.is_some())
    }
}

fn verbose_info(
    info: &std::collections::HashMap<String, String>,
) -> Result<serde_json::Value, String> {
    let text = info
        .get("info")
        .ok_or_else(|| format!("no verbose info: {info:?}"))?;
    serde_json::from_str(text).map_err(|e| format!("verbose info: {e}"))
}

/// A container `name` (attempt `attempt`) of `image` with `args`, logging to its CRI log file.
pub fn container_config(name: &str, attempt: u32, image: &str, args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt,
        }),
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        args: args.iter().map(|a| a.to_string()).collect(),
        log_path: log_file(name, attempt),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// The log file CRI writes for container `name`'s attempt, relative to the pod's directory.
pub fn log_file(name: &str, attempt: u32) -> String {
    format!("{name}_{attempt}.log")
}

/// The lines of a CRI log file (`<RFC3339Nano> stdout|stderr F|P <text>`): (stream, text).
pub fn log_lines(path: &PathBuf) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (_time, stream, _tag) = (parts.next()?, parts.next()?, parts.next()?);
            Some((stream.to_string(), parts.next().unwrap_or("").to_string()))
        })
        .collect()
}
