//! Finding the Firecracker binary and checking its version. Done once per binary (the result,
//! [`FirecrackerBinary`], is handed to every actor), so spawning a VM costs no extra process.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::host::processes::Processes;

use super::FirecrackerError;

/// A Firecracker version `major.minor.patch` (pre-release suffixes are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmmVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl fmt::Display for VmmVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The oldest Firecracker hearth drives.
pub const MIN_VERSION: VmmVersion = VmmVersion {
    major: 1,
    minor: 10,
    patch: 0,
};

/// The name looked up on PATH when no binary is configured.
pub const DEFAULT_NAME: &str = "firecracker";

/// A resolved, version-checked Firecracker binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirecrackerBinary {
    /// Absolute path.
    pub path: PathBuf,
    /// Its version.
    pub version: VmmVersion,
}

/// Parses `firecracker --version` output: the first line is `Firecracker v1.10.1` (possibly
/// with a suffix such as `-dev`).
pub fn parse_version(output: &str) -> Option<VmmVersion> {
    let first = output.lines().next()?.trim();
    let rest = first.strip_prefix("Firecracker v")?;
    let mut nums = rest.splitn(3, '.');
    let major = nums.next()?.parse().ok()?;
    let minor = nums.next()?.parse().ok()?;
    let patch_str = nums.next()?;
    let digits: &str = &patch_str[..patch_str
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(patch_str.len())];
    let patch = digits.parse().ok()?;
    Some(VmmVersion {
        major,
        minor,
        patch,
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Looks `name` up in a `PATH`-style list of directories.
pub fn find_in_path(name: &str, path_var: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Resolves the binary (`configured`, else `firecracker` on `PATH`) and checks its version.
pub fn resolve(
    configured: Option<&Path>,
    processes: &dyn Processes,
) -> Result<FirecrackerBinary, FirecrackerError> {
    let path = match configured {
        Some(p) => {
            if !is_executable(p) {
                return Err(FirecrackerError::BinaryNotExecutable { path: p.into() });
            }
            std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
        }
        None => find_in_path(DEFAULT_NAME, &std::env::var_os("PATH").unwrap_or_default())
            .ok_or_else(|| FirecrackerError::BinaryNotFound {
                name: DEFAULT_NAME.into(),
            })?,
    };
    let output =
        processes
            .version_output(&path)
            .map_err(|source| FirecrackerError::VersionCheck {
                path: path.clone(),
                source,
            })?;
    check_version(path, &output)
}

/// Checks `--version` output against [`MIN_VERSION`].
pub fn check_version(path: PathBuf, output: &str) -> Result<FirecrackerBinary, FirecrackerError> {
    let version = parse_version(output).ok_or_else(|| FirecrackerError::UnparseableVersion {
        path: path.clone(),
        output: output
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect(),
    })?;
    if version < MIN_VERSION {
        return Err(FirecrackerError::VersionTooOld {
            path,
            found: version,
            min: MIN_VERSION,
        });
    }
    Ok(FirecrackerBinary { path, version })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::processes::FakeProcesses;

    fn v(major: u32, minor: u32, patch: u32) -> VmmVersion {
        VmmVersion {
            major,
            minor,
            patch,
        }
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("Firecracker v1.10.1\n\n"), Some(v(1, 10, 1)));
        assert_eq!(
            parse_version("Firecracker v1.17.0-dev\n"),
            Some(v(1, 17, 0))
        );
        assert_eq!(parse_version("Firecracker v2.0.0"), Some(v(2, 0, 0)));
        assert_eq!(parse_version("firecracker 1.10.1"), None);
        assert_eq!(parse_version("Firecracker v1.10"), None);
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("Firecracker vX.1.2"), None);
    }

    #[test]
    fn minimum_is_enforced() {
        assert!(check_version("/fc".into(), "Firecracker v1.10.0").is_ok());
        assert!(matches!(
            check_version("/fc".into(), "Firecracker v1.9.9"),
            Err(FirecrackerError::VersionTooOld { .. })
        ));
        let e = check_version("/fc".into(), "Jailer v1.10.0").unwrap_err();
        assert!(matches!(e, FirecrackerError::UnparseableVersion { .. }));
        assert!(e.to_string().contains("Jailer v1.10.0"));
    }

    #[test]
    fn path_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let fc = dir.path().join("firecracker");
        std::fs::write(&fc, b"#!/bin/sh\n").unwrap();
        assert_eq!(
            find_in_path("firecracker", dir.path().as_os_str()),
            None,
            "not executable"
        );
        std::fs::set_permissions(&fc, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path_var =
            std::env::join_paths(["/nonexistent", dir.path().to_str().unwrap()]).unwrap();
        assert_eq!(find_in_path("firecracker", &path_var), Some(fc.clone()));

        let fake = FakeProcesses::new();
        fake.set_version_output(Some("Firecracker v1.12.0\n"));
        let bin = resolve(Some(&fc), &fake).unwrap();
        assert_eq!(bin.version, v(1, 12, 0));
        fake.set_version_output(None);
        assert!(matches!(
            resolve(Some(&fc), &fake),
            Err(FirecrackerError::VersionCheck { .. })
        ));
        assert!(matches!(
            resolve(Some(Path::new("/nonexistent/fc")), &fake),
            Err(FirecrackerError::BinaryNotExecutable { .. })
        ));
    }
}
