//! The wasm engine, behind a narrow interface: load a module, run it with an invocation,
//! get an [`Outcome`]. The engine never sees containerd, ttrpc, bundles or events; the guest
//! process (`crate::guest`) prepares the invocation and turns the outcome into an exit status.

pub mod cache;
pub mod container_fs;
pub mod host_file;
pub mod stdio;
pub mod tunables;
pub mod wasi_fixes;
pub mod wasmer;

use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// Exit status of a guest that trapped: 128 + SIGABRT, what a native program that aborts gives.
pub const EXIT_TRAP: i32 = 134;
/// Exit status when the module cannot be run at all (does not compile, no `_start`, bad imports),
/// as a shell reports a file it cannot execute.
pub const EXIT_NOT_RUNNABLE: i32 = 126;

/// Everything a module run needs besides the module itself.
#[derive(Debug)]
pub struct Invocation {
    /// argv, argv[0] included, exactly as the spec gives it.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The working directory inside the guest's filesystem.
    pub cwd: PathBuf,
    /// Top-level entries of the root, preopened separately when `cwd` is not `/` (see
    /// `wasmer::preopens`).
    pub root_entries: Vec<String>,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// How a module run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `proc_exit(code)`, or 0 when `_start` returned.
    Exited(i32),
    /// A wasm trap; the text is the one-line reason followed by the wasm backtrace.
    Trapped(String),
    /// The module could not be started; the text says why.
    NotRunnable(String),
}

impl Outcome {
    /// The exit status the container reports, as for a native process: 8 bits, as Linux
    /// truncates `exit(256)` to 0.
    pub fn exit_status(&self) -> i32 {
        match self {
            Outcome::Exited(code) => code & 0xff,
            Outcome::Trapped(_) => EXIT_TRAP,
            Outcome::NotRunnable(_) => EXIT_NOT_RUNNABLE,
        }
    }

    /// What to write on the container's stderr so that `kubectl logs` shows why it ended.
    pub fn message(&self) -> Option<String> {
        match self {
            Outcome::Exited(_) => None,
            Outcome::Trapped(why) => Some(format!("wasm trap: {why}")),
            Outcome::NotRunnable(why) => Some(format!("wasm: {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_the_exit_status_a_native_process_would_give() {
        assert_eq!(Outcome::Exited(0).exit_status(), 0);
        assert_eq!(Outcome::Exited(7).exit_status(), 7);
        assert_eq!(Outcome::Exited(255).exit_status(), 255);
        assert_eq!(Outcome::Exited(256).exit_status(), 0);
        assert_eq!(Outcome::Exited(257).exit_status(), 1);
        assert_eq!(Outcome::Trapped("unreachable".into()).exit_status(), 134);
        assert_eq!(Outcome::NotRunnable("x".into()).exit_status(), 126);
    }

    #[test]
    fn traps_and_failures_explain_themselves() {
        assert_eq!(Outcome::Exited(3).message(), None);
        assert_eq!(
            Outcome::Trapped("unreachable".into()).message().unwrap(),
            "wasm trap: unreachable"
        );
        assert!(Outcome::NotRunnable("no _start".into())
            .message()
            .unwrap()
            .contains("no _start"));
    }
}
