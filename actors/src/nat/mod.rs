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
//! in-process set updates over netlink and a cost independent of the number of guests; so are
//! the bridge table's per-guest elements (one `nf_tables` netlink transaction each, no `nft`
//! process). [`Reconcile`] rewrites everything atomically (`iptables-restore --noflush`, set
//! rebuild + swap, the bridge table replaced by one `nft -f`); [`Teardown`] removes it all.
//!
//! What the rules give guests: NAT guests reach the egress interface (and get replies);
//! other guests reach nothing beyond the bridge; nothing unasked enters the guest subnet by
//! forwarding; with `isolate_guests`, guests cannot route to each other via the gateway;
//! with `block_guest_to_host`, guests reach the host only for DNS on the gateway and for
//! published ports (through hairpin proxies, whose marked sockets alone are let in); with
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
//! the nft flavour (ebtables-legacy needs the `x_tables` ebtables modules, ebtables-nft is nft
//! underneath anyway), and a table is replaced or removed as one transaction. Per-lease
//! updates are in-process netlink transactions (`host::firewall::nft_netlink`, tens of
//! microseconds), answered only once the kernel has committed the element. Inbound port
//! forwarding to guests (published ports, with hairpin proxies for guests): `publish.rs`.
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
//! Handlers are synchronous: per-guest ones take tens of microseconds; `Reconcile` and
//! `Teardown` spawn `iptables`/`ipset` (tens of milliseconds), so start the actor on its own
//! `Arbiter` when that matters to neighbours.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use actix::{Actor, Context};
use ipnet::Ipv4Net;
use slog::{debug, info, warn, Logger};

use crate::host::firewall::{
    nft_publish, Firewall, FirewallError, LeaseChange, PortLease, SetEntry, Table,
};
use crate::lease::MacAddr;
use rules::{Listings, BRIDGE_TABLE, GUEST_SET, LEASE_SET, NAT_SET};

pub mod egress;
mod handlers;
mod messages;
pub mod publish;
pub mod rules;

pub use messages::{
    EnsureNat, GetStatus, GuestSpec, NatStatus, Reconcile, RegisterGuest, SetEgress, Teardown,
    UnregisterGuest,
};
pub use publish::{ListPublished, PublishPorts, PublishedPort, SeedPublished, UnpublishPorts};

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
    /// A published port's host port is held by another owner; nothing was changed.
    #[error("Host port {mapping} is taken by {owner}")]
    PortConflict {
        /// The mapping refused.
        mapping: String,
        /// Who holds the port: another VM (naming it and its mapping), hearth's DNS, or a
        /// socket on the host.
        owner: String,
    },
    /// A published port's host address is not one of the host's (now); nothing was changed.
    #[error("Cannot publish {mapping}: {addr} is not an address of this host")]
    AddressNotLocal {
        /// The mapping refused.
        mapping: String,
        /// Its host address.
        addr: std::net::Ipv4Addr,
    },
    /// A published port that cannot be used; nothing was changed.
    #[error("Cannot publish {mapping}: {reason}")]
    InvalidPublish {
        /// The mapping(s).
        mapping: String,
        /// What is wrong.
        reason: String,
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
    #[must_use]
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
    /// The interface masqueraded traffic leaves by; without one (or while it does not exist) NAT
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
    ///
    /// # Errors
    /// [`NatError::InvalidConfig`] naming the first field that is wrong.
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
///
/// # Errors
/// [`NatError::InvalidGuest`] naming the first address that is wrong.
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

/// The actor owning hearth's firewall chains and sets. See the module docs.
pub struct NatActor {
    config: NatConfig,
    firewall: Box<dyn Firewall>,
    log: Logger,
    /// A `Reconcile` succeeded and no `Teardown` followed.
    ready: bool,
    /// Guests in the NAT set.
    nat: BTreeSet<Ipv4Addr>,
    /// Registered leases: MAC and TAP by IP.
    guests: BTreeMap<Ipv4Addr, (MacAddr, String)>,
    /// The egress interface the installed rules NAT out of (`None`: NAT refused).
    egress: Option<String>,
    /// This actor turned IPv4 forwarding on (so `Teardown` turns it back off).
    enabled_forwarding: bool,
    /// Egress policies (`egress.rs`).
    egress_policy: egress::EgressState,
    /// Published ports (see `publish.rs`).
    published: publish::PublishTable,
    /// The hairpin proxy of each published port guests can reach (see `publish.rs`).
    hairpins: publish::Hairpins,
}

impl NatActor {
    /// A NAT actor over `firewall`. Validates the config; touches nothing on the host.
    ///
    /// # Errors
    /// The config's problem ([`NatConfig::validate`]).
    pub fn new(
        config: NatConfig,
        firewall: Box<dyn Firewall>,
        log: Logger,
    ) -> Result<Self, NatError> {
        config.validate()?;
        Ok(Self {
            config,
            firewall,
            log,
            ready: false,
            nat: BTreeSet::new(),
            guests: BTreeMap::new(),
            egress: None,
            enabled_forwarding: false,
            egress_policy: egress::EgressState::default(),
            published: publish::PublishTable::new(),
            hairpins: publish::Hairpins::new(),
        })
    }

    /// Why NAT is refused now, if it is.
    fn no_egress(&self) -> Option<NatError> {
        if self.egress.is_some() {
            return None;
        }
        Some(match &self.config.egress {
            Some(interface) => NatError::EgressMissing {
                interface: interface.clone(),
            },
            None => NatError::NoEgress,
        })
    }

    /// The configured egress interface if it exists; `None` (NAT refused) otherwise.
    fn usable_egress(&mut self) -> Result<Option<String>, NatError> {
        let Some(egress) = self.config.egress.clone() else {
            warn!(self.log, "no egress interface (none configured, no default route): NAT refused until one appears");
            return Ok(None);
        };
        let exists = self
            .firewall
            .interface_exists(&egress)
            .map_err(step(format!("look up egress interface {egress}")))?;
        if !exists {
            warn!(self.log, "egress interface does not exist: NAT refused until it does"; "egress" => &egress);
            return Ok(None);
        }
        Ok(Some(egress))
    }

    /// The desired state this actor holds now (for a rewrite with another egress).
    fn current_desired(&self) -> Vec<GuestSpec> {
        self.guests
            .iter()
            .map(|(ip, (mac, tap))| GuestSpec {
                tap: tap.clone(),
                ip: *ip,
                mac: *mac,
                nat: self.nat.contains(ip),
            })
            .collect()
    }

    fn listings(&mut self) -> Result<Listings, NatError> {
        Ok(Listings {
            nat: self
                .firewall
                .list_rules(Table::Nat)
                .map_err(step("list the nat table"))?,
            filter: self
                .firewall
                .list_rules(Table::Filter)
                .map_err(step("list the filter table"))?,
        })
    }

    fn reconcile(&mut self, desired: &[GuestSpec]) -> Result<(), NatError> {
        validate_desired(&self.config, desired)?;
        let egress = self.usable_egress()?;
        let (nat, guests) = rules::set_members(desired);
        let existing = self.firewall.list_sets().map_err(step("list ipsets"))?;
        let mut sets = rules::set_rebuild_text(NAT_SET, &rules::nat_set_kind(), &nat, &existing);
        if self.config.anti_spoofing {
            let kind = rules::guest_set_kind(&self.config);
            sets += &rules::set_rebuild_text(GUEST_SET, &kind, &guests, &existing);
        }
        self.firewall
            .restore_sets(&sets)
            .map_err(step("rebuild hearth's ipsets"))?;

        let installed = self.listings().and_then(|current| {
            let text = rules::restore_text(&self.config, egress.as_deref(), &current);
            self.firewall
                .restore_rules(&text)
                .map_err(step("install hearth's iptables chains"))
        });
        if let Err(err) = installed {
            // Sets this call created are referenced by no rule: take them back.
            for set in [NAT_SET, GUEST_SET] {
                if !existing.iter().any(|s| s == set) {
                    if let Err(e) = self.firewall.destroy_set(set) {
                        warn!(self.log, "cannot remove new ipset after failure"; "set" => set, "error" => %e);
                    }
                }
            }
            return Err(err);
        }

        if !self.config.anti_spoofing {
            // No rule references the guest set any more: drop one an earlier config made.
            for set in [GUEST_SET.to_owned(), rules::temp_set(GUEST_SET)] {
                self.firewall
                    .destroy_set(&set)
                    .map_err(step(format!("destroy ipset {set}")))?;
            }
        }

        self.firewall
            .apply_nft(&rules::bridge_table_text(&self.config, desired))
            .map_err(step("install hearth's nftables bridge table"))?;
        let published = publish::all_elements(&self.published);
        self.read_earlier_hairpins();
        let hairpins = self.sync_hairpins();
        self.firewall
            .apply_nft(&nft_publish::table_text(
                &self.config.bridge,
                &published,
                &hairpins,
            ))
            .map_err(step("install hearth's nftables publish table"))?;
        self.close_retired();
        // After the table that drops the bridge's martian 127/8 packets: ports published on
        // the loopback reach guests from the host.
        self.set_route_localnet(true)?;
        // Egress policy: its table is part of the firewall; guests in `desired` keep theirs.
        let guests: BTreeSet<Ipv4Addr> = desired.iter().map(|g| g.ip).collect();
        self.reconcile_egress_keeping(&guests)?;

        // Forwarding last: guests' packets are never routed before the rules guard them.
        let forwarding = self
            .firewall
            .ip_forward()
            .map_err(step("read IPv4 forwarding"))?;
        if !forwarding {
            self.firewall
                .set_ip_forward(true)
                .map_err(step("enable IPv4 forwarding"))?;
            self.enabled_forwarding = true;
        }

        self.ready = true;
        self.nat = desired.iter().filter(|g| g.nat).map(|g| g.ip).collect();
        self.guests = desired
            .iter()
            .map(|g| (g.ip, (g.mac, g.tap.clone())))
            .collect();
        self.egress = egress;
        info!(self.log, "firewall reconciled";
            "egress" => ?self.egress, "guests" => desired.len(), "nat" => self.nat.len());
        Ok(())
    }

    fn ensure_nat(&mut self, msg: &EnsureNat) -> Result<(), NatError> {
        self.config.check_guest(msg.guest_ip)?;
        if !self.ready {
            return Err(NatError::NotReady { op: "change NAT" });
        }
        let entry = SetEntry::Ip(msg.guest_ip);
        if msg.enable {
            if let Some(err) = self.no_egress() {
                return Err(err);
            }
            self.firewall
                .add_to_set(NAT_SET, entry)
                .map_err(step(format!("enable NAT for {}", msg.guest_ip)))?;
            self.nat.insert(msg.guest_ip);
        } else {
            self.firewall
                .remove_from_set(NAT_SET, entry)
                .map_err(step(format!("disable NAT for {}", msg.guest_ip)))?;
            self.nat.remove(&msg.guest_ip);
        }
        debug!(self.log, "NAT changed"; "guest" => %msg.guest_ip, "tap" => &msg.tap, "enabled" => msg.enable);
        Ok(())
    }

    fn register(&mut self, ip: Ipv4Addr, mac: MacAddr, tap: &str) -> Result<(), NatError> {
        self.config.check_guest(ip)?;
        crate::host::links::check_ifname(tap).map_err(|_| NatError::InvalidGuest {
            ip,
            reason: format!("TAP {tap:?} is not a valid interface name"),
        })?;
        if !self.ready {
            return Err(NatError::NotReady {
                op: "register a guest",
            });
        }
        if self.config.anti_spoofing {
            self.firewall
                .add_to_set(GUEST_SET, SetEntry::IpMac(ip, mac))
                .map_err(step(format!("register guest {ip} ({mac})")))?;
            // A guest registered again on another TAP or MAC: its old element goes, in the
            // same transaction as the new one comes.
            let old = self.guests.get(&ip).cloned();
            let mut changes = Vec::with_capacity(2);
            if let Some((old_mac, old_tap)) =
                old.as_ref().filter(|(m, t)| (*m, t.as_str()) != (mac, tap))
            {
                changes.push(LeaseChange::Remove(PortLease {
                    port: old_tap.clone(),
                    mac: *old_mac,
                    ip,
                }));
            }
            changes.push(LeaseChange::Add(PortLease {
                port: tap.to_owned(),
                mac,
                ip,
            }));
            if let Err(e) = self
                .firewall
                .update_port_leases(BRIDGE_TABLE, LEASE_SET, &changes)
            {
                // Undo the set entry: the guest stays as registered as it was before.
                let undo = match old {
                    Some((old_mac, _)) => self
                        .firewall
                        .add_to_set(GUEST_SET, SetEntry::IpMac(ip, old_mac)),
                    None => self
                        .firewall
                        .remove_from_set(GUEST_SET, SetEntry::IpMac(ip, mac)),
                };
                if let Err(u) = undo {
                    warn!(self.log, "cannot undo guest set entry"; "guest" => %ip, "error" => %u);
                }
                return Err(step(format!("register guest {ip} on port {tap}"))(e));
            }
        }
        self.guests.insert(ip, (mac, tap.to_owned()));
        debug!(self.log, "guest registered"; "guest" => %ip, "mac" => %mac, "tap" => tap);
        Ok(())
    }

    fn unregister(&mut self, ip: Ipv4Addr, mac: MacAddr, tap: &str) -> Result<(), NatError> {
        self.config.check_guest(ip)?;
        if !self.ready {
            // Nothing of this run is on the host; the next Reconcile clears older leftovers.
            self.guests.remove(&ip);
            self.nat.remove(&ip);
            return Ok(());
        }
        self.firewall
            .remove_from_set(NAT_SET, SetEntry::Ip(ip))
            .map_err(step(format!("disable NAT for {ip}")))?;
        self.nat.remove(&ip);
        if self.config.anti_spoofing {
            self.firewall
                .remove_from_set(GUEST_SET, SetEntry::IpMac(ip, mac))
                .map_err(step(format!("unregister guest {ip}")))?;
            // The element registered (which may name another TAP than the caller's lease).
            let (mac, tap) = self
                .guests
                .get(&ip)
                .map(|(m, t)| (*m, t.clone()))
                .unwrap_or((mac, tap.to_owned()));
            if crate::host::links::check_ifname(&tap).is_ok() {
                let element = PortLease { port: tap, mac, ip };
                self.firewall
                    .update_port_leases(
                        BRIDGE_TABLE,
                        LEASE_SET,
                        &[LeaseChange::Remove(element.clone())],
                    )
                    .map_err(step(format!(
                        "unregister guest {ip} from port {}",
                        element.port
                    )))?;
            }
        }
        // A forgotten guest keeps no egress element (its address goes to the next VM). Last,
        // so its policy holds until nothing else lets it send.
        self.forget_egress(ip)?;
        self.guests.remove(&ip);
        debug!(self.log, "guest unregistered"; "guest" => %ip);
        Ok(())
    }

    fn set_egress(&mut self, interface: Option<String>) -> Result<(), NatError> {
        if let Some(name) = &interface {
            check_ifname("egress", name)?;
            if name == &self.config.bridge {
                return Err(NatError::InvalidConfig {
                    field: "egress",
                    reason: "must not be the bridge".into(),
                });
            }
        }
        self.config.egress = interface;
        if !self.ready {
            return Ok(());
        }
        let desired = self.current_desired();
        let before = self.egress.clone();
        self.reconcile(&desired)?;
        if self.egress != before {
            info!(self.log, "egress interface changed"; "from" => ?before, "to" => ?self.egress);
        }
        Ok(())
    }

    /// Sets `route_localnet` on the bridge, if the bridge exists (without it there is no
    /// guest to reach; the next reconcile after it appears sets it).
    fn set_route_localnet(&mut self, on: bool) -> Result<(), NatError> {
        let bridge = self.config.bridge.clone();
        let exists = self
            .firewall
            .interface_exists(&bridge)
            .map_err(step(format!("look up bridge {bridge}")))?;
        if exists {
            self.firewall
                .set_route_localnet(&bridge, on)
                .map_err(step(format!("set route_localnet on {bridge}")))?;
        }
        Ok(())
    }

    fn teardown(&mut self) -> Result<(), NatError> {
        let current = self.listings()?;
        if let Some(text) = rules::teardown_text(&current) {
            self.firewall
                .restore_rules(&text)
                .map_err(step("remove hearth's iptables chains"))?;
        }
        self.teardown_egress()?;
        self.firewall
            .apply_nft(&rules::bridge_teardown_text())
            .map_err(step("remove hearth's nftables bridge table"))?;
        // Before the table guarding it goes.
        self.set_route_localnet(false)?;
        self.firewall
            .apply_nft(&nft_publish::teardown_text())
            .map_err(step("remove hearth's nftables publish table"))?;
        // Nothing leads guests to them any more.
        self.close_hairpins();
        for set in [NAT_SET, GUEST_SET] {
            for name in [set.to_owned(), rules::temp_set(set)] {
                self.firewall
                    .destroy_set(&name)
                    .map_err(step(format!("destroy ipset {name}")))?;
            }
        }
        if self.enabled_forwarding {
            self.firewall
                .set_ip_forward(false)
                .map_err(step("restore IPv4 forwarding"))?;
            self.enabled_forwarding = false;
        }
        self.ready = false;
        self.published.clear();
        self.nat.clear();
        self.guests.clear();
        self.egress = None;
        info!(self.log, "firewall torn down");
        Ok(())
    }
}

impl Actor for NatActor {
    type Context = Context<Self>;
}

#[cfg(test)]
mod tests;
