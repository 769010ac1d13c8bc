//! Support for the end-to-end tests: a private containerd (started by
//! `tests/harness/containerd.sh` from `make test`) driven through `ctr`.
//!
//! Each `tests/*.rs` is its own crate and uses a different subset of this module.
#![allow(dead_code)]

pub mod cgroups;
pub mod cri;
pub mod procfs;
pub mod registry;
pub mod tasks_api;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Set by `make test` to the directory given to `containerd.sh start`.
pub const DIR_ENV: &str = "WASM_SHIM_CONTAINERD_DIR";
pub const RUNTIME: &str = "io.containerd.wasm.v1";
pub const SHIM_BINARY_NAME: &str = "containerd-shim-wasm-v1";
/// Used when `RunOpts::namespace` is empty.
pub const NAMESPACE: &str = "wasm-e2e";
/// Used when `RunOpts::timeout` is `None`; generous because a cold module compile can take tens
/// of seconds on this machine kind.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// For plain `ctr` calls: a wedged shim must fail a test, not hang the suite.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The daemon's major version (1 for 1.6/1.7, 2 for 2.x), from `ctr version`.
    pub major: u32,
    /// The daemon's (major, minor, patch), from `ctr version`.
    pub version: (u32, u32, u32),
}

impl Containerd {
    /// Whether this containerd pulls an image with layers of media types it does not know
    /// (a wasm OCI artifact's module layer), skipping them at unpack: 1.6.25+, 1.7.7+ and 2.x
    /// (containerd/containerd#9142). Older releases refuse with "mismatched image rootfs and
    /// manifest layers".
    pub fn unpacks_wasm_artifacts(&self) -> bool {
        match self.version {
            (1, 6, patch) => patch >= 25,
            (1, 7, patch) => patch >= 7,
            (major, _, _) => major >= 2,
        }
    }
}

/// The `ctr` to run: `$CTR` (as for tests/harness/containerd.sh, e.g. the ctr of a containerd
/// 2.x unpacked elsewhere), else the one on PATH. Each ctr matches its own daemon's messages.
pub fn ctr_binary() -> String {
    std::env::var("CTR")
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "ctr".into())
}

/// The containerd that `make test` started. Panics (never skips) when there is none, so a test
/// run outside `make test` fails loudly instead of passing vacuously.
pub fn containerd() -> &'static Containerd {
    static INSTANCE: OnceLock<Containerd> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        let dir = match std::env::var_os(DIR_ENV) {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => panic!(
                "{DIR_ENV} is not set: the end-to-end tests need the private containerd that \
                 `make test` starts (tests/harness/containerd.sh start DIR SHIM). Run them with \
                 `make test`, or start containerd yourself and export {DIR_ENV}=DIR."
            ),
        };
        let mut c = Containerd {
            socket: dir.join("containerd.sock"),
            dir,
            major: 0,
            version: (0, 0, 0),
        };
        let shim = c.shim_path();
        assert!(
            shim.exists(),
            "{} is missing or dangling: the shim under test is not built or not linked",
            shim.display()
        );
        // Under cargo, the shim containerd runs must be the one cargo built for this test run,
        // not a stale or differently-profiled copy.
        if let Some(built) = option_env!("CARGO_BIN_EXE_containerd-shim-wasm-v1") {
            let linked = fs::canonicalize(&shim).ok();
            assert!(
                linked.is_some() && linked == fs::canonicalize(built).ok(),
                "containerd at {} runs the shim {} but these tests were built with {built}: \
                 start containerd with that binary (make test does)",
                c.dir.display(),
                linked.as_deref().unwrap_or(&shim).display()
            );
        }
        let out = c.ctr(&["version"]);
        assert!(
            out.status.success(),
            "containerd at {} does not answer `ctr version` (is it running? see {}/containerd.log):\n{}",
            c.socket.display(),
            c.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        c.version = server_version(&String::from_utf8_lossy(&out.stdout));
        c.major = c.version.0;
        c
    })
}

/// The version in `ctr version`'s "Server:" section ("  Version:  2.1.9+unknown",
/// "1.6.20~ds1"): (major, minor, patch).
fn server_version(version_output: &str) -> (u32, u32, u32) {
    let server = version_output.split("Server:").nth(1).unwrap_or_default();
    let parsed = server
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .and_then(|v| {
            let mut numbers = v.trim().split('.').map(|part| {
                let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u32>().ok()
            });
            Some((numbers.next()??, numbers.next()??, numbers.next()??))
        });
    parsed.unwrap_or_else(|| panic!("no server version in `ctr version`:\n{version_output}"))
}

/// `prefix-<pid>-<counter>-<time>`: unique across parallel tests and test binaries, and a valid
/// containerd id (alphanumerics joined by single `-`, well under 76 characters).
pub fn unique_id(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        % 1_000_000_000;
    format!("{prefix}-{}-{n}-{}", std::process::id(), radix36(t))
}

fn radix36(mut v: u128) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(DIGITS[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap()
}

/// A `--mount type=bind,src=..,dst=..,options=rbind:ro|rw`.
#[derive(Debug, Clone, Default)]
pub struct BindMount {
    pub src: PathBuf,
    pub dst: String,
    pub read_only: bool,
}

/// Options for one `ctr run --rm`. Empty `namespace` means [`NAMESPACE`], empty `runtime`
/// means [`RUNTIME`], `timeout: None` means [`DEFAULT_RUN_TIMEOUT`].
#[derive(Debug, Clone, Default)]
pub struct RunOpts {
    pub namespace: String,
    pub image: String,
    pub id: String,
    /// Replaces the image's entrypoint+cmd when non-empty (ctr semantics).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub mounts: Vec<BindMount>,
    pub read_only: bool,
    pub runtime: String,
    /// e.g. `wasi/wasm`; ctr otherwise unpacks for the host platform.
    pub platform: Option<String>,
    /// Any other ctr flags, placed before the image.
    pub extra_flags: Vec<String>,
    pub timeout: Option<Duration>,
}

impl RunOpts {
    pub fn new(image: &str, id: &str) -> Self {
        RunOpts {
            image: image.into(),
            id: id.into(),
            ..Default::default()
        }
    }

    pub fn namespace(&self) -> &str {
        if self.namespace.is_empty() {
            NAMESPACE
        } else {
            &self.namespace
        }
    }

    fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_RUN_TIMEOUT)
    }

    fn ctr_args(&self) -> Vec<String> {
        assert!(
            !self.image.is_empty() && !self.id.is_empty(),
            "RunOpts needs an image and an id"
        );
        let runtime = if self.runtime.is_empty() {
            RUNTIME
        } else {
            &self.runtime
        };
        let mut a: Vec<String> = vec![
            "-n".into(),
            self.namespace().into(),
            "run".into(),
            "--rm".into(),
        ];
        a.extend(["--runtime".into(), runtime.into()]);
        for (k, v) in &self.env {
            a.extend(["--env".into(), format!("{k}={v}")]);
        }
        if let Some(cwd) = &self.cwd {
            a.extend(["--cwd".into(), cwd.clone()]);
        }
        for m in &self.mounts {
            let mode = if m.read_only { "ro" } else { "rw" };
            a.extend([
                "--mount".into(),
                format!(
                    "type=bind,src={},dst={},options=rbind:{mode}",
                    m.src.display(),
                    m.dst
                ),
            ]);
        }
        if self.read_only {
            a.push("--read-only".into());
        }
        if let Some(p) = &self.platform {
            a.extend(["--platform".into(), p.clone()]);
        }
        a.extend(self.extra_flags.iter().cloned());
        a.push(self.image.clone());
        a.push(self.id.clone());
        a.extend(self.args.iter().cloned());
        a
    }
}

#[derive(Debug, Clone)]
pub struct RunResult {
    /// The full ctr command line, for failure messages.
    pub command: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// ctr's exit code, which is the task's exit status (or 1 for ctr's own errors, see
    /// `stderr`). `None` when ctr died from a signal, e.g. killed at the timeout.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub elapsed: Duration,
    /// What the cleanup after a timeout reported.
    pub cleanup: String,
}

impl RunResult {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Panics with the whole result unless ctr finished in time with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert!(
            !self.timed_out && self.code == Some(code),
            "expected exit code {code}, got {self}"
        );
        self
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }
}

impl fmt::Display for RunResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.timed_out {
            writeln!(
                f,
                "TIMED OUT after {:.1?} (ctr killed; {})",
                self.elapsed, self.cleanup
            )?;
        } else {
            writeln!(f, "exit code {:?} after {:.1?}", self.code, self.elapsed)?;
        }
        writeln!(f, "command: {}", self.command)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout_str())?;
        write!(f, "--- stderr ---\n{}", self.stderr_str())
    }
}

/// A `ctr run` in progress whose stdin the test feeds; see [`Containerd::spawn_run`].
pub struct RunningCtr<'a> {
    containerd: &'a Containerd,
    opts: RunOpts,
    command: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    started: Instant,
}

impl RunningCtr<'_> {
    /// Waits until `ctr tasks ls` shows the task RUNNING. Returns false if ctr exited first
    /// (a start failure, or a guest that ended on its own) or `timeout` passed.
    pub fn wait_running(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .containerd
                .task_status(self.opts.namespace(), &self.opts.id)
                .as_deref()
                == Some("RUNNING")
            {
                return true;
            }
            if let Some(child) = self.child.as_mut() {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return false;
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Writes `data` to the guest's stdin (through ctr), without closing it.
    pub fn write_stdin(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(s) => s.write_all(data).and_then(|_| s.flush()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "stdin already closed",
            )),
        }
    }

    /// Closes stdin: the guest sees EOF. Only meaningful once [`Self::wait_running`] returned
    /// true, since ctr loses an EOF that arrives before the task exists.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits for ctr to exit, killing it (and the task) after the run's timeout, counted from spawn.
    pub fn wait(mut self) -> RunResult {
        self.stdin.take();
        let deadline = self.started + self.opts.timeout();
        let mut child = self.child.take().expect("wait called once");
        let (status, timed_out, cleanup) = wait_deadline(&mut child, deadline, || {
            self.containerd
                .force_remove(self.opts.namespace(), &self.opts.id)
        });
        RunResult {
            command: self.command.clone(),
            stdout: self.stdout.take().map(join_reader).unwrap_or_default(),
            stderr: self.stderr.take().map(join_reader).unwrap_or_default(),
            code: status.and_then(|s| s.code()),
            timed_out,
            elapsed: self.started.elapsed(),
            cleanup,
        }
    }
}

impl Drop for RunningCtr<'_> {
    // A test that panics between spawn and wait must not leave ctr and its task running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
                self.containerd
                    .force_remove(self.opts.namespace(), &self.opts.id);
            }
        }
    }
}

fn join_reader(h: JoinHandle<Vec<u8>>) -> Vec<u8> {
    h.join().unwrap_or_default()
}

fn spawn_reader<R: Read + Send + 'static>(r: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    r.map(|mut r| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    })
}

/// Polls `child` until `deadline`; then SIGKILLs it (SIGTERM is no use: `ctr run` forwards it
/// to the task, which as PID 1 of its namespace ignores it) and runs `on_timeout`.
fn wait_deadline(
    child: &mut Child,
    deadline: Instant,
    on_timeout: impl FnOnce() -> String,
) -> (Option<std::process::ExitStatus>, bool, String) {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (Some(status), false, String::new()),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let status = child.wait().ok();
                return (status.filter(|s| s.code().is_some()), true, on_timeout());
            }
        }
    }
}

fn shell_words<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> String {
    args.into_iter()
        .map(|a| {
            let a = a.as_ref().to_string_lossy().into_owned();
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Containerd {
    /// Where containerd finds `containerd-shim-wasm-v1` (first on the PATH it gives shims).
    pub fn shim_path(&self) -> PathBuf {
        self.dir.join("opt/bin").join(SHIM_BINARY_NAME)
    }

    fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(ctr_binary());
        cmd.arg("--address").arg(&self.socket).args(args);
        cmd
    }

    fn ctr_command_line(&self, args: &[&str]) -> String {
        let ctr = ctr_binary();
        let mut all = vec![
            ctr.as_str(),
            "--address",
            self.socket.to_str().unwrap_or("?"),
        ];
        all.extend_from_slice(args);
        shell_words(all)
    }

    /// `ctr --address SOCKET ARGS...`; panics if it runs longer than [`CTR_TIMEOUT`].
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_with_stdin(args, None)
    }

    /// `ctr -n NS tasks exec --exec-id EXEC_ID ID ARGS...`: the exec's output and exit code.
    pub fn exec(&self, ns: &str, id: &str, exec_id: &str, args: &[&str]) -> Output {
        let mut all = vec!["-n", ns, "tasks", "exec", "--exec-id", exec_id, id];
        all.extend_from_slice(args);
        self.ctr(&all)
    }

    pub fn ctr_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = self.ctr_command(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run ctr (is it installed?): {e}"));
        let writer = stdin.map(|data| {
            let mut pipe = child.stdin.take().unwrap();
            let data = data.to_vec();
            thread::spawn(move || {
                let _ = pipe.write_all(&data);
            })
        });
        let out = spawn_reader(child.stdout.take());
        let err = spawn_reader(child.stderr.take());
        let (status, timed_out, _) =
            wait_deadline(&mut child, Instant::now() + CTR_TIMEOUT, String::new);
        if let Some(w) = writer {
            let _ = w.join();
        }
        let stdout = out.map(join_reader).unwrap_or_default();
        let stderr = err.map(join_reader).unwrap_or_default();
        assert!(
            !timed_out,
            "`{}` did not finish within {CTR_TIMEOUT:?} (killed)\nstderr: {}",
            self.ctr_command_line(args),
            String::from_utf8_lossy(&stderr)
        );
        Output {
            status: status.expect("ctr exited"),
            stdout,
            stderr,
        }
    }

    /// Like [`Self::ctr`], but panics with ctr's stderr unless it succeeds.
    #[track_caller]
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "`{}` failed ({}):\n{}",
            self.ctr_command_line(args),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr -n NS images import --all-platforms TAR` (all platforms: a wasi/wasm image is
    /// otherwise filtered out). Panics on failure. Imports are serialised because concurrent
    /// imports of the same blobs collide on containerd's ingest locks, and a tar already
    /// imported into `namespace` by this test binary is not imported again.
    #[track_caller]
    pub fn import(&self, namespace: &str, tar_path: &Path) -> String {
        /// (namespace, tar, its mtime): a rebuilt tar is imported again.
        type Imported = (String, PathBuf, Option<SystemTime>);
        static DONE: Mutex<Option<HashSet<Imported>>> = Mutex::new(None);
        let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
        let key = (
            namespace.to_string(),
            tar_path.to_path_buf(),
            fs::metadata(tar_path).and_then(|m| m.modified()).ok(),
        );
        if done.as_ref().is_some_and(|d| d.contains(&key)) {
            return String::new();
        }
        let path = tar_path.to_str().expect("UTF-8 image path");
        let out = self.ctr_ok(&["-n", namespace, "images", "import", "--all-platforms", path]);
        done.get_or_insert_with(HashSet::new).insert(key);
        out
    }

    /// One `ctr run --rm`, stdin empty (ctr sees /dev/null: a guest that waits for stdin's EOF
    /// may never get it, see [`Self::run_with_stdin`]). Never panics on the guest's behalf:
    /// check `code`/`timed_out`; on timeout the task and container are removed.
    pub fn run(&self, opts: RunOpts) -> RunResult {
        self.spawn_run_inner(opts, false).wait()
    }

    /// `ctr run` with piped stdin, left open: feed it with [`RunningCtr::write_stdin`] and
    /// close it only after [`RunningCtr::wait_running`].
    pub fn spawn_run(&self, opts: RunOpts) -> RunningCtr<'_> {
        self.spawn_run_inner(opts, true)
    }

    /// Runs with `input` as stdin, written and closed only once the task is RUNNING (an EOF
    /// sent earlier is lost and the guest would wait forever).
    pub fn run_with_stdin(&self, opts: RunOpts, input: &[u8]) -> RunResult {
        let timeout = opts.timeout();
        let mut r = self.spawn_run(opts);
        if r.wait_running(timeout) {
            // A guest may exit without reading: a broken pipe is its business, not a failure.
            let _ = r.write_stdin(input);
        }
        r.close_stdin();
        r.wait()
    }

    fn spawn_run_inner(&self, opts: RunOpts, piped_stdin: bool) -> RunningCtr<'_> {
        let args = opts.ctr_args();
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let command = self.ctr_command_line(&arg_refs);
        let mut cmd = self.ctr_command(&arg_refs);
        cmd.stdin(if piped_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
        RunningCtr {
            containerd: self,
            command,
            stdin: child.stdin.take(),
            stdout: spawn_reader(child.stdout.take()),
            stderr: spawn_reader(child.stderr.take()),
            child: Some(child),
            opts,
            started,
        }
    }

    /// The STATUS column of `ctr -n NS tasks ls` for `id`, if the task exists.
    pub fn task_status(&self, namespace: &str, id: &str) -> Option<String> {
        let out = self.ctr(&["-n", namespace, "tasks", "ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .find_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.first() == Some(&id)).then(|| cols.get(2).unwrap_or(&"").to_string())
            })
    }

    pub fn container_ids(&self, namespace: &str) -> Vec<String> {
        let out = self.ctr(&["-n", namespace, "containers", "ls", "-q"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Best effort: SIGKILL the task, delete it, delete the container. Reports what it did.
    pub fn force_remove(&self, namespace: &str, id: &str) -> String {
        let mut report = Vec::new();
        for args in [
            vec!["-n", namespace, "tasks", "kill", "--signal", "SIGKILL", id],
            vec!["-n", namespace, "tasks", "delete", "--force", id],
            vec!["-n", namespace, "containers", "delete", id],
        ] {
            // Not `ctr()`: a cleanup must not panic on a hung call.
            let mut cmd = self.ctr_command(&args);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let msg = match cmd.spawn() {
                Ok(mut child) => {
                    let err = spawn_reader(child.stderr.take());
                    let (status, timed_out, _) = wait_deadline(
                        &mut child,
                        Instant::now() + Duration::from_secs(15),
                        String::new,
                    );
                    let err = err.map(join_reader).unwrap_or_default();
                    match (timed_out, status) {
                        (true, _) => "timed out".to_string(),
                        (_, Some(s)) if s.success() => "ok".to_string(),
                        _ => String::from_utf8_lossy(&err).trim().to_string(),
                    }
                }
                Err(e) => e.to_string(),
            };
            report.push(format!("{}: {msg}", args[2..4].join(" ")));
        }
        report.join("; ")
    }

    /// Everything a finished container `id` could leave behind, one line per item.
    pub fn debris(&self, namespace: &str, id: &str) -> Vec<String> {
        let mut left = Vec::new();
        if let Some(status) = self.task_status(namespace, id) {
            left.push(format!("task {namespace}/{id} still listed ({status})"));
        }
        if self.container_ids(namespace).iter().any(|c| c == id) {
            left.push(format!("container {namespace}/{id} still listed"));
        }
        let bundle = self
            .dir
            .join("state/io.containerd.runtime.v2.task")
            .join(namespace)
            .join(id);
        if bundle.exists() {
            left.push(format!(
                "bundle directory {} still exists",
                bundle.display()
            ));
        }
        for (pid, argv) in live_processes() {
            let is_shim = argv.iter().any(|a| a.contains(SHIM_BINARY_NAME));
            if is_shim && argv.windows(2).any(|w| w[0] == "-id" && w[1] == id) {
                left.push(format!(
                    "shim process {pid} still alive: {}",
                    argv.join(" ")
                ));
            }
            // A guest process carries its container's id after the guest-mode argument.
            if argv
                .windows(2)
                .any(|w| w[0] == GUEST_MODE_ARG && w[1] == id)
            {
                left.push(format!(
                    "guest process {pid} still alive: {}",
                    argv.join(" ")
                ));
            }
        }
        for dir in container_cgroups(namespace, id) {
            left.push(format!("cgroup still present: {}", dir.display()));
        }
        let needle = format!("/{id}/");
        let tail = format!("/{id}");
        for mp in mount_points() {
            if mp.contains(&needle) || mp.ends_with(&tail) {
                left.push(format!("mount still present: {mp}"));
            }
        }
        let prefix = format!("{id}-");
        if let Ok(dirs) = fs::read_dir("/run/containerd/fifo") {
            for d in dirs.flatten() {
                if let Ok(entries) = fs::read_dir(d.path()) {
                    for e in entries.flatten() {
                        if e.file_name().to_string_lossy().starts_with(&prefix) {
                            left.push(format!("FIFO still present: {}", e.path().display()));
                        }
                    }
                }
            }
        }
        left
    }

    /// Polls up to 5 s for the container `id` to be gone without a trace, then panics with
    /// the list of what is left: task, container, bundle, shim and guest processes, mounts,
    /// cgroups, ctr FIFOs.
    #[track_caller]
    pub fn assert_no_debris(&self, namespace: &str, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = self.debris(namespace, id);
            if left.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "container {namespace}/{id} left debris after 5 s:\n  {}",
                    left.join("\n  ")
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The shim's hidden guest mode, argv[1] of every guest process (then the container id).
pub const GUEST_MODE_ARG: &str = "__wasm_guest";

/// The cgroup directories of container `id` that exist: ctr's cgroupsPath is
/// `/<namespace>/<id>`, in every v1 hierarchy or the unified one.
fn container_cgroups(namespace: &str, id: &str) -> Vec<PathBuf> {
    let path = format!("/{namespace}/{id}");
    let mut found = Vec::new();
    if cgroups::is_v2() {
        found.push(cgroups::dir("", &path));
    } else if let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") {
        for hierarchy in hierarchies.flatten() {
            let controller = hierarchy.file_name().to_string_lossy().into_owned();
            found.push(cgroups::dir(&controller, &path));
        }
    }
    found.retain(|d| d.is_dir());
    found
}

/// (pid, argv) of every process that is not a zombie (PID 1 reaps slowly here, and a zombie
/// holds no resources).
fn live_processes() -> Vec<(u32, Vec<String>)> {
    let mut procs = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return procs;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if raw.is_empty() {
            continue; // kernel thread or zombie
        }
        let zombie = fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
            .unwrap_or(true);
        if zombie {
            continue;
        }
        let argv = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        procs.push((pid, argv));
    }
    procs
}

/// Mount points from /proc/self/mountinfo, with the kernel's octal escapes decoded.
fn mount_points() -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where `make test` built the test guests (hello.wasm, probe.wasm, ...).
pub fn guests_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("WASM_SHIM_GUESTS_DIR")
            .expect("WASM_SHIM_GUESTS_DIR is not set: run the end-to-end tests with `make test`"),
    )
}

/// The image tool, `wasm-image`. It is a binary of the workspace's other package, for which
/// cargo gives this package's tests no `CARGO_BIN_EXE_*`, so it is looked for beside the shim:
/// both are built into the same target directory by `cargo build --workspace`.
pub fn image_tool() -> PathBuf {
    let tool =
        Path::new(env!("CARGO_BIN_EXE_containerd-shim-wasm-v1")).with_file_name("wasm-image");
    assert!(
        tool.is_file(),
        "{} is missing: build the image tool with `cargo build --workspace` (as `make build` \
         does); `cargo test` of the shim's package alone does not build it",
        tool.display()
    );
    tool
}

/// Builds an image with `wasm-image build` (its tar goes in `work`) and imports it into
/// `namespace`. `extra` are further `build` options.
pub fn build_image(
    namespace: &str,
    work: &Path,
    name: &str,
    module: &Path,
    extra: &[&str],
) -> String {
    let tar = work.join(format!("{}.tar", name.replace(['/', ':'], "_")));
    let out = Command::new(image_tool())
        .args(["build", "--module"])
        .arg(module)
        .args(["--name", name, "-o"])
        .arg(&tar)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wasm-image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    containerd().import(namespace, &tar);
    name.to_string()
}

/// Where the tests keep built images, modules and logs:
/// `/tmp/containerd-shim-wasm-tests/<pid>`, one per test process. A static `TempDir` is never
/// dropped, so instead each process removes the directories of processes that have ended.
pub fn work_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new("/tmp/containerd-shim-wasm-tests");
        if let Ok(entries) = fs::read_dir(root) {
            for entry in entries.flatten() {
                let pid = entry.file_name().to_string_lossy().parse::<u32>().ok();
                if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = root.join(std::process::id().to_string());
        fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// An image `name` whose entrypoint is the probe, imported into `namespace` (once per test
/// binary).
pub fn probe_image(namespace: &'static str, name: &'static str) -> String {
    static BUILT: Mutex<Vec<(&str, &str)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.contains(&(namespace, name)) {
        build_image(
            namespace,
            work_dir(),
            name,
            &guests_dir().join("probe.wasm"),
            &["--entrypoint", "/probe.wasm"],
        );
        built.push((namespace, name));
    }
    name.to_string()
}

impl Containerd {
    /// The pid `ctr tasks ls` shows for a task (the guest process, as for runc the init).
    pub fn task_pid(&self, namespace: &str, id: &str) -> i32 {
        let out = self.ctr_ok(&["-n", namespace, "tasks", "ls"]);
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid for {id} in:\n{out}"))
    }

    /// containerd's default spec (`ctr oci spec`), what `ctr run` starts from.
    pub fn default_spec(&self) -> serde_json::Value {
        let out = self.ctr(&["oci", "spec"]);
        assert!(
            out.status.success(),
            "ctr oci spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("ctr oci spec prints JSON")
    }
}

impl Containerd {
    /// `ctr run --detach` (no `--rm`) of `image` in the wasm runtime: the task stays after it
    /// exits, for the test to inspect; ctr's FIFOs stay too (see [`remove_detached_fifos`]).
    pub fn run_detached(&self, namespace: &str, image: &str, id: &str, args: &[&str]) {
        self.run_detached_with(namespace, &["--runtime", RUNTIME], image, id, args);
    }

    /// The same with other ctr flags before the image (another `--runtime`, `--annotation`).
    pub fn run_detached_with(
        &self,
        namespace: &str,
        flags: &[&str],
        image: &str,
        id: &str,
        args: &[&str],
    ) {
        let mut ctr = vec!["-n", namespace, "run", "--detach"];
        ctr.extend(flags);
        ctr.extend([image, id]);
        ctr.extend(args);
        self.ctr_ok(&ctr);
    }
}

impl Containerd {
    /// Waits (up to 60 s) until containerd's log has a line with `text` from the shim of
    /// container `id` (the shim and its guests tag their lines `id=<container>`).
    pub fn wait_for_log(&self, text: &str, id: &str) {
        let log = self.dir.join("containerd.log");
        let tag = format!("id={id} ");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let found = fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains(&tag) && l.contains(text));
            if found {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("no {text:?} from {id} in {}", log.display());
    }
}

/// The FIFOs `ctr run --detach` left for container `id` under /run/containerd/fifo.
pub fn remove_detached_fifos(id: &str) {
    let prefix = format!("{id}-");
    for dir in fs::read_dir("/run/containerd/fifo")
        .into_iter()
        .flatten()
        .flatten()
    {
        let mut emptied = false;
        for entry in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(entry.path());
                emptied = true;
            }
        }
        if emptied {
            let _ = fs::remove_dir(dir.path());
        }
    }
}

/// One `/proc/<pid>/status` field ("CapEff", "Uid", ...), as the kernel prints it.
pub fn proc_status(pid: i32, field: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The parent of a process (for a guest, its shim), from `/proc/<pid>/stat`.
pub fn parent_pid(pid: i32) -> i32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    after_name
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// A module of `functions` small functions (cranelift takes seconds over 150k) whose data
/// carries `id`, so no earlier run compiled it.
pub fn big_module_wat(id: &str, functions: usize) -> String {
    let mut wat = String::from(
        "(module (import \"wasi_snapshot_preview1\" \"proc_exit\" (func $exit (param i32)))\n(memory (export \"memory\") 1)\n",
    );
    wat.push_str(&format!("(data (i32.const 0) \"{id}\")\n"));
    for i in 0..functions {
        wat.push_str(&format!(
            "(func $f{i} (param i32) (result i32) local.get 0 i32.const {i} i32.add i32.const 3 i32.mul local.get 0 i32.xor)\n"
        ));
    }
    wat.push_str("(func (export \"_start\") i32.const 1 call $f0 drop i32.const 0 call $exit))\n");
    wat
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
