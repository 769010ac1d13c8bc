//! The content of an ordinary image's layer: the module (a `.wat` one compiled), the host
//! files and directories `--add` copies in, symlinks and device nodes, gathered in a sorted
//! file tree and written as a deterministic tar. The same tree writes the outer layout
//! tarball (`layout.rs`).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::cli::{image_path, BuildOptions};
use crate::error::{io_err, Error};

pub(crate) const WASM_MAGIC: &[u8] = b"\0asm";
const ELF_MAGIC: &[u8] = b"\x7fELF";

/// `--add SRC:DEST`, parsed.
#[derive(Debug)]
pub(crate) struct AddSpec {
    pub(crate) src: PathBuf,
    pub(crate) dest: String,
    /// DEST ended in '/' (or is the root): a file goes inside it under its own name.
    pub(crate) into_dir: bool,
    /// The option as given, for error messages.
    pub(crate) origin: String,
}

/// `--symlink LINK:TARGET`, parsed.
#[derive(Debug)]
pub(crate) struct SymlinkSpec {
    pub(crate) link: String,
    pub(crate) target: String,
    pub(crate) origin: String,
}

/// `--device PATH:TYPE:MAJOR:MINOR`, parsed.
#[derive(Debug)]
pub(crate) struct DeviceSpec {
    pub(crate) path: String,
    pub(crate) block: bool,
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) origin: String,
}

// ---------------------------------------------------------------------------------------------
// The module

/// Reads the module for an image: an ELF executable with `native`, otherwise a WebAssembly
/// module (a `.wat` one compiled to binary).
pub(crate) fn load_module(path: &Path, native: bool) -> Result<Vec<u8>, Error> {
    let bytes = read_module(path)?;
    if native {
        return native_module(path, bytes);
    }
    wasm_module(path, bytes)
}

pub(crate) fn read_module(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(io_err("cannot read module", path))
}

pub(crate) fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(ELF_MAGIC)
}

fn native_module(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>, Error> {
    if is_elf(&bytes) {
        Ok(bytes)
    } else {
        Err(Error::Invalid(format!(
            "{} is not an ELF executable, which --native packs",
            path.display()
        )))
    }
}

/// The binary module of `bytes`: as they are if they carry the magic, compiled if `path` is
/// a `.wat` file, refused otherwise.
pub(crate) fn wasm_module(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>, Error> {
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

pub(crate) fn has_extension(path: &Path, wanted: &str) -> bool {
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
pub(crate) struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    pub(crate) fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    pub(crate) fn add_dir(&mut self, path: &str, mode: u32, origin: &str) -> Result<(), Error> {
        if path.is_empty() {
            return Ok(()); // the root has no entry of its own
        }
        self.insert(path, Node::Dir { mode }, origin)
    }

    pub(crate) fn add_file(
        &mut self,
        path: &str,
        mode: u32,
        data: Vec<u8>,
        origin: &str,
    ) -> Result<(), Error> {
        self.insert(path, Node::File { mode, data }, origin)
    }

    pub(crate) fn add_device(&mut self, device: &DeviceSpec) -> Result<(), Error> {
        let node = Node::Device {
            block: device.block,
            major: device.major,
            minor: device.minor,
        };
        self.insert(&device.path, node, &device.origin)
    }

    pub(crate) fn add_symlink(
        &mut self,
        path: &str,
        target: String,
        origin: &str,
    ) -> Result<(), Error> {
        self.insert(path, Node::Symlink { target }, origin)
    }

    /// Adds a 0755 directory unless the path exists or lies under a non-directory, where
    /// the user has arranged things deliberately (e.g. a workdir under a symlink).
    pub(crate) fn ensure_dir(&mut self, path: &str, origin: &str) -> Result<(), Error> {
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

    pub(crate) fn to_tar(&self) -> Result<Vec<u8>, Error> {
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

/// The layer of an ordinary image: the module at its entrypoint, then what --add, --symlink,
/// --device and --workdir put beside it, in that order (errors about clashes name both).
pub(crate) fn build_layer(opts: &BuildOptions, module: Vec<u8>) -> Result<Tree, Error> {
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

pub(crate) fn utf8_name<'a>(
    path: &Path,
    name: Option<&'a std::ffi::OsStr>,
) -> Result<&'a str, Error> {
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

/// `module` with a custom section (id 0) named `name` holding `payload` appended: the same
/// program (engines skip custom sections, which may come last) in new bytes, so a digest
/// nothing has seen. For tests and benchmarks that need a module no cache knows.
pub fn with_custom_section(module: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = leb128(name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = module.to_vec();
    out.push(0);
    out.extend(leb128(body.len()));
    out.extend(body);
    out
}

/// Unsigned LEB128, wasm's encoding of sizes.
fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_custom_section_goes_last_with_its_size_in_leb128() {
        let module = b"\0asm\x01\0\0\0";
        let payload = vec![7u8; 200];
        let out = super::with_custom_section(module, "id", &payload);
        assert_eq!(&out[..8], module);
        // id 0, then the body's size (1 + 2 + 200 = 203 = 0xcb 0x01), then the name.
        assert_eq!(&out[8..13], &[0, 0xcb, 0x01, 2, b'i']);
        assert_eq!(out[13], b'd');
        assert_eq!(&out[14..], &payload[..]);
    }

    use super::*;
    use crate::test_support::{build_with, chmod, write_module, Layout, EMPTY_MODULE};
    use serde_json::json;
    use std::os::unix::fs::symlink;

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
    fn native_modules_must_be_elf() {
        let dir = tempfile::tempdir().unwrap();
        let elf = write_module(dir.path(), "pause", b"\x7fELF\x02\x01\x01");
        assert!(load_module(Path::new(&elf), true).is_ok());
        let wasm = write_module(dir.path(), "m.wasm", EMPTY_MODULE);
        let err = load_module(Path::new(&wasm), true).err().unwrap();
        assert!(
            err.to_string().contains("is not an ELF executable"),
            "{err}"
        );
        assert!(is_elf(b"\x7fELF") && !is_elf(EMPTY_MODULE));
    }

    #[test]
    fn tree_merges_directories_and_refuses_files_under_files() {
        let mut tree = Tree::default();
        tree.add_dir("a", 0o700, "first").unwrap();
        tree.add_dir("a", 0o755, "second").unwrap();
        tree.add_file("a/f", 0o644, b"x".to_vec(), "file").unwrap();
        let err = tree
            .add_file("a/f/g", 0o644, Vec::new(), "under")
            .err()
            .unwrap();
        assert!(err.to_string().contains("/a/f is not a directory"), "{err}");
        assert_eq!(join_image_path("", "x"), "x");
        assert_eq!(join_image_path("a/b", "x"), "a/b/x");
        assert_eq!(
            ancestors_and_self("a/b/c").collect::<Vec<_>>(),
            ["a", "a/b", "a/b/c"]
        );
    }
}
