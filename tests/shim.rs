//! Shim-level tests: the real `containerd-shim-wasm-v1` binary, started as containerd starts
//! its server, driven over its real ttrpc socket, with a bundle, FIFOs and an events
//! listener made here. No containerd: these pin the Task API semantics exactly.

#[path = "common/cgroups.rs"]
#[allow(dead_code)]
mod cgroups;
#[path = "common/procfs.rs"]
mod procfs;
#[path = "common/shim_under_test.rs"]
mod shim_under_test;

use shim_under_test::{code, ctx, wait_for_cpu, ShimUnderTest, SHIM};

use std::process::Command;
use std::time::Duration;

use containerd_shim::api::{ConnectRequest, PidsRequest, Status};
use containerd_shim::protos::api::{
    CloseIORequest, ExecProcessRequest, PauseRequest, ResumeRequest, StatsRequest,
    UpdateTaskRequest,
};
use containerd_shim::protos::cgroups::metrics::Metrics;
use containerd_shim::protos::cgroups_v2::metrics::Metrics as MetricsV2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::ttrpc::Code;

fn wat(name: &str) -> Vec<u8> {
    let path = repo_dir().join("tests/guests/wat").join(name);
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An endless compute loop: no syscalls, so only a real signal to a real process stops it.
const SPIN_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))"#;

#[tokio::test]
async fn hello_runs_to_completion_with_events_in_containerd_order() {
    let shim = ShimUnderTest::start().await;
    let bundle = shim.bundle("hello", &wat("hello.wat"), &["/app.wasm"]);
    let (out, err) = shim.outputs("hello");
    let pid = shim
        .create("hello", &bundle, &out.path, &err.path)
        .await
        .unwrap();
    assert!(pid > 0);
    assert_eq!(shim.status("hello").await, Status::CREATED);
    assert_eq!(shim.start_task("hello").await.unwrap(), pid);
    let exit = shim.wait("hello").await;
    assert_eq!(exit.exit_status, 0);
    assert!(exit.exited_at.seconds > 0);
    assert_eq!(out.finish(), "hello from wat\n");
    assert_eq!(err.finish(), "");
    assert_eq!(shim.status("hello").await, Status::STOPPED);
    let pids = shim
        .client
        .pids(
            ctx(),
            &PidsRequest {
                id: "hello".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        pids.processes.is_empty(),
        "an exited task has no live processes"
    );
    let deleted = shim.delete("hello").await.unwrap();
    assert_eq!((deleted.pid, deleted.exit_status), (pid, 0));
    assert_eq!(
        shim.events_when(|e| e.len() >= 4).await,
        vec![
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    let log = shim.log.lock().unwrap().clone();
    assert!(log.contains("create id=hello"), "shim log: {log}");
    let guest_log = shim.bundle_log("hello");
    assert!(
        guest_log.contains("compiled module sha256:"),
        "guest log: {guest_log}"
    );
    shim.stop().await;
}

#[tokio::test]
async fn proc_exit_code_and_trap_are_reported() {
    let shim = ShimUnderTest::start().await;
    let cases: [(&str, Vec<u8>, u32, &str); 2] = [
        ("exit7", wat("exit.wat"), 7, ""),
        ("trap", wat("trap.wat"), 134, "wasm trap: "),
    ];
    for (id, module, status, stderr) in cases {
        let (exit_status, _, err_text) = shim.run_to_exit(id, &module).await;
        assert_eq!(exit_status, status, "{id}");
        assert!(err_text.starts_with(stderr), "{id} stderr: {err_text:?}");
        if id == "trap" {
            assert!(err_text.contains("unreachable"), "{err_text}");
        }
    }
    shim.stop().await;
}

#[tokio::test]
async fn sigterm_ends_a_compute_loop_and_a_second_kill_is_not_found() {
    let shim = ShimUnderTest::start().await;
    let bundle = shim.bundle("spin", SPIN_WAT.as_bytes(), &["/app.wasm"]);
    let module = wat::parse_str(SPIN_WAT).unwrap();
    std::fs::write(bundle.join("rootfs/app.wasm"), module).unwrap();
    let (out, err) = shim.outputs("spin");
    shim.create("spin", &bundle, &out.path, &err.path)
        .await
        .unwrap();
    let pid = shim.start_task("spin").await.unwrap();
    // In its loop: 50 ms of CPU time.
    wait_for_cpu(pid, 5).await;
    assert_eq!(shim.status("spin").await, Status::RUNNING);
    let pids = shim
        .client
        .pids(
            ctx(),
            &PidsRequest {
                id: "spin".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let listed: Vec<u32> = pids.processes.iter().map(|p| p.pid).collect();
    assert_eq!(listed, vec![pid]);
    let connect = ConnectRequest {
        id: "spin".into(),
        ..Default::default()
    };
    let connected = shim.client.connect(ctx(), &connect).await.unwrap();
    assert_eq!(
        (connected.shim_pid, connected.task_pid),
        (shim.shim.id(), pid)
    );
    // The guest is its own process, a child of the shim: the shim never runs guest code.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: u32 = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, shim.shim.id());
    let (c, _) = code(shim.delete("spin").await.unwrap_err());
    assert_eq!(c, Code::FAILED_PRECONDITION, "delete of a running task");
    shim.kill("spin", 15).await.unwrap();
    assert_eq!(shim.wait("spin").await.exit_status, 143);
    let (c, msg) = code(shim.kill("spin", 15).await.unwrap_err());
    assert_eq!(c, Code::NOT_FOUND, "{msg}");
    let (c, _) = code(shim.start_task("spin").await.unwrap_err());
    assert_eq!(c, Code::FAILED_PRECONDITION);
    out.finish();
    err.finish();
    shim.delete("spin").await.unwrap();
    shim.stop().await;
}

#[tokio::test]
async fn a_created_task_can_be_killed_or_deleted_before_start() {
    let shim = ShimUnderTest::start().await;
    for (id, kill) in [("killed", true), ("dropped", false)] {
        let bundle = shim.bundle(id, &wat("hello.wat"), &["/app.wasm"]);
        let (out, err) = shim.outputs(id);
        shim.create(id, &bundle, &out.path, &err.path)
            .await
            .unwrap();
        if kill {
            shim.kill(id, 9).await.unwrap();
            assert_eq!(shim.wait(id).await.exit_status, 137);
        }
        let deleted = shim.delete(id).await.unwrap();
        assert_eq!(deleted.exit_status, 137);
        assert_eq!(out.finish(), "", "a task never started prints nothing");
        err.finish();
    }
    shim.stop().await;
}

#[tokio::test]
async fn bad_entrypoints_fail_create_and_the_shim_serves_on() {
    let shim = ShimUnderTest::start().await;
    let cases = [
        ("/missing.wasm", "does not exist"),
        // An ELF goes to runc, which refuses this one (mode 0644) with its reason.
        ("/native", "runc create failed: unable to start container process: exec: \"/native\": permission denied"),
        ("/", "not a regular file"),
    ];
    for (i, (entry, why)) in cases.into_iter().enumerate() {
        let id = format!("bad{i}");
        let bundle = shim.bundle(&id, &wat("hello.wat"), &[entry]);
        let (out, err) = shim.outputs(&id);
        let (c, msg) = code(
            shim.create(&id, &bundle, &out.path, &err.path)
                .await
                .unwrap_err(),
        );
        assert_eq!(c, Code::INVALID_ARGUMENT, "{msg}");
        assert!(msg.contains(entry) && msg.contains(why), "{entry}: {msg}");
        assert!(
            !msg.contains(shim.dir.path().to_str().unwrap()),
            "host path in: {msg}"
        );
    }
    let bundle = shim.dir.path().join("broken");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), b"{ not json").unwrap();
    let (out, err) = shim.outputs("broken");
    let (c, msg) = code(
        shim.create("broken", &bundle, &out.path, &err.path)
            .await
            .unwrap_err(),
    );
    assert_eq!(c, Code::INVALID_ARGUMENT);
    assert!(msg.contains("config.json"), "{msg}");
    // Still serving: a good task runs.
    let bundle = shim.bundle("good", &wat("hello.wat"), &["/app.wasm"]);
    let (out, err) = shim.outputs("good");
    shim.create("good", &bundle, &out.path, &err.path)
        .await
        .unwrap();
    shim.start_task("good").await.unwrap();
    assert_eq!(shim.wait("good").await.exit_status, 0);
    assert_eq!(out.finish(), "hello from wat\n");
    err.finish();
    shim.delete("good").await.unwrap();
    shim.stop().await;
}

#[tokio::test]
async fn checkpoint_answers_unimplemented_and_unknown_ids_not_found() {
    let shim = ShimUnderTest::start().await;
    let exec = ExecProcessRequest {
        id: "x".into(),
        exec_id: "e".into(),
        ..Default::default()
    };
    // Exec into an unknown container: NOT_FOUND, as for every call below.
    let (c, _) = code(shim.client.exec(ctx(), &exec).await.unwrap_err());
    assert_eq!(c, Code::NOT_FOUND);
    let checkpoint = containerd_shim::protos::api::CheckpointTaskRequest {
        id: "x".into(),
        ..Default::default()
    };
    let (c, _) = code(
        shim.client
            .checkpoint(ctx(), &checkpoint)
            .await
            .unwrap_err(),
    );
    assert_eq!(c, Code::UNIMPLEMENTED);
    let (c, _) = code(
        shim.client
            .stats(
                ctx(),
                &StatsRequest {
                    id: "x".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(c, Code::NOT_FOUND);
    let (c, _) = code(shim.kill("nope", 15).await.unwrap_err());
    assert_eq!(c, Code::NOT_FOUND);
    let close = CloseIORequest {
        id: "nope".into(),
        stdin: true,
        ..Default::default()
    };
    let (c, _) = code(shim.client.close_io(ctx(), &close).await.unwrap_err());
    assert_eq!(c, Code::NOT_FOUND);
    shim.stop().await;
}

/// (memory usage, CPU time in nanoseconds) from a Stats answer, whichever of containerd's
/// metrics types this host's cgroup version gives.
fn usage(any: &Any) -> (u64, u64) {
    if cgroups::is_v2() {
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = MetricsV2::parse_from_bytes(&any.value).unwrap();
        (m.memory.usage, m.cpu.usage_usec * 1000)
    } else {
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = Metrics::parse_from_bytes(&any.value).unwrap();
        (m.memory.usage.usage, m.cpu.usage.total)
    }
}

#[tokio::test]
async fn stats_update_pause_and_resume_act_on_the_containers_cgroup() {
    let shim = ShimUnderTest::start().await;
    let id = format!("cgroup-{}", std::process::id());
    let bundle = shim.bundle(&id, &wat::parse_str(SPIN_WAT).unwrap(), &["/app.wasm"]);
    let (out, err) = shim.outputs(&id);
    shim.create(&id, &bundle, &out.path, &err.path)
        .await
        .unwrap();
    let pid = shim.start_task(&id).await.unwrap();
    // The test spec gives no cgroupsPath: runc's default is `/<id>`.
    let path = format!("/{id}");
    assert_eq!(
        cgroups::procs("memory", &path),
        vec![pid as i32],
        "the guest is in its cgroup"
    );

    let stats = |id: String| {
        let client = &shim.client;
        async move {
            let req = StatsRequest {
                id,
                ..Default::default()
            };
            usage(&client.stats(ctx(), &req).await.unwrap().stats.unwrap())
        }
    };
    let (memory, _) = stats(id.clone()).await;
    assert!(memory > 0, "memory usage");

    // Update: a new memory limit reaches the cgroup.
    let resources = serde_json::json!({ "memory": { "limit": 512 * 1024 * 1024 } });
    let update = UpdateTaskRequest {
        id: id.clone(),
        resources: MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: resources.to_string().into_bytes(),
            ..Default::default()
        }),
        ..Default::default()
    };
    shim.client.update(ctx(), &update).await.unwrap();
    assert_eq!(cgroups::memory_limit(&path), (512u64 << 20).to_string());

    // Pause freezes the spinning guest: its CPU time stands still until Resume.
    let pause = PauseRequest {
        id: id.clone(),
        ..Default::default()
    };
    shim.client.pause(ctx(), &pause).await.unwrap();
    assert_eq!(shim.status(&id).await, Status::PAUSED);
    let (_, frozen) = stats(id.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stats(id.clone()).await.1,
        frozen,
        "CPU time moved while paused"
    );
    let resume = ResumeRequest {
        id: id.clone(),
        ..Default::default()
    };
    shim.client.resume(ctx(), &resume).await.unwrap();
    assert_eq!(shim.status(&id).await, Status::RUNNING);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stats(id.clone()).await.1 > frozen, "CPU time after resume");
    shim.events_when(|e| {
        e.iter().any(|e| e == "/tasks/paused") && e.iter().any(|e| e == "/tasks/resumed")
    })
    .await;

    // SIGKILL ends a paused guest too (cgroup v1 thaws it for that, as runc does).
    shim.client.pause(ctx(), &pause).await.unwrap();
    shim.kill(&id, 9).await.unwrap();
    assert_eq!(shim.wait(&id).await.exit_status, 137);
    shim.delete(&id).await.unwrap();
    assert!(
        !cgroups::exists("memory", &path),
        "the cgroup is removed at Delete"
    );
    shim.stop().await;
}

/// What containerd runs when it has lost a shim: the binary's `delete` action for the bundle.
fn delete_action(bundle: &std::path::Path, id: &str) -> containerd_shim::api::DeleteResponse {
    use containerd_shim::protos::protobuf::Message;
    let output = Command::new(SHIM)
        .args(["-namespace", "shimtest", "-id", id, "-address", "/dev/null"])
        .arg("-bundle")
        .arg(bundle)
        .arg("delete")
        .current_dir(bundle)
        .env("TTRPC_ADDRESS", "/dev/null")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    containerd_shim::api::DeleteResponse::parse_from_bytes(&output.stdout).unwrap()
}

/// Whether `pid` is a live process (a zombie is dead: PID 1 here reaps slowly).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

#[tokio::test]
async fn delete_after_a_lost_shim_kills_the_guest_and_reports_137() {
    let mut shim = ShimUnderTest::start().await;
    let bundle = shim.bundle("lost", &wat::parse_str(SPIN_WAT).unwrap(), &["/app.wasm"]);
    let (out, err) = shim.outputs("lost");
    let pid = shim
        .create("lost", &bundle, &out.path, &err.path)
        .await
        .unwrap();
    shim.start_task("lost").await.unwrap();
    // The shim dies as a SIGKILL leaves it: no cleanup of its own. Its guest runs on.
    shim.shim.kill().unwrap();
    shim.shim.wait().unwrap();
    assert!(alive(pid), "the guest outlived its shim until delete");
    let resp = delete_action(&bundle, "lost");
    assert_eq!((resp.pid, resp.exit_status), (pid, 137));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "delete left the guest running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    out.finish();
    err.finish();
}

#[tokio::test]
async fn after_a_clean_delete_the_delete_action_finds_nothing_left() {
    let shim = ShimUnderTest::start().await;
    let id = format!("clean-{}", std::process::id());
    let bundle = shim.bundle(&id, &wat("hello.wat"), &["/app.wasm"]);
    let (out, err) = shim.outputs(&id);
    shim.create(&id, &bundle, &out.path, &err.path)
        .await
        .unwrap();
    shim.start_task(&id).await.unwrap();
    assert_eq!(shim.wait(&id).await.exit_status, 0);
    assert_eq!(out.finish(), "hello from wat\n");
    err.finish();
    shim.delete(&id).await.unwrap();
    // containerd runs the delete action after every shim exit; Delete records in the bundle
    // that the guest is reaped and its cgroup removed, so the action need not search.
    assert!(!cgroups::exists("memory", &format!("/{id}")));
    assert!(
        bundle.join("cleaned-up").exists(),
        "Delete recorded its clean-up in the bundle"
    );
    let resp = delete_action(&bundle, &id);
    assert_eq!((resp.pid, resp.exit_status), (0, 137));
    shim.stop().await;
}

#[tokio::test]
async fn delete_after_a_lost_shim_never_kills_a_process_that_is_not_the_guest() {
    let shim = ShimUnderTest::start().await;
    let bundle = shim.bundle(
        "stranger",
        &wat::parse_str(SPIN_WAT).unwrap(),
        &["/app.wasm"],
    );
    // The bundle names a process that is not this container's guest: the pid was reused by
    // some other program after the guest died.
    let mut stranger = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = stranger.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start = stat
        .rsplit_once(") ")
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    std::fs::write(bundle.join("guest-identity"), format!("{pid} {start}")).unwrap();
    let resp = delete_action(&bundle, "stranger");
    assert_eq!(resp.exit_status, 137);
    assert!(alive(pid), "delete killed a process that was not the guest");
    stranger.kill().unwrap();
    stranger.wait().unwrap();
    shim.stop().await;
}

/// Exits with the errno `fd_prestat_dir_name(4, buf, 0)` answers (fd 4 is the root, "/").
const PRESTAT_SHORT_BUFFER_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (call $name (i32.const 4) (i32.const 64) (i32.const 0)))))"#;

/// Exits with the errno `sock_shutdown(1, SHUT_RDWR)` answers: stdout is not a socket.
const SHUTDOWN_STDOUT_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "sock_shutdown" (func $shutdown (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (call $shutdown (i32.const 1) (i32.const 3)))))"#;

/// Creates directory /d, then renames the file /app.wasm onto it: the kernel says EISDIR,
/// which wasmer alone reports as IO.
const RENAME_FILE_ONTO_DIR_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_create_directory" (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_rename" (func $rename (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "d")
  (data (i32.const 32) "app.wasm")
  (func (export "_start")
    (drop (call $mkdir (i32.const 4) (i32.const 16) (i32.const 1)))
    (call $exit (call $rename (i32.const 4) (i32.const 32) (i32.const 8) (i32.const 4) (i32.const 16) (i32.const 1)))))"#;

/// A module that exits with the errno of one WASI call, `NAME ARGS...` (its import is declared
/// from the call's name).
fn wasi_call(call: &str) -> String {
    let name = call.split_whitespace().next().unwrap();
    let params = match name {
        "fd_fdstat_get" => "i32 i32",
        "fd_seek" => "i32 i64 i32 i32",
        _ => panic!("no signature for {name}"),
    };
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "{name}" (func $call (param {params}) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (call $call {rest}))))"#,
        rest = &call[name.len()..]
    )
}

/// A module that exits with the errno of `path_open(dirfd, 0, path, oflags, 0, 0, 0, out)`.
fn path_open(dirfd: u32, path: &str, oflags: u32) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{path}")
  (func (export "_start")
    (call $exit (call $open (i32.const {dirfd}) (i32.const 0) (i32.const 16) (i32.const {len})
      (i32.const {oflags}) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 64)))))"#,
        len = path.len()
    )
}

/// Closes fd 3 (wasmer's virtual root, reserved by the shim) twice; exits with the second
/// errno (the first must succeed, else exits 100).
const CLOSE_FD_3_TWICE_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (if (call $close (i32.const 3)) (then (call $exit (i32.const 100))))
    (call $exit (call $close (i32.const 3)))))"#;

/// Renumbers stdout onto stderr, then exits with the errno of closing stdout: renumber
/// closes its source (exits 100 if the renumber fails).
const RENUMBER_CLOSES_SOURCE_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_renumber" (func $renumber (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (if (call $renumber (i32.const 1) (i32.const 2)) (then (call $exit (i32.const 100))))
    (call $exit (call $close (i32.const 1)))))"#;

/// Closes stdin, then exits with the errno of `fd_fdstat_get(0)` (100 if the close fails).
const STAT_CLOSED_STDIN_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $stat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (if (call $close (i32.const 0)) (then (call $exit (i32.const 100))))
    (call $exit (call $stat (i32.const 0) (i32.const 64)))))"#;

/// Exits with the errno of `path_symlink("a", 4, "missing/")`: a link path ending in "/".
const SYMLINK_TRAILING_SLASH_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_symlink" (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "a")
  (data (i32.const 32) "missing/")
  (func (export "_start")
    (call $exit (call $symlink (i32.const 16) (i32.const 1) (i32.const 4) (i32.const 32) (i32.const 8)))))"#;

/// Exits with the errno of `path_symlink("/", 4, "abs")`: an absolute target.
const SYMLINK_ABSOLUTE_TARGET_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_symlink" (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "/")
  (data (i32.const 32) "abs")
  (func (export "_start")
    (call $exit (call $symlink (i32.const 16) (i32.const 1) (i32.const 4) (i32.const 32) (i32.const 3)))))"#;

/// Reads the root (fd 4), whose entries sort as ".", "..", "app.wasm", "native": "." must
/// carry the root's own st_ino (else exits 1), "app.wasm" that of `path_filestat_get` on it
/// (else exits 2). Exits 100-104 if a call fails or an entry is not where expected.
const READDIR_INODES_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $stat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get" (func $lstat (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir" (func $readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "app.wasm")
  (func (export "_start")
    (if (call $stat (i32.const 4) (i32.const 128)) (then (call $exit (i32.const 100))))
    (if (call $lstat (i32.const 4) (i32.const 0) (i32.const 16) (i32.const 8) (i32.const 192))
      (then (call $exit (i32.const 101))))
    (if (call $readdir (i32.const 4) (i32.const 256) (i32.const 1024) (i64.const 0) (i32.const 64))
      (then (call $exit (i32.const 102))))
    ;; "." at 256 (24-byte header, then the name), ".." at 281, "app.wasm" at 307
    (if (i32.or (i32.ne (i32.load (i32.const 272)) (i32.const 1))
                (i32.ne (i32.load8_u (i32.const 280)) (i32.const 46)))
      (then (call $exit (i32.const 103))))
    (if (i32.ne (i32.load (i32.const 323)) (i32.const 8)) (then (call $exit (i32.const 104))))
    (if (i64.ne (i64.load (i32.const 264)) (i64.load (i32.const 136))) (then (call $exit (i32.const 1))))
    (if (i64.ne (i64.load (i32.const 315)) (i64.load (i32.const 200))) (then (call $exit (i32.const 2))))))"#;

/// Creates the directory "d" in the root (fd 4), then exits with the errno of
/// `path_unlink_file(4, "d")`, or with 100 if "d" is gone after it.
const UNLINK_DIRECTORY_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_create_directory" (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_unlink_file" (func $unlink (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_remove_directory" (func $rmdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "d")
  (global $e (mut i32) (i32.const 0))
  (func (export "_start")
    (if (call $mkdir (i32.const 4) (i32.const 16) (i32.const 1)) (then (call $exit (i32.const 101))))
    (global.set $e (call $unlink (i32.const 4) (i32.const 16) (i32.const 1)))
    (if (call $rmdir (i32.const 4) (i32.const 16) (i32.const 1)) (then (call $exit (i32.const 100))))
    (call $exit (global.get $e))))"#;

/// Opens "." under the root (fd 4) as a new directory descriptor and renumbers it over the
/// root preopen; exits with the errno of `fd_fdstat_get` on the old number (100-102 when the
/// open, the renumber, or the stat of fd 4 fails). wasmer alone refuses to replace a preopen.
const RENUMBER_OVER_A_PREOPEN_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_renumber" (func $renumber (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $stat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) ".")
  (func (export "_start")
    (if (call $open (i32.const 4) (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 2)
          (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 64))
      (then (call $exit (i32.const 102))))
    (if (call $renumber (i32.load (i32.const 64)) (i32.const 4)) (then (call $exit (i32.const 100))))
    (if (call $stat (i32.const 4) (i32.const 128)) (then (call $exit (i32.const 101))))
    (call $exit (call $stat (i32.load (i32.const 64)) (i32.const 128)))))"#;

/// Creates and opens the directory "d" under the root (all rights but FD_WRITE, which a
/// directory cannot have), then exits with the errno of opening "../app.wasm" under it: ".."
/// above a directory the guest opened (100-101 when the set-up fails).
const DOTDOT_ABOVE_AN_OPENED_DIRECTORY_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_create_directory" (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "d")
  (data (i32.const 32) "../app.wasm")
  (func (export "_start")
    (if (call $mkdir (i32.const 4) (i32.const 16) (i32.const 1)) (then (call $exit (i32.const 100))))
    (if (call $open (i32.const 4) (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 2)
          (i64.const -65) (i64.const -1) (i32.const 0) (i32.const 64))
      (then (call $exit (i32.const 101))))
    (call $exit (call $open (i32.load (i32.const 64)) (i32.const 0) (i32.const 32) (i32.const 11)
      (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 68)))))"#;

/// Links "hard" to /app.wasm under the root, then compares the two names' `path_filestat_get`:
/// exits 0 when they have one inode and a link count of 2, 1 when not (100-102 when a call
/// fails). wasmer alone made the link in memory, with an inode number hashed from each path.
const HARD_LINK_SHARES_AN_INODE_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_link" (func $link (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get" (func $lstat (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "app.wasm")
  (data (i32.const 32) "hard")
  (func (export "_start")
    (if (call $link (i32.const 4) (i32.const 0) (i32.const 16) (i32.const 8) (i32.const 4) (i32.const 32) (i32.const 4))
      (then (call $exit (i32.const 100))))
    (if (call $lstat (i32.const 4) (i32.const 0) (i32.const 16) (i32.const 8) (i32.const 128))
      (then (call $exit (i32.const 101))))
    (if (call $lstat (i32.const 4) (i32.const 0) (i32.const 32) (i32.const 4) (i32.const 192))
      (then (call $exit (i32.const 102))))
    ;; filestat: ino at 8, nlink at 24
    (if (i32.or (i64.ne (i64.load (i32.const 136)) (i64.load (i32.const 200)))
                (i64.ne (i64.load (i32.const 216)) (i64.const 2)))
      (then (call $exit (i32.const 1))))
    (call $exit (i32.const 0))))"#;

#[tokio::test]
async fn wasi_calls_answer_the_errno_wasi_specifies() {
    use wasmer_wasix::types::wasi::Errno;
    let shim = ShimUnderTest::start().await;
    let cases = [
        ("prestat", PRESTAT_SHORT_BUFFER_WAT, Errno::Nametoolong),
        ("shutdown", SHUTDOWN_STDOUT_WAT, Errno::Notsock),
        (
            "fd3",
            &wasi_call("fd_fdstat_get (i32.const 3) (i32.const 64)"),
            Errno::Badf,
        ),
        ("close3", CLOSE_FD_3_TWICE_WAT, Errno::Badf),
        ("renamedir", RENAME_FILE_ONTO_DIR_WAT, Errno::Isdir),
        ("absolute", &path_open(4, "/app.wasm", 0), Errno::Perm),
        ("notdir", &path_open(1, "foo", 1), Errno::Notdir),
        (
            "dirseek",
            &wasi_call("fd_seek (i32.const 4) (i64.const 0) (i32.const 0) (i32.const 64)"),
            Errno::Notcapable,
        ),
        ("renumber", RENUMBER_CLOSES_SOURCE_WAT, Errno::Badf),
        ("stdin", STAT_CLOSED_STDIN_WAT, Errno::Badf),
        ("symlink", SYMLINK_TRAILING_SLASH_WAT, Errno::Noent),
        ("unlinkdir", UNLINK_DIRECTORY_WAT, Errno::Isdir),
        ("symlinkabs", SYMLINK_ABSOLUTE_TARGET_WAT, Errno::Perm),
        ("readdir", READDIR_INODES_WAT, Errno::Success),
        ("renumberpre", RENUMBER_OVER_A_PREOPEN_WAT, Errno::Badf),
        ("dotdot", DOTDOT_ABOVE_AN_OPENED_DIRECTORY_WAT, Errno::Perm),
        (
            "dotdotroot",
            &path_open(4, "../app.wasm", 0),
            Errno::Success,
        ),
        ("hardlink", HARD_LINK_SHARES_AN_INODE_WAT, Errno::Success),
    ];
    for (id, source, errno) in cases {
        let module = wat::parse_str(source).unwrap();
        assert_eq!(shim.run_to_exit(id, &module).await.0, errno as u32, "{id}");
    }
    shim.stop().await;
}

/// A WASIX module: duplicates stdout with WASIX's `fd_dup`, then writes through the new
/// descriptor with WASI's `fd_write` (exits 100 if the dup fails, else with the write's errno).
const WASIX_DUP_WAT: &str = r#"(module
  (import "wasix_32v1" "fd_dup" (func $dup (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "\40\00\00\00\0f\00\00\00")
  (data (i32.const 64) "hello from dup\n")
  (func (export "_start")
    (if (call $dup (i32.const 1) (i32.const 8)) (then (call $exit (i32.const 100))))
    (call $exit (call $write (i32.load (i32.const 8)) (i32.const 16) (i32.const 1) (i32.const 12)))))"#;

#[tokio::test]
async fn a_wasix_module_uses_the_descriptors_wasix_calls_make() {
    // WASIX calls make descriptors the shim's table does not see; for a WASIX module guest
    // numbers stay wasmer's, so a descriptor from fd_dup works in WASI calls.
    let shim = ShimUnderTest::start().await;
    let module = wat::parse_str(WASIX_DUP_WAT).unwrap();
    let (status, out, _) = shim.run_to_exit("wasixdup", &module).await;
    assert_eq!(status, 0);
    assert_eq!(out, "hello from dup\n");
    shim.stop().await;
}

/// The repository, as `cargo test` says at run time: a test binary reused from another
/// checkout of the same sources (one shared target directory) must still read this one's files.
fn repo_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Polls one relative clock subscription with timeout 0; exits with the number of events,
/// plus 100 if the guest's subscription was not left as it wrote it.
const POLL_ZERO_TIMEOUT_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 0))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (call $exit (i32.add (i32.load (i32.const 128))
      (select (i32.const 0) (i32.const 100) (i64.eqz (i64.load (i32.const 24))))))))"#;

#[tokio::test]
async fn a_zero_timeout_poll_returns_at_once() {
    let shim = ShimUnderTest::start().await;
    let module = wat::parse_str(POLL_ZERO_TIMEOUT_WAT).unwrap();
    let bundle = shim.bundle("poll0", &module, &["/app.wasm"]);
    let (out, err) = shim.outputs("poll0");
    shim.create("poll0", &bundle, &out.path, &err.path)
        .await
        .unwrap();
    shim.start_task("poll0").await.unwrap();
    // Without the fix wasmer blocks forever and `wait` times out.
    assert_eq!(
        shim.wait("poll0").await.exit_status,
        1,
        "one clock event, subscription intact"
    );
    out.finish();
    err.finish();
    shim.delete("poll0").await.unwrap();
    shim.stop().await;
}
