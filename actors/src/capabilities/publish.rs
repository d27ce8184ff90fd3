//! Port publishing: the spec's `publish` mappings DNAT host ports to the guest from `booted`
//! (or `restored`, `adopted`) until `stopped`; `reconfigure` publishes what was added and
//! withdraws what was removed. The rules are `NatActor`'s (`nat/publish.rs`).

use std::collections::BTreeSet;

use actix::MailboxError;
use hearth_proto::api::CreateVm;
use hearth_proto::api_publish::PortMapping;

use super::{done, Capability, CapabilityError, CapabilityHost, HookFuture, VmView};
use crate::nat::{NatError, PublishPorts, UnpublishPorts};

/// The VM's published ports (spec field `publish`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Publish;

const NAME: &str = "publish";

fn gone(_: MailboxError) -> CapabilityError {
    CapabilityError::ActorGone {
        capability: NAME,
        actor: "NatActor",
    }
}

fn nat_error(source: NatError) -> CapabilityError {
    match source {
        NatError::PortConflict { .. } => CapabilityError::Conflict {
            capability: NAME,
            message: source.to_string(),
        },
        NatError::InvalidPublish { .. } => CapabilityError::Invalid {
            capability: NAME,
            reason: source.to_string(),
        },
        source => CapabilityError::Nat {
            capability: NAME,
            source,
        },
    }
}

async fn publish(
    host: &CapabilityHost,
    vm: VmView<'_>,
    mappings: Vec<PortMapping>,
) -> Result<(), CapabilityError> {
    if mappings.is_empty() {
        return Ok(());
    }
    let lease = vm.lease.ok_or_else(|| CapabilityError::NoLease {
        capability: NAME,
        vm: vm.name.to_owned(),
    })?;
    host.nat()
        .send(PublishPorts {
            vm: vm.name.to_owned(),
            guest_ip: lease.guest_ip,
            mappings,
        })
        .await
        .map_err(gone)?
        .map_err(nat_error)
}

async fn unpublish(
    host: &CapabilityHost,
    vm: &str,
    mappings: Option<Vec<PortMapping>>,
) -> Result<(), CapabilityError> {
    if mappings.as_ref().is_some_and(Vec::is_empty) {
        return Ok(());
    }
    host.nat()
        .send(UnpublishPorts {
            vm: vm.to_owned(),
            mappings,
        })
        .await
        .map_err(gone)?
        .map_err(nat_error)
}

impl Capability for Publish {
    fn name(&self) -> &'static str {
        NAME
    }

    fn booted<'a>(&'a self, host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
        if vm.spec.publish.is_empty() {
            return done();
        }
        Box::pin(publish(host, vm, vm.spec.publish.clone()))
    }

    fn adopted<'a>(&'a self, host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
        self.booted(host, vm)
    }

    /// Every port of the VM's goes, whatever the spec says now.
    fn stopped<'a>(&'a self, host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
        Box::pin(unpublish(host, vm.name, None))
    }

    /// New ports first (a conflict leaves everything as it was), then the removed ones go.
    fn reconfigure<'a>(
        &'a self,
        host: &'a CapabilityHost,
        vm: VmView<'a>,
        previous: &'a CreateVm,
    ) -> HookFuture<'a> {
        let old: BTreeSet<PortMapping> = previous.publish.iter().copied().collect();
        let new: BTreeSet<PortMapping> = vm.spec.publish.iter().copied().collect();
        if old == new || vm.lease.is_none() {
            return done();
        }
        Box::pin(async move {
            let added: Vec<_> = new.difference(&old).copied().collect();
            let removed: Vec<_> = old.difference(&new).copied().collect();
            publish(host, vm, added.clone()).await?;
            if let Err(e) = unpublish(host, vm.name, Some(removed)).await {
                // Put back what was added: the VM keeps its old ports only.
                let _ = unpublish(host, vm.name, Some(added)).await;
                return Err(e);
            }
            Ok(())
        })
    }
}
