//! From the bundle's OCI spec to a [`RunPlan`]: what the guest process needs to run the module.
//!
//! Everything here is decided in the shim, before any guest process exists, so that a bad
//! config.json or a bad entrypoint fails `Create` with a message `ctr` and the kubelet show.
//! Paths inside the container are resolved by [`crate::rootfs`], never by the host's resolver.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{Mount, Spec};
use serde::{Deserialize, Serialize};

use crate::confine::{self, Confinement};
use crate::error::{Error, Result};
use crate::rootfs;

/// Used when the spec has no PATH, as runc's default spec and containerd's `oci` package do.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The first bytes of every WebAssembly binary module.
pub const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// What a guest process is asked to do: handed from the shim to the guest as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPlan {
    /// The container id, for log lines.
    pub id: String,
    /// Host path of the mounted container root filesystem.
    pub rootfs: PathBuf,
    /// `root.readonly` from the spec.
    pub readonly_root: bool,
    /// The module, as a path inside the container (symlinks resolved).
    pub module: PathBuf,
    /// argv exactly as the spec gives it (argv[0] included).
    pub args: Vec<String>,
    /// The environment exactly as the spec gives it, split on the first `=`.
    pub env: Vec<(String, String)>,
    /// `process.cwd`, a path inside the container.
    pub cwd: PathBuf,
    /// The spec's mounts that the guest gets, in spec order.
    pub mounts: Vec<MountPlan>,
    /// Namespaces, identity, capabilities, rlimits, seccomp, masked paths.
    pub confinement: Confinement,
    /// `linux.resources.memory.limit` in bytes, if the spec sets one: the guest's linear
    /// memory is capped below it.
    #[serde(default)]
    pub memory_limit: Option<u64>,
    /// Which cache descriptors the shim hands the guest (set by the shim at spawn).
    #[serde(default)]
    pub cache: CacheUse,
    /// Hex sha256 of the module's bytes in the sealed memfd (set by the shim, which hashed
    /// them as it copied them): the guest names its module by it and never hashes again.
    #[serde(default)]
    pub module_digest: String,
    /// The guest stops before it reports ready (tests of the ready timeout; see
    /// [`HANG_BEFORE_READY_ANNOTATION`]).
    #[serde(default)]
    pub hang_before_ready: bool,
}

/// An annotation that makes the guest hang before its ready handshake, for the tests of the
/// shim's ready timeout. Honoured by debug builds (what the tests run) only: a release build
/// ignores it.
pub const HANG_BEFORE_READY_ANNOTATION: &str = "io.containerd.wasm.test/hang-before-ready";

/// The guest's part in the compiled-module cache (see `engine::cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CacheUse {
    /// The shim opened an entry for the module's digest.
    pub entry: bool,
    /// The shim reads back an artifact the guest compiles.
    pub store: bool,
}

/// One mount of the spec, as the guest process performs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    /// Path inside the container.
    pub destination: PathBuf,
    pub kind: MountKind,
    pub readonly: bool,
    /// The other per-mount options of the spec.
    pub attrs: MountAttrs,
}

/// Mount attributes. Binds and tmpfs mounts are `nosuid,nodev` unless the spec's options
/// say `suid` or `dev`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MountAttrs {
    pub readonly: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
    /// `private`, `rslave`, `shared`, ... as the spec spells it.
    pub propagation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A bind mount of a host file or directory.
    Bind { source: PathBuf, recursive: bool },
    /// A fresh tmpfs with the spec's data options (size, mode).
    Tmpfs { data: String },
    /// A tmpfs `/dev` with the devices runc creates by default (null, zero, full, random, urandom, tty).
    Dev,
}

/// Kernel filesystems that a WASI guest has no interface to use. Skipping them also keeps
/// host information (/proc, /sys) out of the guest's view; see the README's "Filesystem".
const SKIPPED_MOUNT_TYPES: &[&str] = &["proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"];

/// Reads `config.json` from the bundle, with an error that says what is wrong with it.
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    Spec::load(&path).map_err(|e| {
        Error::InvalidArgument(format!(
            "cannot read the OCI spec {}: {e}; the bundle's config.json must be a valid OCI runtime spec",
            path.display()
        ))
    })
}

/// The host path of the container's root filesystem: `root.path`, relative to the bundle.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("the OCI spec has no root".into()))?;
    Ok(bundle.join(root.path()))
}

/// How a container runs: a wasm module in a guest process of this shim, or a native program
/// (an ELF entrypoint: a pod's pause sandbox, a sidecar) under runc (see `native`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Wasm(Box<RunPlan>),
    Native { entrypoint: PathBuf },
}

/// The entrypoint `process.args[0]` resolved to, by what the file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entrypoint {
    Wasm(PathBuf),
    Native(PathBuf),
}

/// Builds the plan for the container's init process from its spec.
pub fn plan(id: &str, spec: &Spec, rootfs: &Path) -> Result<Plan> {
    let invocation = match Invocation::resolved(init_process(spec)?, "process.cwd", rootfs)? {
        Ok(invocation) => invocation,
        Err(entrypoint) => return Ok(Plan::Native { entrypoint }),
    };
    wasm_plan(id, spec, rootfs, invocation).map(|p| Plan::Wasm(Box::new(p)))
}

/// The plan of a container whose module is its image's wasm layer (see `artifact`), not a
/// file of the rootfs: `process.args[0]` is then only the guest's argv[0].
pub fn artifact_plan(id: &str, spec: &Spec, rootfs: &Path) -> Result<RunPlan> {
    let invocation = Invocation::of_artifact(init_process(spec)?, "process.cwd")?;
    wasm_plan(id, spec, rootfs, invocation)
}

fn init_process(spec: &Spec) -> Result<&oci_spec::runtime::Process> {
    spec.process()
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("the OCI spec has no process".into()))
}

/// The plan of a process exec'd into the running container whose init is `init_pid`: the
/// exec's own process (args, env, cwd, user, capabilities, terminal) with the container's
/// namespaces joined (see `confine::for_exec`).
pub fn exec_plan(
    id: &str,
    spec: &Spec,
    process: &oci_spec::runtime::Process,
    rootfs: &Path,
    init_pid: i32,
) -> Result<Plan> {
    let invocation = match Invocation::resolved(process, "the exec's cwd", rootfs)? {
        Ok(invocation) => invocation,
        Err(entrypoint) => return Ok(Plan::Native { entrypoint }),
    };
    exec_wasm_plan(id, spec, process, rootfs, init_pid, invocation).map(|p| Plan::Wasm(Box::new(p)))
}

/// The plan of an exec into a container whose module is its image's wasm layer, when the
/// exec's `args[0]` names no file of the rootfs: the exec runs that module too.
pub fn artifact_exec_plan(
    id: &str,
    spec: &Spec,
    process: &oci_spec::runtime::Process,
    rootfs: &Path,
    init_pid: i32,
) -> Result<RunPlan> {
    let invocation = Invocation::of_artifact(process, "the exec's cwd")?;
    exec_wasm_plan(id, spec, process, rootfs, init_pid, invocation)
}

fn exec_wasm_plan(
    id: &str,
    spec: &Spec,
    process: &oci_spec::runtime::Process,
    rootfs: &Path,
    init_pid: i32,
    invocation: Invocation,
) -> Result<RunPlan> {
    let mut plan = wasm_plan(id, spec, rootfs, invocation)?;
    plan.mounts.clear();
    plan.confinement = confine::for_exec(spec, process, init_pid)?;
    Ok(plan)
}

/// What a wasm guest runs: the module (a path in the container), argv, env and cwd.
struct Invocation {
    module: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

impl Invocation {
    /// `process` with its module resolved in the rootfs as runc resolves `args[0]`; a native
    /// program's path in `Err` (it runs under runc). `cwd_name` names the cwd in messages.
    fn resolved(
        process: &oci_spec::runtime::Process,
        cwd_name: &str,
        rootfs: &Path,
    ) -> Result<std::result::Result<Invocation, PathBuf>> {
        let (args, env, cwd) = process_parts(process, cwd_name)?;
        Ok(match resolve_entrypoint(rootfs, &args, &env, &cwd)? {
            Entrypoint::Wasm(module) => Ok(Invocation {
                module,
                args,
                env,
                cwd,
            }),
            Entrypoint::Native(entrypoint) => Err(entrypoint),
        })
    }

    /// `process` running the image's wasm layer: `args[0]` is only its argv[0].
    fn of_artifact(process: &oci_spec::runtime::Process, cwd_name: &str) -> Result<Invocation> {
        let (args, env, cwd) = process_parts(process, cwd_name)?;
        let module = PathBuf::from(args.first().filter(|a| !a.is_empty()).ok_or_else(|| {
            Error::InvalidArgument(
                "process.args is empty: a wasm artifact's container needs a command (its first argument is the module's argv[0])".into(),
            )
        })?);
        Ok(Invocation {
            module,
            args,
            env,
            cwd,
        })
    }
}

/// `process.args`, the parsed `process.env` and `process.cwd`.
type ProcessParts = (Vec<String>, Vec<(String, String)>, PathBuf);

/// A process's args, parsed env and cwd (checked to be absolute; `cwd_name` names it).
fn process_parts(process: &oci_spec::runtime::Process, cwd_name: &str) -> Result<ProcessParts> {
    let args = process.args().clone().unwrap_or_default();
    let env = parse_env(process.env().as_deref().unwrap_or_default())?;
    let cwd = process.cwd().clone();
    if !cwd.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "{cwd_name} {} must be an absolute path",
            cwd.display()
        )));
    }
    Ok((args, env, cwd))
}

/// The plan for a wasm module, with the confinement and mounts the spec gives.
fn wasm_plan(id: &str, spec: &Spec, rootfs: &Path, invocation: Invocation) -> Result<RunPlan> {
    let Invocation {
        module,
        args,
        env,
        cwd,
    } = invocation;
    let readonly_root = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let mounts = plan_mounts(spec.mounts().as_deref().unwrap_or_default())?;
    let confinement = confine::from_spec(spec)?;
    if !confinement.devices.is_empty() && !mounts.iter().any(|m| m.kind == MountKind::Dev) {
        return Err(Error::InvalidArgument(
            "linux.devices needs a tmpfs mount at /dev to hold them; add one to mounts".into(),
        ));
    }
    Ok(RunPlan {
        id: id.to_string(),
        rootfs: rootfs.to_path_buf(),
        readonly_root,
        module,
        args,
        env,
        cwd,
        mounts,
        confinement,
        memory_limit: spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .and_then(|l| u64::try_from(l).ok())
            .filter(|l| *l > 0),
        cache: CacheUse::default(),
        module_digest: String::new(),
        hang_before_ready: cfg!(debug_assertions)
            && spec
                .annotations()
                .as_ref()
                .and_then(|a| a.get(HANG_BEFORE_READY_ANNOTATION))
                .is_some_and(|v| v == "true"),
    })
}

/// Splits OCI `K=V` strings on the first `=`; an entry without `=` is a broken spec.
pub fn parse_env(env: &[String]) -> Result<Vec<(String, String)>> {
    env.iter()
        .map(|entry| match entry.split_once('=') {
            Some(("", _)) => Err(Error::InvalidArgument(format!(
                "process.env entry {entry:?} has an empty name"
            ))),
            Some((key, value)) => Ok((key.to_string(), value.to_string())),
            None => Err(Error::InvalidArgument(format!(
                "process.env entry {entry:?} is not of the form NAME=VALUE"
            ))),
        })
        .collect()
}

/// Resolves `process.args[0]` inside the container as runc does, and tells a wasm module from
/// a native (ELF) program.
///
/// An absolute path is taken from the container root, a relative path with a `/` from
/// `process.cwd`, and a bare name is looked up on the spec's PATH. Returns the entrypoint's
/// path inside the container with symlinks resolved.
pub fn resolve_entrypoint(
    rootfs: &Path,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
) -> Result<Entrypoint> {
    let entry = args.first().filter(|a| !a.is_empty()).ok_or_else(|| {
        Error::InvalidArgument(
            "process.args is empty: the first argument must name the .wasm module to run".into(),
        )
    })?;
    let candidates = entrypoint_candidates(entry, env, cwd);
    let mut last_err = None;
    for candidate in &candidates {
        match check_module(rootfs, candidate) {
            Ok(resolved) => return Ok(resolved),
            Err(EntryError::Missing) if candidates.len() > 1 => continue,
            Err(e) => {
                last_err = Some(e);
                break;
            }
        }
    }
    Err(match last_err {
        Some(e) => e.into_error(entry, candidates.last().map(PathBuf::as_path)),
        None => Error::InvalidArgument(format!(
            "entrypoint {entry:?} not found: no file of that name in any directory of the container's PATH ({})",
            path_var(env)
        )),
    })
}

/// The container paths where `entry` may be, in lookup order.
fn entrypoint_candidates(entry: &str, env: &[(String, String)], cwd: &Path) -> Vec<PathBuf> {
    if entry.starts_with('/') {
        vec![PathBuf::from(entry)]
    } else if entry.contains('/') {
        vec![cwd.join(entry)]
    } else {
        path_var(env)
            .split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| Path::new(dir).join(entry))
            .map(|p| if p.is_absolute() { p } else { cwd.join(p) })
            .collect()
    }
}

fn path_var(env: &[(String, String)]) -> &str {
    env.iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH)
}

/// Why a candidate entrypoint is not a runnable module.
#[derive(Debug)]
enum EntryError {
    Missing,
    NotAFile,
    NotWasm(&'static str),
    Unreadable(std::io::Error),
}

impl EntryError {
    fn into_error(self, entry: &str, path: Option<&Path>) -> Error {
        let at = match path {
            Some(p) if p.as_os_str() != entry => format!("entrypoint {entry:?} ({})", p.display()),
            _ => format!("entrypoint {entry:?}"),
        };
        let why = match self {
            EntryError::Missing => "does not exist in the container's root filesystem".to_string(),
            EntryError::NotAFile => "is not a regular file".to_string(),
            EntryError::NotWasm(kind) => format!(
                "is neither a WebAssembly module nor a native executable ({kind}); give the .wasm module (or an ELF program) as process.args[0]"
            ),
            EntryError::Unreadable(e) => format!("cannot be read: {e}"),
        };
        Error::InvalidArgument(format!("{at} {why}"))
    }
}

/// Checks one candidate: resolves it inside the root and reads its magic number.
fn check_module(rootfs: &Path, candidate: &Path) -> Result<Entrypoint, EntryError> {
    let resolved = rootfs::resolve(rootfs, candidate).map_err(EntryError::Unreadable)?;
    let host = rootfs::host_path(rootfs, &resolved);
    let meta = match std::fs::symlink_metadata(&host) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(EntryError::Missing),
        Err(e) => return Err(EntryError::Unreadable(e)),
    };
    if !meta.is_file() {
        return Err(EntryError::NotAFile);
    }
    let mut magic = [0u8; 4];
    let n = read_prefix(&host, &mut magic).map_err(EntryError::Unreadable)?;
    match &magic[..n] {
        p if p == WASM_MAGIC => Ok(Entrypoint::Wasm(resolved)),
        ELF_MAGIC => Ok(Entrypoint::Native(resolved)),
        other => Err(EntryError::NotWasm(classify(other))),
    }
}

/// The first bytes of an ELF executable.
const ELF_MAGIC: &[u8] = &[0x7f, b'E', b'L', b'F'];

fn read_prefix(path: &Path, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// What a file that is neither wasm nor ELF is, in a few words.
fn classify(prefix: &[u8]) -> &'static str {
    match prefix {
        [b'#', b'!', ..] => "it is a script",
        [] => "it is empty",
        p if p.iter().all(|b| b.is_ascii()) => "it is a text file",
        _ => "unknown file type",
    }
}

/// Turns the spec's mounts into the ones the guest performs, refusing what it cannot honour.
fn plan_mounts(mounts: &[Mount]) -> Result<Vec<MountPlan>> {
    let mut planned = Vec::new();
    for mount in mounts {
        if let Some(plan) = plan_mount(mount)? {
            planned.push(plan);
        }
    }
    Ok(planned)
}

fn plan_mount(mount: &Mount) -> Result<Option<MountPlan>> {
    let destination = clean_destination(mount.destination())?;
    if mount.uid_mappings().is_some() || mount.gid_mappings().is_some() {
        return Err(Error::InvalidArgument(format!(
            "mount at {} asks for an idmapped mount (uidMappings/gidMappings), which the wasm runtime does not support; drop the mappings",
            destination.display()
        )));
    }
    let options = mount.options().as_deref().unwrap_or_default();
    let has = |o: &str| options.iter().any(|x| x == o);
    let typ = mount.typ().as_deref().unwrap_or("");
    let readonly = has("ro");
    let kind = if typ == "bind" || has("bind") || has("rbind") {
        let source = mount.source().clone().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "bind mount at {} has no source",
                destination.display()
            ))
        })?;
        MountKind::Bind {
            source,
            recursive: has("rbind"),
        }
    } else if typ == "tmpfs" && destination == Path::new("/dev") {
        MountKind::Dev
    } else if typ == "tmpfs" {
        MountKind::Tmpfs {
            data: tmpfs_data(options),
        }
    } else if SKIPPED_MOUNT_TYPES.contains(&typ) {
        return Ok(None);
    } else {
        return Err(Error::InvalidArgument(format!(
            "mount at {} has type {typ:?}, which the wasm runtime does not support (bind and tmpfs are)",
            destination.display()
        )));
    };
    let propagation = options
        .iter()
        .find(|o| crate::guest::mounts::propagation_flags(o).is_some())
        .cloned();
    let attrs = MountAttrs {
        readonly,
        nosuid: !has("suid"),
        nodev: !has("dev"),
        noexec: has("noexec"),
        propagation,
    };
    Ok(Some(MountPlan {
        destination,
        kind,
        readonly,
        attrs,
    }))
}

/// Keeps the tmpfs options that are data (size, mode, nr_inodes), not mount flags.
fn tmpfs_data(options: &[String]) -> String {
    options
        .iter()
        .filter(|o| o.starts_with("size=") || o.starts_with("mode=") || o.starts_with("nr_"))
        .cloned()
        .collect::<Vec<_>>()
        .join(",")
}

/// A mount destination must be absolute and must not climb out with `..`.
fn clean_destination(dest: &Path) -> Result<PathBuf> {
    if !dest.is_absolute() || dest.components().any(|c| c == Component::ParentDir) {
        return Err(Error::InvalidArgument(format!(
            "mount destination {} must be an absolute path without '..'",
            dest.display()
        )));
    }
    Ok(dest.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("app/sub")).unwrap();
        fs::write(root.join("app/app.wasm"), b"\0asm\x01\0\0\0").unwrap();
        fs::write(root.join("bin/tool.wasm"), b"\0asm\x01\0\0\0").unwrap();
        fs::write(root.join("bin/native"), b"\x7fELF\x02\x01").unwrap();
        fs::write(root.join("notes.txt"), b"hello").unwrap();
        fs::write(root.join("empty.wasm"), b"").unwrap();
        symlink("/app/app.wasm", root.join("bin/link.wasm")).unwrap();
        symlink("../../../../../etc/passwd", root.join("escape.wasm")).unwrap();
        dir
    }

    fn args(a: &str) -> Vec<String> {
        vec![a.to_string(), "x".to_string()]
    }

    fn env(path: &str) -> Vec<(String, String)> {
        vec![("PATH".into(), path.into())]
    }

    /// The module's path, for an entrypoint that must be wasm.
    fn resolve(root: &Path, entry: &str, cwd: &str) -> Result<PathBuf> {
        match resolve_entrypoint(root, &args(entry), &env("/bin:/usr/bin"), Path::new(cwd))? {
            Entrypoint::Wasm(path) => Ok(path),
            Entrypoint::Native(path) => panic!("{} resolved as native", path.display()),
        }
    }

    fn message<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.expect_err("expected an error").to_string()
    }

    #[test]
    fn absolute_relative_and_bare_entrypoints_resolve_inside_the_root() {
        let dir = rootfs();
        let root = dir.path();
        assert_eq!(
            resolve(root, "/app/app.wasm", "/").unwrap(),
            Path::new("/app/app.wasm")
        );
        assert_eq!(
            resolve(root, "./app.wasm", "/app").unwrap(),
            Path::new("/app/app.wasm")
        );
        assert_eq!(
            resolve(root, "../app.wasm", "/app/sub").unwrap(),
            Path::new("/app/app.wasm")
        );
        assert_eq!(
            resolve(root, "tool.wasm", "/").unwrap(),
            Path::new("/bin/tool.wasm")
        );
        assert_eq!(
            resolve(root, "link.wasm", "/").unwrap(),
            Path::new("/app/app.wasm")
        );
    }

    #[test]
    fn bad_entrypoints_name_the_path_and_the_reason() {
        let dir = rootfs();
        let root = dir.path();
        let missing = message(resolve(root, "/nope.wasm", "/"));
        assert!(
            missing.contains("\"/nope.wasm\"") && missing.contains("does not exist"),
            "{missing}"
        );
        let directory = message(resolve(root, "/app", "/"));
        assert!(directory.contains("not a regular file"), "{directory}");
        let text = message(resolve(root, "/notes.txt", "/"));
        assert!(text.contains("text file"), "{text}");
        let empty = message(resolve(root, "/empty.wasm", "/"));
        assert!(empty.contains("empty"), "{empty}");
        let bare = message(resolve(root, "ghost.wasm", "/"));
        assert!(
            bare.contains("PATH") && bare.contains("/bin:/usr/bin"),
            "{bare}"
        );
        let none = message(resolve_entrypoint(root, &[], &[], Path::new("/")));
        assert!(none.contains("process.args is empty"), "{none}");
    }

    #[test]
    fn an_elf_entrypoint_is_native() {
        let dir = rootfs();
        let resolved =
            resolve_entrypoint(dir.path(), &args("native"), &env("/bin"), Path::new("/")).unwrap();
        assert_eq!(resolved, Entrypoint::Native(PathBuf::from("/bin/native")));
    }

    #[test]
    fn a_symlink_cannot_point_the_entrypoint_outside_the_root() {
        let dir = rootfs();
        // ../../etc/passwd from the root is /etc/passwd *inside* the root, which does not exist.
        let err = message(resolve(dir.path(), "/escape.wasm", "/"));
        assert!(err.contains("does not exist"), "{err}");
        assert!(
            !err.contains(dir.path().to_str().unwrap()),
            "host path leaked: {err}"
        );
    }

    #[test]
    fn env_splits_on_the_first_equals_sign() {
        let parsed = parse_env(&["A=1".into(), "B=x=y".into(), "C=".into()]).unwrap();
        assert_eq!(
            parsed,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x=y".into()),
                ("C".into(), String::new())
            ]
        );
        assert!(parse_env(&["NOEQUALS".into()])
            .unwrap_err()
            .to_string()
            .contains("NAME=VALUE"));
        assert!(parse_env(&["=v".into()]).is_err());
    }

    fn spec_json(extra_mounts: &str) -> Spec {
        let json = format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs","readonly":true}},
            "process":{{"user":{{"uid":0,"gid":0}},"args":["/app/app.wasm","a b","--flag"],"env":["PATH=/bin","K=V=W"],"cwd":"/app"}},
            "mounts":[{{"destination":"/proc","type":"proc","source":"proc"}},
                      {{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]}},
                      {{"destination":"/tmp","type":"tmpfs","source":"tmpfs","options":["size=1m"]}},
                      {{"destination":"/data","type":"bind","source":"/srv/data","options":["rbind","ro","rprivate"]}}
                      {extra_mounts}]}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    /// The plan of a wasm container.
    fn wasm(plan: Result<Plan>) -> Result<RunPlan> {
        plan.map(|p| match p {
            Plan::Wasm(plan) => *plan,
            Plan::Native { entrypoint } => panic!("{} is native", entrypoint.display()),
        })
    }

    #[test]
    fn the_plan_carries_argv_env_cwd_and_mounts_from_the_spec() {
        let dir = rootfs();
        let plan = wasm(plan("c1", &spec_json(""), dir.path())).unwrap();
        assert_eq!(plan.args, vec!["/app/app.wasm", "a b", "--flag"]);
        assert_eq!(plan.env[1], ("K".to_string(), "V=W".to_string()));
        assert_eq!(plan.cwd, Path::new("/app"));
        assert_eq!(plan.module, Path::new("/app/app.wasm"));
        assert!(plan.readonly_root);
        let dests: Vec<_> = plan.mounts.iter().map(|m| m.destination.clone()).collect();
        assert_eq!(
            dests,
            vec![PathBuf::from("/dev"), "/tmp".into(), "/data".into()]
        );
        assert_eq!(plan.mounts[0].kind, MountKind::Dev);
        assert_eq!(
            plan.mounts[1].kind,
            MountKind::Tmpfs {
                data: "size=1m".into()
            }
        );
        assert_eq!(
            plan.mounts[2],
            MountPlan {
                destination: "/data".into(),
                kind: MountKind::Bind {
                    source: "/srv/data".into(),
                    recursive: true
                },
                readonly: true,
                attrs: MountAttrs {
                    readonly: true,
                    nosuid: true,
                    nodev: true,
                    noexec: false,
                    propagation: Some("rprivate".into())
                }
            }
        );
    }

    #[test]
    fn unsupported_or_escaping_mounts_are_refused() {
        let dir = rootfs();
        let nfs = r#",{"destination":"/n","type":"nfs","source":"x"}"#;
        let err = wasm(plan("c", &spec_json(nfs), dir.path())).unwrap_err();
        assert!(err.to_string().contains("\"nfs\""), "{err}");
        let up = r#",{"destination":"/a/../../x","type":"bind","source":"/tmp"}"#;
        let err = wasm(plan("c", &spec_json(up), dir.path())).unwrap_err();
        assert!(err.to_string().contains("'..'"), "{err}");
    }
}
