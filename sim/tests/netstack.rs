//! The guest network stack against the real kernel: a TAP in a private namespace with the
//! host side addressed, and the simulated guest on it. The host pings the guest, the guest
//! resolves names from a dnsmasq, talks TCP both ways, and sends hand-built frames; each
//! virtio-net header framing (none, 10, 12 bytes) carries traffic.

use hearth_testkit as common;
use hearth_testkit::guest;
use hearth_testkit::require_privileged;

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::Duration;

use common::{wait_until, NetNs};
use firecracker_sim::netstack::{
    frames, open_tap, FrameAddrs, GuestStack, NetConfig, NetstackError, VnetHdr,
};
use guest::{guest_config, Dnsmasq, PeerEchoServer, UdpSink};

const HOST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const TAP: &str = "gtap0";

/// A namespace with TAP `gtap0` addressed 10.77.0.1/24 on the host side and a guest stack
/// (10.77.0.2) on its fd, framed with `vnet`.
fn setup(prefix: &str, vnet: VnetHdr) -> (NetNs, GuestStack) {
    let ns = NetNs::new(prefix);
    let fd = ns.run(move || open_tap(TAP, vnet)).expect("open TAP");
    ns.exec_ok(&["ip", "addr", "add", "10.77.0.1/24", "dev", TAP]);
    ns.exec_ok(&["ip", "link", "set", TAP, "up"]);
    let mut config = NetConfig::from_kernel_cmdline(
        [0x06, 0, 10, 77, 0, 2],
        "console=ttyS0 ip=10.77.0.2::10.77.0.1:255.255.255.0::eth0:off:10.77.0.1",
    )
    .expect("ip= argument");
    config.vnet_hdr = vnet;
    config.timeout = Duration::from_secs(5);
    let guest = GuestStack::spawn(fd, config).expect("spawn guest");
    (ns, guest)
}

fn host_pings(ns: &NetNs, addr: Ipv4Addr) -> bool {
    let addr = addr.to_string();
    ns.exec(&["ping", "-c", "1", "-W", "1", &addr])
        .status
        .success()
}

#[test]
fn host_and_guest_ping_each_other_with_every_vnet_header() {
    require_privileged!();
    for vnet in [VnetHdr::None, VnetHdr::Legacy10, VnetHdr::V1Len12] {
        let (ns, guest) = setup("hns-ping", vnet);
        assert!(
            wait_until(Duration::from_secs(10), || host_pings(&ns, GUEST)),
            "host cannot ping the guest with {vnet:?}"
        );
        let rtt = guest.ping(HOST).unwrap_or_else(|e| panic!("{vnet:?}: {e}"));
        assert!(rtt < Duration::from_secs(5));
        // The guest answers ARP: the host learnt its MAC.
        let neigh = ns.exec_ok(&["ip", "neigh", "show", "10.77.0.2"]);
        assert!(neigh.contains("06:00:0a:4d:00:02"), "{neigh}");
    }
}

#[test]
fn guest_resolves_names_from_dnsmasq() {
    require_privileged!();
    let (ns, guest) = setup("hns-dns", VnetHdr::V1Len12);
    let _dns = Dnsmasq::start(&ns, HOST, &[("x.test", "10.1.2.3"), ("gone.test", "")]);
    // dnsmasq takes a moment to bind; the query is retransmitted every second meanwhile.
    assert_eq!(
        guest.resolve("vm1.x.test").expect("resolve"),
        Ipv4Addr::new(10, 1, 2, 3)
    );
    assert_eq!(
        guest.resolve("x.test.").expect("resolve"),
        Ipv4Addr::new(10, 1, 2, 3)
    );
    match guest.resolve("vm1.gone.test") {
        Err(NetstackError::NameNotFound { name }) => assert_eq!(name, "vm1.gone.test"),
        other => panic!("expected NXDOMAIN, got {other:?}"),
    }
    // Without upstream servers dnsmasq refuses other names.
    match guest.resolve("elsewhere.example") {
        Err(NetstackError::DnsRcode { rcode: 5, .. }) => {}
        other => panic!("expected REFUSED, got {other:?}"),
    }
    assert!(matches!(
        guest.resolve("bad..name"),
        Err(NetstackError::InvalidName { .. })
    ));
}

#[test]
fn resolve_times_out_without_a_server() {
    require_privileged!();
    let (_ns, guest) = setup("hns-dnsto", VnetHdr::V1Len12);
    match guest.resolve_within("x.test", Duration::from_millis(1500)) {
        Err(NetstackError::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(1500)),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn guest_tcp_connect_gets_the_servers_reply() {
    require_privileged!();
    let (ns, guest) = setup("hns-tcp", VnetHdr::V1Len12);
    let server = PeerEchoServer::start(&ns, SocketAddrV4::new(HOST, 7000));
    let reply = guest
        .tcp_connect(HOST, 7000, b"hello")
        .expect("TCP exchange");
    let reply = String::from_utf8(reply).expect("UTF-8 reply");
    assert!(reply.starts_with("peer=10.77.0.2:"), "{reply}");
    assert!(reply.ends_with(" got=hello"), "{reply}");
    assert_eq!(server.peers().len(), 1);
    // A large request crosses several segments and windows.
    let big = vec![b'z'; 200_000];
    let reply = guest
        .tcp_connect(HOST, 7000, &big)
        .expect("large TCP exchange");
    assert_eq!(reply.len(), "peer=10.77.0.2:00000 got=".len() + big.len());
    // A closed port answers with a reset.
    match guest.tcp_connect(HOST, 7001, b"x") {
        Err(NetstackError::ConnectionRefused { addr }) => assert_eq!(addr.port(), 7001),
        other => panic!("expected refused, got {other:?}"),
    }
}

#[test]
fn tcp_connect_times_out_when_nobody_answers() {
    require_privileged!();
    let (ns, guest) = setup("hns-tcpto", VnetHdr::V1Len12);
    ns.exec_ok(&[
        "iptables", "-A", "INPUT", "-i", TAP, "-p", "tcp", "-j", "DROP",
    ]);
    match guest.tcp_connect_within(HOST, 7000, b"x", Duration::from_secs(1)) {
        Err(NetstackError::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn host_connects_to_a_guest_service() {
    require_privileged!();
    let (ns, guest) = setup("hns-srv", VnetHdr::V1Len12);
    guest.serve_tcp(8080, b"guest-banner").expect("listen");
    for _ in 0..3 {
        let got = ns.run(|| {
            use std::io::Read;
            let addr = SocketAddrV4::new(GUEST, 8080).into();
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok::<_, std::io::Error>(out)
        });
        assert_eq!(got.expect("connect to guest"), "guest-banner");
    }
}

#[test]
fn raw_frames_reach_the_host_as_built() {
    require_privileged!();
    let (ns, guest) = setup("hns-raw", VnetHdr::V1Len12);
    let sink = UdpSink::bind(&ns, SocketAddrV4::new(HOST, 9000));
    let host_mac = guest.neighbor_mac(HOST).expect("ARP for the host");
    assert_eq!(host_mac, guest::link_mac(&ns, TAP));
    let addrs = FrameAddrs {
        src_mac: guest.config().mac,
        dst_mac: host_mac,
        src_ip: GUEST,
        dst_ip: HOST,
    };
    guest
        .send_raw_frame(&frames::udp_frame(addrs, 4444, 9000, b"raw-hello"))
        .expect("send frame");
    let from = sink.wait_for(b"raw-hello", Duration::from_secs(5));
    assert_eq!(from, Some(SocketAddrV4::new(GUEST, 4444).into()));
    // Arrived packets are captured: the host's echo request shows up with the host's MAC.
    assert!(host_pings(&ns, GUEST));
    let echo = guest
        .wait_for_packet(Duration::from_secs(2), |p| {
            p.src_ip == HOST && p.protocol == 1
        })
        .expect("capture");
    assert_eq!(echo.map(|p| p.src_mac), Some(host_mac));
    assert!(matches!(
        guest.send_raw_frame(&[0u8; 10]),
        Err(NetstackError::BadFrame { len: 10 })
    ));
}

#[test]
fn dropping_the_handle_stops_the_guest() {
    require_privileged!();
    let (ns, guest) = setup("hns-stop", VnetHdr::V1Len12);
    assert!(wait_until(Duration::from_secs(10), || host_pings(
        &ns, GUEST
    )));
    drop(guest);
    // The fd is closed: the non-persistent TAP is gone with it.
    assert!(wait_until(Duration::from_secs(5), || {
        !ns.exec(&["ip", "link", "show", TAP]).status.success()
    }));
}

#[test]
fn spawn_rejects_an_invalid_config() {
    // Not privileged: spawning with a bad config fails before touching the fd.
    let fd = std::fs::File::open("/dev/null")
        .expect("open /dev/null")
        .into();
    let mut config = guest_config(GUEST, 24, HOST);
    config.gateway = Some(Ipv4Addr::new(10, 78, 0, 1));
    assert!(matches!(
        GuestStack::spawn(fd, config),
        Err(NetstackError::InvalidConfig { .. })
    ));
}
