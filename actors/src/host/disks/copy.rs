//! The `copy` disk backend: each VM gets its own file `<vm>.img`, a reflink of the base
//! (`FICLONE`: instant, shares extents until written) where the filesystem supports it, else a
//! sparse copy that keeps the base's holes (`SEEK_DATA`/`SEEK_HOLE` + `copy_file_range`), grown
//! to the requested size with `set_len`. The copy is made as `<vm>.img.part` and renamed when
//! complete, after the manifest (see [`super::layout`]).
//!
//! Data is not `fsync`ed: a disk that did not survive a host crash is found by the directory scan
//! (its VM is gone too) and removed, so durability would only cost time.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::Whence;

use super::layout::{check_vm_name, DiskManifest, DisksDir, FileRole};
use super::{disk_sizes, BackendKind, DiskEntry, DiskSpec, DiskState, Disks, DisksError, VmDisk};

mod ioctl {
    // FICLONE = _IOW(0x94, 9, int): make the destination share the source's extents.
    nix::ioctl_write_int!(ficlone, 0x94, 9);
}

/// How a copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// Extents shared with the base (`FICLONE`).
    Reflink,
    /// Data ranges copied, holes kept.
    Sparse,
}

/// Makes `dst` (an empty file) a copy of `src`: a reflink when the filesystem can, else a
/// sparse copy. `dst` ends up exactly as long as `src`.
pub fn clone_or_copy(src: &File, dst: &File) -> io::Result<CopyMethod> {
    // SAFETY: FICLONE takes the source descriptor as its argument and touches no memory.
    match unsafe { ioctl::ficlone(dst.as_raw_fd(), src.as_raw_fd() as libc::c_ulong as _) } {
        Ok(_) => return Ok(CopyMethod::Reflink),
        Err(Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EINVAL | Errno::ENOTTY | Errno::ENOSYS) => {}
        Err(e) => return Err(e.into()),
    }
    sparse_copy(src, dst)?;
    Ok(CopyMethod::Sparse)
}

/// Copies the data ranges of `src` into `dst` at the same offsets, leaving holes as holes,
/// then sets `dst`'s length to `src`'s.
pub fn sparse_copy(src: &File, dst: &File) -> io::Result<()> {
    let len = src.metadata()?.len() as i64;
    let mut pos: i64 = 0;
    while pos < len {
        let data = match nix::unistd::lseek(src, pos, Whence::SeekData) {
            Ok(off) => off,
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = nix::unistd::lseek(src, data, Whence::SeekHole)?.min(len);
        copy_range(src, dst, data, hole - data)?;
        pos = hole;
    }
    dst.set_len(len as u64)
}

/// Copies `len` bytes at `off` of `src` to the same offset of `dst`, with `copy_file_range`
/// (in-kernel) or, where that is refused, `pread`/`pwrite`.
fn copy_range(src: &File, dst: &File, off: i64, len: i64) -> io::Result<()> {
    let mut done: i64 = 0;
    while done < len {
        let (mut off_in, mut off_out) = (off + done, off + done);
        let want = (len - done).min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the duration of the call and the offsets are
        // valid `loff_t`s it may update.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &raw mut off_in,
                dst.as_raw_fd(),
                &raw mut off_out,
                want,
                0,
            )
        };
        let result = if n < 0 {
            Err(Errno::last())
        } else {
            Ok(n as usize)
        };
        match result {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "base image shrank during copy",
                ))
            }
            Ok(n) => done += n as i64,
            Err(Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL) => {
                return rw_copy(src, dst, off + done, len - done);
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn rw_copy(src: &File, dst: &File, off: i64, len: i64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut done: u64 = 0;
    let (off, len) = (off as u64, len as u64);
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = src.read_at(&mut buf[..want], off + done)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "base image shrank during copy",
            ));
        }
        dst.write_all_at(&buf[..n], off + done)?;
        done += n as u64;
    }
    Ok(())
}

/// The `copy` backend over a disks directory.
#[derive(Debug)]
pub struct CopyDisks {
    dir: DisksDir,
    last_method: Option<CopyMethod>,
}

impl CopyDisks {
    /// The backend for disks under `dir` (which must exist).
    pub fn new(dir: &Path) -> Self {
        CopyDisks {
            dir: DisksDir::new(dir),
            last_method: None,
        }
    }

    /// How the last disk was made (reflink or sparse copy), for logs and benchmarks.
    pub fn last_method(&self) -> Option<CopyMethod> {
        self.last_method
    }

    fn make(&mut self, spec: &DiskSpec, size: u64) -> Result<PathBuf, DisksError> {
        let part = self.dir.path(&spec.vm, FileRole::Part);
        let image = self.dir.path(&spec.vm, FileRole::Image);
        let src = File::open(&spec.base).map_err(|source| DisksError::Base {
            path: spec.base.clone(),
            source,
        })?;
        let dst = DisksDir::create_new(&part)?;
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| DisksError::Io { op, path, source }
        };
        self.last_method = Some(clone_or_copy(&src, &dst).map_err(io("copy base into", &part))?);
        dst.set_len(size).map_err(io("resize", &part))?;
        std::fs::rename(&part, &image).map_err(io("rename", &part))?;
        Ok(image)
    }
}

impl Disks for CopyDisks {
    fn backend(&self) -> BackendKind {
        BackendKind::Copy
    }

    fn create(&mut self, spec: &DiskSpec) -> Result<VmDisk, DisksError> {
        check_vm_name(&spec.vm)?;
        let (size, _) = disk_sizes(spec)?;
        if self.dir.exists(&spec.vm) {
            return Err(DisksError::Exists {
                vm: spec.vm.clone(),
            });
        }
        self.dir.write(&DiskManifest {
            vm: spec.vm.clone(),
            backend: BackendKind::Copy,
            base: spec.base.clone(),
            size,
        })?;
        match self.make(spec, size) {
            Ok(path) => Ok(VmDisk {
                vm: spec.vm.clone(),
                path,
                backend: BackendKind::Copy,
                size,
            }),
            Err(e) => {
                let _ = self.remove(&spec.vm);
                Err(e)
            }
        }
    }

    fn remove(&mut self, vm: &str) -> Result<bool, DisksError> {
        check_vm_name(vm)?;
        let mut removed = false;
        // The manifest goes last, so a crash midway still leaves it to find.
        for role in [
            FileRole::Part,
            FileRole::Image,
            FileRole::Cow,
            FileRole::ManifestTmp,
            FileRole::Manifest,
        ] {
            removed |= self.dir.remove_file(vm, role)?;
        }
        Ok(removed)
    }

    fn list(&mut self) -> Result<Vec<DiskEntry>, DisksError> {
        Ok(self
            .dir
            .scan()?
            .into_iter()
            .map(|(vm, found)| {
                let image = found.files.get(&FileRole::Image).cloned();
                let ready = found.manifest.is_some()
                    && image.is_some()
                    && !found.files.contains_key(&FileRole::Part);
                let record = found.manifest.as_ref();
                DiskEntry {
                    backend: record.map_or(BackendKind::Copy, |r| r.backend),
                    path: image.or_else(|| found.files.get(&FileRole::Part).cloned()),
                    base: record.map(|r| r.base.clone()),
                    size: record.map(|r| r.size),
                    state: if ready {
                        DiskState::Ready
                    } else {
                        DiskState::Partial
                    },
                    vm,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    fn spec(vm: &str, base: &Path, size: Option<u64>) -> DiskSpec {
        DiskSpec {
            vm: vm.into(),
            base: base.into(),
            size,
        }
    }

    /// A 4 MiB base with 64 KiB of data at 0 and at 2 MiB, holes elsewhere.
    fn sparse_base(dir: &Path) -> PathBuf {
        let path = dir.join("base.img");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![0xAB; 65536]).unwrap();
        f.seek(SeekFrom::Start(2 << 20)).unwrap();
        f.write_all(&vec![0xCD; 65536]).unwrap();
        f.set_len(4 << 20).unwrap();
        path
    }

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let base = sparse_base(dir.path());
        let out = dir.path().join("out");
        let (src, dst) = (File::open(&base).unwrap(), File::create(&out).unwrap());
        sparse_copy(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&base).unwrap(), std::fs::read(&out).unwrap());
        let blocks = std::fs::metadata(&out).unwrap().blocks() * 512;
        assert!(
            blocks < 1 << 20,
            "{blocks} bytes allocated for 128 KiB of data"
        );
    }

    #[test]
    fn read_write_fallback_copies_a_range() {
        let dir = tempfile::tempdir().unwrap();
        let base = sparse_base(dir.path());
        let out = dir.path().join("out");
        let (src, dst) = (File::open(&base).unwrap(), File::create(&out).unwrap());
        rw_copy(&src, &dst, 2 << 20, 65536).unwrap();
        let got = std::fs::read(&out).unwrap();
        assert_eq!(got.len(), (2 << 20) + 65536);
        assert!(got[(2 << 20)..].iter().all(|&b| b == 0xCD));
        // Reading past the end is an error, not a silent short copy.
        assert!(rw_copy(&src, &dst, (4 << 20) - 10, 100).is_err());
    }

    #[test]
    fn create_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let base = sparse_base(dir.path());
        let disks_dir = dir.path().join("disks");
        std::fs::create_dir(&disks_dir).unwrap();
        let mut d = CopyDisks::new(&disks_dir);
        let disk = d.create(&spec("web", &base, Some(8 << 20))).unwrap();
        assert_eq!(disk.size, 8 << 20);
        assert_eq!(std::fs::metadata(&disk.path).unwrap().len(), 8 << 20);
        assert!(d.last_method().is_some());
        let list = d.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].state, DiskState::Ready);
        assert!(matches!(
            d.create(&spec("web", &base, None)),
            Err(DisksError::Exists { .. })
        ));
        assert!(d.remove("web").unwrap());
        assert!(!d.remove("web").unwrap());
        assert_eq!(std::fs::read_dir(&disks_dir).unwrap().count(), 0);
    }

    #[test]
    fn failures_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let base = sparse_base(dir.path());
        let mut d = CopyDisks::new(dir.path());
        let before = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(matches!(
            d.create(&spec("web", &base, Some(1 << 20))),
            Err(DisksError::TooSmall { .. })
        ));
        assert!(matches!(
            d.create(&spec("web", &dir.path().join("missing"), None)),
            Err(DisksError::Base { .. })
        ));
        assert!(matches!(
            d.create(&spec("../web", &base, None)),
            Err(DisksError::InvalidVmName { .. })
        ));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before);
    }

    #[test]
    fn half_made_disk_is_listed_as_partial() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = CopyDisks::new(dir.path());
        d.dir
            .write(&DiskManifest {
                vm: "crashed".into(),
                backend: BackendKind::Copy,
                base: "/b".into(),
                size: 512,
            })
            .unwrap();
        std::fs::write(d.dir.path("crashed", FileRole::Part), b"half").unwrap();
        let list = d.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].state, DiskState::Partial);
        assert!(d.remove("crashed").unwrap());
        assert!(d.list().unwrap().is_empty());
    }
}
