//! Pausing a VM to disk for a policy (`on_expiry: snapshot`, a drain in `snapshot` mode):
//! snapshot it and stop it, through the same messages a user sends (`CreateSnapshot` with
//! `leave: stopped`, then `RunAction` stop if it still runs). The snapshot's name is derived
//! from a stored time, so a hearthd killed after the snapshot and acting again finds it taken
//! and only stops the VM. A snapshot that fails never loses the VM: the snapshot saga puts it
//! back as it was, and it is stopped all the same, with the reason in the outcome.
//!
//! While a drain or an expiry acts on a VM, the VM is marked with that policy's reason, and
//! the stop's own transitions (`stopping`, `stopped`), made by whichever saga stops it (the
//! stop, or the snapshot that leaves it stopped), are recorded with it instead of `user`.

use actix::Addr;
use hearth_proto::api::{EventReason, VmState};
use hearth_proto::api_snapshot::{SnapshotCreate, SnapshotLeave, SnapshotState};

use super::{
    CreateSnapshot, GetSnapshot, GetVm, RunAction, SupervisorError, VmAction, VmSupervisor,
};

/// How a VM was parked; it is stopped either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Parked {
    /// The snapshot of this name holds it (taken now, or by a run cut short).
    Snapshot(String),
    /// No snapshot, for this reason: it was only stopped.
    StoppedOnly(String),
}

impl Parked {
    /// The outcome in the words of an event.
    pub(super) fn detail(&self) -> String {
        match self {
            Parked::Snapshot(name) => format!("snapshot {name} taken, stopped"),
            Parked::StoppedOnly(why) => format!("snapshot failed ({why}), stopped instead"),
        }
    }
}

/// Whether snapshot `name` exists, and whose it is.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    None,
    /// Complete, and of this VM.
    Ours,
    /// Someone else's, or not complete.
    Other,
}

async fn found(me: &Addr<VmSupervisor>, vm: &str, name: &str) -> Found {
    match me.send(GetSnapshot { name: name.into() }).await {
        Ok(Ok(info)) if info.source_vm == vm && info.state == SnapshotState::Ready => Found::Ours,
        Ok(Ok(_)) => Found::Other,
        _ => Found::None,
    }
}

/// Snapshots `vm` as `snapshot` and stops it; stops it without a snapshot when that fails.
/// Fails only when the VM could not be stopped (the caller tries again later).
pub(super) async fn park(
    me: Addr<VmSupervisor>,
    vm: String,
    snapshot: String,
) -> Result<Parked, SupervisorError> {
    let taken = match found(&me, &vm, &snapshot).await {
        Found::Ours => Ok(()),
        Found::Other => Err(format!(
            "a snapshot named {snapshot} exists and is not a complete one of this VM"
        )),
        Found::None => {
            let res = me
                .send(CreateSnapshot {
                    vm: vm.clone(),
                    spec: SnapshotCreate {
                        name: snapshot.clone(),
                        leave: SnapshotLeave::Stopped,
                    },
                    idempotency: None,
                })
                .await;
            match res {
                Ok(Ok(_)) => return Ok(Parked::Snapshot(snapshot)),
                // Complete, and only leaving the VM stopped failed: the snapshot stands.
                Ok(Err(_)) if found(&me, &vm, &snapshot).await == Found::Ours => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    stop_if_running(&me, &vm).await?;
    Ok(match taken {
        Ok(()) => Parked::Snapshot(snapshot),
        Err(why) => Parked::StoppedOnly(why),
    })
}

/// Stops `vm` unless it is already stopped (a pending restart counts as running: the stop
/// cancels it).
pub(super) async fn stop_if_running(
    me: &Addr<VmSupervisor>,
    vm: &str,
) -> Result<(), SupervisorError> {
    let info = me
        .send(GetVm { name: vm.into() })
        .await
        .map_err(|e| SupervisorError::step("stop", e))??;
    if !info.state.can_stop() && info.restart_in_secs.is_none() {
        return Ok(());
    }
    me.send(RunAction {
        name: vm.into(),
        action: VmAction::Stop,
        idempotency: None,
    })
    .await
    .map_err(|e| SupervisorError::step("stop", e))?
    .map(|_| ())
}

impl VmSupervisor {
    /// Marks `vm` as stopped on behalf of a policy (`reason`) until [`Self::done_for`].
    pub(super) fn act_for(&mut self, vm: &str, reason: EventReason) {
        self.policy_rt.acting.insert(vm.to_owned(), reason);
    }

    /// Ends the mark [`Self::act_for`] set with `reason` (a mark set since by another
    /// policy is left).
    pub(super) fn done_for(&mut self, vm: &str, reason: EventReason) {
        if self.policy_rt.acting.get(vm) == Some(&reason) {
            self.policy_rt.acting.remove(vm);
        }
    }

    /// The reason a transition of `vm` into `state` is recorded with: a stop's or a delete's
    /// `user` becomes the reason of the policy acting on the VM, if one is.
    pub(super) fn stop_reason(&self, vm: &str, state: VmState, reason: EventReason) -> EventReason {
        let stop = matches!(
            state,
            VmState::Stopping | VmState::Stopped | VmState::Deleting
        );
        match self.policy_rt.acting.get(vm) {
            Some(policy) if stop && reason == EventReason::User => *policy,
            _ => reason,
        }
    }
}
