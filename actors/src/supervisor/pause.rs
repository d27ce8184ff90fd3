//! Pausing and resuming a VM's vCPUs (`PATCH /vm`), as lifecycle actions and as steps of the
//! snapshot saga.
//!
//! Ordering against a crash of hearthd: a pause records `paused` *before* the VMM call and a
//! resume records `running` only *after* it, so whatever instant hearthd dies at, the store
//! never says `running` for a VMM that is paused. `Open` adopts a VM recorded `paused` whose
//! VMM runs as `running` (the pause never reached the VMM, or the resume did), and one whose
//! VMM is paused as `paused` (a snapshot cut short resumes it: see `snapshots.rs`).

use actix::Addr;
use hearth_proto::api::{EventReason, VmState};
use slog::warn;

use super::saga::Ports;
use super::SupervisorError;
use crate::firecracker::{FirecrackerActor, PauseVm, ResumeVm};

/// Pauses `vm` (recorded `paused` first, see the module docs); on failure the VM goes back
/// to `previous`. `reason` says who asked (the user, or a snapshot); `detail` goes with the
/// paused event (e.g. a snapshot taken without freezing the guest's filesystem).
pub(super) async fn pause(
    p: &Ports,
    vm: &str,
    vmm: &Addr<FirecrackerActor>,
    previous: VmState,
    reason: EventReason,
    detail: Option<String>,
) -> Result<(), SupervisorError> {
    p.set_state(vm, VmState::Paused, detail, reason).await?;
    let paused = vmm
        .send(PauseVm {})
        .await
        .map_err(|e| SupervisorError::step("pause", e))
        .and_then(|r| r.map_err(|e| SupervisorError::step("pause", e)));
    if let Err(e) = paused {
        p.set_state(vm, previous, None, EventReason::Error).await?;
        return Err(e);
    }
    Ok(())
}

/// Resumes `vm` and records it `state` (`running`, or `unready` for a VM whose agent never
/// answered) once the VMM runs it.
pub(super) async fn resume(
    p: &Ports,
    vm: &str,
    vmm: &Addr<FirecrackerActor>,
    state: VmState,
    reason: EventReason,
) -> Result<(), SupervisorError> {
    vmm.send(ResumeVm {})
        .await
        .map_err(|e| SupervisorError::step("resume", e))?
        .map_err(|e| SupervisorError::step("resume", e))?;
    p.set_state(vm, state, None, reason).await
}

/// Before stopping or deleting a paused VM: resume it, so its guest sees Ctrl+Alt+Del and can
/// shut down cleanly rather than wait out the grace. A failure is logged and the stop goes on
/// (its ladder ends the process by signal anyway).
pub(super) async fn resume_before_stop(p: &Ports, vm: &str, vmm: Option<&Addr<FirecrackerActor>>) {
    let Some(vmm) = vmm else { return };
    let failed = match vmm.send(ResumeVm {}).await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    warn!(p.log, "paused VM not resumed before its stop"; "vm" => vm, "error" => failed);
}

/// The saga of a pause or resume action (`None` for other actions). Runs under the VM's lock,
/// its state already checked. `left_frozen`: a snapshot left the paused guest frozen, so the
/// resume thaws it (see `quiesce.rs`).
pub(super) fn action_saga(
    p: &Ports,
    vm: &str,
    action: super::VmAction,
    state: VmState,
    vmm: Option<Addr<FirecrackerActor>>,
    left_frozen: bool,
) -> Result<
    Option<futures::future::LocalBoxFuture<'static, Result<(), SupervisorError>>>,
    SupervisorError,
> {
    use futures::FutureExt;
    if !matches!(action, super::VmAction::Pause | super::VmAction::Resume) {
        return Ok(None);
    }
    // A VM with a process has its actor (made at boot, or at adoption).
    let vmm = vmm.ok_or_else(|| SupervisorError::InvalidState {
        name: vm.to_owned(),
        state,
        op: action.as_str(),
    })?;
    let (p, vm) = (p.clone(), vm.to_owned());
    Ok(Some(
        async move {
            if action == super::VmAction::Pause {
                pause(&p, &vm, &vmm, state, EventReason::User, None).await
            } else {
                resume(&p, &vm, &vmm, VmState::Running, EventReason::User).await?;
                if left_frozen {
                    let guest = super::quiesce::Guest::start(&p.me.clone().recipient(), &p.log);
                    super::quiesce::thaw_left_frozen(&p, &guest, &vm).await;
                }
                Ok(())
            }
        }
        .boxed_local(),
    ))
}
