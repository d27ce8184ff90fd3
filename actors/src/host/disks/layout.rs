//! The disk backends' bookkeeping on disk: the file naming convention under the disks
//! directory ([`DisksDir`]), and the per-VM manifest ([`DiskManifest`]) written (atomically)
//! before anything else is made, so a daemon that crashed at any instant can find every disk
//! it owns, complete or not. (The supervisor's record of a VM's disk is a different thing:
//! `supervisor::DiskRecord`, kept in hearthd's SQLite store.)
//!
//! Layout of `<data_dir>/disks/` (VM names never start with `.` and never contain `/` or `:`):
//!
//! | file | meaning |
//! |------|---------|
//! | `<vm>.json` | the manifest ([`DiskManifest`]): backend, base, size. Written first, removed last. |
//! | `.<vm>.json.tmp` | a manifest being written (renamed into place after `fsync`) |
//! | `<vm>.img.part` | `copy`: the copy being made; renamed to `<vm>.img` when complete |
//! | `<vm>.img` | `copy`: the finished disk |
//! | `<vm>.cow` | `dm`: the sparse copy-on-write store of the snapshot |
//!
//! plus, for `dm`, the device-mapper devices `hearth-<vm>` and `hearth-<vm>:origin` and the
//! loop devices backed by `<vm>.cow` and by the base. Any of these files without the others is
//! a half-made (or half-removed) disk: [`DisksDir::scan`] reports it so it can be removed.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{BackendKind, DisksError};

/// Longest VM name accepted (the dm name `hearth-<vm>:origin` stays far below dm's 127).
pub const MAX_VM_NAME: usize = 64;

/// Checks that `vm` is safe in file and device names: 1 to 64 of `[A-Za-z0-9._-]`, not
/// starting with `.`.
pub fn check_vm_name(vm: &str) -> Result<(), DisksError> {
    let reason = if vm.is_empty() {
        Some("empty")
    } else if vm.len() > MAX_VM_NAME {
        Some("longer than 64 characters")
    } else if vm.starts_with('.') {
        Some("starts with '.'")
    } else if !vm
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(DisksError::InvalidVmName {
            vm: vm.into(),
            reason,
        }),
        None => Ok(()),
    }
}

/// What the backend writes down about a disk before it makes it (`<vm>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskManifest {
    /// The VM.
    pub vm: String,
    /// The backend making it.
    pub backend: BackendKind,
    /// The base image.
    pub base: PathBuf,
    /// The disk size in bytes.
    pub size: u64,
}

/// The role of a file in the disks directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileRole {
    /// `<vm>.json`
    Manifest,
    /// `.<vm>.json.tmp`
    ManifestTmp,
    /// `<vm>.img.part`
    Part,
    /// `<vm>.img`
    Image,
    /// `<vm>.cow`
    Cow,
}

/// Which VM and role a file name in the disks directory has, or `None` for foreign files.
pub fn parse_file_name(name: &str) -> Option<(String, FileRole)> {
    let (vm, role) = if let Some(rest) = name.strip_prefix('.') {
        (rest.strip_suffix(".json.tmp")?, FileRole::ManifestTmp)
    } else if let Some(vm) = name.strip_suffix(".img.part") {
        (vm, FileRole::Part)
    } else if let Some(vm) = name.strip_suffix(".json") {
        (vm, FileRole::Manifest)
    } else if let Some(vm) = name.strip_suffix(".img") {
        (vm, FileRole::Image)
    } else if let Some(vm) = name.strip_suffix(".cow") {
        (vm, FileRole::Cow)
    } else {
        return None;
    };
    check_vm_name(vm).ok()?;
    Some((vm.to_string(), role))
}

/// What the disks directory holds for one VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// The manifest, when present and readable.
    pub manifest: Option<DiskManifest>,
    /// Every file of the VM, by role.
    pub files: BTreeMap<FileRole, PathBuf>,
}

/// The disks directory and its naming convention.
#[derive(Debug, Clone)]
pub struct DisksDir {
    dir: PathBuf,
}

impl DisksDir {
    /// The disks directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DisksDir { dir: dir.into() }
    }

    /// The disks directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `vm`'s file in `role`.
    pub fn path(&self, vm: &str, role: FileRole) -> PathBuf {
        self.dir.join(match role {
            FileRole::Manifest => format!("{vm}.json"),
            FileRole::ManifestTmp => format!(".{vm}.json.tmp"),
            FileRole::Part => format!("{vm}.img.part"),
            FileRole::Image => format!("{vm}.img"),
            FileRole::Cow => format!("{vm}.cow"),
        })
    }

    /// Writes `manifest` atomically: temp file, then rename over `<vm>.json`. Not `fsync`ed, on
    /// purpose: the manifest only has to survive a crash of the daemon (the page cache does),
    /// and after a host crash any disk file that survived is still found by its name alone
    /// ([`DisksDir::scan`] lists `<vm>.*` files with or without a manifest); dm and loop devices
    /// do not survive a host crash at all. Skipping the two `fsync`s keeps a reflink
    /// `CreateDisk` in the low milliseconds.
    pub fn write(&self, manifest: &DiskManifest) -> Result<(), DisksError> {
        let tmp = self.path(&manifest.vm, FileRole::ManifestTmp);
        let path = self.path(&manifest.vm, FileRole::Manifest);
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| DisksError::Io { op, path, source }
        };
        let body = serde_json::to_vec_pretty(manifest).map_err(|source| DisksError::Manifest {
            path: path.clone(),
            source,
        })?;
        let result = (|| {
            let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
            f.write_all(&body).map_err(io("write", &tmp))?;
            fs::rename(&tmp, &path).map_err(io("rename", &tmp))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Reads `vm`'s manifest, `None` when there is none.
    pub fn read(&self, vm: &str) -> Result<Option<DiskManifest>, DisksError> {
        let path = self.path(vm, FileRole::Manifest);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| DisksError::Manifest { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DisksError::Io {
                op: "read",
                path,
                source,
            }),
        }
    }

    /// True when `vm` has any file in the directory.
    pub fn exists(&self, vm: &str) -> bool {
        [
            FileRole::Manifest,
            FileRole::ManifestTmp,
            FileRole::Part,
            FileRole::Image,
            FileRole::Cow,
        ]
        .iter()
        .any(|&role| self.path(vm, role).symlink_metadata().is_ok())
    }

    /// Removes `vm`'s file in `role`; `false` when it did not exist.
    pub fn remove_file(&self, vm: &str, role: FileRole) -> Result<bool, DisksError> {
        let path = self.path(vm, role);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(DisksError::Io {
                op: "remove",
                path,
                source,
            }),
        }
    }

    /// Everything the directory holds, by VM. An unreadable manifest counts as absent (the VM
    /// is still listed, so it can be removed).
    pub fn scan(&self) -> Result<BTreeMap<String, Found>, DisksError> {
        let mut out: BTreeMap<String, Found> = BTreeMap::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(source) => {
                return Err(DisksError::Io {
                    op: "read directory",
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| DisksError::Io {
                op: "read directory",
                path: self.dir.clone(),
                source,
            })?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Some((vm, role)) = parse_file_name(&name) else {
                continue;
            };
            out.entry(vm).or_default().files.insert(role, entry.path());
        }
        for (vm, found) in &mut out {
            if found.files.contains_key(&FileRole::Manifest) {
                found.manifest = self.read(vm).ok().flatten();
            }
        }
        Ok(out)
    }

    /// Creates `path` exclusively (fails if it exists), read-write.
    pub fn create_new(path: &Path) -> Result<File, DisksError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| DisksError::Io {
                op: "create",
                path: path.into(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_names() {
        for ok in ["web", "a", "vm-1", "vm_2.test", &"x".repeat(64)] {
            check_vm_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            ".hidden",
            "..",
            "a/b",
            "../etc",
            "a:b",
            "sp ace",
            "é",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(check_vm_name(bad), Err(DisksError::InvalidVmName { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn file_names_parse_back() {
        let l = DisksDir::new("/d");
        for role in [
            FileRole::Manifest,
            FileRole::ManifestTmp,
            FileRole::Part,
            FileRole::Image,
            FileRole::Cow,
        ] {
            let p = l.path("vm.1", role);
            let name = p.file_name().unwrap().to_str().unwrap();
            assert_eq!(parse_file_name(name), Some(("vm.1".into(), role)), "{name}");
        }
        assert_eq!(parse_file_name("lost+found"), None);
        assert_eq!(parse_file_name(".json"), None);
        assert_eq!(parse_file_name("x.txt"), None);
    }

    #[test]
    fn manifest_round_trip_and_scan() {
        let dir = tempfile::tempdir().unwrap();
        let l = DisksDir::new(dir.path());
        let rec = DiskManifest {
            vm: "web".into(),
            backend: BackendKind::Copy,
            base: "/images/base.ext4".into(),
            size: 4096,
        };
        assert_eq!(l.read("web").unwrap(), None);
        l.write(&rec).unwrap();
        assert_eq!(l.read("web").unwrap(), Some(rec.clone()));
        assert!(!l.path("web", FileRole::ManifestTmp).exists());
        fs::write(l.path("db", FileRole::Part), b"half").unwrap();
        fs::write(dir.path().join("unrelated.txt"), b"x").unwrap();
        let found = l.scan().unwrap();
        assert_eq!(found.keys().collect::<Vec<_>>(), ["db", "web"]);
        assert_eq!(found["web"].manifest, Some(rec));
        assert_eq!(found["db"].manifest, None);
        assert!(found["db"].files.contains_key(&FileRole::Part));
        assert!(l.exists("db") && l.exists("web") && !l.exists("mail"));
        assert!(l.remove_file("web", FileRole::Manifest).unwrap());
        assert!(!l.remove_file("web", FileRole::Manifest).unwrap());
    }
}
