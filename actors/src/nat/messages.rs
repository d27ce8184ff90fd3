//! The messages `NatActor` answers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use actix::Message;

use super::NatError;
use crate::lease::{MacAddr, NetLease};

/// One guest of the desired state given to [`Reconcile`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GuestSpec {
    /// The guest's TAP (the bridge port its frames must come from under anti-spoofing).
    pub tap: String,
    /// The guest's leased IPv4 address.
    pub ip: Ipv4Addr,
    /// The guest's leased MAC (the only source MAC accepted from `ip` under anti-spoofing).
    pub mac: MacAddr,
    /// Whether the guest's traffic is masqueraded out of the egress interface.
    pub nat: bool,
}

/// Makes the host hold exactly this state: hearth's chains rewritten atomically with one
/// jump each from the built-in chains, the NAT and guest sets rebuilt and swapped in, IPv4
/// forwarding on. Stale entries (a crash's leftovers, duplicated jumps) are removed; rules
/// hearth did not make are untouched. Must run once before the per-guest messages.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), NatError>")]
pub struct Reconcile {
    /// Every guest that exists, with its NAT flag. Guests not listed lose NAT and, under
    /// anti-spoofing, all connectivity.
    pub desired: Vec<GuestSpec>,
}

/// Enables or disables NAT for one guest: an in-process ipset add/remove, no process spawned,
/// constant cost whatever the number of guests. Idempotent.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), NatError>")]
pub struct EnsureNat {
    /// The guest's IPv4 address.
    pub guest_ip: Ipv4Addr,
    /// The guest's TAP (for the log).
    pub tap: String,
    /// True to NAT the guest's traffic out, false to stop it.
    pub enable: bool,
}

/// Records a guest's lease (IP, MAC) as a legitimate traffic source for anti-spoofing.
/// Registering again with another MAC replaces the MAC. A no-op on the host when
/// anti-spoofing is off.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), NatError>")]
pub struct RegisterGuest {
    /// The guest's lease.
    pub lease: NetLease,
}

/// Forgets a guest: removes it from the guest set and from the NAT set. Idempotent.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), NatError>")]
pub struct UnregisterGuest {
    /// The guest's lease.
    pub lease: NetLease,
}

/// Sets the egress interface (hearthd sends it when a default route appears, or the
/// configured interface may have appeared) and, once set up, rewrites the rules for it.
/// NAT works from then on if the interface exists; a guest's NAT flag set before is honoured.
/// Sending the current value again re-checks that the interface exists.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), NatError>")]
pub struct SetEgress {
    /// The interface masqueraded traffic leaves by, or `None` to refuse NAT.
    pub interface: Option<String>,
}

/// Removes everything hearth made: the jumps, hearth's chains, the sets, the bridge table; turns IPv4
/// forwarding back off if this actor turned it on. Works also when nothing was set up.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), NatError>")]
pub struct Teardown;

/// Asks what the actor has put on the host: whether it is set up, which guests have NAT and
/// which leases are registered.
#[derive(Debug, Message)]
#[rtype(result = "Result<NatStatus, NatError>")]
pub struct GetStatus;

/// The answer to [`GetStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatStatus {
    /// A `Reconcile` succeeded and no `Teardown` followed.
    pub ready: bool,
    /// Guests in the NAT set.
    pub nat: BTreeSet<Ipv4Addr>,
    /// Registered leases (IP -> MAC).
    pub guests: BTreeMap<Ipv4Addr, MacAddr>,
    /// The egress interface NAT uses now (`None`: NAT is refused).
    pub egress: Option<String>,
}
