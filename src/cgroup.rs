//! The container's cgroup, over youki's `libcgroups` (v1, v2 and systemd managers).
//!
//! On cgroup v1 the shim makes the cgroup and applies `linux.resources` before it spawns the
//! guest, and the new process joins it by itself before it execs (see `prepare_join`); on
//! cgroup v2 (or with systemd) the shim places the guest by pid right after spawning it and
//! then applies the resources. Either way the guest is in its cgroup before it is sent the
//! run plan, so no guest code (not even the guest's own confinement) runs outside it. Stats,
//! Update, Pause and Resume act on the same cgroup, and Delete removes it.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::OnceLock;

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use libcgroups::common::{
    create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager, ControllerOpt,
    FreezerState,
};
use libcgroups::stats::Stats;
use log::debug;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use crate::error::{Error, Result};

/// Devices every container may use, as runc allows them by default: null, zero, full,
/// random, urandom and tty (the ones the guest's /dev holds).
const DEFAULT_DEVICES: &[(i64, i64)] = &[(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0)];

/// One container's cgroup.
pub struct Cgroup {
    manager: AnyCgroupManager,
    path: PathBuf,
    /// Where the unified (v2) hierarchy is mounted; the cgroup's v2 files are below it.
    unified_root: PathBuf,
    /// On cgroup v1 (cgroupfs paths): the cgroup's directory in each controller's hierarchy,
    /// the same ones libcgroups' manager applies limits to, reads and removes.
    v1_dirs: Vec<V1Dir>,
}

/// The cgroup's directory in one cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq)]
struct V1Dir {
    controller: &'static str,
    /// Where the hierarchy is mounted.
    mount: PathBuf,
    dir: PathBuf,
}

/// The v1 controllers libcgroups manages (its `ControllerType`s), by their kernel names.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

impl std::fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cgroup").field("path", &self.path).finish()
    }
}

/// Whether `linux.cgroupsPath` is systemd's `slice:prefix:name` form.
pub fn is_systemd_path(path: &str) -> bool {
    !path.starts_with('/') && path.split(':').count() == 3
}

impl Cgroup {
    /// The cgroup at the spec's `cgroupsPath` (`/<id>` when the spec gives none, as runc).
    pub fn new(cgroups_path: Option<&Path>, id: &str) -> Result<Cgroup> {
        let path = cgroups_path
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(format!("/{id}")));
        let systemd = is_systemd_path(&path.to_string_lossy());
        let path = if systemd { path } else { below_root(&path) };
        let manager = create_cgroup_manager(CgroupConfig {
            cgroup_path: path.clone(),
            systemd_cgroup: systemd,
            container_name: id.to_string(),
        })
        .map_err(|e| failed("set up", &path, e))?;
        let v1_dirs = match manager {
            AnyCgroupManager::V1(_) => v1_dirs(&path)?,
            _ => Vec::new(),
        };
        Ok(Cgroup {
            manager,
            path,
            unified_root: PathBuf::from(libcgroups::common::DEFAULT_CGROUP_ROOT),
            v1_dirs,
        })
    }

    /// A cgroup v2 manager on the unified hierarchy at `root` (a fake tree, in tests).
    #[cfg(test)]
    fn v2_at(root: &Path, path: &Path) -> Cgroup {
        let manager = libcgroups::v2::manager::Manager::new(root.to_path_buf(), path.to_path_buf())
            .expect("a v2 manager");
        Cgroup {
            manager: AnyCgroupManager::V2(manager),
            path: path.to_path_buf(),
            unified_root: root.to_path_buf(),
            v1_dirs: Vec::new(),
        }
    }

    /// Whether the kernel enforces `linux.resources.devices` for this cgroup. cgroup v1 has
    /// the devices controller; on v2 the rules are an eBPF program, which this build does not
    /// load (libcgroups' `cgroupsv2_devices` would bring libbpf), so the shim enforces them
    /// itself by never creating a device node the rules deny (see [`device_rules_allow`]).
    pub fn enforces_device_rules(&self) -> bool {
        matches!(self.manager, AnyCgroupManager::V1(_))
    }

    /// On cgroup v1: makes the cgroup's directory in each hierarchy (cpuset's with its
    /// parent's cpus and mems, without which it takes no process), applies `resources` if
    /// given, and returns the `tasks` files a new process joins by writing "0" to each, itself,
    /// while it has one thread. The kernel moves a thread that moves itself without its global
    /// `cgroup_threadgroup_rwsem`, whose first writer after a quiet spell waits out an RCU
    /// grace period (5 to 16 ms measured here; the shim's write of the pid to `cgroup.procs`
    /// took it every time). `None` elsewhere: the shim places the process by pid (`place`).
    pub fn prepare_join(&self, resources: Option<&LinuxResources>) -> Result<Option<Vec<PathBuf>>> {
        if self.v1_dirs.is_empty() {
            return Ok(None);
        }
        let mut tasks: Vec<PathBuf> = Vec::with_capacity(self.v1_dirs.len());
        for d in &self.v1_dirs {
            std::fs::create_dir_all(&d.dir).map_err(|e| failed("create", &d.dir, e))?;
            if d.controller == "cpuset" {
                inherit_cpuset(&d.mount, &d.dir)?;
            }
            let file = d.dir.join("tasks");
            // cpu and cpuacct are usually one hierarchy.
            if !tasks.contains(&file) {
                tasks.push(file);
            }
        }
        if let Some(resources) = resources {
            self.apply(resources.clone())?;
        }
        Ok(Some(tasks))
    }

    /// Whether a new process joins this cgroup by itself (`prepare_join`), with no attach by
    /// pid to warm up for.
    pub fn joins_by_itself(&self) -> bool {
        !self.v1_dirs.is_empty()
    }

    /// Puts `pid` in the cgroup and applies `resources`, if given (an exec joins its
    /// container's cgroup as it is).
    pub fn place(&self, pid: i32, resources: Option<&LinuxResources>) -> Result<()> {
        self.manager
            .add_task(nix029::unistd::Pid::from_raw(pid))
            .map_err(|e| failed(&format!("place pid {pid} in"), &self.path, e))?;
        match resources {
            Some(resources) => self.apply(resources.clone()),
            None => Ok(()),
        }
    }

    /// Applies (new) limits: at Create, and for Update.
    pub fn apply(&self, resources: LinuxResources) -> Result<()> {
        let resources = with_default_devices(resources);
        let opt = ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        };
        self.manager
            .apply(&opt)
            .map_err(|e| failed("apply linux.resources to", &self.path, e))
    }

    /// The processes in the cgroup now, as runc's `ps` reads them.
    pub fn pids(&self) -> Result<Vec<u32>> {
        let pids = self
            .manager
            .get_all_pids()
            .map_err(|e| failed("list the processes of", &self.path, e))?;
        Ok(pids.into_iter().map(|p| p.as_raw() as u32).collect())
    }

    pub fn freeze(&self) -> Result<()> {
        self.manager
            .freeze(FreezerState::Frozen)
            .map_err(|e| failed("freeze", &self.path, e))
    }

    pub fn thaw(&self) -> Result<()> {
        self.manager
            .freeze(FreezerState::Thawed)
            .map_err(|e| failed("thaw", &self.path, e))
    }

    /// The cgroup's figures as containerd's metrics type for this host's cgroup version
    /// (`io.containerd.cgroups.v1.Metrics` or `.v2.Metrics`, as runc's shim answers).
    pub fn metrics(&self) -> Result<Any> {
        let stats = self
            .manager
            .stats()
            .map_err(|e| failed("read the stats of", &self.path, e))?;
        let (type_url, bytes) = match self.manager {
            AnyCgroupManager::V1(_) => (
                "io.containerd.cgroups.v1.Metrics",
                v1_metrics(&stats).write_to_bytes(),
            ),
            _ => (
                "io.containerd.cgroups.v2.Metrics",
                v2_metrics(&stats).write_to_bytes(),
            ),
        };
        let value = bytes.map_err(|e| Error::Internal(format!("encode metrics: {e}")))?;
        Ok(Any {
            type_url: type_url.to_string(),
            value,
            ..Default::default()
        })
    }

    /// How many processes the kernel's OOM killer has killed in this cgroup (its memory
    /// limit reached): the `oom_kill` count of v1's `memory.oom_control` or v2's
    /// `memory.events`. 0 when the memory controller is not there to tell.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.manager {
            AnyCgroupManager::V1(_) => self
                .v1_dirs
                .iter()
                .find(|d| d.controller == "memory")
                .map(|d| d.dir.join("memory.oom_control")),
            _ => Some(
                self.unified_root
                    .join(relative(&self.path))
                    .join("memory.events"),
            ),
        };
        file.and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Removes the cgroup (its processes have ended). Already gone is not an error.
    pub fn remove(&self) -> Result<()> {
        self.manager
            .remove()
            .map_err(|e| failed("remove", &self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Starts, off the caller's path, what makes the next cgroup attach slow: every write to a
/// `cgroup.procs` (or `tasks`) file takes the kernel's global `cgroup_threadgroup_rwsem` for
/// writing, and the first writer after a quiet spell waits out an RCU grace period (measured
/// here at 6 to 32 ms on cgroup v1) before it gets it. A writer that arrives while that grace
/// period is under way, or within one grace period after the last writer, waits only for what
/// is left of it. So the shim calls this as it starts and at each Create and Exec: a thread of
/// its own moves itself into the cgroup it is already in (the lock is taken, nothing moves)
/// while the shim mounts the rootfs, reads the module and spawns the guest, and the guest's
/// placement then finds the lock warm. One long-lived thread does it, so a Create costs no
/// new thread (nor pid); a request while one is pending is dropped, as that one serves both.
/// Best effort: a host where this fails only loses the head start. Only for an attach by pid:
/// runc's, and the shim's own on cgroup v2 (a wasm guest joins a v1 cgroup without the lock,
/// see `Cgroup::prepare_join`).
pub fn warm_up_attach() {
    static REQUESTS: OnceLock<Option<SyncSender<()>>> = OnceLock::new();
    let requests = REQUESTS.get_or_init(|| {
        let (send, receive) = sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("cgroup-warm-up".into())
            .spawn(move || {
                while receive.recv().is_ok() {
                    if let Err(e) = attach_self_in_place() {
                        debug!("cgroup attach warm-up: {e}");
                    }
                }
            })
            .ok()
            .map(|_| send)
    });
    if let Some(requests) = requests {
        let _ = requests.try_send(());
    }
}

/// Whether this host's cgroups are the unified (v2) hierarchy alone, where every attach is
/// by pid (see `warm_up_attach`).
pub fn host_is_unified() -> bool {
    matches!(
        libcgroups::common::get_cgroup_setup(),
        Ok(libcgroups::common::CgroupSetup::Unified)
    )
}

/// Writes the calling thread into the cgroup it is in already, in the first hierarchy of
/// /proc/self/cgroup found mounted at its usual place: a v1 controller's `tasks` (this thread
/// only), or the unified hierarchy's `cgroup.procs` on a cgroup v2 host.
fn attach_self_in_place() -> std::io::Result<()> {
    let membership = std::fs::read_to_string("/proc/thread-self/cgroup")?;
    let root = Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT);
    let target = membership.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let (file, id) = match controllers {
            "" => (
                root.join(relative(Path::new(path))).join("cgroup.procs"),
                std::process::id(),
            ),
            c if c.starts_with("name=") => return None,
            c => (
                root.join(c).join(relative(Path::new(path))).join("tasks"),
                nix::unistd::gettid().as_raw() as u32,
            ),
        };
        file.exists().then_some((file, id))
    });
    let Some((file, id)) = target else {
        return Err(std::io::Error::other(
            "no cgroup hierarchy mounted under /sys/fs/cgroup",
        ));
    };
    std::fs::write(&file, id.to_string())
        .map_err(|e| std::io::Error::new(e.kind(), format!("write {}: {e}", file.display())))
}

/// The cgroup at `path` in each v1 hierarchy, found as libcgroups' manager finds them (one
/// read of the mount table here, where the manager reads it once per controller): the first
/// cgroup mount whose last component is the controller's name, or a known co-mount of it.
fn v1_dirs(path: &Path) -> Result<Vec<V1Dir>> {
    let mounts = libcgroups::v1::util::list_subsystem_mount_points()
        .map_err(|e| failed("find the hierarchies of", path, e))?;
    Ok(V1_CONTROLLERS
        .iter()
        .filter_map(|controller| {
            let mount = mounts.iter().find(|m| hierarchy_is(m, controller))?;
            Some(V1Dir {
                controller,
                mount: mount.clone(),
                dir: mount.join(relative(path)),
            })
        })
        .collect())
}

/// Whether the v1 hierarchy mounted at `mount` is `controller`'s (libcgroups' rule).
fn hierarchy_is(mount: &Path, controller: &str) -> bool {
    let names: &[&str] = match controller {
        "cpu" => &["cpu,cpuacct", "cpu"],
        "cpuacct" => &["cpu,cpuacct", "cpuacct"],
        "net_cls" => &["net_cls,net_prio", "net_prio,net_cls", "net_cls"],
        "net_prio" => &["net_cls,net_prio", "net_prio,net_cls", "net_prio"],
        other => return mount.ends_with(other),
    };
    names.iter().any(|n| mount.ends_with(n))
}

/// Gives each cpuset cgroup from the hierarchy's root down to `dir` whose `cpuset.cpus` or
/// `cpuset.mems` is empty (a new one's are) its parent's value, as runc does: the kernel
/// refuses a process into a cpuset with no cpus or memory nodes.
fn inherit_cpuset(mount: &Path, dir: &Path) -> Result<()> {
    let below = dir
        .strip_prefix(mount)
        .map_err(|_| failed("place", dir, "not below its cpuset hierarchy"))?;
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mut parent = mount.to_path_buf();
        for component in below.components() {
            let child = parent.join(component);
            let value = |d: &Path| std::fs::read_to_string(d.join(file));
            let own = value(&child).map_err(|e| failed(&format!("read {file} of"), &child, e))?;
            if own.trim().is_empty() {
                let inherited =
                    value(&parent).map_err(|e| failed(&format!("read {file} of"), &parent, e))?;
                std::fs::write(child.join(file), inherited.trim())
                    .map_err(|e| failed(&format!("write {file} of"), &child, e))?;
            }
            parent = child;
        }
    }
    Ok(())
}

/// A cgroupfs `cgroupsPath` made absolute with its `.` and `..` resolved by name, as runc
/// cleans it: `/a/../../b` is `/b`, so no spec reaches above a hierarchy's root (into another
/// hierarchy, or out of /sys/fs/cgroup).
fn below_root(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut clean = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(name) => clean.push(name),
            Component::ParentDir => {
                clean.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    clean
}

fn relative(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

fn failed(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{what} the cgroup {}: {e}", path.display()))
}

/// The spec's device rules plus the devices the guest's /dev always holds, allowed after
/// them (a spec's "deny all" comes first, as in containerd's default spec).
fn with_default_devices(mut resources: LinuxResources) -> LinuxResources {
    let mut devices = resources.devices().clone().unwrap_or_default();
    for (major, minor) in DEFAULT_DEVICES {
        let mut rule = LinuxDeviceCgroup::default();
        rule.set_allow(true)
            .set_typ(Some(LinuxDeviceType::C))
            .set_major(Some(*major))
            .set_minor(Some(*minor))
            .set_access(Some("rwm".into()));
        devices.push(rule);
    }
    resources.set_devices(Some(devices));
    resources
}

/// Whether device cgroup rules in the kernel's order (the last rule that matches decides,
/// nothing is allowed unless a rule says so) allow reading or writing the device.
pub fn device_rules_allow(
    rules: &[LinuxDeviceCgroup],
    kind: LinuxDeviceType,
    major: i64,
    minor: i64,
) -> bool {
    let mut allowed = false;
    for rule in with_default_devices_rules(rules) {
        let kind_matches = match rule.typ() {
            None | Some(LinuxDeviceType::A) => true,
            Some(t) => t == kind,
        };
        let number_matches =
            rule.major().is_none_or(|m| m == major) && rule.minor().is_none_or(|m| m == minor);
        let reads_or_writes = rule
            .access()
            .as_deref()
            .is_none_or(|a| a.contains('r') || a.contains('w'));
        if kind_matches && number_matches && reads_or_writes {
            allowed = rule.allow();
        }
    }
    allowed
}

fn with_default_devices_rules(rules: &[LinuxDeviceCgroup]) -> Vec<LinuxDeviceCgroup> {
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(rules.to_vec()));
    with_default_devices(resources)
        .devices()
        .clone()
        .unwrap_or_default()
}

/// cgroup v1's `cpuacct.stat`, which libcgroups passes through, counts in clock ticks;
/// containerd's v1 metrics carry nanoseconds.
fn ticks_to_nanos(ticks: u64) -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|t| *t > 0)
        .unwrap_or(100);
    ticks.saturating_mul(1_000_000_000 / per_second)
}

fn v1_metrics(stats: &Stats) -> v1::Metrics {
    let entry = |d: &libcgroups::stats::MemoryData| v1::MemoryEntry {
        limit: d.limit,
        usage: d.usage,
        max: d.max_usage,
        failcnt: d.fail_count,
        ..Default::default()
    };
    let m = &stats.memory;
    let stat = |key: &str| m.stats.get(key).copied().unwrap_or(0);
    v1::Metrics {
        pids: MessageField::some(v1::PidsStat {
            current: stats.pids.current,
            limit: stats.pids.limit,
            ..Default::default()
        }),
        cpu: MessageField::some(v1::CPUStat {
            usage: MessageField::some(v1::CPUUsage {
                total: stats.cpu.usage.usage_total,
                kernel: ticks_to_nanos(stats.cpu.usage.usage_kernel),
                user: ticks_to_nanos(stats.cpu.usage.usage_user),
                per_cpu: stats.cpu.usage.per_core_usage_total.clone(),
                ..Default::default()
            }),
            throttling: MessageField::some(v1::Throttle {
                periods: stats.cpu.throttling.periods,
                throttled_periods: stats.cpu.throttling.throttled_periods,
                throttled_time: stats.cpu.throttling.throttled_time,
                ..Default::default()
            }),
            ..Default::default()
        }),
        memory: MessageField::some(v1::MemoryStat {
            cache: m.cache,
            rss: stat("rss"),
            rss_huge: stat("rss_huge"),
            mapped_file: stat("mapped_file"),
            dirty: stat("dirty"),
            writeback: stat("writeback"),
            pg_fault: stat("pgfault"),
            pg_maj_fault: stat("pgmajfault"),
            inactive_anon: stat("inactive_anon"),
            active_anon: stat("active_anon"),
            inactive_file: stat("inactive_file"),
            active_file: stat("active_file"),
            unevictable: stat("unevictable"),
            hierarchical_memory_limit: stat("hierarchical_memory_limit"),
            total_cache: stat("total_cache"),
            total_rss: stat("total_rss"),
            usage: MessageField::some(entry(&m.memory)),
            swap: MessageField::some(entry(&m.memswap)),
            kernel: MessageField::some(entry(&m.kernel)),
            kernel_tcp: MessageField::some(entry(&m.kernel_tcp)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn v2_metrics(stats: &Stats) -> v2::Metrics {
    let m = &stats.memory;
    let stat = |key: &str| m.stats.get(key).copied().unwrap_or(0);
    v2::Metrics {
        pids: MessageField::some(v2::PidsStat {
            current: stats.pids.current,
            limit: stats.pids.limit,
            ..Default::default()
        }),
        cpu: MessageField::some(v2::CPUStat {
            // On v2, libcgroups passes cpu.stat's microseconds through unchanged.
            usage_usec: stats.cpu.usage.usage_total,
            user_usec: stats.cpu.usage.usage_user,
            system_usec: stats.cpu.usage.usage_kernel,
            nr_periods: stats.cpu.throttling.periods,
            nr_throttled: stats.cpu.throttling.throttled_periods,
            throttled_usec: stats.cpu.throttling.throttled_time,
            ..Default::default()
        }),
        memory: MessageField::some(v2::MemoryStat {
            anon: stat("anon"),
            file: stat("file"),
            usage: m.memory.usage,
            usage_limit: m.memory.limit,
            swap_usage: m.memswap.usage,
            swap_limit: m.memswap.limit,
            max_usage: m.memory.max_usage,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attach_warm_up_leaves_the_thread_in_its_own_cgroups() {
        let before = std::fs::read_to_string("/proc/thread-self/cgroup").unwrap();
        attach_self_in_place().unwrap();
        let after = std::fs::read_to_string("/proc/thread-self/cgroup").unwrap();
        assert_eq!(after, before);
    }

    #[test]
    fn a_cgroups_path_never_reaches_above_the_hierarchys_root() {
        for (given, clean) in [
            ("/k8s.io/abc", "/k8s.io/abc"),
            ("/a/../../b", "/b"),
            ("../../../etc/x", "/etc/x"),
            ("/default/./c/..", "/default"),
            ("relative/id", "/relative/id"),
        ] {
            assert_eq!(below_root(Path::new(given)), Path::new(clean), "{given}");
        }
        let cgroup = Cgroup::new(Some(Path::new("/../../../../tmp/x")), "x").unwrap();
        assert_eq!(cgroup.path(), Path::new("/tmp/x"));
        for d in &cgroup.v1_dirs {
            assert!(d.dir.starts_with(&d.mount), "{d:?}");
        }
    }

    /// Needs cgroup v1 (as this project's hosts have): elsewhere nothing joins by itself.
    #[test]
    fn the_v1_hierarchies_are_libcgroups_own_and_a_process_joins_them_by_itself() {
        use libcgroups::v1::{util::get_subsystem_mount_point, ControllerType as C};
        let path = PathBuf::from(format!("/shim-unit-join-{}", std::process::id()));
        let cgroup = Cgroup::new(Some(&path), "x").unwrap();
        if !matches!(cgroup.manager, AnyCgroupManager::V1(_)) {
            assert!(cgroup.prepare_join(None).unwrap().is_none());
            return;
        }
        let theirs: Vec<(String, PathBuf)> = [
            C::Cpu,
            C::CpuAcct,
            C::CpuSet,
            C::Devices,
            C::HugeTlb,
            C::Memory,
            C::Pids,
            C::PerfEvent,
            C::Blkio,
            C::NetworkPriority,
            C::NetworkClassifier,
            C::Freezer,
        ]
        .iter()
        .filter_map(|c| Some((c.to_string(), get_subsystem_mount_point(c).ok()?)))
        .collect();
        let ours: Vec<(String, PathBuf)> = cgroup
            .v1_dirs
            .iter()
            .map(|d| (d.controller.to_string(), d.mount.clone()))
            .collect();
        assert_eq!(ours, theirs);

        let mut resources = LinuxResources::default();
        let mut memory = oci_spec::runtime::LinuxMemory::default();
        memory.set_limit(Some(64 << 20));
        resources.set_memory(Some(memory));
        let tasks = cgroup.prepare_join(Some(&resources)).unwrap().unwrap();
        let dir = |c: &str| {
            cgroup
                .v1_dirs
                .iter()
                .find(|d| d.controller == c)
                .unwrap()
                .dir
                .clone()
        };
        let limit = std::fs::read_to_string(dir("memory").join("memory.limit_in_bytes")).unwrap();
        assert_eq!(
            limit.trim(),
            (64u64 << 20).to_string(),
            "applied before anything joins"
        );
        let cpus = std::fs::read_to_string(dir("cpuset").join("cpuset.cpus")).unwrap();
        assert!(!cpus.trim().is_empty(), "cpuset inherits its parent's cpus");
        // A process writes "0" to each file, as the guest does before it execs.
        let joined = std::process::Command::new("sh")
            .args([
                "-c",
                r#"for f; do echo 0 > "$f" || exit 1; done; cat /proc/self/cgroup"#,
                "sh",
            ])
            .args(&tasks)
            .output()
            .unwrap();
        assert!(joined.status.success(), "{joined:?}");
        let membership = String::from_utf8(joined.stdout).unwrap();
        for d in &cgroup.v1_dirs {
            let line = membership
                .lines()
                .find(|l| {
                    l.split(':')
                        .nth(1)
                        .is_some_and(|c| c.split(',').any(|c| c == d.controller))
                })
                .unwrap_or_else(|| panic!("{} not in {membership}", d.controller));
            assert!(line.ends_with(&format!(":{}", path.display())), "{line}");
        }
        cgroup.remove().unwrap();
        assert!(!dir("memory").exists());
    }

    #[test]
    fn systemd_paths_are_told_from_cgroupfs_paths() {
        assert!(is_systemd_path("system.slice:cri-containerd:abc"));
        assert!(!is_systemd_path("/kubepods/burstable/pod1/abc"));
        assert!(!is_systemd_path("/default/a:b:c"));
    }

    #[test]
    fn the_guests_devices_are_allowed_after_the_specs_rules() {
        let spec: LinuxResources =
            serde_json::from_str(r#"{"devices":[{"allow":false,"access":"rwm"}]}"#).unwrap();
        let devices = with_default_devices(spec).devices().clone().unwrap();
        assert!(!devices[0].allow(), "the spec's deny-all stays first");
        let allowed: Vec<(i64, i64)> = devices[1..]
            .iter()
            .map(|d| (d.major().unwrap(), d.minor().unwrap()))
            .collect();
        assert_eq!(allowed, DEFAULT_DEVICES);
    }

    #[test]
    fn stats_become_containerds_metrics_for_each_version() {
        let mut stats = Stats::default();
        stats.cpu.usage.usage_total = 5_000_000;
        stats.cpu.usage.usage_user = 14;
        stats.memory.memory.usage = 4096;
        stats.memory.memory.limit = 1 << 26;
        stats.pids.current = 2;
        let m1 = v1_metrics(&stats);
        assert_eq!(m1.cpu.usage.total, 5_000_000);
        // 14 ticks of cpuacct.stat, at the usual 100 per second.
        assert_eq!(m1.cpu.usage.user, 140_000_000);
        assert_eq!(m1.memory.usage.usage, 4096);
        assert_eq!(m1.memory.usage.limit, 1 << 26);
        assert_eq!(m1.pids.current, 2);
        let m2 = v2_metrics(&stats);
        assert_eq!(m2.cpu.usage_usec, 5_000_000);
        assert_eq!((m2.memory.usage, m2.memory.usage_limit), (4096, 1 << 26));
    }

    const PSI: &str = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";

    /// A fake unified hierarchy: what the kernel shows at the root and in the container's
    /// cgroup (libcgroups opens the kernel's files without creating them, and writes without
    /// truncating: the files it writes start empty).
    fn fake_unified_tree(cgroup: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids",
        )
        .unwrap();
        std::fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        let dir = root.path().join(cgroup.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in [
            ("cgroup.procs", ""),
            ("cgroup.freeze", "0"),
            ("cpu.max", ""),
            ("cgroup.events", "populated 1\nfrozen 1\n"),
            ("memory.current", "4096\n"),
            ("memory.max", ""),
            ("memory.stat", "anon 1024\nfile 2048\n"),
            ("memory.events", "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n"),
            (
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 20\n",
            ),
            ("memory.swap.current", "0\n"),
            ("memory.swap.max", "max\n"),
            ("memory.swap.events", "max 0\nfail 0\n"),
            ("pids.current", "1\n"),
            ("io.stat", ""),
            ("cpu.pressure", PSI),
            ("memory.pressure", PSI),
            ("io.pressure", PSI),
            ("pids.max", ""),
        ] {
            std::fs::write(dir.join(file), text).unwrap();
        }
        // libcgroups reads the hugetlb files of every page size this host has.
        for size in libcgroups::stats::supported_page_sizes().unwrap_or_default() {
            std::fs::write(dir.join(format!("hugetlb.{size}.current")), "0\n").unwrap();
            std::fs::write(dir.join(format!("hugetlb.{size}.events")), "max 0\n").unwrap();
        }
        root
    }

    #[test]
    fn on_cgroup_v2_placement_limits_freezer_and_stats_use_the_unified_files() {
        let path = "/kubepods/pod1/ctr1";
        let tree = fake_unified_tree(path);
        let dir = tree.path().join(&path[1..]);
        let cgroup = Cgroup::v2_at(tree.path(), Path::new(path));
        assert!(!cgroup.enforces_device_rules());
        let resources: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":67108864},"cpu":{"quota":50000,"period":100000},"pids":{"limit":16}}"#,
        )
        .unwrap();
        // A pid that cannot exist: the fake tree only records it.
        cgroup.place(999_999_999, Some(&resources)).unwrap();
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(read("cgroup.procs"), "999999999");
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("pids.max"), "16");
        cgroup.freeze().unwrap();
        assert_eq!(read("cgroup.freeze"), "1");
        assert_eq!(cgroup.oom_kills(), 2);
        let metrics = cgroup.metrics().unwrap();
        assert_eq!(metrics.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = v2::Metrics::parse_from_bytes(&metrics.value).unwrap();
        assert_eq!(
            (m.memory.usage, m.memory.anon, m.memory.file),
            (4096, 1024, 2048)
        );
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (1500, 1000, 500)
        );
        assert_eq!(m.pids.current, 1);
    }

    #[test]
    fn device_rules_are_read_as_the_kernel_reads_them() {
        let rules: Vec<LinuxDeviceCgroup> = serde_json::from_str(
            r#"[{"allow":false,"access":"rwm"},
                {"allow":true,"type":"c","major":10,"access":"rw"},
                {"allow":false,"type":"c","major":10,"minor":200,"access":"rwm"},
                {"allow":true,"type":"b","major":8,"minor":0,"access":"m"}]"#,
        )
        .unwrap();
        let c = LinuxDeviceType::C;
        assert!(device_rules_allow(&rules, c, 10, 229), "major 10 allowed");
        assert!(!device_rules_allow(&rules, c, 10, 200), "a later deny wins");
        assert!(!device_rules_allow(&rules, c, 1, 1), "deny-all holds");
        assert!(
            !device_rules_allow(&rules, LinuxDeviceType::B, 8, 0),
            "mknod-only access is neither read nor write"
        );
        assert!(device_rules_allow(&rules, c, 1, 5), "the guest's /dev/zero");
        assert!(
            !device_rules_allow(&[], LinuxDeviceType::B, 8, 0),
            "nothing allows"
        );
    }
}
