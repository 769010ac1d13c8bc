//! Load and churn through the real containerd `make test` starts: many `ctr run --rm` at once,
//! every container's output and exit code checked, and what a long-lived shim holds counted
//! before and after. The counts are bounded for CI; `make soak` runs the full ones
//! (`WASM_SHIM_SOAK=1`) and prints the figures.

mod common;

use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{containerd, parent_pid, unique_id, RunOpts, RunResult};

const NS: &str = "wasm-load";
const IMAGE: &str = "docker.io/library/e2e-load:latest";

fn image() -> String {
    common::probe_image(NS, IMAGE)
}

fn soak() -> bool {
    std::env::var_os("WASM_SHIM_SOAK").is_some_and(|v| v == "1")
}

/// The container ids this binary ran; their debris is checked at the end of each test.
fn opts(id: &str, args: &[&str], extra: &[String]) -> RunOpts {
    let mut o = RunOpts::new(&image(), id);
    o.namespace = NS.into();
    o.args = args.iter().map(|s| s.to_string()).collect();
    o.extra_flags = extra.to_vec();
    o
}

/// Runs `total` containers, `concurrency` at a time; `make` gives container `n` its id,
/// arguments and the output it must print. Returns every run that did not end as expected.
fn run_many(
    total: usize,
    concurrency: usize,
    make: impl Fn(usize) -> (String, Vec<String>, String, i32) + Sync,
    extra: &[String],
) -> (Vec<String>, Duration) {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..concurrency {
            scope.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return;
                }
                let (id, args, stdout, code) = make(n);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let r: RunResult = containerd().run(opts(&id, &args, extra));
                let right = !r.timed_out && r.code == Some(code) && r.stdout_str() == stdout;
                if !right {
                    failures.lock().unwrap().push(format!("{id}: {r}"));
                }
                if let Err(debris) =
                    std::panic::catch_unwind(|| containerd().assert_no_debris(NS, &id))
                {
                    failures.lock().unwrap().push(format!("{id}: {debris:?}"));
                }
            });
        }
    });
    (failures.into_inner().unwrap(), started.elapsed())
}

#[test]
fn output_of_every_container_arrives_whole_under_load() {
    let (total, concurrency) = if soak() { (2000, 32) } else { (500, 32) };
    // Each prints its own id: a line lost, or one container's output in another's, shows.
    let make = |n: usize| {
        let id = unique_id(&format!("out{n}"));
        let stdout = format!("/probe.wasm\nargs\n{id}\n");
        (
            id.clone(),
            vec!["/probe.wasm".into(), "args".into(), id],
            stdout,
            0,
        )
    };
    let (failures, took) = run_many(total, concurrency, make, &[]);
    println!(
        "{total} containers, {concurrency} at a time: {:.1} per second, {} failed",
        total as f64 / took.as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {total} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The shim process that serves the task `id`, and how many descriptors it holds.
fn shim_of(id: &str) -> i32 {
    parent_pid(containerd().task_pid(NS, id))
}

fn open_descriptors(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn churn_through_one_shim_leaves_nothing_behind() {
    let (sequential, concurrent, batch) = if soak() {
        (1000, 100, 8)
    } else {
        (100, 100, 8)
    };
    // Every container of the churn carries the same sandbox id, as a pod's containers do, so
    // one shim serves them all; an anchor keeps it alive between them.
    let sandbox = unique_id("churn-pod");
    let grouping = vec![
        "--annotation".to_string(),
        format!("io.kubernetes.cri.sandbox-id={sandbox}"),
    ];
    let anchor = unique_id("anchor");
    let mut anchor_opts = opts(&anchor, &["/probe.wasm", "sleep", "3600"], &grouping);
    // It runs as long as the whole churn.
    anchor_opts.timeout = Some(Duration::from_secs(3600));
    let mut anchor_run = containerd().spawn_run(anchor_opts);
    assert!(
        anchor_run.wait_running(Duration::from_secs(60)),
        "the anchor never ran"
    );
    let shim = shim_of(&anchor);
    // One run first, so the shim's lasting descriptors (its runtime, its event connection)
    // exist before counting.
    let warm = unique_id("warm");
    containerd()
        .run(opts(&warm, &["/probe.wasm", "exit", "0"], &grouping))
        .assert_code(0);
    let before = open_descriptors(shim);
    // Exit codes 0..=9 in turn: each container's own must come back.
    let make = |prefix: &'static str| {
        move |n: usize| {
            let id = unique_id(&format!("{prefix}{n}"));
            let code = (n % 10) as i32;
            let args = vec!["/probe.wasm".into(), "exit".into(), code.to_string()];
            (id, args, String::new(), code)
        }
    };
    let (mut failures, took) = run_many(sequential, 1, make("seq"), &grouping);
    println!(
        "{sequential} sequential runs through one shim: {:.1} per second",
        sequential as f64 / took.as_secs_f64()
    );
    let (more, took) = run_many(concurrent, batch, make("con"), &grouping);
    println!(
        "{concurrent} runs, {batch} at a time, through one shim: {:.1} per second",
        concurrent as f64 / took.as_secs_f64()
    );
    failures.extend(more);
    let after = open_descriptors(shim);
    println!("the shim held {before} descriptors before the churn and {after} after");
    containerd().ctr_ok(&["-n", NS, "tasks", "kill", "--signal", "SIGKILL", &anchor]);
    anchor_run.wait().assert_code(137);
    containerd().assert_no_debris(NS, &anchor);
    assert!(
        failures.is_empty(),
        "{} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(after, before, "descriptors leaked in the shim");
}
