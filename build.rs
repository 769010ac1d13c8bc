//! Links the shim as a position-dependent executable (`-no-pie`), as Debian builds runc,
//! containerd and containerd-shim-runc-v2.
//!
//! Why: every shim and every guest process maps this one binary. As a PIE, the dynamic loader
//! writes the load address into about 1 MiB of pointers (`.data.rel.ro`, 63,000 relocations)
//! in each process, a private copy per process: half of an idle wasm container's footprint.
//! At a fixed address those pages are never written, so every process shares them.
//!
//! What it costs: the binary's own code and data sit at a fixed address (libraries, heap,
//! stacks, wasm memories and JIT code stay randomized). The guest runs hostile code confined
//! as runc confines a container process, where such code is native anyway; the shim parses
//! no untrusted input without Rust's bounds checks. `CONTAINERD_SHIM_WASM_PIE=1 cargo build`
//! builds a PIE instead.

fn main() {
    println!("cargo:rerun-if-env-changed=CONTAINERD_SHIM_WASM_PIE");
    if std::env::var_os("CONTAINERD_SHIM_WASM_PIE").is_some_and(|v| v == "1") {
        return;
    }
    println!("cargo:rustc-link-arg-bin=containerd-shim-wasm-v1=-no-pie");
}
