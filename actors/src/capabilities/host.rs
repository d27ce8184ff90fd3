//! [`CapabilityHost`]: the host services a capability may use, and nothing else.

use actix::Addr;

use crate::dns::DnsActor;
use crate::nat::NatActor;
use crate::tap_pool::TapPoolActor;

/// The host services a capability's hooks may use: typed messages to `NatActor`, `DnsActor`
/// and `TapPoolActor`. Holds no supervisor state; cheap to clone.
#[derive(Clone)]
pub struct CapabilityHost {
    nat: Addr<NatActor>,
    dns: Addr<DnsActor>,
    tap_pool: Addr<TapPoolActor>,
}

impl CapabilityHost {
    /// A host over these actors.
    #[must_use]
    pub fn new(nat: Addr<NatActor>, dns: Addr<DnsActor>, tap_pool: Addr<TapPoolActor>) -> Self {
        Self { nat, dns, tap_pool }
    }

    /// The firewall (NAT, published ports, egress rules).
    #[must_use]
    pub fn nat(&self) -> &Addr<NatActor> {
        &self.nat
    }

    /// The DNS server on the gateway.
    #[must_use]
    pub fn dns(&self) -> &Addr<DnsActor> {
        &self.dns
    }

    /// The bridge and TAP pool.
    #[must_use]
    pub fn tap_pool(&self) -> &Addr<TapPoolActor> {
        &self.tap_pool
    }
}
