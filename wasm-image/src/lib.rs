//! `wasm-image`: packages a WebAssembly module as an OCI image or a wasm OCI artifact, and
//! writes it as an image-layout tarball that `ctr images import` accepts or pushes it to a
//! registry, without Docker.
//!
//! An ordinary image has one uncompressed layer holding the module (plus any `--add`ed files
//! and `--symlink`s), a config whose Entrypoint runs the module, and a manifest; an artifact
//! (`--format wasm-v1` or `wasm-v0`) is the module itself as its one layer. Everything is
//! built in memory and is deterministic: sorted tar entries, mtime 0, uid/gid 0 and fixed
//! JSON field order, so the same inputs give the same digests.
//!
//! The library's public part is what tests of the shim need to make registry content by
//! hand: [`registry::Client`] pushes blobs and manifests, [`artifact::manifest_and_blobs`]
//! builds an artifact, [`layout::tarball`] writes a layout tarball.

pub mod artifact;
mod cli;
pub mod error;
mod layer;
pub mod layout;
pub mod registry;

pub use layer::with_custom_section;
#[cfg(test)]
mod test_support;

use std::path::Path;

pub use error::Error;

use cli::{BuildOptions, Command, Format};
use layout::ManifestAndBlobs;
use registry::Reference;

/// Runs the command line `args` (without the program name), printing what it did.
pub fn run(args: &[String]) -> Result<(), Error> {
    match cli::parse_args(args)? {
        Command::Help => print!("{}", cli::help_text()),
        Command::Version => println!("wasm-image {}", env!("CARGO_PKG_VERSION")),
        Command::Build(opts, output) => build(&opts, &output)?,
        Command::Push(opts, reference) => push(&opts, &reference)?,
    }
    Ok(())
}

fn build(opts: &BuildOptions, output: &Path) -> Result<(), Error> {
    let built = build_tarball(opts)?;
    layout::write_output(output, &built.tar)?;
    println!(
        "wrote {}: {} ({}, manifest {})",
        output.display(),
        opts.name,
        describe(opts),
        built.manifest_digest
    );
    println!("import with: {}", import_command(opts, output));
    Ok(())
}

/// What `ctr` needs to import the tarball: an image of another platform than the host's
/// needs --all-platforms; an artifact cannot be unpacked into a snapshot (its layer is no
/// tar), which `ctr images import` otherwise tries, failing the import.
fn import_command(opts: &BuildOptions, output: &Path) -> String {
    let flags = match opts.format {
        Format::Artifact(_) => "--no-unpack ",
        Format::Image if opts.platform != layout::Platform::host() => "--all-platforms ",
        Format::Image => "",
    };
    format!("ctr -n default images import {flags}{}", output.display())
}

fn push(opts: &BuildOptions, reference: &Reference) -> Result<(), Error> {
    let image = assemble(opts)?;
    let client = registry::Client::new(&reference.host);
    let digest = client.push(&reference.repository, &reference.tag, &image)?;
    println!("pushed {reference} ({}, manifest {digest})", describe(opts));
    Ok(())
}

/// `linux/amd64` for an image, `wasm-v1 artifact` for an artifact.
fn describe(opts: &BuildOptions) -> String {
    match opts.format {
        Format::Image => opts.platform.to_string(),
        Format::Artifact(format) => format!("{format} artifact"),
    }
}

/// The manifest and blobs the options describe, whichever the format.
fn assemble(opts: &BuildOptions) -> Result<ManifestAndBlobs, Error> {
    match opts.format {
        Format::Image => {
            let module = layer::load_module(&opts.module, opts.native)?;
            let layer = layer::build_layer(opts, module)?.to_tar()?;
            Ok(layout::image(opts, layer))
        }
        Format::Artifact(format) => {
            let (module, title) = artifact::load_module(&opts.module)?;
            Ok(artifact::manifest_and_blobs(format, &title, &module))
        }
    }
}

/// A built image-layout tarball, ready to write out.
pub(crate) struct Tarball {
    pub(crate) tar: Vec<u8>,
    pub(crate) manifest_digest: String,
}

pub(crate) fn build_tarball(opts: &BuildOptions) -> Result<Tarball, Error> {
    let image = assemble(opts)?;
    // Only an ordinary image has a platform; an artifact's descriptor carries none, so
    // containerd imports it on any host.
    let platform = (opts.format == Format::Image).then_some(&opts.platform);
    Ok(Tarball {
        tar: layout::tarball(&image, &opts.name, platform)?,
        manifest_digest: image.digest(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::sha256_digest;
    use crate::test_support::{parse, words, write_module, FakeRegistry, Reply, EMPTY_MODULE};
    use std::fs;

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
        let expected = build_tarball(&parse(&line).unwrap()).unwrap();
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

    #[test]
    fn push_sends_what_build_would_write() {
        let registry = FakeRegistry::start(|request| match request.method.as_str() {
            "HEAD" => Reply::status(404),
            "POST" => Reply::status(202).header("Location", "/v2/up/1"),
            _ => Reply::status(201),
        });
        let dir = tempfile::tempdir().unwrap();
        let module = write_module(dir.path(), "hello.wasm", EMPTY_MODULE);
        for format in ["image", "wasm-v1", "wasm-v0"] {
            let name = format!("{}/team/hello:{format}", registry.host);
            let line = format!("push --module {module} --name {name} --format {format}");
            run(&words(&line)).unwrap();
            let expected = assemble(&parse(&line).unwrap()).unwrap();
            let requests = registry.requests();
            let manifest = requests.last().unwrap();
            assert_eq!(manifest.path, format!("/v2/team/hello/manifests/{format}"));
            assert_eq!(manifest.body, expected.manifest);
            for blob in &expected.blobs {
                let digest = sha256_digest(blob).replace(':', "%3A");
                let upload = requests
                    .iter()
                    .find(|r| r.path.ends_with(&format!("?digest={digest}")))
                    .unwrap_or_else(|| panic!("{format}: a blob was not uploaded"));
                assert_eq!(&upload.body, blob);
            }
        }
    }

    #[test]
    fn import_hints_match_what_was_built() {
        let hint = |extra: &str| {
            let opts = parse(&format!("build --module m.wasm -o o.tar --name n {extra}")).unwrap();
            import_command(&opts, Path::new("o.tar"))
        };
        assert_eq!(hint(""), "ctr -n default images import o.tar");
        assert_eq!(
            hint("--platform wasi/wasm"),
            "ctr -n default images import --all-platforms o.tar"
        );
        assert_eq!(
            hint("--format wasm-v0"),
            "ctr -n default images import --no-unpack o.tar"
        );
    }
}
