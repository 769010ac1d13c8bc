//! Kubernetes through CRI: a kubelet-like client drives containerd's CRI (runtime.v1) over its
//! socket with the runtime handler `wasm`, as kubelet does for a pod whose RuntimeClass is
//! `wasm`. The pod sandbox is a pause image built here (a native program, run by runc through
//! the shim), the apps are wasm images; all imported into containerd's `k8s.io` namespace.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::cri::{log_file, log_lines, Cri, Pod};
use common::registry::{self, Registry};
use common::{build_image, containerd, guests_dir, parent_pid, proc_status};
use k8s_cri::v1::ContainerState;

/// The namespace containerd's CRI keeps its images and containers in.
const K8S: &str = "k8s.io";
/// containerd's `sandbox_image` in the tests' configuration (tests/harness/containerd.sh).
const PAUSE: &str = "registry.k8s.io/pause:3.6";
const PROBE: &str = "docker.io/library/cri-probe:latest";
const SIDECAR: &str = "docker.io/library/cri-sidecar:latest";

fn work_dir() -> &'static Path {
    common::work_dir()
}

/// The pause, probe and sidecar images, imported once.
fn images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let native = |name: &str, program: &str| {
            build_image(
                K8S,
                work_dir(),
                name,
                &guests_dir().join(program),
                &["--native", "--entrypoint", &format!("/{program}")],
            )
        };
        native(PAUSE, "pause");
        // The sidecar also holds a native program to exec into it.
        let nprobe = format!("{}:/nprobe", guests_dir().join("nprobe").display());
        build_image(
            K8S,
            work_dir(),
            SIDECAR,
            &guests_dir().join("sleeper"),
            &["--native", "--entrypoint", "/sleeper", "--add", &nprobe],
        );
        build_image(
            K8S,
            work_dir(),
            PROBE,
            &guests_dir().join("probe.wasm"),
            &["--entrypoint", "/probe.wasm"],
        );
    });
}

/// A CRI client, one per test (each has its own runtime).
fn cri() -> Cri {
    images();
    Cri::connect(&containerd().socket)
}

/// A pod of its own for one test, with a log directory.
fn pod(cri: &mut Cri, name: &str) -> (Pod, PathBuf) {
    let logs = work_dir().join(format!("logs-{name}"));
    std::fs::create_dir_all(&logs).unwrap();
    let pod = cri.run_pod(name, &logs).unwrap();
    (pod, logs)
}

/// Everything of the pod, gone: the containers and sandbox (stop, remove), then no process,
/// mount or cgroup of theirs is left.
fn remove_pod(cri: &mut Cri, pod: &Pod, containers: &[&str]) {
    for id in containers {
        cri.stop_container(id, 0).unwrap();
        cri.remove_container(id).unwrap();
    }
    cri.stop_pod(pod).unwrap();
    cri.remove_pod(pod).unwrap();
    let mut ids: Vec<&str> = containers.to_vec();
    ids.push(&pod.id);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = ids.iter().flat_map(|id| leftovers(id)).collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the pod left behind:\n  {}",
            left.join("\n  ")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Processes, mounts and cgroups that still name container `id`.
fn leftovers(id: &str) -> Vec<String> {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
            .unwrap_or(true);
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !zombie && argv.iter().any(|a| a == id) {
            left.push(format!("process {pid}: {}", argv.join(" ")));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines().filter(|l| l.contains(id)) {
        left.push(format!("mount: {line}"));
    }
    let path = format!("/{K8S}/{id}");
    for controller in ["memory", "pids", "cpu", "freezer", ""] {
        let dir = common::cgroups::dir(controller, &path);
        if dir.exists() && (controller.is_empty() == common::cgroups::is_v2()) {
            left.push(format!("cgroup: {}", dir.display()));
        }
    }
    left
}

/// The pid of a running container, from CRI's verbose status.
fn container_pid(cri: &mut Cri, id: &str) -> i32 {
    let info = cri.container_info(id).unwrap();
    info["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid for {id}: {info}")) as i32
}

fn run_to_exit(
    cri: &mut Cri,
    pod: &Pod,
    name: &str,
    args: &[&str],
) -> (String, k8s_cri::v1::ContainerStatus) {
    run_image_to_exit(cri, pod, name, PROBE, args)
}

/// [`run_to_exit`] of another image.
fn run_image_to_exit(
    cri: &mut Cri,
    pod: &Pod,
    name: &str,
    image: &str,
    args: &[&str],
) -> (String, k8s_cri::v1::ContainerStatus) {
    let id = cri.create_container(pod, name, 0, image, args).unwrap();
    cri.start_container(&id).unwrap();
    let status = cri.wait_exited(&id, Duration::from_secs(60));
    (id, status)
}

#[test]
fn a_one_container_pod_logs_in_cri_format_and_completes() {
    let mut cri = cri();
    let (pod, logs) = pod(&mut cri, "one");
    let (id, status) = run_to_exit(&mut cri, &pod, "hello", &["args", "from a pod"]);
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    assert_eq!(
        log_lines(&logs.join(log_file("hello", 0))),
        [
            ("stdout".to_string(), "/probe.wasm".to_string()),
            ("stdout".to_string(), "args".to_string()),
            ("stdout".to_string(), "from a pod".to_string()),
        ]
    );
    remove_pod(&mut cri, &pod, &[&id]);
}

#[test]
fn an_image_pulled_from_a_registry_by_pullimage_runs_in_a_pod() {
    // As a node gets its images: pushed to a registry, pulled by CRI's PullImage.
    let registry = common::registry::Registry::start();
    let reference = format!("{}/cri-pulled:latest", registry.host);
    let tar = work_dir().join("cri-pulled.tar");
    let built = std::process::Command::new(common::image_tool())
        .args(["build", "--module"])
        .arg(guests_dir().join("probe.wasm"))
        .args(["--entrypoint", "/probe.wasm", "--name", &reference, "-o"])
        .arg(&tar)
        .status()
        .unwrap();
    assert!(built.success());
    let pushed = std::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", tar.display()))
        .arg(format!("docker://{reference}"))
        .status()
        .unwrap();
    assert!(pushed.success());
    let mut cri = cri();
    assert!(!cri.has_image(&reference), "not there before the pull");
    let image_ref = cri.pull_image(&reference).unwrap();
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    assert!(cri.has_image(&reference));
    let (pod, logs) = pod(&mut cri, "pulled");
    let id = cri
        .create_container(&pod, "pulled", 0, &reference, &["args", "pulled"])
        .unwrap();
    cri.start_container(&id).unwrap();
    let status = cri.wait_exited(&id, Duration::from_secs(60));
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    assert_eq!(
        log_lines(&logs.join(log_file("pulled", 0))),
        [
            ("stdout".to_string(), "/probe.wasm".to_string()),
            ("stdout".to_string(), "args".to_string()),
            ("stdout".to_string(), "pulled".to_string()),
        ]
    );
    remove_pod(&mut cri, &pod, &[&id]);
}

#[test]
fn a_failing_container_reports_its_exit_code_and_error() {
    let mut cri = cri();
    let (pod, _) = pod(&mut cri, "fails");
    let (id, status) = run_to_exit(&mut cri, &pod, "three", &["exit", "3"]);
    assert_eq!((status.exit_code, status.reason.as_str()), (3, "Error"));
    remove_pod(&mut cri, &pod, &[&id]);
}

#[test]
fn stop_with_a_grace_period_ends_a_container_by_sigterm_at_once() {
    let mut cri = cri();
    let (pod, _) = pod(&mut cri, "stop");
    let id = cri
        .create_container(&pod, "sleeper", 0, PROBE, &["sleep", "600"])
        .unwrap();
    cri.start_container(&id).unwrap();
    let asked = Instant::now();
    cri.stop_container(&id, 30).unwrap();
    let took = asked.elapsed();
    let status = cri.container_status(&id).unwrap();
    assert_eq!(status.state, ContainerState::ContainerExited as i32);
    assert_eq!((status.exit_code, status.reason.as_str()), (143, "Error"));
    assert!(took < Duration::from_secs(5), "StopContainer took {took:?}");
    remove_pod(&mut cri, &pod, &[&id]);
}

#[test]
fn a_pods_containers_share_one_shim_and_its_namespaces() {
    let mut cri = cri();
    let (pod, _) = pod(&mut cri, "two");
    let mut ids = Vec::new();
    for name in ["first", "second"] {
        let id = cri
            .create_container(&pod, name, 0, PROBE, &["sleep", "600"])
            .unwrap();
        cri.start_container(&id).unwrap();
        ids.push(id);
    }
    let pids: Vec<i32> = ids.iter().map(|id| container_pid(&mut cri, id)).collect();
    let sandbox_pid = cri.pod_info(&pod).unwrap()["pid"].as_i64().unwrap() as i32;
    let shims: Vec<i32> = pids.iter().map(|pid| parent_pid(*pid)).collect();
    assert_eq!(shims[0], shims[1], "one shim for the pod");
    let argv = std::fs::read(format!("/proc/{}/cmdline", shims[0])).unwrap();
    assert!(
        String::from_utf8_lossy(&argv).contains("containerd-shim-wasm-v1"),
        "the pod's shim is this one"
    );
    assert_eq!(
        parent_pid(sandbox_pid),
        shims[0],
        "the pause process is the shim's too"
    );
    let shim_count = count_processes(|argv| {
        argv.first()
            .is_some_and(|a| a.ends_with("containerd-shim-wasm-v1"))
            && argv.iter().any(|a| a == &pod.id)
    });
    assert_eq!(shim_count, 1, "exactly one shim serves the pod");
    // The apps joined the sandbox's pid, ipc and network namespaces.
    for ns in ["pid", "ipc", "net"] {
        let link = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_eq!(link(pids[0]), link(sandbox_pid), "{ns}");
        assert_eq!(link(pids[1]), link(sandbox_pid), "{ns}");
    }
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    remove_pod(&mut cri, &pod, &id_refs);
}

fn count_processes(matches: impl Fn(&[String]) -> bool) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            let raw = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let argv: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            !argv.is_empty() && matches(&argv)
        })
        .count()
}

#[test]
fn container_stats_show_real_cpu_and_memory() {
    let mut cri = cri();
    let (pod, _) = pod(&mut cri, "stats");
    let id = cri
        .create_container(&pod, "spinner", 0, PROBE, &["spin"])
        .unwrap();
    cri.start_container(&id).unwrap();
    let pid = container_pid(&mut cri, &id);
    let deadline = Instant::now() + Duration::from_secs(30);
    // 300 ms of ticks (sampled at each tick, so a little coarse) for 200 ms of the cgroup's
    // exact count: CI once saw 20 ticks and 198 ms.
    while common::procfs::cpu_ticks(pid) < 30 {
        assert!(Instant::now() < deadline, "the spinner never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = cri.container_stats(&id).unwrap();
    let cpu = stats
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value);
    let memory = stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value);
    assert!(cpu.unwrap_or(0) >= 200_000_000, "CPU: {stats:?}");
    assert!(memory.unwrap_or(0) > 0, "memory: {stats:?}");
    let listed = cri.list_container_stats().unwrap();
    assert!(
        listed
            .iter()
            .any(|s| s.attributes.as_ref().is_some_and(|a| a.id == id)),
        "ListContainerStats lists it"
    );
    remove_pod(&mut cri, &pod, &[&id]);
}

#[test]
fn a_restarted_container_runs_again_in_its_sandbox() {
    let mut cri = cri();
    let (pod, logs) = pod(&mut cri, "restart");
    let (first, status) = run_to_exit(&mut cri, &pod, "again", &["exit", "1"]);
    assert_eq!(status.exit_code, 1);
    cri.remove_container(&first).unwrap();
    // Attempt 1, as kubelet makes it after a failure.
    let second = cri
        .create_container(&pod, "again", 1, PROBE, &["args", "attempt one"])
        .unwrap();
    cri.start_container(&second).unwrap();
    let status = cri.wait_exited(&second, Duration::from_secs(60));
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    assert_eq!(
        log_lines(&logs.join(log_file("again", 1)))
            .last()
            .map(|(_, t)| t.clone()),
        Some("attempt one".to_string())
    );
    remove_pod(&mut cri, &pod, &[&second]);
}

#[test]
fn a_native_sidecar_runs_confined_beside_a_wasm_container() {
    let mut cri = cri();
    let (pod, _) = pod(&mut cri, "sidecar");
    let app = cri
        .create_container(&pod, "app", 0, PROBE, &["sleep", "600"])
        .unwrap();
    cri.start_container(&app).unwrap();
    let sidecar = cri
        .create_container(&pod, "sidecar", 0, SIDECAR, &["600"])
        .unwrap();
    cri.start_container(&sidecar).unwrap();
    for id in [&app, &sidecar] {
        let status = cri.container_status(id).unwrap();
        assert_eq!(
            status.state,
            ContainerState::ContainerRunning as i32,
            "{id}"
        );
    }
    let pid = container_pid(&mut cri, &sidecar);
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap(),
        host_mnt,
        "the sidecar has its own mount namespace"
    );
    // CRI's default capabilities, as runc gives them: not the host root's full set.
    let effective = u64::from_str_radix(&proc_status(pid, "CapEff"), 16).unwrap();
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    assert_eq!(
        effective & CAP_SYS_ADMIN,
        0,
        "no CAP_SYS_ADMIN: {effective:x}"
    );
    assert_eq!(
        proc_status(pid, "Seccomp"),
        "0",
        "CRI gives no profile unless asked"
    );
    remove_pod(&mut cri, &pod, &[&app, &sidecar]);
}

#[test]
fn exec_sync_runs_in_a_running_container_and_leaves_it_running() {
    let mut cri = cri();
    let (pod, _) = pod(&mut cri, "exec");
    let id = cri
        .create_container(&pod, "target", 0, PROBE, &["sleep", "600"])
        .unwrap();
    cri.start_container(&id).unwrap();
    // As an exec probe or `kubectl exec` runs it: output and exit code come back.
    let (code, stdout, stderr) = cri
        .exec_sync(&id, &["/probe.wasm", "args", "probe"], 30)
        .unwrap();
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (0, "/probe.wasm\nargs\nprobe\n", "")
    );
    let (code, _, _) = cri
        .exec_sync(&id, &["/probe.wasm", "exit", "3"], 30)
        .unwrap();
    assert_eq!(code, 3, "a failing probe's exit code");
    let (code, stdout, _) = cri
        .exec_sync(&id, &["/probe.wasm", "read", "/etc/hostname"], 30)
        .unwrap();
    assert_eq!(code, 0);
    assert!(
        !stdout.is_empty(),
        "the container's /etc/hostname (CRI's bind mount)"
    );
    let status = cri.container_status(&id).unwrap();
    assert_eq!(
        status.state,
        ContainerState::ContainerRunning as i32,
        "still running"
    );
    remove_pod(&mut cri, &pod, &[&id]);
}

#[test]
fn exec_sync_into_a_native_sidecar_runs_there_under_runc() {
    let mut cri = cri();
    let (pod, _) = pod(&mut cri, "exec-native");
    let sidecar = cri
        .create_container(&pod, "sidecar", 0, SIDECAR, &["600"])
        .unwrap();
    cri.start_container(&sidecar).unwrap();
    let (code, stdout, stderr) = cri
        .exec_sync(&sidecar, &["/nprobe", "echo", "from", "the", "sidecar"], 30)
        .unwrap();
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (0, "from the sidecar\n", "")
    );
    let (code, _, _) = cri
        .exec_sync(&sidecar, &["/nprobe", "exit", "3"], 30)
        .unwrap();
    assert_eq!(code, 3, "a failing probe's exit code");
    // The exec is confined as the sidecar is: its mount namespace, its cgroup, its
    // capabilities (runc applies the exec's process spec, which CRI derives from the
    // container's).
    let (code, stdout, _) = cri.exec_sync(&sidecar, &["/nprobe", "self"], 30).unwrap();
    assert_eq!(code, 0, "{stdout}");
    let pid = container_pid(&mut cri, &sidecar);
    let init_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let memory_cgroup = init_cgroup
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, path)| path.to_string()))
        .or_else(|| {
            init_cgroup
                .lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
        .unwrap();
    let expected = format!(
        "mnt {}\ncgroup {memory_cgroup}\nCapEff {}\nNoNewPrivs {}\nUid 0\n",
        std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
            .unwrap()
            .display(),
        proc_status(pid, "CapEff"),
        proc_status(pid, "NoNewPrivs"),
    );
    assert_eq!(stdout, expected);
    // A program the image does not have: ExecSync fails with the reason, the sidecar runs on.
    let missing = cri
        .exec_sync(&sidecar, &["/no-such-program"], 30)
        .unwrap_err();
    assert!(missing.contains("/no-such-program"), "{missing}");
    let status = cri.container_status(&sidecar).unwrap();
    assert_eq!(
        status.state,
        ContainerState::ContainerRunning as i32,
        "still running"
    );
    remove_pod(&mut cri, &pod, &[&sidecar]);
}

#[test]
fn an_oom_kill_shows_as_oomkilled_with_137() {
    let mut cri = cri();
    // Compiling 150k functions takes far more than 64 MiB: the kernel's OOM killer ends it.
    let name = "docker.io/library/cri-oom:latest";
    let module = work_dir().join("oom.wat");
    std::fs::write(&module, common::big_module_wat("cri-oom", 150_000)).unwrap();
    build_image(K8S, work_dir(), name, &module, &[]);
    let (pod, _) = pod(&mut cri, "oom");
    let mut config = common::cri::container_config("hungry", 0, name, &[]);
    config.linux.as_mut().unwrap().resources = Some(k8s_cri::v1::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    });
    let id = cri.create_container_with(&pod, config).unwrap();
    cri.start_container(&id).unwrap();
    let status = cri.wait_exited(&id, Duration::from_secs(120));
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (137, "OOMKilled")
    );
    remove_pod(&mut cri, &pod, &[&id]);
}

#[test]
fn wasm_artifacts_pulled_by_pullimage_run_in_a_pod() {
    // Both artifact formats, as `wasm-image push` writes them: the module is a layer of its
    // own, which containerd does not unpack; the shim reads it from the content store.
    let registry = Registry::start();
    let mut cri = cri();
    for format in ["wasm-v1", "wasm-v0"] {
        let module = guests_dir().join("probe.wasm");
        let reference = registry.push_with_tool(format, &module, format, "latest");
        if cri.pull_wasm_artifact(&reference).is_none() {
            continue;
        }
        let (pod, logs) = pod(&mut cri, &format!("artifact-{format}"));
        let app = cri
            .create_container(&pod, "app", 0, &reference, &["probe", "args", format])
            .unwrap();
        cri.start_container(&app).unwrap();
        let status = cri.wait_exited(&app, Duration::from_secs(60));
        assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
        assert_eq!(
            log_lines(&logs.join(log_file("app", 0))),
            [
                ("stdout".to_string(), "probe".to_string()),
                ("stdout".to_string(), "args".to_string()),
                ("stdout".to_string(), format.to_string()),
            ]
        );
        let (failing, status) = run_image_to_exit(
            &mut cri,
            &pod,
            "failing",
            &reference,
            &["probe", "exit", "3"],
        );
        assert_eq!((status.exit_code, status.reason.as_str()), (3, "Error"));
        // An exec (probe) whose first word names no file of the empty rootfs runs the
        // image's module too, in the running container.
        let server = cri
            .create_container(&pod, "server", 0, &reference, &["probe", "sleep", "600"])
            .unwrap();
        cri.start_container(&server).unwrap();
        assert_eq!(
            cri.exec_sync(&server, &["probe", "args", "exec"], 30),
            Ok((0, "probe\nargs\nexec\n".to_string(), String::new()))
        );
        assert_eq!(
            cri.exec_sync(&server, &["probe", "exit", "4"], 30)
                .map(|r| r.0),
            Ok(4)
        );
        remove_pod(&mut cri, &pod, &[&app, &failing, &server]);
    }
}

#[test]
fn a_wasm_artifact_without_a_wasm_layer_fails_to_start_with_the_reason() {
    let registry = Registry::start();
    let (reference, _) =
        registry.push_manifest("no-layer", "latest", (registry::WASM_CONFIG_V1, b"{}"), &[]);
    let mut cri = cri();
    // No layer at all: every containerd pulls it.
    cri.pull_image(&reference).unwrap();
    let (pod, _) = pod(&mut cri, "no-layer");
    let id = cri
        .create_container(&pod, "app", 0, &reference, &["app.wasm"])
        .unwrap();
    let refused = cri.start_container(&id).unwrap_err();
    let reason = format!(
        "is a wasm artifact (config {}) with no wasm layer ({} or {}): it has no module to run",
        registry::WASM_CONFIG_V1,
        registry::WASM_LAYER_V1,
        registry::WASM_LAYER_V0
    );
    assert!(refused.contains(&reason), "{refused}");
    remove_pod(&mut cri, &pod, &[&id]);
}

#[test]
fn two_v1_artifacts_in_one_pod_each_run_their_own_module() {
    // CRI names an image by its config's digest; wasm-image's v1 config names the module's
    // layer, so two artifacts are two images and each container runs its own module.
    let registry = Registry::start();
    let mut cri = cri();
    let hello = registry.push_with_tool("wasm-v1", &guests_dir().join("hello.wasm"), "hello", "1");
    let probe = registry.push_with_tool("wasm-v1", &guests_dir().join("probe.wasm"), "probe", "1");
    let (Some(hello_id), Some(probe_id)) = (
        cri.pull_wasm_artifact(&hello),
        cri.pull_wasm_artifact(&probe),
    ) else {
        return;
    };
    assert_ne!(hello_id, probe_id, "one image id for two modules");
    let (pod, logs) = pod(&mut cri, "two-artifacts");
    let (first, status) = run_image_to_exit(&mut cri, &pod, "hello", &hello_id, &["hello.wasm"]);
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    let (second, status) =
        run_image_to_exit(&mut cri, &pod, "probe", &probe_id, &["probe.wasm", "args"]);
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    let out = |name| log_lines(&logs.join(log_file(name, 0)));
    assert_eq!(
        out("hello"),
        [("stdout".to_string(), "hello from wasm".to_string())]
    );
    assert_eq!(
        out("probe"),
        [
            ("stdout".to_string(), "probe.wasm".to_string()),
            ("stdout".to_string(), "args".to_string()),
        ]
    );
    remove_pod(&mut cri, &pod, &[&first, &second]);
}
