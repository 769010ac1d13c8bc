//! Row 6: guest compute, the same module under the shim and run in this process by the
//! shim's own engine.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Seek};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use containerd_shim_wasm::engine::wasmer::{LoadedModule, WasmerEngine};
use containerd_shim_wasm::engine::{Invocation, Outcome};

use crate::ctr::{Runtime, Workload, CTR_TIMEOUT};
use crate::images::read;
use crate::procs::settle_shims;
use crate::table::{Group, Line};
use crate::{progress, round_robin, Bench};

/// Rounds of `probe sieve N`: about 0.6 s of compute under wasmer on this machine kind, long
/// enough that the guest's own timing dwarfs its clock's resolution.
const SIEVE_ROUNDS: &str = "400";

/// Row 6: `probe sieve` under the shim against the same module run in this process.
pub fn compute(b: &Bench) -> Result<Group, String> {
    progress("guest compute (sieve)");
    let probe = read(&b.config.guests.join("probe.wasm"))?;
    let engine = WasmerEngine::new(None).map_err(|e| format!("engine: {e}"))?;
    // Compiled once, outside the rounds: this row measures the generated code, not compiling.
    let module = engine.load(&probe, None)?;
    let work = Workload::new(
        &b.images.probe_wasm,
        &["/probe.wasm", "sieve", SIEVE_ROUNDS],
        None,
    );
    let mut lines = vec![Line::new("standalone"), Line::new("shim")];
    let mut checksums = HashSet::new();
    round_robin(b.config.warmup, b.config.rounds, 2, |_, i, counts| {
        let output = match i {
            0 => run_standalone(&engine, &module, &["/probe.wasm", "sieve", SIEVE_ROUNDS]),
            _ => {
                let (_, result) = b.run_rm(Runtime::Wasm, &work, CTR_TIMEOUT);
                settle_shims(&b.config.socket, Duration::from_secs(5));
                result
            }
        };
        let parsed = output.and_then(|o| parse_sieve(&o));
        if let Ok((checksum, _)) = &parsed {
            checksums.insert(checksum.clone());
        }
        if counts {
            lines[i].record(parsed.map(|(_, ns)| ns / 1e6));
        }
    });
    let mut group = Group::new(
        &format!("guest compute: probe sieve {SIEVE_ROUNDS}"),
        "ms",
        lines,
    );
    group
        .notes
        .push("the guest's own monotonic-clock time for its compute, start excluded".into());
    if checksums.len() > 1 {
        group.notes.push(format!(
            "WARNING: the runs disagree on the result: {checksums:?}"
        ));
    }
    Ok(group)
}

/// Runs a loaded module in this process as the shim's guest would, stdout to a file; its stdout.
pub fn run_standalone(
    engine: &WasmerEngine,
    module: &LoadedModule,
    args: &[&str],
) -> Result<String, String> {
    let mut stdout = tempfile::tempfile().map_err(|e| format!("tempfile: {e}"))?;
    let mut stderr = tempfile::tempfile().map_err(|e| format!("tempfile: {e}"))?;
    let fd = |f: &fs::File| {
        f.try_clone()
            .map(OwnedFd::from)
            .map_err(|e| format!("dup: {e}"))
    };
    let invocation = Invocation {
        args: args.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        cwd: PathBuf::from("/"),
        root_entries: Vec::new(),
        stdin: OwnedFd::from(fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?),
        stdout: fd(&stdout)?,
        stderr: fd(&stderr)?,
    };
    match engine.run(module, invocation) {
        Outcome::Exited(0) => read_back(&mut stdout),
        other => Err(format!(
            "standalone run: {other:?}, stderr {:?}",
            read_back(&mut stderr)
        )),
    }
}

/// Everything written to a file so far.
fn read_back(file: &mut fs::File) -> Result<String, String> {
    let mut text = String::new();
    file.rewind()
        .and_then(|()| file.read_to_string(&mut text))
        .map_err(|e| format!("read back: {e}"))?;
    Ok(text)
}

/// `probe sieve` prints its checksum, then the nanoseconds it measured.
fn parse_sieve(output: &str) -> Result<(String, f64), String> {
    let mut lines = output.lines();
    match (
        lines.next(),
        lines.next().and_then(|l| l.parse::<f64>().ok()),
    ) {
        (Some(checksum), Some(ns)) => Ok((checksum.to_string(), ns)),
        _ => Err(format!("unexpected sieve output {output:?}")),
    }
}
