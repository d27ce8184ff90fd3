//! The messages [`super::FirecrackerActor`] answers for pausing, snapshotting and restoring
//! its VM (issue 12), and the records they carry. The actor is per VM, so no message names
//! the VM: the actor's own id, run directory and binary are used.
//!
//! Flow: [`PauseVm`] -> [`CreateVmSnapshot`] (VM must be paused) -> [`ResumeVm`] or a stop;
//! for a restore, a fresh actor (state idle or exited) gets [`RestoreVm`], which spawns a new
//! Firecracker process and loads the snapshot into it; afterwards the process is tracked like
//! a booted one (stop, kill, adopt after a hearthd restart).

use std::path::PathBuf;
use std::time::Duration;

use actix::Message;
use hearth_proto::firecracker::CpuTemplate;

use super::messages::SpawnInfo;
use super::FirecrackerError;

/// Pauses the VM's vCPUs (`PATCH /vm {"state": "Paused"}`). The VM must be running (started);
/// pausing a paused VM is not an error (Firecracker accepts it).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), FirecrackerError>")]
pub struct PauseVm {}

/// Resumes the VM's vCPUs (`PATCH /vm {"state": "Resumed"}`). The VM must be running or
/// paused; resuming a running VM is not an error.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), FirecrackerError>")]
pub struct ResumeVm {}

/// Writes a Full snapshot of the paused VM (`PUT /snapshot/create`): the VMM state to
/// `snapshot_path` and guest memory to `mem_path`. Refused (nothing written) unless the VM is
/// paused. The caller records both paths before sending this (so a crash leaves files the
/// sweep knows) and removes them if it fails. Answers what a later restore must match.
#[derive(Debug, Message)]
#[rtype(result = "Result<VmmSnapshotInfo, FirecrackerError>")]
pub struct CreateVmSnapshot {
    /// Where Firecracker writes the VM state (absolute; its directory must exist).
    pub snapshot_path: PathBuf,
    /// Where Firecracker writes guest memory (absolute; its directory must exist).
    pub mem_path: PathBuf,
}

/// Points drive `drive_id` of the started VM at another backing file (`PATCH /drives/{id}`
/// with `path_on_host`), paused or not: Firecracker opens the new file, closes the old one and
/// records the new path (a later snapshot names it, and a load reopens it). Hearth uses it
/// around a snapshot (the state must name the snapshot's own disk checkpoint, which lives as
/// long as the snapshot, not the source VM's disk) and after a load (the restored VM writes its
/// own copy-on-write disk). Refused by the actor before any call unless the VM is started; a
/// missing file or an unknown drive is Firecracker's 400, and the drive keeps its old file.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), FirecrackerError>")]
pub struct UpdateDrivePath {
    /// The drive's id (hearth's root drive is [`super::config::ROOT_DRIVE_ID`]).
    pub drive_id: String,
    /// The new backing file (absolute, UTF-8).
    pub path: PathBuf,
}

/// What a snapshot was taken with: the source VMM's version and machine configuration, to
/// record with the snapshot and to check a restore against ([`RestoreVm::compat`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmSnapshotInfo {
    /// What the VMM compatibility check compares.
    pub compat: SnapshotCompat,
    /// vCPUs (`GET /vm/config`).
    pub vcpus: u8,
    /// Guest memory in MiB (`GET /vm/config`): the size of the memory file.
    pub mem_size_mib: u64,
    /// How long `PUT /snapshot/create` took (Firecracker's own share).
    pub create: Duration,
}

/// The properties of the source VMM that a restoring VMM must share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotCompat {
    /// The source's version as `GET /version` reports it (e.g. `1.17.0-dev`). A restore
    /// needs the same `major.minor.patch` (the suffix is not compared).
    pub fc_version: String,
    /// The source's CPU template (`None` when none was set).
    pub cpu_template: CpuTemplate,
}

/// One `network_overrides` entry: the restored VM's interface `iface_id` uses TAP
/// `host_dev_name` instead of the source's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOverride {
    /// The interface id in the snapshot (hearth's `eth0`).
    pub iface_id: String,
    /// The TAP the restored VM uses.
    pub host_dev_name: String,
}

/// Spawns a fresh Firecracker process for this actor's VM (as [`super::SpawnProcess`] does)
/// and loads a snapshot into it (`PUT /snapshot/load`, File memory backend). The actor must
/// have no process (idle or exited). Before spawning, `compat` is checked against this actor's
/// binary: a mismatch is [`FirecrackerError::IncompatibleSnapshot`] and nothing is started.
/// A failed load makes Firecracker exit (the actor SIGKILLs it when it does not); the actor
/// waits for the exit, removes the sockets and FIFO it left in the run directory (logs stay),
/// then answers the load's error (Firecracker's own text); the exit is reported as
/// [`super::VmProcessEvent::Stopped`] with rung SIGKILL, never as unexpected. On success the
/// process is owned like a booted one (state running, whether or not `resume` is set: stop,
/// kill, pause, snapshot, adopt after a restart all apply).
#[derive(Debug, Message)]
#[rtype(result = "Result<RestoreInfo, FirecrackerError>")]
pub struct RestoreVm {
    /// The VM state file.
    pub snapshot_path: PathBuf,
    /// The guest memory file (mapped privately: it must not change while the VM lives).
    pub mem_path: PathBuf,
    /// What the snapshot was taken with.
    pub compat: SnapshotCompat,
    /// New TAPs for the snapshot's interfaces.
    pub network_overrides: Vec<NetworkOverride>,
    /// `vsock_override`: the vsock socket of the restored VM; `None` uses this actor's run
    /// directory's socket (what [`super::ProbeReady`] connects to), which is what hearth wants.
    pub vsock_uds_path: Option<PathBuf>,
    /// Resume the vCPUs after the load (`resume_vm`).
    pub resume: bool,
    /// Ask Firecracker to advance the guest's clock by the wall time since the snapshot
    /// (`clock_realtime`). The real binary refuses it (and the load fails) when the snapshot's
    /// KVM clock state has no realtime reference, which happens on some hosts some of the time:
    /// see [`FirecrackerError::is_clock_realtime_unavailable`]; restore again without it and
    /// set the guest clock through the agent.
    pub clock_realtime: bool,
}

/// What a restore produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreInfo {
    /// The new process, as a fresh spawn reports it (persist `spawn.record`).
    pub spawn: SpawnInfo,
    /// How long `PUT /snapshot/load` took.
    pub load: Duration,
}
