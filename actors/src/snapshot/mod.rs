//! `SnapshotActor`: owns the per-VM copy-on-write root disks and the base-image devices under
//! them. The supervisor sends [`CreateDisk`] while creating a VM (and [`RemoveDisk`] as its
//! undo, or when deleting the VM); the daemon's leak sweep sends [`ListDisks`] after a restart
//! and removes the disks that belong to no VM.
//!
//! All host work goes through one [`Disks`] backend (`dm` or `copy`, see
//! [`crate::host::disks`]), called from synchronous handlers: messages are handled one at a
//! time, so loop and device-mapper operations never interleave. Handlers block on disk I/O
//! (a sparse copy of the base when reflinks are unavailable), so run the actor on its own
//! arbiter with [`SnapshotActor::start_dedicated`].
//!
//! "Snapshot" here means the device-mapper snapshot (or copy) a VM's root disk is made of.
//! Firecracker's memory snapshots (`PUT /snapshot/create`, `/snapshot/load`) belong with the
//! VMM process (`FirecrackerActor`) and the supervisor's snapshot sagas; this actor's part in
//! them is the disk: [`CheckpointDisk`] copies a paused VM's disk into the snapshot, and a VM
//! restored from it gets a [`CreateDisk`] whose base is that checkpoint.

mod handlers;
mod messages;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;

use actix::{Actor, Addr, Arbiter, Context};

pub use self::messages::{CheckpointDisk, CreateDisk, ListDisks, RemoveDisk};
use crate::host::disks::{
    disks_dir, open_backend, BackendChoice, BackendKind, Disks, DisksError, VmDisk,
};

/// Errors of [`SnapshotActor`].
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The VM already has a disk (possibly half-made): remove it first.
    #[error("VM {vm} already has a disk")]
    DiskExists {
        /// The VM.
        vm: String,
    },
    /// The request is invalid (VM name, size, base image); nothing was changed.
    #[error("Invalid disk request for VM {vm}")]
    InvalidRequest {
        /// The VM.
        vm: String,
        /// What is wrong.
        source: DisksError,
    },
    /// Making the disk failed; whatever was made has been undone.
    #[error("Cannot create the disk of VM {vm}")]
    Create {
        /// The VM.
        vm: String,
        /// Why.
        source: DisksError,
    },
    /// Removing the disk failed (it may be in use); what remains is still listed.
    #[error("Cannot remove the disk of VM {vm}")]
    Remove {
        /// The VM.
        vm: String,
        /// Why.
        source: DisksError,
    },
    /// Copying a VM's disk into a snapshot failed; nothing was left at the destination.
    #[error("Cannot checkpoint the disk of VM {vm}")]
    Checkpoint {
        /// The VM.
        vm: String,
        /// Why.
        source: DisksError,
    },
    /// Listing the disks on the host failed.
    #[error("Cannot list disks")]
    List {
        /// Why.
        source: DisksError,
    },
    /// The disk backend cannot be opened (e.g. `dm` configured where the kernel has none).
    #[error("Cannot open the {choice:?} disk backend")]
    Open {
        /// The configured backend.
        choice: BackendChoice,
        /// Why.
        source: DisksError,
    },
}

impl SnapshotError {
    fn from_create(vm: &str, source: DisksError) -> Self {
        let vm = vm.to_string();
        match source {
            DisksError::Exists { .. } => SnapshotError::DiskExists { vm },
            DisksError::InvalidVmName { .. }
            | DisksError::Base { .. }
            | DisksError::BaseNotSectors { .. }
            | DisksError::SizeNotSectors { .. }
            | DisksError::TooSmall { .. } => SnapshotError::InvalidRequest { vm, source },
            source => SnapshotError::Create { vm, source },
        }
    }
}

/// The actor owning the VM root disks.
pub struct SnapshotActor {
    backend: Box<dyn Disks>,
    /// The disks this actor made since it started (the host may hold more: see `ListDisks`).
    disks: BTreeMap<String, VmDisk>,
    log: slog::Logger,
}

impl SnapshotActor {
    /// An actor making disks with `backend` (see [`crate::host::disks::open_backend`]).
    pub fn new(backend: Box<dyn Disks>, log: slog::Logger) -> Self {
        let log =
            log.new(slog::o!("actor" => "snapshot", "backend" => backend.backend().to_string()));
        SnapshotActor {
            backend,
            disks: BTreeMap::new(),
            log,
        }
    }

    /// An actor with the real backend `choice` (`auto` probes device-mapper and logs its
    /// pick) keeping disks under `<data_dir>/disks/`, created if missing.
    pub fn open(
        choice: BackendChoice,
        data_dir: &Path,
        log: slog::Logger,
    ) -> Result<Self, SnapshotError> {
        let backend = open_backend(choice, &disks_dir(data_dir), &log)
            .map_err(|source| SnapshotError::Open { choice, source })?;
        Ok(Self::new(backend, log))
    }

    /// The backend in use.
    pub fn backend(&self) -> BackendKind {
        self.backend.backend()
    }

    /// Starts the actor on a new arbiter (its own thread), so its blocking disk work never
    /// stalls other actors. Must be called inside a running actix system.
    pub fn start_dedicated(self) -> Addr<Self> {
        let arbiter = Arbiter::new();
        Self::start_in_arbiter(&arbiter.handle(), move |_| self)
    }
}

impl Actor for SnapshotActor {
    type Context = Context<Self>;
}
