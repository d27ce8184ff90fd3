//! The fork memory directory (`[snapshots] fork_memory_dir`): hearthd's own, or refused.
//!
//! It is meant to sit on a tmpfs such as `/dev/shm`, which every local user may write to. A
//! directory someone else made there (or a symlink to one) would let them read the forks'
//! guest memory, or plant `<fork>.memory` as a symlink that Firecracker (root, unjailed)
//! truncates and writes through. So the directory is checked without following links before
//! each fork and at `Open`: a real directory, owned by hearthd's euid, reachable by no one
//! else. Only a directory hearth has just made has its mode set; an existing one is never
//! "fixed" (its contents may already have been read), only refused.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The setting every refusal names.
pub const KEY: &str = "snapshots.fork_memory_dir";

/// Why the fork memory directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MemDirError {
    /// It exists but is not hearthd's alone.
    #[error("{KEY} {}: {problem}", path.display())]
    Untrusted {
        /// The directory (or the entry in its place).
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A file operation on it failed.
    #[error("{KEY} {}: {what}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MemDirError {
    let path = path.to_path_buf();
    move |source| MemDirError::Io { path, what, source }
}

/// Checks `dir` without following it: answers `false` if nothing is there, `true` if it is a
/// directory owned by hearthd's euid with no group or other permission bits.
///
/// # Errors
///
/// [`MemDirError::Untrusted`] for a symlink, a non-directory, another owner, or a mode that
/// lets others in (e.g. `/dev/shm` itself, mode 1777); [`MemDirError::Io`] if it cannot be
/// examined.
pub fn check(dir: &Path) -> Result<bool, MemDirError> {
    check_ancestors(dir)?;
    let meta = match dir.symlink_metadata() {
        Ok(m) => m,
        // Missing, or an ancestor is not a directory: nothing there (making it will fail).
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Ok(false)
        }
        Err(e) => return Err(io_err("stat", dir)(e)),
    };
    let untrusted = |problem: String| MemDirError::Untrusted {
        path: dir.to_path_buf(),
        problem,
    };
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Err(untrusted(
            "is a symbolic link; it must be a directory of hearthd's own".into(),
        ));
    }
    if !ft.is_dir() {
        return Err(untrusted("is not a directory".into()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(untrusted(format!(
            "is owned by uid {}, not by hearthd (euid {euid}); remove it or give it to hearthd",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(untrusted(format!(
            "has mode {mode:04o}: others may reach the forks' memory; it must be mode 0700 \
             (a directory of its own, e.g. /dev/shm/hearth-forks, not /dev/shm itself)"
        )));
    }
    Ok(true)
}

/// Checks the directories above `dir`: whoever can rename an entry in one of them can put a
/// directory (or a symlink) of their own in `dir`'s place between two checks. Each must be
/// owned by root or hearthd's euid and writable by group or others only with the sticky bit
/// (as `/tmp` and `/dev/shm` are: there only an entry's owner may rename it). Checked along
/// the path as written (a symbolic link on the way must be root's or hearthd's; the directory
/// holding it is the component before) and along the path it resolves to. Ancestors not there
/// yet are skipped ([`prepare`] makes them, 0700).
fn check_ancestors(dir: &Path) -> Result<(), MemDirError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    let euid = nix::unistd::geteuid().as_raw();
    let judge = |p: &Path, meta: &std::fs::Metadata| {
        let untrusted = |problem: String| MemDirError::Untrusted {
            path: p.to_path_buf(),
            problem: format!("{problem}, so {} could be replaced", dir.display()),
        };
        if meta.uid() != 0 && meta.uid() != euid {
            return Err(untrusted(format!(
                "above the directory, is owned by uid {} (neither root nor hearthd)",
                meta.uid()
            )));
        }
        let mode = meta.mode() & 0o7777;
        if !meta.file_type().is_symlink() && mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(untrusted(format!(
                "above the directory, has mode {mode:04o}: writable by others without the \
                 sticky bit"
            )));
        }
        Ok(())
    };
    for p in parent.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        match p.symlink_metadata() {
            Ok(meta) => judge(p, &meta)?,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) => {}
            Err(e) => return Err(io_err("stat", p)(e)),
        }
    }
    // The directories the written path leads through (the first one that exists), when they
    // are others than those just checked (a symlink on the way).
    let Some(real) = parent
        .ancestors()
        .find_map(|p| std::fs::canonicalize(p).ok())
    else {
        return Ok(());
    };
    if parent.ancestors().any(|p| p == real) {
        return Ok(());
    }
    for p in real.ancestors() {
        let meta = p.metadata().map_err(io_err("stat", p))?;
        judge(p, &meta)?;
    }
    Ok(())
}

/// Makes `dir` (mode 0700, its missing ancestors too) if it is missing, then checks it as
/// [`check`] does: before each fork writes a memory file into it.
///
/// # Errors
///
/// As [`check`], or [`MemDirError::Io`] if it cannot be made.
pub fn prepare(dir: &Path) -> Result<(), MemDirError> {
    if check(dir)? {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_err("create", parent))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            // Made just now: its mode is set exactly (the umask may have taken owner bits),
            // through a descriptor that did not follow a link put in its place meanwhile.
            let made = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(dir)
                .map_err(io_err("open", dir))?;
            made.set_permissions(std::fs::Permissions::from_mode(0o700))
                .map_err(io_err("chmod", dir))?;
        }
        // Someone made it between the check and here: the check below judges it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create", dir)(e)),
    }
    if check(dir)? {
        Ok(())
    } else {
        Err(io_err("create", dir)(io::ErrorKind::NotFound.into()))
    }
}

/// Clears the place of a memory file about to be written: whatever is at `file` (a stale
/// file, or a symlink planted there) is unlinked, never followed, so the writer creates it
/// afresh. A missing one is fine.
///
/// # Errors
///
/// [`MemDirError::Io`] if the entry cannot be removed (e.g. a directory in its place).
pub fn clear(file: &Path) -> Result<(), MemDirError> {
    match std::fs::remove_file(file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove stale", file)(e)),
    }
}

/// Removes a memory file, after checking its directory as [`check`] does: a directory
/// swapped for a symlink (or opened to others) since the fork is refused, so no file it
/// points at is unlinked. A missing directory or file is fine.
///
/// # Errors
///
/// [`check`]'s errors, or [`clear`]'s.
pub fn remove(file: &Path) -> Result<(), MemDirError> {
    match file.parent() {
        Some(dir) if !check(dir)? => Ok(()),
        _ => clear(file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        p.symlink_metadata().unwrap().mode() & 0o7777
    }

    /// A removal through a directory swapped for a symlink is refused: the file it points at
    /// stays; in hearthd's own directory the file goes, and a missing one is fine.
    #[test]
    fn remove_checks_the_directory_first() {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join("own");
        prepare(&own).unwrap();
        std::fs::write(own.join("a.fork.memory"), b"m").unwrap();
        remove(&own.join("a.fork.memory")).unwrap();
        assert!(!own.join("a.fork.memory").exists());
        remove(&own.join("a.fork.memory")).unwrap();
        remove(&tmp.path().join("gone").join("a.fork.memory")).unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("a.fork.memory"), b"theirs").unwrap();
        let swapped = tmp.path().join("swapped");
        std::os::unix::fs::symlink(&elsewhere, &swapped).unwrap();
        assert!(remove(&swapped.join("a.fork.memory")).is_err());
        assert!(elsewhere.join("a.fork.memory").exists());
    }

    /// A directory above it that others may write to without the sticky bit, or that belongs to
    /// another user, is refused naming it, also when reached through a symlink; `/tmp`-like
    /// (sticky) and root's or hearthd's own directories pass.
    #[test]
    fn ancestors_that_others_could_rename_through_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let dir = shared.join("forks");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = prepare(&dir).unwrap_err().to_string();
        assert!(
            err.contains(&shared.display().to_string()) && err.contains("sticky"),
            "{err}"
        );
        assert!(!dir.exists(), "refused before anything is made");
        // Sticky, as /tmp and /dev/shm: only an entry's owner may rename it.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        prepare(&dir).unwrap();
        // Reached through a symlink (root's) into an open directory: the resolved path is
        // judged too.
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let err = check(&link.join("forks")).unwrap_err().to_string();
        assert!(err.contains(&open.display().to_string()), "{err}");
        // Another user's directory above it.
        if nix::unistd::geteuid().is_root() {
            let theirs = tmp.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(12_345), None).unwrap();
            let err = check(&theirs.join("forks")).unwrap_err().to_string();
            assert!(err.contains("uid 12345"), "{err}");
        }
    }

    /// Missing: made 0700 (ancestors too); an existing 0700 directory of hearthd's passes.
    #[test]
    fn a_missing_directory_is_made_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/forks");
        assert!(!check(&dir).unwrap());
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert!(check(&dir).unwrap());
        prepare(&dir).unwrap();
    }

    /// A symlink to a private directory, a world-writable directory (as `/dev/shm`) and a
    /// file are refused naming the setting, and left as they were.
    #[test]
    fn symlinks_open_modes_and_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        for (bad, why) in [
            (&link, "symbolic link"),
            (&open, "mode 1777"),
            (&file, "not a directory"),
        ] {
            let err = prepare(bad).unwrap_err().to_string();
            assert!(err.contains(KEY) && err.contains(why), "{err}");
        }
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(mode(&open), 0o1777);
        assert_eq!(mode(&real), 0o700);
    }

    /// A directory owned by another uid (chowned, as root) is refused, not taken over.
    #[test]
    fn another_owners_directory_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root (chown)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("forks");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&dir, Some(900_002), Some(900_002)).unwrap();
        let err = prepare(&dir).unwrap_err().to_string();
        assert!(err.contains(KEY) && err.contains("uid 900002"), "{err}");
        assert_eq!(dir.symlink_metadata().unwrap().uid(), 900_002);
    }

    /// A symlink planted in a memory file's place is removed, its target untouched; a stale
    /// file goes too; nothing there is fine.
    #[test]
    fn clear_unlinks_without_following() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("precious");
        std::fs::write(&target, b"keep").unwrap();
        let planted = tmp.path().join("f.fork.memory");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        clear(&planted).unwrap();
        assert!(planted.symlink_metadata().is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        std::fs::write(&planted, b"stale").unwrap();
        clear(&planted).unwrap();
        assert!(planted.symlink_metadata().is_err());
        clear(&planted).unwrap();
    }
}
