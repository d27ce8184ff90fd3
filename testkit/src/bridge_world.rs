//! A host namespace with hearth's bridge, an "outside" namespace on its uplink, and guests on
//! the bridge (each its own namespace on a veth port, as a TAP would be): the world of the
//! published-port tests and the hairpin benchmark.
//!
//! Host: bridge `hearth0` at 172.31.240.1/24, uplink `wan0` at 10.98.0.1/24. Outside: `up0` at
//! 10.98.0.2/24, with a route to the guests' subnet through the host (so the outside could
//! address the guests directly, if the host let it). Guest `n`: `eth0` at 172.31.240.n/24 on
//! bridge port `hth<n>`, default route through the gateway.

use std::net::Ipv4Addr;

use crate::{veth, NetNs};

/// The host's address on the uplink.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
/// The outside's address on the uplink.
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);
/// The bridge's address: the guests' gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 31, 240, 1);

/// Guest `n`'s address.
#[must_use]
pub fn guest_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 31, 240, n)
}

/// The namespaces; deleted when dropped.
pub struct BridgeWorld {
    /// The host, with the bridge and the uplink.
    pub host: NetNs,
    /// The outside, on the uplink.
    pub outside: NetNs,
    /// The guests, in the order asked for.
    pub guests: Vec<NetNs>,
}

impl BridgeWorld {
    /// The world with guests `guests` (their last address bytes); `isolated` makes their
    /// bridge ports isolated, as hearth's TAP pool does.
    #[must_use]
    pub fn new(prefix: &str, guests: &[u8], isolated: bool) -> Self {
        let host = NetNs::new(prefix);
        let outside = NetNs::new(&format!("{prefix}o"));
        veth(
            &host,
            "wan0",
            "10.98.0.1/24",
            &outside,
            "up0",
            "10.98.0.2/24",
        );
        outside.exec_ok(&["ip", "route", "add", "172.31.240.0/24", "via", "10.98.0.1"]);
        host.exec_ok(&["ip", "link", "add", "hearth0", "type", "bridge"]);
        host.exec_ok(&["ip", "addr", "add", "172.31.240.1/24", "dev", "hearth0"]);
        host.exec_ok(&["ip", "link", "set", "hearth0", "up"]);
        let guests = guests
            .iter()
            .map(|n| {
                let g = NetNs::new(&format!("{prefix}g"));
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
                if isolated {
                    host.exec_ok(&["bridge", "link", "set", "dev", &port, "isolated", "on"]);
                }
                let addr = format!("{}/24", guest_ip(*n));
                g.exec_ok(&["ip", "addr", "add", &addr, "dev", "eth0"]);
                g.exec_ok(&["ip", "link", "set", "eth0", "up"]);
                g.exec_ok(&["ip", "route", "add", "default", "via", "172.31.240.1"]);
                g
            })
            .collect();
        BridgeWorld {
            host,
            outside,
            guests,
        }
    }
}
