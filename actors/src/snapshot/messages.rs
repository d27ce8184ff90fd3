//! The messages `SnapshotActor` answers.

use std::path::PathBuf;

use actix::Message;

use crate::host::disks::{DiskEntry, VmDisk};

use super::SnapshotError;

/// Makes `vm`'s copy-on-write root disk from the base root filesystem `image`. The disk is
/// recorded in its manifest before anything is made; on error nothing is left behind. A VM that
/// already has a disk (even a half-made one left by a crash) is refused with
/// [`SnapshotError::DiskExists`]: remove it first.
#[derive(Debug, Message)]
#[rtype(result = "Result<VmDisk, SnapshotError>")]
pub struct CreateDisk {
    /// The VM (1-64 of `[A-Za-z0-9._-]`, not starting with `.`).
    pub vm: String,
    /// The base root filesystem (an ext4 image from the image store).
    pub image: PathBuf,
    /// Disk size in bytes, a whole number of 512-byte sectors, not smaller than the image;
    /// `None` keeps the image's size.
    pub size: Option<u64>,
}

/// Removes every trace of `vm`'s disk: device-mapper and loop devices, files, manifest.
/// Idempotent: answers `Ok(false)` when there was nothing to remove, `Ok(true)` otherwise, so
/// it can serve as a saga's undo and as the leak sweep's cleanup. Works from what exists on
/// the host, so it also removes disks made before a daemon restart. Fails (changing what it
/// could not remove) when the disk is still in use, e.g. Firecracker still holds it.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, SnapshotError>")]
pub struct RemoveDisk {
    /// The VM whose disk to remove.
    pub vm: String,
}

/// Lists the disks that exist on the host (scanned from the manifests, the disks directory and
/// the dm devices, not from memory), complete or half-made, sorted by VM. The daemon's leak
/// sweep removes those that belong to no VM.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<DiskEntry>, SnapshotError>")]
pub struct ListDisks {}

/// Copies `vm`'s root disk as it is now into the new file `dest` (a snapshot's disk
/// checkpoint): a reflink or sparse copy of a file disk, a sparse read of a device-mapper
/// disk. The VM must be paused, so the copy is consistent with its memory snapshot. On error
/// `dest` is not left behind. Answers the bytes the checkpoint occupies. A disk restored
/// from it is made with [`CreateDisk`], `image` being the checkpoint.
#[derive(Debug, Message)]
#[rtype(result = "Result<u64, SnapshotError>")]
pub struct CheckpointDisk {
    /// The VM whose disk to copy.
    pub vm: String,
    /// The checkpoint file to create (its directory must exist).
    pub dest: PathBuf,
}
