//! containerd restarted, or a shim lost, while containers run: through the real containerd
//! `make test` starts, which these tests stop and start again (one at a time: a lock below).

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::tasks_api::{get_task, STATUS_RUNNING, STATUS_STOPPED};
use common::{containerd, remove_detached_fifos, unique_id};

const NS: &str = "wasm-restart";
const IMAGE: &str = "docker.io/library/e2e-restart:latest";
const NATIVE_IMAGE: &str = "docker.io/library/e2e-restart-sleeper:latest";

/// Only one test at a time may take containerd down.
static CONTAINERD_DOWN: Mutex<()> = Mutex::new(());

fn image() -> String {
    common::probe_image(NS, IMAGE)
}

/// A native image for runc: a program that sleeps until it is killed.
fn native_image() -> String {
    static BUILT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            common::build_image(
                NS,
                common::work_dir(),
                NATIVE_IMAGE,
                &common::guests_dir().join("sleeper"),
                &["--native", "--entrypoint", "/sleeper"],
            )
        })
        .clone()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'))
    })
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops containerd with `signal` (its shims, and their guests, run on) and starts it again
/// the way `make test` did, on the same state.
fn restart_containerd(signal: nix::sys::signal::Signal, while_down: impl FnOnce()) {
    let c = containerd();
    let pid: i32 = std::fs::read_to_string(c.dir.join("containerd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
    wait_until("containerd gone", Duration::from_secs(20), || !alive(pid));
    while_down();
    let harness =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness/containerd.sh");
    let status = std::process::Command::new(harness)
        .arg("start")
        .arg(&c.dir)
        .arg(env!("CARGO_BIN_EXE_containerd-shim-wasm-v1"))
        .status()
        .unwrap();
    assert!(status.success(), "containerd did not start again");
}

fn task(id: &str) -> common::tasks_api::Process {
    get_task(&containerd().socket, NS, id).unwrap()
}

/// Removes a detached container: its task (stopped, if containerd still has it), the
/// container, ctr's FIFOs.
fn remove(id: &str) {
    if ended(id) != Some(Ended::Gone) {
        containerd().ctr_ok(&["-n", NS, "tasks", "delete", id]);
    }
    containerd().ctr_ok(&["-n", NS, "containers", "delete", id]);
    remove_detached_fifos(id);
    containerd().assert_no_debris(NS, id);
}

/// What became of a task whose process ended while containerd was down, once containerd is
/// back: `None` while containerd still shows it running.
#[derive(Debug, PartialEq)]
enum Ended {
    Stopped(u32),
    /// containerd 1.7 and 2.x delete a (non-sandbox) shim whose Pids is empty when they load it
    /// ("cleaning leaked shim process"), so the task is gone: for runc's shim as for ours.
    Gone,
}

fn ended(id: &str) -> Option<Ended> {
    match get_task(&containerd().socket, NS, id) {
        Ok(p) if p.status == STATUS_STOPPED => Some(Ended::Stopped(p.exit_status)),
        Ok(_) => None,
        Err(e) if e.contains("not found") => Some(Ended::Gone),
        Err(e) => panic!("get task {id}: {e}"),
    }
}

fn containerd_restart_keeps_tasks_and_reports_the_exits_meanwhile(
    signal: nix::sys::signal::Signal,
) {
    let _down = CONTAINERD_DOWN.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("{signal:?}").to_lowercase();
    let long = unique_id(&format!("long-{name}"));
    let short = unique_id(&format!("short-{name}"));
    // The same story under runc, in the same containerd: what containerd makes of it is the
    // behaviour to match.
    let native = unique_id(&format!("runc-{name}"));
    containerd().run_detached(NS, &image(), &long, &["/probe.wasm", "sleep", "600"]);
    containerd().run_detached(NS, &image(), &short, &["/probe.wasm", "sleep", "600"]);
    containerd().run_detached_with(
        NS,
        &["--runtime", "io.containerd.runc.v2"],
        &native_image(),
        &native,
        &[],
    );
    let (long_pid, short_pid) = (task(&long).pid as i32, task(&short).pid as i32);
    let native_pid = task(&native).pid as i32;
    assert!(alive(short_pid), "the second guest runs before the restart");
    restart_containerd(signal, || {
        // The guests run on without containerd.
        assert!(alive(long_pid), "{long} died with containerd");
        containerd_down_kill(short_pid);
        // The sleeper is PID 1 of its pid namespace with no handler: only SIGKILL ends it.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(native_pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_until("the runc container ended", Duration::from_secs(10), || {
            !alive(native_pid)
        });
    });
    // containerd reconnects to the shims: the running task is still RUNNING with its pid...
    let running = task(&long);
    assert_eq!(
        (running.status, running.pid),
        (STATUS_RUNNING, long_pid as u32)
    );
    // ...and the task that ended meanwhile ends up as runc's did.
    let mut outcome = (None, None);
    wait_until(
        "both exits while containerd was down taken in",
        Duration::from_secs(30),
        || {
            outcome = (ended(&short), ended(&native));
            outcome.0.is_some() && outcome.1.is_some()
        },
    );
    match outcome {
        (Some(Ended::Stopped(wasm)), Some(Ended::Stopped(runc))) => {
            assert_eq!((wasm, runc), (143, 137), "SIGTERM's and SIGKILL's statuses");
            // The shim's TaskExit, refused while containerd was down, was retried until it
            // was taken.
            let log = containerd().dir.join("containerd.log");
            let delivered = format!("published /tasks/exit id={short} after ");
            wait_until(
                "the retried TaskExit delivered",
                Duration::from_secs(30),
                || std::fs::read_to_string(&log).is_ok_and(|text| text.contains(&delivered)),
            );
        }
        (Some(Ended::Gone), Some(Ended::Gone)) => {}
        (wasm, runc) => panic!("the wasm task ended as {wasm:?}, runc's as {runc:?}"),
    }
    containerd().ctr_ok(&["-n", NS, "tasks", "kill", "--signal", "SIGKILL", &long]);
    wait_until("the long task stopped", Duration::from_secs(30), || {
        task(&long).status == STATUS_STOPPED
    });
    assert_eq!(task(&long).exit_status, 137);
    remove(&long);
    remove(&short);
    remove(&native);
}

/// Ends a guest while containerd is down (SIGTERM from outside, as an operator would).
fn containerd_down_kill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_until("the guest ended", Duration::from_secs(10), || !alive(pid));
}

#[test]
fn a_containerd_stopped_with_sigterm_finds_its_tasks_again() {
    containerd_restart_keeps_tasks_and_reports_the_exits_meanwhile(
        nix::sys::signal::Signal::SIGTERM,
    );
}

#[test]
fn a_containerd_killed_with_sigkill_finds_its_tasks_again() {
    containerd_restart_keeps_tasks_and_reports_the_exits_meanwhile(
        nix::sys::signal::Signal::SIGKILL,
    );
}
