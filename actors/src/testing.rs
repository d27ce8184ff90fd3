//! Fixtures shared by this crate's unit tests and the integration tests of the crates above it
//! (compiled only for tests or with the `testing` feature): the guest network every firewall
//! test uses, `172.31.240.0/24` behind the bridge `hearth0` with guests on `hth<n>` TAPs.
#![expect(
    clippy::missing_panics_doc,
    reason = "test fixtures: a set-up that fails panics, failing the test that asked for it"
)]

use std::net::Ipv4Addr;

use crate::lease::NetLease;
use crate::mac::MacAddr;
use crate::nat::{GuestSpec, NatConfig};

/// Guest `n`'s address, `172.31.240.<n>` (`1` is the gateway).
pub fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 31, 240, n)
}

/// The firewall's config for the test network, every protection on, NAT out of `egress`.
pub fn nat_config(egress: &str) -> NatConfig {
    NatConfig {
        bridge: "hearth0".into(),
        cidr: "172.31.240.0/24".parse().expect("valid literal"),
        gateway: ip(1),
        egress: Some(egress.into()),
        guest_ports: "hth".into(),
        isolate_guests: true,
        block_guest_to_host: true,
        anti_spoofing: true,
    }
}

/// Guest `n` as the firewall wants it: TAP `hth<n>`, its address and MAC, NAT as given.
pub fn guest(n: u8, nat: bool) -> GuestSpec {
    GuestSpec {
        tap: format!("hth{n}"),
        ip: ip(n),
        mac: MacAddr::for_guest(ip(n)),
        nat,
    }
}

/// Guest `n`'s lease: TAP `hth<n>`, its address and MAC, the gateway, a /24.
pub fn lease(n: u8) -> NetLease {
    NetLease {
        tap: format!("hth{n}"),
        mac: MacAddr::for_guest(ip(n)),
        guest_ip: ip(n),
        gateway: ip(1),
        prefix_len: 24,
    }
}
