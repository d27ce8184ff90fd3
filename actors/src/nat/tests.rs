//! Unit tests of `NatActor` and its config, against the fake firewall.

use super::*;
use crate::host::firewall::fake::{FakeCall, FakeFirewall, FakeOp};
use crate::host::firewall::{LeaseChange, PortLease};
use crate::testing::{guest, ip, lease, nat_config};
use actix::Addr;

fn config() -> NatConfig {
    nat_config("eth0")
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
        .map(SetEntry::ip)
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
        !rules.contains("hearth-nat src -j MASQUERADE") && rules.contains("-j DROP"),
        "{rules}"
    );
    assert_eq!(bridge_texts(&fake).len(), 1);
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

/// The `nft -f` texts of the bridge table (the egress table is applied on its own).
fn bridge_texts(fake: &FakeFirewall) -> Vec<String> {
    fake.applied_nft()
        .into_iter()
        .filter(|t| t.contains("table bridge"))
        .collect()
}

fn port_lease(n: u8, tap: &str, mac: MacAddr) -> PortLease {
    PortLease {
        port: tap.into(),
        mac,
        ip: ip(n),
    }
}

fn leases(fake: &FakeFirewall) -> BTreeSet<PortLease> {
    fake.port_leases(rules::BRIDGE_TABLE, rules::LEASE_SET)
        .unwrap()
}

#[actix::test]
async fn bridge_table_follows_registrations_and_goes_at_teardown() {
    let (addr, fake) = ready(config(), vec![guest(2, false)]).await;
    let table = bridge_texts(&fake).pop().unwrap();
    assert_eq!(
        table,
        rules::bridge_table_text(&config(), &[guest(2, false)])
    );
    let two = port_lease(2, "hth2", MacAddr::for_guest(ip(2)));
    assert!(table.contains(&two.to_string()));
    assert_eq!(leases(&fake), BTreeSet::from([two.clone()]));
    addr.send(RegisterGuest { lease: lease(6) })
        .await
        .unwrap()
        .unwrap();
    // The element goes in over netlink, no `nft` text per guest.
    let six = port_lease(6, "hth6", MacAddr::for_guest(ip(6)));
    assert_eq!(
        fake.applied_nft().len(),
        3,
        "the bridge, publish and egress tables only"
    );
    assert_eq!(
        fake.lease_updates().pop().unwrap(),
        [LeaseChange::Add(six.clone())]
    );
    assert_eq!(leases(&fake), BTreeSet::from([two.clone(), six.clone()]));
    addr.send(UnregisterGuest { lease: lease(6) })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        fake.lease_updates().pop().unwrap(),
        [LeaseChange::Remove(six)]
    );
    assert_eq!(leases(&fake), BTreeSet::from([two]));
    addr.send(Teardown).await.unwrap().unwrap();
    let nft = fake.applied_nft();
    assert_eq!(nft[nft.len() - 2], rules::bridge_teardown_text());
    assert_eq!(
        fake.port_leases(rules::BRIDGE_TABLE, rules::LEASE_SET),
        None
    );
}

#[actix::test]
async fn reregistering_on_another_port_swaps_the_element_in_one_transaction() {
    let (addr, fake) = ready(config(), vec![]).await;
    addr.send(RegisterGuest { lease: lease(6) })
        .await
        .unwrap()
        .unwrap();
    let mut moved = lease(6);
    moved.tap = "hth9".into();
    moved.mac = MacAddr([6, 0, 0, 0, 0, 0x42]);
    addr.send(RegisterGuest {
        lease: moved.clone(),
    })
    .await
    .unwrap()
    .unwrap();
    let old = port_lease(6, "hth6", MacAddr::for_guest(ip(6)));
    let new = port_lease(6, "hth9", moved.mac);
    assert_eq!(
        fake.lease_updates().pop().unwrap(),
        [LeaseChange::Remove(old), LeaseChange::Add(new.clone())]
    );
    assert_eq!(leases(&fake), BTreeSet::from([new.clone()]));
    // The same lease again changes nothing but re-adds its own element.
    addr.send(RegisterGuest { lease: moved })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        fake.lease_updates().pop().unwrap(),
        [LeaseChange::Add(new.clone())]
    );
    assert_eq!(leases(&fake), BTreeSet::from([new]));
}

#[actix::test]
async fn reconcile_after_a_restart_keeps_known_leases_and_drops_stale_ones() {
    let (addr, fake) = ready(config(), vec![guest(2, false)]).await;
    addr.send(RegisterGuest { lease: lease(6) })
        .await
        .unwrap()
        .unwrap();
    // A new actor (hearthd restarted) whose store knows guests 2 and 3, not 6.
    drop(addr);
    let log = Logger::root(slog::Discard, slog::o!());
    let addr = NatActor::new(config(), Box::new(fake.clone()), log)
        .unwrap()
        .start();
    addr.send(Reconcile {
        desired: vec![guest(2, false), guest(3, true)],
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        leases(&fake),
        BTreeSet::from([
            port_lease(2, "hth2", MacAddr::for_guest(ip(2))),
            port_lease(3, "hth3", MacAddr::for_guest(ip(3))),
        ])
    );
}

#[actix::test]
async fn failed_port_binding_undoes_the_registration() {
    let (addr, fake) = ready(config(), vec![]).await;
    fake.fail(FakeOp::UpdatePortLeases, "No such file or directory");
    let err = addr
        .send(RegisterGuest { lease: lease(6) })
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("port hth6"), "{err}");
    assert!(fake.set(GUEST_SET).unwrap().is_empty());
    assert!(leases(&fake).is_empty());
    assert!(addr
        .send(GetStatus)
        .await
        .unwrap()
        .unwrap()
        .guests
        .is_empty());

    // A failed move to another port keeps the guest as it was: old MAC, old element.
    fake.heal();
    addr.send(RegisterGuest { lease: lease(6) })
        .await
        .unwrap()
        .unwrap();
    fake.fail(FakeOp::UpdatePortLeases, "No such file or directory");
    let mut moved = lease(6);
    moved.tap = "hth9".into();
    moved.mac = MacAddr([6, 0, 0, 0, 0, 0x42]);
    addr.send(RegisterGuest { lease: moved })
        .await
        .unwrap()
        .unwrap_err();
    let mac = MacAddr::for_guest(ip(6));
    assert_eq!(
        fake.set(GUEST_SET).unwrap(),
        BTreeSet::from([SetEntry::IpMac(ip(6), mac)])
    );
    assert_eq!(leases(&fake), BTreeSet::from([port_lease(6, "hth6", mac)]));
    let status = addr.send(GetStatus).await.unwrap().unwrap();
    assert_eq!(status.guests, BTreeMap::from([(ip(6), mac)]));
}

#[actix::test]
async fn failed_unbinding_keeps_the_guest_registered() {
    let (addr, fake) = ready(config(), vec![]).await;
    addr.send(RegisterGuest { lease: lease(6) })
        .await
        .unwrap()
        .unwrap();
    fake.fail(FakeOp::UpdatePortLeases, "Device or resource busy");
    let err = addr
        .send(UnregisterGuest { lease: lease(6) })
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("from port hth6"), "{err}");
    // Still registered: a retry of the delete finds it and removes the element then.
    assert_eq!(addr.send(GetStatus).await.unwrap().unwrap().guests.len(), 1);
    fake.heal();
    addr.send(UnregisterGuest { lease: lease(6) })
        .await
        .unwrap()
        .unwrap();
    assert!(leases(&fake).is_empty());
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
                bridge: String::new(),
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
