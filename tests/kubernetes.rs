//! The user-facing Kubernetes files, kept true: the manifests in `config/kubernetes/` and the
//! kind cluster in `kind/` are parsed, and the pods they describe are run through containerd's
//! CRI as kubelet would run them (runtime handler from the RuntimeClass, image, args, resource
//! limits, probes, grace period), on the containerd `make test` starts with the shipped
//! snippet. kind itself cannot run here (no image can be pulled); its configuration is checked
//! against the snippet and the shim's binary name.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::cri::{container_config, log_file, log_lines, Cri, Pod};
use common::{build_image, containerd, guests_dir};
use k8s_cri::v1::{ContainerState, LinuxContainerResources};
use serde_yaml::Value;

const K8S: &str = "k8s.io";
const PAUSE: &str = "registry.k8s.io/pause:3.6";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn work_dir() -> &'static Path {
    common::work_dir()
}

/// The images the manifests name, built from the test guests as `make kind-demo` builds
/// them, and the pause image.
fn images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        build_image(
            K8S,
            work_dir(),
            PAUSE,
            &guests_dir().join("pause"),
            &["--native", "--entrypoint", "/pause"],
        );
        build_image(
            K8S,
            work_dir(),
            "docker.io/library/hello-wasm:latest",
            &guests_dir().join("hello.wasm"),
            &[],
        );
        build_image(
            K8S,
            work_dir(),
            "docker.io/library/probe-wasm:latest",
            &guests_dir().join("probe.wasm"),
            &["--entrypoint", "/probe.wasm"],
        );
    });
}

/// The handler kubelet gives CRI for a pod with `runtimeClassName`: the RuntimeClass's.
fn handler_of(runtime_class_name: &str) -> String {
    let class = yaml("config/kubernetes/runtimeclass.yaml");
    assert_eq!(class["kind"], "RuntimeClass");
    assert_eq!(class["metadata"]["name"], runtime_class_name);
    class["handler"].as_str().unwrap().to_string()
}

/// A quantity as kubelet reads it: `64Mi` in bytes, `250m` in millicores.
fn bytes(quantity: &str) -> i64 {
    let (number, unit) = quantity.split_at(quantity.trim_end_matches(char::is_alphabetic).len());
    let scale = match unit {
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "" => 1,
        other => panic!("unit {other}"),
    };
    number.parse::<i64>().unwrap() * scale
}

fn millicores(quantity: &str) -> i64 {
    match quantity.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => quantity.parse::<i64>().unwrap() * 1000,
    }
}

/// kubelet's translation of a container's resources to CRI (the cgroupfs arithmetic of
/// pkg/kubelet/kuberuntime: shares from requests, CFS quota from limits over a 100 ms period).
fn resources(container: &Value) -> LinuxContainerResources {
    let r = &container["resources"];
    let period = 100_000;
    LinuxContainerResources {
        cpu_period: period,
        cpu_quota: r["limits"]["cpu"]
            .as_str()
            .map_or(0, |q| millicores(q) * period / 1000),
        cpu_shares: r["requests"]["cpu"]
            .as_str()
            .map_or(2, |q| (millicores(q) * 1024 / 1000).max(2)),
        memory_limit_in_bytes: r["limits"]["memory"].as_str().map_or(0, bytes),
        ..Default::default()
    }
}

/// The pod of a manifest's pod template, through CRI: its sandbox and its one container,
/// created (not started), as kubelet makes them.
fn pod_of(cri: &mut Cri, template: &Value, name: &str) -> (Pod, String, PathBuf) {
    let spec = &template["spec"];
    let handler = handler_of(spec["runtimeClassName"].as_str().unwrap());
    let logs = work_dir().join(format!("logs-{name}"));
    std::fs::create_dir_all(&logs).unwrap();
    let pod = cri.run_pod_with(name, &logs, &handler).unwrap();
    let container = &spec["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_default();
    let container_name = container["name"].as_str().unwrap();
    let mut config = container_config(
        container_name,
        0,
        container["image"].as_str().unwrap(),
        &args,
    );
    // kubelet passes `command` and `args` apart; the runtime's spec joins them.
    config.command = container["command"]
        .as_sequence()
        .map(|c| c.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    config.linux.as_mut().unwrap().resources = Some(resources(container));
    let id = cri.create_container_with(&pod, config).unwrap();
    (pod, id, logs)
}

/// Runs the pod of a Job's `template` (its one container named `hello`) to its end: exit 0,
/// Completed, and "hello from wasm" in its log. Returns the pod and the container's id.
fn run_job_to_completion(cri: &mut Cri, template: &Value, name: &str) -> (Pod, String) {
    let (pod, id, logs) = pod_of(cri, template, name);
    cri.start_container(&id).unwrap();
    let status = cri.wait_exited(&id, Duration::from_secs(60));
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    assert_eq!(
        log_lines(&logs.join(log_file("hello", 0))),
        [("stdout".to_string(), "hello from wasm".to_string())]
    );
    (pod, id)
}

fn cleanup(cri: &mut Cri, pod: &Pod, id: &str) {
    cri.stop_container(id, 0).unwrap();
    cri.remove_container(id).unwrap();
    cri.stop_pod(pod).unwrap();
    cri.remove_pod(pod).unwrap();
}

#[test]
fn the_runtime_class_names_the_handler_the_containerd_snippets_and_kind_register() {
    let handler = handler_of("wasm");
    assert_eq!(handler, common::cri::HANDLER);
    let table = format!("containerd.runtimes.{handler}]");
    for snippet in ["wasm-runtime-v2.toml", "wasm-runtime-v3.toml"] {
        let text = std::fs::read_to_string(repo().join("config/containerd").join(snippet)).unwrap();
        assert!(text.contains(&table), "{snippet} registers {handler}");
        assert!(
            text.contains("runtime_type = 'io.containerd.wasm.v1'")
                || text.contains("runtime_type = \"io.containerd.wasm.v1\"")
        );
    }
    let kind = yaml("kind/cluster.yaml");
    assert_eq!(kind["kind"], "Cluster");
    assert_eq!(kind["apiVersion"], "kind.x-k8s.io/v1alpha4");
    let mount = &kind["nodes"][0]["extraMounts"][0];
    // containerd finds `containerd-shim-wasm-v1` for runtime_type io.containerd.wasm.v1 on its
    // PATH, which has /usr/local/bin on a kind node.
    assert_eq!(
        mount["containerPath"],
        "/usr/local/bin/containerd-shim-wasm-v1"
    );
    assert_eq!(mount["hostPath"], "kind/out/containerd-shim-wasm-v1");
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    assert!(
        makefile.contains("$(KIND_DIR)/containerd-shim-wasm-v1")
            && makefile.contains("KIND_DIR := kind/out"),
        "make kind-demo puts the shim where kind/cluster.yaml mounts it from"
    );
    let patch = kind["containerdConfigPatches"][0].as_str().unwrap();
    let v2 =
        std::fs::read_to_string(repo().join("config/containerd/wasm-runtime-v2.toml")).unwrap();
    for line in patch.lines() {
        assert!(
            v2.contains(line.trim()),
            "kind's patch line {line:?} is the v2 snippet's"
        );
    }
}

#[test]
fn the_example_job_runs_to_completion_with_its_logs() {
    images();
    let mut cri = Cri::connect(&containerd().socket);
    let job = yaml("config/kubernetes/job.yaml");
    assert_eq!(job["kind"], "Job");
    let template = &job["spec"]["template"];
    assert_eq!(template["spec"]["restartPolicy"], "Never");
    let (pod, id) = run_job_to_completion(&mut cri, template, "example-job");
    // The manifest's limits reached the container's cgroup.
    let info = cri.container_info(&id).unwrap();
    let cgroups_path = info["runtimeSpec"]["linux"]["cgroupsPath"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        info["runtimeSpec"]["linux"]["resources"]["memory"]["limit"],
        serde_json::json!(64 << 20)
    );
    assert!(!cgroups_path.is_empty());
    cleanup(&mut cri, &pod, &id);
}

#[test]
fn the_example_deployment_runs_answers_its_probe_and_stops_gracefully() {
    images();
    let mut cri = Cri::connect(&containerd().socket);
    let deployment = yaml("config/kubernetes/deployment.yaml");
    assert_eq!(deployment["kind"], "Deployment");
    let template = &deployment["spec"]["template"];
    let (pod, id, _) = pod_of(&mut cri, template, "example-deployment");
    cri.start_container(&id).unwrap();
    let container = &template["spec"]["containers"][0];
    // The liveness probe, as kubelet runs an exec probe: ExecSync, exit code 0.
    let probe: Vec<&str> = container["livenessProbe"]["exec"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let (code, _, _) = cri.exec_sync(&id, &probe, 10).unwrap();
    assert_eq!(code, 0, "the liveness probe passes");
    let status = cri.container_status(&id).unwrap();
    assert_eq!(status.state, ContainerState::ContainerRunning as i32);
    // Deleting a replica: StopContainer with the pod's grace period ends it by SIGTERM.
    let grace = template["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    let asked = Instant::now();
    cri.stop_container(&id, grace).unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "stopped within seconds"
    );
    assert_eq!(cri.container_status(&id).unwrap().exit_code, 143);
    cleanup(&mut cri, &pod, &id);
}

#[test]
fn the_example_artifact_job_runs_its_module_pulled_from_a_registry() {
    images();
    let job = yaml("config/kubernetes/artifact-job.yaml");
    assert_eq!(job["kind"], "Job");
    let mut template = job["spec"]["template"].clone();
    let container = &mut template["spec"]["containers"][0];
    assert_eq!(container["command"][0], "hello.wasm");
    // The manifest's image, pushed as its comment says, to this test's own registry.
    let registry = common::registry::Registry::start();
    let reference = registry.push_with_tool(
        "wasm-v0",
        &guests_dir().join("hello.wasm"),
        "hello-wasm",
        "v1-artifact",
    );
    container["image"] = Value::from(reference.clone());
    let mut cri = Cri::connect(&containerd().socket);
    if cri.pull_wasm_artifact(&reference).is_none() {
        return;
    }
    let (pod, id) = run_job_to_completion(&mut cri, &template, "example-artifact-job");
    cleanup(&mut cri, &pod, &id);
}

#[test]
fn the_dockerfile_makes_the_module_the_whole_image() {
    let text = std::fs::read_to_string(repo().join("config/Dockerfile")).unwrap();
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        instructions,
        [
            "FROM scratch",
            "COPY app.wasm /app.wasm",
            "ENTRYPOINT [\"/app.wasm\"]"
        ]
    );
}
