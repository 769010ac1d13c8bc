//! Confinement of the guest process, as runc confines a container's init.
//!
//! [`Confinement`] is decided in the shim from the OCI spec (pure, unit-tested, so a spec the
//! shim cannot honour fails `Create` with the reason) and carried to the guest in the run plan.
//! The guest applies it in this order, before it reads a byte of the module, compiles, starts a
//! thread or runs guest code (see `guest::child`):
//!
//! 1. rlimits and `oom_score_adj` ([`identity`]), while the process still holds the host's
//!    privileges (raising a hard limit or lowering the score is refused inside a user namespace);
//! 2. namespaces: the pid namespace is entered at spawn (`guest::spawn`, the guest is PID 1 of
//!    it); then, as runc orders them, the user namespace given by path, the other namespaces
//!    given by path, a new user namespace (the shim writes its uid and gid maps), and the new
//!    namespaces of every other type ([`namespaces`]);
//! 3. the root filesystem and mounts, `/dev` with the spec's devices, masked and read-only
//!    paths (`guest::mounts`), hostname;
//! 4. seccomp here when the spec does not ask for `no_new_privs` (loading a filter without it
//!    needs CAP_SYS_ADMIN, which the capability step may drop; runc orders it the same way);
//! 5. user, groups and umask ([`identity`]), then the five capability sets ([`capabilities`]);
//! 6. `no_new_privs`, then seccomp when it was not loaded in step 4 ([`seccomp`]).

pub mod capabilities;
pub mod identity;
pub mod namespaces;
pub mod seccomp;

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, Spec};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Everything about the guest's confinement that the spec decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Confinement {
    /// The namespaces of `linux.namespaces`, in spec order.
    pub namespaces: Vec<NamespacePlan>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub user: UserPlan,
    pub no_new_privileges: bool,
    pub capabilities: CapabilityPlan,
    pub rlimits: Vec<RlimitPlan>,
    pub oom_score_adj: Option<i32>,
    pub seccomp: Option<LinuxSeccomp>,
    /// `linux.maskedPaths`: hidden behind /dev/null (files) or an empty read-only tmpfs (dirs).
    pub masked_paths: Vec<PathBuf>,
    /// `linux.readonlyPaths`: bound onto themselves read-only.
    pub readonly_paths: Vec<PathBuf>,
    /// `linux.rootfsPropagation` (e.g. "rslave"); rslave when the spec is silent, as runc.
    pub rootfs_propagation: Option<String>,
    /// `linux.uidMappings` and `linux.gidMappings`, written by the shim into a new user
    /// namespace.
    #[serde(default)]
    pub uid_mappings: Vec<IdMapping>,
    #[serde(default)]
    pub gid_mappings: Vec<IdMapping>,
    /// `linux.devices`: created in the container's `/dev`.
    #[serde(default)]
    pub devices: Vec<DevicePlan>,
}

/// One line of a user namespace's uid or gid map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// One of `linux.devices`: a node the guest gets in its `/dev`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePlan {
    /// Path inside the container, under `/dev/`.
    pub path: PathBuf,
    pub kind: DeviceKind,
    pub major: u64,
    pub minor: u64,
    /// Permission bits (`fileMode`, 0666 when the spec is silent, as runc).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceKind {
    Char,
    Block,
    Fifo,
}

/// A namespace the guest gets: a new one, or the one at `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePlan {
    pub kind: NamespaceKind,
    pub path: Option<PathBuf>,
}

/// The namespace types the wasm runtime supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamespaceKind {
    Mount,
    Pid,
    Ipc,
    Uts,
    Network,
    Cgroup,
    User,
}

/// `process.user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UserPlan {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
}

/// `process.capabilities`, as capability names ("CAP_CHOWN").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CapabilityPlan {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub permitted: Vec<String>,
    pub inheritable: Vec<String>,
    pub ambient: Vec<String>,
}

/// One of `process.rlimits` ("RLIMIT_NOFILE").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RlimitPlan {
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

impl NamespaceKind {
    /// The namespace's file under `/proc/<pid>/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            NamespaceKind::Mount => "mnt",
            NamespaceKind::Pid => "pid",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Uts => "uts",
            NamespaceKind::Network => "net",
            NamespaceKind::Cgroup => "cgroup",
            NamespaceKind::User => "user",
        }
    }
}

impl Confinement {
    /// The spec's pid namespace, if it names one: entered when the guest is spawned.
    pub fn pid_namespace(&self) -> Option<&NamespacePlan> {
        self.namespaces
            .iter()
            .find(|n| n.kind == NamespaceKind::Pid)
    }

    pub fn has_namespace(&self, kind: NamespaceKind) -> bool {
        self.namespaces.iter().any(|n| n.kind == kind)
    }

    /// Whether the guest joins an existing mount namespace (an exec) instead of making one.
    pub fn joins_mount_namespace(&self) -> bool {
        self.namespaces
            .iter()
            .any(|n| n.kind == NamespaceKind::Mount && n.path.is_some())
    }

    /// A new user namespace, whose maps the shim writes once the guest has made it.
    pub fn new_user_namespace(&self) -> bool {
        self.namespaces
            .iter()
            .any(|n| n.kind == NamespaceKind::User && n.path.is_none())
    }
}

/// Reads the confinement from the spec, refusing what the runtime cannot honour.
pub fn from_spec(spec: &Spec) -> Result<Confinement> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("the OCI spec has no process".into()))?;
    let linux = spec.linux().as_ref();
    let namespaces = plan_namespaces(linux.and_then(|l| l.namespaces().as_deref()))?;
    let user = process.user();
    let mut confinement = Confinement {
        namespaces,
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        domainname: spec.domainname().clone().filter(|d| !d.is_empty()),
        user: UserPlan {
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask(),
        },
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        capabilities: plan_capabilities(process.capabilities().as_ref()),
        rlimits: process
            .rlimits()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|r| RlimitPlan {
                kind: format!(
                    "RLIMIT_{}",
                    r.typ().to_string().trim_start_matches("RLIMIT_")
                ),
                soft: r.soft(),
                hard: r.hard(),
            })
            .collect(),
        oom_score_adj: process.oom_score_adj(),
        seccomp: linux.and_then(|l| l.seccomp().clone()),
        masked_paths: linux
            .and_then(|l| l.masked_paths().clone())
            .unwrap_or_default()
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        readonly_paths: linux
            .and_then(|l| l.readonly_paths().clone())
            .unwrap_or_default()
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        rootfs_propagation: linux.and_then(|l| l.rootfs_propagation().clone()),
        uid_mappings: id_mappings(linux.and_then(|l| l.uid_mappings().as_deref())),
        gid_mappings: id_mappings(linux.and_then(|l| l.gid_mappings().as_deref())),
        devices: plan_devices(linux.and_then(|l| l.devices().as_deref()))?,
    };
    for r in &confinement.rlimits {
        identity::rlimit_resource(&r.kind)?;
    }
    if let Some(p) = &confinement.rootfs_propagation {
        crate::guest::mounts::propagation_flags(p).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "linux.rootfsPropagation {p:?} is not one of shared, slave, private, unbindable (r-prefixed too)"
            ))
        })?;
    }
    if (confinement.hostname.is_some() || confinement.domainname.is_some())
        && !confinement.has_namespace(NamespaceKind::Uts)
    {
        // runc refuses the same spec: setting the name would change the host's.
        return Err(Error::InvalidArgument(
            "the OCI spec sets a hostname or domainname without a uts namespace; add one to linux.namespaces".into(),
        ));
    }
    if let Some(seccomp) = &confinement.seccomp {
        seccomp::check(seccomp)?;
    }
    check_id_mappings(&confinement)?;
    confinement.namespaces.dedup();
    Ok(confinement)
}

/// The confinement of a process exec'd into a running container (`kubectl exec`, an exec
/// probe): the exec's own process fields (user, capabilities, rlimits, no_new_privs,
/// oomScoreAdj), the container's seccomp profile, and every namespace of the container's
/// init (`init_pid`) joined by path, its mount namespace too: the exec sees the container's
/// root and mounts as they are, and makes no mounts of its own.
pub fn for_exec(
    spec: &Spec,
    process: &oci_spec::runtime::Process,
    init_pid: i32,
) -> Result<Confinement> {
    let mut exec_spec = spec.clone();
    exec_spec.set_process(Some(process.clone()));
    let container = from_spec(&exec_spec)?;
    let mut kinds: Vec<NamespaceKind> = container.namespaces.iter().map(|n| n.kind).collect();
    if !kinds.contains(&NamespaceKind::Mount) {
        kinds.push(NamespaceKind::Mount);
    }
    let namespaces = kinds
        .into_iter()
        .map(|kind| NamespacePlan {
            kind,
            path: Some(PathBuf::from(format!(
                "/proc/{init_pid}/ns/{}",
                kind.proc_name()
            ))),
        })
        .collect();
    Ok(Confinement {
        namespaces,
        hostname: None,
        domainname: None,
        uid_mappings: Vec::new(),
        gid_mappings: Vec::new(),
        devices: Vec::new(),
        masked_paths: Vec::new(),
        readonly_paths: Vec::new(),
        rootfs_propagation: None,
        ..container
    })
}

fn id_mappings(mappings: Option<&[oci_spec::runtime::LinuxIdMapping]>) -> Vec<IdMapping> {
    mappings
        .unwrap_or_default()
        .iter()
        .map(|m| IdMapping {
            container_id: m.container_id(),
            host_id: m.host_id(),
            size: m.size(),
        })
        .collect()
}

/// A new user namespace needs both maps (the guest would otherwise own no id in it), and maps
/// without a new user namespace would be silently ignored: both are refused, as runc does.
fn check_id_mappings(c: &Confinement) -> Result<()> {
    let has_maps = !c.uid_mappings.is_empty() || !c.gid_mappings.is_empty();
    if c.new_user_namespace() {
        if c.uid_mappings.is_empty() || c.gid_mappings.is_empty() {
            return Err(Error::InvalidArgument(
                "linux.namespaces asks for a new user namespace but linux.uidMappings or linux.gidMappings is empty; give both".into(),
            ));
        }
        let maps_root = |maps: &[IdMapping]| maps.iter().any(|m| m.container_id == 0 && m.size > 0);
        if !maps_root(&c.uid_mappings) || !maps_root(&c.gid_mappings) {
            return Err(Error::InvalidArgument(
                "linux.uidMappings and linux.gidMappings must map container id 0: the container's setup runs as root of its user namespace".into(),
            ));
        }
    } else if has_maps && !c.has_namespace(NamespaceKind::User) {
        return Err(Error::InvalidArgument(
            "linux.uidMappings or linux.gidMappings is set without a user namespace in linux.namespaces; add one or drop the mappings".into(),
        ));
    }
    Ok(())
}

/// `linux.devices`, checked: each is created in the guest's `/dev` tmpfs, so it must be
/// under `/dev/`.
fn plan_devices(devices: Option<&[oci_spec::runtime::LinuxDevice]>) -> Result<Vec<DevicePlan>> {
    use oci_spec::runtime::LinuxDeviceType;
    devices
        .unwrap_or_default()
        .iter()
        .map(|d| {
            let path = d.path().clone();
            let under_dev = path.starts_with("/dev")
                && path != Path::new("/dev")
                && !path.components().any(|c| c == Component::ParentDir);
            if !under_dev {
                return Err(Error::InvalidArgument(format!(
                    "linux.devices path {} must be below /dev/ without '..'",
                    path.display()
                )));
            }
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
                LinuxDeviceType::B => DeviceKind::Block,
                LinuxDeviceType::P => DeviceKind::Fifo,
                LinuxDeviceType::A => {
                    return Err(Error::InvalidArgument(format!(
                        "linux.devices entry {} has type \"a\", which only device cgroup rules may use; give c, b, u or p",
                        path.display()
                    )))
                }
            };
            let number = |n: i64, what: &str| {
                u64::try_from(n).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "linux.devices entry {} has a negative {what} number",
                        path.display()
                    ))
                })
            };
            Ok(DevicePlan {
                kind,
                major: number(d.major(), "major")?,
                minor: number(d.minor(), "minor")?,
                mode: d.file_mode().unwrap_or(0o666) & 0o7777,
                uid: d.uid().unwrap_or(0),
                gid: d.gid().unwrap_or(0),
                path,
            })
        })
        .collect()
}

fn plan_namespaces(
    namespaces: Option<&[oci_spec::runtime::LinuxNamespace]>,
) -> Result<Vec<NamespacePlan>> {
    let mut planned: Vec<NamespacePlan> = Vec::new();
    for ns in namespaces.unwrap_or_default() {
        let kind = match ns.typ() {
            LinuxNamespaceType::Mount => NamespaceKind::Mount,
            LinuxNamespaceType::Pid => NamespaceKind::Pid,
            LinuxNamespaceType::Ipc => NamespaceKind::Ipc,
            LinuxNamespaceType::Uts => NamespaceKind::Uts,
            LinuxNamespaceType::Network => NamespaceKind::Network,
            LinuxNamespaceType::Cgroup => NamespaceKind::Cgroup,
            LinuxNamespaceType::User => NamespaceKind::User,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "linux.namespaces asks for a {other} namespace, which the wasm runtime does not support; remove it from the spec"
                )))
            }
        };
        if planned.iter().any(|p| p.kind == kind) {
            return Err(Error::InvalidArgument(format!(
                "linux.namespaces names the {} namespace twice",
                ns.typ()
            )));
        }
        let path = ns.path().clone().filter(|p| !p.as_os_str().is_empty());
        if let (NamespaceKind::Mount, Some(p)) = (kind, &path) {
            // The guest pivots into its root inside its mount namespace: doing that in a
            // namespace shared with others would change their view too.
            return Err(Error::InvalidArgument(format!(
                "linux.namespaces gives a mount namespace by path ({}); the wasm runtime always makes a new one, remove the path",
                p.display()
            )));
        }
        if let Some(p) = &path {
            if !p.is_absolute() {
                return Err(Error::InvalidArgument(format!(
                    "the {} namespace path {} must be absolute",
                    ns.typ(),
                    p.display()
                )));
            }
        }
        planned.push(NamespacePlan { kind, path });
    }
    Ok(planned)
}

fn plan_capabilities(caps: Option<&oci_spec::runtime::LinuxCapabilities>) -> CapabilityPlan {
    let names = |set: Option<&oci_spec::runtime::Capabilities>| -> Vec<String> {
        let mut names: Vec<String> = set
            .into_iter()
            .flatten()
            .filter_map(|c| serde_json::to_value(c).ok())
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    };
    let Some(caps) = caps else {
        return CapabilityPlan::default();
    };
    CapabilityPlan {
        bounding: names(caps.bounding().as_ref()),
        effective: names(caps.effective().as_ref()),
        permitted: names(caps.permitted().as_ref()),
        inheritable: names(caps.inheritable().as_ref()),
        ambient: names(caps.ambient().as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(linux: &str, process_extra: &str) -> Spec {
        let json = format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"hostname":"web",
            "process":{{"user":{{"uid":1000,"gid":1000,"additionalGids":[10,20],"umask":18}},
                        "args":["/a.wasm"],"cwd":"/","noNewPrivileges":true,
                        "capabilities":{{"bounding":["CAP_KILL","CAP_CHOWN"],"ambient":["CAP_KILL"]}},
                        "rlimits":[{{"type":"RLIMIT_NOFILE","soft":64,"hard":128}}],
                        "oomScoreAdj":1000 {process_extra}}},
            "linux":{{{linux}}}}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    const NAMESPACES: &str = r#""namespaces":[{"type":"pid"},{"type":"uts"},
        {"type":"network","path":"/proc/7/ns/net"},{"type":"mount"}],
        "maskedPaths":["/proc/kcore"],"readonlyPaths":["/proc/sys"]"#;

    #[test]
    fn the_spec_decides_namespaces_identity_and_limits() {
        let c = from_spec(&spec(NAMESPACES, "")).unwrap();
        assert_eq!(
            c.namespaces,
            vec![
                NamespacePlan {
                    kind: NamespaceKind::Pid,
                    path: None
                },
                NamespacePlan {
                    kind: NamespaceKind::Uts,
                    path: None
                },
                NamespacePlan {
                    kind: NamespaceKind::Network,
                    path: Some("/proc/7/ns/net".into())
                },
                NamespacePlan {
                    kind: NamespaceKind::Mount,
                    path: None
                },
            ]
        );
        assert_eq!(c.pid_namespace().unwrap().kind, NamespaceKind::Pid);
        assert_eq!(c.hostname.as_deref(), Some("web"));
        assert_eq!(
            c.user,
            UserPlan {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10, 20],
                umask: Some(18)
            }
        );
        assert!(c.no_new_privileges);
        assert_eq!(c.capabilities.bounding, vec!["CAP_CHOWN", "CAP_KILL"]);
        assert_eq!(c.capabilities.ambient, vec!["CAP_KILL"]);
        assert!(c.capabilities.effective.is_empty());
        assert_eq!(
            c.rlimits,
            vec![RlimitPlan {
                kind: "RLIMIT_NOFILE".into(),
                soft: 64,
                hard: 128
            }]
        );
        assert_eq!(c.oom_score_adj, Some(1000));
        assert_eq!(c.masked_paths, vec![PathBuf::from("/proc/kcore")]);
        assert_eq!(c.readonly_paths, vec![PathBuf::from("/proc/sys")]);
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_with_the_reason() {
        let twice = from_spec(&spec(r#""namespaces":[{"type":"uts"},{"type":"uts"}]"#, ""))
            .unwrap_err()
            .to_string();
        assert!(twice.contains("twice"), "{twice}");
        let hostname = from_spec(&spec(r#""namespaces":[{"type":"ipc"}]"#, ""))
            .unwrap_err()
            .to_string();
        assert!(hostname.contains("without a uts namespace"), "{hostname}");
        let relative = from_spec(&spec(
            r#""namespaces":[{"type":"uts"},{"type":"ipc","path":"ns/ipc"}]"#,
            "",
        ))
        .unwrap_err()
        .to_string();
        assert!(relative.contains("must be absolute"), "{relative}");
        let propagation = from_spec(&spec(
            r#""namespaces":[{"type":"uts"}],"rootfsPropagation":"sideways""#,
            "",
        ))
        .unwrap_err()
        .to_string();
        assert!(propagation.contains("sideways"), "{propagation}");
    }

    #[test]
    fn a_user_namespace_comes_with_its_maps_and_devices_with_their_nodes() {
        let c = from_spec(&spec(
            r#""namespaces":[{"type":"user"},{"type":"uts"}],
               "uidMappings":[{"containerID":0,"hostID":100000,"size":65536}],
               "gidMappings":[{"containerID":0,"hostID":200000,"size":1000}],
               "devices":[{"path":"/dev/net/tun","type":"c","major":10,"minor":200,
                           "fileMode":8630,"uid":5,"gid":6},
                          {"path":"/dev/fifo","type":"p"}]"#,
            "",
        ))
        .unwrap();
        assert!(c.new_user_namespace());
        assert_eq!(
            c.uid_mappings,
            vec![IdMapping {
                container_id: 0,
                host_id: 100000,
                size: 65536
            }]
        );
        assert_eq!(c.gid_mappings[0].host_id, 200000);
        assert_eq!(
            c.devices[0],
            DevicePlan {
                path: "/dev/net/tun".into(),
                kind: DeviceKind::Char,
                major: 10,
                minor: 200,
                // 8630 is 0o20666: the type bits some specs carry are dropped.
                mode: 0o666,
                uid: 5,
                gid: 6
            }
        );
        assert_eq!(
            (c.devices[1].kind, c.devices[1].mode),
            (DeviceKind::Fifo, 0o666)
        );
        let by_path = from_spec(&spec(
            r#""namespaces":[{"type":"user","path":"/proc/9/ns/user"},{"type":"uts"}]"#,
            "",
        ))
        .unwrap();
        assert!(!by_path.new_user_namespace());
        assert!(by_path.has_namespace(NamespaceKind::User));
    }

    #[test]
    fn maps_and_devices_the_runtime_cannot_honour_are_refused() {
        let refused = |linux: &str| from_spec(&spec(linux, "")).unwrap_err().to_string();
        let no_maps = refused(r#""namespaces":[{"type":"user"},{"type":"uts"}]"#);
        assert!(no_maps.contains("give both"), "{no_maps}");
        let no_root = refused(
            r#""namespaces":[{"type":"user"},{"type":"uts"}],
               "uidMappings":[{"containerID":1000,"hostID":100000,"size":1}],
               "gidMappings":[{"containerID":0,"hostID":100000,"size":1}]"#,
        );
        assert!(no_root.contains("must map container id 0"), "{no_root}");
        let no_userns = refused(
            r#""namespaces":[{"type":"uts"}],
               "uidMappings":[{"containerID":0,"hostID":100000,"size":1}]"#,
        );
        assert!(
            no_userns.contains("without a user namespace"),
            "{no_userns}"
        );
        let outside = refused(
            r#""namespaces":[{"type":"uts"}],"devices":[{"path":"/etc/null","type":"c","major":1,"minor":3}]"#,
        );
        assert!(outside.contains("below /dev/"), "{outside}");
        let climbing = refused(
            r#""namespaces":[{"type":"uts"}],"devices":[{"path":"/dev/../etc/x","type":"c","major":1,"minor":3}]"#,
        );
        assert!(climbing.contains("below /dev/"), "{climbing}");
        let all =
            refused(r#""namespaces":[{"type":"uts"}],"devices":[{"path":"/dev/x","type":"a"}]"#);
        assert!(all.contains("type \"a\""), "{all}");
        let time = refused(r#""namespaces":[{"type":"time"},{"type":"uts"}]"#);
        assert!(time.contains("time namespace"), "{time}");
    }
}
