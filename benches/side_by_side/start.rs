//! Rows 1, 2 and 7: start-to-exit with a warm and a cold cache, and the shims' CPU time per
//! container (measured in the warm row's runs).

use std::time::Duration;

use crate::cpu::CpuTotals;
use crate::ctr::{Runtime, Workload, CTR_TIMEOUT};
use crate::images::HELLO;
use crate::procs::settle_shims;
use crate::table::{Group, Line};
use crate::{ms, progress, round_robin, versus, Bench};

/// Row 1: hello run to its exit and removed (through `Bench::run_rm`), its module cached, against runc and the control; also
/// row 7, the shims' CPU time in the same runs.
pub fn start_to_exit_warm(b: &Bench) -> Vec<Group> {
    progress("start-to-exit, warm cache");
    let runtimes = [Runtime::Runc, Runtime::Wasm, Runtime::Control];
    let work = |rt: Runtime| {
        let image = if rt == Runtime::Wasm {
            &b.images.hello_wasm
        } else {
            &b.images.hello_native
        };
        Workload::new(image, &[], Some(HELLO))
    };
    let mut lines: Vec<Line> = runtimes.iter().map(|rt| Line::new(rt.label())).collect();
    let mut cpu: Vec<CpuTotals> = runtimes.iter().map(|_| CpuTotals::default()).collect();
    round_robin(
        b.config.warmup,
        b.config.rounds,
        runtimes.len(),
        |_, i, counts| {
            let before = b.cpu.snapshot();
            let (elapsed, result) = b.run_rm(runtimes[i], &work(runtimes[i]), CTR_TIMEOUT);
            // The shim's last CPU time (its shutdown) belongs to this run, and the next run
            // starts with no shim alive.
            let settled = settle_shims(&b.config.socket, Duration::from_secs(5));
            let after = b.cpu.snapshot();
            if counts {
                lines[i].record(result.map(|_| ms(elapsed)));
                if settled {
                    cpu[i].add(before, after);
                }
            }
        },
    );
    vec![
        Group::new("start-to-exit hello, warm cache", "ms", lines),
        shim_cpu_group(&runtimes, &cpu),
    ]
}

fn shim_cpu_group(runtimes: &[Runtime], cpu: &[CpuTotals]) -> Group {
    let lines = runtimes
        .iter()
        .zip(cpu)
        .map(|(rt, totals)| Line {
            samples: vec![totals.per_container_ms()],
            n: totals.containers,
            mean_only: true,
            ..Line::new(rt.label())
        })
        .collect();
    let mut group = Group::new("shim CPU per container", "ms", lines);
    group
        .notes
        .push("mean over the warm start-to-exit runs: the cgroup's usage less containerd's".into());
    group
        .notes
        .push("own time (method: benches/side_by_side/cpu.rs)".into());
    group
}

/// Row 2: the same with a module the cache has never seen, every round.
pub fn start_to_exit_cold(b: &Bench) -> Group {
    progress("start-to-exit, cold cache");
    let lines = versus(b, &[Runtime::Runc, Runtime::Wasm], |round, runtime| {
        // runc has no compile cache: its side runs the same native hello as the warm row.
        let image = match runtime {
            Runtime::Wasm => &b.images.hello_cold[round],
            _ => &b.images.hello_native,
        };
        let work = Workload::new(image, &[], Some(HELLO));
        let (elapsed, result) = b.run_rm(runtime, &work, CTR_TIMEOUT);
        settle_shims(&b.config.socket, Duration::from_secs(5));
        result.map(|_| ms(elapsed))
    });
    let mut group = Group::new("start-to-exit hello, cold cache", "ms", lines);
    group
        .notes
        .push("wasm: a hello variant no run has seen, each round (one more custom section)".into());
    group
}
