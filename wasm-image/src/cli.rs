//! The command line: the help text, and parsing and validating `build` and `push` into
//! [`BuildOptions`], so that everything after this module works on checked values.

use std::path::{Path, PathBuf};

use crate::artifact;
use crate::error::{usage, Error};
use crate::layer::{AddSpec, DeviceSpec, SymlinkSpec};
use crate::layout::Platform;
use crate::registry::Reference;

pub(crate) fn help_text() -> String {
    let host = Platform::host();
    format!(
        "\
wasm-image: package a WebAssembly (WASI) module as an OCI image tarball for
containerd-shim-wasm, without Docker or a registry, or push it to a registry.

USAGE:
    wasm-image build --module FILE -o OUT.tar --name REF [OPTIONS]
    wasm-image push --module FILE --name HOST[:PORT]/REPO[:TAG] [OPTIONS]
    wasm-image --help | --version

BUILD OPTIONS (push takes the same ones, except -o):
    -m, --module FILE         The module: a binary .wasm file (it must start with the
                              \\0asm magic) or a .wat text file, compiled to binary here.
    -o, --output OUT.tar      Where to write the image (an OCI image-layout tar). An
                              existing file is replaced only once the build succeeded.
        --name REF            The image name, used verbatim as the containerd image name,
                              e.g. docker.io/library/hello-wasm:latest. Its tag (latest if
                              it has none) is also recorded as the layout's ref name. For
                              push, the registry, repository and tag to push to.
        --format FORMAT       What to package. Default: image.
                                image    an ordinary OCI image: one tar layer holding the
                                         module and whatever the options below add.
                                wasm-v1  a wasm OCI artifact as wasm-to-oci and Krustlet
                                         write it: config
                                         application/vnd.wasm.config.v1+json, one layer
                                         application/vnd.wasm.content.layer.v1+wasm.
                                wasm-v0  a wasm OCI artifact of the CNCF TAG Runtime wasm
                                         working group, as runwasi reads it: config
                                         application/vnd.wasm.config.v0+json, one layer
                                         application/wasm.
                              An artifact's layer is the module itself, not a tar, and it
                              carries nothing else: with wasm-v1 or wasm-v0 only --module
                              and --name (and -o for build) may be given.
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
tar layer; the build is deterministic (sorted entries, mtime 0, uid/gid 0, and a fixed
creation time in a wasm-v0 config), so the same inputs give the same digests.

IMPORTING AND RUNNING:
    ctr -n default images import OUT.tar
    ctr -n default images import --all-platforms OUT.tar    (for --platform wasi/wasm)
    ctr -n default images import --no-unpack OUT.tar        (for wasm-v1 and wasm-v0)
    ctr -n default run --rm --runtime io.containerd.wasm.v1 REF my-container

PUSHING:
    push sends the blobs and then the manifest straight to the registry named by --name
    (the OCI distribution API), in plain HTTP and without authentication: it is meant for
    a local or test registry such as 127.0.0.1:5000. For a registry that needs TLS or a
    login, build a tarball and copy it with skopeo:
        wasm-image build --module app.wasm --name registry.example/app:1 -o app.tar
        skopeo copy oci-archive:app.tar docker://registry.example/app:1

EXIT STATUS:
    0 on success, 1 if the build or the push failed, 2 for a usage error.
"
    )
}

#[derive(Debug)]
pub(crate) enum Command {
    Help,
    Version,
    /// Write the image into a layout tarball at the path.
    Build(Box<BuildOptions>, PathBuf),
    /// Push the image to the registry.
    Push(Box<BuildOptions>, Reference),
}

/// What `--format` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// An ordinary image with a tar layer (the default).
    Image,
    /// A wasm OCI artifact: the module alone.
    Artifact(artifact::Format),
}

impl Format {
    fn parse(raw: &str) -> Result<Format, Error> {
        if raw == "image" {
            return Ok(Format::Image);
        }
        artifact::Format::parse(raw)
            .map(Format::Artifact)
            .ok_or_else(|| {
                usage(format!(
                    "--format `{raw}` is not a format; use image, wasm-v1 or wasm-v0"
                ))
            })
    }
}

/// Where the result goes: `build` writes a file, `push` sends it to a registry.
#[derive(Debug)]
enum Destination {
    File(PathBuf),
    Registry(Reference),
}

/// A validated `build` or `push` command line. Image paths are normalised: relative to the
/// image root, without `.` or empty components (`""` is the root itself).
#[derive(Debug)]
pub(crate) struct BuildOptions {
    pub(crate) module: PathBuf,
    pub(crate) name: String,
    pub(crate) format: Format,
    pub(crate) entrypoint: String,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) workdir: Option<String>,
    pub(crate) adds: Vec<AddSpec>,
    pub(crate) symlinks: Vec<SymlinkSpec>,
    pub(crate) devices: Vec<DeviceSpec>,
    pub(crate) platform: Platform,
    /// The module is a native executable (see `--native`).
    pub(crate) native: bool,
}

/// Which command the options are for; they differ only in where the result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Build,
    Push,
}

/// The raw values of the options, before validation.
#[derive(Default)]
struct RawBuild {
    module: Option<String>,
    output: Option<String>,
    name: Option<String>,
    format: Option<String>,
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

impl RawBuild {
    /// The options given that only an image can carry, in the order the help lists them.
    fn image_only_flags(&self) -> Vec<&'static str> {
        let given = [
            ("--entrypoint", self.entrypoint.is_some()),
            ("--arg", !self.args.is_empty()),
            ("--env", !self.env.is_empty()),
            ("--workdir", self.workdir.is_some()),
            ("--add", !self.adds.is_empty()),
            ("--symlink", !self.symlinks.is_empty()),
            ("--device", !self.devices.is_empty()),
            ("--native", self.native),
            ("--platform", self.platform.is_some()),
        ];
        given
            .into_iter()
            .filter(|(_, present)| *present)
            .map(|(flag, _)| flag)
            .collect()
    }
}

pub(crate) fn parse_args(args: &[String]) -> Result<Command, Error> {
    let Some(first) = args.first() else {
        return Err(usage(
            "no command given; use `wasm-image build --module FILE -o OUT.tar --name REF`",
        ));
    };
    match first.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "-V" | "--version" => Ok(Command::Version),
        "build" => parse_build(&args[1..], Mode::Build),
        "push" => parse_build(&args[1..], Mode::Push),
        other => Err(usage(format!(
            "unknown command `{other}`; the commands are `build` and `push`"
        ))),
    }
}

/// Every option of `build` and `push` but `--native`; each takes a value.
const BUILD_FLAGS: &[&str] = &[
    "-m",
    "--module",
    "-o",
    "--output",
    "--name",
    "--format",
    "--entrypoint",
    "--workdir",
    "--platform",
    "--arg",
    "--env",
    "--add",
    "--symlink",
    "--device",
];

fn parse_build(args: &[String], mode: Mode) -> Result<Command, Error> {
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
        set_flag(&mut raw, flag, value)?;
    }
    let (opts, destination) = validate_build(raw, mode)?;
    Ok(match destination {
        Destination::File(path) => Command::Build(Box::new(opts), path),
        Destination::Registry(reference) => Command::Push(Box::new(opts), reference),
    })
}

fn set_flag(raw: &mut RawBuild, flag: &str, value: String) -> Result<(), Error> {
    let repeatable = match flag {
        "--arg" => &mut raw.args,
        "--env" => &mut raw.env,
        "--add" => &mut raw.adds,
        "--symlink" => &mut raw.symlinks,
        "--device" => &mut raw.devices,
        _ => return set_once(single_slot(raw, flag), flag, value),
    };
    repeatable.push(value);
    Ok(())
}

/// Where an option that may be given once keeps its value.
fn single_slot<'a>(raw: &'a mut RawBuild, flag: &str) -> &'a mut Option<String> {
    match flag {
        "-m" | "--module" => &mut raw.module,
        "-o" | "--output" => &mut raw.output,
        "--name" => &mut raw.name,
        "--format" => &mut raw.format,
        "--entrypoint" => &mut raw.entrypoint,
        "--workdir" => &mut raw.workdir,
        "--platform" => &mut raw.platform,
        _ => unreachable!("{flag} is in BUILD_FLAGS but not handled"),
    }
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

fn validate_build(raw: RawBuild, mode: Mode) -> Result<(BuildOptions, Destination), Error> {
    let module = PathBuf::from(required(raw.module.clone(), "--module FILE")?);
    let output = match (mode, raw.output.clone()) {
        (Mode::Build, output) => Some(PathBuf::from(required(output, "-o OUT.tar")?)),
        (Mode::Push, None) => None,
        (Mode::Push, Some(_)) => {
            return Err(usage(
                "push sends the image to the registry named by --name and writes no file; \
                 drop -o, or use `wasm-image build -o OUT.tar` for a tarball",
            ))
        }
    };
    let name = validate_name(required(raw.name.clone(), "--name REF")?)?;
    let destination = match output {
        Some(path) => Destination::File(path),
        None => Destination::Registry(push_reference(&name)?),
    };
    let format = match &raw.format {
        Some(format) => Format::parse(format)?,
        None => Format::Image,
    };
    if let Format::Artifact(artifact) = format {
        refuse_image_only_flags(&raw, artifact)?;
    }
    let entrypoint = match (&raw.entrypoint, format) {
        (Some(path), _) => non_root_image_path(path, "--entrypoint")?,
        // An artifact has no file tree, so nothing to name; its module keeps its own name.
        (None, Format::Artifact(_)) => String::new(),
        (None, Format::Image) if raw.native => {
            return Err(usage(
                "--native needs --entrypoint PATH: a native program has no .wasm name to derive it from",
            ))
        }
        (None, Format::Image) => default_entrypoint(&module)?,
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
        Some(platform) => parse_platform(&platform)?,
        None => Platform::host(),
    };
    let opts = BuildOptions {
        module,
        name,
        format,
        entrypoint,
        args: raw.args,
        env: raw.env,
        workdir,
        adds,
        symlinks,
        devices,
        platform,
        native: raw.native,
    };
    Ok((opts, destination))
}

/// An artifact is the module and nothing else, so options that shape an image's file tree
/// or run configuration would be silently lost: refuse them instead.
fn refuse_image_only_flags(raw: &RawBuild, format: artifact::Format) -> Result<(), Error> {
    let flags = raw.image_only_flags();
    if flags.is_empty() {
        return Ok(());
    }
    let (flags, pronoun) = match flags.len() {
        1 => (flags[0].to_string(), "it"),
        _ => (flags.join(", "), "them"),
    };
    Err(usage(format!(
        "{flags} cannot be used with --format {format}: a wasm OCI artifact carries only the \
         module, so only --module and --name apply; drop {pronoun}, or use --format image for \
         an image with files, an entrypoint, arguments, environment or a platform"
    )))
}

/// The registry reference `push` sends to: `--name` must then name a registry host.
fn push_reference(name: &str) -> Result<Reference, Error> {
    Reference::parse(name).map_err(|err| usage(format!("--name: {err}")))
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

fn parse_platform(raw: &str) -> Result<Platform, Error> {
    let parts: Vec<&str> = raw.split('/').collect();
    let bad = || {
        usage(format!(
            "--platform `{raw}` is not OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64 or wasi/wasm"
        ))
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
pub(crate) fn image_path(raw: &str, what: &str) -> Result<String, Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{parse, words};

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
            "--format tarball",
            "--format wasm-v1 --format wasm-v0",
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
        for line in [
            "--help",
            "-h",
            "help",
            "build --module m --help",
            "push --help",
        ] {
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
            "--format FORMAT",
            "wasm-v1",
            "wasm-v0",
            "plain HTTP",
            "skopeo copy oci-archive:",
        ] {
            assert!(help.contains(needle), "help lacks {needle}");
        }
    }

    #[test]
    fn formats_parse_and_image_is_the_default() {
        let base = "build --module m.wasm -o x.tar --name n";
        let format = |extra: &str| parse(&format!("{base} {extra}")).unwrap().format;
        assert_eq!(format(""), Format::Image);
        assert_eq!(format("--format image"), Format::Image);
        assert_eq!(
            format("--format=wasm-v1"),
            Format::Artifact(artifact::Format::WasmV1)
        );
        assert_eq!(
            format("--format wasm-v0"),
            Format::Artifact(artifact::Format::WasmV0)
        );
        let err = parse(&format!("{base} --format oci")).err().unwrap();
        assert_eq!(
            err.to_string(),
            "--format `oci` is not a format; use image, wasm-v1 or wasm-v0 (see wasm-image --help)"
        );
    }

    #[test]
    fn artifacts_refuse_every_option_an_image_would_carry() {
        let base = "build --module m.wasm -o x.tar --name n --format wasm-v1";
        let image_only = [
            "--entrypoint /x.wasm",
            "--arg a",
            "--env A=1",
            "--workdir /data",
            "--add src:/dest",
            "--symlink /l:/etc",
            "--device /d:c:1:3",
            "--native",
            "--platform wasi/wasm",
        ];
        for option in image_only {
            let err = parse(&format!("{base} {option}")).err().unwrap();
            assert_eq!(err.exit_code(), 2, "{option}");
            let flag = option.split(' ').next().unwrap();
            let expected = format!(
                "{flag} cannot be used with --format wasm-v1: a wasm OCI artifact carries only \
                 the module, so only --module and --name apply; drop it, or use --format image \
                 for an image with files, an entrypoint, arguments, environment or a platform \
                 (see wasm-image --help)"
            );
            assert_eq!(err.to_string(), expected);
        }
        let line = "build --module m.wasm -o x --name n --add s:/d --format wasm-v0 --env A=1";
        let message = parse(line).err().unwrap().to_string();
        assert!(
            message.starts_with("--env, --add cannot be used with --format wasm-v0:"),
            "{message}"
        );
        assert!(message.contains("drop them"), "{message}");

        // What an artifact does take: the module, its name, and where it goes.
        let line = "build --module dir/m.wat -o x.tar --name n --format wasm-v0";
        let Command::Build(opts, output) = parse_args(&words(line)).unwrap() else {
            panic!("not a build: {line}");
        };
        assert_eq!(output, Path::new("x.tar"));
        assert_eq!(opts.entrypoint, "");
    }

    #[test]
    fn push_takes_a_registry_reference_instead_of_an_output() {
        let line = "push --module m.wasm --name 127.0.0.1:5000/team/hello:v1 --format wasm-v0";
        let Command::Push(opts, reference) = parse_args(&words(line)).unwrap() else {
            panic!("not a push: {line}");
        };
        assert_eq!(
            (
                reference.host.as_str(),
                reference.repository.as_str(),
                reference.tag.as_str()
            ),
            ("127.0.0.1:5000", "team/hello", "v1")
        );
        assert_eq!(opts.format, Format::Artifact(artifact::Format::WasmV0));

        let refused = [
            "push --module m.wasm --name 127.0.0.1:5000/hello -o x.tar",
            "push --module m.wasm --name hello:1",
            "push --module m.wasm",
            "push --name localhost:5000/hello",
        ];
        for line in refused {
            let err = parse_args(&words(line))
                .err()
                .unwrap_or_else(|| panic!("accepted: {line}"));
            assert_eq!(err.exit_code(), 2, "{line}: {err}");
        }
        let err = parse_args(&words(refused[0])).err().unwrap();
        assert!(err.to_string().starts_with("push sends the image"), "{err}");
        let err = parse_args(&words(refused[1])).err().unwrap();
        assert!(err.to_string().contains("HOST[:PORT]/REPO[:TAG]"), "{err}");
    }

    #[test]
    fn image_paths_are_normalised() {
        assert_eq!(image_path("/a//./b/", "x").unwrap(), "a/b");
        assert_eq!(image_path("/", "x").unwrap(), "");
        assert!(image_path("/a/../b", "x").is_err());
        assert!(non_root_image_path("/.", "x").is_err());
    }
}
