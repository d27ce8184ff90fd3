//! `NatActor`'s state and its handlers (messages in `messages.rs`, rule texts in `rules.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use actix::{Actor, Context, Handler};
use slog::{debug, info, warn, Logger};

use super::rules::{self, Listings, GUEST_SET, NAT_SET};
use super::{
    step, validate_desired, EnsureNat, GetStatus, GuestSpec, NatConfig, NatError, NatStatus,
    Reconcile, RegisterGuest, Teardown, UnregisterGuest,
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
    /// Registered leases.
    guests: BTreeMap<Ipv4Addr, MacAddr>,
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
            enabled_forwarding: false,
        })
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
        let egress = self.config.egress.clone().ok_or(NatError::NoEgress)?;
        let exists = self
            .firewall
            .interface_exists(&egress)
            .map_err(step(format!("look up egress interface {egress}")))?;
        if !exists {
            return Err(NatError::EgressMissing { interface: egress });
        }
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
            let text = rules::restore_text(&self.config, &egress, &current);
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
        self.guests = desired.iter().map(|g| (g.ip, g.mac)).collect();
        info!(self.log, "firewall reconciled";
            "egress" => &egress, "guests" => desired.len(), "nat" => self.nat.len());
        Ok(())
    }

    fn ensure_nat(&mut self, msg: &EnsureNat) -> Result<(), NatError> {
        self.config.check_guest(msg.guest_ip)?;
        if !self.ready {
            return Err(NatError::NotReady { op: "change NAT" });
        }
        let entry = SetEntry::Ip(msg.guest_ip);
        if msg.enable {
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

    fn register(&mut self, ip: Ipv4Addr, mac: MacAddr) -> Result<(), NatError> {
        self.config.check_guest(ip)?;
        if !self.ready {
            return Err(NatError::NotReady {
                op: "register a guest",
            });
        }
        if self.config.anti_spoofing {
            self.firewall
                .add_to_set(GUEST_SET, SetEntry::IpMac(ip, mac))
                .map_err(step(format!("register guest {ip} ({mac})")))?;
        }
        self.guests.insert(ip, mac);
        debug!(self.log, "guest registered"; "guest" => %ip, "mac" => %mac);
        Ok(())
    }

    fn unregister(&mut self, ip: Ipv4Addr, mac: MacAddr) -> Result<(), NatError> {
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
        }
        self.guests.remove(&ip);
        debug!(self.log, "guest unregistered"; "guest" => %ip);
        Ok(())
    }

    fn teardown(&mut self) -> Result<(), NatError> {
        let current = self.listings()?;
        if let Some(text) = rules::teardown_text(&current) {
            self.firewall
                .restore_rules(&text)
                .map_err(step("remove hearth's iptables chains"))?;
        }
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
        self.register(msg.lease.guest_ip, msg.lease.mac)
    }
}

impl Handler<UnregisterGuest> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, msg: UnregisterGuest, _: &mut Context<Self>) -> Self::Result {
        self.unregister(msg.lease.guest_ip, msg.lease.mac)
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
            guests: self.guests.clone(),
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
            isolate_guests: true,
            block_guest_to_host: true,
            anti_spoofing: true,
        }
    }

    fn guest(n: u8, nat: bool) -> GuestSpec {
        GuestSpec {
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
            rules::restore_text(&config(), "eth0", &Listings::default())
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
    async fn missing_egress_is_a_clear_error() {
        let (addr, fake) = start(NatConfig {
            egress: None,
            ..config()
        });
        let err = addr
            .send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, NatError::NoEgress));
        assert_eq!(fake.call_count(), 0);

        let (addr, fake) = start(NatConfig {
            egress: Some("wan9".into()),
            ..config()
        });
        let err = addr
            .send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.to_string(), "Egress interface wan9 does not exist");
        assert_eq!(
            fake.state().calls,
            [FakeCall::InterfaceExists("wan9".into())]
        );
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
