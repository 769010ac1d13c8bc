//! The guest process's side: read the plan, confine itself, wait for Start while it compiles,
//! run the module, exit with its status. See `guest/mod.rs` for the protocol with the shim and
//! `confine` for the order of the confinement steps.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use log::{error, info, warn};

use super::{
    mounts, signals, ARTIFACT_OUT_FD, CACHE_ENTRY_FD, CONTROL_FD, ID_MAPS_REQUEST, ID_MAPS_WRITTEN,
    LOADED, MODULE_FD, START_BYTE, STATUS_FD, STDERR_FD,
};
use crate::confine::{self, capabilities, identity, namespaces, seccomp};
use crate::container::EXIT_NEVER_RAN;
use crate::engine::tunables::pages_for_limit;
use crate::engine::wasmer::{LoadedModule, WasmerEngine};
use crate::engine::{Invocation, Outcome, EXIT_NOT_RUNNABLE};
use crate::logger::LineLogger;
use crate::spec::RunPlan;

/// Exit status when the guest process itself fails before running the module.
const EXIT_SETUP_FAILED: i32 = 1;

/// Entry point of the hidden guest mode. Never returns.
pub fn main() -> ! {
    if let Err(e) = signals::install() {
        // Nothing can be reported yet; the shim sees the status pipe close.
        eprintln!("guest: install signal handlers: {e}");
        std::process::exit(EXIT_SETUP_FAILED);
    }
    // SAFETY: the shim placed these descriptors (guest/mod.rs); nothing else owns them.
    let (control, status, stderr, module) = unsafe {
        (
            File::from_raw_fd(CONTROL_FD),
            File::from_raw_fd(STATUS_FD),
            File::from_raw_fd(STDERR_FD),
            File::from_raw_fd(MODULE_FD),
        )
    };
    let mut control = BufReader::new(control);
    let plan = match read_plan(&mut control) {
        Ok(plan) => plan,
        Err(why) => fail_setup(status, &why),
    };
    init_logger(&plan.id);
    if plan.hang_before_ready {
        // The tests' stand-in for a guest that never gets ready (debug builds only: see
        // `spec::HANG_BEFORE_READY_ANNOTATION`); the shim's ready timeout ends it.
        info!("hanging before ready, as the spec's test annotation asks");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    // SAFETY: the shim placed these descriptors exactly when the plan says so.
    let cache_entry = plan
        .cache
        .entry
        .then(|| unsafe { File::from_raw_fd(CACHE_ENTRY_FD) });
    let artifact_out = plan
        .cache
        .store
        .then(|| unsafe { File::from_raw_fd(ARTIFACT_OUT_FD) });
    if let Err(why) = confine(&plan, &mut control, &status) {
        fail_setup(status, &why)
    }
    report(&status, "ok");
    // Only now, confined, does the guest read the module's bytes (if it has to compile).
    let code = run(
        &plan,
        module,
        (cache_entry, artifact_out),
        (&mut control, status),
        stderr,
    );
    std::process::exit(code)
}

/// Every confinement step, in the order `confine` documents. The process is single-threaded
/// throughout: no engine, runtime or thread exists yet.
fn confine(plan: &RunPlan, control: &mut impl Read, status: &File) -> Result<(), String> {
    let c = &plan.confinement;
    // Both need the host's privileges to raise a hard limit or lower the score: before any
    // user namespace.
    identity::apply_rlimits(&c.rlimits)?;
    identity::apply_oom_score_adj(c.oom_score_adj)?;
    namespaces::enter(c, || await_id_maps(control, status))?;
    let caps = capabilities::after_exec(&c.capabilities, c.user.uid);
    capabilities::limit_bounding(&caps)?;
    if c.joins_mount_namespace() {
        // An exec: already at the container's root (setns), in its mounts.
        std::env::set_current_dir(&plan.cwd)
            .map_err(|e| format!("chdir to process.cwd {}: {e}", plan.cwd.display()))?;
    } else {
        mounts::prepare(plan)?;
        mounts::enter(plan)?;
    }
    namespaces::set_names(c)?;
    let seccomp_first = !c.no_new_privileges;
    if seccomp_first {
        load_seccomp(c)?;
    }
    identity::become_user(c)?;
    capabilities::apply(&caps)?;
    identity::apply_no_new_privileges(c)?;
    if !seccomp_first {
        load_seccomp(c)?;
    }
    Ok(())
}

/// A new user namespace owns no ids until its maps are written, which only a process with
/// privileges in the parent namespace may do: the guest asks the shim and waits.
fn await_id_maps(control: &mut impl Read, mut status: &File) -> Result<(), String> {
    writeln!(status, "{ID_MAPS_REQUEST}").map_err(|e| format!("ask for the id maps: {e}"))?;
    let mut byte = [0u8; 1];
    match control.read(&mut byte) {
        Ok(1) if byte[0] == ID_MAPS_WRITTEN => Ok(()),
        Ok(_) => Err("the shim did not write the user namespace's id maps".into()),
        Err(e) => Err(format!("wait for the id maps: {e}")),
    }
}

fn load_seccomp(c: &confine::Confinement) -> Result<(), String> {
    match &c.seccomp {
        Some(profile) => seccomp::load(profile),
        None => Ok(()),
    }
}

/// Compiles (or loads from the shim's cache) while waiting to be started, tells the shim
/// whether the module can run, then runs it once released; returns the exit status.
fn run(
    plan: &RunPlan,
    module: File,
    (cache_entry, artifact_out): (Option<File>, Option<File>),
    (control, status): (&mut impl Read, File),
    stderr: File,
) -> i32 {
    let root_entries = mounts::root_entries();
    let loaded = WasmerEngine::new(plan.memory_limit.map(pages_for_limit))
        .map_err(|e| format!("cannot start the wasm engine: {e}"))
        .and_then(|engine| {
            // The module's bytes are read only to compile, and dropped once compiled.
            let module =
                engine.load_from(&plan.module_digest, cache_entry, || read_module(module))?;
            Ok((engine, module))
        });
    // Start fails with the reason a module cannot run; the shim then never releases it.
    match &loaded {
        Ok(_) => report(&status, LOADED),
        Err(why) => report(
            &status,
            &format!(
                "error {}",
                Outcome::NotRunnable(why.clone())
                    .message()
                    .unwrap_or_default()
            ),
        ),
    }
    drop(status);
    // A freshly compiled artifact goes to the shim's cache beside the run, not before Start:
    // serialising a large module takes a while. The process exits only once it is sent.
    let sending = match (&loaded, artifact_out) {
        (Ok((_, module)), Some(out)) => send_artifact(module.clone(), out),
        _ => None,
    };
    let code = run_when_started(plan, loaded, control, root_entries, stderr);
    if let Some(sending) = sending {
        let _ = sending.join();
    }
    code
}

/// Waits for the start byte, then runs the module; returns the exit status.
fn run_when_started(
    plan: &RunPlan,
    loaded: Result<(WasmerEngine, LoadedModule), String>,
    control: &mut impl Read,
    root_entries: Vec<String>,
    mut stderr: File,
) -> i32 {
    let released = wait_for_start(control);
    let outcome = match loaded {
        Err(why) => {
            error!("not started: wasm: {why}");
            let _ = writeln!(stderr, "wasm: {why}");
            return EXIT_NOT_RUNNABLE;
        }
        Ok(_) if !released => {
            // Deleted before its Start: the shim closed the pipe and sends SIGKILL after it.
            // Exiting first, the guest reports what that kill would (runc's status for a task
            // deleted before its start), so the task's status never depends on which of the
            // two ends it: with 0 here, a Delete that lost the race reported 0.
            info!("released without start; exiting");
            return EXIT_NEVER_RAN as i32;
        }
        Ok((engine, module)) => {
            info!(
                "running module {} (pid {})",
                module.digest,
                std::process::id()
            );
            engine.run(&module, invocation(plan, root_entries, &stderr))
        }
    };
    if let Some(message) = outcome.message() {
        error!("{message}");
        let _ = writeln!(stderr, "{message}");
    }
    outcome.exit_status()
}

/// Streams a freshly compiled artifact to the shim, which caches it under the digest it
/// computed itself, on a thread of its own. Dropping `out` unsent (a module loaded from the
/// cache) tells the shim at once that there is nothing to store.
fn send_artifact(module: LoadedModule, mut out: File) -> Option<std::thread::JoinHandle<()>> {
    if !module.compiled {
        return None;
    }
    let send = move || {
        let sent = module.serialize().and_then(|artifact| {
            out.write_all(&(artifact.len() as u64).to_le_bytes())
                .and_then(|()| out.write_all(&artifact))
                .map_err(|e| e.to_string())
        });
        if let Err(e) = sent {
            warn!(
                "could not send the compiled module {} to the cache: {e}",
                module.digest
            );
        }
    };
    std::thread::Builder::new()
        .name("cache-send".into())
        .spawn(send)
        .map_err(|e| warn!("could not start sending the compiled module: {e}"))
        .ok()
}

fn invocation(plan: &RunPlan, root_entries: Vec<String>, stderr: &File) -> Invocation {
    let dup = |fd: i32| -> OwnedFd {
        // SAFETY: 0 and 1 are the container's stdio, placed by the shim; we take them over.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    Invocation {
        args: plan.args.clone(),
        env: plan.env.clone(),
        cwd: plan.cwd.clone(),
        root_entries,
        stdin: dup(0),
        stdout: dup(1),
        stderr: stderr
            .try_clone()
            .map(OwnedFd::from)
            .unwrap_or_else(|_| dup(STDERR_FD)),
    }
}

fn read_plan(control: &mut impl BufRead) -> Result<RunPlan, String> {
    let mut line = String::new();
    control
        .read_line(&mut line)
        .map_err(|e| format!("read the run plan: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("parse the run plan: {e}"))
}

fn read_module(mut module: File) -> Result<Vec<u8>, String> {
    use std::io::Seek;
    module
        .rewind()
        .map_err(|e| format!("read the module: {e}"))?;
    let mut bytes = Vec::new();
    module
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read the module: {e}"))?;
    Ok(bytes)
}

/// Blocks until the shim sends the start byte; false if it never will (pipe closed).
fn wait_for_start(control: &mut impl Read) -> bool {
    let mut byte = [0u8; 1];
    matches!(control.read(&mut byte), Ok(1) if byte[0] == START_BYTE)
}

fn report(mut status: &File, line: &str) {
    // If the shim is gone there is nobody to tell; the guest then waits for a start that
    // never comes and exits on EOF.
    let _ = writeln!(status, "{line}");
}

fn fail_setup(status: File, why: &str) -> ! {
    error!("guest setup failed: {why}");
    report(&status, &format!("error {why}"));
    std::process::exit(EXIT_SETUP_FAILED)
}

/// Logs go to fd 2, which the shim points at the container's `log` FIFO, each line tagged
/// with the container id, so containerd shows them with the shim's own.
fn init_logger(id: &str) {
    // SAFETY: fd 2 is ours for the life of the process.
    let log = unsafe { File::from_raw_fd(libc::STDERR_FILENO) };
    LineLogger::install(log, format!("id={id}"), log::LevelFilter::Info);
}
