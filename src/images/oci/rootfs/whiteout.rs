//! OCI whiteouts: `.wh.<name>` deletes `<name>` from the layers below, `.wh..wh..opq` hides
//! everything the layers below put in its directory. Neither hides what the same layer adds,
//! whatever the order of the entries (the spec leaves the order free), so the flattener tells
//! which paths its current layer created ([`LayerPaths`]).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::tree;
use crate::safe_path::{self, WalkError};

/// The prefix of a whiteout's name.
pub const PREFIX: &str = ".wh.";
/// The name of an opaque-directory marker.
pub const OPAQUE: &str = ".wh..wh..opq";
/// The prefix of AUFS's own bookkeeping names (`.wh..wh.plnk`, ...), ignored like Docker does.
const AUFS_META: &str = ".wh..wh.";

/// A path's components joined by `/`: the compact form paths are remembered in.
pub fn key(comps: &[OsString]) -> Vec<u8> {
    let mut k = Vec::new();
    for (n, c) in comps.iter().enumerate() {
        if n > 0 {
            k.push(b'/');
        }
        k.extend_from_slice(c.as_bytes());
    }
    k
}

/// The paths the current layer created, with every ancestor of each.
#[derive(Debug, Default)]
pub struct LayerPaths(HashSet<Box<[u8]>>);

impl LayerPaths {
    /// Notes that the layer created `comps` (and so touched each of its ancestors); answers
    /// the bytes newly remembered. Longest prefix first: once one is known, so are the rest.
    pub fn add(&mut self, comps: &[OsString]) -> u64 {
        let full = key(comps);
        let mut ends: Vec<usize> = full
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| i)
            .collect();
        ends.push(full.len());
        let mut added = 0;
        for &end in ends.iter().rev() {
            if !self.0.insert(full[..end].into()) {
                break;
            }
            added += end as u64;
        }
        added
    }

    fn contains(&self, comps: &[OsString]) -> bool {
        self.0.contains(key(comps).as_slice())
    }
}

/// What a whiteout entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whiteout {
    /// Delete this name in the parent directory.
    Delete(OsString),
    /// Make the parent directory opaque.
    Opaque,
    /// An AUFS bookkeeping entry: nothing to do.
    Ignore,
}

/// Whether the last component `leaf` is a whiteout, and which. `Err` for a whiteout of
/// nothing, `.` or `..`.
pub fn parse(leaf: &OsStr) -> Option<Result<Whiteout, &'static str>> {
    let bytes = leaf.as_bytes();
    let target = bytes.strip_prefix(PREFIX.as_bytes())?;
    Some(if bytes == OPAQUE.as_bytes() {
        Ok(Whiteout::Opaque)
    } else if bytes.starts_with(AUFS_META.as_bytes()) {
        Ok(Whiteout::Ignore)
    } else if matches!(target, b"" | b"." | b"..") {
        Err("whiteout of no file")
    } else {
        Ok(Whiteout::Delete(OsStr::from_bytes(target).to_os_string()))
    })
}

/// Why a whiteout could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutError {
    /// Its directory is reached through a symlink or a non-directory.
    ThroughSymlink,
    /// A file operation failed.
    Io(Errno),
}

impl From<Errno> for WhiteoutError {
    fn from(e: Errno) -> Self {
        WhiteoutError::Io(e)
    }
}

fn open_existing(root: &OwnedFd, comps: &[OsString]) -> Result<Option<OwnedFd>, WhiteoutError> {
    match safe_path::open_dir(root, comps, None) {
        Ok(fd) => Ok(Some(fd)),
        // Nothing below to hide.
        Err(WalkError::Io(Errno::ENOENT)) => Ok(None),
        Err(WalkError::ThroughSymlink) => Err(WhiteoutError::ThroughSymlink),
        Err(WalkError::Io(e)) => Err(e.into()),
    }
}

/// Applies `what`, found in the directory `parent` (components under the root), for the layer
/// that created `ours`.
pub fn apply(
    root: &OwnedFd,
    parent: &[OsString],
    what: &Whiteout,
    ours: &LayerPaths,
) -> Result<(), WhiteoutError> {
    match what {
        Whiteout::Ignore => Ok(()),
        Whiteout::Delete(name) => {
            let mut target = parent.to_vec();
            target.push(name.clone());
            if ours.contains(&target) {
                return Ok(());
            }
            let Some(dir) = open_existing(root, parent)? else {
                return Ok(());
            };
            tree::clear(&dir, name, false)?;
            Ok(())
        }
        Whiteout::Opaque => opaque(root, parent, ours),
    }
}

/// Removes from `top` and its subdirectories everything the current layer did not create.
/// Iterative over a work list of directories the layer created, each reopened from the root.
fn opaque(root: &OwnedFd, top: &[OsString], ours: &LayerPaths) -> Result<(), WhiteoutError> {
    let mut work = vec![top.to_vec()];
    while let Some(dir_comps) = work.pop() {
        let Some(dir) = open_existing(root, &dir_comps)? else {
            continue;
        };
        for (name, is_dir) in tree::list(&dir)? {
            let mut path = dir_comps.clone();
            path.push(name.clone());
            if ours.contains(&path) {
                if is_dir {
                    work.push(path);
                }
            } else if is_dir {
                tree::remove_all(&dir, &name)?;
            } else {
                unlinkat(&dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_paths_remember_ancestors_once() {
        let comps = |s: &str| s.split('/').map(OsString::from).collect::<Vec<_>>();
        let mut p = LayerPaths::default();
        assert_eq!(p.add(&comps("a/b/c")), 5 + 3 + 1);
        assert!(p.contains(&comps("a/b")) && p.contains(&comps("a")));
        assert_eq!(p.add(&comps("a/b/d")), 5);
        assert_eq!(p.add(&comps("a/b")), 0);
        assert!(!p.contains(&comps("a/x")));
    }

    #[test]
    fn names() {
        let p = |s: &str| parse(OsStr::new(s));
        assert_eq!(p("file"), None);
        assert_eq!(p(".whiteout"), None);
        assert_eq!(p(".wh.file"), Some(Ok(Whiteout::Delete("file".into()))));
        assert_eq!(p(".wh..wh..opq"), Some(Ok(Whiteout::Opaque)));
        assert_eq!(p(".wh..wh.plnk"), Some(Ok(Whiteout::Ignore)));
        assert_eq!(p(".wh."), Some(Err("whiteout of no file")));
        assert_eq!(p(".wh.."), Some(Err("whiteout of no file")));
        assert_eq!(p(".wh..."), Some(Err("whiteout of no file")));
    }
}
