//! Faults, load and hostile modules at the shim level: the real shim binary over its ttrpc
//! socket, several containers in one shim (as for a pod). Each hostile module runs beside a
//! healthy neighbour whose State is asked every 20 ms meanwhile; the slowest answer is
//! printed and must stay well under a second.

#[path = "common/procfs.rs"]
mod procfs;
#[path = "common/shim_under_test.rs"]
mod shim_under_test;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use containerd_shim::api::{StateRequest, Status};
use containerd_shim::protos::ttrpc::Code;
use shim_under_test::{code, create_request, ctx, runtime_options, ShimUnderTest};

/// Sleeps 600 s inside poll_oneoff: a neighbour that is alive and costs nothing.
const SLEEP_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 600000000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

/// The runtime options every test's shim gets with its first Create.
const OPTIONS: &str = "ReadyTimeoutSeconds = 2\nMaxModuleBytes = 8388608\n";

fn module(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap()
}

/// A container id of its own for this test: ids name cgroups (`/<id>`), which the tests of
/// this binary, running at once, must not share.
fn unique(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The pid-reuse test needs the kernel's next pid to itself: it takes this for writing, every
/// other test of this binary (each starts processes) for reading.
static PIDS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A shim with a sleeping neighbour container running in it.
struct WithNeighbour {
    shim: ShimUnderTest,
    neighbour: String,
    _pids: tokio::sync::RwLockReadGuard<'static, ()>,
}

async fn shim_with_neighbour() -> WithNeighbour {
    let pids = PIDS.read().await;
    let shim = ShimUnderTest::start().await;
    let neighbour = unique("neighbour");
    let bundle = shim.bundle(&neighbour, &module(SLEEP_WAT), &["/app.wasm"]);
    let (out, err) = shim.outputs(&neighbour);
    let mut req = create_request(&neighbour, &bundle, &out.path, &err.path);
    req.options = runtime_options(OPTIONS);
    shim.create_with(req).await.unwrap();
    shim.start_task(&neighbour).await.unwrap();
    // The outputs' readers stay until the neighbour ends.
    std::mem::forget((out, err));
    WithNeighbour {
        shim,
        neighbour,
        _pids: pids,
    }
}

impl WithNeighbour {
    /// Ends the neighbour and the shim.
    async fn finish(self) {
        let WithNeighbour {
            shim, neighbour, ..
        } = self;
        shim.kill(&neighbour, 9).await.unwrap();
        assert_eq!(shim.wait(&neighbour).await.exit_status, 137);
        shim.delete(&neighbour).await.unwrap();
        shim.stop().await;
    }
}

/// Runs `work` while asking State of the neighbour every 20 ms; returns what `work` returned
/// and the slowest State answer.
async fn beside_neighbour<T>(pod: &WithNeighbour, work: impl Future<Output = T>) -> (T, Duration) {
    let shim = &pod.shim;
    let done = AtomicBool::new(false);
    let measure = async {
        let mut slowest = Duration::ZERO;
        while !done.load(Ordering::Relaxed) {
            let asked = Instant::now();
            let req = StateRequest {
                id: pod.neighbour.clone(),
                ..Default::default()
            };
            let state = shim.client.state(ctx(), &req).await.unwrap();
            assert_eq!(state.status.enum_value().unwrap(), Status::RUNNING);
            slowest = slowest.max(asked.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        slowest
    };
    let work = async {
        let result = work.await;
        done.store(true, Ordering::Relaxed);
        result
    };
    tokio::join!(work, measure)
}

#[track_caller]
fn assert_responsive(what: &str, slowest: Duration, bound: Duration) {
    println!("{what}: the neighbour's slowest State answer took {slowest:?}");
    assert!(
        slowest < bound,
        "{what}: the neighbour's State took {slowest:?}"
    );
}

/// Runs `wasm` as container `id` (spec edited by `edit`) to its exit beside the neighbour;
/// `kill_after` sends SIGTERM that long after Start. Returns (status, stderr, slowest State).
async fn hostile(
    pod: &WithNeighbour,
    name: &str,
    wasm: &[u8],
    edit: impl FnOnce(&mut serde_json::Value),
    kill_after: Option<Duration>,
) -> (u32, String, Duration) {
    let (shim, id) = (&pod.shim, unique(name));
    let id = id.as_str();
    let bundle = shim.bundle_with(id, wasm, &["/app.wasm"], edit);
    let (out, err) = shim.outputs(id);
    let (status, slowest) = beside_neighbour(pod, async {
        shim.create(id, &bundle, &out.path, &err.path)
            .await
            .unwrap();
        shim.start_task(id).await.unwrap();
        if let Some(after) = kill_after {
            tokio::time::sleep(after).await;
            shim.kill(id, 15).await.unwrap();
        }
        shim.wait(id).await.exit_status
    })
    .await;
    out.finish();
    let stderr = err.finish();
    shim.delete(id).await.unwrap();
    (status, stderr, slowest)
}

/// Whether a process is running in guest mode for container `id` (zombies do not count).
fn guest_process_of(id: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
            .unwrap_or(true);
        if !zombie
            && args
                .windows(2)
                .any(|w| w[0] == b"__wasm_guest" && w[1] == id.as_bytes())
        {
            return Some(pid);
        }
    }
    None
}

#[tokio::test]
async fn a_guest_that_never_gets_ready_fails_create_after_the_timeout_and_the_shim_answers_meanwhile(
) {
    let pod = shim_with_neighbour().await;
    let shim = &pod.shim;
    let hung = unique("hung");
    let bundle = shim.bundle_with(&hung, &module(SLEEP_WAT), &["/app.wasm"], |spec| {
        spec["annotations"] =
            serde_json::json!({ "io.containerd.wasm.test/hang-before-ready": "true" });
    });
    let (out, err) = shim.outputs(&hung);
    let asked = Instant::now();
    let (created, slowest) =
        beside_neighbour(&pod, shim.create(&hung, &bundle, &out.path, &err.path)).await;
    let took = asked.elapsed();
    let (c, message) = code(created.unwrap_err());
    assert_eq!(c, Code::DEADLINE_EXCEEDED, "{message}");
    assert_eq!(
        message,
        "the guest process did not finish its setup within 2s (the runtime option ReadyTimeoutSeconds); it was killed"
    );
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(10)).contains(&took),
        "Create answered after {took:?}"
    );
    assert_responsive(
        "a guest hanging before ready",
        slowest,
        Duration::from_millis(100),
    );
    // The hung guest is killed and reaped, and the id is free again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(pid) = guest_process_of(&hung) {
        assert!(
            Instant::now() < deadline,
            "guest {pid} of the failed Create still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (c, _) = code(shim.delete(&hung).await.unwrap_err());
    assert_eq!(c, Code::NOT_FOUND);
    drop((out, err));
    pod.finish().await;
}

/// Exits with 7 at once.
const EXIT7_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 7))))"#;

#[tokio::test]
async fn a_reused_pid_never_takes_another_guests_exit() {
    let _pids = PIDS.write().await;
    let shim = ShimUnderTest::start().await;
    // A container exits and is not deleted; its pid is free. The kernel hands out the pid
    // after /proc/sys/kernel/ns_last_pid next, so a second guest can be given the very same
    // pid (the shim's own threads may take a pid or two on the way: the offset adapts). If
    // another process of the host takes the pid meanwhile, a new first container is made.
    let mut reused = None;
    'rounds: for round in 0..5 {
        let first = format!("first-{round}");
        let bundle = shim.bundle(&first, &module(EXIT7_WAT), &["/app.wasm"]);
        let (out, err) = shim.outputs(&first);
        let pid = shim
            .create(&first, &bundle, &out.path, &err.path)
            .await
            .unwrap();
        shim.start_task(&first).await.unwrap();
        assert_eq!(shim.wait(&first).await.exit_status, 7);
        out.finish();
        err.finish();
        let mut offset = 1;
        for attempt in 0..40 {
            let id = format!("second-{round}-{attempt}");
            let bundle = shim.bundle(&id, &module(SLEEP_WAT), &["/app.wasm"]);
            let (out, err) = shim.outputs(&id);
            std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - offset).to_string()).unwrap();
            let got = shim
                .create(&id, &bundle, &out.path, &err.path)
                .await
                .unwrap();
            if got == pid {
                reused = Some((first, pid, id, out, err));
                break 'rounds;
            }
            shim.delete(&id).await.unwrap();
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                // Some other process has the pid now.
                shim.delete(&first).await.unwrap();
                continue 'rounds;
            }
            // `got - pid` more pids went to the shim's own threads between the write and
            // the clone: start that much lower next time.
            offset = if got > pid && got - pid < 64 {
                offset + (got - pid)
            } else {
                1
            };
        }
        shim.delete(&first).await.unwrap();
    }
    let (first, pid, second, out, err) = reused.expect("no guest got a reused pid in 5 rounds");
    shim.start_task(&second).await.unwrap();
    assert_eq!(shim.status(&second).await, Status::RUNNING);
    // The first container's exit is still its own; the second's, by the same pid, its own.
    assert_eq!(shim.wait(&first).await.exit_status, 7);
    shim.kill(&second, 15).await.unwrap();
    let second_exit = shim.wait(&second).await;
    assert_eq!((second_exit.exit_status, pid), (143, pid));
    assert_eq!(shim.wait(&first).await.exit_status, 7);
    out.finish();
    err.finish();
    shim.delete(&second).await.unwrap();
    shim.delete(&first).await.unwrap();
    shim.stop().await;
}

/// Recurses without end.
const RECURSE_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func $down (call $down))
  (func (export "_start") (call $down)))"#;

#[tokio::test]
async fn a_module_that_recurses_without_end_traps_with_134() {
    let pod = shim_with_neighbour().await;
    let (status, stderr, slowest) =
        hostile(&pod, "recurse", &module(RECURSE_WAT), |_| {}, None).await;
    assert_eq!(status, 134);
    assert!(
        stderr.starts_with("wasm trap: call stack exhausted"),
        "{stderr}"
    );
    assert_responsive("endless recursion", slowest, Duration::from_secs(1));
    pod.finish().await;
}

/// Grows its memory 1 MiB at a time, touching each, until memory.grow fails; then exits 3.
const GROW_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (block $full (loop $more
      (br_if $full (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
      (i32.store (i32.mul (i32.sub (memory.size) (i32.const 1)) (i32.const 65536)) (i32.const 1))
      (br $more)))
    (call $exit (i32.const 3))))"#;

#[tokio::test]
async fn a_module_that_grows_memory_forever_sees_the_growth_fail_under_its_limit() {
    let pod = shim_with_neighbour().await;
    let limit = |spec: &mut serde_json::Value| {
        spec["linux"]["resources"] = serde_json::json!({ "memory": { "limit": 96u64 << 20 } });
    };
    let (status, _, slowest) = hostile(&pod, "grow", &module(GROW_WAT), limit, None).await;
    assert_eq!(
        status, 3,
        "memory.grow failed inside the guest, before any OOM kill"
    );
    assert_responsive("endless memory growth", slowest, Duration::from_secs(1));
    pod.finish().await;
}

/// A module of `functions` empty functions, written as binary (its text would take longer
/// to parse than the shim to refuse it).
fn many_functions(functions: u32) -> Vec<u8> {
    fn section(id: u8, body: Vec<u8>, out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u32, out);
        out.extend(body);
    }
    let total = functions + 1;
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    section(1, vec![1, 0x60, 0, 0], &mut wasm); // one type: [] -> []
    let mut funcs = Vec::new();
    leb(total, &mut funcs);
    funcs.extend(std::iter::repeat_n(0u8, total as usize));
    section(3, funcs, &mut wasm);
    section(5, vec![1, 0, 1], &mut wasm); // one memory, min 1 page
    let mut exports = vec![2, 6];
    exports.extend(b"_start");
    exports.push(0);
    leb(functions, &mut exports);
    exports.push(6);
    exports.extend(b"memory");
    exports.extend([2, 0]);
    section(7, exports, &mut wasm);
    let mut code = Vec::new();
    leb(total, &mut code);
    for _ in 0..total {
        code.extend([2, 0, 0x0b]); // size 2: no locals, end
    }
    section(10, code, &mut wasm);
    wasm
}

#[tokio::test]
async fn a_million_functions_are_refused_at_start_and_fewer_compile_within_the_containers_memory() {
    let pod = shim_with_neighbour().await;
    let shim = &pod.shim;
    // wasmer's validator takes at most 1,000,000 functions: with `_start`, one too many.
    let refused = unique("million");
    let bundle = shim.bundle(&refused, &many_functions(1_000_000), &["/app.wasm"]);
    let (out, err) = shim.outputs(&refused);
    let (started, slowest) = beside_neighbour(&pod, async {
        shim.create(&refused, &bundle, &out.path, &err.path)
            .await
            .unwrap();
        shim.start_task(&refused).await
    })
    .await;
    let (c, message) = code(started.unwrap_err());
    assert_eq!(c, Code::INVALID_ARGUMENT);
    assert!(
        message.starts_with(
            "wasm: the module does not compile: Validation error: functions count exceeds limit of 1000000"
        ),
        "{message}"
    );
    assert_eq!(
        shim.status(&refused).await,
        Status::STOPPED,
        "deletable at once"
    );
    shim.delete(&refused).await.unwrap();
    out.finish();
    err.finish();
    assert_responsive("a million functions", slowest, Duration::from_secs(1));

    // Just under the validator's limit, the compile is bounded by the container's memory.
    let limit = |spec: &mut serde_json::Value| {
        spec["linux"]["resources"] = serde_json::json!({ "memory": { "limit": 64u64 << 20 } });
    };
    let wasm = many_functions(999_999);
    assert!(wasm.len() < 8 << 20, "within the test's MaxModuleBytes");
    let (status, _, slowest) = hostile(&pod, "functions", &wasm, limit, None).await;
    assert_eq!(
        status, 137,
        "the compile ran in the container's cgroup and was OOM-killed"
    );
    let events = shim.events();
    let oom = events.iter().position(|e| e == "/tasks/oom");
    let exit = events.iter().rposition(|e| e == "/tasks/exit");
    assert!(
        oom.is_some() && oom < exit,
        "TaskOOM before TaskExit: {events:?}"
    );
    assert_responsive("999,999 functions", slowest, Duration::from_secs(1));
    pod.finish().await;
}

/// An endless compute loop.
const SPIN_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))"#;

#[tokio::test]
async fn a_spinning_module_ends_with_143_on_sigterm() {
    let pod = shim_with_neighbour().await;
    let (status, _, slowest) = hostile(
        &pod,
        "spin",
        &module(SPIN_WAT),
        |_| {},
        Some(Duration::from_secs(1)),
    )
    .await;
    assert_eq!(status, 143);
    assert_responsive("a spinning guest", slowest, Duration::from_secs(1));
    pod.finish().await;
}

/// Opens app.wasm through the root preopen (fd 4) until path_open fails; exits with its errno.
const OPEN_FOREVER_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "app.wasm")
  (func (export "_start") (local $errno i32)
    (loop $more
      (local.set $errno (call $open (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 8)
        (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 64)))
      (br_if $more (i32.eqz (local.get $errno))))
    (call $exit (local.get $errno))))"#;

/// WASI's `mfile` errno: too many open files in the process (the spec's RLIMIT_NOFILE).
const WASI_ERRNO_MFILE: u32 = 33;

#[tokio::test]
async fn a_module_that_opens_files_forever_gets_mfile_at_its_rlimit() {
    let pod = shim_with_neighbour().await;
    let rlimit = |spec: &mut serde_json::Value| {
        spec["process"]["rlimits"] =
            serde_json::json!([{ "type": "RLIMIT_NOFILE", "soft": 128, "hard": 128 }]);
    };
    let (status, _, slowest) = hostile(&pod, "fds", &module(OPEN_FOREVER_WAT), rlimit, None).await;
    assert_eq!(
        status, WASI_ERRNO_MFILE,
        "path_open answered EMFILE's errno"
    );
    assert_responsive(
        "a guest opening files forever",
        slowest,
        Duration::from_secs(1),
    );
    pod.finish().await;
}

/// Writes 64 KiB blocks to stdout forever.
const FLOOD_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $more
      (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $more))))"#;

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn output_faster_than_it_is_read_blocks_the_guest_not_the_shim() {
    let pod = shim_with_neighbour().await;
    let shim = &pod.shim;
    let shim_pid = shim.shim.id();
    let flood = unique("flood");
    let bundle = shim.bundle(&flood, &module(FLOOD_WAT), &["/app.wasm"]);
    // A reader that has the FIFO open and never reads, as a stalled log collector.
    let stdout = shim.dir.path().join("flood-stalled");
    shim_under_test::mkfifo(&stdout);
    let stalled = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_nonblock()
        .open(&stdout)
        .unwrap();
    let err = shim_under_test::Output::new(&shim.dir.path().join("flood-err"));
    let before = rss_kib(shim_pid);
    let ((), slowest) = beside_neighbour(&pod, async {
        shim.create(&flood, &bundle, &stdout, &err.path)
            .await
            .unwrap();
        shim.start_task(&flood).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await;
    let grown = rss_kib(shim_pid).saturating_sub(before);
    assert_eq!(
        shim.status(&flood).await,
        Status::RUNNING,
        "blocked, not dead"
    );
    shim.kill(&flood, 9).await.unwrap();
    assert_eq!(shim.wait(&flood).await.exit_status, 137);
    drop(stalled);
    err.finish();
    shim.delete(&flood).await.unwrap();
    println!("the shim's resident memory grew {grown} KiB while the guest flooded stdout");
    assert!(
        grown < 8 * 1024,
        "the shim buffered the flood: +{grown} KiB"
    );
    assert_responsive("an output flood", slowest, Duration::from_secs(1));
    pod.finish().await;
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

#[tokio::test]
async fn a_module_over_the_size_limit_is_refused_at_create_with_the_option_to_raise() {
    let pod = shim_with_neighbour().await;
    let shim = &pod.shim;
    // 9 MiB of data: over the 8 MiB MaxModuleBytes the test shim was given.
    let mut wasm = module(SPIN_WAT);
    wasm.extend(custom_section(9 << 20));
    let huge = unique("huge");
    let bundle = shim.bundle(&huge, &wasm, &["/app.wasm"]);
    let (out, err) = shim.outputs(&huge);
    let (created, slowest) =
        beside_neighbour(&pod, shim.create(&huge, &bundle, &out.path, &err.path)).await;
    let (c, message) = code(created.unwrap_err());
    assert_eq!(c, Code::INVALID_ARGUMENT);
    assert_eq!(
        message,
        format!(
            "entrypoint /app.wasm is {} bytes, more than the wasm runtime's MaxModuleBytes (8388608); raise that option to run it",
            wasm.len()
        )
    );
    assert_responsive("an oversized module", slowest, Duration::from_secs(1));
    drop((out, err));
    pod.finish().await;
}

/// A custom section (id 0) of `len` payload bytes: valid wasm that any engine skips.
fn custom_section(len: usize) -> Vec<u8> {
    let mut body = vec![4];
    body.extend(b"junk");
    body.resize(len, 0);
    let mut section = vec![0];
    leb(body.len() as u32, &mut section);
    section.extend(body);
    section
}

/// `n` in unsigned LEB128, as the wasm binary format writes counts and sizes.
fn leb(mut n: u32, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
