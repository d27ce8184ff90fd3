//! Guest isolation below IPv4, with real frames from guest ports (firecracker-sim's guest
//! stack on TAPs leased from the real `TapPoolActor`, the real `NatActor` firewall; see
//! `common/hearth_net.rs`):
//! - IPv6: guests are IPv4-only, so an IPv6 datagram a guest sends to the host (to the
//!   all-nodes group and to the bridge's link-local address) never reaches a host socket
//!   listening on `[::]`; the bridge and TAPs have IPv6 turned off.
//! - ARP: a guest that claims another guest's address (gratuitous ARP with its own MAC, or
//!   with the victim's MAC so the bridge would move the victim's MAC to its port) does not
//!   get the host's traffic for that address: the victim still does.

mod common;
use common::hearth_net;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use firecracker_sim::netstack::frames;
use hearth_net::{Guest, Hearth, Net, Switches, BRIDGE, GATEWAY};

/// How long a negative check waits for traffic that must not come.
const NEGATIVE: Duration = Duration::from_secs(2);
/// The UDP port of the host's IPv6 listener.
const V6_PORT: u16 = 5555;
/// The UDP port the host sends its probes to guests on.
const PROBE_PORT: u16 = 9999;

/// The EUI-64 link-local address Linux gives an interface with this MAC.
fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([mac[0] ^ 2, mac[1]]),
        u16::from_be_bytes([mac[2], 0xff]),
        u16::from_be_bytes([0xfe, mac[3]]),
        u16::from_be_bytes([mac[4], mac[5]]),
    )
}

/// An Ethernet frame carrying an IPv6 UDP datagram (with its mandatory checksum).
fn ipv6_udp_frame(
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    (src, dst): (Ipv6Addr, Ipv6Addr),
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload.len()).expect("small payload");
    let mut udp = Vec::new();
    udp.extend(40_000u16.to_be_bytes());
    udp.extend(dst_port.to_be_bytes());
    udp.extend(udp_len.to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(payload);
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&u32::from(udp_len).to_be_bytes());
    add(&[0, 0, 0, 17]);
    add(&udp);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&checksum.to_be_bytes());

    let mut frame = Vec::new();
    frame.extend(dst_mac);
    frame.extend(src_mac);
    frame.extend([0x86, 0xdd]);
    frame.extend([0x60, 0, 0, 0]);
    frame.extend(udp_len.to_be_bytes());
    frame.extend([17, 255]);
    frame.extend(src.octets());
    frame.extend(dst.octets());
    frame.extend(udp);
    frame
}

/// Reads `/proc/sys/net/ipv6/conf/<dev>/disable_ipv6` from this thread (its namespace).
fn ipv6_off(dev: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"))
        .is_ok_and(|v| v.trim() == "1")
}

/// Waits up to `timeout` for a datagram with `payload` on `socket`.
fn received(socket: &UdpSocket, payload: &[u8], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            if &buf[..n] == payload {
                return true;
            }
        }
    }
    false
}

#[test]
fn guest_ipv6_never_reaches_the_host() {
    require_privileged!();
    let net = Net::new("hl2-v6");
    let listener = net
        .host
        .run(|| UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, V6_PORT))))
        .expect("bind [::] in the host namespace");
    listener
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let (got, bridge_off, tap_off) = net.host.block_on(|| async {
        let hearth = Hearth::start(Switches::DEFAULTS).await;
        let a = hearth.add_guest(false).await;
        let bridge_mac = a
            .call(|g| g.neighbor_mac(GATEWAY))
            .await
            .expect("ARP for the gateway");
        let src = link_local(a.mac());
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let targets = [
            ([0x33, 0x33, 0, 0, 0, 1], all_nodes),
            (bridge_mac, link_local(bridge_mac)),
        ];
        // A few rounds: a link-local address is tentative for a moment after it appears.
        for _ in 0..3 {
            for (dst_mac, dst) in targets {
                let frame = ipv6_udp_frame((a.mac(), dst_mac), (src, dst), V6_PORT, b"v6-to-host");
                a.call(move |g| g.send_raw_frame(&frame))
                    .await
                    .expect("send");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        (
            received(&listener, b"v6-to-host", NEGATIVE),
            ipv6_off(BRIDGE),
            ipv6_off(&a.lease.tap),
        )
    });
    assert!(!got, "an IPv6 datagram from a guest reached a host socket");
    assert!(bridge_off, "IPv6 is on on the bridge");
    assert!(tap_off, "IPv6 is on on the guest's TAP");
}

/// The host sends a datagram to `to`'s address; returns (reached `to`, reached `other`).
async fn host_to_guest(to: &Guest, other: &Guest, payload: &'static [u8]) -> (bool, bool) {
    let dst = SocketAddr::from((to.ip(), PROBE_PORT));
    // Runs on the actor thread, so in the host namespace.
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("host socket");
    for _ in 0..3 {
        socket.send_to(payload, dst).expect("send from the host");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let to_ip = to.ip();
    let reached_to = to
        .call(move |g| {
            g.wait_for_packet(NEGATIVE, |p| {
                p.dst_ip == to_ip && p.dst_port == PROBE_PORT && p.payload == payload
            })
        })
        .await
        .expect("capture")
        .is_some();
    let reached_other = other
        .call(firecracker_sim::netstack::GuestStack::captured)
        .await
        .expect("capture")
        .iter()
        .any(|p| p.dst_ip == to_ip && p.payload == payload);
    (reached_to, reached_other)
}

#[test]
fn gratuitous_arp_for_another_guest_does_not_steal_its_traffic() {
    require_privileged!();
    let net = Net::new("hl2-arp");
    let results = net.host.block_on(|| async {
        let hearth = Hearth::start(Switches::DEFAULTS).await;
        let a = hearth.add_guest(false).await;
        let b = hearth.add_guest(false).await;
        // Control: the host reaches B (and its neighbour entry for B exists).
        let before = host_to_guest(&b, &a, b"before").await;
        // Past the kernel's ARP locktime (1 s), when an unpinned entry would follow ARP.
        tokio::time::sleep(Duration::from_millis(1200)).await;

        let bridge_mac = a.call(|g| g.neighbor_mac(GATEWAY)).await.expect("ARP");
        let (a_mac, b_mac, b_ip) = (a.mac(), b.mac(), b.ip());
        // A says "B's address is at A's MAC": a gratuitous request and an unsolicited reply.
        let claim = [
            frames::arp_request(a_mac, b_ip, b_ip),
            frames::arp_reply(a_mac, b_ip, bridge_mac, GATEWAY),
        ];
        for frame in claim {
            a.call(move |g| g.send_raw_frame(&frame))
                .await
                .expect("send");
        }
        let after_own_mac = host_to_guest(&b, &a, b"after-own-mac").await;

        // A sends as B, with B's MAC: the bridge would learn B's MAC on A's port.
        let as_b = frames::arp_reply(b_mac, b_ip, bridge_mac, GATEWAY);
        a.call(move |g| g.send_raw_frame(&as_b))
            .await
            .expect("send");
        let after_b_mac = host_to_guest(&b, &a, b"after-b-mac").await;
        (before, after_own_mac, after_b_mac)
    });
    let (before, after_own_mac, after_b_mac) = results;
    assert_eq!(before, (true, false), "control: the host reaches B");
    assert_eq!(
        after_own_mac,
        (true, false),
        "after A claimed B's address with its own MAC: (B got it, A got it)"
    );
    assert_eq!(
        after_b_mac,
        (true, false),
        "after A claimed B's address with B's MAC: (B got it, A got it)"
    );
}
