//! WASI conformance driver: every test of the WebAssembly WASI test suite (wasm32-wasip1), run
//! twice — on wasmer-wasix standalone, configured as `wasmer run --mapdir /:ROOT` configures it,
//! and through the real containerd and this shim — then checked against
//! `tests/conformance/expectations.txt`. See `tests/conformance/README.md`.
//!
//! A `harness = false` test: `main` is the driver, and the same binary re-executed with
//! [`CHILD_ENV`] set is the standalone runner for one test (a child process, so a hung or
//! crashing guest is killed at its timeout without taking the driver down).
//!
//! The checks follow the suite's own harness (WebAssembly/wasi-testsuite, test-runner/): a
//! test is `NAME.wasm` plus an optional `NAME.json` giving `args`, `env` (the guest's whole
//! environment), `root` (a fixture directory preopened as the guest's `/`), `exit_code`
//! (default 0), and `stdout`/`stderr`, of which only the first len(expected) bytes are compared,
//! and only when the key is present.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use common::{containerd, unique_id, RunOpts};

/// The suites, in the order the table lists them.
const SUITES: [&str; 3] = ["assemblyscript", "c", "rust"];
/// Where each suite's tests sit under the suite directory.
const SUITE_SUBDIR: &str = "testsuite/wasm32-wasip1";
/// Overrides where the suite is; by default `../shared/fixtures/wasi-testsuite` beside the repo.
const SUITE_DIR_ENV: &str = "WASI_TESTSUITE_DIR";
/// Set (to a JSON [`ChildJob`]) when this binary is re-executed to run one test standalone.
const CHILD_ENV: &str = "WASI_CONFORMANCE_STANDALONE_JOB";
/// The containerd namespace of every image and container of this driver, so it never meets the
/// end-to-end tests' (or anyone's) containers in a shared containerd.
const NAMESPACE: &str = "conformance";
/// Where the test modules live inside the images. Tests with a `root` fixture see the fixture's
/// entries at `/` exactly as they are in the suite; the modules need a place too, and a hidden
/// directory of its own is one no test opens: the Rust tests work in `*.cleanup` directories
/// they create under `/`, the C tests open the fixture's files by name, and none lists `/`
/// itself (which also holds the `/dev` and `/run` every container gets).
const MODULE_DIR: &str = "/.wasi-testsuite";
/// Per run, either column. Generous: the first start of a module compiles it (seconds cold).
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// Parallel runs: 2 cores here, shared; containerd runs spend much of their time waiting on ctr.
const STANDALONE_JOBS: usize = 2;
const CONTAINERD_JOBS: usize = 3;
/// Table cells longer than this are cut; the mismatch report prints reasons whole.
const CELL_WIDTH: usize = 56;

// ---------------------------------------------------------------------------------------------
// The suite: test discovery and specs

/// One test's JSON spec, in the legacy format the prebuilt suite uses.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Spec {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    root: Option<String>,
    /// The older form of `root` (each directory preopened under its own name); this driver
    /// lays out only `root`, and refuses a test that uses `dirs` rather than run it wrongly.
    dirs: Option<Vec<String>>,
    exit_code: i32,
    stdout: Option<String>,
    stderr: Option<String>,
}

#[derive(Debug, Clone)]
struct TestCase {
    suite: &'static str,
    name: String,
    wasm: PathBuf,
    spec: Spec,
    /// The `root` fixture on the host, if the spec names one.
    root: Option<PathBuf>,
}

impl TestCase {
    /// `suite/name`, the key of the table and of the expectations file.
    fn id(&self) -> String {
        format!("{}/{}", self.suite, self.name)
    }
}

fn suite_root() -> PathBuf {
    std::env::var_os(SUITE_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_dir().join("../shared/fixtures/wasi-testsuite"))
}

/// Every test of every suite, sorted by suite then name. Panics on a missing suite or a spec
/// this driver cannot honour: a conformance run that silently lost tests would prove nothing.
fn discover(root: &Path) -> Vec<TestCase> {
    let mut tests = Vec::new();
    for suite in SUITES {
        let dir = root.join("tests").join(suite).join(SUITE_SUBDIR);
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap_or_else(|e| {
                panic!(
                    "cannot read the WASI test suite at {} ({e}); set {SUITE_DIR_ENV}",
                    dir.display()
                )
            })
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".wasm").map(str::to_string)
            })
            .collect();
        names.sort();
        for name in names {
            tests.push(load_test(suite, &dir, name));
        }
    }
    tests
}

fn load_test(suite: &'static str, dir: &Path, name: String) -> TestCase {
    let json = dir.join(format!("{name}.json"));
    let spec: Spec = match fs::read_to_string(&json) {
        Ok(text) => serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not a spec this driver knows: {e}", json.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Spec::default(),
        Err(e) => panic!("cannot read {}: {e}", json.display()),
    };
    assert!(
        spec.dirs.is_none(),
        "{}: `dirs` is not supported by this driver (only `root`)",
        json.display()
    );
    let root = spec.root.as_ref().map(|r| dir.join(r));
    TestCase {
        suite,
        wasm: dir.join(format!("{name}.wasm")),
        name,
        spec,
        root,
    }
}

// ---------------------------------------------------------------------------------------------
// Results and the harness's checks

/// What one run produced.
#[derive(Debug, Default)]
struct RunOutput {
    /// `None` when the process died by a signal or was killed at the timeout.
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    timed_out: bool,
    elapsed: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Fail,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
        }
    }

    fn parse(word: &str) -> Option<Status> {
        match word {
            "pass" => Some(Status::Pass),
            "fail" => Some(Status::Fail),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Verdict {
    status: Status,
    /// Why it failed, one line; empty on a pass.
    reason: String,
}

impl Verdict {
    fn cell(&self) -> String {
        match self.status {
            Status::Pass => "pass".into(),
            Status::Fail => cut(&format!("FAIL {}", self.reason), CELL_WIDTH),
        }
    }
}

/// The suite harness's checks, in its order (stdout, stderr, then the exit code); the first
/// failed check is the reason.
fn judge(spec: &Spec, out: &RunOutput) -> Verdict {
    let fail = |reason: String| Verdict {
        status: Status::Fail,
        reason,
    };
    if out.timed_out {
        return fail(format!("timed out after {RUN_TIMEOUT:?}"));
    }
    if let Some(want) = &spec.stdout {
        if !out.stdout.starts_with(want.as_bytes()) {
            return fail(format!("stdout {:?}, want {want:?}", lossy(&out.stdout)));
        }
    }
    if let Some(want) = &spec.stderr {
        if !out.stderr.starts_with(want.as_bytes()) {
            return fail(format!("stderr {:?}, want {want:?}", lossy(&out.stderr)));
        }
    }
    if out.code != Some(spec.exit_code) {
        let code = out.code.map_or("signal".to_string(), |c| c.to_string());
        return fail(format!(
            "exit {code} (want {}): {}",
            spec.exit_code,
            stderr_summary(&lossy(&out.stderr))
        ));
    }
    Verdict {
        status: Status::Pass,
        reason: String::new(),
    }
}

/// The line of stderr that says what went wrong: a Rust panic's message (the line after
/// "panicked at …:" in current Rust), else the first line that is not a `note:`.
fn stderr_summary(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let panic_at = lines.iter().position(|l| l.contains("panicked at"));
    let line = match panic_at {
        Some(i) if lines[i].ends_with(':') && i + 1 < lines.len() => lines[i + 1],
        Some(i) => lines[i],
        None => lines
            .iter()
            .copied()
            .find(|l| !l.starts_with("note:"))
            .unwrap_or("(no stderr)"),
    };
    cut(&compact_errno(line), 160)
}

/// `Errno { code: 2, name: "ACCES", message: "Permission denied." }`, as the Rust tests print
/// a WASI errno, shortened to `ACCES`.
fn compact_errno(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find("Errno { code: ") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let errno = &rest[start..start + len];
        let name = errno
            .split_once("name: \"")
            .and_then(|(_, n)| n.split_once('"'))
            .map_or(errno, |(n, _)| n);
        out.push_str(&rest[..start]);
        out.push_str(name);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// At most `max` characters, marked with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

// ---------------------------------------------------------------------------------------------
// Fixtures: fresh copies with the modes a git checkout has

/// Copies `src` into `dst` (created), giving directories 0755 and files 0644 and keeping
/// symlinks as symlinks. The suite is stored read-only here, but a checkout of it (what the
/// suite's harness runs on) is writable, and tests create and change files in it.
fn copy_fixture(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755)).expect("chmod fixture copy");
    let entries = fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    for entry in entries.map(|e| e.expect("fixture entry")) {
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type().expect("fixture entry type");
        if kind.is_dir() {
            copy_fixture(&from, &to);
        } else if kind.is_symlink() {
            let target = fs::read_link(&from).expect("read fixture symlink");
            std::os::unix::fs::symlink(target, &to).expect("copy fixture symlink");
        } else {
            fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
            fs::set_permissions(&to, fs::Permissions::from_mode(0o644)).expect("chmod file");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Standalone: wasmer-wasix as `wasmer run` sets it up, in a child process

/// What the child runs: one module with its args and env, the fixture copy (if any) mounted
/// at `/`.
#[derive(Debug, Serialize, Deserialize)]
struct ChildJob {
    module: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    root: Option<PathBuf>,
}

/// Runs one test standalone in a child process, on a fresh copy of its fixture.
fn run_standalone(test: &TestCase, work: &Path) -> RunOutput {
    let dir = work.join("standalone").join(test.suite).join(&test.name);
    let root = test.root.as_ref().map(|src| {
        let copy = dir.join("root");
        copy_fixture(src, &copy);
        copy
    });
    let job = ChildJob {
        module: test.wasm.clone(),
        args: test.spec.args.clone(),
        env: test.spec.env.clone(),
        root,
    };
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.env(CHILD_ENV, serde_json::to_string(&job).expect("job to JSON"));
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_with_timeout(cmd)
}

/// Spawns `cmd`, collects its output, and SIGKILLs it at [`RUN_TIMEOUT`].
fn run_with_timeout(mut cmd: Command) -> RunOutput {
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn the standalone runner");
    // The suite's harness gives the test a stdin pipe and, with nothing to write, closes it at
    // once (its final `communicate()`); `ctr run` with stdin at /dev/null does the same.
    drop(child.stdin.take());
    let readers = [
        reader(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        reader(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ];
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the standalone runner") {
            break Some(status);
        }
        if started.elapsed() > RUN_TIMEOUT {
            timed_out = true;
            let _ = child.kill();
            break child.wait().ok();
        }
        thread::sleep(Duration::from_millis(5));
    };
    let [out, err] = readers.map(|r| r.join().unwrap_or_default());
    RunOutput {
        code: status.and_then(|s| s.code()).filter(|_| !timed_out),
        stdout: out,
        stderr: err,
        timed_out,
        elapsed: started.elapsed(),
    }
}

fn reader(source: Option<Box<dyn Read + Send>>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut s) = source {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    })
}

/// The child: runs the job the way `wasmer run MODULE --mapdir /:ROOT -- ARGS` does for a plain
/// module (wasmer's `WasiRunner::run_wasm`: its default root filesystem, the host directory
/// mounted at `/`, the preopens it adds, stdio inherited), and exits with the guest's status.
fn standalone_child(job: &str) -> ExitCode {
    let job: ChildJob = serde_json::from_str(job).expect("a job from the driver");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _entered = runtime.enter();
    let bytes = fs::read(&job.module).expect("read the module");
    let engine = wasmer::Engine::default();
    let module = match wasmer::Module::new(&engine, &bytes) {
        Ok(module) => module,
        Err(e) => return child_error(&format!("the module does not compile: {e}")),
    };
    let hashed = wasmer_wasix::runtime::module_cache::HashedModuleData::new(bytes);
    let mut runner = wasmer_wasix::runners::wasi::WasiRunner::new();
    runner.with_args(job.args).with_envs(job.env);
    if let Some(root) = job.root {
        runner.with_mapped_directories([wasmer_wasix::runners::MappedDirectory {
            host: root,
            guest: "/".into(),
        }]);
    }
    let program = job.module.display().to_string();
    let engine = wasmer_wasix::runners::wasi::RuntimeOrEngine::Engine(engine);
    match runner.run_wasm(engine, &program, module, *hashed.hash()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = err
                .chain()
                .filter_map(|e| e.downcast_ref::<wasmer_wasix::WasiRuntimeError>())
                .find_map(|e| e.as_exit_code());
            match code {
                Some(code) => ExitCode::from(code.raw() as u8),
                None => child_error(&format!("{err:#}")),
            }
        }
    }
}

/// What `wasmer run` does with an error that is not an exit: print it, exit 1.
fn child_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

// ---------------------------------------------------------------------------------------------
// Through containerd: images, then `ctr run` per test

/// The tests that share one image: same suite, same fixture, same environment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ImageKey {
    suite: &'static str,
    root: Option<String>,
    env: BTreeMap<String, String>,
}

impl ImageKey {
    fn of(test: &TestCase) -> ImageKey {
        ImageKey {
            suite: test.suite,
            root: test.spec.root.clone(),
            env: test.spec.env.clone(),
        }
    }
}

/// One image per suite and fixture root: the fixture's contents at `/`, the suite's modules in
/// [`MODULE_DIR`]. The environment goes into the image config, not onto `ctr run --env`:
/// ctr adds containerd's default PATH to any image without an `Env`, and `--env` only adds to
/// it, so the image's own `Env` is the one way to give the guest exactly the spec's variables
/// (the suite wants the environment to hold only them). Tests with different environments
/// therefore get images of their own.
fn build_images(tests: &[TestCase], work: &Path) -> BTreeMap<ImageKey, String> {
    let mut groups: BTreeMap<ImageKey, Vec<&TestCase>> = BTreeMap::new();
    for test in tests {
        groups.entry(ImageKey::of(test)).or_default().push(test);
    }
    let dir = work.join("images");
    fs::create_dir_all(&dir).expect("mkdir images");
    let mut refs = BTreeMap::new();
    let mut env_images = 0;
    for (key, members) in groups {
        let mut slug = format!("{}-{}", key.suite, key.root.as_deref().unwrap_or("no-root"));
        if !key.env.is_empty() {
            env_images += 1;
            slug.push_str(&format!("-env{env_images}"));
        }
        let reference = format!("localhost/wasi-conformance/{}:latest", slug.to_lowercase());
        let tar = dir.join(format!("{slug}.tar"));
        build_image(&key, &members, &reference, &tar, &dir.join(&slug));
        containerd().import(NAMESPACE, &tar);
        refs.insert(key, reference);
    }
    refs
}

fn build_image(key: &ImageKey, members: &[&TestCase], reference: &str, tar: &Path, stage: &Path) {
    let first = members[0];
    let mut cmd = Command::new(common::image_tool());
    cmd.arg("build")
        .arg("--module")
        .arg(&first.wasm)
        .arg("--entrypoint")
        .arg(module_path(first))
        .arg("--name")
        .arg(reference)
        .arg("-o")
        .arg(tar);
    for test in &members[1..] {
        cmd.arg("--add")
            .arg(format!("{}:{MODULE_DIR}/", test.wasm.display()));
    }
    if let Some(root) = &first.root {
        copy_fixture(root, stage);
        cmd.arg("--add").arg(format!("{}:/", stage.display()));
    }
    for (k, v) in &key.env {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    let out = cmd.output().expect("run wasm-image");
    assert!(
        out.status.success(),
        "wasm-image failed for {reference}:\n{}",
        lossy(&out.stderr)
    );
}

/// Where a test's module is inside its image.
fn module_path(test: &TestCase) -> String {
    format!("{MODULE_DIR}/{}.wasm", test.name)
}

/// Tests that need an environment holding nothing at all, which no image can give under
/// `ctr run IMAGE`: containerd's `oci.WithImageConfig` adds its default PATH to an image
/// without `Env`. These run with `ctr run --config SPEC` instead (see [`run_exact_spec`]).
const EXACT_SPEC_TESTS: &[&str] = &["assemblyscript/environ_sizes_get-no-variables"];

/// `ctr run --rm` of one test in a fresh container (a fresh writable layer over the image).
fn run_containerd(test: &TestCase, image: &str, work: &Path) -> RunOutput {
    if EXACT_SPEC_TESTS.contains(&test.id().as_str()) {
        return run_exact_spec(test, work);
    }
    let mut args = vec![module_path(test)];
    args.extend(test.spec.args.iter().cloned());
    let result = containerd().run(RunOpts {
        namespace: NAMESPACE.into(),
        args,
        timeout: Some(RUN_TIMEOUT),
        ..RunOpts::new(image, &unique_id("wasi"))
    });
    run_output(result)
}

/// `ctr run --rm --config SPEC ID` of one test: the same containerd and shim, with the spec
/// given whole rather than built from an image. SPEC is containerd's default spec (`ctr oci
/// spec`, what `ctr run` starts from too) with the test's args and exactly its environment,
/// and as root a fresh directory laid out as the test's image is (the fixture copy, the module
/// in [`MODULE_DIR`]); ctr then creates no snapshot and adds nothing to the spec.
fn run_exact_spec(test: &TestCase, work: &Path) -> RunOutput {
    let id = unique_id("wasi");
    let bundle = work.join("exact-spec").join(&id);
    let rootfs = bundle.join("rootfs");
    match &test.root {
        Some(root) => copy_fixture(root, &rootfs),
        None => fs::create_dir_all(&rootfs).expect("mkdir rootfs"),
    }
    let module = rootfs.join(module_path(test).trim_start_matches('/'));
    fs::create_dir_all(module.parent().expect("module dir")).expect("mkdir module dir");
    fs::copy(&test.wasm, &module).expect("copy module");
    fs::set_permissions(&module, fs::Permissions::from_mode(0o755)).expect("chmod module");

    let out = containerd().ctr(&["oci", "spec"]);
    assert!(out.status.success(), "ctr oci spec: {}", lossy(&out.stderr));
    let mut spec: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("ctr oci spec prints JSON");
    let mut args = vec![module_path(test)];
    args.extend(test.spec.args.iter().cloned());
    let env: Vec<String> = test
        .spec
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    spec["process"]["args"] = serde_json::json!(args);
    spec["process"]["env"] = serde_json::json!(env);
    spec["process"]["cwd"] = serde_json::json!("/");
    spec["root"] = serde_json::json!({ "path": rootfs, "readonly": false });
    let config = bundle.join("config.json");
    fs::write(&config, spec.to_string()).expect("write spec");

    // `ctr run --config SPEC ID` takes no image: SPEC stands where RunOpts puts the image.
    let result = containerd().run(RunOpts {
        namespace: NAMESPACE.into(),
        extra_flags: vec!["--config".into()],
        timeout: Some(RUN_TIMEOUT),
        ..RunOpts::new(&config.display().to_string(), &id)
    });
    let _ = fs::remove_dir_all(&bundle);
    run_output(result)
}

fn run_output(result: common::RunResult) -> RunOutput {
    RunOutput {
        code: result.code,
        stdout: result.stdout,
        stderr: result.stderr,
        timed_out: result.timed_out,
        elapsed: result.elapsed,
    }
}

// ---------------------------------------------------------------------------------------------
// Running many at once

/// Runs `job` over `tests` on `jobs` threads, printing one progress line per test to stderr
/// (so a CI log shows where a wedged run is), and returns the verdicts in `tests` order.
fn run_all(
    column: &str,
    tests: &[TestCase],
    jobs: usize,
    job: impl Fn(&TestCase) -> RunOutput + Sync,
) -> Vec<Verdict> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Verdict>>> = tests.iter().map(|_| Mutex::new(None)).collect();
    thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(test) = tests.get(i) else { break };
                let out = job(test);
                let verdict = judge(&test.spec, &out);
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                eprintln!(
                    "[{column} {n}/{}] {} {} ({:.1}s)",
                    tests.len(),
                    test.id(),
                    verdict.cell(),
                    out.elapsed.as_secs_f64()
                );
                *results[i].lock().unwrap() = Some(verdict);
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().unwrap().expect("every test ran"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Expectations

const EXPECTATIONS: &str = "tests/conformance/expectations.txt";

/// One line of the expectations file: a test failing in at least one column, and why.
#[derive(Debug, Clone)]
struct Expectation {
    standalone: Status,
    containerd: Status,
    reason: String,
}

/// Parses `suite/test  standalone=pass|fail  containerd=pass|fail  # reason` lines; blank
/// lines and lines starting with `#` are comments. Tests not listed must pass in both columns.
fn parse_expectations(text: &str) -> Result<BTreeMap<String, Expectation>, String> {
    let mut map = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |msg: String| format!("{EXPECTATIONS}:{}: {msg}", n + 1);
        let (fields, reason) = line.split_once('#').unwrap_or((line, ""));
        let (id, exp) = parse_expectation(fields, reason.trim()).map_err(at)?;
        if exp.standalone == Status::Pass && exp.containerd == Status::Pass {
            return Err(at(format!("{id} passes in both columns: remove the line")));
        }
        if map.insert(id.clone(), exp).is_some() {
            return Err(at(format!("{id} is listed twice")));
        }
    }
    Ok(map)
}

fn parse_expectation(fields: &str, reason: &str) -> Result<(String, Expectation), String> {
    let words: Vec<&str> = fields.split_whitespace().collect();
    let [id, standalone, containerd] = words[..] else {
        return Err(format!(
            "expected `suite/test standalone=.. containerd=.. # reason`, got {fields:?}"
        ));
    };
    let column = |word: &str, name: &str| {
        word.strip_prefix(name)
            .and_then(|w| w.strip_prefix('='))
            .and_then(Status::parse)
            .ok_or_else(|| format!("expected {name}=pass or {name}=fail, got {word:?}"))
    };
    if reason.is_empty() {
        return Err(format!("{id} has no reason (add `# why` to the line)"));
    }
    let exp = Expectation {
        standalone: column(standalone, "standalone")?,
        containerd: column(containerd, "containerd")?,
        reason: reason.to_string(),
    };
    Ok((id.to_string(), exp))
}

fn load_expectations(tests: &[TestCase]) -> BTreeMap<String, Expectation> {
    let path = repo_dir().join(EXPECTATIONS);
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let map = parse_expectations(&text).unwrap_or_else(|e| panic!("{e}"));
    let known: BTreeSet<String> = tests.iter().map(TestCase::id).collect();
    let stale: Vec<&String> = map.keys().filter(|id| !known.contains(*id)).collect();
    assert!(
        stale.is_empty(),
        "{EXPECTATIONS} lists tests the suite does not have: {stale:?}"
    );
    map
}

// ---------------------------------------------------------------------------------------------
// Report

struct Row<'a> {
    test: &'a TestCase,
    standalone: Verdict,
    containerd: Verdict,
    expected: Option<&'a Expectation>,
}

impl Row<'_> {
    fn expected_status(&self) -> (Status, Status) {
        self.expected.map_or((Status::Pass, Status::Pass), |e| {
            (e.standalone, e.containerd)
        })
    }

    fn matches(&self) -> bool {
        self.expected_status() == (self.standalone.status, self.containerd.status)
    }

    /// What this row's expectations line would be, if it needs one.
    fn suggested_line(&self) -> Option<String> {
        let (s, c) = (self.standalone.status, self.containerd.status);
        if (s, c) == (Status::Pass, Status::Pass) {
            return None;
        }
        let (sr, cr) = (&self.standalone.reason, &self.containerd.reason);
        let reason = match (s, c) {
            (Status::Fail, Status::Fail) if sr != cr => {
                format!("standalone: {sr}; containerd: {cr}")
            }
            (_, Status::Fail) => cr.clone(),
            _ => sr.clone(),
        };
        Some(format!(
            "{}  standalone={}  containerd={}  # {}",
            self.test.id(),
            s.word(),
            c.word(),
            reason
        ))
    }
}

fn print_table(rows: &[Row]) {
    let width = rows
        .iter()
        .map(|r| r.test.id().len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!();
    println!(
        "  {:width$}  {:CELL_WIDTH$}  containerd",
        "test", "standalone"
    );
    for row in rows {
        // `!` marks a result that differs from the expectations file.
        let mark = if row.matches() { ' ' } else { '!' };
        println!(
            "{mark} {:width$}  {:CELL_WIDTH$}  {}",
            row.test.id(),
            row.standalone.cell(),
            row.containerd.cell()
        );
    }
}

fn print_totals(rows: &[Row]) {
    println!();
    println!("{:16}{:>12}{:>12}", "suite", "standalone", "containerd");
    let count = |rows: &[&Row], pick: fn(&Row) -> Status| {
        rows.iter().filter(|r| pick(r) == Status::Pass).count()
    };
    let mut groups: Vec<(&str, Vec<&Row>)> = SUITES
        .iter()
        .map(|s| (*s, rows.iter().filter(|r| r.test.suite == *s).collect()))
        .collect();
    groups.push(("total", rows.iter().collect()));
    for (name, members) in groups {
        let n = members.len();
        let standalone = count(&members, |r| r.standalone.status);
        let containerd = count(&members, |r| r.containerd.status);
        println!(
            "{name:16}{:>12}{:>12}",
            format!("{standalone}/{n}"),
            format!("{containerd}/{n}")
        );
    }
}

/// Every test whose results differ from the expectations file, with enough to act on, and
/// the lines the file would need to record the results as they are.
fn print_mismatches(rows: &[Row]) {
    let differing: Vec<&Row> = rows.iter().filter(|r| !r.matches()).collect();
    if differing.is_empty() {
        return;
    }
    println!();
    println!("results that differ from {EXPECTATIONS}:");
    for row in &differing {
        let (es, ec) = row.expected_status();
        println!(
            "  {}: expected standalone={} containerd={}, got standalone={} containerd={}",
            row.test.id(),
            es.word(),
            ec.word(),
            row.standalone.status.word(),
            row.containerd.status.word()
        );
        for (column, verdict) in [
            ("standalone", &row.standalone),
            ("containerd", &row.containerd),
        ] {
            if verdict.status == Status::Fail {
                println!("    {column}: {}", verdict.reason);
            }
        }
        if let Some(exp) = row.expected {
            println!("    recorded reason: {}", exp.reason);
        }
    }
    let mut suggestion = String::new();
    for row in &differing {
        match row.suggested_line() {
            Some(line) => writeln!(suggestion, "  {line}").unwrap(),
            None => writeln!(suggestion, "  (remove the line for {})", row.test.id()).unwrap(),
        }
    }
    println!("to record these results (edit the reasons to say why, in one line):");
    print!("{suggestion}");
}

// ---------------------------------------------------------------------------------------------
// Command line: libtest's, as far as cargo passes it

/// The positional filters and `--skip` patterns cargo may pass (`cargo test --test
/// conformance -- rust/fd_` runs the Rust tests whose name starts so); libtest's other flags
/// are accepted and ignored.
#[derive(Default)]
struct Filters {
    include: Vec<String>,
    skip: Vec<String>,
    list: bool,
}

impl Filters {
    fn from_args(args: impl Iterator<Item = String>) -> Filters {
        // libtest flags that take a separate value, whose value is not a filter.
        const WITH_VALUE: [&str; 6] = [
            "--test-threads",
            "--format",
            "--color",
            "--logfile",
            "-Z",
            "--report-time",
        ];
        let mut f = Filters::default();
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--list" => f.list = true,
                "--skip" => f.skip.extend(args.next()),
                a if WITH_VALUE.contains(&a) => {
                    args.next();
                }
                a if a.starts_with('-') => {}
                _ => f.include.push(arg),
            }
        }
        f
    }

    fn wants(&self, id: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| id.contains(p.as_str())))
            && !self.skip.iter().any(|p| id.contains(p.as_str()))
    }
}

// ---------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    if let Ok(job) = std::env::var(CHILD_ENV) {
        return standalone_child(&job);
    }
    let filters = Filters::from_args(std::env::args().skip(1));
    let all = discover(&suite_root());
    let expectations = load_expectations(&all);
    let tests: Vec<TestCase> = all.into_iter().filter(|t| filters.wants(&t.id())).collect();
    if filters.list {
        for test in &tests {
            println!("{}: test", test.id());
        }
        return ExitCode::SUCCESS;
    }
    if tests.is_empty() {
        println!("0 passed, 0 failed");
        return ExitCode::SUCCESS;
    }
    drive(&tests, &expectations)
}

fn drive(tests: &[TestCase], expectations: &BTreeMap<String, Expectation>) -> ExitCode {
    let started = Instant::now();
    // Fail before any work when there is no containerd to run the second column on.
    containerd();
    let work = tempfile::Builder::new()
        .prefix("wasi-conformance-")
        .tempdir()
        .expect("work directory");
    let standalone = run_all("standalone", tests, STANDALONE_JOBS, |t| {
        run_standalone(t, work.path())
    });
    let images = build_images(tests, work.path());
    let through = run_all("containerd", tests, CONTAINERD_JOBS, |t| {
        run_containerd(t, &images[&ImageKey::of(t)], work.path())
    });
    let rows: Vec<Row> = tests
        .iter()
        .zip(standalone.into_iter().zip(through))
        .map(|(test, (standalone, containerd))| Row {
            expected: expectations.get(&test.id()),
            test,
            standalone,
            containerd,
        })
        .collect();
    report(&rows, started.elapsed())
}

fn report(rows: &[Row], elapsed: Duration) -> ExitCode {
    print_table(rows);
    print_totals(rows);
    print_mismatches(rows);
    let passed = rows.iter().filter(|r| r.matches()).count();
    let failed = rows.len() - passed;
    println!();
    println!("wall time {:.0}s", elapsed.as_secs_f64());
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The repository, as `cargo test` says at run time: a test binary reused from another
/// checkout of the same sources (one shared target directory) must still read this one's files.
fn repo_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
