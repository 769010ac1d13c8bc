//! Processes: the shims of our containerd, their descendants, their memory.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Shims that outlived their last container and were killed, over the whole run.
pub static LINGERED: AtomicUsize = AtomicUsize::new(0);

/// One live process (zombies are left out: PID 1 here reaps them slowly).
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub argv: Vec<String>,
}

/// Every live process on the machine.
pub fn processes() -> Vec<Proc> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(process)
        .collect()
}

fn process(pid: i32) -> Option<Proc> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(Proc {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        argv: cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    })
}

/// The shims of our containerd (of either runtime): containerd starts each with `-address` and
/// its socket, and the guests or containers under them carry no such arguments.
pub fn shim_pids(procs: &[Proc], socket: &Path) -> Vec<i32> {
    let socket = socket.to_string_lossy();
    procs
        .iter()
        .filter(|p| {
            p.argv
                .windows(2)
                .any(|w| w[0] == "-address" && w[1] == socket)
        })
        .map(|p| p.pid)
        .collect()
}

/// `roots` and every process below them.
pub fn with_descendants(procs: &[Proc], roots: &[i32]) -> Vec<i32> {
    let mut found: Vec<i32> = roots.to_vec();
    let mut seen: HashSet<i32> = roots.iter().copied().collect();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for p in procs.iter().filter(|p| p.ppid == parent) {
            if seen.insert(p.pid) {
                found.push(p.pid);
            }
        }
        i += 1;
    }
    found
}

/// Proportional set size in KiB: shared pages (the shim binary, libraries) count once overall,
/// split among the processes that map them, so summing over processes does not double count.
pub fn pss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Waits until no shim of our containerd is left (a shim exits shortly after its last task is
/// deleted), so the next measurement starts from the same state. A shim still there after
/// `timeout` has outlived its containers (every one is deleted by then): it is counted in
/// [`LINGERED`], reported, and SIGKILLed, so it weighs on no later figure. False if any was.
pub fn settle_shims(socket: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let procs = processes();
        let shims = shim_pids(&procs, socket);
        if shims.is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            for pid in shims {
                let argv = procs
                    .iter()
                    .find(|p| p.pid == pid)
                    .map(|p| p.argv.join(" "));
                eprintln!("bench: warning: shim {pid} outlived its containers; killed: {argv:?}");
                LINGERED.fetch_add(1, Ordering::Relaxed);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
