//! The table's header: this machine and the versions of what is compared.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::Config;

/// Who ran what where: cores, kernel, cgroup version, the versions compared, the rounds.
pub fn header(config: &Config, containerd: i32) -> String {
    let exe =
        fs::read_link(format!("/proc/{containerd}/exe")).unwrap_or_else(|_| "containerd".into());
    let mut out = String::from("containerd-shim-wasm side by side with runc (make bench)\n");
    let _ = writeln!(
        out,
        "machine:    {} cores ({}), {} MiB RAM",
        cores(),
        cpu_model(),
        mem_mib()
    );
    let _ = writeln!(out, "kernel:     {}", first_line("uname", &["-r"]));
    let _ = writeln!(out, "cgroup:     {}", cgroup_version());
    let _ = writeln!(
        out,
        "containerd: {}",
        first_line(&exe.to_string_lossy(), &["--version"])
    );
    let _ = writeln!(out, "runc:       {}", first_line("runc", &["--version"]));
    let _ = writeln!(
        out,
        "shim:       {}",
        first_line(&config.shim.to_string_lossy(), &["-v"])
    );
    let _ = writeln!(
        out,
        "rounds:     {} measured after {} warm-up per row, round-robin; the large module's cold\n            \
         compile {} after 1; load average at start {}",
        config.rounds,
        config.warmup,
        config.python_cold_rounds,
        load_average()
    );
    out
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn mem_mib() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// The 1, 5 and 15 minute load averages: how busy the machine was besides the bench.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// v2 when /sys/fs/cgroup is the unified hierarchy itself; v1 otherwise (hybrid when a cgroup2
/// is also mounted beside the v1 controllers, as systemd does).
fn cgroup_version() -> String {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2".into()
    } else if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        "v1 (hybrid: cgroup2 also at /sys/fs/cgroup/unified, no controllers there)".into()
    } else {
        "v1".into()
    }
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|e| format!("({program}: {e})"))
}
