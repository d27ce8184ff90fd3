//! The supervisor's store port: the VM table, the resources each VM holds, events and
//! idempotency keys. hearthd implements it with SQLite (`hearth::store`); tests use
//! [`MemoryVmStore`]. Every side effect the supervisor makes is preceded by a store write.
//! (Not to be confused with the disk backends' own bookkeeping, `host::disks::layout`.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use hearth_proto::api::{CreateVm, Event, EventReason, VmState};

use super::snapshot_record::SnapshotRecord;
use crate::firecracker::VmmProcess;
use crate::lease::NetLease;

/// A failed store operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmStoreError {
    /// A VM with that name exists already.
    #[error("A VM named {0:?} already exists")]
    Exists(String),
    /// No VM with that name.
    #[error("No VM named {0:?}")]
    NotFound(String),
    /// The storage failed.
    #[error("State storage failed: {0}")]
    Storage(String),
    /// A snapshot with that name exists already.
    #[error("A snapshot named {0:?} already exists")]
    SnapshotExists(String),
    /// No snapshot with that name.
    #[error("No snapshot named {0:?}")]
    SnapshotNotFound(String),
}

/// A VM's root disk as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRecord {
    /// The disk's path (file or block device).
    pub path: PathBuf,
    /// Which backend made it.
    pub backend: crate::host::disks::BackendKind,
}

/// The store's record of a VM's [`VmmProcess`]: written before the spawn (paths and the
/// guest's CID, so a crash mid-spawn leaves a trace), completed after it (pid, start time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmProcessRecord {
    /// Its pid, once spawned.
    pub pid: Option<u32>,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field 22), once spawned.
    pub start_time: Option<u64>,
    /// The API socket path.
    pub api_socket: PathBuf,
    /// The binary it runs.
    pub binary: PathBuf,
    /// The guest's vsock CID.
    pub vsock_cid: u32,
    /// A snapshot left this process paused with its guest's root filesystem frozen, and was
    /// removed since (the marker was its, [`super::SnapshotRecord::left_frozen`]): the next
    /// resume still thaws. A later process of the VM is a new record, never frozen.
    pub left_frozen: bool,
}

impl VmmProcessRecord {
    /// The process, once spawned (pid and start time known): what adopting it checks.
    pub fn spawned(&self) -> Option<VmmProcess> {
        Some(VmmProcess {
            pid: self.pid?,
            start_time: self.start_time?,
            api_socket: self.api_socket.clone(),
            binary: self.binary.clone(),
        })
    }

    /// Completes the record with the spawned process's pid and start time.
    pub fn set_spawned(&mut self, process: &VmmProcess) {
        self.pid = Some(process.pid);
        self.start_time = Some(process.start_time);
    }
}

/// One VM with its resource rows.
#[derive(Debug, Clone, PartialEq)]
pub struct VmRecord {
    /// What the VM was created with (its name included).
    pub spec: CreateVm,
    /// Its lifecycle state.
    pub state: VmState,
    /// Whether NAT is wanted.
    pub nat: bool,
    /// Why it failed, if it did.
    pub last_error: Option<String>,
    /// Its network lease, if it holds one.
    pub lease: Option<NetLease>,
    /// Its root disk, if recorded.
    pub disk: Option<DiskRecord>,
    /// Its VMM process, if recorded.
    pub process: Option<VmmProcessRecord>,
    /// Its lifecycle-policy bookkeeping.
    pub policy: PolicyState,
    /// The uid (and gid) it runs as when jailed, leased for its life (issue 16).
    pub uid: Option<u32>,
}

/// What the lifecycle policies remember about a VM (restart history, time limit), stored so
/// that a restart of hearthd neither forgets a deadline nor resets a crash loop's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyState {
    /// Restarts the policy made since the VM last ran stably.
    pub attempts: u32,
    /// When its VMM was last started (boot, user start or policy restart).
    pub last_start: Option<SystemTime>,
    /// When its time limit is reached, if it has one.
    pub deadline: Option<SystemTime>,
    /// When it was created (autostarts go oldest first).
    pub created: Option<SystemTime>,
    /// When the restart the policy decided on is due, while one is pending (stored so that
    /// the backoff survives a restart of hearthd).
    pub restart_due: Option<SystemTime>,
}

impl PolicyState {
    /// The restart history [`super::policy::decide_restart`] reads.
    pub fn history(&self) -> super::policy::RestartHistory {
        super::policy::RestartHistory {
            attempts: self.attempts,
            last_start: self.last_start,
        }
    }
}

/// The persistence port. Writes are durable when they return.
pub trait VmStore {
    /// Records a new VM in `Creating`; `Exists` if the name is taken.
    fn insert_vm(&mut self, spec: &CreateVm) -> Result<(), VmStoreError>;
    /// Sets a VM's state and last error.
    fn set_state(
        &mut self,
        vm: &str,
        state: VmState,
        last_error: Option<&str>,
    ) -> Result<(), VmStoreError>;
    /// Sets whether NAT is wanted.
    fn set_nat(&mut self, vm: &str, nat: bool) -> Result<(), VmStoreError>;
    /// Records the lease a VM holds.
    fn put_lease(&mut self, vm: &str, lease: &NetLease) -> Result<(), VmStoreError>;
    /// Forgets a VM's lease.
    fn clear_lease(&mut self, vm: &str) -> Result<(), VmStoreError>;
    /// Records a VM's disk (before it is made).
    fn put_disk(&mut self, vm: &str, disk: &DiskRecord) -> Result<(), VmStoreError>;
    /// Forgets a VM's disk.
    fn clear_disk(&mut self, vm: &str) -> Result<(), VmStoreError>;
    /// Records a VM's process.
    fn put_process(&mut self, vm: &str, process: &VmmProcessRecord) -> Result<(), VmStoreError>;
    /// Forgets a VM's process.
    fn clear_process(&mut self, vm: &str) -> Result<(), VmStoreError>;
    /// Replaces a VM's spec (a `PATCH` of what can change on a live VM).
    fn put_spec(&mut self, vm: &str, spec: &CreateVm) -> Result<(), VmStoreError>;
    /// Records a VM's lifecycle-policy bookkeeping.
    fn put_policy(&mut self, vm: &str, policy: &PolicyState) -> Result<(), VmStoreError>;
    /// Records the uid a jailed VM runs as, or with `None` forgets it (released).
    fn put_uid(&mut self, vm: &str, uid: Option<u32>) -> Result<(), VmStoreError>;
    /// The host's cordon reason, when it is cordoned.
    fn cordon(&mut self) -> Result<Option<String>, VmStoreError>;
    /// Cordons the host with `reason`, or with `None` uncordons it.
    fn put_cordon(&mut self, reason: Option<&str>) -> Result<(), VmStoreError>;
    /// The value under `key` in the host's own settings (e.g. `drain`, an unfinished drain).
    fn node_value(&mut self, key: &str) -> Result<Option<String>, VmStoreError>;
    /// Stores `value` under `key` in the host's own settings, or with `None` removes it.
    fn put_node_value(&mut self, key: &str, value: Option<&str>) -> Result<(), VmStoreError>;
    /// Removes a VM and its rows.
    fn delete_vm(&mut self, vm: &str) -> Result<(), VmStoreError>;
    /// Every VM, ordered by name.
    fn load_all(&mut self) -> Result<Vec<VmRecord>, VmStoreError>;
    /// Appends an event; returns it with its sequence number.
    fn append_event(
        &mut self,
        vm: &str,
        state: VmState,
        reason: EventReason,
        detail: Option<&str>,
    ) -> Result<Event, VmStoreError>;
    /// Events after `since`, oldest first, at most `limit`.
    fn events_since(&mut self, since: u64, limit: u32) -> Result<Vec<Event>, VmStoreError>;
    /// The (request hash, response) stored under an idempotency key.
    fn idempotent_response(&mut self, key: &str) -> Result<Option<(String, String)>, VmStoreError>;
    /// Stores the response to a keyed request.
    fn put_idempotent_response(
        &mut self,
        key: &str,
        request_hash: &str,
        response: &str,
    ) -> Result<(), VmStoreError>;
    /// Records a new snapshot (before any of its files exist); `SnapshotExists` if the name
    /// is taken.
    fn insert_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), VmStoreError>;
    /// Replaces a snapshot's record (state, what it was taken with, sizes).
    fn put_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), VmStoreError>;
    /// Forgets a snapshot (its files are gone).
    fn delete_snapshot(&mut self, name: &str) -> Result<(), VmStoreError>;
    /// Every snapshot, ordered by name.
    fn load_snapshots(&mut self) -> Result<Vec<SnapshotRecord>, VmStoreError>;
}

/// An in-memory store for tests and examples; can be told to fail writes.
#[derive(Debug, Default)]
pub struct MemoryVmStore {
    vms: BTreeMap<String, VmRecord>,
    snapshots: BTreeMap<String, SnapshotRecord>,
    events: Vec<Event>,
    keys: BTreeMap<String, (String, String)>,
    cordon: Option<String>,
    node: BTreeMap<String, String>,
    /// When set, every write fails with this message.
    pub fail_writes: Option<String>,
    /// When set, writes of this key of the host's settings fail (and nothing else does).
    pub fail_node_key: Option<String>,
}

impl MemoryVmStore {
    fn check(&self) -> Result<(), VmStoreError> {
        match &self.fail_writes {
            Some(msg) => Err(VmStoreError::Storage(msg.clone())),
            None => Ok(()),
        }
    }

    fn vm(&mut self, vm: &str) -> Result<&mut VmRecord, VmStoreError> {
        self.check()?;
        self.vms
            .get_mut(vm)
            .ok_or_else(|| VmStoreError::NotFound(vm.to_owned()))
    }
}

impl VmStore for MemoryVmStore {
    fn insert_vm(&mut self, spec: &CreateVm) -> Result<(), VmStoreError> {
        self.check()?;
        if self.vms.contains_key(&spec.name) {
            return Err(VmStoreError::Exists(spec.name.clone()));
        }
        self.vms.insert(
            spec.name.clone(),
            VmRecord {
                spec: spec.clone(),
                state: VmState::Creating,
                nat: spec.nat,
                last_error: None,
                lease: None,
                disk: None,
                process: None,
                policy: PolicyState::default(),
                uid: None,
            },
        );
        Ok(())
    }

    fn put_spec(&mut self, vm: &str, spec: &CreateVm) -> Result<(), VmStoreError> {
        self.vm(vm)?.spec = spec.clone();
        Ok(())
    }

    fn put_uid(&mut self, vm: &str, uid: Option<u32>) -> Result<(), VmStoreError> {
        self.check()?;
        if let Some(u) = uid {
            if let Some(other) = self
                .vms
                .values()
                .find(|r| r.uid == Some(u) && r.spec.name != vm)
            {
                return Err(VmStoreError::Storage(format!(
                    "uid {u} is recorded for {} already",
                    other.spec.name
                )));
            }
        }
        self.vm(vm)?.uid = uid;
        Ok(())
    }

    fn put_policy(&mut self, vm: &str, policy: &PolicyState) -> Result<(), VmStoreError> {
        self.vm(vm)?.policy = *policy;
        Ok(())
    }

    fn cordon(&mut self) -> Result<Option<String>, VmStoreError> {
        Ok(self.cordon.clone())
    }

    fn put_cordon(&mut self, reason: Option<&str>) -> Result<(), VmStoreError> {
        self.check()?;
        self.cordon = reason.map(str::to_owned);
        Ok(())
    }

    fn node_value(&mut self, key: &str) -> Result<Option<String>, VmStoreError> {
        Ok(self.node.get(key).cloned())
    }

    fn put_node_value(&mut self, key: &str, value: Option<&str>) -> Result<(), VmStoreError> {
        self.check()?;
        if self.fail_node_key.as_deref() == Some(key) {
            return Err(VmStoreError::Storage(format!("cannot write {key}")));
        }
        match value {
            Some(v) => self.node.insert(key.to_owned(), v.to_owned()),
            None => self.node.remove(key),
        };
        Ok(())
    }

    fn set_state(
        &mut self,
        vm: &str,
        state: VmState,
        last_error: Option<&str>,
    ) -> Result<(), VmStoreError> {
        let r = self.vm(vm)?;
        r.state = state;
        r.last_error = last_error.map(str::to_owned);
        Ok(())
    }

    fn set_nat(&mut self, vm: &str, nat: bool) -> Result<(), VmStoreError> {
        self.vm(vm)?.nat = nat;
        Ok(())
    }

    fn put_lease(&mut self, vm: &str, lease: &NetLease) -> Result<(), VmStoreError> {
        self.vm(vm)?.lease = Some(lease.clone());
        Ok(())
    }

    fn clear_lease(&mut self, vm: &str) -> Result<(), VmStoreError> {
        self.vm(vm)?.lease = None;
        Ok(())
    }

    fn put_disk(&mut self, vm: &str, disk: &DiskRecord) -> Result<(), VmStoreError> {
        self.vm(vm)?.disk = Some(disk.clone());
        Ok(())
    }

    fn clear_disk(&mut self, vm: &str) -> Result<(), VmStoreError> {
        self.vm(vm)?.disk = None;
        Ok(())
    }

    fn put_process(&mut self, vm: &str, process: &VmmProcessRecord) -> Result<(), VmStoreError> {
        self.vm(vm)?.process = Some(process.clone());
        Ok(())
    }

    fn clear_process(&mut self, vm: &str) -> Result<(), VmStoreError> {
        self.vm(vm)?.process = None;
        Ok(())
    }

    fn delete_vm(&mut self, vm: &str) -> Result<(), VmStoreError> {
        self.check()?;
        self.vms
            .remove(vm)
            .map(|_| ())
            .ok_or_else(|| VmStoreError::NotFound(vm.to_owned()))
    }

    fn load_all(&mut self) -> Result<Vec<VmRecord>, VmStoreError> {
        Ok(self.vms.values().cloned().collect())
    }

    fn append_event(
        &mut self,
        vm: &str,
        state: VmState,
        reason: EventReason,
        detail: Option<&str>,
    ) -> Result<Event, VmStoreError> {
        self.check()?;
        let event = Event {
            seq: self.events.len() as u64 + 1,
            at_ms: 0,
            vm: vm.to_owned(),
            state,
            reason,
            detail: detail.map(str::to_owned),
            exit_status: hearth_proto::api::exit_status_of(state, detail),
        };
        self.events.push(event.clone());
        Ok(event)
    }

    fn events_since(&mut self, since: u64, limit: u32) -> Result<Vec<Event>, VmStoreError> {
        Ok(self
            .events
            .iter()
            .filter(|e| e.seq > since)
            .take(limit as usize)
            .cloned()
            .collect())
    }

    fn idempotent_response(&mut self, key: &str) -> Result<Option<(String, String)>, VmStoreError> {
        Ok(self.keys.get(key).cloned())
    }

    fn put_idempotent_response(
        &mut self,
        key: &str,
        request_hash: &str,
        response: &str,
    ) -> Result<(), VmStoreError> {
        self.check()?;
        self.keys.insert(
            key.to_owned(),
            (request_hash.to_owned(), response.to_owned()),
        );
        Ok(())
    }

    fn insert_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), VmStoreError> {
        self.check()?;
        if self.snapshots.contains_key(&snapshot.name) {
            return Err(VmStoreError::SnapshotExists(snapshot.name.clone()));
        }
        self.snapshots
            .insert(snapshot.name.clone(), snapshot.clone());
        Ok(())
    }

    fn put_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), VmStoreError> {
        self.check()?;
        match self.snapshots.get_mut(&snapshot.name) {
            Some(r) => {
                *r = snapshot.clone();
                Ok(())
            }
            None => Err(VmStoreError::SnapshotNotFound(snapshot.name.clone())),
        }
    }

    fn delete_snapshot(&mut self, name: &str) -> Result<(), VmStoreError> {
        self.check()?;
        self.snapshots
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| VmStoreError::SnapshotNotFound(name.to_owned()))
    }

    fn load_snapshots(&mut self) -> Result<Vec<SnapshotRecord>, VmStoreError> {
        Ok(self.snapshots.values().cloned().collect())
    }
}
