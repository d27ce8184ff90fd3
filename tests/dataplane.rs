//! hearth's data plane with real packets: the real network actors in a host namespace, an
//! upstream namespace behind the egress veth, and simulated guests (firecracker-sim's guest
//! stack) on leased TAPs. A guest finds another VM by name through hearth's DNS and reaches
//! the outside world through NAT, masqueraded behind the host's egress address, only while
//! NAT is enabled for it.

mod common;
#[path = "common/guest.rs"]
mod guest;
#[path = "common/hearth_net.rs"]
mod hearth_net;

use std::net::SocketAddrV4;
use std::time::Duration;

use firecracker_sim::netstack::NetstackError;
use guest::PeerEchoServer;
use hearth_net::{blocking, Hearth, Net, Switches, EGRESS_IP, UPSTREAM_IP};

const PORT: u16 = 8000;

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
        let cut = blocking(move || {
            guest.tcp_connect_within(UPSTREAM_IP, PORT, b"no-nat", Duration::from_secs(2))
        })
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
