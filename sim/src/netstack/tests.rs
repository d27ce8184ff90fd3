//! The stack thread driven over a datagram socketpair standing in for the TAP (one message
//! per frame, like a TAP fd): ARP, ping, DNS, raw frames, capture and shutdown, with every
//! virtio-net header framing, the guest's own servers (`FC_SIM_SERVE`), and no root needed.

use std::net::Ipv4Addr;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, UdpPacket,
};

use super::frames::{arp_reply, arp_request, icmp_echo_frame, udp_frame, FrameAddrs};
use super::{dns, GuestStack, NetConfig, NetstackError, ServePort, VnetHdr};

const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GUEST_MAC: [u8; 6] = [6, 0, 10, 0, 0, 2];
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// The host's end of the wire.
struct Wire {
    sock: UnixDatagram,
    vnet: usize,
}

impl Wire {
    fn send(&self, frame: &[u8]) {
        let mut buf = vec![0u8; self.vnet];
        buf.extend_from_slice(frame);
        self.sock.send(&buf).expect("send to guest");
    }

    /// The next frame the guest sent matching `pred`, its (all-zero) header checked and cut.
    fn recv_until(&self, timeout: Duration, pred: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 70_000];
        while Instant::now() < deadline {
            let Ok(n) = self.sock.recv(&mut buf) else {
                continue; // read timeout: look at the deadline again
            };
            assert!(n >= self.vnet, "frame shorter than its header");
            assert!(
                buf[..self.vnet].iter().all(|b| *b == 0),
                "non-zero vnet header"
            );
            let frame = &buf[self.vnet..n];
            if pred(frame) {
                return Some(frame.to_vec());
            }
        }
        None
    }
}

fn start(vnet: VnetHdr) -> (GuestStack, Wire) {
    start_serving(vnet, &[])
}

fn start_serving(vnet: VnetHdr, serve: &[ServePort]) -> (GuestStack, Wire) {
    let (guest_end, host_end) = UnixDatagram::pair().expect("socketpair");
    host_end
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut config = NetConfig::new(GUEST_MAC, GUEST_IP, 24);
    config.gateway = Some(HOST_IP);
    config.dns = Some(HOST_IP);
    config.vnet_hdr = vnet;
    config.timeout = Duration::from_secs(3);
    let guest = GuestStack::spawn_serving(guest_end.into(), config, false, serve).expect("spawn");
    let wire = Wire {
        sock: host_end,
        vnet: vnet.len(),
    };
    (guest, wire)
}

fn ethertype(frame: &[u8]) -> Option<EthernetProtocol> {
    EthernetFrame::new_checked(frame)
        .ok()
        .map(|f| f.ethertype())
}

fn arp_of(frame: &[u8]) -> Option<ArpRepr> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()
}

fn is_arp_request_for(frame: &[u8], ip: Ipv4Addr) -> bool {
    matches!(arp_of(frame), Some(ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        target_protocol_addr,
        ..
    }) if target_protocol_addr == ip)
}

fn to_guest() -> FrameAddrs {
    FrameAddrs {
        src_mac: HOST_MAC,
        dst_mac: GUEST_MAC,
        src_ip: HOST_IP,
        dst_ip: GUEST_IP,
    }
}

#[test]
fn answers_arp_and_ping_with_every_vnet_header() {
    for vnet in [VnetHdr::None, VnetHdr::Legacy10, VnetHdr::V1Len12] {
        let (_guest, wire) = start(vnet);
        wire.send(&arp_request(HOST_MAC, HOST_IP, GUEST_IP));
        let reply = wire
            .recv_until(Duration::from_secs(2), |f| {
                ethertype(f) == Some(EthernetProtocol::Arp)
            })
            .unwrap_or_else(|| panic!("{vnet:?}: no ARP reply"));
        assert_eq!(
            arp_of(&reply),
            Some(ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: EthernetAddress(GUEST_MAC),
                source_protocol_addr: GUEST_IP,
                target_hardware_addr: EthernetAddress(HOST_MAC),
                target_protocol_addr: HOST_IP,
            })
        );

        wire.send(&icmp_echo_frame(to_guest(), 0x4242, 7, b"are you there"));
        let echo = wire
            .recv_until(Duration::from_secs(2), |f| {
                ethertype(f) == Some(EthernetProtocol::Ipv4)
            })
            .unwrap_or_else(|| panic!("{vnet:?}: no echo reply"));
        let ip = Ipv4Packet::new_checked(&echo[14..]).expect("IPv4");
        assert_eq!((ip.src_addr(), ip.dst_addr()), (GUEST_IP, HOST_IP));
        let icmp = Icmpv4Packet::new_checked(ip.payload()).expect("ICMP");
        assert_eq!(
            Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()),
            Ok(Icmpv4Repr::EchoReply {
                ident: 0x4242,
                seq_no: 7,
                data: b"are you there"
            })
        );
    }
}

#[test]
fn resolves_through_arp_and_a_dns_exchange() {
    let (guest, wire) = start(VnetHdr::V1Len12);
    let host = std::thread::spawn(move || {
        // Answer the guest's ARP for the server, then its query.
        let arp = wire.recv_until(Duration::from_secs(3), |f| is_arp_request_for(f, HOST_IP));
        assert!(arp.is_some(), "the guest did not ARP for its DNS server");
        wire.send(&arp_reply(HOST_MAC, HOST_IP, GUEST_MAC, GUEST_IP));
        let query = wire
            .recv_until(Duration::from_secs(3), |f| {
                let Ok(ip) = Ipv4Packet::new_checked(&f[14..]) else {
                    return false;
                };
                ip.next_header() == IpProtocol::Udp
                    && UdpPacket::new_checked(ip.payload()).is_ok_and(|u| u.dst_port() == 53)
            })
            .expect("no DNS query");
        let ip = Ipv4Packet::new_checked(&query[14..]).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        let q = udp.payload();
        assert_eq!(q[12..], dns::build_query(0, "vm1.x.test")[12..]);
        // The answer: the query with QR set, one A record pointing at the question's name.
        let mut answer = q.to_vec();
        answer[2] = 0x81;
        answer[3] = 0x80;
        answer[7] = 1;
        answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 1, 2, 3]);
        wire.send(&udp_frame(to_guest(), 53, udp.src_port(), &answer));
        wire
    });
    assert_eq!(
        guest.resolve("vm1.x.test").expect("resolve"),
        Ipv4Addr::new(10, 1, 2, 3)
    );
    host.join().expect("fake host");
}

#[test]
fn ping_and_arp_time_out_when_nobody_answers() {
    let (guest, wire) = start(VnetHdr::V1Len12);
    let started = Instant::now();
    match guest.ping_within(HOST_IP, Duration::from_millis(300)) {
        Err(NetstackError::Timeout { after, .. }) => {
            assert_eq!(after, Duration::from_millis(300));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // The guest did try: it asked who has the host's address.
    let arp = wire.recv_until(Duration::from_secs(1), |f| is_arp_request_for(f, HOST_IP));
    assert!(arp.is_some());
}

#[test]
fn neighbor_mac_comes_from_the_arp_reply() {
    let (guest, wire) = start(VnetHdr::None);
    let host = std::thread::spawn(move || {
        let arp = wire.recv_until(Duration::from_secs(3), |f| is_arp_request_for(f, HOST_IP));
        assert!(arp.is_some());
        wire.send(&arp_reply(HOST_MAC, HOST_IP, GUEST_MAC, GUEST_IP));
    });
    assert_eq!(guest.neighbor_mac(HOST_IP).expect("neighbor"), HOST_MAC);
    host.join().expect("fake host");
}

#[test]
fn raw_frames_go_out_unchanged_and_arrivals_are_captured() {
    let (guest, wire) = start(VnetHdr::Legacy10);
    let forged = FrameAddrs {
        src_mac: [6, 0, 0xde, 0xad, 0xbe, 0xef],
        dst_mac: HOST_MAC,
        src_ip: Ipv4Addr::new(10, 0, 0, 99),
        dst_ip: HOST_IP,
    };
    let frame = udp_frame(forged, 1, 2, b"forged");
    guest.send_raw_frame(&frame).expect("send");
    let got = wire.recv_until(Duration::from_secs(2), |f| f == frame.as_slice());
    assert!(got.is_some(), "the raw frame did not come out as built");

    wire.send(&udp_frame(to_guest(), 5000, 6000, b"for the guest"));
    let seen = guest
        .wait_for_packet(Duration::from_secs(2), |p| p.dst_port == 6000)
        .expect("capture");
    let seen = seen.expect("the datagram was not captured");
    assert_eq!((seen.src_mac, seen.src_ip), (HOST_MAC, HOST_IP));
    assert_eq!(seen.payload, b"for the guest");
}

#[test]
fn dropping_the_handle_stops_the_thread_and_closes_the_fd() {
    let (guest, wire) = start(VnetHdr::None);
    drop(guest);
    // With the guest's end closed, sending to it fails.
    assert!(wire.sock.send(&[0u8; 60]).is_err());
}

#[test]
fn calls_after_bad_input_fail_without_reaching_the_thread() {
    let (guest, _wire) = start(VnetHdr::None);
    assert!(matches!(
        guest.send_raw_frame(&[0u8; 2000]),
        Err(NetstackError::BadFrame { len: 2000 })
    ));
    assert!(matches!(
        guest.resolve("a..b"),
        Err(NetstackError::InvalidName { .. })
    ));
    assert!(matches!(
        guest.serve_tcp(80, &vec![0u8; 70_000]),
        Err(NetstackError::InvalidConfig { .. })
    ));
}

/// The UDP payload of `frame` when it is a datagram from `src_port`.
fn udp_payload_from(frame: &[u8], src_port: u16) -> Option<(u16, Vec<u8>)> {
    let ip = Ipv4Packet::new_checked(frame.get(14..)?).ok()?;
    if ip.next_header() != IpProtocol::Udp {
        return None;
    }
    let udp = UdpPacket::new_checked(ip.payload()).ok()?;
    (udp.src_port() == src_port).then(|| (udp.dst_port(), udp.payload().to_vec()))
}

#[test]
fn a_served_udp_port_answers_each_datagram_with_its_sender() {
    let (_guest, wire) = start_serving(VnetHdr::V1Len12, &[ServePort::Udp(53)]);
    for (src_port, payload) in [(5000u16, &b"first"[..]), (5001, &b"second"[..])] {
        wire.send(&udp_frame(to_guest(), src_port, 53, payload));
        // The guest asks for the host's MAC (once) before it can answer: reply as a host would.
        let reply = wire
            .recv_until(Duration::from_secs(3), |f| {
                if is_arp_request_for(f, HOST_IP) {
                    wire.send(&arp_reply(HOST_MAC, HOST_IP, GUEST_MAC, GUEST_IP));
                }
                udp_payload_from(f, 53).is_some()
            })
            .and_then(|f| udp_payload_from(&f, 53));
        let (dst_port, got) = reply.unwrap_or_else(|| panic!("no answer to {src_port}"));
        assert_eq!(dst_port, src_port, "answered to the sender's port");
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!(
                "peer={HOST_IP}:{src_port} got={}",
                String::from_utf8_lossy(payload)
            )
        );
    }
    // A port not served stays silent (smoltcp answers ICMP port unreachable, never UDP).
    wire.send(&udp_frame(to_guest(), 5002, 54, b"nobody"));
    assert!(wire
        .recv_until(Duration::from_millis(300), |f| udp_payload_from(f, 54)
            .is_some())
        .is_none());
}

#[test]
fn a_served_udp_port_echoes_at_most_1_kib() {
    let (_guest, wire) = start_serving(VnetHdr::None, &[ServePort::Udp(7)]);
    wire.send(&arp_reply(HOST_MAC, HOST_IP, GUEST_MAC, GUEST_IP));
    let big = vec![b'x'; 1400];
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut reply = None;
    while reply.is_none() && Instant::now() < deadline {
        wire.send(&udp_frame(to_guest(), 6000, 7, &big));
        reply = wire
            .recv_until(Duration::from_millis(300), |f| {
                udp_payload_from(f, 7).is_some()
            })
            .and_then(|f| udp_payload_from(&f, 7));
    }
    let (_, got) = reply.expect("no answer");
    let expected = format!("peer={HOST_IP}:6000 got={}", "x".repeat(1024));
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

#[test]
fn a_served_tcp_port_answers_each_connection_with_its_peer() {
    // Two guests on one wire: the second connects to the first's served port.
    let (a_end, b_end) = UnixDatagram::pair().expect("socketpair");
    let mut server = NetConfig::new(GUEST_MAC, GUEST_IP, 24);
    server.timeout = Duration::from_secs(3);
    let mut client = NetConfig::new(HOST_MAC, HOST_IP, 24);
    client.timeout = Duration::from_secs(3);
    let _server = GuestStack::spawn_serving(a_end.into(), server, false, &[ServePort::Tcp(80)])
        .expect("server");
    let client = GuestStack::spawn(b_end.into(), client).expect("client");
    // Ended by a half-close, by a newline, and twice at once (the port keeps listening).
    let reply = client
        .tcp_connect(GUEST_IP, 80, b"hello")
        .expect("first connection");
    let text = String::from_utf8_lossy(&reply).into_owned();
    assert!(
        text.starts_with(&format!("peer={HOST_IP}:")) && text.ends_with(" got=hello\n"),
        "{text:?}"
    );
    let reply = client
        .tcp_connect(GUEST_IP, 80, b"line\nignored")
        .expect("second connection");
    assert!(
        String::from_utf8_lossy(&reply).ends_with(" got=line\n"),
        "{reply:?}"
    );
    std::thread::scope(|s| {
        let both = [
            s.spawn(|| client.tcp_connect(GUEST_IP, 80, b"one")),
            s.spawn(|| client.tcp_connect(GUEST_IP, 80, b"two")),
        ];
        for (h, want) in both.into_iter().zip(["one", "two"]) {
            let reply = h.join().unwrap().expect("concurrent connection");
            assert!(
                String::from_utf8_lossy(&reply).ends_with(&format!(" got={want}\n")),
                "{reply:?}"
            );
        }
    });
    // A port not served refuses.
    assert!(matches!(
        client.tcp_connect(GUEST_IP, 81, b"x"),
        Err(NetstackError::ConnectionRefused { .. })
    ));
}

#[test]
fn serving_a_port_twice_is_refused() {
    let (guest_end, _host_end) = UnixDatagram::pair().expect("socketpair");
    let config = NetConfig::new(GUEST_MAC, GUEST_IP, 24);
    let err = GuestStack::spawn_serving(
        guest_end.into(),
        config,
        false,
        &[ServePort::Tcp(80), ServePort::Tcp(80)],
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("tcp:80 is listed twice"), "{err}");
}
