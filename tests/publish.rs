//! Published ports with real packets (privileged): `NatActor` over the real firewall in a
//! namespace standing for the host (bridge `hearth0`, uplink `wan0`), an "outside" namespace
//! on the uplink, and two guests on the bridge (each its own namespace on a veth port, as a
//! TAP would be). A TCP server in guest 5 answers with the peer address it saw. Checked for
//! both iptables flavours: the published port answers from outside, from the host itself and
//! from the other guest through the host's address (hairpin, via hearth's proxy); nothing else of the
//! guest is reachable; a host socket's port is refused naming it; a `Reconcile` keeps the
//! ports; unpublishing and teardown leave no rule or map element behind. The same for UDP
//! (a guest echo answering with the peer it saw, so the answer's way back is checked too).
//! Ports on 127.0.0.1 (and every-address ports asked for at 127.0.0.1) answer from the host
//! only, and no guest reaches the host's loopback through the bridge.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use actix::{Actor, Addr};
use common::publish_maps::{hairpin_elements, published_elements};
use common::NetNs;
use hearth_actors::host::firewall::linux::{IptablesFlavor, LinuxFirewall};
use hearth_actors::host::firewall::{nft_publish, Firewall, PublishChange, PublishElement};
use hearth_actors::lease::MacAddr;
use hearth_actors::nat::{
    GuestSpec, NatActor, NatConfig, NatError, PublishPorts, Reconcile, Teardown, UnpublishPorts,
};
use hearth_proto::api_publish::PortMapping;
use hearth_testkit::bridge_world::{guest_ip, BridgeWorld, GATEWAY, HOST_IP, OUTSIDE_IP};
use hearth_testkit::guest::PeerEchoServer;

const FLAVORS: [IptablesFlavor; 2] = [IptablesFlavor::Nft, IptablesFlavor::Legacy];

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

/// Guests 5 and 6 on hearth's bridge, not isolated (hearth's TAP pool isolates them; these
/// tests check the firewall alone, and `tests/e2e_publish_packets.rs` the isolated ports).
fn world() -> BridgeWorld {
    BridgeWorld::new("hpub", &[5, 6], false)
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

/// Sends a datagram from `ns` to `to` and answers the reply (the peer the server saw), or the
/// error (a timeout when nothing came back).
fn ask_udp(ns: &NetNs, to: SocketAddr) -> Result<String, String> {
    ns.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .map_err(|e| e.to_string())?;
        s.send_to(b"hello", to).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 512];
        let (n, _) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// A UDP server in a namespace answering each datagram with `peer=<source> got=<payload>`.
struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    fn start(ns: &NetNs, addr: SocketAddrV4) -> Self {
        let socket = ns
            .run(move || UdpSocket::bind(addr))
            .expect("bind UDP echo");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !halt.load(Ordering::SeqCst) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let answer = format!("peer={from} got={}", String::from_utf8_lossy(&buf[..n]));
                    let _ = socket.send_to(answer.as_bytes(), from);
                }
            }
        });
        UdpEcho {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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

/// A set-up `NatActor` (the system's iptables) where web (guest 5) publishes `port`.
async fn web_publishing(port: &str) -> Addr<NatActor> {
    let nat = start(IptablesFlavor::System);
    nat.send(Reconcile { desired: desired() })
        .await
        .unwrap()
        .unwrap();
    nat.send(PublishPorts {
        vm: "web".into(),
        guest_ip: guest_ip(5),
        mappings: vec![mapping(port)],
    })
    .await
    .unwrap()
    .unwrap();
    nat
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
            // From the other guest through the host's address: hairpin, through hearth's
            // proxy on the gateway.
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
            assert_eq!(hairpin_elements(&w.host).len(), 1, "8080's hairpin proxy");

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
            assert!(hairpin_elements(&w.host).is_empty());
            assert!(ask(&w.outside, at(HOST_IP, 8080)).is_err());
            assert!(
                ask(&w.guests[1], at(HOST_IP, 8080)).is_err(),
                "hairpin after unpublish"
            );

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
        fw.apply_nft(&nft_publish::table_text("hearth0", &[], &[]))
            .unwrap();
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

#[test]
fn a_published_udp_port_answers_from_outside_the_host_and_other_guests_and_nothing_else_does() {
    require_privileged!();
    for flavor in FLAVORS {
        let w = world();
        let _dns = UdpEcho::start(&w.guests[0], SocketAddrV4::new(guest_ip(5), 53));
        let _other = UdpEcho::start(&w.guests[0], SocketAddrV4::new(guest_ip(5), 54));
        let w = &w;
        w.host.block_on(move || async move {
            let nat = start(flavor);
            nat.send(Reconcile { desired: desired() })
                .await
                .unwrap()
                .unwrap();
            assert!(
                ask_udp(&w.outside, at(HOST_IP, 5353)).is_err(),
                "{flavor:?}"
            );

            nat.send(PublishPorts {
                vm: "web".into(),
                guest_ip: guest_ip(5),
                mappings: vec![mapping("5353:53/udp"), mapping("10.98.0.1:5354:53/udp")],
            })
            .await
            .unwrap()
            .unwrap();

            // From outside, on every address and on the one named: the client's own address
            // seen, and the answer comes back.
            for port in [5353, 5354] {
                let answer = ask_udp(&w.outside, at(HOST_IP, port))
                    .unwrap_or_else(|e| panic!("{flavor:?}: from outside to {port}: {e}"));
                assert_eq!(peer_ip(&answer), OUTSIDE_IP, "{answer}");
                assert!(answer.ends_with("got=hello"), "{answer}");
            }
            // From the host itself, to its own address.
            let answer = ask_udp(&w.host, at(HOST_IP, 5353)).expect("from the host");
            assert_eq!(peer_ip(&answer), HOST_IP, "{answer}");
            // From the other guest through the host's address: hairpin, through hearth's
            // proxy on the gateway; the answer comes from the address asked.
            let answer = ask_udp(&w.guests[1], at(HOST_IP, 5353)).expect("hairpin");
            assert_eq!(peer_ip(&answer), GATEWAY, "{answer}");
            // Nothing else: not the guest's other port, not the guest directly, not the
            // same port over TCP, not another host port.
            assert!(ask_udp(&w.outside, at(guest_ip(5), 54)).is_err());
            assert!(ask_udp(&w.outside, at(guest_ip(5), 53)).is_err());
            assert!(ask_udp(&w.outside, at(HOST_IP, 5355)).is_err());
            assert!(ask(&w.outside, at(HOST_IP, 5353)).is_err());
            assert!(
                ask_udp(&w.guests[1], at(guest_ip(5), 53)).is_err(),
                "isolation stays"
            );

            // Unpublished: gone from the kernel, and the port no longer answers.
            nat.send(UnpublishPorts {
                vm: "web".into(),
                mappings: None,
            })
            .await
            .unwrap()
            .unwrap();
            assert!(published_elements(&w.host).is_empty());
            assert!(hairpin_elements(&w.host).is_empty());
            assert!(ask_udp(&w.outside, at(HOST_IP, 5353)).is_err());
            assert!(
                ask_udp(&w.guests[1], at(HOST_IP, 5353)).is_err(),
                "hairpin after unpublish"
            );
            nat.send(Teardown).await.unwrap().unwrap();
        });
    }
}

/// Guest 6 sends to the host's 127.0.0.1 through the bridge, as a hostile guest could: its
/// own loopback route is replaced by one through the gateway, and its `eth0` may carry
/// loopback destinations.
fn route_loopback_through_the_gateway(guest: &NetNs) {
    guest.exec_ok(&["sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1"]);
    guest.exec_ok(&[
        "ip",
        "route",
        "add",
        "127.0.0.1/32",
        "via",
        "172.31.240.1",
        "table",
        "100",
    ]);
    guest.exec_ok(&[
        "ip",
        "rule",
        "add",
        "to",
        "127.0.0.1",
        "lookup",
        "100",
        "pref",
        "10",
    ]);
    guest.exec_ok(&["ip", "rule", "del", "pref", "0"]);
    guest.exec_ok(&["ip", "rule", "add", "lookup", "local", "pref", "100"]);
}

fn route_localnet(ns: &NetNs, dev: &str) -> String {
    ns.exec_ok(&[
        "sysctl",
        "-n",
        &format!("net.ipv4.conf.{dev}.route_localnet"),
    ])
    .trim()
    .to_owned()
}

#[test]
fn ports_on_the_loopback_answer_from_the_host_only_and_guests_never_reach_its_loopback() {
    require_privileged!();
    for flavor in FLAVORS {
        let w = world();
        let _web = PeerEchoServer::start(&w.guests[0], SocketAddrV4::new(guest_ip(5), 80));
        let _dns = UdpEcho::start(&w.guests[0], SocketAddrV4::new(guest_ip(5), 53));
        // A service on the host's loopback, which no guest may reach.
        let _local = PeerEchoServer::start(&w.host, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7000));
        route_loopback_through_the_gateway(&w.guests[1]);
        let w = &w;
        w.host.block_on(move || async move {
            // With guests allowed to reach the host, so only the martian drop stands between
            // guest 6 and the host's loopback.
            let open = NatConfig {
                block_guest_to_host: false,
                ..config()
            };
            let nat = NatActor::new(
                open,
                Box::new(LinuxFirewall::new(flavor)),
                common::test_logger(),
            )
            .unwrap()
            .start();
            nat.send(Reconcile { desired: desired() })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(route_localnet(&w.host, "hearth0"), "1", "{flavor:?}");
            nat.send(PublishPorts {
                vm: "web".into(),
                guest_ip: guest_ip(5),
                mappings: vec![
                    mapping("127.0.0.1:8080:80"),
                    mapping("127.0.0.1:5353:53/udp"),
                    mapping("8081:80"),
                ],
            })
            .await
            .unwrap()
            .unwrap();

            // From the host: the loopback ports (TCP and UDP), and a port on every address
            // asked for at 127.0.0.1, masqueraded to the gateway so the guest can answer.
            for port in [8080, 8081] {
                let answer = ask(&w.host, at(Ipv4Addr::LOCALHOST, port))
                    .unwrap_or_else(|e| panic!("{flavor:?}: host -> 127.0.0.1:{port}: {e}"));
                assert_eq!(peer_ip(&answer), GATEWAY, "{answer}");
                assert!(answer.ends_with("got=hello"), "{answer}");
            }
            let answer =
                ask_udp(&w.host, at(Ipv4Addr::LOCALHOST, 5353)).expect("UDP from the host");
            assert_eq!(peer_ip(&answer), GATEWAY, "{answer}");
            // A loopback port is the host's only: not from outside, not from a guest.
            assert!(ask(&w.outside, at(HOST_IP, 8080)).is_err());
            assert!(ask_udp(&w.outside, at(HOST_IP, 5353)).is_err());
            assert!(ask(&w.guests[1], at(HOST_IP, 8080)).is_err());
            ask(&w.outside, at(HOST_IP, 8081)).expect("the every-address port from outside");

            // Guest 6 aims at the host's loopback through the bridge: dropped.
            assert!(
                ask(&w.guests[1], at(Ipv4Addr::LOCALHOST, 7000)).is_err(),
                "{flavor:?}: a guest reached the host's loopback"
            );
            // Control: without hearth's drop, the same connection does get through (so the
            // check above can fail).
            w.host
                .exec_ok(&["nft", "delete", "chain", "ip", "hearth-publish", "localnet"]);
            ask(&w.guests[1], at(Ipv4Addr::LOCALHOST, 7000)).expect("control");

            // Teardown turns route_localnet off again and leaves no table.
            nat.send(Teardown).await.unwrap().unwrap();
            assert_eq!(route_localnet(&w.host, "hearth0"), "0", "{flavor:?}");
            let tables = w.host.exec_ok(&["nft", "list", "tables"]);
            assert!(!tables.contains("hearth-publish"), "{flavor:?}: {tables}");
        });
    }
}

/// A guest's UDP flow to a published port outlives hearthd's proxy in the kernel's conntrack:
/// after the actor is gone without a teardown (as after a `kill -9`; its translations stay), a
/// program that binds the dead proxy's port on the gateway must get none of the guest's
/// datagrams, also those of the flow conntrack still tracks.
#[test]
fn a_program_on_a_dead_udp_proxys_port_gets_no_guest_datagram() {
    require_privileged!();
    let w = world();
    let _dns = UdpEcho::start(&w.guests[0], SocketAddrV4::new(guest_ip(5), 53));
    let w = &w;
    let client = w.guests[1]
        .run(|| UdpSocket::bind("0.0.0.0:0"))
        .expect("bind the guest's socket");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let proxy_port = w.host.block_on(|| async {
        let nat = web_publishing("5353:53/udp").await;
        // The flow through the proxy works.
        client.send_to(b"hello", at(HOST_IP, 5353)).unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = client.recv_from(&mut buf).expect("hairpin answer");
        assert_eq!(from, at(HOST_IP, 5353));
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("got=hello"));
        let elements = hairpin_elements(&w.host);
        let port = elements
            .iter()
            .find_map(|e| e.strip_prefix("udp . 5353 : 172.31.240.1 . "))
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no hairpin element for 5353/udp: {elements:?}"));
        // The actor goes without a teardown, and its proxies with it.
        drop(nat);
        port
    });
    let mut rogue = None;
    let bound = common::wait_until(Duration::from_secs(5), || {
        rogue = w.host.run(|| UdpSocket::bind(at(GATEWAY, proxy_port))).ok();
        rogue.is_some()
    });
    assert!(bound, "the dead proxy's port stays taken");
    let rogue = rogue.unwrap();
    rogue
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    // The same flow again, and a new one.
    client.send_to(b"again", at(HOST_IP, 5353)).unwrap();
    w.guests[1]
        .run(|| {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.send_to(b"new", at(HOST_IP, 5353))
        })
        .unwrap();
    let mut buf = [0u8; 512];
    let got = rogue.recv_from(&mut buf);
    assert!(got.is_err(), "the program got a guest's datagram: {got:?}");
    // Control: the program does receive (from the host itself).
    w.host
        .run(|| UdpSocket::bind("0.0.0.0:0")?.send_to(b"host", at(GATEWAY, proxy_port)))
        .unwrap();
    let (n, _) = rogue.recv_from(&mut buf).expect("the program receives");
    assert_eq!(&buf[..n], b"host");
}

/// A guest that connects again from the same source port soon after a hairpin connection the
/// far side closed first meets the proxy's `TIME_WAIT` remnant of the first connection, which
/// has no mark to read: the SYN must still get through (the proxies' sockets are transparent).
#[test]
fn a_guest_reconnecting_from_the_same_port_gets_through_the_proxys_time_wait() {
    require_privileged!();
    let w = world();
    // web answers at once and closes first, so the proxy closes first towards the client.
    let server = w.guests[0]
        .run(|| TcpListener::bind(SocketAddrV4::new(guest_ip(5), 80)))
        .expect("bind web's server");
    std::thread::spawn(move || {
        for stream in server.incoming().flatten() {
            let mut s = stream;
            let _ = s.write_all(b"hi");
        }
    });
    let w = &w;
    w.host.block_on(|| async {
        let nat = web_publishing("8080:80").await;
        let exchange = || -> std::io::Result<Vec<u8>> {
            w.guests[1].run(|| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                s.set_reuse_address(true)?;
                s.bind(&SocketAddr::from((guest_ip(6), 41234)).into())?;
                s.connect_timeout(&at(HOST_IP, 8080).into(), Duration::from_secs(3))?;
                let mut s: TcpStream = s.into();
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                let mut got = Vec::new();
                s.read_to_end(&mut got)?;
                Ok(got)
            })
        };
        assert_eq!(exchange().expect("first connection"), b"hi");
        let states = w.host.exec_ok(&["ss", "-tanH", "state", "time-wait"]);
        assert!(
            states.contains(&format!("{}:41234", guest_ip(6))),
            "no TIME_WAIT on the proxy's side: {states}"
        );
        assert_eq!(
            exchange().expect("again from the same port"),
            b"hi",
            "the SYN meeting the TIME_WAIT was dropped"
        );
        nat.send(Teardown).await.unwrap().unwrap();
    });
}
