//! Images as users make them, through a real registry and a real pull: an image the project's
//! tool builds, pushed with skopeo; config/Dockerfile built with buildah for both platforms;
//! each pulled by containerd with `ctr images pull --plain-http` and run on the shim.

mod common;

use std::path::Path;
use std::process::Command;

use common::registry::Registry;
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
        Command::new(env!("CARGO_BIN_EXE_wasm-image"))
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
