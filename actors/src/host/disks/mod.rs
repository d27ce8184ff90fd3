//! Per-VM root disks on the host: the [`Disks`] trait `SnapshotActor` drives, and its
//! backends.
//!
//! - [`copy::CopyDisks`]: a private copy of the base per VM, made by reflink (`FICLONE`) where
//!   the filesystem shares extents, else by a sparse copy that keeps holes
//!   (`SEEK_DATA`/`SEEK_HOLE` + `copy_file_range`), then grown with `set_len`.
//! - [`dm::DmDisks`]: a device-mapper `snapshot` of the base: the base attached once as a
//!   read-only loop device shared by every VM that uses it, a sparse COW file per VM on its own
//!   loop device. Its kernel side goes through [`block::BlockOps`] (real ioctls in
//!   [`block::LinuxBlock`], a recording fake in [`fake::FakeBlock`]).
//! - [`fake::FakeDisks`]: an in-memory backend that records calls and injects errors, for
//!   unit tests of the actor.
//!
//! Every backend writes a disk's manifest ([`layout`]) before making anything, so a daemon
//! restarted after a crash finds (with [`Disks::list`]) and removes every disk, also half-made
//! ones. [`open_backend`] picks `dm` when device-mapper works and `copy` otherwise.

pub mod block;
pub mod checkpoint;
pub mod copy;
pub mod dm;
#[cfg(any(test, doc, feature = "testing"))]
pub mod fake;
pub mod layout;
pub mod table;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a VM's root disk is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Device-mapper snapshot over a shared read-only loop device of the base.
    Dm,
    /// A per-VM file: reflink or sparse copy of the base.
    Copy,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Dm => "dm",
            BackendKind::Copy => "copy",
        })
    }
}

/// A recorded backend name that is neither `dm` nor `copy`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Unknown disk backend {0:?}: expected dm or copy")]
pub struct ParseBackendKindError(pub String);

impl FromStr for BackendKind {
    type Err = ParseBackendKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dm" => Ok(BackendKind::Dm),
            "copy" => Ok(BackendKind::Copy),
            other => Err(ParseBackendKindError(other.into())),
        }
    }
}

/// The backend a daemon is configured with: one of the two, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// `dm` when `/dev/mapper/control` opens and answers, else `copy`.
    #[default]
    Auto,
    /// Always device-mapper (fails to open where the kernel has none).
    Dm,
    /// Always per-VM copies.
    Copy,
}

/// A backend name that is not `auto`, `dm` or `copy`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Unknown disk backend {0:?}: expected auto, dm or copy")]
pub struct ParseBackendError(pub String);

impl FromStr for BackendChoice {
    type Err = ParseBackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "dm" => Ok(BackendChoice::Dm),
            "copy" => Ok(BackendChoice::Copy),
            other => Err(ParseBackendError(other.into())),
        }
    }
}

/// A VM root disk, ready to hand to Firecracker as its root drive (`path_on_host`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDisk {
    /// The VM it belongs to.
    pub vm: String,
    /// The block device (`dm`) or file (`copy`) Firecracker opens read-write.
    pub path: PathBuf,
    /// How it was made.
    pub backend: BackendKind,
    /// Size the guest sees, in bytes.
    pub size: u64,
}

/// What a backend is asked to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The VM (a safe name, see [`layout::check_vm_name`]).
    pub vm: String,
    /// The base root filesystem image.
    pub base: PathBuf,
    /// The disk size in bytes; `None` keeps the base's size. Never smaller than the base.
    pub size: Option<u64>,
}

/// How far a listed disk got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskState {
    /// Complete and usable.
    Ready,
    /// Recorded but not finished (a crash mid-create, or parts left by a crash mid-remove):
    /// remove it.
    Partial,
}

/// A disk found on the host by [`Disks::list`] (from the manifests, files and dm devices, not
/// from memory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskEntry {
    /// The VM it belongs to.
    pub vm: String,
    /// The backend that made it.
    pub backend: BackendKind,
    /// Its device or file, when it exists.
    pub path: Option<PathBuf>,
    /// The base it was made from, when the manifest says.
    pub base: Option<PathBuf>,
    /// Its size in bytes, when known.
    pub size: Option<u64>,
    /// Complete, or left half-made.
    pub state: DiskState,
}

/// Errors of the disk backends.
#[derive(Debug, thiserror::Error)]
pub enum DisksError {
    /// The VM name cannot be used in file and device names.
    #[error("Invalid VM name {vm:?}: {reason}")]
    InvalidVmName {
        /// The name given.
        vm: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The VM already has a disk (possibly half-made: remove it first).
    #[error("VM {vm} already has a disk")]
    Exists {
        /// The VM.
        vm: String,
    },
    /// The base image cannot be read.
    #[error("Cannot read base image {path}")]
    Base {
        /// The base image.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The base image is not a whole number of 512-byte sectors.
    #[error("Base image {path} is {size} bytes, not a whole number of 512-byte sectors")]
    BaseNotSectors {
        /// The base image.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The requested size is not a whole number of 512-byte sectors.
    #[error("Disk size {size} is not a whole number of 512-byte sectors")]
    SizeNotSectors {
        /// The requested size.
        size: u64,
    },
    /// The requested size is smaller than the base.
    #[error("Disk size {requested} is smaller than the base image ({base} bytes)")]
    TooSmall {
        /// The requested size.
        requested: u64,
        /// The base's size.
        base: u64,
    },
    /// A file operation failed.
    #[error("Cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A disk manifest is unreadable.
    #[error("Cannot parse disk manifest {path}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A loop device operation failed.
    #[error("Cannot {op} loop device for {path}")]
    Loop {
        /// What was being done.
        op: &'static str,
        /// The backing file or loop device.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A device-mapper operation failed.
    #[error("Cannot {op} device-mapper device {name}: {message}")]
    Dm {
        /// What was being done.
        op: &'static str,
        /// The dm device.
        name: String,
        /// The ioctl error, rendered.
        message: String,
    },
    /// Device-mapper cannot be used on this host.
    #[error("Device-mapper is unavailable: {reason}")]
    DmUnavailable {
        /// Why (names the missing kernel feature or device).
        reason: String,
    },
    /// The VM has no complete disk to checkpoint.
    #[error("VM {vm} has no complete disk")]
    NoDisk {
        /// The VM.
        vm: String,
    },
    /// An error injected by a fake.
    #[error("Injected failure in {op}")]
    Injected {
        /// The faked operation.
        op: &'static str,
    },
}

/// Makes, removes and lists VM root disks. Implementations are driven by one actor at a time
/// and may block (file copies, ioctls); callers serialise the calls.
pub trait Disks: Send {
    /// The backend this is.
    fn backend(&self) -> BackendKind;

    /// Records, then makes, the disk of `spec.vm`. On error nothing is left behind: neither
    /// files, devices nor manifest.
    fn create(&mut self, spec: &DiskSpec) -> Result<VmDisk, DisksError>;

    /// Removes every trace of `vm`'s disk (devices, files, then the manifest). Returns
    /// `false` when there was nothing to remove, so removal is idempotent.
    fn remove(&mut self, vm: &str) -> Result<bool, DisksError>;

    /// The disks that exist on the host, complete or half-made, found from the manifests, the
    /// files and devices (not from memory), sorted by VM.
    fn list(&mut self) -> Result<Vec<DiskEntry>, DisksError>;

    /// Copies `vm`'s complete disk as it is now into the new file `dest` (a snapshot's disk
    /// checkpoint; see [`checkpoint`]); the VM must not write it meanwhile (it is paused).
    /// On error `dest` is not left behind. Answers the bytes the copy occupies.
    fn checkpoint(&mut self, vm: &str, dest: &Path) -> Result<u64, DisksError> {
        let path = self
            .list()?
            .into_iter()
            .find(|d| d.vm == vm && d.state == DiskState::Ready)
            .and_then(|d| d.path)
            .ok_or_else(|| DisksError::NoDisk { vm: vm.to_owned() })?;
        checkpoint::copy_disk(&path, dest)
    }
}

/// The disks directory of a data directory: `<data_dir>/disks`.
pub fn disks_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("disks")
}

/// Which backend `choice` resolves to, given whether device-mapper answered (`Err(reason)`
/// when not), and the sentence to log about it.
pub fn choose_backend(
    choice: BackendChoice,
    dm_probe: &Result<(), String>,
) -> Result<(BackendKind, String), DisksError> {
    match (choice, dm_probe) {
        (BackendChoice::Copy, _) => Ok((BackendKind::Copy, "configured".into())),
        (BackendChoice::Dm, Ok(())) => Ok((BackendKind::Dm, "configured".into())),
        (BackendChoice::Dm, Err(reason)) => Err(DisksError::DmUnavailable {
            reason: reason.clone(),
        }),
        (BackendChoice::Auto, Ok(())) => Ok((BackendKind::Dm, "device-mapper answers".into())),
        (BackendChoice::Auto, Err(reason)) => Ok((
            BackendKind::Copy,
            format!("device-mapper is unavailable ({reason})"),
        )),
    }
}

/// Opens the real backend for `choice` with disks under `disks_dir` (created if missing),
/// probing device-mapper for `auto` and logging which backend was picked and why.
pub fn open_backend(
    choice: BackendChoice,
    disks_dir: &Path,
    log: &slog::Logger,
) -> Result<Box<dyn Disks>, DisksError> {
    std::fs::create_dir_all(disks_dir).map_err(|source| DisksError::Io {
        op: "create directory",
        path: disks_dir.into(),
        source,
    })?;
    let probe = match choice {
        BackendChoice::Copy => Ok(()),
        _ => block::probe_dm(),
    };
    let (kind, why) = choose_backend(choice, &probe)?;
    slog::info!(log, "disk backend chosen"; "backend" => %kind, "choice" => ?choice, "why" => why,
        "dir" => %disks_dir.display());
    Ok(match kind {
        BackendKind::Copy => Box::new(copy::CopyDisks::new(disks_dir)),
        BackendKind::Dm => Box::new(dm::DmDisks::new(
            disks_dir,
            block::LinuxBlock::new(),
            log.clone(),
        )),
    })
}

/// Reads the base's size and checks it against `spec.size`: the disk size to make, and the
/// base's size. Both are whole sectors.
pub(crate) fn disk_sizes(spec: &DiskSpec) -> Result<(u64, u64), DisksError> {
    let meta = std::fs::metadata(&spec.base).map_err(|source| DisksError::Base {
        path: spec.base.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(DisksError::Base {
            path: spec.base.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    let base = meta.len();
    check_sizes(&spec.base, base, spec.size).map(|size| (size, base))
}

/// The disk size for a base of `base` bytes and a requested `size`: whole sectors, not
/// smaller than the base.
pub fn check_sizes(base_path: &Path, base: u64, size: Option<u64>) -> Result<u64, DisksError> {
    if table::sectors(base).is_none() {
        return Err(DisksError::BaseNotSectors {
            path: base_path.into(),
            size: base,
        });
    }
    let size = size.unwrap_or(base);
    if table::sectors(size).is_none() {
        return Err(DisksError::SizeNotSectors { size });
    }
    if size < base {
        return Err(DisksError::TooSmall {
            requested: size,
            base,
        });
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_dm_and_says_why_not() {
        let ok = Ok(());
        let missing = Err("no /dev/mapper/control".to_string());
        assert_eq!(
            choose_backend(BackendChoice::Auto, &ok).unwrap().0,
            BackendKind::Dm
        );
        let (kind, why) = choose_backend(BackendChoice::Auto, &missing).unwrap();
        assert_eq!(kind, BackendKind::Copy);
        assert!(why.contains("no /dev/mapper/control"), "{why}");
        assert_eq!(
            choose_backend(BackendChoice::Copy, &ok).unwrap().0,
            BackendKind::Copy
        );
        assert!(matches!(
            choose_backend(BackendChoice::Dm, &missing),
            Err(DisksError::DmUnavailable { .. })
        ));
    }

    #[test]
    fn backend_choice_parses() {
        assert_eq!("auto".parse(), Ok(BackendChoice::Auto));
        assert_eq!("dm".parse(), Ok(BackendChoice::Dm));
        assert_eq!("copy".parse(), Ok(BackendChoice::Copy));
        assert!("lvm".parse::<BackendChoice>().is_err());
    }

    #[test]
    fn sizes_are_whole_sectors_and_not_smaller_than_base() {
        let p = Path::new("/base.ext4");
        assert_eq!(check_sizes(p, 4096, None).unwrap(), 4096);
        assert_eq!(check_sizes(p, 4096, Some(8192)).unwrap(), 8192);
        assert_eq!(check_sizes(p, 4096, Some(4096)).unwrap(), 4096);
        assert!(matches!(
            check_sizes(p, 4096, Some(2048)),
            Err(DisksError::TooSmall {
                requested: 2048,
                base: 4096
            })
        ));
        assert!(matches!(
            check_sizes(p, 4096, Some(5000)),
            Err(DisksError::SizeNotSectors { size: 5000 })
        ));
        assert!(matches!(
            check_sizes(p, 1000, None),
            Err(DisksError::BaseNotSectors { size: 1000, .. })
        ));
    }
}
