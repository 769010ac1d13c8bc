//! `wasm-image`: packages a WebAssembly module as an OCI image-layout tarball that
//! `ctr images import` accepts, without Docker or a registry.
//!
//! The image has one uncompressed layer holding the module (plus any `--add`ed files and
//! `--symlink`s), a config whose Entrypoint runs the module, a manifest, and an `index.json`
//! naming the image. Everything is built in memory and is deterministic: sorted tar entries,
//! mtime 0, uid/gid 0 and fixed JSON field order, so the same inputs give the same digests.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process;

use serde::Serialize;
use sha2::{Digest, Sha256};

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
const WASM_MAGIC: &[u8] = b"\0asm";
const ELF_MAGIC: &[u8] = b"\x7fELF";

fn help_text() -> String {
    let host = Platform::host();
    format!(
        "\
wasm-image: package a WebAssembly (WASI) module as an OCI image tarball for
containerd-shim-wasm, without Docker or a registry.

USAGE:
    wasm-image build --module FILE -o OUT.tar --name REF [OPTIONS]
    wasm-image --help | --version

BUILD OPTIONS:
    -m, --module FILE         The module: a binary .wasm file (it must start with the
                              \\0asm magic) or a .wat text file, compiled to binary here.
    -o, --output OUT.tar      Where to write the image (an OCI image-layout tar). An
                              existing file is replaced only once the build succeeded.
        --name REF            The image name, used verbatim as the containerd image name,
                              e.g. docker.io/library/hello-wasm:latest. Its tag (latest if
                              it has none) is also recorded as the layout's ref name.
        --entrypoint PATH     Where the module is put in the image (mode 0755) and what the
                              image runs. Default: /<module file stem>.wasm.
        --arg A               An argument for the module (the image's Cmd). Repeat for more;
                              a value may start with '-', as in --arg --verbose.
        --env K=V             An environment variable (the image's Env). Repeat for more.
                              The image has no other environment variables.
        --workdir DIR         The working directory (absolute; the image's WorkingDir). It
                              is created in the layer (0755) unless the layer already has
                              it or something on its way is not a directory.
        --add SRC:DEST        Copy the host file or directory SRC to DEST in the image (split
                              at the last ':'). A directory is copied recursively, keeping
                              file modes and keeping symlinks inside it as symlinks; SRC
                              itself is followed if it is a symlink. A DEST ending in '/'
                              receives a file under its own name. Repeatable.
        --symlink LINK:TARGET Add a symlink at LINK whose target is TARGET, written verbatim
                              (split at the first ':'), e.g. /data:/mnt/data or
                              /up:../../etc. Repeatable.
        --device PATH:TYPE:MAJOR:MINOR
                              Add a device node at PATH (TYPE c for a character device, b
                              for a block device), mode 0666, as a hostile or careless image
                              may carry one; e.g. /dev-null:c:1:3. Repeatable.
        --native              The module is a native executable of this host (an ELF), packed
                              as it is, for the native containers of a wasm pod: a pause
                              sandbox, a sidecar. Needs --entrypoint.
        --platform OS/ARCH[/VARIANT]
                              The image's platform. Default: this host's, {host},
                              which a plain `ctr images import` accepts. wasi/wasm is
                              allowed too but needs `ctr images import --all-platforms`.
    -h, --help                Show this help.
    -V, --version             Show the version.
    Every option also accepts the --option=VALUE form.

Paths in the image are relative to its root; a leading '/' is optional and '..' is
refused. Parent directories are created with mode 0755. The image has one uncompressed
tar layer; the build is deterministic (sorted entries, mtime 0, uid/gid 0), so the
same inputs give the same digests.

IMPORTING AND RUNNING:
    ctr -n default images import OUT.tar
    ctr -n default images import --all-platforms OUT.tar    (for --platform wasi/wasm)
    ctr -n default run --rm --runtime io.containerd.wasm.v1 REF my-container

EXIT STATUS:
    0 on success, 1 if the build failed, 2 for a usage error.
"
    )
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Debug, thiserror::Error)]
enum Error {
    /// A bad command line: exit status 2.
    #[error("{0} (see wasm-image --help)")]
    Usage(String),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Inputs that exist but cannot be turned into an image.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Io { .. } | Error::Invalid(_) => 1,
        }
    }
}

fn usage(message: impl Into<String>) -> Error {
    Error::Usage(message.into())
}

/// `map_err` adapter that names the path an io error is about.
fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Command line

#[derive(Debug)]
enum Command {
    Help,
    Version,
    Build(Box<BuildOptions>),
}

#[derive(Debug, Clone, PartialEq)]
struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    /// The platform containerd calls this host, so a default import needs no extra flags.
    fn host() -> Platform {
        // containerd uses Go's GOARCH names, not Rust's.
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: None,
        }
    }

    fn parse(raw: &str) -> Result<Platform, Error> {
        let parts: Vec<&str> = raw.split('/').collect();
        let bad = || {
            usage(format!("--platform `{raw}` is not OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64 or wasi/wasm"))
        };
        if parts.iter().any(|part| part.is_empty()) {
            return Err(bad());
        }
        match parts[..] {
            [os, arch] => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] => Ok(Platform::new(os, arch, Some(variant))),
            _ => Err(bad()),
        }
    }

    fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

/// A validated `build` command line. Image paths are normalised: relative to the image
/// root, without `.` or empty components (`""` is the root itself).
#[derive(Debug)]
struct BuildOptions {
    module: PathBuf,
    output: PathBuf,
    name: String,
    entrypoint: String,
    args: Vec<String>,
    env: Vec<String>,
    workdir: Option<String>,
    adds: Vec<AddSpec>,
    symlinks: Vec<SymlinkSpec>,
    devices: Vec<DeviceSpec>,
    platform: Platform,
    /// The module is a native executable (see `--native`).
    native: bool,
}

#[derive(Debug)]
struct DeviceSpec {
    path: String,
    block: bool,
    major: u32,
    minor: u32,
    origin: String,
}

#[derive(Debug)]
struct AddSpec {
    src: PathBuf,
    dest: String,
    /// DEST ended in '/' (or is the root): a file goes inside it under its own name.
    into_dir: bool,
    /// The option as given, for error messages.
    origin: String,
}

#[derive(Debug)]
struct SymlinkSpec {
    link: String,
    target: String,
    origin: String,
}

/// The raw values of `build`'s options, before validation.
#[derive(Default)]
struct RawBuild {
    module: Option<String>,
    output: Option<String>,
    name: Option<String>,
    entrypoint: Option<String>,
    args: Vec<String>,
    env: Vec<String>,
    workdir: Option<String>,
    adds: Vec<String>,
    symlinks: Vec<String>,
    devices: Vec<String>,
    platform: Option<String>,
    native: bool,
}

fn parse_args(args: &[String]) -> Result<Command, Error> {
    let Some(first) = args.first() else {
        return Err(usage(
            "no command given; use `wasm-image build --module FILE -o OUT.tar --name REF`",
        ));
    };
    match first.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "-V" | "--version" => Ok(Command::Version),
        "build" => parse_build(&args[1..]),
        other => Err(usage(format!(
            "unknown command `{other}`; the only command is `build`"
        ))),
    }
}

/// Every option of `build`; each takes a value.
const BUILD_FLAGS: &[&str] = &[
    "-m",
    "--module",
    "-o",
    "--output",
    "--name",
    "--entrypoint",
    "--workdir",
    "--platform",
    "--arg",
    "--env",
    "--add",
    "--symlink",
    "--device",
];

fn parse_build(args: &[String]) -> Result<Command, Error> {
    let mut raw = RawBuild::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        if !arg.starts_with('-') {
            return Err(usage(format!(
                "unexpected argument `{arg}`; pass module arguments with --arg"
            )));
        }
        if arg == "--native" {
            raw.native = true;
            continue;
        }
        // Both `--flag VALUE` and `--flag=VALUE`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        if !BUILD_FLAGS.contains(&flag) {
            return Err(usage(format!("unknown option `{flag}`")));
        }
        let value = match inline {
            Some(value) => value,
            None => rest
                .next()
                .cloned()
                .ok_or_else(|| usage(format!("{flag} needs a value")))?,
        };
        match flag {
            "-m" | "--module" => set_once(&mut raw.module, flag, value)?,
            "-o" | "--output" => set_once(&mut raw.output, flag, value)?,
            "--name" => set_once(&mut raw.name, flag, value)?,
            "--entrypoint" => set_once(&mut raw.entrypoint, flag, value)?,
            "--workdir" => set_once(&mut raw.workdir, flag, value)?,
            "--platform" => set_once(&mut raw.platform, flag, value)?,
            "--arg" => raw.args.push(value),
            "--env" => raw.env.push(value),
            "--add" => raw.adds.push(value),
            "--symlink" => raw.symlinks.push(value),
            "--device" => raw.devices.push(value),
            _ => unreachable!("{flag} is in BUILD_FLAGS but not handled"),
        }
    }
    validate_build(raw).map(|opts| Command::Build(Box::new(opts)))
}

fn set_once(slot: &mut Option<String>, flag: &str, value: String) -> Result<(), Error> {
    if slot.is_some() {
        return Err(usage(format!(
            "{flag} is given more than once; give it once"
        )));
    }
    *slot = Some(value);
    Ok(())
}

fn validate_build(raw: RawBuild) -> Result<BuildOptions, Error> {
    let module = PathBuf::from(required(raw.module, "--module FILE")?);
    let output = PathBuf::from(required(raw.output, "-o OUT.tar")?);
    let name = validate_name(required(raw.name, "--name REF")?)?;
    let entrypoint = match raw.entrypoint {
        Some(path) => non_root_image_path(&path, "--entrypoint")?,
        None if raw.native => {
            return Err(usage(
                "--native needs --entrypoint PATH: a native program has no .wasm name to derive it from",
            ))
        }
        None => default_entrypoint(&module)?,
    };
    let workdir = raw.workdir.map(|dir| validate_workdir(&dir)).transpose()?;
    for var in &raw.env {
        validate_env(var)?;
    }
    let adds = raw
        .adds
        .iter()
        .map(|spec| parse_add(spec))
        .collect::<Result<_, _>>()?;
    let symlinks = raw
        .symlinks
        .iter()
        .map(|spec| parse_symlink(spec))
        .collect::<Result<_, _>>()?;
    let devices = raw
        .devices
        .iter()
        .map(|spec| parse_device(spec))
        .collect::<Result<_, _>>()?;
    let platform = match raw.platform {
        Some(platform) => Platform::parse(&platform)?,
        None => Platform::host(),
    };
    Ok(BuildOptions {
        module,
        output,
        name,
        entrypoint,
        args: raw.args,
        env: raw.env,
        workdir,
        adds,
        symlinks,
        devices,
        platform,
        native: raw.native,
    })
}

fn required(value: Option<String>, what: &str) -> Result<String, Error> {
    value.ok_or_else(|| usage(format!("missing {what}")))
}

fn validate_name(name: String) -> Result<String, Error> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(usage(format!(
            "--name `{name}` is not an image name; use e.g. docker.io/library/hello-wasm:latest"
        )));
    }
    Ok(name)
}

fn default_entrypoint(module: &Path) -> Result<String, Error> {
    let stem = module
        .file_stem()
        .and_then(|stem| stem.to_str())
        .filter(|stem| !stem.is_empty());
    match stem {
        Some(stem) => non_root_image_path(&format!("{stem}.wasm"), "--entrypoint"),
        None => Err(usage(format!(
            "cannot derive the entrypoint from the module name {}; pass --entrypoint PATH",
            module.display()
        ))),
    }
}

fn validate_workdir(dir: &str) -> Result<String, Error> {
    if !dir.starts_with('/') {
        return Err(usage(format!(
            "--workdir `{dir}` is not absolute; give a path such as /data"
        )));
    }
    image_path(dir, "--workdir")?;
    Ok(dir.to_string())
}

fn validate_env(var: &str) -> Result<(), Error> {
    match var.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(()),
        _ => Err(usage(format!("--env `{var}` is not KEY=VALUE"))),
    }
}

fn parse_add(spec: &str) -> Result<AddSpec, Error> {
    // Split at the last ':' because a host path is the likelier of the two to contain one.
    let origin = format!("--add {spec}");
    let (src, dest) = spec
        .rsplit_once(':')
        .filter(|(src, dest)| !src.is_empty() && !dest.is_empty())
        .ok_or_else(|| {
            usage(format!(
                "--add `{spec}` is not SRC:DEST, e.g. ./static:/static"
            ))
        })?;
    Ok(AddSpec {
        src: PathBuf::from(src),
        dest: image_path(dest, "--add destination")?,
        into_dir: dest.ends_with('/'),
        origin,
    })
}

fn parse_symlink(spec: &str) -> Result<SymlinkSpec, Error> {
    // Split at the first ':' so the target, written verbatim, may contain ':'.
    let (link, target) = spec
        .split_once(':')
        .filter(|(link, target)| !link.is_empty() && !target.is_empty())
        .ok_or_else(|| {
            usage(format!(
                "--symlink `{spec}` is not LINK:TARGET, e.g. /data:/mnt/data"
            ))
        })?;
    Ok(SymlinkSpec {
        link: non_root_image_path(link, "--symlink")?,
        target: target.to_string(),
        origin: format!("--symlink {spec}"),
    })
}

fn parse_device(spec: &str) -> Result<DeviceSpec, Error> {
    let bad = || {
        usage(format!(
            "--device `{spec}` is not PATH:TYPE:MAJOR:MINOR with TYPE c or b, e.g. /dev-null:c:1:3"
        ))
    };
    let mut parts = spec.rsplitn(4, ':');
    let (minor, major, kind, path) = (
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
    );
    let block = match kind {
        "b" => true,
        "c" => false,
        _ => return Err(bad()),
    };
    Ok(DeviceSpec {
        path: non_root_image_path(path, "--device")?,
        block,
        major: major.parse().map_err(|_| bad())?,
        minor: minor.parse().map_err(|_| bad())?,
        origin: format!("--device {spec}"),
    })
}

/// Normalises a path inside the image to `a/b` form (the root is `""`). `..` is refused:
/// it could only point outside the layer, and tar writers reject it anyway.
fn image_path(raw: &str, what: &str) -> Result<String, Error> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(usage(format!(
                    "{what} `{raw}` contains `..`; give a path inside the image such as /app/x"
                )))
            }
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

fn non_root_image_path(raw: &str, what: &str) -> Result<String, Error> {
    let path = image_path(raw, what)?;
    if path.is_empty() {
        return Err(usage(format!(
            "{what} `{raw}` names the image root; name a file such as /app.wasm"
        )));
    }
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// The module

fn load_module(path: &Path, native: bool) -> Result<Vec<u8>, Error> {
    let bytes = fs::read(path).map_err(io_err("cannot read module", path))?;
    if native {
        return if bytes.starts_with(ELF_MAGIC) {
            Ok(bytes)
        } else {
            Err(Error::Invalid(format!(
                "{} is not an ELF executable, which --native packs",
                path.display()
            )))
        };
    }
    if bytes.starts_with(WASM_MAGIC) {
        return Ok(bytes);
    }
    if has_extension(path, "wat") {
        return compile_wat(path, &bytes);
    }
    Err(Error::Invalid(format!(
        "{} is not a WebAssembly module: a binary module starts with \\0asm, and a text module needs the .wat extension",
        path.display()
    )))
}

fn has_extension(path: &Path, wanted: &str) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| ext.eq_ignore_ascii_case(wanted))
}

fn compile_wat(path: &Path, text: &[u8]) -> Result<Vec<u8>, Error> {
    wat::Parser::new()
        .parse_bytes(Some(path), text)
        .map(|binary| binary.into_owned())
        .map_err(|err| {
            Error::Invalid(format!(
                "cannot compile {}: {}",
                path.display(),
                one_line(&err.to_string())
            ))
        })
}

/// wat renders errors as a message, a `--> file:line:col` line and a source excerpt;
/// keep the message and the location so the error stays on one line.
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim);
    let message = lines.next().unwrap_or_default().to_string();
    match lines.find_map(|line| line.strip_prefix("--> ")) {
        Some(location) => format!("{message} at {location}"),
        None => message,
    }
}

// ---------------------------------------------------------------------------------------------
// File trees and their tar form (used for both the layer and the outer layout tarball)

#[derive(Debug)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    Device { block: bool, major: u32, minor: u32 },
}

#[derive(Debug)]
struct Entry {
    node: Node,
    /// What put the entry there, to explain conflicts.
    origin: String,
}

/// Entries keyed by normalised path. A BTreeMap gives the sorted, deterministic order, and
/// a parent always sorts before its children because a prefix sorts first.
#[derive(Debug, Default)]
struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    fn add_dir(&mut self, path: &str, mode: u32, origin: &str) -> Result<(), Error> {
        if path.is_empty() {
            return Ok(()); // the root has no entry of its own
        }
        self.insert(path, Node::Dir { mode }, origin)
    }

    fn add_file(
        &mut self,
        path: &str,
        mode: u32,
        data: Vec<u8>,
        origin: &str,
    ) -> Result<(), Error> {
        self.insert(path, Node::File { mode, data }, origin)
    }

    fn add_device(&mut self, device: &DeviceSpec) -> Result<(), Error> {
        let node = Node::Device {
            block: device.block,
            major: device.major,
            minor: device.minor,
        };
        self.insert(&device.path, node, &device.origin)
    }

    fn add_symlink(&mut self, path: &str, target: String, origin: &str) -> Result<(), Error> {
        self.insert(path, Node::Symlink { target }, origin)
    }

    /// Adds a 0755 directory unless the path exists or lies under a non-directory, where
    /// the user has arranged things deliberately (e.g. a workdir under a symlink).
    fn ensure_dir(&mut self, path: &str, origin: &str) -> Result<(), Error> {
        let blocked = ancestors_and_self(path).any(|p| {
            self.entries
                .get(p)
                .is_some_and(|entry| !matches!(entry.node, Node::Dir { .. }))
        });
        if blocked || path.is_empty() || self.entries.contains_key(path) {
            return Ok(());
        }
        self.add_dir(path, 0o755, origin)
    }

    fn insert(&mut self, path: &str, node: Node, origin: &str) -> Result<(), Error> {
        self.add_parents(path, origin)?;
        let new = Entry {
            node,
            origin: origin.to_string(),
        };
        match self.entries.get_mut(path) {
            None => {
                self.entries.insert(path.to_string(), new);
                Ok(())
            }
            // Directories merge (two --add into one place); the later mode wins.
            Some(old) if matches!((&old.node, &new.node), (Node::Dir { .. }, Node::Dir { .. })) => {
                *old = new;
                Ok(())
            }
            Some(old) => Err(Error::Invalid(format!(
                "/{path} is put in the image twice, by {} and by {origin}; drop or move one of them",
                old.origin
            ))),
        }
    }

    fn add_parents(&mut self, path: &str, origin: &str) -> Result<(), Error> {
        for (end, _) in path.match_indices('/') {
            let parent = &path[..end];
            match self.entries.get(parent) {
                None => {
                    let dir = Entry {
                        node: Node::Dir { mode: 0o755 },
                        origin: origin.to_string(),
                    };
                    self.entries.insert(parent.to_string(), dir);
                }
                Some(Entry {
                    node: Node::Dir { .. }, ..
                }) => {}
                Some(other) => {
                    return Err(Error::Invalid(format!(
                        "cannot put /{path} ({origin}) in the image: /{parent} is not a directory but comes from {}",
                        other.origin
                    )))
                }
            }
        }
        Ok(())
    }

    fn to_tar(&self) -> Result<Vec<u8>, Error> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            append_entry(&mut builder, path, &entry.node)
                .map_err(|err| Error::Invalid(format!("cannot write /{path} into a tar: {err}")))?;
        }
        builder
            .into_inner()
            .map_err(|err| Error::Invalid(format!("cannot finish a tar: {err}")))
    }
}

/// `a/b/c` → `a`, `a/b`, `a/b/c`.
fn ancestors_and_self(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/')
        .map(|(end, _)| &path[..end])
        .chain(std::iter::once(path))
}

fn append_entry(builder: &mut tar::Builder<Vec<u8>>, path: &str, node: &Node) -> io::Result<()> {
    // Fixed owner and time: nothing about the building machine leaks into the digests.
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(0);
    match node {
        Node::Dir { mode } => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(*mode);
            builder.append_data(&mut header, format!("{path}/"), io::empty())
        }
        Node::File { mode, data } => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(*mode);
            header.set_size(data.len() as u64);
            builder.append_data(&mut header, path, data.as_slice())
        }
        Node::Device {
            block,
            major,
            minor,
        } => {
            header.set_entry_type(if *block {
                tar::EntryType::Block
            } else {
                tar::EntryType::Char
            });
            header.set_mode(0o666);
            header.set_device_major(*major)?;
            header.set_device_minor(*minor)?;
            builder.append_data(&mut header, path, io::empty())
        }
        Node::Symlink { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            // The literal setter keeps the target byte for byte (the escape tests rely on
            // it), where append_link would normalise `a//./b` to `a/b`. A target too long
            // for the header goes through append_link, which stores it unchanged in a GNU
            // long-link record.
            if header.set_link_name_literal(target).is_ok() {
                builder.append_data(&mut header, path, io::empty())
            } else {
                builder.append_link(&mut header, path, target)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The layer

fn build_layer(opts: &BuildOptions, module: Vec<u8>) -> Result<Tree, Error> {
    let mut tree = Tree::default();
    tree.add_file(&opts.entrypoint, 0o755, module, "the module")?;
    for add in &opts.adds {
        add_host_path(&mut tree, add)?;
    }
    for link in &opts.symlinks {
        tree.add_symlink(&link.link, link.target.clone(), &link.origin)?;
    }
    for device in &opts.devices {
        tree.add_device(device)?;
    }
    if let Some(workdir) = &opts.workdir {
        tree.ensure_dir(&image_path(workdir, "--workdir")?, "--workdir")?;
    }
    Ok(tree)
}

fn add_host_path(tree: &mut Tree, add: &AddSpec) -> Result<(), Error> {
    // metadata() follows a symlink named on the command line: the user meant its content.
    let meta = fs::metadata(&add.src).map_err(io_err("cannot read --add source", &add.src))?;
    if meta.is_dir() {
        tree.add_dir(&add.dest, file_mode(&meta), &add.origin)?;
        return copy_dir(tree, &add.src, &add.dest, &add.origin);
    }
    let dest = if add.into_dir || add.dest.is_empty() {
        let name = utf8_name(&add.src, add.src.file_name())?;
        join_image_path(&add.dest, name)
    } else {
        add.dest.clone()
    };
    copy_host_entry(tree, &add.src, &meta, &dest, &add.origin)
}

fn copy_dir(tree: &mut Tree, dir: &Path, dest: &str, origin: &str) -> Result<(), Error> {
    let mut children = Vec::new();
    for child in fs::read_dir(dir).map_err(io_err("cannot list", dir))? {
        children.push(child.map_err(io_err("cannot list", dir))?.path());
    }
    // Sorted so that errors, like the tree itself, do not depend on directory order.
    children.sort();
    for child in children {
        let name = utf8_name(&child, child.file_name())?;
        let meta = fs::symlink_metadata(&child).map_err(io_err("cannot read", &child))?;
        copy_host_entry(tree, &child, &meta, &join_image_path(dest, name), origin)?;
    }
    Ok(())
}

fn copy_host_entry(
    tree: &mut Tree,
    path: &Path,
    meta: &fs::Metadata,
    dest: &str,
    origin: &str,
) -> Result<(), Error> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(path).map_err(io_err("cannot read symlink", path))?;
        let target = target.to_str().ok_or_else(|| {
            Error::Invalid(format!(
                "the target of symlink {} is not UTF-8",
                path.display()
            ))
        })?;
        tree.add_symlink(dest, target.to_string(), origin)
    } else if kind.is_dir() {
        tree.add_dir(dest, file_mode(meta), origin)?;
        copy_dir(tree, path, dest, origin)
    } else if kind.is_file() {
        let data = fs::read(path).map_err(io_err("cannot read", path))?;
        tree.add_file(dest, file_mode(meta), data, origin)
    } else {
        Err(Error::Invalid(format!(
            "{} ({origin}) is a device, fifo or socket; only files, directories and symlinks can be added",
            path.display()
        )))
    }
}

fn file_mode(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

fn utf8_name<'a>(path: &Path, name: Option<&'a std::ffi::OsStr>) -> Result<&'a str, Error> {
    name.and_then(|name| name.to_str()).ok_or_else(|| {
        Error::Invalid(format!(
            "{} has no UTF-8 file name; rename it",
            path.display()
        ))
    })
}

fn join_image_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

// ---------------------------------------------------------------------------------------------
// OCI documents. Structs rather than json! so the field order, and so the digests, are fixed.

#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: &'static str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<PlatformJson>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'static str, String>,
}

impl Descriptor {
    fn of(media_type: &'static str, blob: &[u8]) -> Descriptor {
        Descriptor {
            media_type,
            digest: sha256_digest(blob),
            size: blob.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

#[derive(Serialize, Debug, Clone)]
struct PlatformJson {
    architecture: String,
    os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

impl From<&Platform> for PlatformJson {
    fn from(platform: &Platform) -> PlatformJson {
        PlatformJson {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
        }
    }
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    #[serde(flatten)]
    platform: PlatformJson,
    config: RunConfig<'a>,
    rootfs: RootFs,
    history: Vec<History>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig<'a> {
    entrypoint: Vec<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    cmd: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    env: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<&'a str>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History {
    created_by: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

fn sha256_digest(blob: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(blob))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(value).expect("OCI documents serialise")
}

fn image_config(opts: &BuildOptions, layer: &Descriptor) -> Vec<u8> {
    // The layer is uncompressed, so its diff_id is its own digest.
    to_json(&ImageConfig {
        platform: PlatformJson::from(&opts.platform),
        config: RunConfig {
            entrypoint: vec![format!("/{}", opts.entrypoint)],
            cmd: &opts.args,
            env: &opts.env,
            working_dir: opts.workdir.as_deref(),
        },
        rootfs: RootFs {
            kind: "layers",
            diff_ids: vec![layer.digest.clone()],
        },
        history: vec![History {
            created_by: "wasm-image build",
        }],
    })
}

/// The tag that `org.opencontainers.image.ref.name` carries: `latest` unless REF names one.
/// A ':' before the last '/' belongs to a registry port, not a tag.
fn ref_tag(name: &str) -> &str {
    let without_digest = name.split('@').next().unwrap_or(name);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag,
        _ => "latest",
    }
}

// ---------------------------------------------------------------------------------------------
// Building the image

/// A built image-layout tarball, ready to write out.
struct Image {
    tar: Vec<u8>,
    manifest_digest: String,
}

fn build_image(opts: &BuildOptions) -> Result<Image, Error> {
    let module = load_module(&opts.module, opts.native)?;
    let layer = build_layer(opts, module)?.to_tar()?;
    let layer_desc = Descriptor::of(LAYER_MEDIA_TYPE, &layer);
    let config = image_config(opts, &layer_desc);
    let config_desc = Descriptor::of(CONFIG_MEDIA_TYPE, &config);
    let manifest = to_json(&Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE,
        config: config_desc.clone(),
        layers: vec![layer_desc.clone()],
    });
    let mut manifest_desc = Descriptor::of(MANIFEST_MEDIA_TYPE, &manifest);
    manifest_desc.platform = Some(PlatformJson::from(&opts.platform));
    manifest_desc.annotations = BTreeMap::from([
        (IMAGE_NAME_ANNOTATION, opts.name.clone()),
        (REF_NAME_ANNOTATION, ref_tag(&opts.name).to_string()),
    ]);
    let index = to_json(&Index {
        schema_version: 2,
        media_type: INDEX_MEDIA_TYPE,
        manifests: vec![manifest_desc.clone()],
    });

    let mut layout = Tree::default();
    let origin = "the image layout";
    layout.add_file(
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        origin,
    )?;
    layout.add_file("index.json", 0o644, index, origin)?;
    for (desc, blob) in [
        (&manifest_desc, manifest),
        (&config_desc, config),
        (&layer_desc, layer),
    ] {
        layout.add_file(&format!("blobs/sha256/{}", desc.hex()), 0o644, blob, origin)?;
    }
    Ok(Image {
        tar: layout.to_tar()?,
        manifest_digest: manifest_desc.digest,
    })
}

/// Writes beside the destination and renames, so a failed build never leaves a
/// truncated tarball where an importer might pick it up.
fn write_output(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = fs::write(&tmp, bytes)
        .map_err(io_err("cannot write output", &tmp))
        .and_then(|()| {
            fs::rename(&tmp, path).map_err(io_err("cannot move output into place at", path))
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn run(args: &[String]) -> Result<(), Error> {
    match parse_args(args)? {
        Command::Help => print!("{}", help_text()),
        Command::Version => println!("wasm-image {}", env!("CARGO_PKG_VERSION")),
        Command::Build(opts) => {
            let image = build_image(&opts)?;
            write_output(&opts.output, &image.tar)?;
            let all_platforms = if opts.platform == Platform::host() {
                ""
            } else {
                "--all-platforms "
            };
            println!(
                "wrote {}: {} ({}, manifest {})",
                opts.output.display(),
                opts.name,
                opts.platform,
                image.manifest_digest
            );
            println!(
                "import with: ctr -n default images import {all_platforms}{}",
                opts.output.display()
            );
        }
    }
    Ok(())
}

fn main() {
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(|arg| arg.into_string())
        .collect();
    let result = match args {
        Ok(args) => run(&args),
        Err(arg) => Err(usage(format!("argument {arg:?} is not valid UTF-8"))),
    };
    if let Err(err) = result {
        eprintln!("wasm-image: {err}");
        process::exit(err.exit_code());
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// The smallest valid binary module: magic and version 1.
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";
    /// The required options, for tests about everything else.
    const REQUIRED: &str = "-o /nonexistent/out.tar --name docker.io/library/hello-wasm:v1";

    /// A command line from whitespace-separated words (tests use no paths with spaces).
    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    fn parse(line: &str) -> Result<BuildOptions, Error> {
        match parse_args(&words(line))? {
            Command::Build(opts) => Ok(*opts),
            other => panic!("expected a build command, got {other:?}"),
        }
    }

    /// Builds `module` with the required options plus `extra`.
    fn build_with(module: &str, extra: &str) -> Result<Image, Error> {
        build_image(&parse(&format!(
            "build --module {module} {REQUIRED} {extra}"
        ))?)
    }

    fn write_module(dir: &Path, name: &str, bytes: &[u8]) -> String {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn chmod(path: impl AsRef<Path>, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[derive(Debug)]
    struct TarEntry {
        kind: tar::EntryType,
        mode: u32,
        data: Vec<u8>,
        link: Option<String>,
    }

    /// Reads a tar back with the tar crate, in archive order, checking on the way that
    /// every header carries the fixed owner and time.
    fn untar(bytes: &[u8]) -> Vec<(String, TarEntry)> {
        let mut archive = tar::Archive::new(bytes);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header();
            let owner_and_time = [header.uid(), header.gid(), header.mtime()].map(Result::unwrap);
            assert_eq!(owner_and_time, [0, 0, 0]);
            let (kind, mode) = (header.entry_type(), header.mode().unwrap());
            let path = entry.path().unwrap().to_str().unwrap().to_string();
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into()).unwrap());
            let mut data = Vec::new();
            io::Read::read_to_end(&mut entry, &mut data).unwrap();
            out.push((
                path,
                TarEntry {
                    kind,
                    mode,
                    data,
                    link,
                },
            ));
        }
        out
    }

    /// The files of a layout tarball. Following a descriptor checks the blob's digest and
    /// size against its bytes, so walking index → manifest → config/layer checks them all.
    struct Layout(BTreeMap<String, TarEntry>);

    impl Layout {
        fn new(image: &Image) -> Layout {
            Layout(untar(&image.tar).into_iter().collect())
        }

        fn file(&self, path: &str) -> &[u8] {
            &self
                .0
                .get(path)
                .unwrap_or_else(|| panic!("no {path} in the layout"))
                .data
        }

        fn blob(&self, desc: &Value, media_type: &str) -> &[u8] {
            assert_eq!(desc["mediaType"], media_type);
            let digest = desc["digest"].as_str().unwrap();
            let hex = digest.strip_prefix("sha256:").unwrap();
            let blob = self.file(&format!("blobs/sha256/{hex}"));
            assert_eq!(sha256_digest(blob), digest, "digest of {media_type}");
            assert_eq!(desc["size"], blob.len(), "size of {media_type}");
            blob
        }

        fn index(&self) -> Value {
            serde_json::from_slice(self.file("index.json")).unwrap()
        }

        fn manifest(&self) -> Value {
            let blob = self.blob(&self.index()["manifests"][0], MANIFEST_MEDIA_TYPE);
            serde_json::from_slice(blob).unwrap()
        }

        fn config(&self) -> Value {
            let blob = self.blob(&self.manifest()["config"], CONFIG_MEDIA_TYPE);
            serde_json::from_slice(blob).unwrap()
        }

        fn layer_in_order(&self) -> Vec<(String, TarEntry)> {
            untar(self.blob(&self.manifest()["layers"][0], LAYER_MEDIA_TYPE))
        }

        fn layer(&self) -> BTreeMap<String, TarEntry> {
            self.layer_in_order().into_iter().collect()
        }
    }

    #[test]
    fn layout_documents_chain_together() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "hello.wasm", EMPTY_MODULE);
        let extra =
            "--arg --verbose --arg=x --env A=1 --env=B=2=3 --workdir /data --platform wasi/wasm";
        let image = build_with(&module, extra).unwrap();
        let layout = Layout::new(&image);

        assert_eq!(
            layout.file("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#
        );
        let index = layout.index();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
        let manifest_desc = &index["manifests"][0];
        assert_eq!(manifest_desc["digest"], image.manifest_digest);
        let annotations = &manifest_desc["annotations"];
        assert_eq!(
            annotations[IMAGE_NAME_ANNOTATION],
            "docker.io/library/hello-wasm:v1"
        );
        assert_eq!(annotations[REF_NAME_ANNOTATION], "v1");
        assert_eq!(
            manifest_desc["platform"],
            json!({"architecture": "wasm", "os": "wasi"})
        );

        let manifest = layout.manifest();
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);

        let config = layout.config();
        assert_eq!(
            (&config["os"], &config["architecture"]),
            (&json!("wasi"), &json!("wasm"))
        );
        let expected = json!({
            "Entrypoint": ["/hello.wasm"],
            "Cmd": ["--verbose", "x"],
            "Env": ["A=1", "B=2=3"],
            "WorkingDir": "/data",
        });
        assert_eq!(config["config"], expected);
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(
            config["rootfs"]["diff_ids"],
            json!([manifest["layers"][0]["digest"]])
        );
        assert_eq!(layout.layer()["hello.wasm"].data, EMPTY_MODULE);

        let paths: Vec<&str> = layout.0.keys().map(String::as_str).collect();
        let blobs = paths
            .iter()
            .filter(|p| p.starts_with("blobs/sha256/") && p.len() > 13);
        assert_eq!(blobs.count(), 3, "{paths:?}");
        assert_eq!(&paths[..2], ["blobs/", "blobs/sha256/"]);
        assert_eq!(&paths[5..], ["index.json", "oci-layout"]);
    }

    #[test]
    fn layer_is_sorted_with_fixed_modes_and_parent_directories() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "hello.wasm", EMPTY_MODULE);
        chmod(&module, 0o600); // the module is 0755 in the image whatever its mode here
        let image = build_with(&module, "--entrypoint app/bin/hello.wasm --workdir /data").unwrap();
        let layout = Layout::new(&image);
        let layer = layout.layer_in_order();

        let listing: Vec<(&str, u32)> = layer.iter().map(|(p, e)| (p.as_str(), e.mode)).collect();
        let expected = [
            ("app/", 0o755),
            ("app/bin/", 0o755),
            ("app/bin/hello.wasm", 0o755),
            ("data/", 0o755),
        ];
        assert_eq!(listing, expected);
        assert_eq!(layer[0].1.kind, tar::EntryType::Directory);
        assert_eq!(layer[2].1.kind, tar::EntryType::Regular);
        assert_eq!(
            layout.config()["config"]["Entrypoint"],
            json!(["/app/bin/hello.wasm"])
        );
    }

    #[test]
    fn defaults_are_the_host_platform_and_no_cmd_env_or_workdir() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "hello.wasm", EMPTY_MODULE);
        let line = format!("build --module {module} -o x.tar --name localhost:5000/hello");
        let image = build_image(&parse(&line).unwrap()).unwrap();
        let layout = Layout::new(&image);
        let index = layout.index();
        assert_eq!(
            index["manifests"][0]["annotations"][REF_NAME_ANNOTATION],
            "latest"
        );

        let config = layout.config();
        let host = Platform::host();
        assert_eq!(config["os"], host.os);
        assert_eq!(config["architecture"], host.architecture);
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(host.to_string(), "linux/amd64");
        }
        assert_eq!(config["config"], json!({"Entrypoint": ["/hello.wasm"]}));
    }

    #[test]
    fn same_inputs_give_identical_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "hello.wasm", EMPTY_MODULE);
        let extra = dir.path().join("extra");
        fs::create_dir_all(extra.join("sub")).unwrap();
        fs::write(extra.join("sub/b.txt"), "b").unwrap();
        fs::write(extra.join("a.txt"), "a").unwrap();
        let options = format!("--add {}:/extra --symlink /l:/etc --arg 1", extra.display());

        let first = build_with(&module, &options).unwrap();
        // Rewriting a file changes its mtime, which must not reach the image.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(extra.join("a.txt"), "a").unwrap();
        let second = build_with(&module, &options).unwrap();
        assert!(
            first.tar == second.tar,
            "two builds of the same inputs differ"
        );
        assert_eq!(first.manifest_digest, second.manifest_digest);
    }

    #[test]
    fn wat_input_is_compiled() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"(module (func (export "_start")))"#;
        let module = write_module(dir.path(), "greet.wat", text.as_bytes());
        let image = build_with(&module, "").unwrap();
        let layout = Layout::new(&image);
        let wasm = &layout.layer()["greet.wasm"].data;
        assert!(wasm.starts_with(WASM_MAGIC));
        assert_eq!(wasm, &wat::parse_str(text).unwrap());
        assert_eq!(
            layout.config()["config"]["Entrypoint"],
            json!(["/greet.wasm"])
        );
    }

    #[test]
    fn broken_wat_is_reported_on_one_line_with_its_location() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "bad.wat", b"(module\n  (func (bogus)))");
        let err = build_with(&module, "").err().unwrap();
        let message = err.to_string();
        assert_eq!(err.exit_code(), 1);
        assert!(
            message.contains("bad.wat") && message.contains(":2:"),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn non_wasm_module_is_rejected_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["notes.wasm", "notes.txt", "text-module.wasm"] {
            let module = write_module(dir.path(), name, b"(module)");
            let err = build_with(&module, "").err().unwrap();
            assert_eq!(err.exit_code(), 1);
            let message = err.to_string();
            assert!(message.contains(&module), "{message}");
            assert!(message.contains("is not a WebAssembly module"), "{message}");
        }
        let missing = dir.path().join("missing.wasm");
        let err = build_with(missing.to_str().unwrap(), "").err().unwrap();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("cannot read module"), "{err}");
        assert!(err.to_string().contains("missing.wasm"), "{err}");
    }

    #[test]
    fn symlinks_are_written_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "hello.wasm", EMPTY_MODULE);
        let long_target = format!("/{}", "x/".repeat(80));
        let extra = format!(
            "--symlink /escape:/etc --symlink /deep/up:../../../../etc \
             --symlink /odd:a//./b:c --symlink=/long:{long_target}"
        );
        let layer = Layout::new(&build_with(&module, &extra).unwrap()).layer();
        let targets = [
            ("escape", "/etc"),
            ("deep/up", "../../../../etc"),
            ("odd", "a//./b:c"),
            ("long", &long_target), // too long for the header: a GNU long-link record
        ];
        for (path, target) in targets {
            let entry = &layer[path];
            assert_eq!(entry.kind, tar::EntryType::Symlink, "{path}");
            assert_eq!(entry.link.as_deref(), Some(target), "{path}");
        }
        assert_eq!(layer["deep/"].kind, tar::EntryType::Directory);
    }

    #[test]
    fn add_copies_files_and_directories_keeping_modes_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "hello.wasm", EMPTY_MODULE);
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("secret"), "s").unwrap();
        chmod(tree.join("secret"), 0o600);
        chmod(tree.join("sub"), 0o700);
        fs::write(tree.join("sub/script"), "#!").unwrap();
        chmod(tree.join("sub/script"), 0o751);
        symlink("/etc/passwd", tree.join("sub/passwd")).unwrap();
        let single = dir.path().join("single.txt");
        fs::write(&single, "one").unwrap();
        let (tree, single) = (tree.display(), single.display());

        let extra =
            format!("--add {tree}:/srv/tree --add {single}:/opt/ --add {single}:/renamed.txt");
        let layer = Layout::new(&build_with(&module, &extra).unwrap()).layer();
        let mode = |path: &str| layer[path].mode;
        assert_eq!(mode("srv/"), 0o755);
        assert_eq!(layer["srv/tree/secret"].data, b"s");
        assert_eq!(mode("srv/tree/secret"), 0o600);
        assert_eq!(mode("srv/tree/sub/"), 0o700);
        assert_eq!(mode("srv/tree/sub/script"), 0o751);
        let passwd = &layer["srv/tree/sub/passwd"];
        assert_eq!(passwd.kind, tar::EntryType::Symlink);
        assert_eq!(passwd.link.as_deref(), Some("/etc/passwd"));
        assert_eq!(layer["opt/single.txt"].data, b"one");
        assert_eq!(layer["renamed.txt"].data, b"one");
    }

    #[test]
    fn conflicting_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "hello.wasm", EMPTY_MODULE);
        let other = write_module(dir.path(), "other.wasm", EMPTY_MODULE);
        let error = |extra: &str| build_with(&module, extra).err().unwrap().to_string();

        let message = error(&format!("--add {other}:/hello.wasm"));
        assert!(
            message.contains("/hello.wasm is put in the image twice"),
            "{message}"
        );
        // --add is applied before --symlink, so the symlink is what clashes with /lib.
        let message = error(&format!("--symlink /lib:/usr/lib --add {other}:/lib/x"));
        assert!(
            message.contains("/lib is put in the image twice"),
            "{message}"
        );
        let message = error("--symlink /hello.wasm/x:/etc");
        assert!(
            message.contains("/hello.wasm is not a directory"),
            "{message}"
        );
    }

    #[test]
    fn workdir_under_a_symlink_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "hello.wasm", EMPTY_MODULE);
        let image = build_with(&module, "--symlink /w:/etc --workdir /w/sub").unwrap();
        let layer = Layout::new(&image).layer();
        assert_eq!(layer.keys().collect::<Vec<_>>(), ["hello.wasm", "w"]);
    }

    #[test]
    fn long_paths_survive() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "hello.wasm", EMPTY_MODULE);
        let deep = format!("{}/m.wasm", "d".repeat(120));
        let image = build_with(&module, &format!("--entrypoint /{deep}")).unwrap();
        assert!(Layout::new(&image).layer().contains_key(&deep));
    }

    #[test]
    fn usage_errors_exit_2() {
        let base = "build --module m.wasm -o x.tar --name n";
        let bad_lines = [
            "".to_string(),
            "frobnicate".to_string(),
            "build -o x.tar --name n".to_string(),
            "build --module m.wasm --name n".to_string(),
            "build --module m.wasm -o x.tar".to_string(),
        ];
        let bad_options = [
            "--bogus",
            "--arg",
            "stray",
            "--env NOEQUALS",
            "--env =1",
            "--platform linux",
            "--platform a/b/c/d",
            "--platform linux//amd64",
            "--workdir relative",
            "--entrypoint /",
            "--entrypoint /../x.wasm",
            "--add nocolon",
            "--add :/dest",
            "--add src:/a/../../b",
            "--symlink /l:",
            "--symlink /:/etc",
            "--name again",
        ];
        let lines = bad_lines
            .into_iter()
            .chain(bad_options.map(|o| format!("{base} {o}")));
        for line in lines {
            let err = parse_args(&words(&line))
                .err()
                .unwrap_or_else(|| panic!("accepted: {line}"));
            assert_eq!(err.exit_code(), 2, "{line}: {err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        let with_space = ["build", "--module", "m", "-o", "x", "--name", "has space"];
        let err = parse_args(&with_space.map(String::from)).err().unwrap();
        assert_eq!(err.exit_code(), 2);
        let err = parse(&format!("{base} --bogus")).err().unwrap();
        assert!(
            err.to_string().starts_with("unknown option `--bogus`"),
            "{err}"
        );
    }

    #[test]
    fn help_and_version_are_recognised() {
        for line in ["--help", "-h", "help", "build --module m --help"] {
            assert!(
                matches!(parse_args(&words(line)), Ok(Command::Help)),
                "{line}"
            );
        }
        assert!(matches!(
            parse_args(&words("--version")),
            Ok(Command::Version)
        ));
        let help = help_text();
        for needle in [
            "ctr -n default images import",
            "--all-platforms",
            "wasi/wasm",
            "--symlink",
        ] {
            assert!(help.contains(needle), "help lacks {needle}");
        }
    }

    #[test]
    fn ref_tags() {
        assert_eq!(ref_tag("docker.io/library/hello-wasm:latest"), "latest");
        assert_eq!(ref_tag("hello:v2"), "v2");
        assert_eq!(ref_tag("localhost:5000/hello"), "latest");
        assert_eq!(ref_tag("localhost:5000/hello:1.0@sha256:abc"), "1.0");
        assert_eq!(ref_tag("hello"), "latest");
    }

    #[test]
    fn run_writes_the_tarball_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "hello.wasm", EMPTY_MODULE);
        let out = dir.path().join("out.tar");
        let line = format!(
            "build --module {module} -o {} --name hello:1",
            out.display()
        );
        run(&words(&line)).unwrap();
        let expected = build_image(&parse(&line).unwrap()).unwrap();
        assert!(fs::read(&out).unwrap() == expected.tar);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "a temporary file was left behind: {names:?}"
        );

        let nowhere = dir.path().join("no/such/dir/out.tar");
        let line = format!(
            "build --module {module} -o {} --name hello:1",
            nowhere.display()
        );
        let err = run(&words(&line)).err().unwrap();
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("no/such/dir"), "{err}");
    }
}
