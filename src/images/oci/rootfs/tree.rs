//! File operations inside the scratch tree, all relative to an open directory and none
//! following a symlink: clearing a slot for a new entry, removing a subtree, setting owner,
//! mode, extended attributes and times. The tree is private to one build, so nothing else
//! changes it while these run.

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmodat, fstatat, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, unlinkat, Gid, Uid, UnlinkatFlags};

/// Owner, mode, times and extended attributes of an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits incl. setuid, setgid, sticky (`0o7777`).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Extended attributes (name, value).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What sits at a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Nothing.
    Empty,
    /// A directory.
    Dir,
    /// Anything else (symlinks included).
    Other,
}

/// What sits at `name` in `dir`, without following a symlink.
pub fn slot(dir: &OwnedFd, name: &OsStr) -> Result<Slot, Errno> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => Ok(Slot::Empty),
        Err(e) => Err(e),
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
            Ok(Slot::Dir)
        }
        Ok(_) => Ok(Slot::Other),
    }
}

/// Makes room at `name` in `dir` for a new entry: removes what is there, except a directory
/// when `keep_dir` (directories merge across layers). Answers whether a directory was kept.
pub fn clear(dir: &OwnedFd, name: &OsStr, keep_dir: bool) -> Result<bool, Errno> {
    match slot(dir, name)? {
        Slot::Empty => Ok(false),
        Slot::Dir if keep_dir => Ok(true),
        Slot::Dir => remove_all(dir, name).map(|()| false),
        Slot::Other => unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map(|()| false),
    }
}

/// The path through `/proc/self/fd` naming `name` in the open directory `dir`: how the calls
/// that have no `*at` form (`lsetxattr`, `read_dir`) reach it without resolving any path.
pub fn proc_path(dir: &OwnedFd, name: Option<&OsStr>) -> PathBuf {
    hearth_actors::host::procfs::fd_path(dir.as_raw_fd(), name)
}

fn open_subdir(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The entries of the open directory `dir`: (name, is a directory), not following symlinks.
pub fn list(dir: &OwnedFd) -> Result<Vec<(OsString, bool)>, Errno> {
    let errno = |e: io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    let mut out = Vec::new();
    for e in fs::read_dir(proc_path(dir, None)).map_err(errno)? {
        let e = e.map_err(errno)?;
        out.push((e.file_name(), e.file_type().map_err(errno)?.is_dir()));
    }
    Ok(out)
}

/// Removes the directory `name` in `dir` and everything below it, never following a symlink.
/// Iterative, holding one descriptor at a time, so neither the stack nor the descriptor table
/// grows with the depth of a hostile tree.
pub fn remove_all(dir: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    let mut names: Vec<OsString> = Vec::new();
    let mut cur = open_subdir(dir, name)?;
    loop {
        let mut sub = None;
        for (child, is_dir) in list(&cur)? {
            if is_dir {
                sub.get_or_insert(child);
            } else {
                unlinkat(&cur, child.as_os_str(), UnlinkatFlags::NoRemoveDir)?;
            }
        }
        if let Some(child) = sub {
            cur = open_subdir(&cur, &child)?;
            names.push(child);
            continue;
        }
        let Some(done) = names.pop() else { break };
        // The tree is private to this build: `..` is the directory we came from.
        let up = open_subdir(&cur, OsStr::new(".."))?;
        unlinkat(&up, done.as_os_str(), UnlinkatFlags::RemoveDir)?;
        cur = up;
    }
    drop(cur);
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

/// Sets owner, then mode (a `chown` clears setuid and setgid bits, so the mode comes after
/// it), then extended attributes (a `chown` also drops `security.capability`), then the
/// modification time of `name` in `dir`. A symlink's mode is not set (Linux has none).
pub fn set_meta(dir: &OwnedFd, name: &OsStr, meta: &Meta, symlink: bool) -> Result<(), Errno> {
    fchownat(
        dir,
        name,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    if !symlink {
        fchmodat(
            dir,
            name,
            Mode::from_bits_truncate(meta.mode & 0o7777),
            FchmodatFlags::FollowSymlink,
        )?;
    }
    if !meta.xattrs.is_empty() {
        let path = proc_path(dir, Some(name));
        let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
        for (key, value) in &meta.xattrs {
            let key = CString::new(key.clone()).map_err(|_| Errno::EINVAL)?;
            // SAFETY: both strings are NUL-terminated and outlive the call; the value is a
            // valid slice of its stated length.
            let rc = unsafe {
                libc::lsetxattr(
                    path.as_ptr(),
                    key.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            if rc != 0 {
                return Err(Errno::last());
            }
        }
    }
    set_mtime(dir, name, meta.mtime)
}

/// Sets the access and modification times of `name` in `dir` to `mtime`, not following it.
pub fn set_mtime(dir: &OwnedFd, name: &OsStr, mtime: i64) -> Result<(), Errno> {
    let t = TimeSpec::new(mtime, 0);
    utimensat(dir, name, &t, &t, UtimensatFlags::NoFollowSymlink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_all_goes_deep_and_never_follows() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), b"x").unwrap();
        let mut p = dir.path().join("top");
        for i in 0..300 {
            p.push(format!("d{i}"));
        }
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join("f"), b"").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("top/d0/link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), p.join("link")).unwrap();
        let root: OwnedFd = fs::File::open(dir.path()).unwrap().into();
        assert_eq!(slot(&root, OsStr::new("top")), Ok(Slot::Dir));
        remove_all(&root, OsStr::new("top")).unwrap();
        assert_eq!(slot(&root, OsStr::new("top")), Ok(Slot::Empty));
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn clear_keeps_or_removes() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/f"), b"").unwrap();
        fs::write(dir.path().join("f"), b"").unwrap();
        let root: OwnedFd = fs::File::open(dir.path()).unwrap().into();
        assert_eq!(clear(&root, OsStr::new("d"), true), Ok(true));
        assert!(dir.path().join("d/f").exists());
        assert_eq!(clear(&root, OsStr::new("d"), false), Ok(false));
        assert!(!dir.path().join("d").exists());
        assert_eq!(clear(&root, OsStr::new("f"), true), Ok(false));
        assert!(!dir.path().join("f").exists());
        assert_eq!(clear(&root, OsStr::new("none"), false), Ok(false));
    }
}
