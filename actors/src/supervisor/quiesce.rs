//! The snapshot saga's freeze of the guest's root filesystem: flushed and frozen by its agent
//! just before the pause, thawed after the resume (or on the undo path), so the disk
//! checkpoint taken while the VM is paused holds everything the guest had written, as a
//! reader of the disk alone (not restored with its memory) needs.
//!
//! Best effort by design: a VM without an agent, a paused or unready one, or an agent without
//! `freeze` is snapshotted unfrozen, and the paused event says so. Every freeze carries the
//! agent's own deadline ([`THAW_AFTER`]), so a hearthd that dies before its thaw leaves no
//! guest frozen for good.

use std::time::Duration;

use actix::Addr;
use hearth_proto::api::VmState;
use slog::{info, warn};

use super::saga::Ports;
use crate::guest::{FreezeGuest, GuestActor, GuestError, ThawGuest};

/// How long a guest stays frozen if no thaw comes (the agent thaws on its own then).
pub(super) const THAW_AFTER: Duration = Duration::from_secs(10);

/// Whether the guest's root filesystem was frozen for the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Quiesced {
    /// Frozen: it needs a thaw.
    Frozen,
    /// Not frozen, and why.
    Not(String),
}

impl Quiesced {
    /// The paused event's detail: said only when the snapshot goes on unfrozen.
    pub(super) fn detail(&self) -> Option<String> {
        match self {
            Quiesced::Frozen => None,
            Quiesced::Not(why) => Some(format!("root filesystem not frozen: {why}")),
        }
    }
}

/// Asks `vm`'s agent to sync and freeze its root filesystem (a running VM only).
pub(super) async fn freeze(
    p: &Ports,
    guest: &Addr<GuestActor>,
    vm: &str,
    state: VmState,
) -> Quiesced {
    if state != VmState::Running {
        return Quiesced::Not(format!("the VM was {state}"));
    }
    let answer = guest
        .send(FreezeGuest {
            vm: vm.to_owned(),
            thaw_after: THAW_AFTER,
        })
        .await;
    let why = match answer {
        Ok(Ok(())) => {
            info!(p.log, "guest root filesystem frozen for the snapshot"; "vm" => vm);
            return Quiesced::Frozen;
        }
        // The agent answered that it did not freeze (e.g. an older agent without the op).
        Ok(Err(e @ (GuestError::Agent { .. } | GuestError::Vm(_)))) => e.to_string(),
        Ok(Err(e)) => {
            // No answer: the freeze may still have happened; take it back now rather than
            // leave the guest's writers waiting for the agent's deadline.
            let _ = guest.send(ThawGuest { vm: vm.to_owned() }).await;
            e.to_string()
        }
        Err(e) => e.to_string(),
    };
    warn!(p.log, "snapshot goes on without freezing the guest's root filesystem"; "vm" => vm,
        "reason" => &why);
    Quiesced::Not(why)
}

/// Thaws what [`freeze`] froze (the VM running again); a failure is logged: the agent thaws
/// on its own at its deadline.
pub(super) async fn thaw(p: &Ports, guest: &Addr<GuestActor>, vm: &str, q: &Quiesced) {
    if *q != Quiesced::Frozen {
        return;
    }
    match guest.send(ThawGuest { vm: vm.to_owned() }).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            warn!(p.log, "guest root filesystem not thawed; its agent will at its deadline";
            "vm" => vm, "error" => %e)
        }
        Err(e) => warn!(p.log, "guest root filesystem not thawed; its agent will at its deadline";
            "vm" => vm, "error" => %e),
    }
}
