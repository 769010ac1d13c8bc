//! Telling a guest process from any other process that has (or later gets) its pid: the pid
//! together with the start time the kernel records for the process (`/proc/<pid>/stat`,
//! field 22, in clock ticks since boot), which no two processes of one boot share.

/// The start time of process `pid`, if it exists.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// `pid start` as the bundle records it (see `service::IDENTITY_FILE`).
pub fn parse(record: &str) -> Option<(i32, Option<u64>)> {
    let mut parts = record.split_whitespace();
    let pid = parts.next()?.parse().ok()?;
    Some((pid, parts.next().and_then(|s| s.parse().ok())))
}

/// Whether process `pid` is the guest of container `id` that started at `start`: it runs this
/// binary in guest mode for that id (`/proc/<pid>/cmdline`) and has that start time.
pub fn is_guest_of(pid: i32, start: Option<u64>, id: &str) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let guest_of_id = args
        .windows(2)
        .any(|w| w[0] == super::GUEST_MODE_ARG.as_bytes() && w[1] == id.as_bytes());
    guest_of_id && start.is_some() && start_time(pid) == start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_known_by_its_pid_and_start_time() {
        let me = std::process::id() as i32;
        let start = start_time(me).expect("our own start time");
        assert_eq!(parse(&format!("{me} {start}")), Some((me, Some(start))));
        assert_eq!(parse("42"), Some((42, None)));
        assert_eq!(parse("x"), None);
        // This test binary is no guest, whatever its start time.
        assert!(!is_guest_of(me, Some(start), "any"));
    }
}
