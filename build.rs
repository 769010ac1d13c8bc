//! Links the shim as a static, position-dependent executable (`-static -no-pie`).
//!
//! Why: containerd runs this binary four times per container (the `start` and `delete`
//! actions, the shim server, the guest), and every one of them maps it.
//! - Position-dependent, as Debian builds runc, containerd and containerd-shim-runc-v2: as a
//!   PIE, the dynamic loader wrote the load address into about 1 MiB of pointers
//!   (`.data.rel.ro`, 63,000 relocations) in each process, a private copy per process, half of
//!   an idle wasm container's footprint. At a fixed address those pages are never written, so
//!   every process shares them.
//! - Static: dynamically linked, each of those processes spent about 0.8 ms in the loader
//!   (mapping and relocating libc, libm, libgcc_s and libseccomp) under load; statically
//!   linked there is no loader. The README gives the measured figures (Performance).
//!
//! What it costs: the binary's code and data, its C library included, sit at a fixed address
//! (heap, stacks, wasm memories and JIT code stay randomized). The guest runs hostile code
//! confined as runc confines a container process, where such code is native anyway; the shim
//! parses no untrusted input without Rust's bounds checks. `CONTAINERD_SHIM_WASM_PIE=1 cargo
//! build` builds a dynamically linked PIE instead.
//!
//! How: rustc names the system libraries (`-lc -lgcc_s -lseccomp ...`) after switching the
//! linker back to shared libraries (`-Bdynamic`), which `-static` alone does not undo. So the
//! binary gets a directory of its own, searched first, where each of those names is a small
//! linker script for the static archive (`libgcc_s` becomes libgcc's static unwinder, as
//! rustc's own `crt-static` links it). Only the shim's binary is linked so: tests, benches and
//! the image tool are not, and no dependency is rebuilt.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = "containerd-shim-wasm-v1";

fn main() {
    println!("cargo:rerun-if-env-changed=CONTAINERD_SHIM_WASM_PIE");
    println!("cargo:rerun-if-env-changed=CC");
    if std::env::var_os("CONTAINERD_SHIM_WASM_PIE").is_some_and(|v| v == "1") {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = out.join("static-libs");
    if let Err(why) = write_static_libs(&dir) {
        panic!(
            "cannot prepare the static link of {BIN}: {why}\n\
             (it needs the static archives of libc6-dev, libseccomp-dev and gcc; \
             CONTAINERD_SHIM_WASM_PIE=1 builds a dynamically linked PIE instead)"
        );
    }
    for arg in ["-no-pie", "-static", &format!("-L{}", dir.display())] {
        println!("cargo:rustc-link-arg-bin={BIN}={arg}");
    }
}

/// Writes, in `dir`, a `lib<name>.a` for each library rustc names, each a linker script for
/// the static archive the C compiler finds. libc and the unwinder are one group with libgcc,
/// as `cc -static` links them: each needs symbols of the others.
fn write_static_libs(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let group = format!(
        "GROUP({} {} {})\n",
        archive("libc.a")?,
        archive("libgcc.a")?,
        archive("libgcc_eh.a")?
    );
    let mut scripts = vec![("c", group.clone()), ("gcc_s", group)];
    for name in ["seccomp", "m", "rt", "pthread", "dl", "util"] {
        scripts.push((
            name,
            format!("INPUT({})\n", archive(&format!("lib{name}.a"))?),
        ));
    }
    for (name, script) in scripts {
        let file = dir.join(format!("lib{name}.a"));
        std::fs::write(&file, script).map_err(|e| format!("write {}: {e}", file.display()))?;
    }
    Ok(())
}

/// The path of the static archive `file` in the C compiler's search path.
fn archive(file: &str) -> Result<String, String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let output = Command::new(&cc)
        .arg(format!("-print-file-name={file}"))
        .output()
        .map_err(|e| format!("run {cc}: {e}"))?;
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_string();
    // cc prints the bare name back when it finds no such file.
    let path = std::fs::canonicalize(&printed).map_err(|_| format!("{cc} finds no {file}"))?;
    Ok(path.display().to_string())
}
