//! Where the sagas call the VM's capabilities (`crate::capabilities`): setup hooks that push
//! their undo, teardown hooks that all run, and the one message through which a saga learns
//! what the hooks see of a VM. The supervisor names no capability here: it asks
//! [`capabilities::for_spec`] for them.

use actix::{Handler, Message};
use hearth_proto::api::{CreateVm, VmState};
use slog::warn;

use super::saga::{Ports, Undo};
use super::{SupervisorError, VmSupervisor};
use crate::capabilities::{self, Capability, CapabilityHost, HookFuture, VmView};
use crate::lease::NetLease;

/// A lifecycle point at which capabilities are called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hook {
    Booted,
    Restored,
    Adopted,
    Running,
    Stopping,
    Stopped,
    Deleted,
}

impl Hook {
    fn call<'a>(
        self,
        cap: &'a dyn Capability,
        host: &'a CapabilityHost,
        vm: VmView<'a>,
    ) -> HookFuture<'a> {
        match self {
            Hook::Booted => cap.booted(host, vm),
            Hook::Restored => cap.restored(host, vm),
            Hook::Adopted => cap.adopted(host, vm),
            Hook::Running => cap.running(host, vm),
            Hook::Stopping => cap.stopping(host, vm),
            Hook::Stopped => cap.stopped(host, vm),
            Hook::Deleted => cap.deleted(host, vm),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Hook::Booted => "booted",
            Hook::Restored => "restored",
            Hook::Adopted => "adopted",
            Hook::Running => "running",
            Hook::Stopping => "stopping",
            Hook::Stopped => "stopped",
            Hook::Deleted => "deleted",
        }
    }
}

/// What the hooks see of a VM, asked of the supervisor: its spec (with the NAT flag as
/// switched at run time), lease and state. `None` when there is no such VM.
#[derive(Debug, Message)]
#[rtype(result = "Option<HookSubject>")]
pub(super) struct GetHookSubject {
    pub vm: String,
}

/// The answer to [`GetHookSubject`].
#[derive(Debug, Clone)]
pub(super) struct HookSubject {
    pub spec: CreateVm,
    pub lease: Option<NetLease>,
    pub state: VmState,
}

impl Handler<GetHookSubject> for VmSupervisor {
    type Result = Option<HookSubject>;

    fn handle(&mut self, msg: GetHookSubject, _ctx: &mut Self::Context) -> Self::Result {
        self.vms.get(&msg.vm).map(|e| HookSubject {
            spec: spec_with_nat(&e.record.spec, e.record.nat),
            lease: e.record.lease.clone(),
            state: e.record.state,
        })
    }
}

/// The spec the hooks see: the stored one with the NAT flag as last switched (`SetNat`
/// records it beside the spec).
pub(super) fn spec_with_nat(spec: &CreateVm, nat: bool) -> CreateVm {
    CreateVm {
        nat,
        ..spec.clone()
    }
}

impl Ports {
    /// The host services capabilities may use.
    pub(super) fn capability_host(&self) -> CapabilityHost {
        CapabilityHost::new(
            self.deps.nat.clone(),
            self.deps.dns.clone(),
            self.deps.tap_pool.clone(),
        )
    }

    /// What the hooks see of `vm` now.
    pub(super) async fn hook_subject(&self, vm: &str) -> Option<HookSubject> {
        self.me
            .send(GetHookSubject { vm: vm.to_owned() })
            .await
            .ok()
            .flatten()
    }
}

/// Runs a setup hook (`booted`, `restored`, `adopted`) on each capability in order. Each
/// success pushes its undo (the capability's `stopped`) at once; the first failure ends the
/// run (the saga's undo then takes back the ones that succeeded).
pub(super) async fn setup(
    p: &Ports,
    hook: Hook,
    vm: &str,
    spec: &CreateVm,
    lease: &NetLease,
    undo: &mut Vec<Undo>,
) -> Result<(), SupervisorError> {
    let host = p.capability_host();
    let view = VmView {
        name: vm,
        lease: Some(lease),
        spec,
    };
    for (index, cap) in capabilities::for_spec(spec).iter().enumerate() {
        hook.call(cap.as_ref(), &host, view).await?;
        undo.push(Undo::Capability {
            index,
            spec: Box::new(spec.clone()),
            lease: lease.clone(),
        });
    }
    Ok(())
}

/// The undo of one setup hook: capability `index` of `spec`'s, `stopped`.
pub(super) async fn undo_one(
    p: &Ports,
    vm: &str,
    index: usize,
    spec: &CreateVm,
    lease: &NetLease,
) -> Result<(), SupervisorError> {
    let caps = capabilities::for_spec(spec);
    let Some(cap) = caps.get(index) else {
        return Ok(());
    };
    let view = VmView {
        name: vm,
        lease: Some(lease),
        spec,
    };
    Ok(cap.stopped(&p.capability_host(), view).await?)
}

/// Runs `running` on each capability in order; the first failure fails the saga.
pub(super) async fn running(p: &Ports, vm: &str) -> Result<(), SupervisorError> {
    let Some(subject) = p.hook_subject(vm).await else {
        return Ok(());
    };
    let host = p.capability_host();
    let view = VmView {
        name: vm,
        lease: subject.lease.as_ref(),
        spec: &subject.spec,
    };
    for cap in capabilities::for_spec(&subject.spec) {
        Hook::Running.call(cap.as_ref(), &host, view).await?;
    }
    Ok(())
}

/// Runs a teardown hook (`stopping`, `stopped`, `deleted`) on every capability, newest first,
/// with `lease` (the one being given back; `None` when the VM holds none). Every hook runs
/// even after a failure, so that one capability cannot keep the others' state on the host;
/// answers the first failure.
pub(super) async fn teardown(
    p: &Ports,
    hook: Hook,
    vm: &str,
    lease: Option<&NetLease>,
) -> Result<(), SupervisorError> {
    let Some(subject) = p.hook_subject(vm).await else {
        return Ok(());
    };
    let host = p.capability_host();
    let view = VmView {
        name: vm,
        lease,
        spec: &subject.spec,
    };
    let mut first = None;
    for cap in capabilities::for_spec(&subject.spec).iter().rev() {
        if let Err(e) = hook.call(cap.as_ref(), &host, view).await {
            warn!(p.log, "capability hook failed"; "vm" => vm, "hook" => hook.as_str(),
                "capability" => cap.name(), "error" => %e);
            first.get_or_insert(SupervisorError::from(e));
        }
    }
    first.map_or(Ok(()), Err)
}

/// `Open`: re-applies the capabilities of every VM in `vms` that is alive and holds a lease
/// (after the firewall's `Reconcile`). A failure is logged with the VM and does not stop the
/// others: the VM runs on, without what that capability adds, until it is restarted.
pub(super) async fn adopt_all<'a>(p: &Ports, vms: impl IntoIterator<Item = &'a String>) -> usize {
    let host = p.capability_host();
    let mut failed = 0;
    for vm in vms {
        let Some(subject) = p.hook_subject(vm).await else {
            continue;
        };
        let Some(lease) = subject.lease.as_ref().filter(|_| subject.state.is_alive()) else {
            continue;
        };
        let view = VmView {
            name: vm,
            lease: Some(lease),
            spec: &subject.spec,
        };
        for cap in capabilities::for_spec(&subject.spec) {
            if let Err(e) = Hook::Adopted.call(cap.as_ref(), &host, view).await {
                failed += 1;
                warn!(p.log, "capability not re-applied after restart"; "vm" => vm.as_str(),
                    "capability" => cap.name(), "error" => %e);
            }
        }
    }
    failed
}

/// The published ports of `vms` that are alive with a lease, as their stored specs say: what
/// `Open` seeds `NatActor` with before `Reconcile`, so the publish table is never written
/// without them after a restart.
pub(super) async fn published_ports<'a>(
    p: &Ports,
    vms: impl IntoIterator<Item = &'a String>,
) -> Vec<crate::nat::PublishedPort> {
    let mut ports = Vec::new();
    for vm in vms {
        let Some(subject) = p.hook_subject(vm).await else {
            continue;
        };
        let Some(lease) = subject.lease.as_ref().filter(|_| subject.state.is_alive()) else {
            continue;
        };
        ports.extend(
            subject
                .spec
                .publish
                .iter()
                .map(|m| crate::nat::PublishedPort {
                    vm: vm.clone(),
                    guest_ip: lease.guest_ip,
                    mapping: *m,
                }),
        );
    }
    ports
}

/// Runs `reconfigure` on every capability for a live VM whose spec changed from `previous`
/// to `spec`. On a failure, the capabilities already reconfigured are put back (reconfigured
/// from `spec` to `previous`), so nothing has changed.
pub(super) async fn reconfigure(
    p: &Ports,
    vm: &str,
    lease: Option<&NetLease>,
    previous: &CreateVm,
    spec: &CreateVm,
) -> Result<(), SupervisorError> {
    let host = p.capability_host();
    let caps = capabilities::for_spec(spec);
    let new = VmView {
        name: vm,
        lease,
        spec,
    };
    for (i, cap) in caps.iter().enumerate() {
        if let Err(e) = cap.reconfigure(&host, new, previous).await {
            let old = VmView {
                name: vm,
                lease,
                spec: previous,
            };
            for done in caps[..i].iter().rev() {
                if let Err(u) = done.reconfigure(&host, old, spec).await {
                    warn!(p.log, "reconfigure not put back"; "vm" => vm,
                        "capability" => done.name(), "error" => %u);
                }
            }
            return Err(e.into());
        }
    }
    Ok(())
}
