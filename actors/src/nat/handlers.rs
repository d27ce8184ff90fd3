//! `NatActor`'s state and its handlers (messages in `messages.rs`, rule texts in `rules.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use actix::{Actor, Context, Handler};
use slog::{debug, info, warn, Logger};

use super::rules::{self, Listings, GUEST_SET, NAT_SET};
use super::{
    check_ifname, step, validate_desired, EnsureNat, GetStatus, GuestSpec, NatConfig, NatError,
    NatStatus, Reconcile, RegisterGuest, SetEgress, Teardown, UnregisterGuest,
};
use crate::host::firewall::{Firewall, SetEntry, Table};
use crate::lease::MacAddr;

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
}

impl NatActor {
    /// A NAT actor over `firewall`. Validates the config; touches nothing on the host.
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
            // A guest registered again on another TAP or MAC: its old element goes.
            let old = self.guests.get(&ip).cloned();
            let element = rules::lease_element(tap, mac, ip);
            let mut text = String::new();
            if let Some((old_mac, old_tap)) =
                old.as_ref().filter(|(m, t)| (*m, t.as_str()) != (mac, tap))
            {
                text += &rules::remove_lease_text(&rules::lease_element(old_tap, *old_mac, ip));
            }
            text += &rules::add_lease_text(&element);
            if let Err(e) = self.firewall.apply_nft(&text) {
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
                self.firewall
                    .apply_nft(&rules::remove_lease_text(&rules::lease_element(
                        &tap, mac, ip,
                    )))
                    .map_err(step(format!("unregister guest {ip} from port {tap}")))?;
            }
        }
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

    fn teardown(&mut self) -> Result<(), NatError> {
        let current = self.listings()?;
        if let Some(text) = rules::teardown_text(&current) {
            self.firewall
                .restore_rules(&text)
                .map_err(step("remove hearth's iptables chains"))?;
        }
        self.firewall
            .apply_nft(&rules::bridge_teardown_text())
            .map_err(step("remove hearth's nftables bridge table"))?;
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

impl Handler<Reconcile> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, msg: Reconcile, _: &mut Context<Self>) -> Self::Result {
        self.reconcile(&msg.desired)
    }
}

impl Handler<EnsureNat> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, msg: EnsureNat, _: &mut Context<Self>) -> Self::Result {
        self.ensure_nat(&msg)
    }
}

impl Handler<RegisterGuest> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, msg: RegisterGuest, _: &mut Context<Self>) -> Self::Result {
        self.register(msg.lease.guest_ip, msg.lease.mac, &msg.lease.tap)
    }
}

impl Handler<UnregisterGuest> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, msg: UnregisterGuest, _: &mut Context<Self>) -> Self::Result {
        self.unregister(msg.lease.guest_ip, msg.lease.mac, &msg.lease.tap)
    }
}

impl Handler<SetEgress> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, msg: SetEgress, _: &mut Context<Self>) -> Self::Result {
        self.set_egress(msg.interface)
    }
}

impl Handler<Teardown> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, _: Teardown, _: &mut Context<Self>) -> Self::Result {
        self.teardown()
    }
}

impl Handler<GetStatus> for NatActor {
    type Result = Result<NatStatus, NatError>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        Ok(NatStatus {
            ready: self.ready,
            nat: self.nat.clone(),
            guests: self
                .guests
                .iter()
                .map(|(ip, (mac, _))| (*ip, *mac))
                .collect(),
            egress: self.egress.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::firewall::fake::{FakeCall, FakeFirewall, FakeOp};
    use crate::lease::NetLease;
    use actix::Addr;

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(172, 31, 240, n)
    }

    fn config() -> NatConfig {
        NatConfig {
            bridge: "hearth0".into(),
            cidr: "172.31.240.0/24".parse().unwrap(),
            gateway: ip(1),
            egress: Some("eth0".into()),
            guest_ports: "hth".into(),
            isolate_guests: true,
            block_guest_to_host: true,
            anti_spoofing: true,
        }
    }

    fn guest(n: u8, nat: bool) -> GuestSpec {
        GuestSpec {
            tap: format!("hth{n}"),
            ip: ip(n),
            mac: MacAddr::for_guest(ip(n)),
            nat,
        }
    }

    fn lease(n: u8) -> NetLease {
        NetLease {
            tap: format!("hth{n}"),
            mac: MacAddr::for_guest(ip(n)),
            guest_ip: ip(n),
            gateway: ip(1),
            prefix_len: 24,
        }
    }

    fn start(config: NatConfig) -> (Addr<NatActor>, FakeFirewall) {
        let fake = FakeFirewall::new();
        fake.add_interface("eth0");
        let log = Logger::root(slog::Discard, slog::o!());
        let actor = NatActor::new(config, Box::new(fake.clone()), log).unwrap();
        (actor.start(), fake)
    }

    async fn ready(config: NatConfig, desired: Vec<GuestSpec>) -> (Addr<NatActor>, FakeFirewall) {
        let (addr, fake) = start(config);
        addr.send(Reconcile { desired }).await.unwrap().unwrap();
        (addr, fake)
    }

    fn nat_set(fake: &FakeFirewall) -> BTreeSet<SetEntry> {
        fake.set(NAT_SET).unwrap()
    }

    fn ensure(n: u8, enable: bool) -> EnsureNat {
        EnsureNat {
            guest_ip: ip(n),
            tap: format!("hth{n}"),
            enable,
        }
    }

    #[actix::test]
    async fn reconcile_installs_sets_rules_and_forwarding() {
        let (_addr, fake) = ready(config(), vec![guest(2, true), guest(3, false)]).await;
        assert_eq!(nat_set(&fake), BTreeSet::from([SetEntry::Ip(ip(2))]));
        assert_eq!(
            fake.set(GUEST_SET).unwrap(),
            BTreeSet::from([
                SetEntry::IpMac(ip(2), MacAddr::for_guest(ip(2))),
                SetEntry::IpMac(ip(3), MacAddr::for_guest(ip(3))),
            ])
        );
        assert!(fake.set(&rules::temp_set(NAT_SET)).is_none());
        assert!(fake.state().ip_forward);
        // Forwarding is switched on only once the rules guard the bridge.
        let calls = fake.state().calls.clone();
        let rules_at = calls
            .iter()
            .position(|c| matches!(c, FakeCall::RestoreRules(_)));
        let forward_at = calls
            .iter()
            .position(|c| *c == FakeCall::SetIpForward(true));
        assert!(rules_at.unwrap() < forward_at.unwrap(), "{calls:?}");
        let restored = fake.restored_rules();
        assert_eq!(restored.len(), 1);
        assert_eq!(
            restored[0],
            rules::restore_text(&config(), Some("eth0"), &Listings::default())
        );
    }

    #[actix::test]
    async fn reconcile_replaces_stale_members() {
        let (addr, fake) = ready(config(), vec![guest(2, true), guest(3, true)]).await;
        addr.send(Reconcile {
            desired: vec![guest(3, true), guest(4, false)],
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(nat_set(&fake), BTreeSet::from([SetEntry::Ip(ip(3))]));
        let guests: Vec<Ipv4Addr> = fake
            .set(GUEST_SET)
            .unwrap()
            .iter()
            .map(|e| e.ip())
            .collect();
        assert_eq!(guests, [ip(3), ip(4)]);
    }

    #[actix::test]
    async fn ensure_nat_is_idempotent_and_spawns_nothing() {
        let (addr, fake) = ready(config(), vec![]).await;
        let before = fake.call_count();
        for _ in 0..2 {
            addr.send(ensure(5, true)).await.unwrap().unwrap();
        }
        assert_eq!(nat_set(&fake), BTreeSet::from([SetEntry::Ip(ip(5))]));
        for _ in 0..2 {
            addr.send(ensure(5, false)).await.unwrap().unwrap();
        }
        assert!(nat_set(&fake).is_empty());
        // Only in-process set operations: no rule restore, no listing.
        let calls = fake.state().calls[before..].to_vec();
        assert_eq!(calls.len(), 4);
        assert!(calls
            .iter()
            .all(|c| matches!(c, FakeCall::AddToSet(..) | FakeCall::RemoveFromSet(..))));
    }

    #[actix::test]
    async fn bad_guest_or_early_message_changes_nothing() {
        let (addr, fake) = start(config());
        let err = addr.send(ensure(5, true)).await.unwrap().unwrap_err();
        assert!(matches!(err, NatError::NotReady { .. }), "{err}");
        addr.send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap();
        let before = fake.call_count();
        for bad in [Ipv4Addr::new(10, 0, 0, 5), ip(0), ip(1), ip(255)] {
            let err = addr
                .send(EnsureNat {
                    guest_ip: bad,
                    tap: "hth0".into(),
                    enable: true,
                })
                .await
                .unwrap()
                .unwrap_err();
            assert!(err.to_string().contains(&bad.to_string()), "{err}");
        }
        let err = addr
            .send(Reconcile {
                desired: vec![guest(2, true), guest(2, false)],
            })
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        assert_eq!(fake.call_count(), before);
    }

    #[actix::test]
    async fn without_egress_everything_but_nat_is_installed() {
        let (addr, fake) = start(NatConfig {
            egress: None,
            ..config()
        });
        addr.send(Reconcile {
            desired: vec![guest(2, true)],
        })
        .await
        .unwrap()
        .unwrap();
        let rules = fake.restored_rules().pop().unwrap();
        assert_eq!(
            rules,
            rules::restore_text(&config(), None, &Listings::default())
        );
        assert!(
            !rules.contains("MASQUERADE") && rules.contains("-j DROP"),
            "{rules}"
        );
        assert_eq!(fake.applied_nft().len(), 1);
        // NAT is refused with the reason; turning it off is fine.
        let err = addr.send(ensure(3, true)).await.unwrap().unwrap_err();
        assert!(
            matches!(err, NatError::NoEgress) && err.is_unavailable(),
            "{err}"
        );
        addr.send(ensure(2, false)).await.unwrap().unwrap();
        assert_eq!(addr.send(GetStatus).await.unwrap().unwrap().egress, None);

        // A configured interface that does not exist: the same, naming it.
        let (addr, _fake) = start(NatConfig {
            egress: Some("wan9".into()),
            ..config()
        });
        addr.send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap();
        let err = addr.send(ensure(3, true)).await.unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "NAT needs egress interface wan9, which does not exist"
        );
        assert!(err.is_unavailable());
    }

    #[actix::test]
    async fn set_egress_turns_nat_on_and_keeps_guests() {
        let (addr, fake) = start(NatConfig {
            egress: None,
            ..config()
        });
        addr.send(Reconcile {
            desired: vec![guest(2, true), guest(3, false)],
        })
        .await
        .unwrap()
        .unwrap();
        let err = addr
            .send(SetEgress {
                interface: Some("eth+".into()),
            })
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("`egress`"), "{err}");
        addr.send(SetEgress {
            interface: Some("eth0".into()),
        })
        .await
        .unwrap()
        .unwrap();
        let status = addr.send(GetStatus).await.unwrap().unwrap();
        assert_eq!(status.egress.as_deref(), Some("eth0"));
        assert_eq!(status.nat, BTreeSet::from([ip(2)]));
        assert_eq!(status.guests.len(), 2);
        let rules = fake.restored_rules().pop().unwrap();
        assert!(rules.contains("-o eth0 -m set --match-set hearth-nat src -j MASQUERADE"));
        addr.send(ensure(3, true)).await.unwrap().unwrap();
        assert_eq!(
            nat_set(&fake),
            BTreeSet::from([SetEntry::Ip(ip(2)), SetEntry::Ip(ip(3))])
        );
    }

    #[actix::test]
    async fn bridge_table_follows_registrations_and_goes_at_teardown() {
        let (addr, fake) = ready(config(), vec![guest(2, false)]).await;
        let table = fake.applied_nft().pop().unwrap();
        assert_eq!(
            table,
            rules::bridge_table_text(&config(), &[guest(2, false)])
        );
        assert!(table.contains(&rules::lease_element(
            "hth2",
            MacAddr::for_guest(ip(2)),
            ip(2)
        )));
        addr.send(RegisterGuest { lease: lease(6) })
            .await
            .unwrap()
            .unwrap();
        let element = rules::lease_element("hth6", MacAddr::for_guest(ip(6)), ip(6));
        assert_eq!(
            fake.applied_nft().pop().unwrap(),
            rules::add_lease_text(&element)
        );
        addr.send(UnregisterGuest { lease: lease(6) })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            fake.applied_nft().pop().unwrap(),
            rules::remove_lease_text(&element)
        );
        addr.send(Teardown).await.unwrap().unwrap();
        assert_eq!(
            fake.applied_nft().pop().unwrap(),
            rules::bridge_teardown_text()
        );
    }

    #[actix::test]
    async fn failed_port_binding_undoes_the_registration() {
        let (addr, fake) = ready(config(), vec![]).await;
        fake.fail(FakeOp::ApplyNft, "Could not process rule");
        let err = addr
            .send(RegisterGuest { lease: lease(6) })
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("port hth6"), "{err}");
        assert!(fake.set(GUEST_SET).unwrap().is_empty());
        assert!(addr
            .send(GetStatus)
            .await
            .unwrap()
            .unwrap()
            .guests
            .is_empty());
    }

    #[actix::test]
    async fn failing_rule_install_names_step_and_tool_text() {
        let (addr, fake) = start(config());
        fake.fail(FakeOp::RestoreRules, "Couldn't load match `set'");
        let err = addr
            .send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.to_string(), "Cannot install hearth's iptables chains");
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("Couldn't load match `set'"), "{source}");
        // The sets this first reconcile made are gone again, forwarding untouched.
        assert!(fake.state().sets.is_empty());
        assert!(!fake.state().ip_forward);
        // Not ready: per-guest messages are still refused.
        let err = addr.send(ensure(5, true)).await.unwrap().unwrap_err();
        assert!(matches!(err, NatError::NotReady { .. }));
        fake.heal();
        addr.send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap();
        addr.send(ensure(5, true)).await.unwrap().unwrap();
    }

    #[actix::test]
    async fn failing_set_add_keeps_state() {
        let (addr, fake) = ready(config(), vec![]).await;
        fake.fail(
            FakeOp::AddToSet,
            "Kernel error received: set type not supported",
        );
        let err = addr.send(ensure(5, true)).await.unwrap().unwrap_err();
        assert!(
            err.to_string().contains("enable NAT for 172.31.240.5"),
            "{err}"
        );
        assert!(nat_set(&fake).is_empty());
    }

    #[actix::test]
    async fn register_replaces_mac_and_unregister_removes_everything() {
        let (addr, fake) = ready(config(), vec![]).await;
        let mut l = lease(6);
        addr.send(RegisterGuest { lease: l.clone() })
            .await
            .unwrap()
            .unwrap();
        l.mac = MacAddr([6, 0, 0, 0, 0, 0x42]);
        addr.send(RegisterGuest { lease: l.clone() })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            fake.set(GUEST_SET).unwrap(),
            BTreeSet::from([SetEntry::IpMac(ip(6), l.mac)])
        );
        addr.send(ensure(6, true)).await.unwrap().unwrap();
        for _ in 0..2 {
            addr.send(UnregisterGuest { lease: l.clone() })
                .await
                .unwrap()
                .unwrap();
        }
        assert!(fake.set(GUEST_SET).unwrap().is_empty());
        assert!(nat_set(&fake).is_empty());
        let status = addr.send(GetStatus).await.unwrap().unwrap();
        assert_eq!(
            status,
            NatStatus {
                ready: true,
                egress: Some("eth0".into()),
                ..NatStatus::default()
            }
        );
    }

    #[actix::test]
    async fn status_mirrors_what_was_put_on_the_host() {
        let (addr, _fake) = start(config());
        assert_eq!(
            addr.send(GetStatus).await.unwrap().unwrap(),
            NatStatus::default()
        );
        addr.send(Reconcile {
            desired: vec![guest(2, true), guest(3, false)],
        })
        .await
        .unwrap()
        .unwrap();
        addr.send(ensure(3, true)).await.unwrap().unwrap();
        addr.send(ensure(2, false)).await.unwrap().unwrap();
        let status = addr.send(GetStatus).await.unwrap().unwrap();
        assert!(status.ready);
        assert_eq!(status.nat, BTreeSet::from([ip(3)]));
        assert_eq!(
            status.guests.keys().copied().collect::<Vec<_>>(),
            [ip(2), ip(3)]
        );
        addr.send(Teardown).await.unwrap().unwrap();
        assert_eq!(
            addr.send(GetStatus).await.unwrap().unwrap(),
            NatStatus::default()
        );
    }

    #[actix::test]
    async fn without_anti_spoofing_the_guest_set_goes_away() {
        let (addr, fake) = ready(config(), vec![guest(2, false)]).await;
        assert!(fake.set(GUEST_SET).is_some());
        drop(addr);
        let log = Logger::root(slog::Discard, slog::o!());
        let c = NatConfig {
            anti_spoofing: false,
            ..config()
        };
        let addr = NatActor::new(c, Box::new(fake.clone()), log)
            .unwrap()
            .start();
        addr.send(Reconcile {
            desired: vec![guest(2, false)],
        })
        .await
        .unwrap()
        .unwrap();
        assert!(fake.set(GUEST_SET).is_none());
        addr.send(RegisterGuest { lease: lease(7) })
            .await
            .unwrap()
            .unwrap();
        assert!(fake.set(GUEST_SET).is_none());
    }

    #[actix::test]
    async fn teardown_removes_chains_sets_and_forwarding() {
        let (addr, fake) = ready(config(), vec![guest(2, true)]).await;
        fake.state().listings.insert(
            Table::Filter,
            "-P FORWARD ACCEPT\n-N HEARTH-FORWARD\n-A FORWARD -j HEARTH-FORWARD\n".into(),
        );
        addr.send(Teardown).await.unwrap().unwrap();
        let last = fake.restored_rules().pop().unwrap();
        assert_eq!(
            last,
            "*filter\n-D FORWARD -j HEARTH-FORWARD\n-F HEARTH-FORWARD\n-X HEARTH-FORWARD\nCOMMIT\n"
        );
        assert!(fake.state().sets.is_empty());
        assert!(!fake.state().ip_forward);
        let err = addr.send(ensure(2, true)).await.unwrap().unwrap_err();
        assert!(matches!(err, NatError::NotReady { .. }));
        // Again, with nothing left: no rule text to apply, still fine.
        fake.state().listings.clear();
        let restores = fake.restored_rules().len();
        addr.send(Teardown).await.unwrap().unwrap();
        assert_eq!(fake.restored_rules().len(), restores);
    }
}
