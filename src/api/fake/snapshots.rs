//! The [`FakeSupervisor`]'s snapshot messages: snapshots are records only (no files, no in-use
//! check), a fork is a copy of its source's VM; idempotency keys replay and refuse like the
//! real ones.

use actix::prelude::*;
use hearth_actors::supervisor::{self as sup, SupervisorError};
use hearth_proto::api::{VmInfo, VmState};
use hearth_proto::api_snapshot::{SnapshotInfo, SnapshotLeave, SnapshotState};

use super::FakeSupervisor;

impl FakeSupervisor {
    /// A VM that can be snapshotted now, or why not.
    fn snapshot_source(&self, vm: &str, op: &'static str) -> Result<VmInfo, SupervisorError> {
        let source = self.vm(vm)?.clone();
        if !source.state.can_snapshot() {
            return Err(SupervisorError::InvalidState {
                name: vm.to_owned(),
                state: source.state,
                op,
            });
        }
        Ok(source)
    }

    fn record_snapshot(&mut self, name: &str, source: &VmInfo) -> SnapshotInfo {
        let info = SnapshotInfo {
            name: name.to_owned(),
            state: SnapshotState::Ready,
            source_vm: source.name.clone(),
            created_at: 1_700_000_000_000 + self.snapshots.len() as u64,
            mem_size_mib: u64::from(source.spec.memory_mib),
            vcpus: source.spec.vcpus,
            fc_version: "fake".into(),
            disk_bytes: 0,
            mem_file_bytes: 0,
            in_use_by: Vec::new(),
        };
        self.snapshots.insert(name.to_owned(), info.clone());
        info
    }
}

impl Handler<sup::CreateSnapshot> for FakeSupervisor {
    type Result = Result<SnapshotInfo, SupervisorError>;

    fn handle(&mut self, msg: sup::CreateSnapshot, _: &mut Self::Context) -> Self::Result {
        if let Some(res) = self.replay_as(msg.idempotency.as_ref()) {
            return res;
        }
        msg.spec.validate()?;
        let source = self.snapshot_source(&msg.vm, "snapshot")?;
        if self.snapshots.contains_key(&msg.spec.name) {
            return Err(SupervisorError::Conflict {
                message: format!("A snapshot named {:?} already exists", msg.spec.name),
            });
        }
        let info = self.record_snapshot(&msg.spec.name, &source);
        match msg.spec.leave {
            SnapshotLeave::Running => {}
            SnapshotLeave::Paused => {
                self.set_state(&msg.vm, VmState::Paused)?;
            }
            SnapshotLeave::Stopped => {
                self.set_state(&msg.vm, VmState::Stopped)?;
            }
        }
        let res = Ok(info);
        self.remember(msg.idempotency, &res);
        res
    }
}

impl Handler<sup::ForkVm> for FakeSupervisor {
    type Result = Result<VmInfo, SupervisorError>;

    fn handle(&mut self, msg: sup::ForkVm, _: &mut Self::Context) -> Self::Result {
        if let Some(res) = self.replay(msg.idempotency.as_ref()) {
            return res;
        }
        msg.spec.validate()?;
        let source = self.snapshot_source(&msg.source, "fork")?;
        let name = msg.spec.name;
        if self.vms.contains_key(&name) {
            return Err(SupervisorError::Conflict {
                message: format!("A VM named {name:?} already exists"),
            });
        }
        let snapshot = format!("{name}.fork");
        self.record_snapshot(&snapshot, &source);
        let n = self.vms.len() as u8;
        let mut vm = source;
        vm.name.clone_from(&name);
        vm.spec.name.clone_from(&name);
        vm.spec.from_snapshot = Some(snapshot);
        vm.guest_ip = Some(std::net::Ipv4Addr::new(172, 30, 0, 2 + n));
        vm.tap = Some(format!("hth{n}"));
        self.vms.insert(name.clone(), vm);
        let res = self.set_state(&name, VmState::Running);
        self.remember(msg.idempotency, &res);
        res
    }
}

impl Handler<sup::ListSnapshots> for FakeSupervisor {
    type Result = MessageResult<sup::ListSnapshots>;

    fn handle(&mut self, _: sup::ListSnapshots, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.snapshots.values().cloned().collect())
    }
}

impl Handler<sup::GetSnapshot> for FakeSupervisor {
    type Result = Result<SnapshotInfo, SupervisorError>;

    fn handle(&mut self, msg: sup::GetSnapshot, _: &mut Self::Context) -> Self::Result {
        self.snapshots
            .get(&msg.name)
            .cloned()
            .ok_or(SupervisorError::SnapshotNotFound { name: msg.name })
    }
}

impl Handler<sup::DeleteSnapshot> for FakeSupervisor {
    type Result = Result<(), SupervisorError>;

    fn handle(&mut self, msg: sup::DeleteSnapshot, _: &mut Self::Context) -> Self::Result {
        self.snapshots
            .remove(&msg.name)
            .map(|_| ())
            .ok_or(SupervisorError::SnapshotNotFound { name: msg.name })
    }
}
