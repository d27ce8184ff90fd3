//! The image store: kernels and base root filesystems under `<data_dir>/images/`, imported
//! from a path (copied, checked, sha256 recorded), listed and removed. The supervisor sees it
//! only through its image catalog port (`hearth_actors::supervisor::ImageCatalog`), which
//! resolves names to files.
//!
//! Layout: one directory per image, `<data_dir>/images/<name>/`, holding `image` (the data)
//! and `meta.json` ([`ImageMeta`]; the metadata moves to the SQLite store later, only
//! [`meta`] changes then). An import is all-or-nothing: it copies into a temporary directory
//! `<data_dir>/images/.import-<name>-<pid>-<n>/` (names never start with `.`, so it can never
//! be taken for an image), checks the copy, writes and `fsync`s both files, then renames the
//! directory into place with `RENAME_NOREPLACE` (so two imports of one name cannot both win).
//! Any failure removes the temporary directory; temporaries left by a crash are removed by
//! [`ImageStore::open`].
//!
//! Checks on import: a safe name ([`detect::name_problem`]), a regular file, and for a kernel
//! an `x86_64` ELF `vmlinux` or a `bzImage`, for a root filesystem an ext4 image that is a whole
//! number of 512-byte sectors and holds its whole filesystem ([`detect`]).

pub mod boot;
mod built;
pub mod detect;
pub mod meta;
pub mod oci;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use hearth_proto::api_images::{ImageFormat, ImageKind};
use sha2::{Digest, Sha256};

pub use self::detect::KernelFormat;
pub use self::meta::ImageMeta;

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    /// The name cannot be used.
    #[error("Invalid image name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An image of that name exists already.
    #[error("Image {name} already exists")]
    Exists {
        /// The name.
        name: String,
    },
    /// No image of that name.
    #[error("Image {name} not found")]
    NotFound {
        /// The name.
        name: String,
    },
    /// The image is used by a VM and cannot be removed.
    #[error("Image {name} is in use")]
    InUse {
        /// The name.
        name: String,
    },
    /// The source cannot be read.
    #[error("Cannot read {path}")]
    Source {
        /// The source path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The source is not a regular file (a directory, FIFO, socket, device or symlink).
    #[error("{path} is not a regular file but {what}")]
    NotAFile {
        /// The source path.
        path: PathBuf,
        /// What it is, e.g. "a FIFO".
        what: &'static str,
    },
    /// The source is not a kernel Firecracker can boot.
    #[error("{path} is not a kernel: {reason}")]
    NotAKernel {
        /// The source path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The source is not an ext4 root filesystem image.
    #[error("{path} is not an ext4 image: {reason}")]
    NotExt4 {
        /// The source path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The root filesystem is not a whole number of 512-byte sectors.
    #[error("{path} is {size} bytes, not a whole number of 512-byte sectors")]
    NotSectors {
        /// The source path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The source changed size while it was copied.
    #[error("{path} changed while it was imported")]
    SourceChanged {
        /// The source path.
        path: PathBuf,
    },
    /// A file operation in the store failed.
    #[error("Cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A metadata file is unreadable.
    #[error("Cannot parse image metadata {path}")]
    Meta {
        /// The metadata file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImagesError {
    let path = path.to_path_buf();
    move |source| ImagesError::Io { op, path, source }
}

/// File name of an image's data inside its directory.
pub const DATA_FILE: &str = "image";
const TEMP_PREFIX: &str = ".import-";
const TRASH_PREFIX: &str = ".remove-";
const CHUNK: usize = 1 << 20;
const BLOCK: usize = 4096;

static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// The image store under a data directory. Clones share one [`Guard`]: keep one store per
/// data directory in a process (hearthd builds it once and hands clones to the supervisor's
/// image port and to the API).
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
    guard: Arc<Mutex<Guard>>,
}

/// What serializes a create's image resolution with removals: the removals in progress, by
/// image name. A removal that began before a resolution of its image and finishes after it
/// is refused (the create's VM may not be in the list of VMs the removal checked).
#[derive(Debug, Default)]
struct Guard {
    removing: HashMap<String, Removing>,
}

#[derive(Debug, Default)]
struct Removing {
    /// Removals of this name in progress.
    removers: usize,
    /// A resolution of this name happened since the oldest of them began.
    resolved: bool,
}

impl ImageStore {
    /// Opens (creating if needed) `<data_dir>/images/`, removing temporaries left by a crash:
    /// those whose process (the pid in their name) is gone, so another process importing into
    /// the same store at the same time keeps its own.
    #[expect(
        clippy::disallowed_methods,
        reason = "the image store is the one owner of its directory tree"
    )]
    pub fn open(data_dir: &Path) -> Result<Self, ImagesError> {
        let dir = data_dir.join("images");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = name.starts_with(TEMP_PREFIX) || name.starts_with(TRASH_PREFIX);
            if ours && !temp_owner_alive(&name) {
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(ImageStore {
            dir,
            guard: Arc::default(),
        })
    }

    fn guard(&self) -> MutexGuard<'_, Guard> {
        // The guard holds counters only: a panic elsewhere cannot leave them half-updated.
        self.guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The data file of image `name` if it exists and is of `kind`: what a create (or a
    /// start) boots from. Serialized with removals: an image resolved here is not removed
    /// by a removal that was already under way (see [`ImageStore::begin_removal`]).
    pub fn resolve(&self, kind: ImageKind, name: &str) -> Option<PathBuf> {
        let mut guard = self.guard();
        let meta = self.get(name).ok().filter(|m| m.kind == kind)?;
        if let Some(r) = guard.removing.get_mut(name) {
            r.resolved = true;
        }
        Some(self.dir.join(&meta.name).join(DATA_FILE))
    }

    /// Starts removing image `name` (which must exist). The caller then lists the VMs that
    /// use images, and calls [`Removal::finish`] with that list: a create that resolved the
    /// image after this call, whose VM the list may miss, makes the removal fail as in use.
    pub fn begin_removal(&self, name: &str) -> Result<Removal, ImagesError> {
        self.checked_dir(name)?;
        self.get(name)?;
        self.guard()
            .removing
            .entry(name.to_owned())
            .or_default()
            .removers += 1;
        Ok(Removal {
            store: self.clone(),
            name: name.to_owned(),
        })
    }

    /// The store's directory, `<data_dir>/images`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn checked_dir(&self, name: &str) -> Result<PathBuf, ImagesError> {
        if let Some(reason) = detect::name_problem(name) {
            return Err(ImagesError::InvalidName {
                name: name.into(),
                reason,
            });
        }
        Ok(self.dir.join(name))
    }

    /// The data file of image `name` (what Firecracker's `kernel_image_path` or the
    /// snapshot's base points at). Fails if there is no such image.
    pub fn path(&self, name: &str) -> Result<PathBuf, ImagesError> {
        let dir = self.checked_dir(name)?;
        self.get(name)?;
        Ok(dir.join(DATA_FILE))
    }

    /// The metadata of image `name`.
    pub fn get(&self, name: &str) -> Result<ImageMeta, ImagesError> {
        let dir = self.checked_dir(name)?;
        meta::read(&dir)?.ok_or_else(|| ImagesError::NotFound { name: name.into() })
    }

    /// Every image, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageMeta>, ImagesError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("read", &self.dir))? {
            let entry = entry.map_err(io_err("read", &self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if detect::name_problem(name).is_some() {
                continue;
            }
            if let Some(m) = meta::read(&entry.path())? {
                out.push(m);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Imports the file `src` as image `name` of `kind`: copies it (keeping holes), checks
    /// the copy, records its sha256, and makes it visible atomically. `progress(copied, total)`
    /// is called after every MiB copied (and once at the end). On any error nothing is left in
    /// the store.
    #[expect(
        clippy::disallowed_methods,
        reason = "the image store is the one owner of its directory tree"
    )]
    pub fn import(
        &self,
        name: &str,
        kind: ImageKind,
        src: &Path,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<ImageMeta, ImagesError> {
        let final_dir = self.checked_dir(name)?;
        if final_dir.symlink_metadata().is_ok() {
            return Err(ImagesError::Exists { name: name.into() });
        }
        let source_err = |source| ImagesError::Source {
            path: src.into(),
            source,
        };
        let mut input = open_regular(src)?;
        let total = input.metadata().map_err(source_err)?.len();
        // Refuse early, before copying, what cannot pass; the copy is checked again below.
        let mut header = vec![0u8; detect::HEADER_LEN.min(total as usize)];
        input.read_exact(&mut header).map_err(source_err)?;
        let format = check(kind, src, &header, total)?;

        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!("{TEMP_PREFIX}{name}-{}-{n}", std::process::id()));
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        let result = self.fill(
            &tmp,
            &final_dir,
            name,
            kind,
            format,
            src,
            &input,
            total,
            &mut progress,
        );
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    #[expect(clippy::too_many_arguments, reason = "one private step of import")]
    fn fill(
        &self,
        tmp: &Path,
        final_dir: &Path,
        name: &str,
        kind: ImageKind,
        format: ImageFormat,
        src: &Path,
        input: &File,
        total: u64,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<ImageMeta, ImagesError> {
        let data = tmp.join(DATA_FILE);
        let out = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&data)
            .map_err(io_err("create", &data))?;
        let sha256 = copy_sparse_hashing(input, &out, total, src, &data, progress)?;
        // Check what was copied, not what the source was when we first looked.
        let mut header = vec![0u8; detect::HEADER_LEN.min(total as usize)];
        out.read_exact_at(&mut header, 0)
            .map_err(io_err("read", &data))?;
        check(kind, src, &header, total)?;
        out.sync_all().map_err(io_err("sync", &data))?;
        let meta = ImageMeta {
            name: name.into(),
            kind,
            format,
            size: total,
            sha256,
            source: src.into(),
            imported_unix: now_unix(),
            oci: None,
        };
        self.publish(tmp, final_dir, meta)
    }

    /// Writes `meta` into the filled temporary directory `tmp` and renames it to `final_dir`
    /// (refused if that exists), syncing both so the image survives a crash whole or not at all.
    fn publish(
        &self,
        tmp: &Path,
        final_dir: &Path,
        meta: ImageMeta,
    ) -> Result<ImageMeta, ImagesError> {
        let name = meta.name.as_str();
        meta::write(tmp, &meta)?;
        File::open(tmp)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", tmp))?;
        match nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            tmp,
            nix::fcntl::AT_FDCWD,
            final_dir,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {}
            Err(nix::errno::Errno::EEXIST) => {
                return Err(ImagesError::Exists { name: name.into() })
            }
            Err(e) => return Err(io_err("rename", tmp)(e.into())),
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", &self.dir))?;
        Ok(meta)
    }

    /// Removes image `name` unless `in_use(name)` says a VM uses it: [`Self::begin_removal`]
    /// then [`Removal::finish`], for callers whose `in_use` is already current.
    pub fn remove(&self, name: &str, in_use: impl Fn(&str) -> bool) -> Result<(), ImagesError> {
        self.begin_removal(name)?.finish(in_use)
    }
}

/// A removal under way ([`ImageStore::begin_removal`]); dropping it abandons the removal.
#[derive(Debug)]
pub struct Removal {
    store: ImageStore,
    name: String,
}

impl Removal {
    /// Removes the image unless `in_use(name)` says a VM uses it, or a resolution of it
    /// happened since the removal began. The image disappears atomically (renamed away under
    /// the guard, so no resolution sees it half-removed, then deleted).
    #[expect(
        clippy::disallowed_methods,
        reason = "the image store is the one owner of its directory tree"
    )]
    pub fn finish(self, in_use: impl Fn(&str) -> bool) -> Result<(), ImagesError> {
        let name = &self.name;
        let trash = {
            let guard = self.store.guard();
            let resolved = guard.removing.get(name).is_some_and(|r| r.resolved);
            if resolved || in_use(name) {
                return Err(ImagesError::InUse { name: name.clone() });
            }
            let dir = self.store.checked_dir(name)?;
            self.store.get(name)?;
            let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
            let trash = self
                .store
                .dir
                .join(format!("{TRASH_PREFIX}{name}-{}-{n}", std::process::id()));
            fs::rename(&dir, &trash).map_err(io_err("rename", &dir))?;
            drop(guard);
            trash
        };
        fs::remove_dir_all(&trash).map_err(io_err("remove", &trash))
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        let mut guard = self.store.guard();
        if let Some(r) = guard.removing.get_mut(&self.name) {
            r.removers -= 1;
            if r.removers == 0 {
                guard.removing.remove(&self.name);
            }
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a file type is, for [`ImagesError::NotAFile`]; `None` for a regular file.
fn not_regular(ft: fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    Some(if ft.is_file() {
        return None;
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link (name the file it points to)"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_char_device() {
        "a character device"
    } else {
        "not a file"
    })
}

/// Opens `src` for reading only if it is a regular file. Opening is what hangs on a FIFO
/// (until a writer comes) or has side effects on a device, so the type is checked before
/// (`lstat`), and again on the descriptor (`fstat`) in case the path was swapped meanwhile;
/// `O_NOFOLLOW` refuses a symlink put there, `O_NONBLOCK` keeps a FIFO from blocking the open.
fn open_regular(src: &Path) -> Result<File, ImagesError> {
    use std::os::unix::fs::OpenOptionsExt;
    let source_err = |source| ImagesError::Source {
        path: src.into(),
        source,
    };
    let refuse = |what| ImagesError::NotAFile {
        path: src.into(),
        what,
    };
    let before = src.symlink_metadata().map_err(source_err)?;
    if let Some(what) = not_regular(before.file_type()) {
        return Err(refuse(what));
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(src)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refuse("a symbolic link (name the file it points to)"),
            _ => source_err(e),
        })?;
    let md = file.metadata().map_err(source_err)?;
    if let Some(what) = not_regular(md.file_type()) {
        return Err(refuse(what));
    }
    Ok(file)
}

/// True when the process that made the temporary `name` (`.import-<image>-<pid>-<n>`) is
/// still running.
fn temp_owner_alive(name: &str) -> bool {
    let mut parts = name.rsplitn(3, '-');
    let (_n, pid) = (parts.next(), parts.next());
    match pid.and_then(|p| p.parse::<u32>().ok()) {
        Some(pid) => hearth_actors::host::procfs::exists(&pid.to_string()),
        None => false,
    }
}

/// Checks an image's header and size for `kind`; the format it was recognised as.
fn check(kind: ImageKind, src: &Path, header: &[u8], len: u64) -> Result<ImageFormat, ImagesError> {
    match kind {
        ImageKind::Kernel => detect::detect_kernel(header)
            .map(|f| match f {
                KernelFormat::Elf => ImageFormat::Elf,
                KernelFormat::BzImage => ImageFormat::BzImage,
            })
            .map_err(|reason| ImagesError::NotAKernel {
                path: src.into(),
                reason,
            }),
        ImageKind::Rootfs => {
            if len % 512 != 0 {
                return Err(ImagesError::NotSectors {
                    path: src.into(),
                    size: len,
                });
            }
            detect::check_ext4(header, len)
                .map(|_| ImageFormat::Ext4)
                .map_err(|reason| ImagesError::NotExt4 {
                    path: src.into(),
                    reason,
                })
        }
    }
}

/// Copies `total` bytes of `input` to `out`, hashing everything and writing only the 4 KiB
/// blocks that are not all zero (so holes stay holes); returns the hex sha256.
fn copy_sparse_hashing(
    input: &File,
    out: &File,
    total: u64,
    src: &Path,
    dst: &Path,
    progress: &mut impl FnMut(u64, u64),
) -> Result<String, ImagesError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos: u64 = 0;
    while pos < total {
        let want = (total - pos).min(CHUNK as u64) as usize;
        let chunk = &mut buf[..want];
        input.read_exact_at(chunk, pos).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                ImagesError::SourceChanged { path: src.into() }
            } else {
                ImagesError::Source {
                    path: src.into(),
                    source: e,
                }
            }
        })?;
        hasher.update(&*chunk);
        write_nonzero(out, chunk, pos).map_err(io_err("write", dst))?;
        pos += want as u64;
        progress(pos, total);
    }
    out.set_len(total).map_err(io_err("resize", dst))?;
    if total == 0 {
        progress(0, 0);
    }
    if input.metadata().map(|m| m.len()).ok() != Some(total) {
        return Err(ImagesError::SourceChanged { path: src.into() });
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Writes the runs of non-zero 4 KiB blocks of `chunk` at `pos`.
fn write_nonzero(out: &File, chunk: &[u8], pos: u64) -> io::Result<()> {
    let mut run_start: Option<usize> = None;
    let mut off = 0;
    while off < chunk.len() {
        let end = (off + BLOCK).min(chunk.len());
        let zero = chunk[off..end].iter().all(|&b| b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(off),
            (true, Some(s)) => {
                out.write_all_at(&chunk[s..off], pos + s as u64)?;
                run_start = None;
            }
            _ => {}
        }
        off = end;
    }
    if let Some(s) = run_start {
        out.write_all_at(&chunk[s..], pos + s as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::detect::tests::{bzimage, elf, ext4};
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn store() -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn write(dir: &Path, name: &str, bytes: &[u8], len: u64) -> PathBuf {
        let p = dir.join(name);
        let f = File::create(&p).unwrap();
        f.write_all_at(bytes, 0).unwrap();
        f.set_len(len).unwrap();
        p
    }

    #[test]
    fn import_keeps_holes_and_hashes_everything() {
        let (dir, s) = store();
        let mut sb = ext4(1024, 0x40);
        sb.resize(8192, 0);
        sb[5000] = 1;
        let src = write(dir.path(), "src.ext4", &sb, 4 << 20);
        let mut calls = Vec::new();
        let m = s
            .import("root", ImageKind::Rootfs, &src, |c, t| calls.push((c, t)))
            .unwrap();
        assert_eq!(
            calls,
            [
                (1 << 20, 4 << 20),
                (2 << 20, 4 << 20),
                (3 << 20, 4 << 20),
                (4 << 20, 4 << 20)
            ]
        );
        let expect = format!("{:x}", Sha256::digest(fs::read(&src).unwrap()));
        assert_eq!(m.sha256, expect);
        let data = s.path("root").unwrap();
        assert_eq!(fs::read(&data).unwrap(), fs::read(&src).unwrap());
        assert!(fs::metadata(&data).unwrap().blocks() * 512 <= 64 * 1024);
    }

    #[test]
    fn write_nonzero_skips_zero_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = File::create(&p).unwrap();
        let mut chunk = vec![0u8; 5 * BLOCK + 100];
        chunk[BLOCK + 1] = 7;
        chunk[5 * BLOCK + 50] = 9;
        write_nonzero(&f, &chunk, 0).unwrap();
        f.set_len(chunk.len() as u64).unwrap();
        assert_eq!(fs::read(&p).unwrap(), chunk);
    }

    /// Issue 9, finding 2: importing a FIFO blocked in `open` for ever (until a writer
    /// came). Now refused, like devices, sockets and symlinks, without opening it blocking.
    #[test]
    fn special_files_are_refused_without_blocking() {
        let (dir, s) = store();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let kernel = write(dir.path(), "vmlinux", &elf(2, 62), 1 << 16);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&kernel, &link).unwrap();
        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        // Run on a thread: before the fix the FIFO's open never returns.
        let (tx, rx) = std::sync::mpsc::channel();
        let cases = [
            (fifo, "a FIFO"),
            (PathBuf::from("/dev/null"), "a character device"),
            (link, "a symbolic link"),
            (sock, "a socket"),
            (dir.path().to_path_buf(), "a directory"),
        ];
        let s2 = s.clone();
        std::thread::spawn(move || {
            for (path, what) in cases {
                let r = s2.import("k", ImageKind::Kernel, &path, |_, _| {});
                let _ = tx.send((path, what, r));
            }
        });
        for _ in 0..5 {
            let (path, what, r) = rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("an import of a special file hangs");
            match r {
                Err(e @ ImagesError::NotAFile { .. }) => {
                    assert!(e.to_string().contains(what), "{}: {e}", path.display());
                }
                other => panic!("{}: {other:?}", path.display()),
            }
        }
        assert!(s.list().unwrap().is_empty());
        s.import("k", ImageKind::Kernel, &kernel, |_, _| {})
            .unwrap();
    }

    /// Issue 8: removal raced with create. The removal listed the VMs, a create resolved
    /// the image (its VM not in that list), then the removal deleted the image under it.
    #[test]
    fn a_resolution_during_a_removal_keeps_the_image() {
        let (dir, s) = store();
        let k = write(dir.path(), "vmlinux", &elf(2, 62), 1 << 16);
        s.import("k", ImageKind::Kernel, &k, |_, _| {}).unwrap();
        let removal = s.begin_removal("k").unwrap();
        let vms_listed: Vec<&str> = vec![]; // the list the removal got: no VM yet
        let path = s
            .resolve(ImageKind::Kernel, "k")
            .expect("the create resolves");
        let err = removal.finish(|n| vms_listed.contains(&n)).unwrap_err();
        assert!(matches!(err, ImagesError::InUse { .. }), "{err}");
        assert!(path.exists(), "the image the create resolved was removed");
        // The next removal, with a list that has no VM using it, succeeds; then nothing
        // resolves it.
        s.remove("k", |_| false).unwrap();
        assert_eq!(s.resolve(ImageKind::Kernel, "k"), None);
        assert!(s.guard().removing.is_empty());
    }

    /// The same race run for real between threads: a "create" resolves the image and
    /// records its VM; a "removal" begins, reads the VM records, and finishes. Whatever the
    /// interleaving, an image a create resolved is never removed while its VM exists. The
    /// supervisor resolves and records a create in one handler, so a `ListVms` sees both or
    /// neither: the create holds the VM list's lock across the two, as the mailbox does.
    #[test]
    fn creates_and_removals_in_parallel_never_lose_an_image() {
        let (dir, s) = store();
        let k = write(dir.path(), "vmlinux", &elf(2, 62), 1 << 16);
        for round in 0..100 {
            s.import("k", ImageKind::Kernel, &k, |_, _| {}).unwrap();
            let vms = Arc::new(Mutex::new(Vec::<String>::new()));
            let (s1, v1) = (s.clone(), vms.clone());
            let create = std::thread::spawn(move || {
                let mut listed = v1.lock().unwrap();
                let got = s1.resolve(ImageKind::Kernel, "k");
                if got.is_some() {
                    listed.push("k".to_owned());
                }
                got
            });
            let (s2, v2) = (s.clone(), vms.clone());
            let remove = std::thread::spawn(move || {
                let removal = s2.begin_removal("k")?;
                let listed = v2.lock().unwrap().clone();
                removal.finish(|n| listed.iter().any(|u| u == n))
            });
            let resolved = create.join().unwrap();
            let removed = remove.join().unwrap();
            if let Some(path) = resolved {
                assert!(
                    path.exists(),
                    "round {round}: resolved, then removed ({removed:?})"
                );
                assert!(removed.is_err(), "round {round}");
                s.remove("k", |_| false).unwrap();
            }
            assert!(s.list().unwrap().is_empty(), "round {round}");
        }
    }

    #[test]
    fn kernels_of_both_formats() {
        let (dir, s) = store();
        let k1 = write(dir.path(), "vmlinux", &elf(2, 62), 1 << 16);
        let k2 = write(dir.path(), "bzImage", &bzimage(), 1 << 16);
        let m1 = s.import("k1", ImageKind::Kernel, &k1, |_, _| {}).unwrap();
        let m2 = s.import("k2", ImageKind::Kernel, &k2, |_, _| {}).unwrap();
        assert_eq!(
            (m1.format, m2.format),
            (ImageFormat::Elf, ImageFormat::BzImage)
        );
        let names: Vec<_> = s.list().unwrap().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["k1", "k2"]);
    }
}
