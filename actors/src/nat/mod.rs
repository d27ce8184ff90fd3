//! The whole of hearth's host firewall lives here, not only NAT: masquerading, guest
//! isolation, guest-to-host blocking and anti-spoofing are all this module's rules, and no
//! other module writes firewall state (the `host::firewall` backends only carry out what
//! [`NatActor`] decides). The name is historical.
//!
//! `NatActor`: owns hearth's firewall state on the host, i.e. its own iptables chains
//! (`HEARTH-POSTROUTING` in nat, `HEARTH-FORWARD` and `HEARTH-INPUT` in filter, each reached by
//! one jump from the built-in chain) and two kernel ipsets: `hearth-nat` (guests whose
//! traffic is masqueraded out of the egress interface) and, under anti-spoofing,
//! `hearth-guests` (the (IP, MAC) pair each lease may send from). Below IPv4 it owns an
//! nftables `bridge` table `hearth`: frames from guest ports that are neither IPv4 nor ARP
//! are dropped, and under anti-spoofing ARP and IPv4 must carry the port's own lease (a set
//! of (TAP, MAC, IP) elements).
//!
//! The iptables rules are static: they depend only on the configuration and match the sets,
//! so per-guest messages ([`EnsureNat`], [`RegisterGuest`], [`UnregisterGuest`]) are
//! in-process set updates over netlink and a cost independent of the number of guests; the
//! bridge table's per-guest elements are one `nft` run each (~10 ms). [`Reconcile`] rewrites everything atomically (`iptables-restore --noflush`, set
//! rebuild + swap); [`Teardown`] removes it all.
//!
//! What the rules give guests: NAT guests reach the egress interface (and get replies);
//! other guests reach nothing beyond the bridge; nothing unasked enters the guest subnet by
//! forwarding; with `isolate_guests`, guests cannot route to each other via the gateway;
//! with `block_guest_to_host`, guests reach the host only for DNS on the gateway; with
//! `anti_spoofing`, IP packets whose (source IP, source MAC) is not a registered lease are
//! dropped (a guest must be registered before it sends anything). When the kernel passes
//! bridged frames through iptables (`br_netfilter`, `bridge-nf-call-iptables=1`, as on the
//! development hosts), guest-to-guest frames on the bridge also meet `HEARTH-FORWARD`, so
//! isolation and anti-spoofing hold at L2 for IP too; without it, L2 isolation is the TAP
//! pool's isolated bridge ports. ICMP to the gateway is dropped under `block_guest_to_host`.
//! Below IP, hearth's nftables `bridge` table (`rules::bridge_table_text`, applied with
//! `nft -f`) filters what guests' ports send before the bridge sees it: anything but IPv4 and
//! ARP is dropped (guests are IPv4-only, so IPv6 never reaches the host; the TAP pool also
//! turns IPv6 off on the bridge and the TAPs), and under anti-spoofing ARP and IPv4 frames
//! must come from the port's lease (TAP, MAC, IP), so a guest can neither answer ARP for
//! another guest's (or the gateway's) address nor take over another guest's MAC. Why nft and
//! not ebtables: the `bridge` family works the same on hosts whose iptables is the legacy or
//! the nft flavour (ebtables-legacy needs the x_tables ebtables modules, ebtables-nft is nft
//! underneath anyway), and a table is replaced or removed as one transaction. Per-lease
//! updates spawn `nft` (a few ms per guest registration). Not covered: inbound port
//! forwarding to guests.
//!
//! Without an egress interface (none configured and no default route, or the configured one
//! missing), everything but NAT is installed: `EnsureNat` enabling NAT answers
//! [`NatError::NoEgress`] / [`NatError::EgressMissing`] until [`SetEgress`] (hearthd sends it
//! when a default route appears) names one that exists.
//!
//! Reconcile is atomic per table (`iptables-restore` commits nat, then filter); the jump
//! fix-ups are computed from an `iptables -S` read just before, so a rule another program
//! adds in between is not seen (but is never removed either). [`GetStatus`] tells what this
//! actor put on the host.
//!
//! Handlers are synchronous: per-guest ones take ~10 microseconds; `Reconcile` and
//! `Teardown` spawn `iptables`/`ipset` (tens of milliseconds), so start the actor on its own
//! `Arbiter` when that matters to neighbours.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::host::firewall::FirewallError;

mod handlers;
mod messages;
pub mod rules;

pub use handlers::NatActor;
pub use messages::{
    EnsureNat, GetStatus, GuestSpec, NatStatus, Reconcile, RegisterGuest, SetEgress, Teardown,
    UnregisterGuest,
};

/// Errors of `NatActor`.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// The configuration cannot be used; nothing was touched.
    #[error("Invalid NAT config `{field}`: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// NAT was asked for without an egress interface.
    #[error("NAT needs an egress interface: none configured and no default route found")]
    NoEgress,
    /// The configured egress interface does not exist (NAT is refused until it does).
    #[error("NAT needs egress interface {interface}, which does not exist")]
    EgressMissing {
        /// The interface name.
        interface: String,
    },
    /// A guest address the bridge subnet cannot hold, or a contradictory desired state;
    /// nothing was changed.
    #[error("Invalid guest {ip}: {reason}")]
    InvalidGuest {
        /// The guest address.
        ip: Ipv4Addr,
        /// What is wrong with it.
        reason: String,
    },
    /// A per-guest message came before the first successful `Reconcile`.
    #[error("Cannot {op} before the firewall is set up (send Reconcile first)")]
    NotReady {
        /// The operation refused.
        op: &'static str,
    },
    /// The host refused a change.
    #[error("Cannot {step}")]
    Firewall {
        /// What hearth was doing.
        step: String,
        /// The backend's error (names the command or ipset operation).
        source: FirewallError,
    },
}

impl NatError {
    /// True when the request is fine but the host cannot serve it now (no egress interface):
    /// the API's 503 `unavailable`.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, NatError::NoEgress | NatError::EgressMissing { .. })
    }
}

pub(crate) fn step(step: impl Into<String>) -> impl FnOnce(FirewallError) -> NatError {
    let step = step.into();
    move |source| NatError::Firewall { step, source }
}

/// The actor's configuration (from hearthd's `[network]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// hearth's bridge, where guests' traffic comes in.
    pub bridge: String,
    /// The bridge subnet.
    pub cidr: Ipv4Net,
    /// The bridge's own address (guests' gateway and DNS server).
    pub gateway: Ipv4Addr,
    /// The interface NATed traffic leaves by; without one (or while it does not exist) NAT
    /// is refused and everything else works.
    pub egress: Option<String>,
    /// The name prefix of guests' TAPs (the bridge ports the bridge-family filter applies to).
    pub guest_ports: String,
    /// Drop guest-to-guest traffic routed through the gateway.
    pub isolate_guests: bool,
    /// Drop guest-to-host traffic except DNS to the gateway.
    pub block_guest_to_host: bool,
    /// Drop IP packets from the bridge whose source (IP, MAC) is not a registered lease.
    pub anti_spoofing: bool,
}

/// Interface names end up in iptables-restore and nft texts: the links backend's validator
/// (the one every part of hearth uses) allows only names safe there.
fn check_ifname(field: &'static str, name: &str) -> Result<(), NatError> {
    crate::host::links::check_ifname(name).map_err(|_| NatError::InvalidConfig {
        field,
        reason: format!("{name:?} must be 1-15 bytes of letters, digits, '-', '_', '.', '@'"),
    })
}

impl NatConfig {
    /// Checks every field; the actor refuses a config that fails.
    pub fn validate(&self) -> Result<(), NatError> {
        check_ifname("bridge", &self.bridge)?;
        check_ifname("guest_ports", &self.guest_ports)?;
        if self.bridge.starts_with(&self.guest_ports) {
            return Err(NatError::InvalidConfig {
                field: "guest_ports",
                reason: format!(
                    "{:?} also matches the bridge {:?}",
                    self.guest_ports, self.bridge
                ),
            });
        }
        if let Some(egress) = &self.egress {
            check_ifname("egress", egress)?;
            if egress == &self.bridge {
                return Err(NatError::InvalidConfig {
                    field: "egress",
                    reason: "must not be the bridge".into(),
                });
            }
        }
        if self.cidr.prefix_len() > 30 {
            return Err(NatError::InvalidConfig {
                field: "cidr",
                reason: format!("{} has no room for guests", self.cidr),
            });
        }
        if !self.cidr.contains(&self.gateway) {
            return Err(NatError::InvalidConfig {
                field: "gateway",
                reason: format!("{} is outside {}", self.gateway, self.cidr),
            });
        }
        if self.anti_spoofing && self.cidr.prefix_len() < 16 {
            return Err(NatError::InvalidConfig {
                field: "cidr",
                reason: format!(
                    "{} is wider than /16, the most the anti-spoofing bitmap set holds",
                    self.cidr
                ),
            });
        }
        Ok(())
    }

    /// Why `ip` cannot be a guest of this bridge, if it cannot.
    fn guest_problem(&self, ip: Ipv4Addr) -> Option<String> {
        let net = self.cidr.trunc();
        if !net.contains(&ip) {
            Some(format!("outside the bridge subnet {net}"))
        } else if ip == net.network() || ip == net.broadcast() {
            Some(format!("is the network or broadcast address of {net}"))
        } else if ip == self.gateway {
            Some("is the gateway".into())
        } else {
            None
        }
    }

    pub(crate) fn check_guest(&self, ip: Ipv4Addr) -> Result<(), NatError> {
        match self.guest_problem(ip) {
            Some(reason) => Err(NatError::InvalidGuest { ip, reason }),
            None => Ok(()),
        }
    }
}

/// Checks a desired state as a whole: every address a guest address, no address twice.
pub fn validate_desired(config: &NatConfig, desired: &[GuestSpec]) -> Result<(), NatError> {
    let mut seen = BTreeSet::new();
    for g in desired {
        config.check_guest(g.ip)?;
        if !seen.insert(g.ip) {
            return Err(NatError::InvalidGuest {
                ip: g.ip,
                reason: "listed twice in the desired state".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NatConfig {
        NatConfig {
            bridge: "hearth0".into(),
            cidr: "172.31.240.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 31, 240, 1),
            egress: Some("eth0".into()),
            guest_ports: "hth".into(),
            isolate_guests: true,
            block_guest_to_host: true,
            anti_spoofing: true,
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        for (c, field) in [
            (
                NatConfig {
                    bridge: "br 0".into(),
                    ..config()
                },
                "bridge",
            ),
            (
                NatConfig {
                    bridge: "".into(),
                    ..config()
                },
                "bridge",
            ),
            (
                NatConfig {
                    egress: Some("eth+".into()),
                    ..config()
                },
                "egress",
            ),
            (
                NatConfig {
                    egress: Some("hearth0".into()),
                    ..config()
                },
                "egress",
            ),
            (
                NatConfig {
                    gateway: Ipv4Addr::new(10, 0, 0, 1),
                    ..config()
                },
                "gateway",
            ),
            (
                NatConfig {
                    cidr: "172.16.0.0/12".parse().unwrap(),
                    ..config()
                },
                "cidr",
            ),
            (
                NatConfig {
                    cidr: "172.31.240.0/31".parse().unwrap(),
                    ..config()
                },
                "cidr",
            ),
        ] {
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{err}");
        }
        let wide = NatConfig {
            cidr: "172.16.0.0/12".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 16, 0, 1),
            anti_spoofing: false,
            ..config()
        };
        wide.validate().unwrap();
    }
}
