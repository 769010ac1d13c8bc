//! `make bench`: the shim side by side with runc on this machine, in one run.
//!
//! Every row compares contenders that run interleaved, round-robin (each round runs A, then B,
//! then the control, never all of A then all of B), so that a slow minute of the machine hits
//! all of them alike. The first rounds are warm-up and are dropped. The table gives the median,
//! min and max of each contender and the ratio of its median to the row's baseline (runc unless
//! the row says otherwise). Absolute figures belong to this machine; only the ratios carry over.
//!
//! This is a measurement, not a test: nothing here asserts a time. A run that does not exit 0
//! with exactly the output its program prints is a failure: left out of the figures, counted.
//!
//! The Makefile starts a private containerd with the release shim and passes (environment):
//!   BENCH_CONTAINERD_DIR  that containerd's directory (socket, pid file, opt/bin, cache)
//!   BENCH_GUESTS_DIR      the guests built by tests/guests/build.sh
//!   BENCH_SHIM            the shim binary containerd runs
//!   BENCH_IMAGE_TOOL      wasm-image (default: beside BENCH_SHIM)
//!   BENCH_PYTHON_WASM     CPython for WASI (the large-module rows are skipped without it)
//!   BENCH_OUTPUT          a file to write the table to, as well as stdout
//!   BENCH_ROUNDS          measured rounds per row (default 15)
//!   BENCH_WARMUP          warm-up rounds per row (default 2)
//!   BENCH_PYTHON_COLD_ROUNDS  measured rounds of the large module's cold compile (default 5)
//!   BENCH_ROWS            some rows only, e.g. `start,pod` (see ROWS)
//!   BENCH_CLIENT          how containers are run to their exit: `api` (default: containerd's
//!                         gRPC API over one connection, as kubelet's CRI plugin does) or `ctr`
//!                         (a `ctr run --rm` process per container)
//!   CTR                   the ctr binary (default /usr/bin/ctr)

// One file per row (or pair of rows), and one per layer under them: ctr, containerd's API,
// images, processes, CPU accounting, the table and its header.
#[path = "side_by_side/api.rs"]
mod api;
#[path = "side_by_side/compute.rs"]
mod compute;
#[path = "side_by_side/cpu.rs"]
mod cpu;
#[path = "side_by_side/ctr.rs"]
mod ctr;
#[path = "side_by_side/footprint.rs"]
mod footprint;
#[path = "side_by_side/images.rs"]
mod images;
#[path = "side_by_side/machine.rs"]
mod machine;
#[path = "side_by_side/procs.rs"]
mod procs;
#[path = "side_by_side/python.rs"]
mod python;
#[path = "side_by_side/start.rs"]
mod start;
#[path = "side_by_side/table.rs"]
mod table;
#[path = "side_by_side/throughput.rs"]
mod throughput;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cpu::CpuAccount;
use ctr::{Ctr, Runtime, Workload, NAMESPACE};
use images::Images;
use procs::{processes, settle_shims, shim_pids, LINGERED};
use table::Group;

/// The rows, in the order they run: `start` is rows 1 and 7 (the shims' CPU time is measured
/// in its runs), `cold` row 2, `throughput` row 3, `footprint` and `pod` row 4, `python` row 5,
/// `compute` row 6.
const ROWS: [&str; 7] = [
    "start",
    "cold",
    "throughput",
    "footprint",
    "pod",
    "python",
    "compute",
];

/// The second name under which runc's shim is installed, for the control row.
const CONTROL_SHIM: &str = "containerd-shim-runccontrol-v2";

/// What the Makefile hands over, read once.
struct Config {
    dir: PathBuf,
    socket: PathBuf,
    guests: PathBuf,
    shim: PathBuf,
    image_tool: PathBuf,
    python: Option<PathBuf>,
    output: Option<PathBuf>,
    ctr: String,
    rounds: usize,
    warmup: usize,
    python_cold_rounds: usize,
    /// The rows to run (all by default).
    rows: Vec<String>,
    /// Run-to-exit through containerd's API (true) or `ctr run --rm`.
    api_client: bool,
    /// Scratch files (module variants, image tarballs), removed at the end.
    work: PathBuf,
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let dir = PathBuf::from(required("BENCH_CONTAINERD_DIR")?);
        let shim = PathBuf::from(required("BENCH_SHIM")?);
        let image_tool = std::env::var_os("BENCH_IMAGE_TOOL")
            .map(PathBuf::from)
            .unwrap_or_else(|| shim.with_file_name("wasm-image"));
        Ok(Config {
            socket: dir.join("containerd.sock"),
            guests: PathBuf::from(required("BENCH_GUESTS_DIR")?),
            python: std::env::var_os("BENCH_PYTHON_WASM").map(PathBuf::from),
            output: std::env::var_os("BENCH_OUTPUT").map(PathBuf::from),
            ctr: std::env::var("CTR").unwrap_or_else(|_| "/usr/bin/ctr".into()),
            rounds: number("BENCH_ROUNDS", 15)?,
            warmup: number("BENCH_WARMUP", 2)?,
            python_cold_rounds: number("BENCH_PYTHON_COLD_ROUNDS", 5)?,
            rows: rows()?,
            api_client: api_client()?,
            work: dir.join("bench-work"),
            dir,
            shim,
            image_tool,
        })
    }
}

/// A variable the Makefile always sets.
fn required(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set: run this through `make bench`"))
}

/// The rows of BENCH_ROWS (comma-separated), or all of them.
fn rows() -> Result<Vec<String>, String> {
    let Ok(list) = std::env::var("BENCH_ROWS") else {
        return Ok(ROWS.iter().map(|r| r.to_string()).collect());
    };
    let rows: Vec<String> = list.split(',').map(|r| r.trim().to_string()).collect();
    match rows.iter().find(|r| !ROWS.contains(&r.as_str())) {
        Some(bad) => Err(format!(
            "BENCH_ROWS: no row {bad:?}; rows: {}",
            ROWS.join(",")
        )),
        None => Ok(rows),
    }
}

/// BENCH_CLIENT: `api` (the default) or `ctr`.
fn api_client() -> Result<bool, String> {
    match std::env::var("BENCH_CLIENT").as_deref() {
        Err(_) | Ok("api") => Ok(true),
        Ok("ctr") => Ok(false),
        Ok(other) => Err(format!("BENCH_CLIENT={other}: give api or ctr")),
    }
}

/// A count from the environment, or its default.
fn number(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

/// Runs `rounds` rounds after `warmup` ones; in each round `each` is called once per contender,
/// in order, with the round number (warm-up rounds included, counting from 0) and whether the
/// round counts.
fn round_robin(
    warmup: usize,
    rounds: usize,
    contenders: usize,
    mut each: impl FnMut(usize, usize, bool),
) {
    for round in 0..warmup + rounds {
        for contender in 0..contenders {
            each(round, contender, round >= warmup);
        }
    }
}

/// One line per runtime, filled round-robin (see [`round_robin`]): `measure(round, runtime)`
/// for each in turn, recorded once the warm-up is over.
fn versus(
    b: &Bench,
    runtimes: &[ctr::Runtime],
    mut measure: impl FnMut(usize, ctr::Runtime) -> Result<f64, String>,
) -> Vec<table::Line> {
    let mut lines: Vec<table::Line> = runtimes
        .iter()
        .map(|rt| table::Line::new(rt.label()))
        .collect();
    round_robin(
        b.config.warmup,
        b.config.rounds,
        runtimes.len(),
        |round, i, counts| {
            let value = measure(round, runtimes[i]);
            if counts {
                lines[i].record(value);
            }
        },
    );
    lines
}

/// One line on stderr as each row starts, with the time since the start and the load.
fn progress(what: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    let secs = START.get_or_init(Instant::now).elapsed().as_secs();
    eprintln!(
        "bench: [{:02}:{:02}] {what} (load average {})",
        secs / 60,
        secs % 60,
        machine::load_average()
    );
}

/// A duration in milliseconds, the unit of every time in the table.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Everything the rows share.
struct Bench<'a> {
    config: &'a Config,
    ctr: Ctr<'a>,
    /// The connection to containerd's API, unless BENCH_CLIENT=ctr.
    api: Option<api::Api<'a>>,
    images: Images,
    cpu: &'a CpuAccount,
}

impl Bench<'_> {
    /// One container of `work` run to its exit and removed, by the client BENCH_CLIENT names;
    /// its wall time and its stdout if it ran as it should.
    fn run_rm(
        &self,
        runtime: Runtime,
        work: &Workload,
        timeout_secs: u32,
    ) -> (Duration, Result<String, String>) {
        match &self.api {
            Some(api) => api.run_rm(runtime, work, timeout_secs),
            None => self.ctr.run_rm(runtime, work, timeout_secs),
        }
    }

    /// How the runs are made, for the table's notes.
    fn client(&self) -> &'static str {
        match self.api {
            Some(_) => "containerd's API (create, start, wait, delete)",
            None => "`ctr run --rm` (create, start, wait, delete)",
        }
    }
}

/// containerd's pid, from the file the harness writes.
fn containerd_pid(config: &Config) -> Result<i32, String> {
    let path = config.dir.join("containerd.pid");
    fs::read_to_string(&path)
        .map_err(|e| format!("read {}: {e}", path.display()))?
        .trim()
        .parse()
        .map_err(|_| format!("{} holds no pid", path.display()))
}

/// runc's shim, which the control runtime runs under a second name.
const RUNC_SHIM: &str = "/usr/bin/containerd-shim-runc-v2";

/// Installs runc's shim under a second name where containerd looks first (the harness puts
/// DIR/opt/bin first on the PATH it gives shims), and checks that it runs a container: containerd
/// finds a runtime's binary only by that name, and the shim process is runc's own binary.
fn install_control_runtime(config: &Config, ctr: &Ctr, sleeper: &str) -> Result<(), String> {
    let link = config.dir.join("opt/bin").join(CONTROL_SHIM);
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(RUNC_SHIM, &link)
        .map_err(|e| format!("symlink {}: {e}", link.display()))?;
    let work = Workload::new(sleeper, &["/sleeper", "600"], None);
    let id = ctr.run_detached(Runtime::Control, &work, None)?;
    let runc_shims = shim_pids(&processes(), &config.socket)
        .into_iter()
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == Path::new(RUNC_SHIM))
        })
        .count();
    ctr.remove(&[id]);
    match runc_shims {
        1 => Ok(()),
        n => Err(format!(
            "{n} runc shims ran the control container, expected 1"
        )),
    }
}

/// Removes every task, container and image of the bench's namespace, then the namespace.
fn clean_namespace(ctr: &Ctr) {
    let list = |args: &[&str]| -> Vec<String> {
        ctr.ok(args)
            .map(|o| {
                o.lines()
                    .map(str::to_string)
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut ids = list(&["tasks", "ls", "-q"]);
    ids.extend(list(&["containers", "ls", "-q"]));
    ids.sort();
    ids.dedup();
    ctr.remove(&ids);
    let images = list(&["images", "ls", "-q"]);
    if !images.is_empty() {
        // --sync: the content goes too, or the namespace cannot be removed.
        let mut args = vec!["images", "rm", "--sync"];
        args.extend(images.iter().map(String::as_str));
        let _ = ctr.ok(&args);
    }
    // The garbage collector may still hold the images' blobs and snapshots for a moment.
    let mut why = String::new();
    for _ in 0..20 {
        match remove_namespace(ctr) {
            Ok(()) => return,
            Err(e) => why = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("bench: warning: namespace {NAMESPACE} left: {why}");
}

/// `ctr namespaces rm`, which takes no `-n`.
fn remove_namespace(ctr: &Ctr) -> Result<(), String> {
    let out = Command::new(&ctr.config.ctr)
        .arg("--address")
        .arg(&ctr.config.socket)
        .args(["namespaces", "rm", NAMESPACE])
        .output()
        .map_err(|e| format!("run ctr: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Cleans up on every way out of `main`, a panic included.
struct Cleanup<'a> {
    ctr: Ctr<'a>,
    cpu: &'a CpuAccount,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        eprintln!("bench: cleaning up namespace {NAMESPACE}");
        clean_namespace(&self.ctr);
        settle_shims(&self.ctr.config.socket, Duration::from_secs(10));
        self.cpu.leave();
        let _ = fs::remove_dir_all(&self.ctr.config.work);
    }
}

/// The rows BENCH_ROWS asks for, in the order of [`ROWS`]; one group per line block of the table.
fn run_rows(b: &Bench) -> Result<Vec<Group>, String> {
    let wanted = |row: &str| b.config.rows.iter().any(|r| r == row);
    let mut groups = Vec::new();
    let mut cpu_group = None;
    if wanted("start") {
        groups = start::start_to_exit_warm(b);
        // The CPU row reads best last; it was measured in the warm row's runs.
        cpu_group = groups.pop();
    }
    if wanted("cold") {
        groups.push(start::start_to_exit_cold(b));
    }
    if wanted("throughput") {
        groups.extend([1, 8, 32].map(|c| throughput::throughput(b, c)));
    }
    if wanted("footprint") {
        groups.extend([1, 10, 30].map(|k| footprint::footprint(b, k)));
    }
    if wanted("pod") {
        groups.extend(footprint::footprint_pod(b));
    }
    match (&b.images.python, wanted("python")) {
        (Some(python), true) => {
            groups.push(python::python_warm(b, python)?);
            groups.push(python::python_cold(b, python));
        }
        (None, true) => eprintln!("bench: no BENCH_PYTHON_WASM: the python rows are skipped"),
        _ => {}
    }
    if wanted("compute") {
        groups.push(compute::compute(b)?);
    }
    groups.extend(cpu_group);
    Ok(groups)
}

fn main() {
    if let Err(e) = bench() {
        eprintln!("bench: error: {e}");
        std::process::exit(1);
    }
}

/// How long the rows took, how busy the machine was, and any shim that had to be killed.
fn footer(took: Duration) -> String {
    let mut out = format!(
        "rows took {} min; load average at the end: {}\n",
        took.as_secs() / 60,
        machine::load_average()
    );
    let lingered = LINGERED.load(Ordering::Relaxed);
    if lingered > 0 {
        out += &format!(
            "{lingered} shim process(es) outlived their last container and were killed (see stderr)\n"
        );
    }
    out
}

fn bench() -> Result<(), String> {
    let config = Config::from_env()?;
    let containerd = containerd_pid(&config)?;
    fs::create_dir_all(&config.work)
        .map_err(|e| format!("create {}: {e}", config.work.display()))?;
    let header = machine::header(&config, containerd);
    eprint!("{header}");
    let cpu = CpuAccount::enter(containerd)?;
    let _cleanup = Cleanup {
        ctr: Ctr { config: &config },
        cpu: &cpu,
    };
    let ctr = Ctr { config: &config };
    progress("building and importing the images");
    let images = images::prepare_images(&config, &ctr)?;
    install_control_runtime(&config, &ctr, &images.sleeper_native)?;
    let api = match config.api_client {
        true => Some(api::Api::connect(&config)?),
        false => None,
    };
    let b = Bench {
        config: &config,
        ctr,
        api,
        images,
        cpu: &cpu,
    };
    let started = Instant::now();
    let groups = run_rows(&b)?;
    let table = table::render(&header, &groups) + &footer(started.elapsed());
    print!("{table}");
    if let Some(path) = &config.output {
        fs::write(path, &table).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(())
}
