//! THROWAWAY STAND-IN (helper snapsaga), removed when branch `snapvmm`'s real handlers are
//! merged: answers the snapshot messages with an error so the supervisor compiles against
//! the contract meanwhile. Nothing here is meant to work.

use actix::{Context, Handler};

use super::{
    CreateVmSnapshot, FirecrackerActor, FirecrackerError, PauseVm, RestoreInfo, RestoreVm,
    ResumeVm, VmmSnapshotInfo,
};

fn missing() -> FirecrackerError {
    FirecrackerError::InvalidConfig {
        what: "snapshot",
        detail: "not implemented in this build (stand-in)".into(),
    }
}

impl Handler<PauseVm> for FirecrackerActor {
    type Result = Result<(), FirecrackerError>;
    fn handle(&mut self, _: PauseVm, _: &mut Context<Self>) -> Self::Result {
        Err(missing())
    }
}

impl Handler<ResumeVm> for FirecrackerActor {
    type Result = Result<(), FirecrackerError>;
    fn handle(&mut self, _: ResumeVm, _: &mut Context<Self>) -> Self::Result {
        Err(missing())
    }
}

impl Handler<CreateVmSnapshot> for FirecrackerActor {
    type Result = Result<VmmSnapshotInfo, FirecrackerError>;
    fn handle(&mut self, _: CreateVmSnapshot, _: &mut Context<Self>) -> Self::Result {
        Err(missing())
    }
}

impl Handler<RestoreVm> for FirecrackerActor {
    type Result = Result<RestoreInfo, FirecrackerError>;
    fn handle(&mut self, _: RestoreVm, _: &mut Context<Self>) -> Self::Result {
        Err(missing())
    }
}
