//! The `[snapshots]` section: where a fork's memory file is written.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;

use hearth_actors::supervisor::fork_mem_dir::{self, MemDirError, KEY};

/// Snapshot settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotsConfig {
    /// Where a fork's snapshot writes its guest memory file (`<dir>/<fork>.fork.memory`)
    /// instead of `data_dir/snapshots`, e.g. a tmpfs such as `/dev/shm/hearth-forks`: the
    /// file lives exactly as long as the forked VM, which cannot outlive a host reboot.
    /// Costs RAM: the guest's memory size per live fork. Absolute; made (mode 0700) at the
    /// first fork if missing; an existing one must be a directory (not a symlink) owned by
    /// hearthd's user and closed to group and others, who could read or plant memory files
    /// in it (so not `/dev/shm` itself); every directory above it must be root's or hearthd's
    /// and writable by others only with the sticky bit (as `/dev/shm`), or it could be renamed
    /// away. Default: unset (with the snapshot's other files).
    pub fork_memory_dir: Option<PathBuf>,
}

impl SnapshotsConfig {
    /// Checks `fork_memory_dir`: absolute, hearthd's own private directory (not a symlink,
    /// owned by its euid, no group or other access) or creatable (its nearest existing
    /// ancestor is a directory), and not under `data_dir/snapshots` (whose unknown entries
    /// are swept). Touches nothing.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming `snapshots.fork_memory_dir` and the problem.
    pub fn validate(&self, data_dir: &Path) -> Result<(), ConfigError> {
        let Some(dir) = &self.fork_memory_dir else {
            return Ok(());
        };
        let invalid = |reason: String| ConfigError::Invalid { field: KEY, reason };
        if !dir.is_absolute() {
            return Err(invalid(format!(
                "{} is not an absolute path",
                dir.display()
            )));
        }
        if dir.starts_with(data_dir.join("snapshots")) {
            return Err(invalid(format!(
                "{} is inside data_dir/snapshots, whose unknown entries are swept",
                dir.display()
            )));
        }
        match fork_mem_dir::check(dir) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            // Said without repeating the key, which the config error names.
            Err(MemDirError::Untrusted { path, problem }) => {
                return Err(invalid(format!("{} {problem}", path.display())))
            }
            Err(MemDirError::Io { path, what, source }) => {
                return Err(invalid(format!("{what} {}: {source}", path.display())))
            }
        }
        let existing = dir.ancestors().find(|a| a.symlink_metadata().is_ok());
        match existing.map(|a| (a, a.metadata())) {
            Some((_, Ok(m))) if m.is_dir() => Ok(()),
            Some((a, Ok(_))) => Err(invalid(format!(
                "{} is not a directory{}",
                a.display(),
                if a == dir.as_path() {
                    String::new()
                } else {
                    format!(", so {} cannot be created", dir.display())
                }
            ))),
            Some((a, Err(e))) => Err(invalid(format!("{}: {e}", a.display()))),
            None => Err(invalid(format!("{} cannot be created", dir.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn check(dir: &str, data_dir: &Path) -> Result<(), String> {
        SnapshotsConfig {
            fork_memory_dir: Some(PathBuf::from(dir)),
        }
        .validate(data_dir)
        .map_err(|e| e.to_string())
    }

    /// Unset, an existing directory and a creatable one pass; a relative path, one under a
    /// file, a file, and one the snapshot sweep would remove are refused, naming the key.
    #[test]
    fn fork_memory_dir_is_absolute_and_a_directory_or_creatable() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        SnapshotsConfig::default().validate(&data).unwrap();
        let base = tmp.path().display().to_string();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        check(&base, &data).unwrap();
        check(&format!("{base}/not/yet"), &data).unwrap();
        std::fs::write(tmp.path().join("file"), b"").unwrap();
        for (bad, why) in [
            ("forks".to_string(), "not an absolute path"),
            (format!("{base}/file"), "is not a directory"),
            (format!("{base}/file/sub"), "cannot be created"),
            (format!("{base}/data/snapshots/forks"), "data_dir/snapshots"),
        ] {
            let err = check(&bad, &data).unwrap_err();
            assert!(err.contains(KEY) && err.contains(why), "{bad}: {err}");
        }
    }

    /// An existing directory hearthd would not be alone in is refused naming the key and the
    /// problem: a symlink to a private directory, a world-writable one (as `/dev/shm`).
    #[test]
    fn fork_memory_dir_must_be_hearthds_own() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let private = tmp.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check(&private.display().to_string(), &data).unwrap();
        for (bad, why) in [(&link, "symbolic link"), (&open, "mode 1777")] {
            let err = check(&bad.display().to_string(), &data).unwrap_err();
            assert!(err.contains(KEY) && err.contains(why), "{bad:?}: {err}");
        }
    }
}
