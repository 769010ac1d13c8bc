//! The guest process's side: read the plan, set up the filesystem, compile, wait for Start,
//! run the module, exit with its status. See `guest/mod.rs` for the protocol with the shim.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use log::{error, info};

use super::{mounts, signals, CONTROL_FD, MODULE_FD, START_BYTE, STATUS_FD, STDERR_FD};
use crate::engine::wasmer::WasmerEngine;
use crate::engine::{Invocation, Outcome};
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
    let prepared = mounts::prepare(&plan).and_then(|()| read_module(module));
    let bytes = match prepared {
        Ok(bytes) => bytes,
        Err(why) => fail_setup(status, &why),
    };
    report(status, "ok");
    let code = run(&plan, &bytes, &mut control, stderr);
    std::process::exit(code)
}

/// Compiles while waiting to be started, then runs; returns the exit status.
fn run(plan: &RunPlan, bytes: &[u8], control: &mut impl Read, mut stderr: File) -> i32 {
    let root_entries = mounts::root_entries(plan);
    let loaded = WasmerEngine::new(Some(&plan.cache_dir))
        .map_err(|e| format!("cannot start the wasm engine: {e}"))
        .and_then(|engine| engine.load(bytes).map(|module| (engine, module)));
    let entered = mounts::enter(plan);
    if !wait_for_start(control) {
        info!("released without start; exiting");
        return 0;
    }
    let outcome = match (loaded, entered) {
        (Err(why), _) | (_, Err(why)) => Outcome::NotRunnable(why),
        (Ok((engine, module)), Ok(())) => {
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

fn report(mut status: File, line: &str) {
    // If the shim is gone there is nobody to tell; the guest then waits for a start that
    // never comes and exits on EOF.
    let _ = writeln!(status, "{line}");
}

fn fail_setup(status: File, why: &str) -> ! {
    error!("guest setup failed: {why}");
    report(status, &format!("error {why}"));
    std::process::exit(EXIT_SETUP_FAILED)
}

/// Logs go to fd 2, which the shim points at the container's `log` FIFO, each line tagged
/// with the container id, so containerd shows them with the shim's own.
fn init_logger(id: &str) {
    // SAFETY: fd 2 is ours for the life of the process.
    let log = unsafe { File::from_raw_fd(libc::STDERR_FILENO) };
    LineLogger::install(log, format!("id={id}"), log::LevelFilter::Info);
}
