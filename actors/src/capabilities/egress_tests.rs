//! The egress capability against the real `NatActor` over the fake firewall (its egress sets
//! inspected) and a `DnsActor` (whose pattern check refuses what the firewall accepted).

use std::net::Ipv4Addr;

use actix::Actor;
use hearth_proto::api::CreateVm;

use super::*;
use crate::capabilities::{Capability, CapabilityHost, VmView};
use crate::dns::{DnsActor, DnsOptions};
use crate::host::firewall::fake::FakeFirewall;
use crate::host::firewall::nft_egress::EgressElement;
use crate::host::links::fake::FakeLinks;
use crate::lease::MacAddr;
use crate::nat::{NatActor, NatConfig, Reconcile};
use crate::tap_pool::{TapPoolActor, TapPoolConfig};

fn log() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

async fn host() -> (CapabilityHost, FakeFirewall) {
    let firewall = FakeFirewall::new();
    firewall.add_interface("eth0");
    let nat = NatActor::new(
        NatConfig {
            bridge: "hearth0".into(),
            cidr: "172.31.240.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 31, 240, 1),
            egress: Some("eth0".into()),
            guest_ports: "hth".into(),
            isolate_guests: true,
            block_guest_to_host: true,
            anti_spoofing: false,
        },
        Box::new(firewall.clone()),
        log(),
    )
    .unwrap()
    .start();
    nat.send(Reconcile { desired: vec![] })
        .await
        .unwrap()
        .unwrap();
    let dns = DnsActor::new(DnsOptions::new("vm.internal", vec![]), log())
        .unwrap()
        .start();
    let pool = TapPoolActor::new(
        TapPoolConfig::default(),
        std::rc::Rc::new(FakeLinks::new()),
        log(),
    )
    .unwrap()
    .start();
    (CapabilityHost::new(nat, dns, pool), firewall)
}

fn lease() -> NetLease {
    let ip = Ipv4Addr::new(172, 31, 240, 5);
    NetLease {
        tap: "hth5".into(),
        mac: MacAddr::for_guest(ip),
        guest_ip: ip,
        gateway: Ipv4Addr::new(172, 31, 240, 1),
        prefix_len: 24,
    }
}

fn spec(egress: serde_json::Value) -> CreateVm {
    serde_json::from_value(
        serde_json::json!({"name": "job", "kernel": "k", "rootfs": "r", "egress": egress}),
    )
    .unwrap()
}

fn guest_elements(fw: &FakeFirewall) -> usize {
    fw.state()
        .egress
        .values()
        .flatten()
        .filter(|e| {
            matches!(
                e,
                EgressElement::Guest(_) | EgressElement::Net(..) | EgressElement::Port(..)
            )
        })
        .count()
}

#[actix::test]
async fn deny_applies_from_booted_until_stopped_and_follows_reconfigure() {
    let (host, fw) = host().await;
    let lease = lease();
    let deny = spec(
        serde_json::json!({"mode": "deny", "allow": ["10.20.0.0/16", "10.30.0.0/16:443"],
        "allow_domains": ["*.pypi.org"]}),
    );
    let allow = spec(serde_json::json!({"mode": "allow"}));
    let view = |spec| VmView {
        name: "job",
        lease: Some(&lease),
        spec,
    };
    // Allow mode touches nothing.
    Egress.booted(&host, view(&allow)).await.unwrap();
    assert_eq!(guest_elements(&fw), 0);
    // deny + denied + one net + a port for TCP and UDP.
    Egress.booted(&host, view(&deny)).await.unwrap();
    assert_eq!(guest_elements(&fw), 5);
    // Adopting again is idempotent.
    Egress.adopted(&host, view(&deny)).await.unwrap();
    assert_eq!(guest_elements(&fw), 5);
    // At run time: back to allow, and to deny again.
    Egress
        .reconfigure(&host, view(&allow), &deny)
        .await
        .unwrap();
    assert_eq!(guest_elements(&fw), 0);
    Egress
        .reconfigure(&host, view(&deny), &allow)
        .await
        .unwrap();
    assert_eq!(guest_elements(&fw), 5);
    Egress.stopped(&host, view(&deny)).await.unwrap();
    assert_eq!(guest_elements(&fw), 0);
    // Without a lease a deny policy cannot be applied: said, not ignored.
    let no_lease = VmView {
        name: "job",
        lease: None,
        spec: &deny,
    };
    let err = Egress.booted(&host, no_lease).await.unwrap_err();
    assert!(matches!(err, CapabilityError::NoLease { .. }), "{err}");
}

#[actix::test]
async fn a_pattern_dns_refuses_puts_the_firewall_back() {
    let (host, fw) = host().await;
    let lease = lease();
    // Not valid per the API, as a corrupt store could hold it: DNS refuses it.
    let mut bad = spec(serde_json::json!({"mode": "deny", "allow": ["10.0.0.0/8"]}));
    if let Some(p) = bad.egress.as_mut() {
        p.allow_domains = vec!["bad..name".into()];
    }
    let view = VmView {
        name: "job",
        lease: Some(&lease),
        spec: &bad,
    };
    let err = Egress.booted(&host, view).await.unwrap_err();
    assert!(matches!(err, CapabilityError::Dns { .. }), "{err}");
    assert_eq!(guest_elements(&fw), 0, "firewall put back");
}

/// Whether the guest has NAT or a published port while the firewall holds no deny policy
/// for it: the moment a deny-mode guest must never have.
async fn open_without_policy(host: &CapabilityHost, fw: &FakeFirewall, guest: Ipv4Addr) -> bool {
    let nat = fw
        .set(crate::nat::rules::NAT_SET)
        .unwrap_or_default()
        .contains(&crate::host::firewall::SetEntry::Ip(guest));
    let published = host
        .nat()
        .send(crate::nat::ListPublished)
        .await
        .unwrap()
        .iter()
        .any(|p| p.guest_ip == guest);
    let denied = fw
        .state()
        .egress
        .get(crate::nat::egress::DENY_SET)
        .is_some_and(|s| s.contains(&EgressElement::Guest(guest)));
    (nat || published) && !denied
}

#[actix::test]
async fn a_deny_mode_guest_never_has_nat_or_ports_without_its_policy() {
    let (host, fw) = host().await;
    let lease = lease();
    let mut deny = spec(serde_json::json!({"mode": "deny", "allow": ["10.20.0.0/16"]}));
    deny.nat = true;
    deny.publish = vec!["18080:80".parse().unwrap()];
    let view = VmView {
        name: "job",
        lease: Some(&lease),
        spec: &deny,
    };
    let caps = crate::capabilities::for_spec(&deny);
    // Setup in registry order (the sagas' `booted`/`restored`/`adopted`)...
    for cap in &caps {
        cap.booted(&host, view).await.unwrap();
        assert!(
            !open_without_policy(&host, &fw, lease.guest_ip).await,
            "after {} booted",
            cap.name()
        );
    }
    assert!(guest_elements(&fw) > 0 && fw.set(crate::nat::rules::NAT_SET).is_some());
    // ...teardown and undo in reverse (`supervisor::hooks::teardown`, the saga's undo stack).
    for cap in caps.iter().rev() {
        cap.stopping(&host, view).await.unwrap();
        cap.stopped(&host, view).await.unwrap();
        assert!(
            !open_without_policy(&host, &fw, lease.guest_ip).await,
            "after {} stopped",
            cap.name()
        );
    }
    assert_eq!(guest_elements(&fw), 0);
}
