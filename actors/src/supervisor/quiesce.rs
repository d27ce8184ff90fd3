//! The snapshot saga's freeze of the guest's root filesystem: flushed and frozen by its agent
//! just before the pause, thawed after the resume (or on the undo path), so the disk
//! checkpoint taken while the VM is paused holds everything the guest had written, as a
//! reader of the disk alone (not restored with its memory) needs.
//!
//! Best effort by design: a VM without an agent, a paused or unready one, or an agent without
//! `freeze` is snapshotted unfrozen, and the paused event says so. Every freeze carries the
//! agent's own deadline ([`THAW_AFTER`]), so a hearthd that dies before its thaw leaves no
//! guest frozen for good.
//!
//! A snapshot that leaves its source paused leaves it frozen too (nothing runs in a paused
//! guest, a thaw included): the record says so (`SnapshotRecord::left_frozen`) and the next
//! resume thaws it ([`thaw_left_frozen`]), after a restart of hearthd too, and after that
//! snapshot is removed (its marker then moves to the VM's process record). A stop or delete
//! needs nothing: the frozen filesystem goes with the guest.

use std::time::Duration;

use actix::{Actor, Addr, Recipient};
use hearth_proto::agent::{PingReply, Request};
use hearth_proto::api::VmState;
use slog::{info, warn, Logger};

use super::saga::Ports;
use super::GuestEndpoint;
use crate::guest::{AgentCall, FreezeGuest, GuestActor, GuestSettings, ThawGuest};

/// How long a guest stays frozen if no thaw comes (the agent thaws on its own then).
pub(super) const THAW_AFTER: Duration = Duration::from_secs(10);

/// How long the agent has to answer a `ping` before the freeze is tried: a VM without a
/// live agent (no guest, or one without hearth's agent) costs the snapshot this much, not a
/// whole freeze timeout (the freeze itself may take longer: it syncs).
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The snapshot saga's connections to the VM's agent: its own, stopped with the saga.
pub(super) struct Guest {
    /// Short-timeout calls: is an agent there at all?
    probe: Addr<GuestActor>,
    /// Freeze and thaw, with the default timeout.
    calls: Addr<GuestActor>,
}

impl Guest {
    /// Actors asking `endpoints` (the supervisor) where the agent is.
    pub(super) fn start(endpoints: &Recipient<GuestEndpoint>, log: &Logger) -> Self {
        let probe = GuestSettings {
            connect_timeout: PROBE_TIMEOUT,
            ..GuestSettings::default()
        };
        Guest {
            probe: GuestActor::new(endpoints.clone(), probe, log).start(),
            calls: GuestActor::new(endpoints.clone(), GuestSettings::default(), log).start(),
        }
    }
}

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
pub(super) async fn freeze(p: &Ports, guest: &Guest, vm: &str, state: VmState) -> Quiesced {
    if state != VmState::Running {
        return Quiesced::Not(format!("the VM was {state}"));
    }
    let ping = guest
        .probe
        .send(AgentCall::<PingReply>::new(vm, Request::Ping))
        .await;
    let answer = match ping {
        Ok(Ok(_)) => {
            guest
                .calls
                .send(FreezeGuest {
                    vm: vm.to_owned(),
                    thaw_after: THAW_AFTER,
                })
                .await
        }
        Ok(Err(e)) => Ok(Err(e)),
        Err(e) => Err(e),
    };
    let why = match answer {
        Ok(Ok(())) => {
            info!(p.log, "guest root filesystem frozen for the snapshot"; "vm" => vm);
            return Quiesced::Frozen;
        }
        // An answer without a freeze (e.g. an older agent without the op), or none in time. In
        // the second case the agent may still freeze; its deadline thaws it (a thaw here would
        // cost a guest without a live agent one more timeout).
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    warn!(p.log, "snapshot goes on without freezing the guest's root filesystem"; "vm" => vm,
        "reason" => &why);
    Quiesced::Not(why)
}

/// Thaws what [`freeze`] froze (the VM running again); a failure is logged: the agent thaws
/// on its own at its deadline.
pub(super) async fn thaw(p: &Ports, guest: &Guest, vm: &str, q: &Quiesced) {
    if *q != Quiesced::Frozen {
        return;
    }
    let failed = match guest.calls.send(ThawGuest { vm: vm.to_owned() }).await {
        Ok(Ok(_)) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    warn!(p.log, "guest root filesystem not thawed; its agent will at its deadline";
        "vm" => vm, "error" => failed);
}

/// Thaws a guest a snapshot left paused and frozen, right after its resume, then clears the
/// records that said so. A failed thaw is logged (the agent thaws at its deadline) and the
/// records cleared all the same: no later resume of this process has anything to thaw.
pub(super) async fn thaw_left_frozen(p: &Ports, guest: &Guest, vm: &str) {
    thaw(p, guest, vm, &Quiesced::Frozen).await;
    if let Err(e) = super::snapshots::commit(p, super::SnapshotChange::Thawed(vm.to_owned())).await
    {
        warn!(p.log, "snapshot records still say the guest is frozen"; "vm" => vm, "error" => %e);
    }
}
