//! Published ports with real packets (privileged): `NatActor` over the real firewall in a
//! namespace standing for the host (bridge `hearth0`, uplink `wan0`), an "outside" namespace
//! on the uplink, and two guests on the bridge (each its own namespace on a veth port, as a
//! TAP would be). A TCP server in guest 5 answers with the peer address it saw. Checked for
//! both iptables flavours: the published port answers from outside, from the host itself and
//! from the other guest through the host's address (hairpin, masqueraded); nothing else of the
//! guest is reachable; a host socket's port is refused naming it; a `Reconcile` keeps the
//! ports; unpublishing and teardown leave no rule or map element behind.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

use actix::{Actor, Addr};
use common::NetNs;
use hearth_actors::host::firewall::linux::{IptablesFlavor, LinuxFirewall};
use hearth_actors::host::firewall::{nft_publish, Firewall, PublishChange, PublishElement};
use hearth_actors::lease::MacAddr;
use hearth_actors::nat::{
    GuestSpec, NatActor, NatConfig, NatError, PublishPorts, Reconcile, Teardown, UnpublishPorts,
};
use hearth_proto::api_publish::PortMapping;
use hearth_testkit::guest::PeerEchoServer;

const FLAVORS: [IptablesFlavor; 2] = [IptablesFlavor::Nft, IptablesFlavor::Legacy];
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 31, 240, 1);

fn guest_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 31, 240, n)
}

fn config() -> NatConfig {
    NatConfig {
        bridge: "hearth0".into(),
        cidr: "172.31.240.0/24".parse().unwrap(),
        gateway: GATEWAY,
        egress: Some("wan0".into()),
        guest_ports: "hth".into(),
        isolate_guests: true,
        block_guest_to_host: true,
        anti_spoofing: false,
    }
}

/// The host, the outside and guests 5 and 6.
struct World {
    host: NetNs,
    outside: NetNs,
    guests: Vec<NetNs>,
}

fn world() -> World {
    let host = NetNs::new("hpub");
    let outside = NetNs::new("hpubo");
    common::veth(
        &host,
        "wan0",
        "10.98.0.1/24",
        &outside,
        "up0",
        "10.98.0.2/24",
    );
    // So that the outside could address the guests directly, if the host let it.
    outside.exec_ok(&["ip", "route", "add", "172.31.240.0/24", "via", "10.98.0.1"]);
    host.exec_ok(&["ip", "link", "add", "hearth0", "type", "bridge"]);
    host.exec_ok(&["ip", "addr", "add", "172.31.240.1/24", "dev", "hearth0"]);
    host.exec_ok(&["ip", "link", "set", "hearth0", "up"]);
    let guests = [5u8, 6]
        .iter()
        .map(|n| {
            let g = NetNs::new("hpubg");
            let port = format!("hth{n}");
            host.exec_ok(&[
                "ip",
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                g.name(),
            ]);
            host.exec_ok(&["ip", "link", "set", &port, "master", "hearth0", "up"]);
            g.exec_ok(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", guest_ip(*n)),
                "dev",
                "eth0",
            ]);
            g.exec_ok(&["ip", "link", "set", "eth0", "up"]);
            g.exec_ok(&["ip", "route", "add", "default", "via", "172.31.240.1"]);
            g
        })
        .collect();
    World {
        host,
        outside,
        guests,
    }
}

/// Connects from `ns` to `to`, sends a line and answers what the server said (the peer it
/// saw), or the error.
fn ask(ns: &NetNs, to: SocketAddr) -> Result<String, String> {
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(1500))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"hello").map_err(|e| e.to_string())?;
        s.shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    })
}

fn peer_ip(answer: &str) -> Ipv4Addr {
    let peer = answer
        .strip_prefix("peer=")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected answer {answer:?}"));
    match peer.parse::<SocketAddr>().unwrap() {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(a) => panic!("IPv6 peer {a}"),
    }
}

fn at(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

/// The elements of hearth's nftables publish maps, as `nft` lists them
/// (`tcp . 8080 : 172.31.240.5 . 80`); none when the table is absent.
fn published_elements(ns: &NetNs) -> Vec<String> {
    let out = ns.exec(&["nft", "list", "table", "ip", "hearth-publish"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut elements = Vec::new();
    let mut rest = listing.as_str();
    while let Some(at) = rest.find("elements = {") {
        rest = &rest[at + "elements = {".len()..];
        let end = rest.find('}').expect("an element list ends");
        elements.extend(
            rest[..end]
                .split(',')
                .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|e| !e.is_empty()),
        );
        rest = &rest[end..];
    }
    elements
}

fn start(flavor: IptablesFlavor) -> Addr<NatActor> {
    NatActor::new(
        config(),
        Box::new(LinuxFirewall::new(flavor)),
        common::test_logger(),
    )
    .unwrap()
    .start()
}

fn desired() -> Vec<GuestSpec> {
    [5u8, 6]
        .iter()
        .map(|n| GuestSpec {
            tap: format!("hth{n}"),
            ip: guest_ip(*n),
            mac: MacAddr::for_guest(guest_ip(*n)),
            nat: false,
        })
        .collect()
}

fn mapping(s: &str) -> PortMapping {
    s.parse().unwrap()
}

#[test]
fn a_published_port_answers_from_outside_the_host_and_other_guests_and_nothing_else_does() {
    require_privileged!();
    for flavor in FLAVORS {
        let w = world();
        let web = PeerEchoServer::start(&w.guests[0], SocketAddrV4::new(guest_ip(5), 80));
        let _ssh = PeerEchoServer::start(&w.guests[0], SocketAddrV4::new(guest_ip(5), 22));
        let w = &w;
        w.host.block_on(move || async move {
            let nat = start(flavor);
            nat.send(Reconcile { desired: desired() })
                .await
                .unwrap()
                .unwrap();
            // Before publishing, the outside reaches nothing of the guest.
            assert!(ask(&w.outside, at(HOST_IP, 8080)).is_err(), "{flavor:?}");
            assert!(ask(&w.outside, at(guest_ip(5), 80)).is_err(), "{flavor:?}");

            nat.send(PublishPorts {
                vm: "web".into(),
                guest_ip: guest_ip(5),
                mappings: vec![mapping("8080:80")],
            })
            .await
            .unwrap()
            .unwrap();

            // From outside: DNATed, the client's own address seen.
            let answer = ask(&w.outside, at(HOST_IP, 8080)).expect("from outside");
            assert_eq!(peer_ip(&answer), OUTSIDE_IP, "{answer}");
            assert!(answer.ends_with("got=hello"), "{answer}");
            // From the host itself, to its own address.
            let answer = ask(&w.host, at(HOST_IP, 8080)).expect("from the host");
            assert_eq!(peer_ip(&answer), HOST_IP, "{answer}");
            // From the other guest through the host's address: hairpin, masqueraded to the
            // gateway so the answer comes back through the host.
            let answer = ask(&w.guests[1], at(HOST_IP, 8080)).expect("hairpin");
            assert_eq!(peer_ip(&answer), GATEWAY, "{answer}");
            // Nothing else of the guest: not its other port, not the guest address directly,
            // not another host port.
            assert!(ask(&w.outside, at(guest_ip(5), 22)).is_err());
            assert!(ask(&w.outside, at(guest_ip(5), 80)).is_err());
            assert!(ask(&w.outside, at(HOST_IP, 8081)).is_err());
            assert!(
                ask(&w.guests[1], at(guest_ip(5), 80)).is_err(),
                "isolation stays"
            );

            // A port a host socket holds is refused, naming it; nothing is added.
            let held = w.host.run(|| TcpListener::bind("0.0.0.0:9000").unwrap());
            let err = nat
                .send(PublishPorts {
                    vm: "db".into(),
                    guest_ip: guest_ip(6),
                    mappings: vec![mapping("9000:80")],
                })
                .await
                .unwrap()
                .unwrap_err();
            assert!(
                matches!(&err, NatError::PortConflict { owner, .. } if owner.contains("socket")),
                "{err}"
            );
            drop(held);
            assert_eq!(published_elements(&w.host).len(), 1);

            // A Reconcile (hearthd's set-up) keeps the published port.
            nat.send(Reconcile { desired: desired() })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(published_elements(&w.host).len(), 1);
            ask(&w.outside, at(HOST_IP, 8080)).expect("after reconcile");

            // Unpublished: gone from the kernel, and the port no longer answers.
            nat.send(UnpublishPorts {
                vm: "web".into(),
                mappings: None,
            })
            .await
            .unwrap()
            .unwrap();
            assert!(published_elements(&w.host).is_empty());
            assert!(ask(&w.outside, at(HOST_IP, 8080)).is_err());

            nat.send(Teardown).await.unwrap().unwrap();
            let nat_table = w
                .host
                .exec_ok(&[flavor.iptables(), "-w", "-t", "nat", "-S"]);
            assert!(!nat_table.contains("HEARTH"), "{flavor:?}: {nat_table}");
            let tables = w.host.exec_ok(&["nft", "list", "tables"]);
            assert!(!tables.contains("hearth-publish"), "{flavor:?}: {tables}");
        });
        drop(web);
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.join(": ")
}

/// The netlink encoding of map elements, checked against the kernel and `nft`'s own reading
/// of them: added and removed as one transaction each, removing an absent one is fine, a
/// refused batch applies nothing, and a missing table is named with the kernel's reason.
#[test]
fn map_elements_go_in_and_out_over_netlink_all_or_nothing() {
    require_privileged!();
    let owner = NetNs::new("hpubm");
    let ns = &owner;
    ns.run(|| {
        let mut fw = LinuxFirewall::new(IptablesFlavor::Nft);
        let element = |m: &str, n: u8| PublishElement {
            mapping: mapping(m),
            guest_ip: guest_ip(n),
        };
        // No table yet: named, with the kernel's reason, nothing half-done.
        let err = fw
            .update_published(&[PublishChange::Add(element("8080:80", 5))])
            .unwrap_err();
        let text = error_chain(&err);
        assert!(
            text.contains("ip hearth-publish") && text.contains("No such file"),
            "{text}"
        );
        fw.apply_nft(&nft_publish::table_text(&[])).unwrap();
        let (any, addr) = (element("8080:80", 5), element("10.0.0.1:5353:53/udp", 6));
        fw.update_published(&[PublishChange::Add(any), PublishChange::Add(addr)])
            .unwrap();
        let mut listed = published_elements(ns);
        listed.sort();
        assert_eq!(
            listed,
            [
                "10.0.0.1 . udp . 5353 : 172.31.240.6 . 53",
                "tcp . 8080 : 172.31.240.5 . 80"
            ]
        );
        // The same key to another guest in one batch with a new element: refused, and the
        // new element is not there either.
        let err = fw
            .update_published(&[
                PublishChange::Add(element("9000:90", 5)),
                PublishChange::Add(element("8080:81", 7)),
            ])
            .unwrap_err();
        assert!(error_chain(&err).contains("add tcp . 8080"), "{err}");
        assert_eq!(published_elements(ns).len(), 2);
        // Removing one present and one absent element.
        fw.update_published(&[
            PublishChange::Remove(any),
            PublishChange::Remove(element("7000:70", 5)),
        ])
        .unwrap();
        assert_eq!(
            published_elements(ns),
            ["10.0.0.1 . udp . 5353 : 172.31.240.6 . 53"]
        );
        fw.apply_nft(&nft_publish::teardown_text()).unwrap();
        let tables = ns.exec_ok(&["nft", "list", "tables"]);
        assert!(!tables.contains("hearth-publish"), "{tables}");
    });
}
