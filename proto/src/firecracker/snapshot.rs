//! `PUT /snapshot/create` ([`SnapshotCreateParams`]) and `PUT /snapshot/load`
//! ([`SnapshotLoadParams`]), `definitions/SnapshotCreateParams`, `SnapshotLoadParams`,
//! `MemoryBackend`, `NetworkOverride`, `VsockOverride`.
//!
//! Field order follows Firecracker's structs (not the spec's), so an unknown-field error lists
//! the fields as the real binary does (checked against v1.17.0-dev). `NetworkOverride` and
//! `VsockOverride` accept unknown fields there, so they do here too.

use serde::{Deserialize, Serialize};

/// The kind of snapshot to create.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    /// Only the memory dirtied since the previous snapshot.
    Diff,
    /// All of guest memory.
    #[default]
    Full,
}

/// The configuration used for creating a snapshot. The VM must be paused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateParams {
    /// Type of snapshot to create (default `Full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
    /// Path to the file that will contain the microVM state.
    pub snapshot_path: String,
    /// Path to the file that will contain the guest memory.
    pub mem_file_path: String,
}

/// What backs guest memory on load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemBackendType {
    /// A file holding guest memory, mapped privately.
    File,
    /// A userfaultfd handler listening on a Unix socket.
    Uffd,
}

/// Configuration for the backend that handles memory load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackend {
    /// The memory file (`File`) or the handler's socket (`Uffd`).
    pub backend_path: String,
    /// The kind of backend.
    pub backend_type: MemBackendType,
}

/// Allows for changing the backing TAP device of a network interface during snapshot
/// restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkOverride {
    /// The name of the interface to modify.
    pub iface_id: String,
    /// The new host device of the interface.
    pub host_dev_name: String,
}

/// Allows for changing the backing Unix domain socket of a vsock device during snapshot
/// restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockOverride {
    /// The new path for the backing Unix domain socket.
    pub uds_path: String,
}

/// The huge pages configuration of a restored microVM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadHugePages {
    /// Reuse the value serialised in the snapshot.
    Snapshot,
    /// Regular 4K pages.
    None,
    /// Transparent huge pages.
    Transparent,
    /// Explicit hugetlbfs 2 MiB pages.
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// The configuration used for loading a snapshot: exactly one of `mem_file_path` and
/// `mem_backend` (checked by [`SnapshotLoadParams::check_mem`], as Firecracker checks it after
/// parsing). Only accepted by a fresh process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoadParams {
    /// Path to the file that contains the microVM state to be loaded.
    pub snapshot_path: String,
    /// (Deprecated) Path to the guest memory file; only without `mem_backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_file_path: Option<String>,
    /// The memory backend; only without `mem_file_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_backend: Option<MemoryBackend>,
    /// (Deprecated) Enable dirty page tracking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_diff_snapshots: Option<bool>,
    /// Enable dirty page tracking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Resume the VM once the load succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
    /// TAPs replacing those of the snapshot's interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_overrides: Option<Vec<NetworkOverride>>,
    /// A socket path replacing the snapshot's vsock `uds_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
    /// (x86-64) Advance kvmclock by the wall-clock time elapsed since the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_realtime: Option<bool>,
    /// The huge pages configuration of the restored VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<LoadHugePages>,
}

/// Firecracker's text when both memory fields are given (its body-error wrapper adds the
/// final full stop).
pub const TOO_MANY_MEM_FIELDS: &str =
    "too many fields: either `mem_backend` or `mem_file_path` exclusively is required";
/// Firecracker's text when neither memory field is given (the wrapper adds the full stop).
pub const MISSING_MEM_FIELD: &str =
    "missing field: either `mem_backend` or `mem_file_path` is required";

impl SnapshotLoadParams {
    /// A load of `snapshot_path` with memory from the file `mem_path`.
    pub fn from_file(snapshot_path: &str, mem_path: &str) -> Self {
        SnapshotLoadParams {
            snapshot_path: snapshot_path.into(),
            mem_backend: Some(MemoryBackend {
                backend_path: mem_path.into(),
                backend_type: MemBackendType::File,
            }),
            ..SnapshotLoadParams::default()
        }
    }

    /// The memory backend, from whichever of the two fields is given: exactly one must be.
    /// The error is Firecracker's text (it reports it as a body deserialisation error).
    pub fn check_mem(&self) -> Result<MemoryBackend, &'static str> {
        match (&self.mem_file_path, &self.mem_backend) {
            (Some(_), Some(_)) => Err(TOO_MANY_MEM_FIELDS),
            (None, None) => Err(MISSING_MEM_FIELD),
            (Some(path), None) => Ok(MemoryBackend {
                backend_path: path.clone(),
                backend_type: MemBackendType::File,
            }),
            (None, Some(b)) => Ok(b.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_body_matches_the_spec_names() {
        let mut p = SnapshotLoadParams::from_file("/s", "/m");
        p.resume_vm = Some(true);
        p.network_overrides = Some(vec![NetworkOverride {
            iface_id: "eth0".into(),
            host_dev_name: "tap1".into(),
        }]);
        p.vsock_override = Some(VsockOverride {
            uds_path: "/v".into(),
        });
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(
            s,
            r#"{"snapshot_path":"/s","mem_backend":{"backend_path":"/m","backend_type":"File"},"resume_vm":true,"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap1"}],"vsock_override":{"uds_path":"/v"}}"#
        );
        assert_eq!(serde_json::from_str::<SnapshotLoadParams>(&s).unwrap(), p);
    }

    #[test]
    fn exactly_one_memory_field() {
        let mut p = SnapshotLoadParams::from_file("/s", "/m");
        assert_eq!(p.check_mem().unwrap().backend_path, "/m");
        p.mem_file_path = Some("/m2".into());
        assert_eq!(p.check_mem().unwrap_err(), TOO_MANY_MEM_FIELDS);
        p.mem_backend = None;
        assert_eq!(p.check_mem().unwrap().backend_path, "/m2");
        p.mem_file_path = None;
        assert_eq!(p.check_mem().unwrap_err(), MISSING_MEM_FIELD);
    }

    #[test]
    fn unknown_fields_are_listed_in_firecrackers_order() {
        let e = serde_json::from_str::<SnapshotLoadParams>(r#"{"snapshot_path":"/s","bogus":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("unknown field `bogus`, expected one of `snapshot_path`, `mem_file_path`, `mem_backend`, `enable_diff_snapshots`, `track_dirty_pages`, `resume_vm`, `network_overrides`, `vsock_override`, `clock_realtime`, `huge_pages`"), "{e}");
        let e = serde_json::from_str::<SnapshotCreateParams>(
            r#"{"snapshot_path":"/s","mem_file_path":"/m","zz":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "unknown field `zz`, expected one of `snapshot_type`, `snapshot_path`, `mem_file_path` at line 1 column 47");
        // Override bodies tolerate unknown fields, as Firecracker's do.
        assert!(serde_json::from_str::<VsockOverride>(r#"{"uds_path":"/x","zz":1}"#).is_ok());
    }
}
