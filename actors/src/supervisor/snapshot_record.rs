//! The store's record of a VM snapshot: written (`creating`) before any of its files exist, so
//! a crash at any instant leaves a record naming what to sweep; `ready` once complete;
//! `deleting` while its files are removed; `lost` when its memory file, kept in RAM (a fork's,
//! see [`SnapshotRecord::mem_file`]), is gone after a reboot. Its files live in one directory
//! per snapshot, `<data_dir>/snapshots/<name>/`, except a fork's memory file when
//! `[snapshots] fork_memory_dir` is set: `<fork_memory_dir>/<name>.memory`.

use std::path::{Path, PathBuf};

use hearth_proto::api::{CreateVm, VmState};
use hearth_proto::api_snapshot::{SnapshotInfo, SnapshotLeave, SnapshotState};
use hearth_proto::firecracker::CpuTemplate;
use serde::{Deserialize, Serialize};

/// The suffix of memory files kept outside their snapshot's directory (a fork memory
/// directory holds only these, named after their snapshot).
pub const MEM_FILE_SUFFIX: &str = ".memory";

/// One snapshot as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Its name (a DNS label; also its directory's name).
    pub name: String,
    /// Where it is in its life.
    pub state: SnapshotState,
    /// The VM it was taken of.
    pub source_vm: String,
    /// The source VM's spec: a restore runs the same machine.
    pub source_spec: CreateVm,
    /// The source's state before the snapshot paused it, so a crash mid-snapshot can put it
    /// back (a running VM is resumed, a paused one stays paused).
    pub source_was: VmState,
    /// What to leave the source in afterwards.
    pub leave: SnapshotLeave,
    /// The snapshot's directory.
    pub dir: PathBuf,
    /// When it was started, Unix milliseconds.
    pub created_at_ms: u64,
    /// Made by a fork for its new VM (removed with the last VM restored from it).
    pub internal: bool,
    /// The Firecracker version that took it (empty until `ready`).
    pub fc_version: String,
    /// The CPU template it was taken with.
    pub cpu_template: CpuTemplate,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory, MiB.
    pub mem_size_mib: u64,
    /// The guest's vsock CID (part of the guest state: a restored guest keeps it).
    pub vsock_cid: u32,
    /// Bytes the disk checkpoint occupies.
    pub disk_bytes: u64,
    /// Bytes the memory file occupies.
    pub mem_file_bytes: u64,
    /// Set when the snapshot left its source paused with the guest's root filesystem frozen:
    /// the source's VMM then (a later process of the same VM is not frozen). Nothing can
    /// thaw a paused guest, so the source's next resume does, and clears this. Recorded so a
    /// restart of hearthd in between still thaws. Absent in records made before it existed.
    #[serde(default)]
    pub left_frozen: Option<FrozenVmm>,
    /// Where the guest memory file is when it is not in [`Self::dir`] (a fork's, with
    /// `fork_memory_dir` set): recorded with the rest before it is written, so sweeps and
    /// removals find it whatever the configuration says later. Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_file: Option<PathBuf>,
}

/// The VMM process a guest was left frozen in: pid and start time (clock ticks since boot),
/// so a pid reused by a later process does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrozenVmm {
    /// Its pid.
    pub pid: u32,
    /// Its start time (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
}

impl SnapshotRecord {
    /// The directory of snapshot `name` under `base` (`<data_dir>/snapshots`).
    pub fn dir_for(base: &Path, name: &str) -> PathBuf {
        base.join(name)
    }

    /// The VMM state file.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join("vmstate")
    }

    /// The memory file of snapshot `name` in a fork memory directory `dir`.
    pub fn mem_file_in(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}{MEM_FILE_SUFFIX}"))
    }

    /// The guest memory file: [`Self::mem_file`] if set, else in [`Self::dir`].
    pub fn mem_path(&self) -> PathBuf {
        self.mem_file
            .clone()
            .unwrap_or_else(|| self.dir.join("memory"))
    }

    /// Whether the memory file is kept outside the snapshot's directory (in RAM: a fork's)
    /// and is gone (the host rebooted); the entry itself is looked at, never followed.
    pub fn mem_file_missing(&self) -> bool {
        self.mem_file
            .as_deref()
            .is_some_and(|m| m.symlink_metadata().is_err())
    }

    /// The root disk checkpoint.
    pub fn disk_path(&self) -> PathBuf {
        self.dir.join("disk.img")
    }

    /// As the API shows it, with the VMs that use it.
    pub fn info(&self, in_use_by: Vec<String>) -> SnapshotInfo {
        SnapshotInfo {
            name: self.name.clone(),
            state: self.state,
            source_vm: self.source_vm.clone(),
            created_at: self.created_at_ms,
            mem_size_mib: self.mem_size_mib,
            vcpus: self.vcpus,
            fc_version: self.fc_version.clone(),
            disk_bytes: self.disk_bytes,
            mem_file_bytes: self.mem_file_bytes,
            in_use_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records stored before `left_frozen` existed load, as not frozen; a frozen one
    /// round-trips.
    #[test]
    fn left_frozen_is_optional_in_stored_records() {
        let mut v = serde_json::json!({
            "name": "s", "state": "ready", "source_vm": "a",
            "source_spec": {"name": "a", "kernel": "k", "rootfs": "r"},
            "source_was": "running", "leave": "paused", "dir": "/d/s",
            "created_at_ms": 1, "internal": false, "fc_version": "1.17.0-dev",
            "cpu_template": "None", "vcpus": 1, "mem_size_mib": 128, "vsock_cid": 3,
            "disk_bytes": 0, "mem_file_bytes": 0,
        });
        let old: SnapshotRecord = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(old.left_frozen, None);
        v["left_frozen"] = serde_json::json!({"pid": 7, "start_time": 99});
        let new: SnapshotRecord = serde_json::from_value(v).unwrap();
        assert_eq!(
            new.left_frozen,
            Some(FrozenVmm {
                pid: 7,
                start_time: 99
            })
        );
        let again: SnapshotRecord =
            serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(again, new);
    }
}
