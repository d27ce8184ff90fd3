//! The NAT switch and DNS name capabilities against the real actors: `NatActor` over the fake
//! firewall (its NAT set inspected), `DnsActor` serving on 127.0.0.1 (queried over UDP).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use actix::{Actor, Addr};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, RecordType};

use super::*;
use crate::dns::{DnsActor, DnsOptions, Start};
use crate::host::firewall::fake::FakeFirewall;
use crate::host::links::fake::FakeLinks;
use crate::lease::MacAddr;
use crate::nat::{NatActor, NatConfig, Reconcile};
use crate::tap_pool::{TapPoolActor, TapPoolConfig};

fn log() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

struct Fixture {
    host: CapabilityHost,
    firewall: FakeFirewall,
    dns_at: SocketAddr,
}

async fn fixture() -> Fixture {
    let firewall = FakeFirewall::new();
    firewall.add_interface("eth0");
    firewall.add_interface("hearth0");
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
    let dns: Addr<DnsActor> = DnsActor::new(DnsOptions::new("vm.internal", vec![]), log())
        .unwrap()
        .start();
    let dns_at = dns
        .send(Start {
            listen: "127.0.0.1:0".parse().unwrap(),
        })
        .await
        .unwrap()
        .unwrap();
    let pool = TapPoolActor::new(
        TapPoolConfig::default(),
        std::rc::Rc::new(FakeLinks::new()),
        log(),
    )
    .unwrap()
    .start();
    Fixture {
        host: CapabilityHost::new(nat, dns, pool),
        firewall,
        dns_at,
    }
}

fn lease(last: u8) -> NetLease {
    let ip = Ipv4Addr::new(172, 31, 240, last);
    NetLease {
        tap: format!("hth{last}"),
        mac: MacAddr::for_guest(ip),
        guest_ip: ip,
        gateway: Ipv4Addr::new(172, 31, 240, 1),
        prefix_len: 24,
    }
}

fn spec(name: &str, nat: bool) -> CreateVm {
    serde_json::from_value(
        serde_json::json!({"name": name, "kernel": "k", "rootfs": "r", "nat": nat}),
    )
    .unwrap()
}

fn nat_set(f: &Fixture) -> Vec<Ipv4Addr> {
    f.firewall
        .set(crate::nat::rules::NAT_SET)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| match e {
            crate::host::firewall::SetEntry::Ip(ip) => Some(ip),
            _ => None,
        })
        .collect()
}

/// The A answers for `name` (a blocking query from a worker thread: the server runs on its
/// own threads, the test's runtime must not block).
async fn resolve(server: SocketAddr, name: &str) -> Vec<Ipv4Addr> {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut msg = Message::new(7, MessageType::Query, OpCode::Query);
        msg.add_query(Query::query(
            Name::from_ascii(&name).unwrap(),
            RecordType::A,
        ));
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket.send_to(&msg.to_vec().unwrap(), server).unwrap();
        let mut buf = [0u8; 4096];
        let (len, _) = socket.recv_from(&mut buf).expect("DNS reply within 5 s");
        Message::from_vec(&buf[..len])
            .unwrap()
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(A(ip)) => Some(*ip),
                _ => None,
            })
            .collect()
    })
    .await
    .unwrap()
}

#[actix::test]
async fn nat_switch_follows_the_spec_and_undoes_itself() {
    let f = fixture().await;
    let (on, off) = (spec("a", true), spec("b", false));
    let (la, lb) = (lease(5), lease(6));
    let view = |spec, lease| VmView {
        name: "x",
        lease: Some(lease),
        spec,
    };
    NatSwitch.booted(&f.host, view(&on, &la)).await.unwrap();
    NatSwitch.booted(&f.host, view(&off, &lb)).await.unwrap();
    assert_eq!(nat_set(&f), vec![la.guest_ip]);

    // Switched at run time: only when the flag changed.
    NatSwitch
        .reconfigure(&f.host, view(&on, &lb), &off)
        .await
        .unwrap();
    assert_eq!(nat_set(&f), vec![la.guest_ip, lb.guest_ip]);
    NatSwitch
        .reconfigure(&f.host, view(&off, &lb), &on)
        .await
        .unwrap();
    assert_eq!(nat_set(&f), vec![la.guest_ip]);

    // The undo leaves nothing, and a second call (a retried stop) is fine.
    NatSwitch.stopped(&f.host, view(&on, &la)).await.unwrap();
    NatSwitch.stopped(&f.host, view(&on, &la)).await.unwrap();
    assert!(nat_set(&f).is_empty());
}

#[actix::test]
async fn nat_switch_needs_a_lease_to_enable() {
    let f = fixture().await;
    let on = spec("a", true);
    let err = NatSwitch
        .booted(
            &f.host,
            VmView {
                name: "a",
                lease: None,
                spec: &on,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CapabilityError::NoLease { .. }), "{err}");
    assert!(nat_set(&f).is_empty());
}

#[actix::test]
async fn dns_name_registers_one_vm_without_touching_the_others() {
    let f = fixture().await;
    let (sa, sb) = (spec("alpha", false), spec("beta", false));
    let (la, lb) = (lease(7), lease(8));
    let a = VmView {
        name: "alpha",
        lease: Some(&la),
        spec: &sa,
    };
    let b = VmView {
        name: "beta",
        lease: Some(&lb),
        spec: &sb,
    };
    assert!(resolve(f.dns_at, "alpha.vm.internal.").await.is_empty());
    DnsName.running(&f.host, a).await.unwrap();
    DnsName.adopted(&f.host, b).await.unwrap();
    assert_eq!(
        resolve(f.dns_at, "alpha.vm.internal.").await,
        vec![la.guest_ip]
    );
    assert_eq!(
        resolve(f.dns_at, "beta.vm.internal.").await,
        vec![lb.guest_ip]
    );

    DnsName.stopping(&f.host, a).await.unwrap();
    DnsName.stopped(&f.host, a).await.unwrap();
    assert!(resolve(f.dns_at, "alpha.vm.internal.").await.is_empty());
    assert_eq!(
        resolve(f.dns_at, "beta.vm.internal.").await,
        vec![lb.guest_ip]
    );
    DnsName.deleted(&f.host, b).await.unwrap();
    assert!(resolve(f.dns_at, "beta.vm.internal.").await.is_empty());
}

#[test]
fn every_vm_gets_egress_nat_switch_publish_and_dns_name() {
    let names: Vec<_> = for_spec(&spec("a", false))
        .iter()
        .map(|c| c.name())
        .collect();
    assert_eq!(names, ["egress", "nat", "publish", "dns-name"]);
}

#[test]
fn errors_map_to_the_supervisors_kinds() {
    let conflict = CapabilityError::Conflict {
        capability: "publish",
        message: "8080/tcp is published by VM \"web\"".into(),
    };
    assert!(matches!(
        SupervisorError::from(conflict),
        SupervisorError::Conflict { message } if message.contains("\"web\"")
    ));
    let no_egress = CapabilityError::Nat {
        capability: "nat",
        source: NatError::NoEgress,
    };
    assert!(matches!(
        SupervisorError::from(no_egress),
        SupervisorError::Unavailable { .. }
    ));
}
