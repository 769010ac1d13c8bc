//! ctr against the private containerd: the runtimes compared, what a container runs, and
//! timed `ctr run --rm`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Config;

/// The containerd namespace everything of the bench lives in, and is removed from at the end.
pub const NAMESPACE: &str = "bench";
/// The annotation CRI puts on every container of a pod; both shims group by it.
const SANDBOX_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// Seconds any one ctr call may take before it is killed (a hung call must not hang the bench).
pub const CTR_TIMEOUT: u32 = 120;
/// A cold compile of the large module may take much longer than anything else.
pub const CTR_COLD_TIMEOUT: u32 = 600;
/// How many `ctr run -d` (or kills, deletes) run at once when a footprint row sets up.
const SETUP_PARALLELISM: usize = 8;

/// The runtimes compared, by the name `ctr run --runtime` takes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Wasm,
    Runc,
    /// runc's shim under a second runtime name: the same thing measured twice shows the noise.
    Control,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Wasm => "io.containerd.wasm.v1",
            Runtime::Runc => "io.containerd.runc.v2",
            Runtime::Control => "io.containerd.runccontrol.v2",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Runtime::Wasm => "wasm",
            Runtime::Runc => "runc",
            Runtime::Control => "control",
        }
    }
}

/// What to run: an image, its argv (empty: the image's own), and the one stdout it must print.
#[derive(Clone)]
pub struct Workload {
    pub image: String,
    pub args: Vec<String>,
    pub expect: Option<String>,
}

impl Workload {
    pub fn new(image: &str, args: &[&str], expect: Option<&str>) -> Workload {
        Workload {
            image: image.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            expect: expect.map(String::from),
        }
    }
}

/// ctr against the private containerd, in the bench's namespace.
pub struct Ctr<'a> {
    pub config: &'a Config,
}

impl Ctr<'_> {
    /// Every call goes through coreutils' `timeout`, the same for every runtime, so a hung
    /// call cannot hang the bench; it adds about a millisecond to each timed run, alike for all.
    fn command(&self, timeout_secs: u32, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args([
            "--kill-after=5",
            &timeout_secs.to_string(),
            &self.config.ctr,
        ])
        .arg("--address")
        .arg(&self.config.socket)
        .args(["-n", NAMESPACE])
        .args(args);
        cmd
    }

    /// A call that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(CTR_TIMEOUT, args)
            .output()
            .map_err(|e| format!("run ctr: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "ctr {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// `ctr run --rm` of a workload; its wall time, and its stdout if it ran as it should.
    pub fn run_rm(
        &self,
        runtime: Runtime,
        work: &Workload,
        timeout: u32,
    ) -> (Duration, Result<String, String>) {
        let id = new_id();
        let mut args = vec!["run", "--rm", "--runtime", runtime.name(), &work.image, &id];
        args.extend(work.args.iter().map(String::as_str));
        let mut cmd = self.command(timeout, &args);
        let started = Instant::now();
        let out = cmd.output();
        let elapsed = started.elapsed();
        (elapsed, checked(out, work.expect.as_deref()))
    }

    /// `ctr run -d` of a long-running workload, optionally in a pod (a sandbox id annotation).
    pub fn run_detached(
        &self,
        runtime: Runtime,
        work: &Workload,
        pod: Option<&str>,
    ) -> Result<String, String> {
        let id = new_id();
        let annotation = pod.map(|p| format!("{SANDBOX_ANNOTATION}={p}"));
        let mut args = vec!["run", "-d", "--runtime", runtime.name()];
        if let Some(a) = &annotation {
            args.extend(["--annotation", a.as_str()]);
        }
        args.extend([work.image.as_str(), id.as_str()]);
        args.extend(work.args.iter().map(String::as_str));
        self.ok(&args).map(|_| id)
    }

    /// Task ids and their status, from `ctr tasks ls`.
    pub fn tasks(&self) -> Result<HashMap<String, String>, String> {
        let out = self.ok(&["tasks", "ls"])?;
        Ok(out
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((f.first()?.to_string(), f.get(2)?.to_string()))
            })
            .collect())
    }

    /// Kills every container at once, then deletes them once stopped: killing first means their
    /// exits (which the wasm shim may hold up to 2 s for an unread stdout) overlap. The deletes
    /// go one at a time, as a kubelet removes a pod's containers: runc's shim, asked to shut down
    /// by two deletes at once, was seen here to stay behind with no container left.
    pub fn remove(&self, ids: &[String]) {
        parallel(ids.len(), |i| {
            self.ok(&["tasks", "kill", "--signal", "SIGKILL", &ids[i]])
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let tasks = self.tasks().unwrap_or_default();
            if ids
                .iter()
                .all(|id| tasks.get(id).is_none_or(|s| s == "STOPPED"))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for id in ids {
            let _ = self.ok(&["tasks", "delete", "--force", id]);
            let _ = self.ok(&["containers", "delete", id]);
        }
    }

    /// Imports an OCI image tarball (the wasm images say linux/amd64, so no --all-platforms).
    pub fn import(&self, tar: &Path) -> Result<(), String> {
        self.ok(&["images", "import", &tar.to_string_lossy()])
            .map(drop)
    }
}

/// Container ids unique within the run, so a leftover can never be mistaken for a new one.
pub fn new_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "bench-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Ok(stdout) if ctr exited 0 and printed what was expected.
fn checked(out: std::io::Result<Output>, expect: Option<&str>) -> Result<String, String> {
    let out = out.map_err(|e| format!("run ctr: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("exit {}: {}", out.status, stderr.trim()));
    }
    match expect {
        Some(want) if stdout != want => Err(format!("stdout {stdout:?}, expected {want:?}")),
        _ => Ok(stdout),
    }
}

/// Runs `f(0..n)` on a few threads at a time; the results in order.
pub fn parallel<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..SETUP_PARALLELISM.min(n) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let r = f(i);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}
