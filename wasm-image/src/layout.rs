//! OCI documents and the image layout: descriptors, an ordinary image's config and manifest,
//! and the layout tarball (`oci-layout`, `index.json`, `blobs/sha256/…`) that
//! `ctr images import` and `skopeo copy oci-archive:` read.
//!
//! Documents are structs rather than `json!` so the field order, and so the digests, are
//! fixed: the same inputs always give the same bytes.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cli::BuildOptions;
use crate::error::{io_err, Error};
use crate::layer::Tree;

/// An uncompressed tar layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// An ordinary image's config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// An image manifest, as every format here writes.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The layout's `index.json`.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The image name containerd gives an imported manifest.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The layout's tag for a manifest, which `skopeo copy oci-archive:` and others read.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// An image's platform, in the words containerd uses (Go's GOOS and GOARCH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub(crate) os: String,
    pub(crate) architecture: String,
    pub(crate) variant: Option<String>,
}

impl Platform {
    /// The platform containerd calls this host, so a default import needs no extra flags.
    pub fn host() -> Platform {
        // containerd uses Go's GOARCH names, not Rust's.
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform::new(std::env::consts::OS, architecture, None)
    }

    /// A platform from its parts, e.g. `Platform::new("wasi", "wasm", None)`.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

/// A manifest and the blobs it names, ready to be written into a layout tarball
/// ([`tarball`]) or pushed to a registry (`registry::Client::push`).
#[derive(Debug, Clone)]
pub struct ManifestAndBlobs {
    /// The manifest's media type, which is also the `mediaType` inside it.
    pub media_type: &'static str,
    /// The manifest's JSON, exactly as it is stored and pushed.
    pub manifest: Vec<u8>,
    /// Every blob the manifest names: the config first, then the layers.
    pub blobs: Vec<Vec<u8>>,
}

impl ManifestAndBlobs {
    /// The manifest's digest, `sha256:<hex>`.
    pub fn digest(&self) -> String {
        sha256_digest(&self.manifest)
    }
}

/// `sha256:<hex>` of `blob`, the digest form OCI uses everywhere.
pub fn sha256_digest(blob: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(blob))
}

// ---------------------------------------------------------------------------------------------
// Documents

#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub(crate) media_type: &'static str,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) platform: Option<PlatformJson>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) annotations: BTreeMap<&'static str, String>,
}

impl Descriptor {
    pub(crate) fn of(media_type: &'static str, blob: &[u8]) -> Descriptor {
        Descriptor {
            media_type,
            digest: sha256_digest(blob),
            size: blob.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
}

#[derive(Serialize, Debug, Clone)]
pub(crate) struct PlatformJson {
    architecture: String,
    os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

impl From<&Platform> for PlatformJson {
    fn from(platform: &Platform) -> PlatformJson {
        PlatformJson {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
        }
    }
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    #[serde(flatten)]
    platform: PlatformJson,
    config: RunConfig<'a>,
    rootfs: RootFs,
    history: Vec<History>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig<'a> {
    entrypoint: Vec<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    cmd: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    env: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<&'a str>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History {
    created_by: &'static str,
}

/// An image manifest (no `artifactType`: the wasm artifact formats say what they are through
/// their config's media type).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

impl Manifest {
    pub(crate) fn new(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE,
            config,
            layers,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(value).expect("OCI documents serialise")
}

fn image_config(opts: &BuildOptions, layer: &Descriptor) -> Vec<u8> {
    // The layer is uncompressed, so its diff_id is its own digest.
    to_json(&ImageConfig {
        platform: PlatformJson::from(&opts.platform),
        config: RunConfig {
            entrypoint: vec![format!("/{}", opts.entrypoint)],
            cmd: &opts.args,
            env: &opts.env,
            working_dir: opts.workdir.as_deref(),
        },
        rootfs: RootFs {
            kind: "layers",
            diff_ids: vec![layer.digest.clone()],
        },
        history: vec![History {
            created_by: "wasm-image build",
        }],
    })
}

/// An ordinary image around its tar layer: the config says what to run, the manifest names
/// the config and the layer.
pub(crate) fn image(opts: &BuildOptions, layer: Vec<u8>) -> ManifestAndBlobs {
    let layer_desc = Descriptor::of(LAYER_MEDIA_TYPE, &layer);
    let config = image_config(opts, &layer_desc);
    let config_desc = Descriptor::of(CONFIG_MEDIA_TYPE, &config);
    ManifestAndBlobs {
        media_type: MANIFEST_MEDIA_TYPE,
        manifest: to_json(&Manifest::new(config_desc, vec![layer_desc])),
        blobs: vec![config, layer],
    }
}

/// The tag that `org.opencontainers.image.ref.name` carries: `latest` unless REF names one.
/// A ':' before the last '/' belongs to a registry port, not a tag.
pub(crate) fn ref_tag(name: &str) -> &str {
    let without_digest = name.split('@').next().unwrap_or(name);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag,
        _ => "latest",
    }
}

// ---------------------------------------------------------------------------------------------
// The layout tarball

/// An OCI image-layout tarball holding `image` under `name`: `oci-layout`, an `index.json`
/// whose one descriptor carries the containerd image name and the layout's ref name, and
/// every blob under `blobs/sha256/`. `platform` goes on that descriptor; give it for an
/// ordinary image, and none for an artifact, which containerd then imports whatever the host.
pub fn tarball(
    image: &ManifestAndBlobs,
    name: &str,
    platform: Option<&Platform>,
) -> Result<Vec<u8>, Error> {
    let mut manifest_desc = Descriptor::of(image.media_type, &image.manifest);
    manifest_desc.platform = platform.map(PlatformJson::from);
    manifest_desc.annotations = BTreeMap::from([
        (IMAGE_NAME_ANNOTATION, name.to_string()),
        (REF_NAME_ANNOTATION, ref_tag(name).to_string()),
    ]);
    let index = to_json(&Index {
        schema_version: 2,
        media_type: INDEX_MEDIA_TYPE,
        manifests: vec![manifest_desc],
    });

    let mut layout = Tree::default();
    let origin = "the image layout";
    layout.add_file(
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        origin,
    )?;
    layout.add_file("index.json", 0o644, index, origin)?;
    for blob in std::iter::once(&image.manifest).chain(&image.blobs) {
        add_blob(&mut layout, blob, origin)?;
    }
    layout.to_tar()
}

fn add_blob(layout: &mut Tree, blob: &[u8], origin: &str) -> Result<(), Error> {
    let digest = sha256_digest(blob);
    let hex = digest.trim_start_matches("sha256:");
    let path = format!("blobs/sha256/{hex}");
    // A blob named twice (two identical layers) is stored once, as content addressing means.
    if layout.contains(&path) {
        return Ok(());
    }
    layout.add_file(&path, 0o644, blob.to_vec(), origin)
}

/// Writes beside the destination and renames, so a failed build never leaves a
/// truncated tarball where an importer might pick it up.
pub(crate) fn write_output(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = fs::write(&tmp, bytes)
        .map_err(io_err("cannot write output", &tmp))
        .and_then(|()| {
            fs::rename(&tmp, path).map_err(io_err("cannot move output into place at", path))
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build_tarball;
    use crate::test_support::{build_with, parse, write_module, Layout, EMPTY_MODULE};
    use serde_json::json;

    #[test]
    fn layout_documents_chain_together() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "hello.wasm", EMPTY_MODULE);
        let extra =
            "--arg --verbose --arg=x --env A=1 --env=B=2=3 --workdir /data --platform wasi/wasm";
        let image = build_with(&module, extra).unwrap();
        let layout = Layout::new(&image);

        assert_eq!(
            layout.file("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#
        );
        let index = layout.index();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
        let manifest_desc = &index["manifests"][0];
        assert_eq!(manifest_desc["digest"], image.manifest_digest);
        let annotations = &manifest_desc["annotations"];
        assert_eq!(
            annotations[IMAGE_NAME_ANNOTATION],
            "docker.io/library/hello-wasm:v1"
        );
        assert_eq!(annotations[REF_NAME_ANNOTATION], "v1");
        assert_eq!(
            manifest_desc["platform"],
            json!({"architecture": "wasm", "os": "wasi"})
        );

        let manifest = layout.manifest();
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);

        let config = layout.config();
        assert_eq!(
            (&config["os"], &config["architecture"]),
            (&json!("wasi"), &json!("wasm"))
        );
        let expected = json!({
            "Entrypoint": ["/hello.wasm"],
            "Cmd": ["--verbose", "x"],
            "Env": ["A=1", "B=2=3"],
            "WorkingDir": "/data",
        });
        assert_eq!(config["config"], expected);
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(
            config["rootfs"]["diff_ids"],
            json!([manifest["layers"][0]["digest"]])
        );
        assert_eq!(layout.layer()["hello.wasm"].data, EMPTY_MODULE);

        let paths: Vec<&str> = layout.0.keys().map(String::as_str).collect();
        let blobs = paths
            .iter()
            .filter(|p| p.starts_with("blobs/sha256/") && p.len() > 13);
        assert_eq!(blobs.count(), 3, "{paths:?}");
        assert_eq!(&paths[..2], ["blobs/", "blobs/sha256/"]);
        assert_eq!(&paths[5..], ["index.json", "oci-layout"]);
    }

    #[test]
    fn defaults_are_the_host_platform_and_no_cmd_env_or_workdir() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "hello.wasm", EMPTY_MODULE);
        let line = format!("build --module {module} -o x.tar --name localhost:5000/hello");
        let image = build_tarball(&parse(&line).unwrap()).unwrap();
        let layout = Layout::new(&image);
        let index = layout.index();
        assert_eq!(
            index["manifests"][0]["annotations"][REF_NAME_ANNOTATION],
            "latest"
        );

        let config = layout.config();
        let host = Platform::host();
        assert_eq!(config["os"], host.os);
        assert_eq!(config["architecture"], host.architecture);
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(host.to_string(), "linux/amd64");
        }
        assert_eq!(config["config"], json!({"Entrypoint": ["/hello.wasm"]}));
    }

    #[test]
    fn same_inputs_give_identical_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "hello.wasm", EMPTY_MODULE);
        let extra = dir.path().join("extra");
        fs::create_dir_all(extra.join("sub")).unwrap();
        fs::write(extra.join("sub/b.txt"), "b").unwrap();
        fs::write(extra.join("a.txt"), "a").unwrap();
        let options = format!("--add {}:/extra --symlink /l:/etc --arg 1", extra.display());

        let first = build_with(&module, &options).unwrap();
        // Rewriting a file changes its mtime, which must not reach the image.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(extra.join("a.txt"), "a").unwrap();
        let second = build_with(&module, &options).unwrap();
        assert!(
            first.tar == second.tar,
            "two builds of the same inputs differ"
        );
        assert_eq!(first.manifest_digest, second.manifest_digest);
    }

    #[test]
    fn ref_tags() {
        assert_eq!(ref_tag("docker.io/library/hello-wasm:latest"), "latest");
        assert_eq!(ref_tag("hello:v2"), "v2");
        assert_eq!(ref_tag("localhost:5000/hello"), "latest");
        assert_eq!(ref_tag("localhost:5000/hello:1.0@sha256:abc"), "1.0");
        assert_eq!(ref_tag("hello"), "latest");
    }

    #[test]
    fn identical_blobs_are_stored_once() {
        let blob = b"same".to_vec();
        let image = ManifestAndBlobs {
            media_type: MANIFEST_MEDIA_TYPE,
            manifest: b"{}".to_vec(),
            blobs: vec![blob.clone(), blob],
        };
        let tar = tarball(&image, "x:1", None).unwrap();
        let layout = Layout::from_tar(&tar);
        let blobs = layout
            .0
            .keys()
            .filter(|p| p.len() > 13 && p.starts_with("blobs/sha256/"));
        assert_eq!(blobs.count(), 2);
        assert!(layout.index()["manifests"][0].get("platform").is_none());
    }
}
