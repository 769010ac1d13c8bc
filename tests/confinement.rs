//! End-to-end tests of the guest's confinement, through the real containerd `make test`
//! starts: each property is checked from the host on a running guest (`/proc/<pid>`), or by
//! the attack itself, with the exact outcome asserted.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use common::{
    build_image, cgroups, containerd, guests_dir, parent_pid, proc_status, unique_id, RunOpts,
    RunResult,
};

const NS: &str = "wasm-confine";
const IMAGE: &str = "docker.io/library/e2e-confine:latest";

fn work_dir() -> &'static Path {
    common::work_dir()
}

/// The probe at /probe.wasm, the native sleeper at /sleeper, and two device nodes an image
/// may carry: a copy of /dev/null's numbers and the host root disk's.
fn image() -> &'static str {
    static IMAGE_NAME: OnceLock<String> = OnceLock::new();
    IMAGE_NAME.get_or_init(|| {
        let (major, minor) = host_root_device();
        let sleeper = format!("{}:/sleeper", guests_dir().join("sleeper").display());
        let disk = format!("/host-disk:b:{major}:{minor}");
        build_image(
            NS,
            work_dir(),
            IMAGE,
            &guests_dir().join("probe.wasm"),
            &[
                "--entrypoint",
                "/probe.wasm",
                "--add",
                &sleeper,
                "--device",
                "/null-copy:c:1:3",
                "--device",
                &disk,
            ],
        )
    })
}

/// The device numbers of the file system holding the host's `/`.
fn host_root_device() -> (u64, u64) {
    let dev = fs::metadata("/").unwrap().dev();
    (libc::major(dev) as u64, libc::minor(dev) as u64)
}

fn opts(id: &str, args: &[&str]) -> RunOpts {
    let mut o = RunOpts::new(image(), id);
    o.namespace = NS.into();
    o.args = args.iter().map(|s| s.to_string()).collect();
    o
}

fn run(o: RunOpts) -> RunResult {
    let id = o.id.clone();
    let result = containerd().run(o);
    containerd().assert_no_debris(NS, &id);
    result
}

/// A bundle-less exact spec for `ctr run --config`: containerd's default spec with a root
/// directory holding the probe, and `edit` applied.
fn exact_spec(id: &str, args: &[&str], edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let dir = work_dir().join("specs").join(id);
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    fs::copy(guests_dir().join("probe.wasm"), rootfs.join("probe.wasm")).unwrap();
    let mut spec = containerd().default_spec();
    let mut argv = vec!["/probe.wasm".to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    spec["process"]["args"] = serde_json::json!(argv);
    spec["root"] = serde_json::json!({ "path": rootfs, "readonly": false });
    edit(&mut spec);
    let config = dir.join("config.json");
    fs::write(&config, spec.to_string()).unwrap();
    config
}

fn spec_opts(config: &Path, id: &str) -> RunOpts {
    RunOpts {
        namespace: NS.into(),
        extra_flags: vec!["--config".into()],
        ..RunOpts::new(&config.display().to_string(), id)
    }
}

/// Runs `o` in the background until its task is RUNNING, hands the guest's pid to `inspect`,
/// then ends the task with SIGKILL and checks nothing is left.
fn while_running<T>(o: RunOpts, inspect: impl FnOnce(i32) -> T) -> T {
    let id = o.id.clone();
    let mut running = containerd().spawn_run(o);
    assert!(
        running.wait_running(Duration::from_secs(60)),
        "{id} never ran"
    );
    let pid = containerd().task_pid(NS, &id);
    let seen = inspect(pid);
    containerd().ctr_ok(&["-n", NS, "tasks", "kill", "--signal", "SIGKILL", &id]);
    running.wait().assert_code(137);
    containerd().assert_no_debris(NS, &id);
    seen
}

fn ns_link(pid: &str, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn device_nodes_in_an_image_cannot_be_opened() {
    for (i, path) in ["/null-copy", "/host-disk"].into_iter().enumerate() {
        let id = unique_id(&format!("devnode{i}"));
        // The node is there, as the image put it...
        let r = run(opts(&id, &["/probe.wasm", "stat", path]));
        r.assert_code(0);
        assert_eq!(r.stdout_str(), "other 0\n", "{path} is a device node");
        // ...and opening it is refused by the kernel (the rootfs is nodev): nothing is read.
        let r = run(opts(&format!("{id}-read"), &["/probe.wasm", "read", path]));
        r.assert_code(1);
        assert_eq!(r.stdout_str(), "", "{path}: nothing may be read");
        assert!(
            r.stderr_str().starts_with("error: PermissionDenied"),
            "{path}: {}",
            r.stderr_str()
        );
    }
    // The devices the shim itself puts in /dev still work.
    let r = run(opts(
        &unique_id("devnull"),
        &["/probe.wasm", "read", "/dev/null"],
    ));
    r.assert_code(0);
    assert_eq!(r.stdout_str(), "");
}

/// A spec asking for uid 1000, gid 1000, group 1001, umask 077, oom_score_adj 500 and a
/// seccomp profile that refuses mkdir.
fn user_spec(id: &str, args: &[&str], out: &Path) -> PathBuf {
    exact_spec(id, args, |spec| {
        spec["process"]["user"] =
            serde_json::json!({ "uid": 1000, "gid": 1000, "additionalGids": [1001], "umask": 63 });
        spec["process"]["oomScoreAdj"] = serde_json::json!(500);
        spec["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }]
        });
        spec["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "destination": "/out", "type": "bind", "source": out, "options": ["rbind", "rw"]
            }));
    })
}

#[test]
fn the_specs_user_groups_umask_and_seccomp_hold_in_the_guest() {
    let out = work_dir().join("user-out");
    fs::create_dir_all(&out).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).unwrap();

    let id = unique_id("user-write");
    let config = user_spec(&id, &["write", "/out/made", "by the guest"], &out);
    run(spec_opts(&config, &id)).assert_code(0);
    let made = fs::metadata(out.join("made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (1000, 1000), "owner of the file");
    assert_eq!(made.mode() & 0o777, 0o600, "umask 077 applied");

    // The profile's refused call fails in the guest, with the profile's errno (EPERM).
    let id = unique_id("user-mkdir");
    let config = user_spec(&id, &["mkdir", "/out/dir"], &out);
    let r = run(spec_opts(&config, &id));
    r.assert_code(1);
    assert!(
        r.stderr_str().starts_with("error: PermissionDenied"),
        "{}",
        r.stderr_str()
    );
    assert!(!out.join("dir").exists(), "mkdir must not have happened");

    let id = unique_id("user-status");
    let config = user_spec(&id, &["sleep", "60"], &out);
    let seen = while_running(spec_opts(&config, &id), |pid| {
        let field = |f: &str| proc_status(pid, f);
        (
            [
                field("Uid"),
                field("Gid"),
                field("Groups"),
                field("CapEff"),
                field("CapPrm"),
                field("NoNewPrivs"),
                field("Seccomp"),
            ],
            fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap(),
        )
    });
    assert_eq!(
        seen.0,
        [
            "1000\t1000\t1000\t1000",
            "1000\t1000\t1000\t1000",
            "1001",
            "0000000000000000",
            "0000000000000000",
            "1",
            "2"
        ]
    );
    assert_eq!(seen.1.trim(), "500");
}

#[test]
fn every_namespace_the_spec_names_is_the_guests_own_or_the_one_given() {
    // A network namespace made outside containerd, joined by path as CRI joins a pod's.
    let mut holder = Command::new("unshare")
        .args(["--net", "sleep", "120"])
        .spawn()
        .unwrap();
    let holder_pid = holder.id().to_string();
    let holder_ns = wait_for_own_netns(&holder_pid);
    let id = unique_id("namespaces");
    let net_path = format!("/proc/{holder_pid}/ns/net");
    let config = exact_spec(&id, &["sleep", "60"], |spec| {
        spec["hostname"] = serde_json::json!("wasm-ns-test");
        let namespaces = spec["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|n| n["type"] != "network");
        namespaces.push(serde_json::json!({ "type": "network", "path": net_path }));
        namespaces.push(serde_json::json!({ "type": "cgroup" }));
    });
    let seen = while_running(spec_opts(&config, &id), |pid| {
        let pid = pid.to_string();
        let hostname = Command::new("nsenter")
            .args(["-u", "-t", &pid, "hostname"])
            .output()
            .unwrap();
        (
            ["pid", "ipc", "uts", "mnt", "cgroup"]
                .map(|ns| (ns, ns_link(&pid, ns), ns_link("self", ns))),
            ns_link(&pid, "net"),
            proc_status(pid.parse().unwrap(), "NSpid"),
            String::from_utf8_lossy(&hostname.stdout).trim().to_string(),
            pid,
        )
    });
    let _ = holder.kill();
    let _ = holder.wait();
    let (own, net, nspid, hostname, pid) = seen;
    for (ns, guest, host) in own {
        assert_ne!(guest, host, "the guest's {ns} namespace is the host's");
    }
    assert_eq!(net, holder_ns, "the network namespace given by path");
    assert_eq!(nspid, format!("{pid}\t1"), "PID 1 of its own pid namespace");
    assert_eq!(hostname, "wasm-ns-test");
}

/// The holder's net namespace once `unshare` has made it (it execs `sleep` right after).
fn wait_for_own_netns(pid: &str) -> String {
    let host = ns_link("self", "net");
    for _ in 0..500 {
        let link = fs::read_link(format!("/proc/{pid}/ns/net")).map(|l| l.display().to_string());
        if let Ok(link) = link {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if link != host && comm.trim() == "sleep" {
                return link;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("unshare --net never entered its namespace");
}

#[test]
fn capabilities_groups_and_seccomp_under_ctrs_default_spec_equal_runcs() {
    const FIELDS: [&str; 10] = [
        "Uid",
        "Gid",
        "Groups",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
    ];
    let read = |pid: i32| FIELDS.map(|f| (f, proc_status(pid, f)));
    let id = unique_id("caps-runc");
    let mut native = opts(&id, &["/sleeper", "60"]);
    native.runtime = "io.containerd.runc.v2".into();
    native.extra_flags = vec!["--seccomp".into()];
    let runc = while_running(native, read);
    let id = unique_id("caps-wasm");
    let mut wasm = opts(&id, &["/probe.wasm", "sleep", "60"]);
    wasm.extra_flags = vec!["--seccomp".into()];
    let shim = while_running(wasm, read);
    assert_eq!(shim, runc, "wasm guest vs runc's native process");
    assert_eq!(
        shim[9].1, "2",
        "containerd's default seccomp profile is applied"
    );
}

/// (number, target, (device, inode)) of one descriptor.
type FdTarget = (String, String, Option<(u64, u64)>);

/// A process's descriptors: number, target as /proc shows it, and the (device, inode) of
/// the object, which tells two objects apart where their names read the same.
fn fd_targets(pid: i32) -> Vec<FdTarget> {
    let mut targets = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if let Ok(target) = fs::read_link(entry.path()) {
            let fd = entry.file_name().to_string_lossy().into_owned();
            let identity = fs::metadata(entry.path()).ok().map(|m| (m.dev(), m.ino()));
            targets.push((fd, target.display().to_string(), identity));
        }
    }
    targets
}

#[test]
fn a_guest_holds_no_descriptor_of_the_shim_or_of_another_container() {
    let other = unique_id("fds-other");
    let mut other_run = containerd().spawn_run(opts(&other, &["/probe.wasm", "sleep", "60"]));
    assert!(other_run.wait_running(Duration::from_secs(60)));
    let id = unique_id("fds");
    let (guest, shim) = while_running(opts(&id, &["/probe.wasm", "sleep", "60"]), |pid| {
        // Until then the guest may still hold the pipe its compiled module goes back on.
        containerd().wait_for_log("running module", &id);
        (fd_targets(pid), fd_targets(parent_pid(pid)))
    });
    containerd().ctr_ok(&["-n", NS, "tasks", "kill", "--signal", "SIGKILL", &other]);
    other_run.wait().assert_code(137);
    containerd().assert_no_debris(NS, &other);
    let names: Vec<&str> = guest.iter().map(|(n, _, _)| n.as_str()).collect();
    for fd in ["0", "1", "2"] {
        assert!(names.contains(&fd), "stdio {fd} missing: {guest:?}");
    }
    for (fd, target, identity) in &guest {
        assert!(
            !target.contains(&other),
            "fd {fd} is the other container's: {target}"
        );
        assert!(
            !target.contains("memfd:"),
            "fd {fd} is the module's memfd: {target}"
        );
        assert!(
            !target.contains("/cache/"),
            "fd {fd} is in the module cache: {target}"
        );
        assert!(
            !target.contains("/ptmx"),
            "fd {fd} is a terminal master: {target}"
        );
        // Shared with the shim only: this container's own stdio and log (and /dev/null).
        // (Every epoll or eventfd descriptor reads the same anon inode name: those are told
        // apart by nothing here, and the guest's are its own engine's.)
        let shared = !target.starts_with("anon_inode:")
            && identity.is_some()
            && shim.iter().any(|(_, _, i)| i == identity);
        let own = target.contains(&id) || target == "/dev/null";
        assert!(
            !shared || own,
            "fd {fd} is one of the shim's: {target}\nguest: {guest:?}\nshim: {shim:?}"
        );
    }
}

#[test]
fn a_symlink_swapped_in_a_volume_during_create_never_lands_a_mount_outside_the_rootfs() {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    let volume = work_dir().join("race-volume");
    fs::create_dir_all(volume.join("d")).unwrap();
    let _ = fs::remove_file(volume.join("d-link"));
    std::os::unix::fs::symlink("/", volume.join("d-link")).unwrap();
    // A name no host directory has: a mount point created outside the root would show here.
    let marker = format!("wasm-race-{}", unique_id("m"));
    let escaped = Path::new("/").join(&marker);
    let stop = AtomicBool::new(false);
    /// Stops the flipper even when an assertion below panics (else the scope never ends).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        scope.spawn(|| {
            // Atomically swaps the directory and the symlink to / under the same name.
            while !stop.load(Ordering::Relaxed) {
                let _ = renameat2(
                    AT_FDCWD,
                    volume.join("d").as_path(),
                    AT_FDCWD,
                    volume.join("d-link").as_path(),
                    RenameFlags::RENAME_EXCHANGE,
                );
            }
        });
        let mut mounted = 0;
        for round in 0..200 {
            let id = unique_id(&format!("race{round}"));
            let mut o = opts(&id, &["/probe.wasm", "exit", "0"]);
            o.extra_flags = vec![
                "--mount".into(),
                format!(
                    "type=bind,src={},dst=/vol,options=rbind:rw",
                    volume.display()
                ),
                "--mount".into(),
                format!("type=tmpfs,src=tmpfs,dst=/vol/d/{marker},options=nosuid"),
            ];
            let r = run(o);
            assert!(
                !escaped.exists(),
                "round {round}: {} was created on the host",
                escaped.display()
            );
            // Either the mount lands inside the container (in the volume's real directory, or,
            // through the link, which resolves inside the root, at /MARKER), or the path kept
            // moving through every try and Create refused the container.
            let refused = format!(
                "ctr: failed to create shim task: mount /vol/d/{marker}: resolve /vol/d/{marker}: the path kept changing while its mount point was made (16 tries): invalid argument\n"
            );
            match r.code {
                Some(0) => mounted += 1,
                Some(1) if r.stderr_str() == refused => {}
                _ => panic!("round {round}: {r}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        println!("{mounted} of 200 containers mounted, the rest refused");
        assert!(mounted > 0, "the race left no Create through");
    });
    assert!(!escaped.exists());
}

/// ctr's cgroupsPath for a container: `/<namespace>/<id>`.
fn cgroup_path(id: &str) -> String {
    format!("/{NS}/{id}")
}

/// `ctr task metrics` of a task, as the JSON ctr prints for containerd's metrics type.
fn metrics(id: &str) -> cgroups::Metrics {
    let out = containerd().ctr_ok(&["-n", NS, "tasks", "metrics", "--format", "json", id]);
    cgroups::Metrics::from_ctr_json(&out)
}

#[test]
fn the_guest_runs_in_its_cgroup_with_the_specs_limits_and_metrics_show_it() {
    let id = unique_id("cgroup");
    let path = cgroup_path(&id);
    let mut o = opts(&id, &["/probe.wasm", "spin"]);
    o.extra_flags = vec![
        "--memory-limit".into(),
        (96u64 << 20).to_string(),
        "--cpu-quota".into(),
        "50000".into(),
        "--cpu-period".into(),
        "100000".into(),
    ];
    while_running(o, |pid| {
        // Every hierarchy the guest joins by itself (cpuset's needs its parent's cpus).
        for controller in [
            "memory", "cpu", "cpuacct", "pids", "freezer", "cpuset", "devices", "blkio",
        ] {
            assert!(
                cgroups::holds(pid, controller, &path),
                "{controller} not {path}: {}",
                fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
            );
        }
        assert_eq!(cgroups::memory_limit(&path), (96u64 << 20).to_string());
        assert_eq!(
            cgroups::cpu_quota_and_period(&path),
            ("50000".into(), "100000".into())
        );
        let m = metrics(&id);
        assert_eq!(m.memory_limit, 96u64 << 20);
        assert!(m.memory_usage > 0, "{m:?}");
        assert!(m.cpu_nanos > 0, "{m:?}");
        // Pause freezes the spinning guest: its CPU time stands still, `ctr task ls` says
        // PAUSED; resume lets it go on.
        containerd().ctr_ok(&["-n", NS, "tasks", "pause", &id]);
        assert_eq!(containerd().task_status(NS, &id).as_deref(), Some("PAUSED"));
        let frozen = metrics(&id).cpu_nanos;
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            metrics(&id).cpu_nanos,
            frozen,
            "CPU time moved while paused"
        );
        containerd().ctr_ok(&["-n", NS, "tasks", "resume", &id]);
        assert_eq!(
            containerd().task_status(NS, &id).as_deref(),
            Some("RUNNING")
        );
        std::thread::sleep(Duration::from_millis(300));
        assert!(metrics(&id).cpu_nanos > frozen, "no CPU time after resume");
        // Paused again: the SIGKILL that ends the run must still give 137 (v1 needs a thaw).
        containerd().ctr_ok(&["-n", NS, "tasks", "pause", &id]);
    });
    assert!(
        !cgroups::exists("memory", &path),
        "the cgroup is removed at Delete"
    );
}

/// A cgroupsPath that climbs with `..` (here, from every hierarchy into the cpu one, with a
/// memory limit) is cleaned as runc cleans it: the guest is in `/cpu/<ns>/<id>` inside each
/// hierarchy, under its memory limit there, and nothing is made where the climb pointed.
#[test]
fn a_cgroups_path_that_climbs_with_dot_dot_stays_inside_each_hierarchy() {
    let id = unique_id("climb");
    let climbing = format!("/{NS}/../../cpu/{NS}/{id}");
    let cleaned = format!("/cpu/{NS}/{id}");
    let config = exact_spec(&id, &["sleep", "60"], |spec| {
        spec["linux"]["cgroupsPath"] = serde_json::json!(climbing);
        spec["linux"]["resources"]["memory"] = serde_json::json!({ "limit": 96u64 << 20 });
    });
    // Joined to each hierarchy's root as given, the path reaches the cpu hierarchy's
    // `/<ns>/<id>` from every other hierarchy.
    let climbed_to = format!("/{NS}/{id}");
    let (memory, cpu, limit, escape) = while_running(spec_opts(&config, &id), |pid| {
        (
            cgroups::holds(pid, "memory", &cleaned),
            cgroups::holds(pid, "cpu", &cleaned),
            cgroups::memory_limit(&cleaned),
            cgroups::exists("cpu", &climbed_to),
        )
    });
    // Parents the path made stay, as runc leaves them; empty, they go.
    for controller in [
        "memory", "cpu", "cpuacct", "cpuset", "devices", "freezer", "pids", "blkio",
    ] {
        let _ = fs::remove_dir(cgroups::dir(controller, &format!("/cpu/{NS}")));
        let _ = fs::remove_dir(cgroups::dir(controller, "/cpu"));
    }
    assert!(memory && cpu, "the guest is not in {cleaned}");
    assert_eq!(
        limit,
        (96u64 << 20).to_string(),
        "the memory limit is on {cleaned}"
    );
    assert!(!escape, "a cgroup was made where the path climbed to");
}

#[test]
fn a_pids_limit_from_the_spec_holds_in_the_containers_cgroup() {
    let id = unique_id("pids");
    let path = cgroup_path(&id);
    let config = exact_spec(&id, &["sleep", "60"], |spec| {
        spec["linux"]["cgroupsPath"] = serde_json::json!(path);
        spec["linux"]["resources"]["pids"] = serde_json::json!({ "limit": 16 });
    });
    let (max, guest_tasks, started) = while_running(spec_opts(&config, &id), |_| {
        // A wasm guest cannot fork, so a host process joins the cgroup and tries to start
        // twenty children there: what fits is the limit less the guest's threads (the kernel
        // counts threads) and itself. (Perl: Debian always has it, and its fork fails at once
        // where a shell retries.)
        let guest_tasks: u64 = cgroups::pids_current(&path);
        let procs = cgroups::dir("pids", &path).join("cgroup.procs");
        let script = r#"
            my ($procs) = @ARGV;
            open(my $f, ">", $procs) or die "open $procs: $!";
            print $f $$; close($f) or die "join the cgroup: $!";
            my @children;
            for (1 .. 20) {
                my $pid = fork();
                next unless defined $pid;
                if ($pid == 0) { sleep 60; exit 0; }
                push @children, $pid;
            }
            print scalar(@children), "\n";
            kill 9, @children;
            waitpid($_, 0) for @children;
        "#;
        let out = Command::new("perl")
            .args(["-e", script])
            .arg(&procs)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            cgroups::pids_max(&path),
            guest_tasks,
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    });
    assert_eq!(max, "16");
    assert!(
        (1..15).contains(&guest_tasks),
        "the guest's tasks: {guest_tasks}"
    );
    assert_eq!(
        started,
        (16 - guest_tasks - 1).to_string(),
        "forks beyond pids.max must fail"
    );
}

/// `ctr events`, read line by line on a thread of its own.
struct EventStream {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl EventStream {
    fn start() -> EventStream {
        use std::io::BufRead;
        let mut child = Command::new(common::ctr_binary())
            .arg("--address")
            .arg(&containerd().socket)
            .arg("events")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        EventStream {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 30 s) until a line with `topic` for container `id` arrives.
    fn wait_for(&mut self, topic: &str, id: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.has(topic, id) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no {topic} for {id} in:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn position(&self, topic: &str, id: &str) -> Option<usize> {
        let quoted = format!("\"{id}\"");
        self.seen
            .iter()
            .position(|l| l.contains(topic) && l.contains(&quoted))
    }

    fn has(&self, topic: &str, id: &str) -> bool {
        self.position(topic, id).is_some()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_guest_that_keeps_allocating_sees_its_allocation_fail_below_the_memory_limit() {
    // 96 MiB limit: linear memory is capped at 64 MiB (32 MiB stay for the engine), so the
    // guest's own allocator reports the failure, well before the OOM killer would act.
    let id = unique_id("alloc");
    let mut o = opts(&id, &["/probe.wasm", "alloc-forever"]);
    o.extra_flags = vec!["--memory-limit".into(), (96u64 << 20).to_string()];
    let r = run(o);
    r.assert_code(12);
    // The probe's own data and stack take a little of the 64 MiB.
    let failed_at: u64 = r
        .stdout_str()
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("allocation failed at "))
        .and_then(|l| l.strip_suffix(" MiB"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no failure line: {}", r.stdout_str()));
    assert!((56..64).contains(&failed_at), "failed at {failed_at} MiB");
}

#[test]
fn a_compile_over_the_memory_limit_is_oom_killed_with_137_and_task_oom() {
    let mut events = EventStream::start();
    // A first run whose exit shows on the stream proves the stream is subscribed.
    let first = unique_id("before-oom");
    run(opts(&first, &["/probe.wasm", "exit", "0"])).assert_code(0);
    events.wait_for("/tasks/exit", &first);

    // Compiling 150k functions takes far more than 64 MiB: the compile itself is bounded by
    // the container's limit, and the kernel ends it.
    let id = unique_id("oom");
    let module = work_dir().join(format!("{id}.wat"));
    fs::write(&module, common::big_module_wat(&id, 150_000)).unwrap();
    let name = build_image(
        NS,
        work_dir(),
        &format!("docker.io/library/e2e-{id}:latest"),
        &module,
        &[],
    );
    let mut o = RunOpts::new(&name, &id);
    o.namespace = NS.into();
    o.extra_flags = vec!["--memory-limit".into(), (64u64 << 20).to_string()];
    run(o).assert_code(137);
    events.wait_for("/tasks/exit", &id);
    let (oom, exit) = (
        events.position("/tasks/oom", &id),
        events.position("/tasks/exit", &id),
    );
    assert!(
        oom.is_some() && oom < exit,
        "TaskOOM before TaskExit:\n{}",
        events.seen.join("\n")
    );
    // Nothing else is hurt: the next container runs.
    run(opts(&unique_id("after-oom"), &["/probe.wasm", "exit", "7"])).assert_code(7);
}

#[test]
fn the_specs_devices_are_made_in_dev_and_the_device_rules_decide_their_use() {
    // wasm-zero is /dev/zero's numbers (allowed, as the guest's own /dev/zero is); wasm-mem is
    // /dev/mem's, which the default spec's deny-all rule leaves denied.
    let devices = serde_json::json!([
        { "path": "/dev/wasm-zero", "type": "c", "major": 1, "minor": 5,
          "fileMode": 0o640, "uid": 1000, "gid": 1001 },
        { "path": "/dev/sub/wasm-mem", "type": "c", "major": 1, "minor": 1, "fileMode": 0o666 },
    ]);
    let with_devices = |spec: &mut serde_json::Value| {
        spec["linux"]["devices"] = devices.clone();
    };
    let id = unique_id("devices");
    let config = exact_spec(&id, &["sleep", "60"], with_devices);
    let (zero, mem) = while_running(spec_opts(&config, &id), |pid| {
        let meta = |p: &str| fs::metadata(format!("/proc/{pid}/root{p}")).unwrap();
        (meta("/dev/wasm-zero"), meta("/dev/sub/wasm-mem"))
    });
    use std::os::unix::fs::FileTypeExt;
    assert!(zero.file_type().is_char_device());
    assert_eq!((libc::major(zero.rdev()), libc::minor(zero.rdev())), (1, 5));
    assert_eq!(zero.mode() & 0o7777, 0o640, "the spec's fileMode");
    assert_eq!((zero.uid(), zero.gid()), (1000, 1001), "the spec's owner");
    assert_eq!((libc::major(mem.rdev()), libc::minor(mem.rdev())), (1, 1));

    let id = unique_id("devices-zero");
    let config = exact_spec(&id, &["head", "/dev/wasm-zero", "8"], with_devices);
    let r = run(spec_opts(&config, &id));
    r.assert_code(0);
    assert_eq!(r.stdout_str(), "0000000000000000\n");
    // The node exists, but the device cgroup refuses it: nothing of the host's memory.
    let id = unique_id("devices-mem");
    let config = exact_spec(&id, &["head", "/dev/sub/wasm-mem", "8"], with_devices);
    let r = run(spec_opts(&config, &id));
    r.assert_code(1);
    assert_eq!(r.stdout_str(), "");
    assert!(
        r.stderr_str()
            .starts_with("error: PermissionDenied Operation not permitted"),
        "{}",
        r.stderr_str()
    );
}

#[test]
fn a_user_namespace_maps_the_guest_as_runc_maps_its_process() {
    const FIELDS: [&str; 8] = [
        "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
    ];
    // ctr makes a remapped copy of the image's snapshot, owned by the mapped root.
    let maps = ["--uidmap", "0:100000:65536", "--gidmap", "0:200000:65536"];
    let out = work_dir().join("userns-out");
    fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::chown(&out, Some(100000), Some(200000)).unwrap();
    let mount = format!("type=bind,src={},dst=/out,options=rbind:rw", out.display());
    let flags = |extra: &[&str]| -> Vec<String> {
        maps.iter()
            .chain(["--mount", mount.as_str()].iter())
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let read = |pid: i32| {
        let file = |f: &str| {
            fs::read_to_string(format!("/proc/{pid}/{f}"))
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        (
            FIELDS.map(|f| (f, proc_status(pid, f))),
            file("uid_map"),
            file("gid_map"),
            ns_link(&pid.to_string(), "user") != ns_link("self", "user"),
        )
    };
    let id = unique_id("userns-runc");
    let mut native = opts(&id, &["/sleeper", "60"]);
    native.runtime = "io.containerd.runc.v2".into();
    native.extra_flags = flags(&[]);
    let runc = while_running(native, read);
    let id = unique_id("userns-wasm");
    let mut wasm = opts(&id, &["/probe.wasm", "sleep", "60"]);
    wasm.extra_flags = flags(&[]);
    let shim = while_running(wasm, read);
    assert_eq!(shim, runc, "wasm guest vs runc's native process");
    assert_eq!(shim.1, "0 100000 65536");
    assert_eq!(shim.2, "0 200000 65536");
    assert!(shim.3, "the guest has its own user namespace");
    assert_eq!(
        shim.0[0].1, "100000\t100000\t100000\t100000",
        "root maps to 100000"
    );

    // What the guest's root creates belongs to the mapped ids on the host.
    let id = unique_id("userns-write");
    let mut wasm = opts(&id, &["/probe.wasm", "write", "/out/made", "mapped"]);
    wasm.extra_flags = flags(&[]);
    run(wasm).assert_code(0);
    let made = fs::metadata(out.join("made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (100000, 200000));
}

#[test]
fn an_update_through_containerds_tasks_api_changes_the_limit_in_the_cgroup() {
    let id = unique_id("update");
    let mut o = opts(&id, &["/probe.wasm", "sleep", "60"]);
    o.extra_flags = vec!["--memory-limit".into(), (96u64 << 20).to_string()];
    let (before, after, denied) = while_running(o, |_| {
        let before = cgroups::memory_limit(&cgroup_path(&id));
        let resources = serde_json::json!({ "memory": { "limit": 192u64 << 20 } });
        common::tasks_api::update_resources(&containerd().socket, NS, &id, &resources).unwrap();
        let after = cgroups::memory_limit(&cgroup_path(&id));
        let garbage = serde_json::json!({ "memory": { "limit": "lots" } });
        let denied = common::tasks_api::update_resources(&containerd().socket, NS, &id, &garbage)
            .unwrap_err();
        (before, after, denied)
    });
    assert_eq!(before, (96u64 << 20).to_string());
    assert_eq!(after, (192u64 << 20).to_string());
    assert!(
        denied.contains("not OCI linux.resources"),
        "a malformed update names the problem: {denied}"
    );
}

/// A clean Delete leaves `cleaned-up` in the bundle, and containerd's `delete` action, run
/// after every shim exit, then has nothing to end. A guest that writes that name wherever it
/// can reach, and whose shim is then lost, must still be ended by `delete`: every write lands
/// in its own root, never in the bundle, so the record cannot be planted.
#[test]
fn a_guest_cannot_plant_the_clean_up_record_and_outlive_a_lost_shim() {
    let id = unique_id("plant");
    containerd().run_detached(NS, image(), &id, &["/probe.wasm", "sleep", "600"]);
    let guest = containerd().task_pid(NS, &id);
    let bundle = containerd()
        .dir
        .join("state/io.containerd.runtime.v2.task")
        .join(NS)
        .join(&id);
    let attempts = [
        "/cleaned-up",
        "/../cleaned-up",
        "../../cleaned-up",
        "/../../../../cleaned-up",
    ];
    for (n, path) in attempts.iter().enumerate() {
        let exec_id = format!("w{n}");
        let out = containerd().exec(NS, &id, &exec_id, &["/probe.wasm", "write", path, "x"]);
        assert_eq!(out.status.code(), Some(0), "write {path}: {out:?}");
    }
    // All four wrote the one file at the root of the container's rootfs.
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/cleaned-up")).unwrap(),
        "x"
    );
    assert!(
        !bundle.join("cleaned-up").exists(),
        "the guest planted the record in the bundle"
    );
    // The shim dies as a SIGKILL leaves it; containerd runs `delete` for the bundle.
    let shim = parent_pid(guest);
    let cmdline = fs::read_to_string(format!("/proc/{shim}/cmdline")).unwrap();
    assert!(cmdline.contains(&format!("-id\0{id}\0")), "{cmdline:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let running = |pid: i32| {
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit_once(") ")
                .is_some_and(|(_, r)| r.starts_with('Z'))
        })
    };
    // `delete` ends the guest first and removes its cgroup after: wait for all of it.
    let cgroup = format!("/{NS}/{id}");
    let left = || {
        [
            running(guest).then_some("the guest runs on"),
            containerd()
                .task_status(NS, &id)
                .map(|_| "the task stays listed"),
            cgroups::exists("memory", &cgroup).then_some("its cgroup stays"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
    };
    while !left().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "after the lost shim: {:?}",
            left()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    containerd().ctr_ok(&["-n", NS, "containers", "delete", &id]);
    common::remove_detached_fifos(&id);
    containerd().assert_no_debris(NS, &id);
}
