//! Egress policy: a guest whose spec says `egress.mode = deny` reaches only hearth's DNS, its
//! `allow` CIDRs and the addresses hearth's DNS answered it for its `allow_domains` (see
//! `nat::egress` for the kernel side, `dns::egress` for the learning). Applied from `booted`
//! (or `restored`, `adopted`) until `stopped`, changed at run time by `reconfigure`.

use actix::MailboxError;
use hearth_proto::api::CreateVm;
use hearth_proto::api_egress::EgressPolicy;
use ipnet::Ipv4Net;

use super::{done, Capability, CapabilityError, CapabilityHost, HookFuture, VmView};
use crate::dns::SetEgressDomains;
use crate::lease::NetLease;
use crate::nat::egress::{EgressRules, SetEgressPolicy};
use crate::nat::NatError;

/// The per-VM egress policy (spec field `egress`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Egress;

const NAME: &str = "egress";

fn gone(actor: &'static str) -> impl FnOnce(MailboxError) -> CapabilityError {
    move |_| CapabilityError::ActorGone {
        capability: NAME,
        actor,
    }
}

/// The deny-mode policy of a spec, if it has one.
fn deny_policy(spec: &CreateVm) -> Option<&EgressPolicy> {
    spec.egress.as_ref().filter(|p| p.is_deny())
}

/// The firewall's view of a policy.
///
/// # Errors
/// An `allow` entry that does not parse (the spec was validated, so only a corrupt store).
pub fn rules_of(lease: &NetLease, policy: &EgressPolicy) -> Result<EgressRules, CapabilityError> {
    let invalid = |reason: String| CapabilityError::Nat {
        capability: NAME,
        source: NatError::InvalidGuest {
            ip: lease.guest_ip,
            reason,
        },
    };
    let mut rules = EgressRules {
        domains: policy.allow_domains.iter().cloned().collect(),
        ..EgressRules::default()
    };
    for rule in policy.allow_rules().map_err(invalid)? {
        let net = Ipv4Net::new(rule.addr, rule.prefix)
            .map_err(|e| invalid(e.to_string()))?
            .trunc();
        match rule.port {
            Some(port) => rules.ports.insert((net, port)),
            None => rules.nets.insert(net),
        };
    }
    Ok(rules)
}

/// Makes the kernel and DNS hold `policy` for the guest (`None`: allow mode). The firewall
/// first, then DNS; when DNS refuses, the firewall is put back to `undo`.
async fn apply(
    host: &CapabilityHost,
    lease: &NetLease,
    policy: Option<&EgressPolicy>,
    undo: Option<&EgressPolicy>,
) -> Result<(), CapabilityError> {
    let rules = policy.map(|p| rules_of(lease, p)).transpose()?;
    let domains = policy.map(|p| p.allow_domains.clone());
    let guest = lease.guest_ip;
    host.nat()
        .send(SetEgressPolicy { guest, rules })
        .await
        .map_err(gone("NatActor"))?
        .map_err(|source| CapabilityError::Nat {
            capability: NAME,
            source,
        })?;
    let dns = host
        .dns()
        .send(SetEgressDomains { guest, domains })
        .await
        .map_err(gone("DnsActor"))
        .and_then(|r| {
            r.map_err(|source| CapabilityError::Dns {
                capability: NAME,
                source,
            })
        });
    if let Err(e) = dns {
        let rules = undo.map(|p| rules_of(lease, p)).transpose().ok().flatten();
        let _ = host.nat().send(SetEgressPolicy { guest, rules }).await;
        return Err(e);
    }
    Ok(())
}

fn lease<'a>(vm: &VmView<'a>) -> Result<&'a NetLease, CapabilityError> {
    vm.lease.ok_or_else(|| CapabilityError::NoLease {
        capability: NAME,
        vm: vm.name.to_owned(),
    })
}

impl Capability for Egress {
    fn name(&self) -> &'static str {
        NAME
    }

    fn booted<'a>(&'a self, host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
        let Some(policy) = deny_policy(vm.spec) else {
            return done();
        };
        Box::pin(async move { apply(host, lease(&vm)?, Some(policy), None).await })
    }

    fn stopped<'a>(&'a self, host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
        match vm.lease {
            Some(lease) if deny_policy(vm.spec).is_some() => {
                Box::pin(apply(host, lease, None, None))
            }
            _ => done(),
        }
    }

    /// `Reconcile` kept the kernel's elements of live guests; this puts back what the kernel
    /// does not hold (the domain patterns, in DNS and in the firewall's memory).
    fn adopted<'a>(&'a self, host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
        self.booted(host, vm)
    }

    fn reconfigure<'a>(
        &'a self,
        host: &'a CapabilityHost,
        vm: VmView<'a>,
        previous: &'a CreateVm,
    ) -> HookFuture<'a> {
        let (new, old) = (deny_policy(vm.spec), deny_policy(previous));
        match vm.lease {
            Some(lease) if new != old => Box::pin(apply(host, lease, new, old)),
            _ => done(),
        }
    }
}

#[cfg(test)]
#[path = "egress_tests.rs"]
mod tests;
