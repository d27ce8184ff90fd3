//! `SnapshotActor`'s message handlers (the actor in `mod.rs`, messages in `messages.rs`).

use actix::{Context, Handler};

use super::{CheckpointDisk, CreateDisk, ListDisks, RemoveDisk, SnapshotActor, SnapshotError};
use crate::host::disks::{DiskEntry, DiskSpec, DisksError, VmDisk};

impl Handler<CreateDisk> for SnapshotActor {
    type Result = Result<VmDisk, SnapshotError>;

    fn handle(&mut self, msg: CreateDisk, _: &mut Context<Self>) -> Self::Result {
        if self.disks.contains_key(&msg.vm) {
            return Err(SnapshotError::DiskExists { vm: msg.vm });
        }
        let started = std::time::Instant::now();
        let spec = DiskSpec {
            vm: msg.vm.clone(),
            base: msg.image,
            size: msg.size,
        };
        let disk = self
            .backend
            .create(&spec)
            .map_err(|e| SnapshotError::from_create(&msg.vm, e))?;
        slog::info!(self.log, "disk created"; "vm" => &disk.vm, "path" => %disk.path.display(),
            "size" => disk.size, "ms" => started.elapsed().as_secs_f64() * 1e3);
        self.disks.insert(msg.vm, disk.clone());
        Ok(disk)
    }
}

impl Handler<RemoveDisk> for SnapshotActor {
    type Result = Result<bool, SnapshotError>;

    fn handle(&mut self, msg: RemoveDisk, _: &mut Context<Self>) -> Self::Result {
        let removed = self
            .backend
            .remove(&msg.vm)
            .map_err(|source| match source {
                DisksError::InvalidVmName { .. } => SnapshotError::InvalidRequest {
                    vm: msg.vm.clone(),
                    source,
                },
                source => SnapshotError::Remove {
                    vm: msg.vm.clone(),
                    source,
                },
            })?;
        self.disks.remove(&msg.vm);
        if removed {
            slog::info!(self.log, "disk removed"; "vm" => &msg.vm);
        }
        Ok(removed)
    }
}

impl Handler<ListDisks> for SnapshotActor {
    type Result = Result<Vec<DiskEntry>, SnapshotError>;

    fn handle(&mut self, _: ListDisks, _: &mut Context<Self>) -> Self::Result {
        self.backend
            .list()
            .map_err(|source| SnapshotError::List { source })
    }
}

impl Handler<CheckpointDisk> for SnapshotActor {
    type Result = Result<u64, SnapshotError>;

    fn handle(&mut self, msg: CheckpointDisk, _: &mut Context<Self>) -> Self::Result {
        let started = std::time::Instant::now();
        let bytes = self
            .backend
            .checkpoint(&msg.vm, &msg.dest)
            .map_err(|source| SnapshotError::Checkpoint {
                vm: msg.vm.clone(),
                source,
            })?;
        slog::info!(self.log, "disk checkpointed"; "vm" => &msg.vm,
            "dest" => %msg.dest.display(), "bytes" => bytes,
            "ms" => started.elapsed().as_secs_f64() * 1e3);
        Ok(bytes)
    }
}
