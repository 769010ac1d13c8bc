//! wasm OCI artifacts: the module itself as the one layer of an OCI image manifest, with no
//! tar and no file tree, in the two shapes runtimes read.
//!
//! - [`Format::WasmV1`], as wasm-to-oci and Krustlet write it: config
//!   `application/vnd.wasm.config.v1+json` (the blob `{}`), layer
//!   `application/vnd.wasm.content.layer.v1+wasm`.
//! - [`Format::WasmV0`], the CNCF TAG Runtime wasm working group's format as runwasi reads
//!   it: config `application/vnd.wasm.config.v0+json` (creation time, `wasm`/`wasip1` and
//!   the layer digests), layer `application/wasm`.
//!
//! Both carry the module's file name in the layer's `org.opencontainers.image.title`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::Error;
use crate::layer;
use crate::layout::{to_json, Descriptor, Manifest, ManifestAndBlobs, MANIFEST_MEDIA_TYPE};

/// The config of a wasm-v1 artifact.
pub const WASM_V1_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v1+json";
/// The module layer of a wasm-v1 artifact.
pub const WASM_V1_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// The config of a wasm-v0 artifact.
pub const WASM_V0_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The module layer of a wasm-v0 artifact.
pub const WASM_V0_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The layer annotation that names the module's file.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// The `created` time of a wasm-v0 config. Fixed, like everything else here, so the same
/// module always gives the same digests.
pub const WASM_V0_CREATED: &str = "1970-01-01T00:00:00Z";

/// A wasm OCI artifact format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// wasm-to-oci / Krustlet.
    WasmV1,
    /// CNCF TAG Runtime wasm working group, as runwasi reads it.
    WasmV0,
}

impl Format {
    /// The name `--format` takes: `wasm-v1` or `wasm-v0`.
    pub fn name(self) -> &'static str {
        match self {
            Format::WasmV1 => "wasm-v1",
            Format::WasmV0 => "wasm-v0",
        }
    }

    /// The format a `--format` name stands for, if it names an artifact format.
    pub fn parse(name: &str) -> Option<Format> {
        [Format::WasmV1, Format::WasmV0]
            .into_iter()
            .find(|format| format.name() == name)
    }

    /// The media type of the config descriptor.
    pub fn config_media_type(self) -> &'static str {
        match self {
            Format::WasmV1 => WASM_V1_CONFIG_MEDIA_TYPE,
            Format::WasmV0 => WASM_V0_CONFIG_MEDIA_TYPE,
        }
    }

    /// The media type of the module's layer.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Format::WasmV1 => WASM_V1_LAYER_MEDIA_TYPE,
            Format::WasmV0 => WASM_V0_LAYER_MEDIA_TYPE,
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A wasm-v0 config. The keys are camelCase and in this order, as the working group's
/// format writes them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmV0Config<'a> {
    created: &'static str,
    architecture: &'static str,
    os: &'static str,
    layer_digests: [&'a str; 1],
}

/// A wasm-v1 config. Its readers ignore what it holds (wasm-to-oci writes `{}`), but
/// containerd's CRI names an image by its config's digest: with `{}`, every v1 artifact on a
/// node would be one image to CRI, and a pod could run another's module. Naming the layer
/// makes the config, and so the image id, the module's own (as wasm-v0's `layerDigests`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmV1Config<'a> {
    layer_digests: [&'a str; 1],
}

/// The config blob of an artifact of `format` whose one layer has digest `layer_digest`:
/// `{"layerDigests":[…]}` for wasm-v1; for wasm-v0
/// `{"created":"1970-01-01T00:00:00Z","architecture":"wasm","os":"wasip1","layerDigests":[…]}`.
pub fn config(format: Format, layer_digest: &str) -> Vec<u8> {
    match format {
        Format::WasmV1 => to_json(&WasmV1Config {
            layer_digests: [layer_digest],
        }),
        Format::WasmV0 => to_json(&WasmV0Config {
            created: WASM_V0_CREATED,
            architecture: "wasm",
            os: "wasip1",
            layer_digests: [layer_digest],
        }),
    }
}

/// The manifest of an artifact of `format` and its blobs (the config, then the module as
/// its one layer, annotated with `title`). `module` is taken as it is, unchecked, so tests
/// can package anything; the command line checks it is a WebAssembly module first.
pub fn manifest_and_blobs(format: Format, title: &str, module: &[u8]) -> ManifestAndBlobs {
    let mut layer = Descriptor::of(format.layer_media_type(), module);
    layer.annotations = BTreeMap::from([(TITLE_ANNOTATION, title.to_string())]);
    let config = config(format, &layer.digest);
    let config_desc = Descriptor::of(format.config_media_type(), &config);
    ManifestAndBlobs {
        media_type: MANIFEST_MEDIA_TYPE,
        manifest: to_json(&Manifest::new(config_desc, vec![layer])),
        blobs: vec![config, module.to_vec()],
    }
}

/// Reads the module for an artifact: its binary form and the file name its layer is titled
/// with. A native executable is refused: an artifact holds WebAssembly only.
pub(crate) fn load_module(path: &Path) -> Result<(Vec<u8>, String), Error> {
    let bytes = layer::read_module(path)?;
    if layer::is_elf(&bytes) {
        return Err(Error::Invalid(format!(
            "{} is a native ELF executable, but a wasm OCI artifact carries a WebAssembly \
             module only; package a native program as an image (--format image --native)",
            path.display()
        )));
    }
    let compiled = !bytes.starts_with(layer::WASM_MAGIC);
    let wasm = layer::wasm_module(path, bytes)?;
    Ok((wasm, title(path, compiled)?))
}

/// The module's file name; a `.wat` file compiled here is titled with the `.wasm` name of
/// what the layer actually holds.
fn title(path: &Path, compiled: bool) -> Result<String, Error> {
    if compiled {
        let stem = layer::utf8_name(path, path.file_stem())?;
        return Ok(format!("{stem}.wasm"));
    }
    Ok(layer::utf8_name(path, path.file_name())?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::sha256_digest;
    use crate::test_support::{build_with, write_module, Layout, EMPTY_MODULE};
    use serde_json::{json, Value};

    fn manifest_json(image: &ManifestAndBlobs) -> Value {
        serde_json::from_slice(&image.manifest).unwrap()
    }

    #[test]
    fn wasm_v1_is_a_config_naming_the_layer_and_the_raw_module() {
        let image = manifest_and_blobs(Format::WasmV1, "hello.wasm", EMPTY_MODULE);
        assert_eq!(image.media_type, MANIFEST_MEDIA_TYPE);
        let config = format!(r#"{{"layerDigests":["{}"]}}"#, sha256_digest(EMPTY_MODULE));
        assert_eq!(
            image.blobs,
            [config.as_bytes().to_vec(), EMPTY_MODULE.to_vec()]
        );
        let expected = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.wasm.config.v1+json",
                "digest": sha256_digest(config.as_bytes()),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.wasm.content.layer.v1+wasm",
                "digest": sha256_digest(EMPTY_MODULE),
                "size": EMPTY_MODULE.len(),
                "annotations": {"org.opencontainers.image.title": "hello.wasm"},
            }],
        });
        assert_eq!(manifest_json(&image), expected);
    }

    #[test]
    fn wasm_v0_config_names_the_layer_in_camel_case() {
        let image = manifest_and_blobs(Format::WasmV0, "hello.wasm", EMPTY_MODULE);
        let layer_digest = sha256_digest(EMPTY_MODULE);
        let config = format!(
            r#"{{"created":"1970-01-01T00:00:00Z","architecture":"wasm","os":"wasip1","layerDigests":["{layer_digest}"]}}"#
        );
        assert_eq!(String::from_utf8(image.blobs[0].clone()).unwrap(), config);
        assert_eq!(image.blobs[1], EMPTY_MODULE);
        let manifest = manifest_json(&image);
        assert!(manifest.get("artifactType").is_none(), "{manifest}");
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.wasm.config.v0+json"
        );
        assert_eq!(
            manifest["config"]["digest"],
            sha256_digest(config.as_bytes())
        );
        assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
        assert_eq!(manifest["layers"][0]["digest"], layer_digest);
        assert_eq!(
            manifest["layers"][0]["annotations"][TITLE_ANNOTATION],
            "hello.wasm"
        );
    }

    #[test]
    fn format_names_round_trip() {
        for format in [Format::WasmV1, Format::WasmV0] {
            assert_eq!(Format::parse(format.name()), Some(format));
            assert_eq!(format.to_string(), format.name());
        }
        assert_eq!(Format::parse("image"), None);
    }

    #[test]
    fn built_layout_holds_the_artifact_without_a_platform() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "hello.wasm", EMPTY_MODULE);
        for format in [Format::WasmV1, Format::WasmV0] {
            let built = build_with(&module, &format!("--format {format}")).unwrap();
            let layout = Layout::new(&built);
            let index = layout.index();
            let desc = &index["manifests"][0];
            assert!(desc.get("platform").is_none(), "{desc}");
            assert_eq!(
                desc["annotations"]["io.containerd.image.name"],
                "docker.io/library/hello-wasm:v1"
            );
            assert_eq!(
                desc["annotations"]["org.opencontainers.image.ref.name"],
                "v1"
            );
            let manifest = layout.manifest();
            let config = layout.blob(&manifest["config"], format.config_media_type());
            assert_eq!(config, config_for(format, EMPTY_MODULE));
            let layer = layout.blob(&manifest["layers"][0], format.layer_media_type());
            assert_eq!(layer, EMPTY_MODULE);
            assert_eq!(desc["digest"], built.manifest_digest);
            // The same module gives the same bytes, wasm-v0's creation time included.
            let again = build_with(&module, &format!("--format {format}")).unwrap();
            assert!(again.tar == built.tar, "{format} is not reproducible");
        }
    }

    fn config_for(format: Format, module: &[u8]) -> Vec<u8> {
        config(format, &sha256_digest(module))
    }

    #[test]
    fn wat_is_compiled_and_titled_as_wasm() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"(module (func (export "_start")))"#;
        let module = write_module(dir.path(), "greet.wat", text.as_bytes());
        let (wasm, title) = load_module(Path::new(&module)).unwrap();
        assert_eq!(wasm, wat::parse_str(text).unwrap());
        assert_eq!(title, "greet.wasm");
        let module = write_module(dir.path(), "as-is.wasm", EMPTY_MODULE);
        assert_eq!(load_module(Path::new(&module)).unwrap().1, "as-is.wasm");
    }

    #[test]
    fn native_and_non_wasm_modules_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elf = write_module(dir.path(), "pause", b"\x7fELF\x02\x01\x01\0");
        let err = build_with(&elf, "--format wasm-v1").err().unwrap();
        assert_eq!(err.exit_code(), 1);
        let message = err.to_string();
        assert!(message.contains("is a native ELF executable"), "{message}");
        assert!(message.contains(&elf), "{message}");
        let text = write_module(dir.path(), "notes.txt", b"hello");
        let err = build_with(&text, "--format wasm-v0").err().unwrap();
        assert!(
            err.to_string().contains("is not a WebAssembly module"),
            "{err}"
        );
    }
}
