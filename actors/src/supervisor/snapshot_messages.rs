//! The supervisor's snapshot messages (issue 12): take, list, get and remove snapshots, and
//! fork a VM. Pausing and resuming are lifecycle actions ([`super::VmAction::Pause`],
//! [`super::VmAction::Resume`]); a restore is a [`super::CreateVm`] whose spec names
//! `from_snapshot`.

use actix::Message;
use hearth_proto::api::VmInfo;
use hearth_proto::api_snapshot::{self, SnapshotInfo};

use super::{Idempotency, SnapshotRecord, SupervisorError};

/// Takes a snapshot of a running or paused VM: recorded (`creating`) -> pause -> disk
/// checkpoint + VMM snapshot (memory to a file) -> the VM left as `spec.leave` asks ->
/// recorded `ready`. Any failure removes the files and the record and puts the VM back as it
/// was (a VM that ran is resumed).
#[derive(Debug, Message)]
#[rtype(result = "Result<SnapshotInfo, SupervisorError>")]
pub struct CreateSnapshot {
    /// The VM to snapshot.
    pub vm: String,
    /// The snapshot's name and what to leave the VM in.
    pub spec: api_snapshot::SnapshotCreate,
    /// Makes a retried request answer the first snapshot instead of taking a second.
    pub idempotency: Option<Idempotency>,
}

/// Every snapshot, ordered by name.
#[derive(Debug, Message)]
#[rtype(result = "Vec<SnapshotInfo>")]
pub struct ListSnapshots {}

/// One snapshot.
#[derive(Debug, Message)]
#[rtype(result = "Result<SnapshotInfo, SupervisorError>")]
pub struct GetSnapshot {
    /// Its name.
    pub name: String,
}

/// Removes a snapshot's files and record. Refused with [`SupervisorError::SnapshotInUse`]
/// while a VM restored from it exists (its memory file is mapped by the VM, and its disk is
/// the base of the VM's), or while it is still being taken.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), SupervisorError>")]
pub struct DeleteSnapshot {
    /// Its name.
    pub name: String,
}

/// Snapshots a running VM (leaving it running) under an internal name and restores that
/// snapshot as the new VM `spec.name`, in one call. The internal snapshot lives as long as
/// the new VM does.
#[derive(Debug, Message)]
#[rtype(result = "Result<VmInfo, SupervisorError>")]
pub struct ForkVm {
    /// The VM to fork.
    pub source: String,
    /// The new VM.
    pub spec: api_snapshot::ForkVm,
    /// Makes a retried fork answer the first new VM instead of making a second.
    pub idempotency: Option<Idempotency>,
}

/// Internal: a change to the snapshot table (store first, then memory).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), SupervisorError>")]
pub(crate) struct CommitSnapshot {
    pub(super) change: SnapshotChange,
}

/// What [`CommitSnapshot`] changes.
#[derive(Debug, Clone)]
pub(crate) enum SnapshotChange {
    /// A new record.
    Insert(SnapshotRecord),
    /// A record replaced.
    Put(SnapshotRecord),
    /// A record forgotten.
    Remove(String),
    /// The named VM was resumed and its guest thawed: no record says it was left frozen.
    Thawed(String),
}

/// Internal: restores a snapshot (internal ones included) as a new VM; sent by a fork once
/// its snapshot is ready.
#[derive(Debug, Message)]
#[rtype(result = "Result<VmInfo, SupervisorError>")]
pub(crate) struct RestoreSnapshot {
    pub(super) spec: hearth_proto::api::CreateVm,
}
