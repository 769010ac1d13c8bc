//! containerd-shim-wasm: a containerd runtime v2 shim that runs WASI modules with wasmer.
//!
//! The data path, top to bottom: `shim` (lifecycle with containerd) -> `task` (ttrpc) ->
//! `service` (one method per RPC) -> `container` (state machine) -> `guest` (one OS process
//! per container process) -> `engine` (wasmer). `spec` turns the OCI spec into a run plan,
//! `rootfs` and `stdio` open what containerd hands over, `events` publishes off the RPC path.
//! `confine` decides (in the shim) and applies (in the guest) the container's confinement;
//! `module` hands the module's bytes and its compiled-cache entry to the guest; `artifact`
//! finds them in a wasm OCI artifact's layer, read through `containerd`'s API.

pub mod artifact;
pub mod cgroup;
pub mod confine;
pub mod console;
pub mod container;
pub mod containerd;
pub mod engine;
pub mod error;
pub mod events;
pub mod guest;
pub mod logger;
pub mod module;
pub mod native;
pub mod options;
pub mod rootfs;
pub mod service;
pub mod shim;
pub mod spec;
pub mod stdio;
pub mod task;
