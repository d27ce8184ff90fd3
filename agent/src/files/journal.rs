//! `put_archive`'s undo log: every path an extraction created, and every file it moved aside to
//! put an entry in its place. A failed or aborted archive is undone (created paths removed,
//! moved files put back), so it leaves the directory as it found it; a complete one drops the
//! moved-aside files. What is not undone: the modes and mtimes a directory entry set on a
//! directory that already existed.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
enum Step {
    /// The extraction created this path.
    Created(PathBuf),
    /// The extraction moved what was at `path` to `backup`.
    Replaced { path: PathBuf, backup: PathBuf },
}

/// The log of one extraction.
#[derive(Debug, Default)]
pub struct Journal {
    steps: Vec<Step>,
}

impl Journal {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates the missing directories of `rel` (relative, plain components) below `dir`,
    /// logging each.
    ///
    /// # Errors
    ///
    /// Creating one failed (a file in the way, permissions...).
    pub fn create_dirs(&mut self, dir: &Path, rel: &Path) -> io::Result<()> {
        let mut at = dir.to_path_buf();
        for c in rel.components() {
            if let Component::Normal(p) = c {
                at.push(p);
                match std::fs::create_dir(&at) {
                    Ok(()) => self.steps.push(Step::Created(at.clone())),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && at.is_dir() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Makes `target` free for an entry: an existing directory stays for a directory entry
    /// (`Ok(true)`); anything else there (a file, a symlink, a directory for a non-directory
    /// entry is refused) is moved aside to a hidden sibling and logged. `Ok(false)` when the
    /// entry is to be created.
    ///
    /// # Errors
    ///
    /// A directory is in the way of a non-directory entry, or the rename failed.
    pub fn make_room(&mut self, target: &Path, dir_entry: bool) -> io::Result<bool> {
        let md = match std::fs::symlink_metadata(target) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if md.is_dir() {
            if dir_entry {
                return Ok(true);
            }
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is a directory", target.display()),
            ));
        }
        let backup = backup_name(target);
        std::fs::rename(target, &backup)?;
        self.steps.push(Step::Replaced {
            path: target.to_path_buf(),
            backup,
        });
        Ok(false)
    }

    /// Logs that the extraction is about to create `path` (logged first, so a partly written
    /// file is removed too).
    pub fn created(&mut self, path: &Path) {
        self.steps.push(Step::Created(path.to_path_buf()));
    }

    /// The extraction is complete: the moved-aside files go.
    pub fn commit(self) {
        for step in self.steps {
            if let Step::Replaced { backup, .. } = step {
                let _ = std::fs::remove_file(&backup);
            }
        }
    }

    /// The extraction failed: removes what it created and puts back what it moved, newest
    /// first. Best effort: a step that fails (something else changed the path) is skipped.
    pub fn undo(self) {
        for step in self.steps.into_iter().rev() {
            match step {
                Step::Created(p) => {
                    let is_dir = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
                    let _ = if is_dir {
                        std::fs::remove_dir(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
                Step::Replaced { path, backup } => {
                    let _ = std::fs::rename(&backup, &path);
                }
            }
        }
    }
}

/// A hidden sibling name for moving `target` aside.
fn backup_name(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.hearth-put-{}-{n}~", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_restores_the_directory_and_commit_drops_backups() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("old"), b"old").unwrap();
        std::os::unix::fs::symlink("old", d.join("link")).unwrap();
        let snapshot = |d: &Path| {
            let mut v: Vec<String> = walk(d);
            v.sort();
            v
        };
        let before = snapshot(d);
        let mut j = Journal::new();
        j.create_dirs(d, Path::new("a/b")).unwrap();
        assert!(!j.make_room(&d.join("old"), false).unwrap());
        j.created(&d.join("old"));
        std::fs::write(d.join("old"), b"new").unwrap();
        assert!(!j.make_room(&d.join("link"), false).unwrap());
        j.created(&d.join("a/b/f"));
        std::fs::write(d.join("a/b/f"), b"x").unwrap();
        assert!(j.make_room(&d.join("a"), true).unwrap());
        assert!(j.make_room(&d.join("a"), false).is_err());
        j.undo();
        assert_eq!(snapshot(d), before);
        assert_eq!(std::fs::read(d.join("old")).unwrap(), b"old");
        assert_eq!(
            std::fs::read_link(d.join("link")).unwrap(),
            Path::new("old")
        );

        let mut j = Journal::new();
        assert!(!j.make_room(&d.join("old"), false).unwrap());
        j.created(&d.join("old"));
        std::fs::write(d.join("old"), b"new").unwrap();
        j.commit();
        assert_eq!(snapshot(d), before, "no backup left behind");
        assert_eq!(std::fs::read(d.join("old")).unwrap(), b"new");
    }

    fn walk(d: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            out.push(e.file_name().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
        out
    }
}
