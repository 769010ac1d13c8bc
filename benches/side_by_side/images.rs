//! The images of every row, made with the project's own wasm-image and imported before any
//! timing starts.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ctr::Ctr;
use crate::Config;

/// What hello.wasm and the native hello print, byte for byte.
pub const HELLO: &str = "hello from wasm\n";

/// The images of every row, built and imported before any timing starts.
pub struct Images {
    pub hello_wasm: String,
    pub hello_native: String,
    pub probe_wasm: String,
    pub sleeper_native: String,
    /// One hello no run has seen, per round (warm-up included).
    pub hello_cold: Vec<String>,
    pub python: Option<PythonImages>,
}

/// CPython for WASI (row 5).
pub struct PythonImages {
    pub warm: String,
    /// One variant per cold round, and its bytes for the standalone compile of the same round.
    pub cold: Vec<(String, Vec<u8>)>,
    pub bytes: Vec<u8>,
}

/// Builds an image with the project's own tool and imports it; its name.
fn build_image(
    config: &Config,
    ctr: &Ctr,
    name: &str,
    module: &Path,
    extra: &[&str],
) -> Result<String, String> {
    let tar = config
        .work
        .join(format!("{}.tar", name.replace(['/', ':'], "_")));
    let out = Command::new(&config.image_tool)
        .args(["build", "--module"])
        .arg(module)
        .arg("-o")
        .arg(&tar)
        .args(["--name", name])
        .args(extra)
        .output()
        .map_err(|e| format!("run {}: {e}", config.image_tool.display()))?;
    if !out.status.success() {
        return Err(format!(
            "wasm-image {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    ctr.import(&tar)?;
    // The tarball is in the content store now; the scratch copy only takes space.
    let _ = fs::remove_file(&tar);
    Ok(name.to_string())
}

/// A unique variant of `module` for round `round`, written to the work dir; its path and bytes.
fn variant(
    config: &Config,
    module: &[u8],
    tag: &str,
    round: usize,
) -> Result<(PathBuf, Vec<u8>), String> {
    let bytes =
        wasm_image::with_custom_section(module, "bench-round", format!("{tag} {round}").as_bytes());
    let path = config.work.join(format!("{tag}-{round}.wasm"));
    fs::write(&path, &bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok((path, bytes))
}

/// Builds and imports every image, the per-round variants of the cold rows included.
pub fn prepare_images(config: &Config, ctr: &Ctr) -> Result<Images, String> {
    let g = |name: &str| config.guests.join(name);
    let hello_bytes = read(&g("hello.wasm"))?;
    let mut hello_cold = Vec::new();
    for round in 0..config.warmup + config.rounds {
        let (path, _) = variant(config, &hello_bytes, "hello-cold", round)?;
        let name = format!("bench/hello-cold-{round}:latest");
        hello_cold.push(build_image(
            config,
            ctr,
            &name,
            &path,
            &["--entrypoint", "/hello.wasm"],
        )?);
    }
    Ok(Images {
        hello_wasm: build_image(
            config,
            ctr,
            "bench/hello-wasm:latest",
            &g("hello.wasm"),
            &[],
        )?,
        hello_native: build_image(
            config,
            ctr,
            "bench/hello-native:latest",
            &g("hello"),
            &["--native", "--entrypoint", "/hello"],
        )?,
        probe_wasm: build_image(
            config,
            ctr,
            "bench/probe-wasm:latest",
            &g("probe.wasm"),
            &["--entrypoint", "/probe.wasm"],
        )?,
        sleeper_native: build_image(
            config,
            ctr,
            "bench/sleeper-native:latest",
            &g("sleeper"),
            &["--native", "--entrypoint", "/sleeper"],
        )?,
        hello_cold,
        python: config
            .python
            .as_ref()
            .map(|p| prepare_python(config, ctr, p))
            .transpose()?,
    })
}

/// The large module: one image the cache will know, and one never-seen variant per cold round.
fn prepare_python(config: &Config, ctr: &Ctr, python: &Path) -> Result<PythonImages, String> {
    let bytes = read(python)?;
    let entry = ["--entrypoint", "/python.wasm"];
    let warm = build_image(config, ctr, "bench/python:latest", python, &entry)?;
    let mut cold = Vec::new();
    for round in 0..1 + config.python_cold_rounds {
        let (path, variant_bytes) = variant(config, &bytes, "python-cold", round)?;
        let name = format!("bench/python-cold-{round}:latest");
        cold.push((
            build_image(config, ctr, &name, &path, &entry)?,
            variant_bytes,
        ));
        let _ = fs::remove_file(&path);
    }
    Ok(PythonImages { warm, cold, bytes })
}

/// A whole file, with its path in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))
}
