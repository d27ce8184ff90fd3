//! The NAT switch: a guest with `nat` in its spec has its traffic masqueraded out of the
//! egress interface (`NatActor`'s NAT set), from `booted` until `stopped`, switched at run time
//! by `reconfigure`.

use actix::MailboxError;
use hearth_proto::api::CreateVm;

use super::{done, Capability, CapabilityError, CapabilityHost, HookFuture, VmView};
use crate::lease::NetLease;
use crate::nat::EnsureNat;

/// The per-VM NAT switch (spec field `nat`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NatSwitch;

const NAME: &str = "nat";

fn gone(_: MailboxError) -> CapabilityError {
    CapabilityError::ActorGone {
        capability: NAME,
        actor: "NatActor",
    }
}

/// Puts the guest into (or takes it out of) the NAT set. Idempotent.
async fn switch(
    host: &CapabilityHost,
    lease: &NetLease,
    enable: bool,
) -> Result<(), CapabilityError> {
    host.nat()
        .send(EnsureNat {
            guest_ip: lease.guest_ip,
            tap: lease.tap.clone(),
            enable,
        })
        .await
        .map_err(gone)?
        .map_err(|source| CapabilityError::Nat {
            capability: NAME,
            source,
        })
}

fn lease<'a>(vm: &VmView<'a>) -> Result<&'a NetLease, CapabilityError> {
    vm.lease.ok_or_else(|| CapabilityError::NoLease {
        capability: NAME,
        vm: vm.name.to_owned(),
    })
}

impl Capability for NatSwitch {
    fn name(&self) -> &'static str {
        NAME
    }

    fn booted<'a>(&'a self, host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
        if !vm.spec.nat {
            return done();
        }
        Box::pin(async move { switch(host, lease(&vm)?, true).await })
    }

    /// Unregistering the guest (which follows) also empties its NAT entry; switching it off
    /// here keeps this capability's undo its own.
    fn stopped<'a>(&'a self, host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
        match vm.lease {
            Some(lease) if vm.spec.nat => Box::pin(switch(host, lease, false)),
            _ => done(),
        }
    }

    /// `Open`'s `Reconcile` rebuilds the NAT set whole from the stored flags, atomically with
    /// the rules; nothing is left to re-apply per VM.
    fn adopted<'a>(&'a self, _host: &'a CapabilityHost, _vm: VmView<'a>) -> HookFuture<'a> {
        done()
    }

    fn reconfigure<'a>(
        &'a self,
        host: &'a CapabilityHost,
        vm: VmView<'a>,
        previous: &'a CreateVm,
    ) -> HookFuture<'a> {
        match vm.lease {
            Some(lease) if vm.spec.nat != previous.nat => {
                Box::pin(switch(host, lease, vm.spec.nat))
            }
            _ => done(),
        }
    }
}
