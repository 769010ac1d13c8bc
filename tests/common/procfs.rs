//! What tests read of a process in /proc. Included by the e2e helpers (`common`) and the
//! shim-level harness (`shim_under_test`).
#![allow(dead_code)]

/// CPU time a process has used, in clock ticks (utime + stime of /proc/<pid>/stat).
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}
