//! The shims' CPU time, from a cgroup of our own.
//!
//! Method: before any row, containerd's pid moves into a fresh cpuacct cgroup of our own (cgroup
//! v2: a fresh cgroup, its cpu.stat). The shims it spawns from then on start in it (a child
//! starts in its parent's cgroup); the guests and runc's containers go to their own cgroupsPath,
//! so their CPU time is not counted here, but whatever a shim does outside the container's
//! cgroup is: the `start` and `delete` invocations, the shim server, runc's own create, start and
//! delete, and the wasm guest's work until it joins the container's cgroup. The cgroup's usage
//! minus containerd's own user+system time (/proc/PID/stat, in clock ticks) is then the shims'
//! CPU time. containerd's figure comes in ticks (10 ms), so the per-container figure is taken
//! from the totals over all runs of a row, divided by the number of containers, never per run.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Our own cgroup for containerd and the shims it spawns.
const CPU_CGROUP: &str = "containerd-shim-wasm-bench-shims";

/// containerd (and so every shim it starts) in a cgroup of our own.
pub struct CpuAccount {
    cgroup: PathBuf,
    v2: bool,
    containerd: i32,
    /// Where containerd was, to put it back at the end.
    origin: PathBuf,
    ticks_per_second: u64,
}

impl CpuAccount {
    /// Moves containerd into the cgroup (made if missing).
    pub fn enter(containerd: i32) -> Result<CpuAccount, String> {
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let mount = if v2 {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup/cpuacct")
        };
        let origin = mount.join(current_cgroup(containerd, v2)?.trim_start_matches('/'));
        let cgroup = mount.join(CPU_CGROUP);
        fs::create_dir_all(&cgroup).map_err(|e| format!("create {}: {e}", cgroup.display()))?;
        write_pid(&cgroup, containerd)?;
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Ok(CpuAccount {
            cgroup,
            v2,
            containerd,
            origin,
            ticks_per_second: ticks.max(1) as u64,
        })
    }

    /// CPU time of everything in the cgroup so far, in ns.
    fn usage_ns(&self) -> u64 {
        if self.v2 {
            let stat = fs::read_to_string(self.cgroup.join("cpu.stat")).unwrap_or_default();
            stat.lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(0, |us| us * 1000)
        } else {
            fs::read_to_string(self.cgroup.join("cpuacct.usage"))
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        }
    }

    /// containerd's own user + system time so far, in ns (its threads, not its children).
    fn containerd_ns(&self) -> u64 {
        let stat =
            fs::read_to_string(format!("/proc/{}/stat", self.containerd)).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, f)| f.split_whitespace().collect())
            .unwrap_or_default();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
            .sum();
        ticks * 1_000_000_000 / self.ticks_per_second
    }

    /// (the cgroup's usage, containerd's own time), to subtract from a later snapshot.
    pub fn snapshot(&self) -> (u64, u64) {
        (self.usage_ns(), self.containerd_ns())
    }

    /// Puts containerd back and removes the cgroup (which fails while a shim is still in it).
    pub fn leave(&self) {
        if let Err(e) = write_pid(&self.origin, self.containerd) {
            eprintln!("bench: warning: {e}");
        }
        // Zombies count as members until PID 1 reaps them, which is slow here.
        for _ in 0..300 {
            if fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("bench: warning: could not remove {}", self.cgroup.display());
    }
}

/// The cgroup (path inside its hierarchy) a process is in: cpuacct's on v1, the one on v2.
fn current_cgroup(pid: i32, v2: bool) -> Result<String, String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("read /proc/{pid}/cgroup: {e}"))?;
    text.lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let wanted = if v2 {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == "cpuacct")
            };
            wanted.then(|| path.to_string())
        })
        .ok_or_else(|| format!("no cpuacct cgroup for pid {pid}"))
}

fn write_pid(cgroup: &Path, pid: i32) -> Result<(), String> {
    let procs = cgroup.join("cgroup.procs");
    fs::write(&procs, pid.to_string())
        .map_err(|e| format!("move {pid} to {}: {e}", procs.display()))
}

/// The shims' CPU time over some runs of one runtime: cgroup and containerd totals.
#[derive(Default)]
pub struct CpuTotals {
    cgroup_ns: u64,
    containerd_ns: u64,
    pub containers: usize,
}

impl CpuTotals {
    /// Adds one container's run, between two snapshots.
    pub fn add(&mut self, before: (u64, u64), after: (u64, u64)) {
        self.cgroup_ns += after.0.saturating_sub(before.0);
        self.containerd_ns += after.1.saturating_sub(before.1);
        self.containers += 1;
    }

    /// The shims' time (the cgroup's less containerd's) per container.
    pub fn per_container_ms(&self) -> f64 {
        let shims = self.cgroup_ns as f64 - self.containerd_ns as f64;
        shims / self.containers.max(1) as f64 / 1e6
    }
}
