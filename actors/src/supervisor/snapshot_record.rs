//! The store's record of a VM snapshot: written (`creating`) before any of its files exist, so
//! a crash at any instant leaves a record naming what to sweep; `ready` once complete;
//! `deleting` while its files are removed. Its files live in one directory per snapshot,
//! `<data_dir>/snapshots/<name>/`.

use std::path::{Path, PathBuf};

use hearth_proto::api::{CreateVm, VmState};
use hearth_proto::api_snapshot::{SnapshotInfo, SnapshotLeave, SnapshotState};
use hearth_proto::firecracker::CpuTemplate;
use serde::{Deserialize, Serialize};

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

    /// The guest memory file.
    pub fn mem_path(&self) -> PathBuf {
        self.dir.join("memory")
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
