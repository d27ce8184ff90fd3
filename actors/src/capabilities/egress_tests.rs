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
