//! hearth's data plane with real packets: the real network actors in a host namespace, an
//! upstream namespace behind the egress veth, and simulated guests (firecracker-sim's guest
//! stack) on leased TAPs. A guest finds another VM by name through hearth's DNS and reaches
//! the outside world through NAT, masqueraded behind the host's egress address, only while
//! NAT is enabled for it.

mod common;
use common::hearth_net;
use hearth_testkit::guest;

use std::net::SocketAddrV4;
use std::time::Duration;

use firecracker_sim::netstack::NetstackError;
use guest::PeerEchoServer;
use hearth_actors::nat::{GuestSpec, Reconcile, Teardown as NatTeardown};
use hearth_actors::tap_pool::{AcquireTap, GetStatus};
use hearth_net::{blocking, Hearth, Net, Switches, EGRESS_IP, UPSTREAM_IP};

const PORT: u16 = 8000;
/// How long a check waits for traffic that must not get through.
const NEGATIVE: Duration = Duration::from_secs(3);

#[test]
fn guest_resolves_another_vm_and_reaches_upstream_through_nat() {
    require_privileged!();
    let net = Net::new("hdp-nat");
    let server = PeerEchoServer::start(&net.upstream, SocketAddrV4::new(UPSTREAM_IP, PORT));
    net.host.block_on(|| async {
        let hearth = Hearth::start(Switches::DEFAULTS).await;
        let a = hearth.add_guest(true).await;
        let b = hearth.add_guest(true).await;
        hearth
            .set_records(&[("vma", a.lease.guest_ip), ("vmb", b.lease.guest_ip)])
            .await;

        // DNS on the gateway answers the other VM's name, and NXDOMAIN for unknown VMs.
        let guest = a.stack.clone();
        let found = blocking(move || guest.resolve("vmb.vm.internal")).await;
        assert_eq!(found.expect("resolve vmb"), b.lease.guest_ip);
        let guest = a.stack.clone();
        match blocking(move || guest.resolve("nosuch.vm.internal")).await {
            Err(NetstackError::NameNotFound { .. }) => {}
            other => panic!("expected NXDOMAIN for an unknown VM, got {other:?}"),
        }

        // Through NAT, upstream sees the host's egress address, not the guest's.
        let guest = a.stack.clone();
        let reply = blocking(move || guest.tcp_connect(UPSTREAM_IP, PORT, b"via-nat")).await;
        let reply = String::from_utf8(reply.expect("TCP through NAT")).expect("UTF-8");
        assert!(reply.starts_with(&format!("peer={EGRESS_IP}:")), "{reply}");
        assert!(reply.ends_with(" got=via-nat"), "{reply}");
        assert!(!reply.contains(&a.lease.guest_ip.to_string()), "{reply}");

        // NAT off for the guest: no way out.
        hearth.set_nat(&a.lease, false).await;
        let guest = a.stack.clone();
        let cut =
            blocking(move || guest.tcp_connect_within(UPSTREAM_IP, PORT, b"no-nat", NEGATIVE))
                .await;
        assert!(
            matches!(cut, Err(NetstackError::Timeout { .. })),
            "NAT disabled, yet: {cut:?}"
        );
        // The other guest keeps its NAT.
        let guest = b.stack.clone();
        let other = blocking(move || guest.tcp_connect(UPSTREAM_IP, PORT, b"b")).await;
        assert!(other.is_ok(), "{other:?}");

        // And back on.
        hearth.set_nat(&a.lease, true).await;
        let guest = a.stack.clone();
        let again = blocking(move || guest.tcp_connect(UPSTREAM_IP, PORT, b"again")).await;
        assert!(again.is_ok(), "{again:?}");
    });
    // Three exchanges reached the server, all masqueraded; the NAT-less one never did.
    let peers = server.peers();
    assert_eq!(peers.len(), 3, "{peers:?}");
    assert!(
        peers
            .iter()
            .all(|p| p.ip() == std::net::IpAddr::V4(EGRESS_IP)),
        "{peers:?}"
    );
}

#[test]
fn reconcile_keeps_listed_guests_and_cuts_the_rest() {
    require_privileged!();
    let net = Net::new("hdp-rec");
    let _server = PeerEchoServer::start(&net.upstream, SocketAddrV4::new(UPSTREAM_IP, PORT));
    net.host.block_on(|| async {
        let hearth = Hearth::start(Switches::DEFAULTS).await;
        let a = hearth.add_guest(true).await;
        let b = hearth.add_guest(true).await;
        hearth.set_records(&[("vma", a.ip())]).await;
        // The desired state lists A only (as after a restart where B's VM is gone).
        let desired = vec![GuestSpec {
            tap: a.lease.tap.clone(),
            ip: a.ip(),
            mac: a.lease.mac,
            nat: true,
        }];
        hearth
            .nat
            .send(Reconcile { desired })
            .await
            .expect("NAT mailbox")
            .expect("Reconcile");
        let kept = a.call(|g| g.tcp_connect(UPSTREAM_IP, PORT, b"a")).await;
        assert!(kept.is_ok(), "{kept:?}");
        let kept_dns = a.call(|g| g.resolve("vma.vm.internal")).await;
        assert_eq!(kept_dns.expect("A resolves"), a.ip());
        // B is unknown now: under anti-spoofing nothing it sends is accepted, DNS included.
        let cut = b
            .call(|g| g.tcp_connect_within(UPSTREAM_IP, PORT, b"b", NEGATIVE))
            .await;
        assert!(matches!(cut, Err(NetstackError::Timeout { .. })), "{cut:?}");
        let cut_dns = b
            .call(|g| g.resolve_within("vma.vm.internal", NEGATIVE))
            .await;
        assert!(
            matches!(cut_dns, Err(NetstackError::Timeout { .. })),
            "{cut_dns:?}"
        );
    });
}

#[test]
fn nat_teardown_takes_guests_offline() {
    require_privileged!();
    let net = Net::new("hdp-td");
    let _server = PeerEchoServer::start(&net.upstream, SocketAddrV4::new(UPSTREAM_IP, PORT));
    net.host.block_on(|| async {
        let hearth = Hearth::start(Switches::DEFAULTS).await;
        let a = hearth.add_guest(true).await;
        let before = a.call(|g| g.tcp_connect(UPSTREAM_IP, PORT, b"a")).await;
        assert!(before.is_ok(), "{before:?}");
        hearth
            .nat
            .send(NatTeardown)
            .await
            .expect("NAT mailbox")
            .expect("Teardown");
        // No masquerading and no forwarding any more: the guest cannot get out.
        let after = a
            .call(|g| g.tcp_connect_within(UPSTREAM_IP, PORT, b"a", NEGATIVE))
            .await;
        assert!(
            matches!(after, Err(NetstackError::Timeout { .. })),
            "{after:?}"
        );
    });
}

/// The bridge's MAC is the guests' gateway MAC: it must not change while guests run. Left
/// kernel-assigned, a bridge takes the lowest MAC among its ports, so attaching a pool TAP
/// with a lower (random) MAC would change it and cut off every guest that learnt the old one;
/// the pool sets it explicitly.
#[test]
fn bridge_mac_stays_put_as_the_pool_refills() {
    require_privileged!();
    let net = Net::new("hdp-mac");
    let (before, after) = net.host.block_on(|| async {
        let hearth = Hearth::start(Switches::DEFAULTS).await;
        let before = hearth_net::bridge_mac();
        // Each acquire makes the pool attach a fresh TAP in the background.
        let mut leases = Vec::new();
        for _ in 0..12 {
            leases.push(
                hearth
                    .taps
                    .send(AcquireTap {})
                    .await
                    .expect("mailbox")
                    .expect("AcquireTap"),
            );
        }
        let refilled = async {
            for _ in 0..200 {
                let status = hearth.taps.send(GetStatus {}).await.expect("mailbox");
                if status.pending == 0 && status.free_taps >= 2 {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        };
        assert!(refilled.await, "the pool did not refill");
        (before, hearth_net::bridge_mac())
    });
    // Explicitly set (NET_ADDR_SET = 3), the MAC can no longer follow the ports.
    let assign = net
        .host
        .exec_ok(&["cat", "/sys/class/net/hearth0/addr_assign_type"]);
    assert_eq!(assign.trim(), "3", "the bridge MAC is kernel-assigned");
    assert_eq!(
        before, after,
        "the bridge MAC changed as TAPs were attached"
    );
}

/// Nothing unasked enters the guest subnet: a host upstream that routes to the guests
/// through hearth's host cannot open a connection to a guest's service, which the host
/// itself can reach.
#[test]
fn outside_cannot_connect_into_guests() {
    require_privileged!();
    let net = Net::new("hdp-in");
    net.upstream.exec_ok(&[
        "ip",
        "route",
        "add",
        hearth_net::CIDR,
        "via",
        &EGRESS_IP.to_string(),
    ]);
    net.host.block_on(|| async {
        let hearth = Hearth::start(Switches::DEFAULTS).await;
        let a = hearth.add_guest(true).await;
        a.call(|g| g.serve_tcp(8080, b"guest-a"))
            .await
            .expect("listen");
        let target = SocketAddrV4::new(a.ip(), 8080);
        let fetch = || {
            use std::io::Read;
            let mut s = std::net::TcpStream::connect_timeout(&target.into(), NEGATIVE)?;
            s.set_read_timeout(Some(NEGATIVE))?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok::<_, std::io::Error>(out)
        };
        // The control: the host reaches the guest's service.
        assert_eq!(net.host.run(fetch).expect("host to guest"), "guest-a");
        // From outside, the SYN is dropped on the way in.
        let inbound = net.upstream.run(fetch);
        assert!(
            matches!(&inbound, Err(e) if e.kind() == std::io::ErrorKind::TimedOut),
            "{inbound:?}"
        );
    });
}
