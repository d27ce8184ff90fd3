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
    if let Err(e) = std::os::unix::fs::chown(&target, Some(owner.0), Some(owner.1)) {
        let _ = fs::remove_file(&target);
        return Err(io_err("chown", &target)(e));
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

/// See [`super::Jails::take_out`].
pub fn take_out(layout: &JailLayout, name: &str, dest: &Path) -> Result<(), JailError> {
    let from = in_jail(layout, name)?;
    // Sealed before it leaves: at no point is `dest` a file the VM's uid may change.
    seal(&from)?;
    match fs::rename(&from, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            // Another filesystem: copied (not sparse), then the jail's copy removed.
            fs::copy(&from, dest).map_err(io_err("copy", dest))?;
            seal(dest)?;
            fs::remove_file(&from).map_err(io_err("remove", &from))
        }
        Err(e) => Err(io_err("move", &from)(e)),
    }
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
