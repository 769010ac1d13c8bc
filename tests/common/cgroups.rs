//! The host's cgroup files, read the same way on cgroup v1 (one hierarchy per controller) and
//! v2 (one unified hierarchy), so the cgroup tests mean the same on both.

use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

/// Whether this host has only the unified (v2) hierarchy.
pub fn is_v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// The directory of the cgroup at `path` (e.g. `/ns/id`) for `controller` ("memory", "cpu",
/// "pids", "freezer"); on v2, the one directory of the cgroup.
pub fn dir(controller: &str, path: &str) -> PathBuf {
    let relative = path.trim_start_matches('/');
    if is_v2() {
        Path::new(ROOT).join(relative)
    } else {
        Path::new(ROOT).join(controller).join(relative)
    }
}

fn read(controller: &str, path: &str, file: &str) -> String {
    let file = dir(controller, path).join(file);
    fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
        .trim()
        .to_string()
}

/// The memory limit in bytes (`memory.limit_in_bytes`, v2 `memory.max`).
pub fn memory_limit(path: &str) -> String {
    if is_v2() {
        read("memory", path, "memory.max")
    } else {
        read("memory", path, "memory.limit_in_bytes")
    }
}

/// The CFS quota and period in microseconds (v2 `cpu.max`).
pub fn cpu_quota_and_period(path: &str) -> (String, String) {
    if is_v2() {
        let max = read("cpu", path, "cpu.max");
        let (quota, period) = max.split_once(' ').unwrap_or((&max, ""));
        (quota.to_string(), period.to_string())
    } else {
        (
            read("cpu", path, "cpu.cfs_quota_us"),
            read("cpu", path, "cpu.cfs_period_us"),
        )
    }
}

pub fn pids_max(path: &str) -> String {
    read("pids", path, "pids.max")
}

/// How many tasks (processes and threads) the cgroup holds.
pub fn pids_current(path: &str) -> u64 {
    read("pids", path, "pids.current").parse().unwrap_or(0)
}

/// The pids in the cgroup (for `controller`'s hierarchy on v1).
pub fn procs(controller: &str, path: &str) -> Vec<i32> {
    read(controller, path, "cgroup.procs")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether process `pid` is in the cgroup `path` for `controller`, from `/proc/<pid>/cgroup`.
pub fn holds(pid: i32, controller: &str, path: &str) -> bool {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    cgroups.lines().any(|line| {
        let mut parts = line.splitn(3, ':');
        let (hierarchy, controllers, cgroup) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let right_hierarchy = if is_v2() {
            hierarchy == "0"
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        right_hierarchy && cgroup == path
    })
}

/// Whether the cgroup still exists in `controller`'s hierarchy.
pub fn exists(controller: &str, path: &str) -> bool {
    dir(controller, path).exists()
}

/// The figures of `ctr tasks metrics --format json` that tests check, from containerd's v1 or
/// v2 metrics type (whichever the shim answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    pub memory_usage: u64,
    pub memory_limit: u64,
    /// CPU time used, in nanoseconds.
    pub cpu_nanos: u64,
}

impl Metrics {
    pub fn from_ctr_json(json: &str) -> Metrics {
        let v: serde_json::Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("metrics JSON: {e}\n{json}"));
        let at = |pointer: &str| v.pointer(pointer).and_then(serde_json::Value::as_u64);
        // ctr leaves out fields that are zero.
        if is_v2() {
            Metrics {
                memory_usage: at("/memory/usage").unwrap_or(0),
                memory_limit: at("/memory/usage_limit").unwrap_or(0),
                cpu_nanos: at("/cpu/usage_usec").unwrap_or(0) * 1000,
            }
        } else {
            Metrics {
                memory_usage: at("/memory/usage/usage").unwrap_or(0),
                memory_limit: at("/memory/usage/limit").unwrap_or(0),
                cpu_nanos: at("/cpu/usage/total").unwrap_or(0),
            }
        }
    }
}
