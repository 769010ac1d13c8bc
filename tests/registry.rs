//! Images as users make them, through a real registry and a real pull: an image the project's
//! tool builds, pushed with skopeo; config/Dockerfile built with buildah for both platforms;
//! each pulled by containerd with `ctr images pull --plain-http` and run on the shim.

mod common;

use std::path::Path;
use std::process::Command;

use common::registry::{self, Registry};
use common::{containerd, guests_dir, unique_id, RunOpts};

const NS: &str = "wasm-registry";

/// Runs a command and returns its stdout, or fails the test with what it printed.
fn run_ok(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e} (make deps installs it)"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ctr images pull --plain-http` of `reference`, as a node pulls from a registry.
fn pull(reference: &str, platform: Option<&str>) {
    let mut args = vec!["-n", NS, "images", "pull", "--plain-http"];
    if let Some(platform) = platform {
        args.extend(["--platform", platform]);
    }
    args.push(reference);
    containerd().ctr_ok(&args);
}

/// `ctr run --rm` of a pulled image on the shim: what hello prints, and exit 0.
fn assert_runs_hello(reference: &str, platform: Option<&str>) {
    let id = unique_id("pulled");
    let mut opts = RunOpts::new(reference, &id);
    opts.namespace = NS.into();
    opts.platform = platform.map(str::to_string);
    let result = containerd().run(opts);
    result.assert_code(0);
    assert_eq!(result.stdout_str(), "hello from wasm\n");
    containerd().assert_no_debris(NS, &id);
}

#[test]
fn an_image_the_tool_builds_runs_after_a_push_and_a_pull() {
    // One registry per test, stopped when the test ends (a static one would outlive it).
    let registry = Registry::start();
    let name = format!("{}/wasm-image-hello:{}", registry.host, unique_id("tag"));
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("hello.tar");
    run_ok(
        Command::new(common::image_tool())
            .args(["build", "--module"])
            .arg(guests_dir().join("hello.wasm"))
            .args(["--name", &name, "-o"])
            .arg(&tar),
    );
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", tar.display()))
            .arg(format!("docker://{name}")),
    );
    pull(&name, None);
    assert_runs_hello(&name, None);
}

/// config/Dockerfile as users build it (buildah, no daemon, nothing to pull for `FROM
/// scratch`), for `platform`, pushed to the registry; returns the image reference.
fn build_dockerfile(registry: &Registry, platform: &str) -> String {
    // Everything buildah keeps goes when the build is pushed: the registry has the image.
    let work = tempfile::tempdir().unwrap();
    let context = work.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy(guests_dir().join("hello.wasm"), context.join("app.wasm")).unwrap();
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/Dockerfile");
    let reference = format!(
        "{}/dockerfile-hello:{}",
        registry.host,
        platform.replace('/', "-")
    );
    // vfs: buildah's storage needs no overlay or fuse support from the machine.
    let buildah = |args: &[&str]| {
        run_ok(
            Command::new("buildah")
                .args(["--storage-driver", "vfs", "--root"])
                .arg(work.path().join("buildah-root"))
                .args(["--runroot"])
                .arg(work.path().join("buildah-runroot"))
                .args(args)
                .current_dir(&context),
        )
    };
    buildah(&[
        "bud",
        "--platform",
        platform,
        "-f",
        dockerfile.to_str().unwrap(),
        "-t",
        &reference,
        ".",
    ]);
    buildah(&["push", "--tls-verify=false", &reference]);
    reference
}

#[test]
fn the_shipped_dockerfile_built_with_buildah_runs_for_linux_amd64() {
    let registry = Registry::start();
    let reference = build_dockerfile(&registry, "linux/amd64");
    pull(&reference, None);
    assert_runs_hello(&reference, None);
}

#[test]
fn the_shipped_dockerfile_built_with_buildah_runs_for_wasi_wasm() {
    let registry = Registry::start();
    let reference = build_dockerfile(&registry, "wasi/wasm");
    // The registry holds what buildah made of --platform: an image config for wasi/wasm.
    let config: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--config"])
            .arg(format!("docker://{reference}")),
    ))
    .unwrap();
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("wasi"), Some("wasm"))
    );
    pull(&reference, Some("wasi/wasm"));
    assert_runs_hello(&reference, Some("wasi/wasm"));
}

#[test]
fn an_image_wasm_image_pushes_runs_after_a_pull() {
    let registry = Registry::start();
    let reference = registry.push_with_tool(
        "image",
        &guests_dir().join("hello.wasm"),
        "pushed-image",
        &unique_id("tag"),
    );
    pull(&reference, None);
    assert_runs_hello(&reference, None);
}

/// `ctr images pull --plain-http` of `reference`: its output.
fn ctr_pull(reference: &str) -> std::process::Output {
    containerd().ctr(&["-n", NS, "images", "pull", "--plain-http", reference])
}

#[test]
fn artifacts_wasm_image_pushes_are_pulled_by_ctr_which_cannot_run_their_config_type() {
    let registry = Registry::start();
    let module = guests_dir().join("hello.wasm");
    for (format, config_type) in [
        ("wasm-v1", registry::WASM_CONFIG_V1),
        ("wasm-v0", registry::WASM_CONFIG_V0),
    ] {
        let reference = registry.push_with_tool(format, &module, format, &unique_id("tag"));
        if !pull_wasm_layers(&reference) {
            continue;
        }
        // ctr builds the spec from the image config itself and knows only OCI's and Docker's
        // config types: it refuses before any runtime is asked (CRI runs these: tests/cri.rs).
        let id = unique_id("artifact");
        let mut opts = RunOpts::new(&reference, &id);
        opts.namespace = NS.into();
        opts.args = vec!["hello.wasm".into()];
        let result = containerd().run(opts);
        assert_ne!(result.code, Some(0));
        assert!(
            result
                .stderr_str()
                .contains(&format!("unknown image config media type {config_type}")),
            "{format}: {}",
            result.stderr_str()
        );
        containerd().assert_no_debris(NS, &id);
    }
}

/// A module no other test has (its layer blob is this test's alone, even in the shared
/// content store).
fn unique_module(guest: &str) -> Vec<u8> {
    let module = std::fs::read(guests_dir().join(guest)).unwrap();
    wasm_image::with_custom_section(&module, "test", unique_id("m").as_bytes())
}

/// Pulls `reference` (an image with wasm layers) with ctr: true where containerd can; where
/// it cannot (before 1.6.25 / 1.7.7), asserts containerd's refusal and returns false.
fn pull_wasm_layers(reference: &str) -> bool {
    let pulled = ctr_pull(reference);
    let stderr = String::from_utf8_lossy(&pulled.stderr);
    if containerd().unpacks_wasm_artifacts() {
        assert!(pulled.status.success(), "pull {reference}: {stderr}");
        return true;
    }
    assert!(
        !pulled.status.success(),
        "{reference} pulled on {:?}",
        containerd().version
    );
    assert!(
        stderr.contains("mismatched image rootfs and manifest layers"),
        "{stderr}"
    );
    eprintln!(
        "containerd {:?} refuses images with wasm layers (1.6.25+, 1.7.7+ or 2.x pull them): nothing to run",
        containerd().version
    );
    false
}

/// `ctr run --rm` of `reference` with `args` on the shim.
fn run_pulled(reference: &str, id: &str, args: &[&str]) -> common::RunResult {
    let mut opts = RunOpts::new(reference, id);
    opts.namespace = NS.into();
    opts.args = args.iter().map(|a| a.to_string()).collect();
    containerd().run(opts)
}

#[test]
fn a_wasm_layer_under_an_image_config_runs_through_ctr_from_the_content_store() {
    let registry = Registry::start();
    let module = unique_module("probe.wasm");
    let (reference, _) = registry.push_manifest(
        "wasm-layer",
        &unique_id("tag"),
        (registry::OCI_CONFIG, &registry::image_config("/app.wasm")),
        &[(registry::WASM_LAYER_V1, &module)],
    );
    if !pull_wasm_layers(&reference) {
        return;
    }
    // ctr's command replaces the image's entrypoint; its first word names no file of the
    // (empty) rootfs: the module is the layer, and that word the guest's argv[0].
    let id = unique_id("layer");
    let result = run_pulled(&reference, &id, &["/app.wasm", "args", "x"]);
    result.assert_code(0);
    assert_eq!(result.stdout_str(), "/app.wasm\nargs\nx\n");
    containerd().assert_no_debris(NS, &id);
    let id = unique_id("layer");
    let result = run_pulled(&reference, &id, &["app", "exit", "7"]);
    result.assert_code(7);
    let id = unique_id("layer");
    let result = run_pulled(&reference, &id, &["app", "ls", "/"]);
    result.assert_code(0);
    assert!(
        !result.stdout_str().lines().any(|l| l.contains("app.wasm")),
        "the module is no file of the container: {}",
        result.stdout_str()
    );
}

#[test]
fn a_tampered_wasm_layer_is_refused_naming_its_digest() {
    let registry = Registry::start();
    let module = unique_module("hello.wasm");
    let (reference, digests) = registry.push_manifest(
        "tampered",
        &unique_id("tag"),
        (registry::OCI_CONFIG, &registry::image_config("/app.wasm")),
        &[(registry::WASM_LAYER_V1, &module)],
    );
    if !pull_wasm_layers(&reference) {
        return;
    }
    // An attacker with write access to containerd's content store, after the pull (which
    // verified the digest): same size, one byte changed.
    let blob = containerd()
        .dir
        .join("root/io.containerd.content.v1.content/blobs/sha256")
        .join(digests[0].trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    assert_eq!(bytes, module, "the content store holds the pushed layer");
    *bytes.last_mut().unwrap() ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let id = unique_id("tampered");
    let result = run_pulled(&reference, &id, &[]);
    assert_ne!(result.code, Some(0));
    let expected = format!(
        "the wasm layer {} of image {reference} does not match its digest: containerd's content store holds {} bytes with sha256:{}",
        digests[0],
        bytes.len(),
        common::sha256_hex(&bytes)
    );
    assert!(
        result.stderr_str().contains(&expected),
        "{}",
        result.stderr_str()
    );
    assert_eq!(result.stdout_str(), "", "nothing of the module ran");
    containerd().assert_no_debris(NS, &id);
}

#[test]
fn an_image_with_two_wasm_layers_is_refused_with_the_reason() {
    let registry = Registry::start();
    let (reference, digests) = registry.push_manifest(
        "two-layers",
        &unique_id("tag"),
        (registry::OCI_CONFIG, &registry::image_config("/app.wasm")),
        &[
            (registry::WASM_LAYER_V1, &unique_module("hello.wasm")),
            (registry::WASM_LAYER_V1, &unique_module("probe.wasm")),
        ],
    );
    if !pull_wasm_layers(&reference) {
        return;
    }
    let id = unique_id("two");
    let result = run_pulled(&reference, &id, &[]);
    assert_ne!(result.code, Some(0));
    let expected = format!(
        "image {reference} has 2 wasm layers ({}, {}): a container runs one module, so a wasm artifact must have exactly one wasm layer",
        digests[0], digests[1]
    );
    assert!(
        result.stderr_str().contains(&expected),
        "{}",
        result.stderr_str()
    );
    containerd().assert_no_debris(NS, &id);
}
