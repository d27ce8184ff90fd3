//! The ext4 image: its size from what the tree holds (data blocks, inodes, journal, metadata)
//! plus headroom, then `mkfs.ext4 -d`, which copies the tree into the new filesystem without
//! mounting anything (owners, modes, hard links, device nodes, extended attributes included).

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::RootfsError;

/// The filesystem's block size.
pub const BLOCK: u64 = 4096;
/// Bytes per inode on disk.
const INODE_SIZE: u64 = 256;
/// The label of the filesystems hearth builds.
pub const LABEL: &str = "hearth-rootfs";
const MIB: u64 = 1 << 20;

/// What a tree needs on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Inodes (distinct files of every type, the root included).
    pub inodes: u64,
    /// Entries (names), hard links counted once per name.
    pub entries: u64,
    /// Bytes of regular-file content, hard-linked files counted once.
    pub content_bytes: u64,
    /// Data blocks, bytes: file content and directories in whole blocks, long symlinks, extended
    /// attributes too large for the inode.
    pub data_bytes: u64,
}

/// Measures the tree at `root` without following symlinks. Iterative (the depth of a tree
/// built from hostile layers is bounded by the path limit, not by the stack).
pub fn usage(root: &Path) -> Result<Usage, RootfsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RootfsError::Io {
            op: "measure",
            path,
            source,
        }
    };
    let blocks = |bytes: u64| bytes.div_ceil(BLOCK) * BLOCK;
    let mut u = Usage {
        inodes: 1,
        entries: 1,
        ..Usage::default()
    };
    let mut seen = HashSet::new();
    let mut work: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = work.pop() {
        let mut dir_bytes = 24u64; // `.` and `..`
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            let md = fs::symlink_metadata(&path).map_err(io(&path))?;
            dir_bytes += (8 + entry.file_name().len() as u64).div_ceil(4) * 4;
            u.entries += 1;
            if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
                continue; // another name of an inode already counted
            }
            u.inodes += 1;
            let ft = md.file_type();
            if ft.is_dir() {
                work.push(path.clone());
            } else if ft.is_file() {
                u.content_bytes += md.len();
                u.data_bytes += blocks(md.len());
            } else if ft.is_symlink() && md.len() >= 60 {
                u.data_bytes += BLOCK;
            }
            if !ft.is_fifo() && !ft.is_socket() && xattr_bytes(&path) > 96 {
                u.data_bytes += BLOCK;
            }
        }
        u.data_bytes += blocks(dir_bytes);
    }
    Ok(u)
}

/// The bytes of `path`'s extended attribute names (a cheap proxy for whether they fit inside
/// the inode; values are bounded by the layer limits).
fn xattr_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: a size query (NULL buffer, length 0) on a NUL-terminated path.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    u64::try_from(n).unwrap_or(0)
}

/// How big to make the filesystem, and its inode and journal sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The filesystem (and file) size in bytes, a multiple of [`BLOCK`].
    pub bytes: u64,
    /// Inodes to make.
    pub inodes: u64,
    /// Journal size in MiB.
    pub journal_mib: u64,
}

/// The journal for a filesystem of `bytes`: 1/64 of it, 4 to 128 MiB.
fn journal_mib(bytes: u64) -> u64 {
    (bytes / MIB / 64).clamp(4, 128)
}

/// The space the content needs before any headroom: data, inode tables, journal, and group
/// metadata (bitmaps, descriptors, reserved descriptors: 3% and a MiB cover them).
fn needed(data_bytes: u64, inodes: u64, journal: u64) -> u64 {
    let base = data_bytes + inodes * INODE_SIZE + journal * MIB;
    base + base.div_ceil(32) + MIB
}

/// Sizes the filesystem for `u`: `explicit` bytes (rounded down to whole blocks; refused when
/// the content does not fit), else the content plus `max(percent of it, min_bytes)` of free
/// space, rounded up to a MiB. Inodes: the tree's plus the same proportion (at least 1024), so
/// the free space can be used for files.
pub fn layout(
    u: &Usage,
    explicit: Option<u64>,
    headroom_percent: u32,
    min_headroom_bytes: u64,
) -> Result<Layout, RootfsError> {
    let pct = u64::from(headroom_percent);
    let inodes = u.inodes + (u.inodes * pct / 100).max(1024);
    if let Some(size) = explicit {
        let bytes = size / BLOCK * BLOCK;
        let journal = journal_mib(bytes);
        let need = needed(u.data_bytes, inodes, journal);
        if bytes < need {
            return Err(RootfsError::TooSmall { size, needed: need });
        }
        return Ok(Layout {
            bytes,
            inodes,
            journal_mib: journal,
        });
    }
    let headroom = (u.data_bytes * pct / 100).max(min_headroom_bytes);
    let mut journal = journal_mib(u.data_bytes + headroom);
    let mut bytes = (needed(u.data_bytes, inodes, journal) + headroom).div_ceil(MIB) * MIB;
    // The journal follows the final size; one more round settles it.
    if journal_mib(bytes) != journal {
        journal = journal_mib(bytes);
        bytes = (needed(u.data_bytes, inodes, journal) + headroom).div_ceil(MIB) * MIB;
    }
    Ok(Layout {
        bytes,
        inodes,
        journal_mib: journal,
    })
}

/// The argv of `mkfs.ext4` copying `tree` into `out` (a file already `layout.bytes` long).
pub fn mkfs_args(tree: &Path, out: &Path, layout: &Layout) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = [
        "-q",
        "-F",
        "-t",
        "ext4",
        "-b",
        "4096",
        "-I",
        "256",
        "-m",
        "0",
        "-L",
        LABEL,
        "-E",
        "root_owner=0:0",
    ]
    .iter()
    .map(Into::into)
    .collect();
    args.push("-N".into());
    args.push(layout.inodes.to_string().into());
    args.push("-J".into());
    args.push(format!("size={}", layout.journal_mib).into());
    args.push("-d".into());
    args.push(tree.into());
    args.push(out.into());
    args
}

/// Creates `out` (`layout.bytes` long, sparse) and runs `mkfs.ext4 -d tree` into it.
#[expect(
    clippy::disallowed_methods,
    reason = "building the filesystem is mkfs.ext4's job; there is no library for it"
)]
pub fn mkfs(tree: &Path, out: &Path, layout: &Layout) -> Result<(), RootfsError> {
    let io = |op| {
        move |source| RootfsError::Io {
            op,
            path: out.to_path_buf(),
            source,
        }
    };
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(io("create"))?;
    f.set_len(layout.bytes).map_err(io("size"))?;
    drop(f);
    let output = Command::new("mkfs.ext4")
        .args(mkfs_args(tree, out, layout))
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| RootfsError::Io {
            op: "run mkfs.ext4 (Debian package e2fsprogs) for",
            path: out.to_path_buf(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(RootfsError::Mkfs {
            status: output.status.to_string(),
            stderr: stderr.trim().chars().take(2000).collect(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_adds_headroom_and_refuses_a_small_explicit_size() {
        let u = Usage {
            inodes: 1000,
            entries: 1000,
            content_bytes: 90 * MIB,
            data_bytes: 100 * MIB,
        };
        let l = layout(&u, None, 20, 64 * MIB).unwrap();
        assert!(l.bytes >= 164 * MIB, "{l:?}");
        assert!(l.bytes < 200 * MIB, "{l:?}");
        assert_eq!(l.bytes % MIB, 0);
        assert_eq!(l.inodes, 2024);
        let l = layout(&u, None, 100, 0).unwrap();
        assert!(l.bytes >= 200 * MIB, "{l:?}");
        assert_eq!(l.inodes, 2024);
        match layout(&u, Some(100 * MIB), 20, 0) {
            Err(RootfsError::TooSmall { size, needed }) => {
                assert_eq!(size, 100 * MIB);
                assert!(needed > 100 * MIB);
            }
            other => panic!("{other:?}"),
        }
        let l = layout(&u, Some(GIB + 100), 20, 0).unwrap();
        assert_eq!(l.bytes, GIB);
        assert_eq!(l.journal_mib, 16);
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn args() {
        let l = Layout {
            bytes: 8 * MIB,
            inodes: 2048,
            journal_mib: 4,
        };
        let a: Vec<String> = mkfs_args(Path::new("/t"), Path::new("/o"), &l)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let a = a.join(" ");
        assert!(a.contains("-N 2048 -J size=4 -d /t /o"), "{a}");
        assert!(a.contains("-E root_owner=0:0"), "{a}");
    }
}
