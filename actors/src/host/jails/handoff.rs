//! Files handed into and out of a jail around a snapshot (issue 12 with issue 16): a host file
//! lent to the VMM (hard-linked in, given to its uid while there) and files the VMM wrote taken
//! out (moved beside the snapshot, root-owned, unreadable and unwritable by the VM's uid).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{check_name, JailError};
use crate::firecracker::jailer::JailLayout;

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> JailError {
    let path = path.to_path_buf();
    move |source| JailError::Io { op, path, source }
}

/// Root-owned, readable and writable by root only: a snapshot file at rest.
fn seal(path: &Path) -> Result<(), JailError> {
    std::os::unix::fs::chown(path, Some(0), Some(0)).map_err(io_err("chown", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err("chmod", path))
}

/// The path of `/<name>` on the host, checked to be one component.
fn in_jail(layout: &JailLayout, name: &str) -> Result<PathBuf, JailError> {
    check_name(name)?;
    Ok(layout.root().join(name))
}

/// See [`super::Jails::lend`].
pub fn lend(
    layout: &JailLayout,
    source: &Path,
    name: &str,
    owner: (u32, u32),
) -> Result<PathBuf, JailError> {
    let target = in_jail(layout, name)?;
    // A link left by a crash names the same inode or a stale one: replaced either way.
    discard(layout, name)?;
    fs::hard_link(source, &target).map_err(|e| {
        if e.raw_os_error() == Some(libc::EXDEV) {
            io_err(
                "hard-link (the snapshot directory and the jails must share a filesystem)",
                &target,
            )(e)
        } else {
            io_err("hard-link", &target)(e)
        }
    })?;
    // Through the source (the same inode, in a directory only root writes): the jail's name
    // could be swapped for a symlink by the VM's uid meanwhile.
    if let Err(e) = std::os::unix::fs::chown(source, Some(owner.0), Some(owner.1)) {
        let _ = fs::remove_file(&target);
        return Err(io_err("chown", source)(e));
    }
    Ok(Path::new("/").join(name))
}

/// See [`super::Jails::unlend`].
pub fn unlend(layout: &JailLayout, source: &Path, name: &str) -> Result<(), JailError> {
    discard(layout, name)?;
    match seal(source) {
        Err(JailError::Io { source: e, .. }) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// See [`super::Jails::take_out`]. The jail root is the VM's uid's: a VMM that got out of its
/// guest could have put a symlink or a hard link to another file there, which root must not
/// chown or move. The file is opened without following links, must be a regular file with one
/// link, is sealed through that descriptor, and must still be the same inode once moved.
pub fn take_out(layout: &JailLayout, name: &str, dest: &Path) -> Result<(), JailError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let from = in_jail(layout, name)?;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&from)
        .map_err(io_err("open", &from))?;
    let meta = file.metadata().map_err(io_err("stat", &from))?;
    if !meta.is_file() || meta.nlink() != 1 {
        return Err(io_err("take out", &from)(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file with a single link",
        )));
    }
    // Sealed before it leaves: at no point is `dest` a file the VM's uid may change.
    std::os::unix::fs::fchown(&file, Some(0), Some(0)).map_err(io_err("chown", &from))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err("chmod", &from))?;
    match fs::rename(&from, dest) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            // Another filesystem: copied from the checked descriptor, holes kept (a guest's
            // memory is mostly holes; a dense copy would take its whole size on a tmpfs).
            let out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dest)
                .map_err(io_err("create", dest))?;
            if let Err(e) = crate::host::disks::copy::sparse_copy(&file, &out) {
                // A partial copy is no snapshot file.
                let _ = fs::remove_file(dest);
                return Err(io_err("copy", dest)(e));
            }
            return fs::remove_file(&from).map_err(io_err("remove", &from));
        }
        Err(e) => return Err(io_err("move", &from)(e)),
    }
    // Swapped between the check and the move: what was moved is not what was checked.
    let moved = fs::symlink_metadata(dest).map_err(io_err("stat", dest))?;
    if (moved.dev(), moved.ino()) != (meta.dev(), meta.ino()) {
        let _ = fs::remove_file(dest);
        return Err(io_err("take out", &from)(io::Error::new(
            io::ErrorKind::InvalidData,
            "the file changed while it was taken out",
        )));
    }
    Ok(())
}

/// See [`super::Jails::share_read_only`]. Through the paths: `dir` is a snapshot's
/// directory, which only root writes.
pub fn share_read_only(dir: &Path, files: &[PathBuf]) -> Result<(), JailError> {
    std::os::unix::fs::chown(dir, Some(0), Some(0)).map_err(io_err("chown", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("chmod", dir))?;
    for f in files {
        std::os::unix::fs::chown(f, Some(0), Some(0)).map_err(io_err("chown", f))?;
        fs::set_permissions(f, fs::Permissions::from_mode(0o444)).map_err(io_err("chmod", f))?;
    }
    Ok(())
}

/// See [`super::Jails::discard`].
pub fn discard(layout: &JailLayout, name: &str) -> Result<(), JailError> {
    let path = in_jail(layout, name)?;
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", &path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn layout(dir: &Path) -> JailLayout {
        let l = JailLayout::new(dir, Path::new("/usr/bin/firecracker"), "900001").unwrap();
        fs::create_dir_all(l.root()).unwrap();
        l
    }

    fn owner(p: &Path) -> (u32, u32, u32) {
        let m = fs::metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o777)
    }

    /// Lent: the same inode in the jail, the VM's uid's; given back: gone from the jail,
    /// root's only. Bad names are refused before anything changes.
    #[test]
    fn lend_and_unlend_hand_a_file_over_and_back() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root (chown)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let l = layout(dir.path());
        let src = dir.path().join("disk.img");
        fs::write(&src, b"disk").unwrap();
        assert!(lend(&l, &src, "../x", (900_001, 900_001)).is_err());
        assert!(lend(&l, &src, "a/b", (900_001, 900_001)).is_err());
        let inside = lend(&l, &src, "snapshot-s.disk", (900_001, 900_001)).unwrap();
        assert_eq!(inside, Path::new("/snapshot-s.disk"));
        let link = l.root().join("snapshot-s.disk");
        assert_eq!(
            fs::metadata(&link).unwrap().ino(),
            fs::metadata(&src).unwrap().ino()
        );
        assert_eq!(owner(&src).0, 900_001);
        // Lent again (a retry after a crash): replaced, not an error.
        lend(&l, &src, "snapshot-s.disk", (900_001, 900_001)).unwrap();
        unlend(&l, &src, "snapshot-s.disk").unwrap();
        assert!(!link.exists());
        assert_eq!(owner(&src), (0, 0, 0o600));
        // Done already is fine.
        unlend(&l, &src, "snapshot-s.disk").unwrap();
    }

    /// Taken out: moved beside the snapshot, root's only; the jail keeps nothing.
    #[test]
    fn take_out_moves_and_seals() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root (chown)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let l = layout(dir.path());
        let written = l.root().join("snapshot-s.memory");
        fs::write(&written, b"mem").unwrap();
        std::os::unix::fs::chown(&written, Some(900_001), Some(900_001)).unwrap();
        fs::set_permissions(&written, fs::Permissions::from_mode(0o666)).unwrap();
        let dest = dir.path().join("memory");
        take_out(&l, "snapshot-s.memory", &dest).unwrap();
        assert!(!written.exists());
        assert_eq!(owner(&dest), (0, 0, 0o600));
        assert_eq!(fs::read(&dest).unwrap(), b"mem");
        // Nothing to take out: an error naming the file.
        let err = take_out(&l, "snapshot-s.memory", &dest).unwrap_err();
        assert!(err.to_string().contains("snapshot-s.memory"), "{err}");
        discard(&l, "snapshot-s.memory").unwrap();
    }

    /// Taken out to another filesystem (a tmpfs, as `fork_memory_dir`): copied with its holes
    /// kept, so a guest memory that is mostly holes takes only its data there.
    #[test]
    fn take_out_across_filesystems_keeps_holes() {
        use std::os::unix::fs::FileExt;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root (chown)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("SKIP: no /dev/shm");
            return;
        };
        if fs::metadata(dir.path()).unwrap().dev() == fs::metadata(shm.path()).unwrap().dev() {
            eprintln!("SKIP: /dev/shm is on the same filesystem as the temporary directory");
            return;
        }
        let l = layout(dir.path());
        let written = l.root().join("snapshot-s.memory");
        let f = fs::File::create(&written).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"guest page", 1 << 20).unwrap();
        drop(f);
        let dest = shm.path().join("s.memory");
        take_out(&l, "snapshot-s.memory", &dest).unwrap();
        let m = fs::metadata(&dest).unwrap();
        assert_eq!(m.len(), 64 << 20);
        assert!(
            m.blocks() * 512 < 1 << 20,
            "{} bytes allocated",
            m.blocks() * 512
        );
        let mut page = [0u8; 10];
        fs::File::open(&dest)
            .unwrap()
            .read_exact_at(&mut page, 1 << 20)
            .unwrap();
        assert_eq!(&page, b"guest page");
        assert!(!written.exists());
    }

    /// Shared: root's, readable by all and writable by none, in a directory only root enters;
    /// a missing file is an error naming it.
    #[test]
    fn share_read_only_opens_reading_only() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root (chown)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("s");
        fs::create_dir(&snap).unwrap();
        fs::set_permissions(&snap, fs::Permissions::from_mode(0o755)).unwrap();
        let mem = snap.join("memory");
        fs::write(&mem, b"mem").unwrap();
        fs::set_permissions(&mem, fs::Permissions::from_mode(0o600)).unwrap();
        share_read_only(&snap, std::slice::from_ref(&mem)).unwrap();
        assert_eq!(owner(&snap), (0, 0, 0o700));
        assert_eq!(owner(&mem), (0, 0, 0o444));
        let err = share_read_only(&snap, &[snap.join("vmstate")]).unwrap_err();
        assert!(err.to_string().contains("vmstate"), "{err}");
    }

    /// A link the VM's uid put in its jail is refused: the file it names keeps its owner and
    /// mode, nothing is moved.
    #[test]
    fn take_out_refuses_links() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(dir.path());
        let host = dir.path().join("host-file");
        fs::write(&host, b"secret").unwrap();
        fs::set_permissions(&host, fs::Permissions::from_mode(0o640)).unwrap();
        let before = owner(&host);
        let dest = dir.path().join("memory");
        std::os::unix::fs::symlink(&host, l.root().join("snapshot-s.memory")).unwrap();
        assert!(take_out(&l, "snapshot-s.memory", &dest).is_err());
        discard(&l, "snapshot-s.memory").unwrap();
        fs::hard_link(&host, l.root().join("snapshot-s.memory")).unwrap();
        assert!(take_out(&l, "snapshot-s.memory", &dest).is_err());
        assert_eq!(owner(&host), before);
        assert!(!dest.exists());
    }
}
