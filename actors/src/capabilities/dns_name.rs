//! The DNS name: `<vm>.<zone>` answers the guest's address from `running` until `stopping`
//! (and again after `adopted`), through per-name updates of `DnsActor`'s table.

use actix::MailboxError;

use super::{done, Capability, CapabilityError, CapabilityHost, HookFuture, VmView};
use crate::dns::{RemoveName, SetName};

/// Every VM's DNS name (no spec field: a VM with a lease has a name).
#[derive(Debug, Clone, Copy, Default)]
pub struct DnsName;

const NAME: &str = "dns-name";

fn gone(_: MailboxError) -> CapabilityError {
    CapabilityError::ActorGone {
        capability: NAME,
        actor: "DnsActor",
    }
}

fn dns(source: crate::dns::DnsError) -> CapabilityError {
    CapabilityError::Dns {
        capability: NAME,
        source,
    }
}

/// Publishes the VM's name (when it holds a lease).
fn register<'a>(host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
    let Some(lease) = vm.lease else { return done() };
    Box::pin(async move {
        host.dns()
            .send(SetName {
                name: vm.name.to_owned(),
                ip: lease.guest_ip,
            })
            .await
            .map_err(gone)?
            .map_err(dns)
    })
}

/// Withdraws the VM's name. Idempotent.
fn unregister<'a>(host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
    Box::pin(async move {
        host.dns()
            .send(RemoveName {
                name: vm.name.to_owned(),
            })
            .await
            .map_err(gone)?
            .map_err(dns)
    })
}

impl Capability for DnsName {
    fn name(&self) -> &'static str {
        NAME
    }

    fn running<'a>(&'a self, host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
        register(host, vm)
    }

    fn stopping<'a>(&'a self, host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
        unregister(host, vm)
    }

    fn stopped<'a>(&'a self, host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
        unregister(host, vm)
    }

    fn deleted<'a>(&'a self, host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
        unregister(host, vm)
    }

    fn adopted<'a>(&'a self, host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
        register(host, vm)
    }
}
