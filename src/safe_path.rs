//! Walking untrusted relative paths inside a directory without ever leaving it: names are
//! split into checked components (no absolute names, no `..`, no NUL), and directories are
//! opened one component at a time with `O_NOFOLLOW`, so neither a symlink planted by the input
//! nor a non-directory can redirect a write. Shared by the `vm cp` extractor
//! (`client::untar`) and the OCI layer flattener (`images::oci::rootfs`).

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{mkdirat, Mode};

/// Splits a tar-style entry name into components, dropping empty ones and `.`. The answer
/// is empty for a name that denotes the root itself (`./`, `.`); the caller decides whether
/// that is allowed.
///
/// # Errors
/// Why the name is refused: `"absolute name"`, `"name holds .."` or `"name holds a NUL byte"`.
pub fn split_name(name: &[u8]) -> Result<Vec<OsString>, &'static str> {
    if name.first() == Some(&b'/') {
        return Err("absolute name");
    }
    let mut out = Vec::new();
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("name holds .."),
            c if c.contains(&0) => return Err("name holds a NUL byte"),
            c => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(out)
}

/// Why [`open_dir`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkError {
    /// A component is a symlink or not a directory.
    ThroughSymlink,
    /// Another error of `openat`/`mkdirat`.
    Io(Errno),
}

/// Opens the directory `comps` under `root`, one component at a time without following
/// symlinks; missing components are created with `create`'s mode when given.
pub fn open_dir(
    root: &OwnedFd,
    comps: &[OsString],
    create: Option<Mode>,
) -> Result<OwnedFd, WalkError> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let mut cur = openat(root, ".", flags, Mode::empty()).map_err(WalkError::Io)?;
    for c in comps {
        let next = match (openat(&cur, c.as_os_str(), flags, Mode::empty()), create) {
            (Err(Errno::ENOENT), Some(mode)) => {
                match mkdirat(&cur, c.as_os_str(), mode) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(WalkError::Io(e)),
                }
                openat(&cur, c.as_os_str(), flags, Mode::empty())
            }
            (r, _) => r,
        };
        cur = match next {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(WalkError::ThroughSymlink),
            Err(e) => return Err(WalkError::Io(e)),
        };
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let s = |n: &[u8]| split_name(n).map(|v| v.len());
        assert_eq!(s(b"./a//b/./c/"), Ok(3));
        assert_eq!(s(b"./"), Ok(0));
        assert_eq!(s(b"/etc/passwd"), Err("absolute name"));
        assert_eq!(s(b"a/../../b"), Err("name holds .."));
        assert_eq!(s(b"a/b\0c"), Err("name holds a NUL byte"));
    }

    #[test]
    fn never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        std::fs::write(dir.path().join("file"), b"").unwrap();
        let root: OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
        let comps = |n: &[u8]| split_name(n).unwrap();
        let create = Some(Mode::from_bits_truncate(0o755));
        assert_eq!(
            open_dir(&root, &comps(b"link/x"), create).err(),
            Some(WalkError::ThroughSymlink)
        );
        assert_eq!(
            open_dir(&root, &comps(b"file/x"), create).err(),
            Some(WalkError::ThroughSymlink)
        );
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        assert!(open_dir(&root, &comps(b"a/b"), create).is_ok());
        assert!(dir.path().join("a/b").is_dir());
        assert_eq!(
            open_dir(&root, &comps(b"c"), None).err(),
            Some(WalkError::Io(Errno::ENOENT))
        );
    }
}
