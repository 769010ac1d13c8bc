//! End-to-end tests: a real containerd (started by `make test`), `ctr run --runtime
//! io.containerd.wasm.v1`, images built by `wasm-image` from guests kept as source. Every case
//! ends by checking that no task, container, shim, mount or FIFO of its id is left.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{
    big_module_wat, build_image, containerd, guests_dir, parent_pid, unique_id, BindMount, RunOpts,
    RunResult,
};

const NS: &str = "wasm-e2e";
const PROBE_IMAGE: &str = "docker.io/library/e2e-probe:latest";

fn work_dir() -> &'static Path {
    common::work_dir()
}

/// Builds an image with `wasm-image` and imports it into the test namespace.
fn image(name: &str, module: &Path, extra: &[&str]) -> String {
    build_image(NS, work_dir(), name, module, extra)
}

/// The probe guest at /probe.wasm and /bin/probe.wasm, with files and oddities beside it.
fn probe_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let files = work_dir().join("probe-files");
        std::fs::create_dir_all(files.join("data")).unwrap();
        std::fs::write(files.join("data/rel.txt"), "relative ok\n").unwrap();
        std::fs::write(files.join("notes.txt"), "just text\n").unwrap();
        std::fs::write(files.join("hostname"), "container hostname\n").unwrap();
        std::fs::copy("/bin/true", files.join("native")).unwrap();
        let probe = guests_dir().join("probe.wasm");
        let bin = format!("{}:/bin/probe.wasm", probe.display());
        let data = format!("{}:/data", files.join("data").display());
        let notes = format!("{}:/notes.txt", files.join("notes.txt").display());
        let native = format!("{}:/native", files.join("native").display());
        let hostname = format!("{}:/etc/hostname", files.join("hostname").display());
        let c_probe = format!(
            "{}:/probe-c.wasm",
            guests_dir().join("probe-c.wasm").display()
        );
        let sleeper = format!("{}:/sleeper", guests_dir().join("sleeper").display());
        let nprobe = format!("{}:/nprobe", guests_dir().join("nprobe").display());
        let extra = [
            "--entrypoint",
            "/probe.wasm",
            "--add",
            &c_probe,
            "--add",
            &sleeper,
            "--add",
            &nprobe,
            "--add",
            &bin,
            "--add",
            &data,
            "--add",
            &notes,
            "--add",
            &native,
            "--add",
            &hostname,
            "--symlink",
            "/escape:/etc",
            "--symlink",
            "/up:../../../../../etc",
        ];
        image(PROBE_IMAGE, &probe, &extra)
    })
}

fn opts(id: &str, args: &[&str]) -> RunOpts {
    let mut o = image_opts(probe_image(), id);
    o.args = args.iter().map(|s| s.to_string()).collect();
    o
}

/// A run of `image` in the tests' namespace.
fn image_opts(image: &str, id: &str) -> RunOpts {
    let mut o = RunOpts::new(image, id);
    o.namespace = NS.into();
    o
}

/// Runs, then checks nothing of the container is left behind.
fn run(o: RunOpts) -> RunResult {
    let id = o.id.clone();
    let result = containerd().run(o);
    containerd().assert_no_debris(NS, &id);
    result
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn hello_prints_and_exits_zero() {
    let module = guests_dir().join("hello.wasm");
    let name = image("docker.io/library/e2e-hello:latest", &module, &[]);
    let id = unique_id("hello");
    let r = run(image_opts(&name, &id));
    r.assert_code(0);
    assert_eq!(r.stdout_str(), "hello from wasm\n", "{r}");
}

/// The runtime's options given to ctr as a file (`ctr run --runtime-config-path`, as the config
/// snippets tell ctr users) reach the shim and apply to the container. (CRI's path, where
/// containerd 1.7 and 2.x also write them on `start`'s stdin, is covered by tests/cri.rs.)
#[test]
fn runtime_options_given_to_ctr_apply_to_the_container() {
    let module = guests_dir().join("hello.wasm");
    let name = image("docker.io/library/e2e-hello:latest", &module, &[]);
    let dir = work_dir().join("runtime-options");
    std::fs::create_dir_all(&dir).unwrap();
    let module_len = std::fs::metadata(&module).unwrap().len();

    // Room for the module: it runs.
    let roomy = dir.join("roomy.toml");
    std::fs::write(&roomy, format!("MaxModuleBytes = {module_len}\n")).unwrap();
    let mut o = image_opts(&name, &unique_id("options-ok"));
    o.extra_flags = vec!["--runtime-config-path".into(), roomy.display().to_string()];
    let r = run(o);
    r.assert_code(0);
    assert_eq!(r.stdout_str(), "hello from wasm\n", "{r}");

    // One byte less: Create fails, naming the option.
    let tight = dir.join("tight.toml");
    std::fs::write(&tight, format!("MaxModuleBytes = {}\n", module_len - 1)).unwrap();
    let mut o = image_opts(&name, &unique_id("options-small"));
    o.extra_flags = vec!["--runtime-config-path".into(), tight.display().to_string()];
    let r = run(o);
    r.assert_code(1);
    let reason = format!(
        "is {module_len} bytes, more than the wasm runtime's MaxModuleBytes ({}); raise that option to run it",
        module_len - 1
    );
    assert!(r.stderr_str().contains(&reason), "{r}");
}

#[test]
fn argv_is_exactly_the_specs() {
    let id = unique_id("argv");
    let r = run(opts(
        &id,
        &["/probe.wasm", "args", "a b", "", "--flag=x", "ünï"],
    ));
    r.assert_code(0);
    assert_eq!(
        lines(&r.stdout_str()),
        ["/probe.wasm", "args", "a b", "", "--flag=x", "ünï"]
    );
}

#[test]
fn env_is_exactly_the_specs_split_on_the_first_equals() {
    let id = unique_id("env");
    let mut o = opts(&id, &["/probe.wasm", "env"]);
    o.env = vec![
        ("A".into(), "1".into()),
        ("B".into(), "x=y".into()),
        ("EMPTY".into(), "".into()),
    ];
    let r = run(o);
    r.assert_code(0);
    let out = r.stdout_str();
    let vars = lines(&out);
    // ctr always adds a PATH (containerd.md); nothing of the host's environment appears.
    assert!(vars[0].starts_with("PATH="), "{r}");
    assert_eq!(&vars[1..], ["A=1", "B=x=y", "EMPTY="], "{r}");
}

#[test]
fn entrypoint_resolves_absolute_relative_and_bare_names() {
    for (i, (entry, cwd)) in [
        ("/probe.wasm", "/"),
        ("../probe.wasm", "/data"),
        ("probe.wasm", "/"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = unique_id(&format!("entry{i}"));
        let mut o = opts(&id, &[entry, "args"]);
        o.cwd = Some(cwd.into());
        let r = run(o);
        r.assert_code(0);
        // argv[0] is the path as the spec gave it, never a host path.
        assert_eq!(lines(&r.stdout_str()), [entry, "args"], "{r}");
    }
}

#[test]
fn bad_entrypoints_fail_with_the_path_and_the_reason() {
    let cases = [
        ("/missing.wasm", "does not exist"),
        ("/data", "not a regular file"),
        ("/notes.txt", "text file"),
        ("nowhere.wasm", "PATH"),
    ];
    for (i, (entry, why)) in cases.into_iter().enumerate() {
        let id = unique_id(&format!("badentry{i}"));
        let r = run(opts(&id, &[entry]));
        assert_ne!(r.code, Some(0), "{r}");
        let err = r.stderr_str();
        assert!(err.contains(entry) && err.contains(why), "{entry}: {r}");
        assert!(!err.contains("/var/tmp"), "host path shown: {r}");
    }
}

#[test]
fn an_elf_entrypoint_runs_natively_under_runc() {
    // A static program: it runs under runc, confined as any runc container, and says so.
    let id = unique_id("native");
    let r = run(opts(&id, &["/sleeper", "0"]));
    r.assert_code(0);
    containerd().wait_for_log("is a native executable: it runs under runc", &id);
    // A dynamically linked one whose loader the image lacks fails as under runc: runc's
    // init reports the failed exec on the container's stderr and exits 1.
    let id = unique_id("native-broken");
    let r = run(opts(&id, &["/native"]));
    r.assert_code(1);
    assert_eq!(
        r.stderr_str(),
        "exec /native: no such file or directory\n",
        "{r}"
    );
    let id = unique_id("native-runc");
    let mut o = opts(&id, &["/native"]);
    o.runtime = "io.containerd.runc.v2".into();
    let runc = run(o);
    assert_eq!(
        (runc.code, runc.stderr_str()),
        (r.code, r.stderr_str()),
        "the same as runc's own shim"
    );
}

#[test]
fn relative_paths_resolve_against_process_cwd() {
    let id = unique_id("cwd-read");
    let mut o = opts(&id, &["/probe.wasm", "read", "rel.txt"]);
    o.cwd = Some("/data".into());
    let r = run(o);
    r.assert_code(0);
    assert_eq!(r.stdout_str(), "relative ok\n", "{r}");

    // A relative write lands in the working directory too.
    let id = unique_id("cwd-write");
    let mut o = opts(&id, &["/probe.wasm", "write", "made-here.txt", "x"]);
    o.cwd = Some("/data".into());
    run(o).assert_code(0);

    // Absolute paths into the root's directories still resolve from the root (root-level
    // files are the documented ambiguous case, see the README's "Working directory").
    let id = unique_id("cwd-abs");
    let mut o = opts(&id, &["/probe.wasm", "read", "/etc/hostname"]);
    o.cwd = Some("/data".into());
    assert_eq!(run(o).stdout_str(), "container hostname\n");
}

#[test]
fn bind_mounts_appear_at_their_destinations_and_ro_is_enforced() {
    let host = work_dir().join(unique_id("mnt"));
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("in.txt"), "from the host\n").unwrap();
    let mount = |ro| BindMount {
        src: host.clone(),
        dst: "/mnt".into(),
        read_only: ro,
    };

    let id = unique_id("mnt-read");
    let mut o = opts(&id, &["/probe.wasm", "read", "/mnt/in.txt"]);
    o.mounts = vec![mount(true)];
    assert_eq!(run(o).stdout_str(), "from the host\n");

    let id = unique_id("mnt-ro");
    let mut o = opts(&id, &["/probe.wasm", "write", "/mnt/out.txt", "nope"]);
    o.mounts = vec![mount(true)];
    let r = run(o);
    // The kernel refuses with EROFS; wasmer-wasix has no read-only error, so the guest sees
    // EACCES (see the README's "Filesystem").
    r.assert_code(1);
    assert!(r.stderr_str().contains("PermissionDenied"), "{r}");
    assert!(!host.join("out.txt").exists());

    let id = unique_id("mnt-rw");
    let mut o = opts(
        &id,
        &["/probe.wasm", "write", "/mnt/out.txt", "written by wasm"],
    );
    o.mounts = vec![mount(false)];
    run(o).assert_code(0);
    assert_eq!(
        std::fs::read_to_string(host.join("out.txt")).unwrap(),
        "written by wasm"
    );
}

#[test]
fn links_a_guest_makes_are_real_on_the_host() {
    // wasmer-wasix kept guest-made hard links and symlinks in memory only; through a
    // read-write bind mount the host must see them, and a later container use them.
    let host = work_dir().join(unique_id("links"));
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("file"), "linked\n").unwrap();
    let mount = BindMount {
        src: host.clone(),
        dst: "/mnt".into(),
        read_only: false,
    };
    for (name, args) in [
        ("link", ["link", "/mnt/file", "/mnt/hard"]),
        ("symlink", ["symlink", "file", "/mnt/soft"]),
    ] {
        let id = unique_id(name);
        let mut argv = vec!["/probe.wasm"];
        argv.extend(args);
        let mut o = opts(&id, &argv);
        o.mounts = vec![mount.clone()];
        run(o).assert_code(0);
    }
    use std::os::unix::fs::MetadataExt;
    let (file, hard) = (
        std::fs::metadata(host.join("file")).unwrap(),
        std::fs::metadata(host.join("hard")).unwrap(),
    );
    assert_eq!((hard.ino(), hard.nlink()), (file.ino(), 2));
    assert_eq!(
        std::fs::read_link(host.join("soft")).unwrap(),
        std::path::Path::new("file")
    );
    let id = unique_id("links-read");
    let mut o = opts(&id, &["/probe.wasm", "read", "/mnt/soft"]);
    o.mounts = vec![mount];
    assert_eq!(run(o).stdout_str(), "linked\n");
}

#[test]
fn times_a_guest_sets_reach_the_file() {
    // Through the descriptor (Rust's File::set_modified, C's futimens): wasmer-wasix recorded
    // the time in its own stat only.
    let host = work_dir().join(unique_id("mtime"));
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("file"), "x").unwrap();
    let id = unique_id("mtime");
    let mut o = opts(
        &id,
        &["/probe.wasm", "set-mtime", "/mnt/file", "1000000000"],
    );
    o.mounts = vec![BindMount {
        src: host.clone(),
        dst: "/mnt".into(),
        read_only: false,
    }];
    run(o).assert_code(0);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(host.join("file")).unwrap().mtime(),
        1_000_000_000
    );
}

#[test]
fn a_failing_write_fails_in_the_guest() {
    // /dev/full refuses every write with ENOSPC. The write must fail when it is made, as for a
    // native process; a write finished later in the background lost the error. (The guest
    // sees EIO: wasmer-wasix's `From<io::Error> for Errno` has no arm for ENOSPC.)
    let id = unique_id("full");
    let r = run(opts(&id, &["/probe.wasm", "write", "/dev/full", "x"]));
    r.assert_code(1);
    // WASI's EIO is errno 29.
    assert_eq!(
        r.stderr_str(),
        "error: Uncategorized I/O error (os error 29)\n",
        "{r}"
    );
}

#[test]
fn dotdot_from_the_working_directory_goes_up_as_on_linux() {
    // The working directory is a preopen (WASI has no cwd); ".." under it reaches the rest of
    // the container as in any Linux process, unlike ".." above a directory the guest opened.
    let id = unique_id("dotdot");
    let mut o = opts(&id, &["/probe.wasm", "read", "../etc/hostname"]);
    o.cwd = Some("/data".into());
    let r = run(o);
    r.assert_code(0);
    assert_eq!(r.stdout_str(), "container hostname\n", "{r}");
}

#[test]
fn a_read_only_root_refuses_writes_and_a_writable_one_takes_them() {
    let id = unique_id("ro-root");
    let mut o = opts(&id, &["/probe.wasm", "write", "/data/new.txt", "x"]);
    o.read_only = true;
    let r = run(o);
    r.assert_code(1);
    assert!(r.stderr_str().contains("PermissionDenied"), "{r}");

    let id = unique_id("rw-root");
    run(opts(&id, &["/probe.wasm", "write", "/data/new.txt", "x"])).assert_code(0);
}

#[test]
fn symlinks_and_dotdot_stay_inside_the_rootfs() {
    // The image has /etc/hostname, /escape -> /etc and /up -> ../../../../../etc. Each path
    // below either resolves inside the container, as the kernel resolves it in a container,
    // and reads the image's /etc/hostname, or is refused; the host's /etc/hostname never
    // comes back. The exact outcome of each is pinned.
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let read = (0, "container hostname\n", "");
    // WASI's PERM (63) and NOENT (44), as the probe prints them.
    let refused = (
        1,
        "",
        "error: PermissionDenied Operation not permitted (os error 63)\n",
    );
    let missing = (
        1,
        "",
        "error: NotFound No such file or directory (os error 44)\n",
    );
    let cases = [
        ("/escape/hostname", read),
        // wasmer resolves the relative target's ".." above its root and refuses it; Linux would
        // stop at / and read the image's file.
        ("/up/hostname", refused),
        ("/../../../../etc/hostname", read),
        ("/data/../../etc/hostname", read),
        // No /proc in the guest's file system: WASI has no use for it.
        ("/proc/self/root/etc/hostname", missing),
        ("/proc/1/root/etc/hostname", missing),
    ];
    for (i, (path, (code, stdout, stderr))) in cases.into_iter().enumerate() {
        let id = unique_id(&format!("escape{i}"));
        let r = run(opts(&id, &["/probe.wasm", "read", path]));
        assert!(
            host.is_empty() || r.stdout_str() != host,
            "{path} read the host's file: {r}"
        );
        r.assert_code(code);
        assert_eq!(
            (r.stdout_str().as_str(), r.stderr_str().as_str()),
            (stdout, stderr),
            "{path}"
        );
    }
}

#[test]
fn stdin_reaches_the_guest_and_eof_follows_the_writer() {
    let id = unique_id("stdin");
    let input: Vec<u8> = (0..5000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let r = containerd().run_with_stdin(opts(&id, &["/probe.wasm", "cat"]), &input);
    containerd().assert_no_debris(NS, &id);
    r.assert_code(0);
    assert_eq!(r.stdout, input, "stdin came back altered");
    assert_eq!(r.stderr_str(), "EOF\n");
}

#[test]
fn output_written_just_before_exit_is_never_lost() {
    let id = unique_id("burst");
    let r = run(opts(&id, &["/probe.wasm", "stdout-lines", "20000"]));
    r.assert_code(0);
    let out = r.stdout_str();
    assert_eq!(
        out.lines().count(),
        20000,
        "{}",
        &out[out.len().saturating_sub(200)..]
    );
    assert_eq!(out.lines().last(), Some("line 20000"));
}

#[test]
fn exit_codes_are_reported_as_a_native_process_would() {
    for (code, expect) in [("0", 0), ("3", 3), ("255", 255), ("256", 0)] {
        let id = unique_id(&format!("exit{code}"));
        run(opts(&id, &["/probe.wasm", "exit", code])).assert_code(expect);
    }
    let id = unique_id("stderr");
    let r = run(opts(&id, &["/probe.wasm", "stderr", "to stderr"]));
    r.assert_code(0);
    assert_eq!(r.stderr_str(), "to stderr\n");
}

#[test]
fn a_trap_gives_134_and_says_why_on_stderr() {
    let wat = repo_dir().join("tests/guests/wat/trap.wat");
    let name = image("docker.io/library/e2e-trap:latest", &wat, &[]);
    let id = unique_id("trap");
    let r = run(image_opts(&name, &id));
    r.assert_code(134);
    let first = r
        .stderr_str()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        first.starts_with("wasm trap: ") && first.contains("unreachable"),
        "{r}"
    );

    let id = unique_id("panic");
    let r = run(opts(&id, &["/probe.wasm", "panic"]));
    r.assert_code(134);
    assert!(
        r.stderr_str().contains("probe panic") && r.stderr_str().contains("wasm trap: "),
        "{r}"
    );
}

#[test]
fn a_module_without_start_fails_start_with_the_reason() {
    let wat = repo_dir().join("tests/guests/wat/no-start.wat");
    let name = image("docker.io/library/e2e-nostart:latest", &wat, &[]);
    let id = unique_id("nostart");
    let r = run(image_opts(&name, &id));
    // ctr's own exit code for a failed start, with the reason from the shim's Start (the
    // guest, which never ran, also wrote it on the container's stderr). ctr 1.x appends the
    // gRPC code's name; ctr 2.x prints the message alone.
    r.assert_code(1);
    let reason = "ctr: wasm: the module exports no _start function: it is not a WASI command";
    let line = match containerd().major {
        1 => format!("{reason}: invalid argument\n"),
        _ => format!("{reason}\n"),
    };
    assert!(r.stderr_str().contains(&line), "{r}");
}

/// Starts `args` detached-ish, waits for RUNNING, sends `signal`, returns the run and how long
/// the guest took to end after the kill.
fn kill_running(id: &str, args: &[&str], signal: &str, all: bool) -> (RunResult, Duration) {
    let mut running = containerd().spawn_run(opts(id, args));
    assert!(
        running.wait_running(Duration::from_secs(30)),
        "never RUNNING"
    );
    // The guest logs this just before it calls the module's _start.
    containerd().wait_for_log("running module", id);
    let mut kill = vec!["-n", NS, "tasks", "kill", "-s", signal];
    if all {
        kill.push("--all");
    }
    kill.push(id);
    let sent = Instant::now();
    containerd().ctr_ok(&kill);
    let r = running.wait();
    let took = sent.elapsed();
    containerd().assert_no_debris(NS, id);
    (r, took)
}

#[test]
fn sigterm_and_sigint_end_a_compute_loop_and_a_blocked_guest_promptly() {
    for (name, args, signal, code) in [
        ("spin-term", &["/probe.wasm", "spin"][..], "SIGTERM", 143),
        (
            "sleep-term",
            &["/probe.wasm", "sleep", "600"][..],
            "SIGTERM",
            143,
        ),
        ("spin-int", &["/probe.wasm", "spin"][..], "SIGINT", 130),
        (
            "sleep-kill",
            &["/probe.wasm", "sleep", "600"][..],
            "SIGKILL",
            137,
        ),
    ] {
        let id = unique_id(name);
        let (r, took) = kill_running(&id, args, signal, name == "sleep-kill");
        r.assert_code(code);
        assert!(
            took < Duration::from_secs(5),
            "{name}: ended {took:?} after the kill"
        );
    }
}

#[test]
fn killing_an_exited_task_answers_as_runc_does() {
    let id = unique_id("killdone");
    // Detached and without --rm, so the exited task stays for the kill.
    run_detached(&id, &["/probe.wasm", "exit", "0"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while containerd().task_status(NS, &id).as_deref() != Some("STOPPED") {
        assert!(Instant::now() < deadline, "never STOPPED");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = containerd().ctr(&["-n", NS, "tasks", "kill", "-s", "SIGTERM", &id]);
    assert!(!kill.status.success(), "kill of an exited task succeeded");
    let err = String::from_utf8_lossy(&kill.stderr);
    assert!(
        err.contains("not found") || err.contains("finished"),
        "{err}"
    );
    containerd().ctr_ok(&["-n", NS, "tasks", "delete", &id]);
    containerd().ctr_ok(&["-n", NS, "containers", "delete", &id]);
    containerd().assert_no_debris(NS, &id);
}

#[test]
fn a_second_run_of_a_module_loads_it_from_the_cache() {
    // A module no earlier run has seen: its digest is new to the cache.
    let id = unique_id("cache");
    let module = work_dir().join(format!("{id}.wat"));
    std::fs::write(&module, unique_hello_wat(&id)).unwrap();
    let digest = common::sha256_hex(&wat::parse_file(&module).unwrap());
    let name = image(&format!("docker.io/library/e2e-{id}:latest"), &module, &[]);
    for round in 0..2 {
        let r = run(image_opts(&name, &format!("{id}-{round}")));
        r.assert_code(0);
        assert_eq!(r.stdout_str(), format!("cached {id}\n"));
    }
    assert_eq!(
        compiles_and_loads(&digest),
        (1, 1),
        "compile/load counts in containerd.log"
    );
    // The module is a file of the image's layer: the first start hashed it and recorded its
    // digest, the second copied and hashed nothing.
    let log = std::fs::read_to_string(containerd().dir.join("containerd.log")).unwrap();
    let by_layer = format!("is sha256:{digest} by its layer's record: cached, not copied");
    assert_eq!(log.matches(&by_layer).count(), 1, "{by_layer}");
}

#[test]
fn containers_starting_a_new_module_together_compile_it_once() {
    // A module no run has seen, big enough that its compile outlasts the other Creates.
    let id = unique_id("once");
    let module = work_dir().join(format!("{id}.wat"));
    std::fs::write(&module, common::big_module_wat(&id, 40_000)).unwrap();
    let digest = common::sha256_hex(&wat::parse_file(&module).unwrap());
    let name = image(&format!("docker.io/library/e2e-{id}:latest"), &module, &[]);
    let runs: Vec<_> = (0..3)
        .map(|i| {
            let (name, id) = (name.clone(), format!("{id}-{i}"));
            std::thread::spawn(move || run(image_opts(&name, &id)))
        })
        .collect();
    for r in runs {
        r.join().unwrap().assert_code(0);
    }
    assert_eq!(
        compiles_and_loads(&digest),
        (1, 2),
        "one compile, two loads, in containerd.log"
    );
}

#[test]
fn containers_of_one_pod_started_at_once_share_one_shim() {
    // As a pod's containers carry their sandbox's id: all at once, none started before.
    let pod = unique_id("pod");
    let ids: Vec<String> = (0..6).map(|i| format!("{pod}-{i}")).collect();
    let annotation = format!("io.kubernetes.cri.sandbox-id={pod}");
    let runs: Vec<_> = ids
        .iter()
        .map(|id| {
            let (id, annotation) = (id.clone(), annotation.clone());
            let image = probe_image().to_string();
            std::thread::spawn(move || {
                containerd().run_detached_with(
                    NS,
                    &["--runtime", common::RUNTIME, "--annotation", &annotation],
                    &image,
                    &id,
                    &["/probe.wasm", "sleep", "600"],
                );
            })
        })
        .collect();
    for run in runs {
        run.join().unwrap();
    }
    let shims: std::collections::BTreeSet<i32> =
        ids.iter().map(|id| parent_pid(task_pid(id))).collect();
    assert_eq!(
        shims.len(),
        1,
        "the pod's guests have these parents: {shims:?}"
    );
    for id in &ids {
        assert_eq!(
            containerd().task_status(NS, id).as_deref(),
            Some("RUNNING"),
            "{id}"
        );
    }
    for id in &ids {
        containerd().ctr_ok(&["-n", NS, "tasks", "kill", "--signal", "SIGKILL", id]);
    }
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(30);
        while containerd().task_status(NS, id).as_deref() != Some("STOPPED") {
            assert!(Instant::now() < deadline, "{id} never STOPPED");
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd().ctr_ok(&["-n", NS, "tasks", "delete", id]);
        containerd().ctr_ok(&["-n", NS, "containers", "delete", id]);
        common::remove_detached_fifos(id);
    }
    // The shim serves the pod until its last task is deleted.
    for id in &ids {
        containerd().assert_no_debris(NS, id);
    }
}

#[test]
fn a_corrupt_cache_entry_is_discarded_and_rebuilt() {
    let id = unique_id("corrupt");
    let module = work_dir().join(format!("{id}.wat"));
    std::fs::write(&module, unique_hello_wat(&id)).unwrap();
    let digest = common::sha256_hex(&wat::parse_file(&module).unwrap());
    let name = image(&format!("docker.io/library/e2e-{id}:latest"), &module, &[]);
    let run_once = |round: usize| {
        let r = run(image_opts(&name, &format!("{id}-{round}")));
        r.assert_code(0);
        assert_eq!(r.stdout_str(), format!("cached {id}\n"), "round {round}");
    };
    run_once(0);
    let entry = cache_entry(&digest);
    let whole = std::fs::read(&entry).unwrap();
    std::fs::write(&entry, &whole[..whole.len() / 2]).unwrap();
    run_once(1);
    let log = std::fs::read_to_string(containerd().dir.join("containerd.log")).unwrap();
    assert!(
        log.contains(&format!(
            "discarded corrupt cache entry for module sha256:{digest}"
        )),
        "no discard logged"
    );
    let compiled = log
        .matches(&format!("compiled module sha256:{digest} ("))
        .count();
    assert_eq!(
        compiled, 2,
        "the truncated entry must be rebuilt, not loaded"
    );
    assert_eq!(
        std::fs::read(&entry).unwrap().len(),
        whole.len(),
        "rebuilt whole"
    );
}

/// How often containerd's log says the module of `digest` was compiled, and loaded from the
/// cache: "compiled module sha256:D (N bytes) in T ms", "loaded compiled module sha256:D from
/// cache".
fn compiles_and_loads(digest: &str) -> (usize, usize) {
    let log = std::fs::read_to_string(containerd().dir.join("containerd.log")).unwrap();
    let compiled = log
        .matches(&format!("compiled module sha256:{digest} ("))
        .count();
    let loaded = log
        .matches(&format!(
            "loaded compiled module sha256:{digest} from cache"
        ))
        .count();
    (compiled, loaded)
}

/// The cache file of a module: `<cache>/<engine key>/<sha256>.bin`.
fn cache_entry(digest: &str) -> PathBuf {
    let cache = containerd().dir.join("cache");
    std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|engine| engine.path().join(format!("{digest}.bin")))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no cache entry for {digest} under {}", cache.display()))
}

#[test]
fn shim_log_lines_reach_containerds_log_tagged_with_the_id() {
    let id = unique_id("logtag");
    run(opts(&id, &["/probe.wasm", "exit", "0"])).assert_code(0);
    let log = std::fs::read_to_string(containerd().dir.join("containerd.log")).unwrap();
    for verb in ["create", "start", "exit", "delete"] {
        assert!(
            log.contains(&format!("{verb} id={id}")),
            "no '{verb} id={id}' in containerd.log"
        );
    }
}

#[test]
fn version_flag_prints_the_version() {
    let out = Command::new(containerd().shim_path())
        .arg("-v")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")) && text.contains("io.containerd.wasm.v1"),
        "{text}"
    );
}

#[test]
fn the_shim_and_its_guests_share_the_binarys_read_only_pages_and_map_no_shared_library() {
    // The binary is linked static and position-dependent (build.rs): nothing relocates a
    // pointer of its `.data.rel.ro`, so those pages stay shared by every process. As a PIE
    // each process dirtied about 1 MiB of them in a release build (1.8 MiB in a debug build).
    let id = unique_id("shared");
    run_detached(&id, &["/probe.wasm", "sleep", "600"]);
    let guest = task_pid(&id);
    let shim = parent_pid(guest);
    for pid in [shim, guest] {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        // A binary linked moments ago is still dirty in the page cache until written back
        // (about 3 MiB of a debug build counted as the process's own): write it back first.
        std::fs::File::open(&exe)
            .and_then(|f| f.sync_all())
            .unwrap();
        // What stays private is the table of the C library's CPU-specific functions
        // (`IRELATIVE` relocations, resolved at start): 12 KiB here. Dynamically linked, the
        // loader's GOT of libc's addresses took 92 KiB in a debug build.
        let dirty = private_dirty_read_only_kib(pid, &exe);
        assert!(
            dirty < 64,
            "pid {pid}: {dirty} KiB of {} dirtied",
            exe.display()
        );
        // Static: no shared library, so a node needs neither libseccomp nor a given glibc.
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let libraries: Vec<&str> = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter(|path| path.ends_with(".so") || path.contains(".so."))
            .collect();
        assert!(libraries.is_empty(), "pid {pid} maps {libraries:?}");
    }
    containerd().force_remove(NS, &id);
}

#[test]
fn the_kernels_oom_killer_ends_the_shim_before_containerd() {
    // As containerd's shims do: the server's oom_score_adj is containerd's plus one, so that
    // under memory pressure the kernel ends a shim, not containerd. The `start` action sets it
    // on the server it spawns.
    let id = unique_id("oomscore");
    run_detached(&id, &["/probe.wasm", "sleep", "600"]);
    let shim = parent_pid(task_pid(&id));
    let score = |pid: i32| -> i32 {
        let text = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
        text.trim().parse().unwrap()
    };
    let containerd_pid: i32 = std::fs::read_to_string(containerd().dir.join("containerd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(score(shim), (score(containerd_pid) + 1).min(1000));
    containerd().force_remove(NS, &id);
}

/// The private dirty KiB of the read-only and executable mappings of `file` in `pid`.
fn private_dirty_read_only_kib(pid: i32, file: &Path) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut counted = false;
    let mut mappings = 0;
    let mut dirty = 0;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            counted = fields.get(5) == Some(&file.to_str().unwrap()) && !fields[1].contains('w');
            mappings += usize::from(counted);
        } else if counted && fields.first() == Some(&"Private_Dirty:") {
            dirty += fields[1].parse::<u64>().unwrap();
        }
    }
    assert!(
        mappings >= 2,
        "pid {pid} maps no read-only part of {}",
        file.display()
    );
    dirty
}

#[test]
fn a_task_whose_shim_died_is_cleaned_up_by_delete_with_137() {
    let id = unique_id("lostshim");
    run_detached(&id, &["/probe.wasm", "sleep", "600"]);
    let guest = task_pid(&id);
    let shim = parent_pid(guest);
    // containerd loses the shim; it then runs `containerd-shim-wasm-v1 ... delete`.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // containerd 1.6 runs the shim's `delete`, publishes the exit it reports and drops the
    // task (the 137 itself is pinned by the shim-level test of `delete`).
    let deadline = Instant::now() + Duration::from_secs(30);
    while containerd().task_status(NS, &id).as_deref() == Some("RUNNING") {
        assert!(
            Instant::now() < deadline,
            "task still RUNNING after its shim died"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{guest}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            Instant::now() < gone,
            "the guest outlived its shim's delete"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // containerd finishes its own cleanup of the dead shim asynchronously.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = containerd().ctr(&["-n", NS, "tasks", "delete", &id]);
        let out = containerd().ctr(&["-n", NS, "containers", "delete", &id]);
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(Instant::now() < deadline, "container delete: {err}");
        std::thread::sleep(Duration::from_millis(200));
    }
    remove_detached_fifos(&id);
    containerd().assert_no_debris(NS, &id);
}

fn remove_detached_fifos(id: &str) {
    common::remove_detached_fifos(id);
}

/// The pids `ctr task ps` lists for container `id`.
fn task_ps(id: &str) -> Vec<i32> {
    containerd()
        .ctr_ok(&["-n", NS, "tasks", "ps", id])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Waits (30 s at most) until `ctr task ps` lists a process of `id` besides its init: the
/// exec's pid.
fn exec_in_ps(id: &str, init: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = task_ps(id).into_iter().find(|p| *p != init) {
            return pid;
        }
        assert!(Instant::now() < deadline, "the exec never showed in ps");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ctr task exec --detach`: `args` run in container `id` as exec `exec_id`, left running.
fn exec_detached(id: &str, exec_id: &str, args: &[&str]) {
    let mut ctr = vec![
        "-n",
        NS,
        "tasks",
        "exec",
        "--detach",
        "--exec-id",
        exec_id,
        id,
    ];
    ctr.extend(args);
    containerd().ctr_ok(&ctr);
}

/// `ctr task kill --exec-id` with SIGKILL: the exec leaves `ctr task ps` (30 s at most), the
/// init runs on.
fn kill_exec_and_see_it_go(id: &str, exec_id: &str, exec: i32, init: i32) {
    containerd().ctr_ok(&[
        "-n",
        NS,
        "tasks",
        "kill",
        "--exec-id",
        exec_id,
        "--signal",
        "SIGKILL",
        id,
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while task_ps(id).contains(&exec) {
        assert!(Instant::now() < deadline, "the killed exec is still listed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        task_ps(id).contains(&init),
        "killing the exec left the init running"
    );
}

fn task_pid(id: &str) -> i32 {
    let out = containerd().ctr_ok(&["-n", NS, "tasks", "ls"]);
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid for {id} in:\n{out}"))
}

/// `ctr run --detach` without `--rm`: the task stays after it exits, for the test to inspect.
fn run_detached(id: &str, args: &[&str]) {
    containerd().run_detached(NS, probe_image(), id, args);
}

/// A hello module no other run has seen (its text, hence its digest, carries `id`).
fn unique_hello_wat(id: &str) -> String {
    let text = format!("cached {id}\n");
    format!(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1) (data (i32.const 16) "{}")
  (func (export "_start") (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const {}))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        text.replace('\n', "\\n"),
        text.len()
    )
}

/// Builds an image of the module `wat` and runs it in the background as container `id`;
/// returns once its task is RUNNING (at most `within`).
fn spawn_wat(id: &str, wat: &str, within: Duration) -> common::RunningCtr<'static> {
    let module = work_dir().join(format!("{id}.wat"));
    std::fs::write(&module, wat).unwrap();
    let name = image(&format!("docker.io/library/e2e-{id}:latest"), &module, &[]);
    let mut running = containerd().spawn_run(image_opts(&name, id));
    assert!(running.wait_running(within), "{id} never RUNNING");
    running
}

#[test]
fn start_answers_while_a_big_module_compiles_and_kill_ends_the_compile() {
    // ~150k functions: seconds of cranelift work, in the guest process, after Start answered.
    let id = unique_id("compiling");
    let running = spawn_wat(&id, &big_module_wat(&id, 150_000), Duration::from_secs(30));
    // Compiling: the guest has used 300 ms of CPU.
    let guest = task_pid(&id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::procfs::cpu_ticks(guest) < 30 {
        assert!(Instant::now() < deadline, "the compile never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent = Instant::now();
    containerd().ctr_ok(&["-n", NS, "tasks", "kill", "-s", "SIGTERM", &id]);
    let r = running.wait();
    let took = sent.elapsed();
    containerd().assert_no_debris(NS, &id);
    r.assert_code(143);
    let log = std::fs::read_to_string(containerd().dir.join("containerd.log")).unwrap();
    let compiled = log
        .lines()
        .any(|l| l.contains(&format!("id={id} compiled module")));
    assert!(
        !compiled,
        "the kill came after the compile finished: no proof it was interrupted"
    );
    assert!(
        took < Duration::from_secs(3),
        "ended {took:?} after the kill"
    );
}

/// `ctr run -t` under `script`, which gives ctr the terminal it insists on; `keys` are typed
/// into that terminal `delay` after the start. Returns (exit code, output with CRs removed).
fn run_in_terminal(id: &str, args: &[&str], keys: Option<(&[u8], Duration)>) -> (i32, String) {
    use std::io::Write;
    let ctr = format!(
        "ctr --address {} -n {NS} run -t --rm --runtime io.containerd.wasm.v1 {} {id} {}",
        containerd().socket.display(),
        probe_image(),
        args.join(" ")
    );
    let mut script = Command::new("timeout")
        .args(["60", "script", "-qec", &ctr, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = script.stdin.take().unwrap();
    if let Some((keys, delay)) = keys {
        std::thread::sleep(delay);
        stdin.write_all(keys).unwrap();
    }
    let out = script.wait_with_output().unwrap();
    drop(stdin);
    containerd().assert_no_debris(NS, id);
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_terminal_carries_output_exit_code_and_ctrl_c() {
    let id = unique_id("tty-out");
    let (code, out) = run_in_terminal(&id, &["/probe.wasm", "args", "over", "a tty"], None);
    assert_eq!(code, 0, "{out}");
    // The same as runc gives through `script`: a NUL from ctr's console, then the lines.
    assert!(
        out.ends_with("/probe.wasm\nargs\nover\na\ntty\n"),
        "{out:?}"
    );

    let id = unique_id("tty-exit");
    let (code, _) = run_in_terminal(&id, &["/probe.wasm", "exit", "7"], None);
    assert_eq!(code, 7);

    // ^C typed into the terminal reaches the guest as SIGINT, as for a native process.
    let id = unique_id("tty-ctrlc");
    let keys: &[u8] = b"\x03";
    let (code, out) = run_in_terminal(
        &id,
        &["/probe.wasm", "sleep", "600"],
        Some((keys, Duration::from_secs(2))),
    );
    assert_eq!(code, 130, "{out:?}");
}

#[test]
fn isatty_is_true_exactly_when_stdio_is_a_terminal() {
    // The C probe: wasi-libc's isatty() asks fd_fdstat_get, as every C program's does.
    let id = unique_id("isatty-fifo");
    let r = run(opts(&id, &["/probe-c.wasm", "isatty", "1"]));
    r.assert_code(0);
    assert_eq!(
        r.stdout_str(),
        "0\n",
        "stdout is ctr's FIFO, not a terminal"
    );
    let id = unique_id("isatty-stderr");
    let r = run(opts(&id, &["/probe-c.wasm", "isatty", "2"]));
    r.assert_code(0);
    assert_eq!(r.stdout_str(), "0\n", "stderr is a FIFO too");

    let id = unique_id("isatty-tty");
    let (code, out) = run_in_terminal(&id, &["/probe-c.wasm", "isatty", "1"], None);
    assert_eq!(code, 0, "{out}");
    // ctr's console writes a NUL first (see the terminal test below).
    assert_eq!(
        out.trim_start_matches('\0'),
        "1\n",
        "a terminal under ctr run -t"
    );
}

/// The repository, as `cargo test` says at run time: a test binary reused from another
/// checkout of the same sources (one shared target directory) must still read this one's files.
fn repo_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

#[test]
fn exec_runs_a_module_inside_the_running_container() {
    let id = unique_id("exec");
    let mut running = containerd().spawn_run(opts(&id, &["/probe.wasm", "sleep", "600"]));
    assert!(
        running.wait_running(Duration::from_secs(60)),
        "never RUNNING"
    );
    let init = task_pid(&id);
    // `ctr task exec` prints the module's output and returns its exit code.
    let out = containerd().exec(NS, &id, "e1", &["/probe.wasm", "args", "inside"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/probe.wasm\nargs\ninside\n"
    );
    let out = containerd().exec(NS, &id, "e2", &["/probe.wasm", "exit", "3"]);
    assert_eq!(out.status.code(), Some(3), "the exec's own exit code");
    // The exec sees the container's files (the image's /etc/hostname, not the host's).
    let out = containerd().exec(NS, &id, "e3", &["/probe.wasm", "read", "/etc/hostname"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "container hostname\n");
    // A long exec is in the container's namespaces and cgroup, listed by ps, killed by its id.
    exec_detached(&id, "e4", &["/probe.wasm", "sleep", "600"]);
    let exec = exec_in_ps(&id, init);
    for ns in ["mnt", "pid", "ipc", "uts", "net"] {
        let link = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_eq!(
            link(exec),
            link(init),
            "the exec's {ns} namespace is the container's"
        );
    }
    let cgroup = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(
        cgroup(exec),
        cgroup(init),
        "the exec's cgroups are the container's"
    );
    kill_exec_and_see_it_go(&id, "e4", exec, init);
    containerd().ctr_ok(&["-n", NS, "tasks", "kill", "--signal", "SIGKILL", &id]);
    running.wait().assert_code(137);
    remove_detached_fifos(&id);
    containerd().assert_no_debris(NS, &id);
}

#[test]
fn exec_into_a_native_container_runs_the_program_there_under_runc() {
    let id = unique_id("exec-native");
    containerd().run_detached(NS, probe_image(), &id, &["/sleeper", "600"]);
    let init = task_pid(&id);
    let exec = |exec_id: &str, args: &[&str]| containerd().exec(NS, &id, exec_id, args);
    let out = exec("e1", &["/nprobe", "echo", "inside"]);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(0), "inside\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(exec("e2", &["/nprobe", "exit", "5"]).status.code(), Some(5));
    // A long exec: in the container's mount namespace and cgroups, listed by ps, killed by
    // its exec id while the init runs on.
    exec_detached(&id, "e3", &["/sleeper", "600"]);
    let long = exec_in_ps(&id, init);
    let link = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    assert_eq!(link(long), link(init), "the container's mount namespace");
    let cgroup = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(cgroup(long), cgroup(init), "the container's cgroups");
    kill_exec_and_see_it_go(&id, "e3", long, init);
    let deadline = Instant::now() + Duration::from_secs(30);
    containerd().ctr_ok(&["-n", NS, "tasks", "kill", "--signal", "SIGKILL", &id]);
    while !containerd()
        .ctr_ok(&["-n", NS, "tasks", "ls"])
        .lines()
        .any(|l| l.starts_with(&format!("{id} ")) && l.ends_with("STOPPED"))
    {
        assert!(Instant::now() < deadline, "the init never stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    containerd().ctr_ok(&["-n", NS, "tasks", "delete", &id]);
    containerd().ctr_ok(&["-n", NS, "containers", "delete", &id]);
    common::remove_detached_fifos(&id);
    containerd().assert_no_debris(NS, &id);
}

/// A module with `functions` small functions (several MiB of machine code) and a linear memory
/// of 128 pages (8 MiB) that it fills, then spins until killed.
fn big_code_and_memory_wat(id: &str, functions: usize) -> String {
    let mut wat = String::from("(module (memory (export \"memory\") 128)\n");
    wat.push_str(&format!("(data (i32.const 0) \"{id}\")\n"));
    for i in 0..functions {
        wat.push_str(&format!(
            "(func $f{i} (param i32) (result i32) local.get 0 i32.const {i} i32.add i32.const 3 i32.mul local.get 0 i32.xor)\n"
        ));
    }
    wat.push_str(
        "(func (export \"_start\") (local $a i32)
           (loop $fill
             (i32.store (local.get $a) (call $f0 (local.get $a)))
             (local.set $a (i32.add (local.get $a) (i32.const 4096)))
             (br_if $fill (i32.lt_u (local.get $a) (i32.const 8388608))))
           (loop $spin (br $spin))))\n",
    );
    wat
}

/// The anonymous mappings of process `pid` that huge pages were advised for (`hg` in smaps):
/// their permissions and sizes in KiB.
fn huge_page_mappings(pid: i32) -> Vec<(String, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut found = Vec::new();
    let (mut perms, mut anonymous, mut size) = (String::new(), false, 0);
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            perms = fields.get(1).unwrap_or(&"").to_string();
            anonymous = fields.len() == 5;
        } else if fields.first() == Some(&"Size:") {
            size = fields.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        } else if fields.first() == Some(&"VmFlags:") && anonymous && fields.contains(&"hg") {
            found.push((perms.clone(), size));
        }
    }
    found
}

/// A big module's code (wasmer's code memory) and a linear memory that starts at 8 MiB are in
/// mappings the guest advised as huge pages; nothing of a small module (the probe) is, so an
/// idle small container costs no more memory.
#[test]
fn a_big_modules_code_and_memory_are_advised_as_huge_pages_and_a_small_ones_are_not() {
    let id = unique_id("huge");
    let wat = big_code_and_memory_wat(&id, 100_000);
    let running = spawn_wat(&id, &wat, Duration::from_secs(120));
    // RUNNING comes while the module still compiles (Start waits 2 s at most): the memory
    // exists once it is instantiated.
    let pid = task_pid(&id);
    let code = |m: &[(String, u64)]| m.iter().any(|(p, _)| p == "r-xp");
    let memory = |m: &[(String, u64)]| m.iter().any(|(p, kib)| p == "rw-p" && *kib >= 8192);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut advised = huge_page_mappings(pid);
    while !(code(&advised) && memory(&advised)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        advised = huge_page_mappings(pid);
    }
    containerd().ctr_ok(&["-n", NS, "tasks", "kill", "--signal", "SIGKILL", &id]);
    running.wait().assert_code(137);
    containerd().assert_no_debris(NS, &id);
    assert!(code(&advised), "the compiled code: {advised:?}");
    assert!(memory(&advised), "the 8 MiB linear memory: {advised:?}");

    let small = unique_id("small");
    let mut running = containerd().spawn_run(opts(&small, &["/probe.wasm", "sleep", "600"]));
    assert!(
        running.wait_running(Duration::from_secs(60)),
        "never RUNNING"
    );
    let advised = huge_page_mappings(task_pid(&small));
    containerd().ctr_ok(&["-n", NS, "tasks", "kill", "--signal", "SIGKILL", &small]);
    running.wait().assert_code(137);
    containerd().assert_no_debris(NS, &small);
    assert_eq!(
        advised,
        Vec::<(String, u64)>::new(),
        "nothing of a small module"
    );
}
