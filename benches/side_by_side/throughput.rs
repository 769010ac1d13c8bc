//! Row 3: containers created, started, waited for and deleted per second, C at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::ctr::{Runtime, Workload, CTR_TIMEOUT};
use crate::images::HELLO;
use crate::procs::settle_shims;
use crate::table::{Group, Line};
use crate::{progress, round_robin, Bench};

/// Containers per batch at concurrency `c`: two waves at least, and never fewer than 16.
fn batch_size(c: usize) -> usize {
    (2 * c).max(16)
}

/// Row 3 at one concurrency: a batch per runtime per round, its rate in tasks per second.
pub fn throughput(b: &Bench, concurrency: usize) -> Group {
    progress(&format!("throughput at concurrency {concurrency}"));
    let runtimes = [Runtime::Runc, Runtime::Wasm];
    let mut lines: Vec<Line> = runtimes.iter().map(|rt| Line::new(rt.label())).collect();
    round_robin(
        b.config.warmup,
        b.config.rounds,
        runtimes.len(),
        |_, i, counts| {
            let image = if runtimes[i] == Runtime::Wasm {
                &b.images.hello_wasm
            } else {
                &b.images.hello_native
            };
            let work = Workload::new(image, &[], Some(HELLO));
            let (elapsed, failures) =
                batch(b, runtimes[i], &work, concurrency, batch_size(concurrency));
            settle_shims(&b.config.socket, Duration::from_secs(10));
            if counts {
                // Only the containers that ran as they should count towards the rate.
                let line = &mut lines[i];
                line.n += batch_size(concurrency);
                line.failures += failures;
                line.samples
                    .push((batch_size(concurrency) - failures) as f64 / elapsed.as_secs_f64());
            }
        },
    );
    let mut group = Group::new(
        &format!("throughput, concurrency {concurrency}"),
        "tasks/s",
        lines,
    );
    group.notes.push(format!(
        "batches of {} hello through {}; higher is better",
        batch_size(concurrency),
        b.client()
    ));
    group
}

/// `total` runs of `work` by `concurrency` workers; the batch's wall time and its failures.
fn batch(
    b: &Bench,
    runtime: Runtime,
    work: &Workload,
    concurrency: usize,
    total: usize,
) -> (Duration, usize) {
    let next = AtomicUsize::new(0);
    let failures = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    if let (_, Err(why)) = b.run_rm(runtime, work, CTR_TIMEOUT) {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("bench:   {} failed: {why}", runtime.label());
                    }
                }
            });
        }
    });
    (started.elapsed(), failures.load(Ordering::Relaxed))
}
