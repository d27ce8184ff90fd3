//! hearth's HTTP bodies for pausing, snapshotting, restoring and forking VMs
//! (`POST /v1/vms/{name}/pause|resume`, `POST /v1/vms/{name}/snapshots`,
//! `GET|DELETE /v1/snapshots[/{name}]`, `POST /v1/vms/{name}/fork`; a restore is
//! `POST /v1/vms` with `from_snapshot`), shared by hearthd and hearthctl.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::api::{validate_vm_name, FieldError};

/// What happens to the source VM once its snapshot is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotLeave {
    /// Stays paused (`hearthctl vm resume` continues it).
    Paused,
    /// Resumed: it runs on as before.
    #[default]
    Running,
    /// Stopped (its disk is kept, its network lease released).
    Stopped,
}

impl SnapshotLeave {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotLeave::Paused => "paused",
            SnapshotLeave::Running => "running",
            SnapshotLeave::Stopped => "stopped",
        }
    }
}

impl fmt::Display for SnapshotLeave {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SnapshotLeave {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            SnapshotLeave::Paused,
            SnapshotLeave::Running,
            SnapshotLeave::Stopped,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
        .ok_or_else(|| format!("{s:?} is not one of paused, running, stopped"))
    }
}

/// `POST /v1/vms/{name}/snapshots`: take a snapshot (memory, VMM state and root disk, at one
/// instant) of a running or paused VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    /// The snapshot's name: 1-63 of `a-z`, `0-9`, `-`, unique on the host.
    pub name: String,
    /// The source VM's state afterwards; default `running`.
    #[serde(default)]
    pub leave: SnapshotLeave,
}

impl SnapshotCreate {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_snapshot_name(&self.name, "name")
    }
}

/// `POST /v1/vms/{name}/fork`: snapshot the running VM and restore the snapshot as a new VM,
/// in one call; the source keeps running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkVm {
    /// The new VM's name (a DNS label, unique on the host).
    pub name: String,
}

impl ForkVm {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_vm_name(&self.name)
    }
}

/// Where a snapshot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// Being taken: its files are recorded and may be half-written.
    Creating,
    /// Complete: it can be restored.
    Ready,
    /// Being removed.
    Deleting,
    /// Its memory file is gone (a fork's, kept in RAM, after a host reboot): it cannot be
    /// restored, only removed (with the VM forked from it).
    Lost,
}

impl SnapshotState {
    /// The name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Creating => "creating",
            SnapshotState::Ready => "ready",
            SnapshotState::Deleting => "deleting",
            SnapshotState::Lost => "lost",
        }
    }
}

impl fmt::Display for SnapshotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SnapshotState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            SnapshotState::Creating,
            SnapshotState::Ready,
            SnapshotState::Deleting,
            SnapshotState::Lost,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown snapshot state {s:?}"))
    }
}

/// A snapshot as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Its name.
    pub name: String,
    /// Where it is in its life.
    pub state: SnapshotState,
    /// The VM it was taken of (which may since be gone).
    pub source_vm: String,
    /// When it was taken, Unix time in milliseconds.
    pub created_at: u64,
    /// Guest memory, MiB.
    pub mem_size_mib: u64,
    /// vCPUs.
    pub vcpus: u8,
    /// The Firecracker version that took it (a restore needs the same).
    pub fc_version: String,
    /// Bytes the root disk checkpoint occupies on the host (blocks allocated).
    pub disk_bytes: u64,
    /// Bytes the memory file occupies on the host (blocks allocated; it is sparse).
    pub mem_file_bytes: u64,
    /// VMs restored from it that still exist: while any does, it cannot be removed.
    pub in_use_by: Vec<String>,
}

/// Snapshot names follow VM names: 1-63 of `a-z`, `0-9` and `-`, not starting or ending with
/// `-` (they name a directory under the data directory). `field` names the field in errors.
pub fn validate_snapshot_name(name: &str, field: &'static str) -> Result<(), FieldError> {
    validate_vm_name(name).map_err(|e| FieldError {
        field,
        reason: e.reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_defaults_to_leave_running_and_refuses_unknown_fields() {
        let c: SnapshotCreate = serde_json::from_str(r#"{"name":"web-ready"}"#).unwrap();
        assert_eq!(c.leave, SnapshotLeave::Running);
        c.validate().unwrap();
        let c: SnapshotCreate = serde_json::from_str(r#"{"name":"a","leave":"stopped"}"#).unwrap();
        assert_eq!(c.leave, SnapshotLeave::Stopped);
        let e =
            serde_json::from_str::<SnapshotCreate>(r#"{"name":"a","leave":"gone"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
        let e = serde_json::from_str::<SnapshotCreate>(r#"{"name":"a","mem":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn names_are_dns_labels() {
        for bad in ["", "-a", "a-", "A", "a/b", "..", "a.b", &"a".repeat(64)] {
            let e = SnapshotCreate {
                name: bad.into(),
                leave: SnapshotLeave::Running,
            }
            .validate()
            .unwrap_err();
            assert_eq!(e.field, "name", "{bad:?}");
        }
        assert_eq!(
            validate_snapshot_name("../etc", "from_snapshot")
                .unwrap_err()
                .field,
            "from_snapshot"
        );
        ForkVm {
            name: "web-2".into(),
        }
        .validate()
        .unwrap();
        assert!(ForkVm { name: "Web".into() }.validate().is_err());
    }

    #[test]
    fn leave_and_state_round_trip_their_names() {
        for l in [
            SnapshotLeave::Paused,
            SnapshotLeave::Running,
            SnapshotLeave::Stopped,
        ] {
            assert_eq!(l.as_str().parse::<SnapshotLeave>(), Ok(l));
        }
        for s in [
            SnapshotState::Creating,
            SnapshotState::Ready,
            SnapshotState::Deleting,
            SnapshotState::Lost,
        ] {
            assert_eq!(s.as_str().parse::<SnapshotState>(), Ok(s));
        }
        assert!("paused ".parse::<SnapshotLeave>().is_err());
    }
}
