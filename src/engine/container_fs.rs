//! The guest's filesystem: wasmer's host filesystem over the container root, with a few fixes
//! (this one first; the others are at their functions).
//!
//! virtual-fs has no "read-only filesystem" error: `From<io::Error> for FsError` turns EROFS
//! into `UnknownError`, which reaches the guest as EIO. Worse, wasmer-wasix's `path_open`
//! first opens every regular file read-write (to share one handle per inode) and falls back
//! to the requested mode only on `PermissionDenied` — so on a read-only mount even a plain
//! read failed with EIO. Here a failure of a mutating operation on a read-only mount is
//! reported as `PermissionDenied`: reads then work, and writes fail as EACCES, what WASI
//! runtimes commonly report for a read-only directory. The kernel still does the enforcing.

use std::path::{Path, PathBuf};

use nix::sys::statvfs::{statvfs, FsFlags};
use wasmer_wasix::virtual_fs::{
    self, host_fs, FileOpener, FileSystem, FsError, Metadata, OpenOptions, OpenOptionsConfig,
    ReadDir, VirtualFile,
};

use super::host_file::HostFile;

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

#[derive(Debug)]
pub struct ContainerFs {
    inner: host_fs::FileSystem,
}

impl ContainerFs {
    pub fn new(inner: host_fs::FileSystem) -> ContainerFs {
        ContainerFs { inner }
    }
}

/// True when `path`, or the nearest existing directory above it, is on a read-only mount.
fn on_readonly_mount(path: &Path) -> bool {
    path.ancestors()
        .find_map(|p| statvfs(p).ok())
        .is_some_and(|s| s.flags().contains(FsFlags::ST_RDONLY))
}

/// Maps the opaque error of a refused write on a read-only mount to PermissionDenied.
fn writing<T>(path: &Path, result: virtual_fs::Result<T>) -> virtual_fs::Result<T> {
    match result {
        Err(FsError::UnknownError) if on_readonly_mount(path) => Err(FsError::PermissionDenied),
        other => other,
    }
}

/// The host file is never opened with O_APPEND: wasmer-wasix's `fd_write` (syscalls/wasi/
/// fd_write.rs) does append itself, seeking to the end when the descriptor has
/// `fdflags::append`, and `fd_fdstat_set_flags` can clear that flag only in wasmer's table. A
/// host handle opened with O_APPEND (which `path_open` asks for when it creates a file with
/// APPEND) would keep appending after the guest turned append off.
fn without_append(conf: &OpenOptionsConfig) -> OpenOptionsConfig {
    OpenOptionsConfig {
        write: conf.write || conf.append,
        append: false,
        ..conf.clone()
    }
}

/// virtual-fs maps ENOTEMPTY (renaming a directory over a non-empty one) to the opaque
/// `UnknownError` (EIO to the guest); it is `DirectoryNotEmpty` (NOTEMPTY) when `to` is a
/// directory with entries.
fn not_empty(to: &Path, result: virtual_fs::Result<()>) -> virtual_fs::Result<()> {
    let has_entries = || std::fs::read_dir(to).is_ok_and(|mut d| d.next().is_some());
    match result {
        Err(FsError::UnknownError) if has_entries() => Err(FsError::DirectoryNotEmpty),
        other => other,
    }
}

/// `path` as the host path it is: the container root is the host file system's root here.
fn in_root(path: &Path) -> PathBuf {
    Path::new("/").join(path.strip_prefix("/").unwrap_or(path))
}

fn wants_write(conf: &OpenOptionsConfig) -> bool {
    conf.write || conf.append || conf.truncate || conf.create || conf.create_new
}

impl FileSystem for ContainerFs {
    fn readlink(&self, path: &Path) -> virtual_fs::Result<PathBuf> {
        self.inner.readlink(path)
    }

    fn read_dir(&self, path: &Path) -> virtual_fs::Result<ReadDir> {
        self.inner.read_dir(path)
    }

    fn create_dir(&self, path: &Path) -> virtual_fs::Result<()> {
        writing(path, self.inner.create_dir(path))
    }

    /// virtual-fs's host file system cannot create symlinks (the trait's default answers
    /// Unsupported), and wasmer-wasix's `path_symlink` then keeps the link in memory only: it
    /// never reached the container's file system, a volume, or another process. `source` is
    /// the link's text, written as given.
    fn create_symlink(&self, source: &Path, target: &Path) -> virtual_fs::Result<()> {
        let made = std::os::unix::fs::symlink(source, in_root(target)).map_err(FsError::from);
        writing(target, made)
    }

    /// Never reached for a guest's `path_link`: virtual-fs's blanket `FileSystem` impl for
    /// `Arc<dyn FileSystem>` does not forward `hard_link`; `wasi_fixes` links on the host.
    fn hard_link(&self, source: &Path, target: &Path) -> virtual_fs::Result<()> {
        writing(target, self.inner.hard_link(source, target))
    }

    fn remove_dir(&self, path: &Path) -> virtual_fs::Result<()> {
        writing(path, self.inner.remove_dir(path))
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> BoxFuture<'a, virtual_fs::Result<()>> {
        Box::pin(async move { writing(to, not_empty(to, self.inner.rename(from, to).await)) })
    }

    fn metadata(&self, path: &Path) -> virtual_fs::Result<Metadata> {
        self.inner.metadata(path)
    }

    fn symlink_metadata(&self, path: &Path) -> virtual_fs::Result<Metadata> {
        self.inner.symlink_metadata(path)
    }

    fn remove_file(&self, path: &Path) -> virtual_fs::Result<()> {
        writing(path, self.inner.remove_file(path))
    }

    fn new_open_options(&self) -> OpenOptions<'_> {
        OpenOptions::new(self)
    }
}

impl FileOpener for ContainerFs {
    /// Opens as virtual-fs's host file system does (append ignored with truncate, see
    /// [`without_append`]), but hands out a [`HostFile`], whose writes are done when they
    /// return.
    fn open(
        &self,
        path: &Path,
        conf: &OpenOptionsConfig,
    ) -> virtual_fs::Result<Box<dyn VirtualFile + Send + Sync + 'static>> {
        let conf = without_append(conf);
        let host_path = in_root(path);
        let opened = std::fs::OpenOptions::new()
            .read(conf.read)
            .write(conf.write)
            .create(conf.create)
            .create_new(conf.create_new)
            .truncate(conf.truncate)
            .open(&host_path)
            .map_err(FsError::from)
            .map(|file| {
                Box::new(HostFile::new(file, host_path)) as Box<dyn VirtualFile + Send + Sync>
            });
        if wants_write(&conf) {
            writing(path, opened)
        } else {
            opened
        }
    }
}
