//! wasm OCI artifacts: images whose module is a layer of its own (raw wasm bytes, no tar), so
//! containerd unpacks nothing of it into the rootfs (containerd 1.6.25+, 1.7.7+ and 2.x skip
//! layers of media types they do not know; older releases refuse to unpack such an image).
//!
//! Two formats exist, and both are read:
//! - v1, as `wasm-to-oci` pushes and Krustlet pulls: config `application/vnd.wasm.config.v1+json`,
//!   layer `application/vnd.wasm.content.layer.v1+wasm`;
//! - v0, the CNCF TAG Runtime wasm working group's layout (what runwasi reads): config
//!   `application/vnd.wasm.config.v0+json`, layer `application/wasm`.
//!
//! The container's entrypoint is then the module itself: when `process.args[0]` names nothing in
//! the rootfs, the shim asks containerd for the container's image, reads its manifest, and takes
//! the one wasm layer from containerd's content store by digest, verifying every byte against
//! it. `args[0]` stays the guest's argv[0].

use std::fs::File;

use serde::Deserialize;

use crate::containerd::Client;
use crate::error::{Error, Result};
use crate::module::{Refusal, SealedModule};

pub const CONFIG_V1: &str = "application/vnd.wasm.config.v1+json";
pub const LAYER_V1: &str = "application/vnd.wasm.content.layer.v1+wasm";
pub const CONFIG_V0: &str = "application/vnd.wasm.config.v0+json";
pub const LAYER_V0: &str = "application/wasm";

/// Manifest media types an artifact can come in (OCI's and Docker's schema 2).
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The largest manifest the shim reads (registries refuse manifests over 4 MiB).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The module layer of a container's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLayer {
    /// The image's name, as the container record gives it (for messages).
    pub image: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
}

fn is_wasm_layer(media_type: &str) -> bool {
    media_type == LAYER_V1 || media_type == LAYER_V0
}

fn is_wasm_config(media_type: &str) -> bool {
    media_type == CONFIG_V1 || media_type == CONFIG_V0
}

/// The module layer of the image whose manifest is `manifest` (of media type `media_type`),
/// `None` if the image is no wasm artifact (an ordinary image, an index), or why a wasm
/// artifact cannot run (no wasm layer, more than one, a digest the shim cannot verify).
pub fn module_layer(image: &str, media_type: &str, manifest: &[u8]) -> Result<Option<ModuleLayer>> {
    if !MANIFEST_TYPES.contains(&media_type) {
        return Ok(None);
    }
    let manifest: Manifest = serde_json::from_slice(manifest).map_err(|e| {
        Error::InvalidArgument(format!(
            "the manifest of image {image} is not valid JSON: {e}"
        ))
    })?;
    if manifest
        .media_type
        .as_deref()
        .is_some_and(|t| !MANIFEST_TYPES.contains(&t))
    {
        return Ok(None);
    }
    let config_type = manifest.config.as_ref().map(|c| c.media_type.as_str());
    let wasm: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|l| is_wasm_layer(&l.media_type))
        .collect();
    if wasm.is_empty() && !config_type.is_some_and(is_wasm_config) {
        return Ok(None);
    }
    let layer = match wasm.as_slice() {
        [layer] => layer,
        [] => {
            return Err(Error::InvalidArgument(format!(
                "image {image} is a wasm artifact (config {}) with no wasm layer ({LAYER_V1} or {LAYER_V0}): it has no module to run",
                config_type.unwrap_or_default()
            )))
        }
        several => {
            let digests: Vec<&str> = several.iter().map(|l| l.digest.as_str()).collect();
            return Err(Error::InvalidArgument(format!(
                "image {image} has {} wasm layers ({}): a container runs one module, so a wasm artifact must have exactly one wasm layer",
                several.len(),
                digests.join(", ")
            )));
        }
    };
    check_digest(image, &layer.digest)?;
    Ok(Some(ModuleLayer {
        image: image.to_string(),
        digest: layer.digest.clone(),
        size: layer.size,
        media_type: layer.media_type.clone(),
    }))
}

/// Only sha256 digests are verified by the shim (and written by every registry in use).
fn check_digest(image: &str, digest: &str) -> Result<()> {
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "the wasm layer of image {image} has digest {digest:?}: the shim verifies sha256 digests only"
    )))
}

/// The annotation containerd's CRI (1.7+) puts the container's image on: the name kubelet
/// asked for (its `UserSpecifiedImage`, where kubelet sends one).
pub const CRI_IMAGE_NAME_ANNOTATION: &str = "io.kubernetes.cri.image-name";

/// The module layer of container `id`'s image, `None` if the container has no image or its
/// image is no wasm artifact. The image is the one `cri_image_name` (the spec's
/// [`CRI_IMAGE_NAME_ANNOTATION`]) names if containerd knows that name (kubelet's own
/// spelling may be short, as `app:1`), else the container record's.
pub async fn find(
    client: &Client,
    id: &str,
    cri_image_name: Option<&str>,
) -> Result<Option<ModuleLayer>> {
    let annotated = match cri_image_name.filter(|name| !name.is_empty()) {
        Some(name) => client
            .image_target(name)
            .await
            .ok()
            .map(|t| (name.to_string(), t)),
        None => None,
    };
    let (image, target) = match annotated {
        Some(found) => found,
        None => {
            let image = client.container_image(id).await.map_err(Error::Internal)?;
            if image.is_empty() {
                return Ok(None);
            }
            let target = client.image_target(&image).await.map_err(Error::Internal)?;
            (image, target)
        }
    };
    if !MANIFEST_TYPES.contains(&target.media_type.as_str()) {
        return Ok(None);
    }
    let mut manifest = Vec::new();
    client
        .read_blob(&target.digest, |chunk| {
            if manifest.len() + chunk.len() > MAX_MANIFEST_BYTES {
                return Err(format!(
                    "the manifest {} of image {image} is larger than {MAX_MANIFEST_BYTES} bytes",
                    target.digest
                ));
            }
            manifest.extend_from_slice(chunk);
            Ok(())
        })
        .await
        .map_err(Error::Internal)?;
    module_layer(&image, &target.media_type, &manifest)
}

/// Copies the module layer from containerd's content store into a sealed memfd, refusing it
/// unless its bytes hash to the layer's digest: returns the memfd and the hex digest.
pub async fn seal(client: &Client, layer: &ModuleLayer, max_bytes: u64) -> Result<(File, String)> {
    let what = || format!("the wasm layer {} of image {}", layer.digest, layer.image);
    if layer.size > max_bytes {
        return Err(Error::InvalidArgument(format!(
            "{} is {} bytes, more than the wasm runtime's MaxModuleBytes ({max_bytes}); raise that option to run it",
            what(),
            layer.size
        )));
    }
    let mut sealed = SealedModule::new(max_bytes)?;
    let mut refused = None;
    let read = client
        .read_blob(&layer.digest, |chunk| match sealed.append(chunk) {
            Ok(()) => Ok(()),
            Err(e) => {
                let shown = e.to_string();
                refused = Some(e);
                Err(shown)
            }
        })
        .await;
    match (read, refused) {
        (_, Some(Refusal::Error(e))) => return Err(e),
        (_, Some(Refusal::NotWasm)) => {
            return Err(Error::InvalidArgument(format!(
                "{} is not a WebAssembly module (it does not start with \\0asm)",
                what()
            )))
        }
        (_, Some(Refusal::TooBig(_))) => {
            return Err(Error::InvalidArgument(format!(
                "{} is larger than the wasm runtime's MaxModuleBytes ({max_bytes}); raise that option to run it",
                what()
            )))
        }
        (Err(e), None) => {
            return Err(Error::Internal(format!("read {} from containerd: {e}", what())))
        }
        (Ok(()), None) => {}
    }
    let (file, digest, len) = sealed.seal()?;
    let expected = layer.digest.trim_start_matches("sha256:");
    if digest != expected || len != layer.size {
        return Err(Error::InvalidArgument(format!(
            "{} does not match its digest: containerd's content store holds {len} bytes with sha256:{digest} (the manifest says {} bytes); the blob was altered after it was pulled: remove the image and pull it again",
            what(),
            layer.size
        )));
    }
    Ok((file, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn manifest(config: &str, layers: &[(&str, &str)]) -> Vec<u8> {
        let layers: Vec<_> = layers
            .iter()
            .map(|(t, d)| serde_json::json!({"mediaType": t, "digest": d, "size": 8}))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config, "digest": D1, "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    fn layer(config: &str, layers: &[(&str, &str)]) -> Result<Option<ModuleLayer>> {
        module_layer("img", OCI_MANIFEST, &manifest(config, layers))
    }

    #[test]
    fn both_formats_give_their_one_wasm_layer() {
        for (config, layer_type) in [(CONFIG_V1, LAYER_V1), (CONFIG_V0, LAYER_V0)] {
            let found = layer(config, &[(layer_type, D2)]).unwrap().unwrap();
            assert_eq!(found.digest, D2);
            assert_eq!(found.media_type, layer_type);
            assert_eq!(found.size, 8);
        }
    }

    #[test]
    fn an_ordinary_image_or_an_index_is_no_artifact() {
        let tar = "application/vnd.oci.image.layer.v1.tar";
        let config = "application/vnd.oci.image.config.v1+json";
        assert_eq!(layer(config, &[(tar, D2)]).unwrap(), None);
        let index = "application/vnd.oci.image.index.v1+json";
        assert_eq!(module_layer("img", index, b"{}").unwrap(), None);
    }

    #[test]
    fn an_image_config_with_one_wasm_layer_beside_tar_layers_is_an_artifact() {
        let tar = "application/vnd.oci.image.layer.v1.tar";
        let config = "application/vnd.oci.image.config.v1+json";
        let found = layer(config, &[(tar, D1), (LAYER_V0, D2)])
            .unwrap()
            .unwrap();
        assert_eq!(found.digest, D2);
    }

    #[test]
    fn no_wasm_layer_or_two_are_refused_with_the_reason() {
        let none = layer(CONFIG_V1, &[]).unwrap_err().to_string();
        assert_eq!(
            none,
            format!("image img is a wasm artifact (config {CONFIG_V1}) with no wasm layer ({LAYER_V1} or {LAYER_V0}): it has no module to run")
        );
        let two = layer(CONFIG_V0, &[(LAYER_V0, D1), (LAYER_V0, D2)])
            .unwrap_err()
            .to_string();
        assert_eq!(
            two,
            format!("image img has 2 wasm layers ({D1}, {D2}): a container runs one module, so a wasm artifact must have exactly one wasm layer")
        );
    }

    #[test]
    fn a_digest_that_is_not_sha256_is_refused() {
        let err = layer(CONFIG_V1, &[(LAYER_V1, "sha512:abcd")]).unwrap_err();
        assert!(
            err.to_string().contains("verifies sha256 digests only"),
            "{err}"
        );
    }

    #[test]
    fn a_manifest_that_is_not_json_is_refused() {
        let err = module_layer("img", OCI_MANIFEST, b"{not json").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the manifest of image img is not valid JSON"),
            "{err}"
        );
    }
}
