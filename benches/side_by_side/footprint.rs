//! Row 4: the memory of idle containers, K at a time, and of a pod in one shim.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::ctr::{parallel, Runtime, Workload};
use crate::procs::{processes, pss_kib, settle_shims, shim_pids, with_descendants};
use crate::table::{Group, Line};
use crate::{progress, round_robin, versus, Bench};

/// An idle container: the probe sleeping in WASI's poll_oneoff, or a native sleeper.
fn idle_workload(b: &Bench, runtime: Runtime) -> Workload {
    match runtime {
        Runtime::Wasm => {
            Workload::new(&b.images.probe_wasm, &["/probe.wasm", "sleep", "600"], None)
        }
        _ => Workload::new(&b.images.sleeper_native, &["/sleeper", "600"], None),
    }
}

/// Row 4: PSS per idle container with `k` containers running, one shim each.
pub fn footprint(b: &Bench, k: usize) -> Group {
    progress(&format!("footprint of {k} idle containers"));
    let lines = versus(b, &[Runtime::Runc, Runtime::Wasm], |_, runtime| {
        measure_idle(b, runtime, k, None).map(|m| m.total_mib / k as f64)
    });
    let mut group = Group::new(
        &format!("footprint per idle container, K={k}"),
        "MiB",
        lines,
    );
    group
        .notes
        .push("PSS of the shims and everything under them, divided by K".into());
    group
}

/// Row 4, the pod: 10 containers with one sandbox id, so one shim for all of them.
pub fn footprint_pod(b: &Bench) -> Vec<Group> {
    const POD: usize = 10;
    progress("footprint of a pod of 10 in one shim");
    let runtimes = [Runtime::Runc, Runtime::Wasm];
    let mut totals: Vec<Line> = runtimes.iter().map(|rt| Line::new(rt.label())).collect();
    let mut per: Vec<Line> = runtimes.iter().map(|rt| Line::new(rt.label())).collect();
    let mut shims: Vec<Vec<usize>> = vec![Vec::new(); runtimes.len()];
    round_robin(
        b.config.warmup,
        b.config.rounds,
        runtimes.len(),
        |round, i, counts| {
            // Never the same sandbox id for two runtimes: the shims' socket paths derive from it.
            let pod = format!("bench-pod-{}-{round}", runtimes[i].label());
            let measured = measure_idle(b, runtimes[i], POD, Some(&pod));
            if let (true, Ok(m)) = (counts, &measured) {
                shims[i].push(m.shims.len());
            }
            // More than one shim for one pod is a failure of the row, not a figure.
            let measured = measured.and_then(|m| match m.shims.len() {
                1 => Ok(m.total_mib),
                n => Err(format!("{n} shims for one pod, expected 1: {:?}", m.shims)),
            });
            if counts {
                totals[i].record(measured.clone());
                per[i].record(measured.map(|t| t / POD as f64));
            }
        },
    );
    let mut total = Group::new("pod of 10 idle containers, total", "MiB", totals);
    for (rt, counted) in runtimes.iter().zip(&shims) {
        let one = counted.iter().filter(|&&n| n == 1).count();
        total.notes.push(format!(
            "{}: one shim process for the pod in {one} of {} rounds",
            rt.label(),
            counted.len()
        ));
    }
    vec![
        total,
        Group::new("pod of 10 idle, per container", "MiB", per),
    ]
}

/// What one snapshot found: the PSS in total, and the shims (their command lines).
struct Footprint {
    total_mib: f64,
    shims: Vec<String>,
}

/// Starts `k` idle containers, waits until all run and settle, sums the PSS of the shims and
/// their descendants, then removes the containers (whatever happened).
fn measure_idle(
    b: &Bench,
    runtime: Runtime,
    k: usize,
    pod: Option<&str>,
) -> Result<Footprint, String> {
    let work = idle_workload(b, runtime);
    let start = |_| b.ctr.run_detached(runtime, &work, pod);
    let started = match pod {
        // A pod's first container starts alone, as its sandbox does under a kubelet, so that
        // its shim is up before the others are grouped onto it. (Started all at once on this
        // loaded machine, the wasm shim's crate sometimes brought up a second shim server for
        // the same pod: it replaces a pod socket that does not answer within 1 s.)
        Some(_) => [vec![start(0)], parallel(k - 1, start)].concat(),
        None => parallel(k, start),
    };
    let ids: Vec<String> = started
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    let measured = match started.into_iter().find_map(Result::err) {
        Some(why) => Err(why),
        None => wait_running(b, &ids).map(|()| {
            // Settled: whatever a start allocates and frees has been freed.
            std::thread::sleep(Duration::from_secs(1));
            snapshot_footprint(&b.config.socket)
        }),
    };
    b.ctr.remove(&ids);
    settle_shims(&b.config.socket, Duration::from_secs(10));
    measured
}

/// The PSS of every shim of our containerd and every process under them.
fn snapshot_footprint(socket: &Path) -> Footprint {
    let procs = processes();
    let shims = shim_pids(&procs, socket);
    let kib: u64 = with_descendants(&procs, &shims)
        .into_iter()
        .map(pss_kib)
        .sum();
    Footprint {
        total_mib: kib as f64 / 1024.0,
        shims: shims
            .iter()
            .filter_map(|pid| procs.iter().find(|p| p.pid == *pid))
            .map(|p| format!("{} {}", p.pid, p.argv.join(" ")))
            .collect(),
    }
}

/// Waits until `ctr tasks ls` shows every one of `ids` RUNNING.
fn wait_running(b: &Bench, ids: &[String]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = b.ctr.tasks()?;
        if ids
            .iter()
            .all(|id| tasks.get(id).is_some_and(|s| s == "RUNNING"))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("containers not all RUNNING after 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
