//! The container's cgroup, over youki's `libcgroups` (v1, v2 and systemd managers).
//!
//! The shim places the guest in `linux.cgroupsPath` right after spawning it, before it sends
//! the run plan, so no guest code (not even the guest's own confinement) runs outside it; then
//! `linux.resources` are applied. Stats, Update, Pause and Resume act on the same cgroup, and
//! Delete removes it.

use std::path::{Path, PathBuf};

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use libcgroups::common::{
    create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager, ControllerOpt,
    FreezerState,
};
use libcgroups::stats::Stats;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use crate::error::{Error, Result};

/// Devices every container may use, as runc allows them by default: null, zero, full,
/// random, urandom and tty (the ones the guest's /dev holds).
const DEFAULT_DEVICES: &[(i64, i64)] = &[(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0)];

/// One container's cgroup.
pub struct Cgroup {
    manager: AnyCgroupManager,
    path: PathBuf,
}

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
        let manager = create_cgroup_manager(CgroupConfig {
            cgroup_path: path.clone(),
            systemd_cgroup: systemd,
            container_name: id.to_string(),
        })
        .map_err(|e| failed("set up", &path, e))?;
        Ok(Cgroup { manager, path })
    }

    /// Puts `pid` in the cgroup and applies `resources`.
    pub fn place(&self, pid: i32, resources: Option<&LinuxResources>) -> Result<()> {
        self.manager
            .add_task(nix029::unistd::Pid::from_raw(pid))
            .map_err(|e| failed(&format!("place pid {pid} in"), &self.path, e))?;
        self.apply(resources.cloned().unwrap_or_default())
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
            AnyCgroupManager::V1(_) => libcgroups::v1::util::get_subsystem_mount_point(
                &libcgroups::v1::ControllerType::Memory,
            )
            .map(|mount| mount.join(relative(&self.path)).join("memory.oom_control"))
            .ok(),
            _ => Some(
                Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT)
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
                kernel: stats.cpu.usage.usage_kernel,
                user: stats.cpu.usage.usage_user,
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
        stats.memory.memory.usage = 4096;
        stats.memory.memory.limit = 1 << 26;
        stats.pids.current = 2;
        let m1 = v1_metrics(&stats);
        assert_eq!(m1.cpu.usage.total, 5_000_000);
        assert_eq!(m1.memory.usage.usage, 4096);
        assert_eq!(m1.memory.usage.limit, 1 << 26);
        assert_eq!(m1.pids.current, 2);
        let m2 = v2_metrics(&stats);
        assert_eq!(m2.cpu.usage_usec, 5_000_000);
        assert_eq!((m2.memory.usage, m2.memory.usage_limit), (4096, 1 << 26));
    }
}
