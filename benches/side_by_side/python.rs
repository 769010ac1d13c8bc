//! Row 5: a large real module, CPython for WASI: its cached start against hello's, and its
//! cold start against the engine's own compile of the same bytes.

use std::time::{Duration, Instant};

use containerd_shim_wasm::engine::cache::{digest_hex, ModuleCache};
use containerd_shim_wasm::engine::wasmer::{engine_key, WasmerEngine};

use crate::compute::run_standalone;
use crate::ctr::{Runtime, Workload, CTR_COLD_TIMEOUT, CTR_TIMEOUT};
use crate::images::{read, PythonImages, HELLO};
use crate::procs::settle_shims;
use crate::table::{figure, Group, Line};
use crate::{ms, progress, round_robin, Bench};

/// Row 5, cached: python -c 'print(1)' against hello, both wasm, round by round; and both
/// again in this process (the shim's engine loading the same cache entries), which is the
/// floor the engine and CPython's own start set for the shim.
pub fn python_warm(b: &Bench, python: &PythonImages) -> Result<Group, String> {
    progress("python, warm cache");
    const PYTHON_ARGS: [&str; 3] = ["/python.wasm", "-c", "print(1)"];
    let contenders = [
        Workload::new(&b.images.hello_wasm, &[], Some(HELLO)),
        Workload::new(&python.warm, &PYTHON_ARGS, Some("1\n")),
    ];
    // A run that lives on for a while warms the cache (see ensure_cached).
    let keep_alive = Workload::new(
        &python.warm,
        &["/python.wasm", "-c", "import time; time.sleep(3)"],
        None,
    );
    ensure_cached(b, &keep_alive, &python.bytes);
    let hello = read(&b.config.guests.join("hello.wasm"))?;
    let in_process = [
        InProcess::new(b, &hello, &["/hello.wasm"], HELLO),
        InProcess::new(b, &python.bytes, &PYTHON_ARGS, "1\n"),
    ];
    let mut lines = ["hello", "python", "hello in-process", "python in-process"].map(Line::new);
    round_robin(b.config.warmup, b.config.rounds, 4, |_, i, counts| {
        let value = match i {
            0 | 1 => {
                let (elapsed, result) = b.run_rm(Runtime::Wasm, &contenders[i], CTR_TIMEOUT);
                settle_shims(&b.config.socket, Duration::from_secs(5));
                result.map(|_| ms(elapsed))
            }
            _ => in_process[i - 2].start(),
        };
        if counts {
            lines[i].record(value);
        }
    });
    let mut group = Group::new("python -c print(1) vs hello, warm", "ms", lines.into());
    let medians = |a: &str, b: &str| Some(group.median_of(a)? - group.median_of(b)?);
    let notes = [
        medians("python", "hello").map(|d| {
            format!(
                "python - hello: {} ms (medians); python.wasm is {} MiB",
                figure(d),
                python.bytes.len() >> 20
            )
        }),
        medians("python in-process", "hello in-process").map(|d| {
            format!(
                "in-process: the shim's engine in this process loads the same cache entry and runs it: python - hello {} ms",
                figure(d)
            )
        }),
    ];
    group.notes.extend(notes.into_iter().flatten());
    Ok(group)
}

/// A cached module started in this process as a guest starts it: a new engine, the cache
/// entry loaded (never compiled), `_start` run with `args`.
struct InProcess<'a> {
    bytes: &'a [u8],
    digest: String,
    entry: std::path::PathBuf,
    args: &'a [&'a str],
    expected: &'a str,
}

impl<'a> InProcess<'a> {
    fn new(b: &Bench, bytes: &'a [u8], args: &'a [&'a str], expected: &'a str) -> InProcess<'a> {
        let digest = digest_hex(bytes);
        let entry = ModuleCache::open(&b.config.dir.join("cache"), &engine_key())
            .map(|cache| cache.entry_path(&digest))
            .unwrap_or_default();
        InProcess {
            bytes,
            digest,
            entry,
            args,
            expected,
        }
    }

    /// Milliseconds from a new engine to the module's exit.
    fn start(&self) -> Result<f64, String> {
        let started = Instant::now();
        let engine = WasmerEngine::new(None).map_err(|e| format!("engine: {e}"))?;
        let entry = std::fs::File::open(&self.entry)
            .map_err(|e| format!("cache entry {}: {e}", self.entry.display()))?;
        let module = engine.load_from(&self.digest, Some(entry), || Ok(self.bytes.to_vec()))?;
        if module.compiled {
            return Err(format!(
                "{} did not load from the cache",
                self.entry.display()
            ));
        }
        let output = run_standalone(&engine, &module, self.args)?;
        let elapsed = started.elapsed();
        if output != self.expected {
            return Err(format!("unexpected output {output:?}"));
        }
        Ok(ms(elapsed))
    }
}

/// Runs `work` until the shim's cache holds the module's compiled artifact. The guest streams
/// the artifact to the shim while it runs, and a shim whose container ends first exits with
/// the store unfinished (a partial temporary file stays in the cache): python -c 'print(1)'
/// never got its 50 MB artifact stored here, so `work` must live on for a few seconds.
fn ensure_cached(b: &Bench, work: &Workload, bytes: &[u8]) {
    let cache = ModuleCache::open(&b.config.dir.join("cache"), &engine_key());
    let Ok(cache) = cache else {
        return;
    };
    let entry = cache.entry_path(&digest_hex(bytes));
    for _ in 0..3 {
        if entry.exists() {
            return;
        }
        if let (_, Err(why)) = b.run_rm(Runtime::Wasm, work, CTR_COLD_TIMEOUT) {
            eprintln!("bench:   warming {} failed: {why}", work.image);
        }
        settle_shims(&b.config.socket, Duration::from_secs(30));
    }
    eprintln!(
        "bench: warning: {} is not in the cache after 3 runs",
        entry.display()
    );
}

/// Row 5, cold: a never-seen variant per round, through the shim and compiled in this process.
pub fn python_cold(b: &Bench, python: &PythonImages) -> Group {
    progress("python, cold cache (compile)");
    let mut lines = vec![Line::new("standalone"), Line::new("shim")];
    let work = |round: usize| {
        Workload::new(
            &python.cold[round].0,
            &["/python.wasm", "-c", "print(1)"],
            Some("1\n"),
        )
    };
    round_robin(1, b.config.python_cold_rounds, 2, |round, i, counts| {
        let value = match i {
            0 => standalone_compile(&python.cold[round].1),
            _ => {
                let (elapsed, result) = b.run_rm(Runtime::Wasm, &work(round), CTR_COLD_TIMEOUT);
                settle_shims(&b.config.socket, Duration::from_secs(30));
                result.map(|_| ms(elapsed))
            }
        };
        if counts {
            lines[i].record(value);
        }
    });
    let mut group = Group::new("python, cold: compile vs start", "ms", lines);
    group
        .notes
        .push("standalone: WasmerEngine::load of the same never-seen bytes in this process".into());
    group.notes.push(
        "(the shim's guest engine settings); shim: python -c 'print(1)' run to its exit".into(),
    );
    if let (Some(s), Some(c)) = (group.median_of("shim"), group.median_of("standalone")) {
        group.notes.push(format!(
            "shim - standalone compile: {} ms (medians)",
            figure(s - c)
        ));
    }
    group
}

/// Milliseconds for the shim's engine to compile `bytes` (no cache) in this process.
fn standalone_compile(bytes: &[u8]) -> Result<f64, String> {
    let engine = WasmerEngine::new(None).map_err(|e| format!("engine: {e}"))?;
    let started = Instant::now();
    let module = engine.load(bytes, None)?;
    let elapsed = started.elapsed();
    drop(module);
    Ok(ms(elapsed))
}
