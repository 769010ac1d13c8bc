//! Log lines for containerd's shim log FIFO, in containerd's logfmt shape.
//!
//! The shim server and its guest processes write to the same FIFO. Each line is formatted
//! first and written with one write(2), which a pipe keeps whole (under PIPE_BUF), so lines
//! from different processes never interleave — the crate's own logger writes in pieces.

use std::fs::File;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct LineLogger {
    file: File,
    /// Prepended to every message, e.g. `id=<container>`.
    tag: String,
}

impl LineLogger {
    /// Installs a logger writing to `file` at `level`; `tag` prefixes every message.
    pub fn install(file: File, tag: String, level: log::LevelFilter) {
        if log::set_boxed_logger(Box::new(LineLogger { file, tag })).is_ok() {
            log::set_max_level(level);
        }
    }
}

impl log::Log for LineLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        let text = record.args().to_string();
        let level = effective_level(record.target(), record.level(), &text);
        if level > log::max_level() {
            return;
        }
        let message = match self.tag.as_str() {
            "" => text,
            tag => format!("{tag} {text}"),
        };
        let line = format_line(SystemTime::now(), level, &message);
        // A FIFO whose reader is gone must not take the shim down: the line is dropped.
        let _ = (&self.file).write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// libcgroups' v1 manager warns, at every Create, of each controller this host does not
/// mount ("cgroup hugetlb not supported on this system"): four warnings per container in
/// containerd's log on many VMs, about the host, not the container. They are debug lines here.
fn effective_level(target: &str, level: log::Level, text: &str) -> log::Level {
    let host_fact = target.starts_with("libcgroups::v1")
        && level == log::Level::Warn
        && text.ends_with("not supported on this system");
    match host_fact {
        true => log::Level::Debug,
        false => level,
    }
}

/// `time="…" level=info msg="…"` and a newline, as containerd's logrus writes.
fn format_line(at: SystemTime, level: log::Level, message: &str) -> String {
    let escaped = message
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!(
        "time=\"{}\" level={} msg=\"{escaped}\"\n",
        rfc3339(at),
        level.as_str().to_lowercase()
    )
}

/// RFC 3339 UTC with nanoseconds, from the days-since-epoch civil calendar algorithm.
fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_nanos()
    )
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_have_containerds_shape_and_escape_quotes() {
        let at = UNIX_EPOCH + Duration::new(1_795_600_000, 5);
        let line = format_line(at, log::Level::Info, "id=c1 said \"hi\"");
        assert_eq!(
            line,
            "time=\"2026-11-25T09:46:40.000000005Z\" level=info msg=\"id=c1 said \\\"hi\\\"\"\n"
        );
    }

    #[test]
    fn libcgroups_warnings_about_missing_controllers_are_debug_lines() {
        let missing = "cgroup hugetlb not supported on this system";
        let demoted = effective_level("libcgroups::v1::manager", log::Level::Warn, missing);
        assert_eq!(demoted, log::Level::Debug);
        let other = effective_level("libcgroups::v1::manager", log::Level::Warn, "other");
        assert_eq!(other, log::Level::Warn);
        let ours = effective_level("containerd_shim_wasm::service", log::Level::Warn, missing);
        assert_eq!(ours, log::Level::Warn);
    }

    #[test]
    fn the_calendar_is_right_around_leap_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
    }
}
