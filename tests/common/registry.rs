//! A real OCI registry for the tests: Debian's `docker-registry` (distribution 2.8) serving
//! plain HTTP on a free port of 127.0.0.1, its storage in a directory of its own. Stopped when
//! dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    /// `127.0.0.1:PORT`, the host part of image references pushed to it.
    pub host: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry and waits (10 s at most) until its API answers.
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        // A port the kernel has just handed out, free again once the listener is dropped.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start docker-registry (make deps installs it): {e}"));
        let registry = Registry {
            host,
            child,
            _dir: dir,
        };
        registry.wait_until_up(&registry._dir.path().join("registry.log"));
        registry
    }

    fn wait_until_up(&self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "the registry on {} never answered; its log:\n{}",
                self.host,
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `GET /v2/` answers 200, as the distribution API's version check.
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(&self.host) else {
            return false;
        };
        let request = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.host);
        let mut reply = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut reply).is_ok()
            && reply.starts_with("HTTP/1.")
            && reply.contains(" 200 ")
    }
}

/// The media types of an OCI image manifest and config, and of a wasm layer in each artifact
/// format (see the shim's `artifact` module).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const WASM_CONFIG_V1: &str = "application/vnd.wasm.config.v1+json";
pub const WASM_LAYER_V1: &str = "application/vnd.wasm.content.layer.v1+wasm";
pub const WASM_CONFIG_V0: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER_V0: &str = "application/wasm";

impl Registry {
    /// Pushes a manifest made here (with wasm-image's registry client) as `repo:tag`: its
    /// config (media type, bytes) and layers (media type, bytes). Returns the reference and
    /// the layers' digests. For images no tool writes: one with two wasm layers, or none.
    pub fn push_manifest(
        &self,
        repo: &str,
        tag: &str,
        config: (&str, &[u8]),
        layers: &[(&str, &[u8])],
    ) -> (String, Vec<String>) {
        let client = wasm_image::registry::Client::new(&self.host);
        let descriptor = |media_type: &str, bytes: &[u8]| {
            let digest = client
                .push_blob(repo, bytes)
                .unwrap_or_else(|e| panic!("push a blob to {}/{repo}: {e}", self.host));
            serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
        };
        let config = descriptor(config.0, config.1);
        let layers: Vec<serde_json::Value> = layers.iter().map(|(t, b)| descriptor(t, b)).collect();
        let digests = layers
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": layers,
        });
        client
            .push_manifest(repo, tag, OCI_MANIFEST, manifest.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("push the manifest {}/{repo}:{tag}: {e}", self.host));
        (format!("{}/{repo}:{tag}", self.host), digests)
    }

    /// `wasm-image push --format FORMAT --module MODULE --name REFERENCE`.
    pub fn push_with_tool(&self, format: &str, module: &Path, repo: &str, tag: &str) -> String {
        let reference = format!("{}/{repo}:{tag}", self.host);
        let out = Command::new(super::image_tool())
            .args(["push", "--format", format, "--module"])
            .arg(module)
            .args(["--name", &reference])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "wasm-image push --format {format} {reference} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        reference
    }
}

/// An OCI image config for a wasm layer under it (runwasi's layout): `entrypoint`, no
/// unpacked layers.
pub fn image_config(entrypoint: &str) -> Vec<u8> {
    serde_json::json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {"Entrypoint": [entrypoint]},
        "rootfs": {"type": "layers", "diff_ids": []},
    })
    .to_string()
    .into_bytes()
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
