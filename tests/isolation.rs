//! hearth's isolation defaults with real packets, each shown both ways: with the switch on
//! (hearth's default) the traffic is stopped, with it off (`isolate_guests`,
//! `block_guest_to_host`, `anti_spoofing` = false) the same traffic gets through, so the
//! negative results cannot come from a broken setup.
//!
//! Guests are firecracker-sim's guest stack on TAPs leased from the real `TapPoolActor`;
//! the firewall is the real `NatActor`; DNS the real `DnsActor` (see `common/hearth_net.rs`).

mod common;
use common::hearth_net;
use hearth_testkit::guest;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use firecracker_sim::netstack::{frames, FrameAddrs, NetstackError};
use guest::{PeerEchoServer, UdpSink};
use hearth_net::{Guest, Hearth, Net, Switches, EGRESS_IP, GATEWAY, UPSTREAM_IP};

/// How long a negative check waits for traffic that must not come.
const NEGATIVE: Duration = Duration::from_secs(3);
/// The port guest B serves on.
const B_PORT: u16 = 8080;
/// The UDP port routed test datagrams go to.
const PROBE_PORT: u16 = 9999;

fn is_timeout<T: std::fmt::Debug>(r: &Result<T, NetstackError>) -> bool {
    matches!(r, Err(NetstackError::Timeout { .. }))
}

/// A UDP frame from `from` (its real MAC and IP unless forged) via the gateway to `dst`.
async fn routed_udp(
    from: &Guest,
    src_mac: [u8; 6],
    src_ip: Ipv4Addr,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let gw_mac = from
        .call(|g| g.neighbor_mac(GATEWAY))
        .await
        .expect("ARP for the gateway");
    let addrs = FrameAddrs {
        src_mac,
        dst_mac: gw_mac,
        src_ip,
        dst_ip: *dst.ip(),
    };
    frames::udp_frame(addrs, 40_000, dst.port(), payload)
}

/// Guest-to-guest traffic: directly at L2 (ping, TCP) and routed through the gateway (a
/// datagram addressed to B, sent to the gateway's MAC). Returns what got through as
/// (ping, tcp, routed).
fn guest_to_guest(switches: Switches) -> (bool, bool, bool) {
    let net = Net::new("hiso-gg");
    net.host.block_on(|| async {
        let hearth = Hearth::start(switches).await;
        let a = hearth.add_guest(true).await;
        let b = hearth.add_guest(true).await;
        b.call(|g| g.serve_tcp(B_PORT, b"guest-b"))
            .await
            .expect("B listens");
        let b_ip = b.ip();

        let ping = a.call(move |g| g.ping_within(b_ip, NEGATIVE)).await;
        assert!(ping.is_ok() || is_timeout(&ping), "{ping:?}");
        let tcp = a
            .call(move |g| g.tcp_connect_within(b_ip, B_PORT, b"hi", NEGATIVE))
            .await;
        assert!(
            matches!(&tcp, Ok(reply) if reply == b"guest-b") || is_timeout(&tcp),
            "{tcp:?}"
        );

        let dst = SocketAddrV4::new(b_ip, PROBE_PORT);
        let frame = routed_udp(&a, a.mac(), a.ip(), dst, b"routed-a-to-b").await;
        a.call(move |g| g.send_raw_frame(&frame))
            .await
            .expect("send");
        let a_ip = a.ip();
        let routed = b
            .call(move |g| {
                g.wait_for_packet(NEGATIVE, |p| {
                    p.src_ip == a_ip && p.payload == b"routed-a-to-b"
                })
            })
            .await
            .expect("capture");
        if switches.isolate_guests {
            // Nothing at all from A reached B.
            let seen = b
                .call(firecracker_sim::netstack::GuestStack::captured)
                .await
                .expect("capture");
            assert!(seen.iter().all(|p| p.src_ip != a_ip), "{seen:?}");
        }
        (ping.is_ok(), tcp.is_ok(), routed.is_some())
    })
}

#[test]
fn guests_cannot_reach_each_other_by_default() {
    require_privileged!();
    assert_eq!(guest_to_guest(Switches::DEFAULTS), (false, false, false));
}

#[test]
fn guests_reach_each_other_with_isolate_guests_off() {
    require_privileged!();
    let open = Switches {
        isolate_guests: false,
        ..Switches::DEFAULTS
    };
    assert_eq!(guest_to_guest(open), (true, true, true));
}

/// Guest-to-host traffic: TCP to a server on the gateway address and on the egress address,
/// ping of the gateway, and DNS on the gateway. Returns what got through as
/// (tcp gateway, tcp egress address, ping, dns).
fn guest_to_host(switches: Switches) -> (bool, bool, bool, bool) {
    let net = Net::new("hiso-gh");
    net.host.block_on(|| async {
        let hearth = Hearth::start(switches).await;
        // The gateway address exists once the pool has made the bridge.
        let on_gw = PeerEchoServer::start(&net.host, SocketAddrV4::new(GATEWAY, 7777));
        let on_egress = PeerEchoServer::start(&net.host, SocketAddrV4::new(EGRESS_IP, 7778));
        let a = hearth.add_guest(true).await;
        hearth.set_records(&[("vma", a.ip())]).await;
        let gw = a
            .call(|g| g.tcp_connect_within(GATEWAY, 7777, b"host?", NEGATIVE))
            .await;
        let egress = a
            .call(|g| g.tcp_connect_within(EGRESS_IP, 7778, b"host?", NEGATIVE))
            .await;
        for (r, server) in [(&gw, &on_gw), (&egress, &on_egress)] {
            match r {
                // No NAT towards the host: it sees the guest itself.
                Ok(reply) => {
                    let expected = format!("peer={}:", a.ip());
                    assert!(
                        String::from_utf8_lossy(reply).starts_with(&expected),
                        "{reply:?}"
                    );
                }
                Err(NetstackError::Timeout { .. }) => {
                    assert!(
                        server.peers().is_empty(),
                        "a blocked connection reached the host"
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
        let ping = a.call(|g| g.ping_within(GATEWAY, NEGATIVE)).await;
        let dns = a.call(|g| g.resolve("vma.vm.internal")).await;
        assert!(dns.is_ok() || is_timeout(&dns), "{dns:?}");
        if let Ok(ip) = dns {
            assert_eq!(ip, a.ip());
        }
        (gw.is_ok(), egress.is_ok(), ping.is_ok(), dns.is_ok())
    })
}

#[test]
fn guest_cannot_reach_the_host_but_dns_works() {
    require_privileged!();
    assert_eq!(
        guest_to_host(Switches::DEFAULTS),
        (false, false, false, true)
    );
}

#[test]
fn guest_reaches_the_host_with_block_guest_to_host_off() {
    require_privileged!();
    let open = Switches {
        block_guest_to_host: false,
        ..Switches::DEFAULTS
    };
    assert_eq!(guest_to_host(open), (true, true, true, true));
}

/// What got through from guest A to the upstream namespace, each as "seen upstream":
/// (honest datagram, forged source IP = guest B, forged source MAC, forged IP outside the
/// subnet), and whether B (the impersonated guest) got the upstream's answer to a SYN that
/// A forged in its name.
#[derive(Debug, PartialEq, Eq)]
struct Spoofing {
    honest: bool,
    forged_ip: bool,
    forged_mac: bool,
    foreign_ip: bool,
    forged_syn_answered: bool,
}

fn spoofing(switches: Switches) -> Spoofing {
    let net = Net::new("hiso-sp");
    let sink_addr = SocketAddrV4::new(UPSTREAM_IP, 9000);
    let sink = UdpSink::bind(&net.upstream, sink_addr);
    let server = PeerEchoServer::start(&net.upstream, SocketAddrV4::new(UPSTREAM_IP, 8000));
    let seen = |payload: &[u8], wait: Duration| {
        sink.wait_for(payload, wait).map(|from| {
            // Whatever gets out is masqueraded behind the egress address.
            assert_eq!(from.ip(), EGRESS_IP, "{from}");
        })
    };
    let (frames_sent, forged_syn_answered) = net.host.block_on(|| async {
        let hearth = Hearth::start(switches).await;
        let a = hearth.add_guest(true).await;
        let b = hearth.add_guest(true).await;
        let forged_mac = [0x06, 0x00, 0xde, 0xad, 0xbe, 0xef];
        let foreign = Ipv4Addr::new(10, 99, 0, 7);
        let mut sent = 0;
        for (src_mac, src_ip, payload) in [
            (a.mac(), a.ip(), &b"honest"[..]),
            (a.mac(), b.ip(), b"forged-ip"),
            (forged_mac, a.ip(), b"forged-mac"),
            (a.mac(), foreign, b"foreign-ip"),
        ] {
            let frame = routed_udp(&a, src_mac, src_ip, sink_addr, payload).await;
            a.call(move |g| g.send_raw_frame(&frame))
                .await
                .expect("send");
            sent += 1;
        }
        // A SYN from A in B's name: the SYN-ACK, if the SYN got out, comes back to B.
        let gw_mac = a.call(|g| g.neighbor_mac(GATEWAY)).await.expect("ARP");
        let syn = frames::tcp_syn_frame(
            FrameAddrs {
                src_mac: a.mac(),
                dst_mac: gw_mac,
                src_ip: b.ip(),
                dst_ip: UPSTREAM_IP,
            },
            41_000,
            8000,
            1_000_000,
        );
        a.call(move |g| g.send_raw_frame(&syn))
            .await
            .expect("send SYN");
        let answered = b
            .call(|g| {
                g.wait_for_packet(NEGATIVE, |p| {
                    p.src_ip == UPSTREAM_IP && p.src_port == 8000 && p.dst_port == 41_000
                })
            })
            .await
            .expect("capture");
        (sent, answered.is_some())
    });
    assert_eq!(frames_sent, 4);
    // The honest datagram is the control: it must arrive, or the setup is broken.
    let honest = seen(b"honest", Duration::from_secs(5)).is_some();
    let forged_ip = seen(b"forged-ip", NEGATIVE).is_some();
    let forged_mac = seen(b"forged-mac", NEGATIVE).is_some();
    let foreign_ip = seen(b"foreign-ip", NEGATIVE).is_some();
    if !forged_syn_answered {
        assert!(server.peers().is_empty(), "{:?}", server.peers());
    }
    Spoofing {
        honest,
        forged_ip,
        forged_mac,
        foreign_ip,
        forged_syn_answered,
    }
}

#[test]
fn spoofed_sources_get_nothing_through() {
    require_privileged!();
    assert_eq!(
        spoofing(Switches::DEFAULTS),
        Spoofing {
            honest: true,
            forged_ip: false,
            forged_mac: false,
            foreign_ip: false,
            forged_syn_answered: false,
        }
    );
}

#[test]
fn spoofed_sources_pass_with_anti_spoofing_off() {
    require_privileged!();
    let open = Switches {
        anti_spoofing: false,
        ..Switches::DEFAULTS
    };
    assert_eq!(
        spoofing(open),
        Spoofing {
            honest: true,
            forged_ip: true,
            forged_mac: true,
            // Still dropped: only NAT guests' addresses may leave (not an anti-spoofing rule).
            foreign_ip: false,
            forged_syn_answered: true,
        }
    );
}
