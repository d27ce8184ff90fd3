//! A hearth host for data-plane tests: a "host" namespace where hearth's real network actors
//! (`TapPoolActor`, `NatActor`, `DnsActor`) run, an "upstream" namespace behind a veth that
//! stands for the outside world (the host's egress side), and guests (the simulated guest
//! stack of `firecracker-sim`) on leased TAPs.
//!
//! Use it with `mod common; use common::hearth_net;`. Run [`Hearth::start`] and
//! [`Hearth::add_guest`] inside `net.host.block_on(..)`; guests' blocking calls go through
//! [`blocking`] so the actors keep running meanwhile.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools and binaries (ip, mkfs, hearthd, hearthctl) and clean up their own directories"
)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use actix::{Actor, Addr};
use firecracker_sim::netstack::{open_tap, GuestStack, NetConfig, VnetHdr};
use hearth_actors::dns::{DnsActor, DnsOptions, ReplaceRecords, Start};
use hearth_actors::host::firewall::linux::{IptablesFlavor, LinuxFirewall};
use hearth_actors::host::links::linux::LinuxLinks;
use hearth_actors::lease::NetLease;
use hearth_actors::nat::{EnsureNat, NatActor, NatConfig, Reconcile, RegisterGuest};
use hearth_actors::tap_pool::{AcquireTap, Initialize, TapPoolActor, TapPoolConfig};
use std::time::Duration;

use hearth_testkit::{self as common, NetNs};

/// hearth's bridge in the host namespace.
pub const BRIDGE: &str = "hearth0";
/// The bridge subnet.
pub const CIDR: &str = "172.31.240.0/24";
/// The bridge address: guests' gateway and DNS server.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 31, 240, 1);
/// The egress interface in the host namespace.
pub const EGRESS_IF: &str = "wan0";
/// The host's egress address: what NATed guests look like upstream.
pub const EGRESS_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The upstream namespace's address.
pub const UPSTREAM_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The DNS zone of VM names.
pub const ZONE: &str = "vm.internal";

/// The isolation switches of hearthd's `[network]` config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switches {
    /// `isolate_guests`: isolated bridge ports and no routing between guests.
    pub isolate_guests: bool,
    /// `block_guest_to_host`: guests reach the host only for DNS.
    pub block_guest_to_host: bool,
    /// `anti_spoofing`: only a lease's (IP, MAC) may send.
    pub anti_spoofing: bool,
}

impl Switches {
    /// hearth's defaults: everything on.
    pub const DEFAULTS: Switches = Switches {
        isolate_guests: true,
        block_guest_to_host: true,
        anti_spoofing: true,
    };
}

/// The two namespaces, linked by a veth (`wan0` in the host, `up0` upstream).
pub struct Net {
    /// Where hearth's actors, the bridge and the TAPs live.
    pub host: NetNs,
    /// The outside world.
    pub upstream: NetNs,
}

impl Net {
    /// Creates both namespaces and the link between them.
    pub fn new(prefix: &str) -> Self {
        let host = NetNs::new(&format!("{prefix}-h"));
        let upstream = NetNs::new(&format!("{prefix}-u"));
        common::veth(
            &host,
            EGRESS_IF,
            &format!("{EGRESS_IP}/24"),
            &upstream,
            "up0",
            &format!("{UPSTREAM_IP}/24"),
        );
        Net { host, upstream }
    }
}

/// hearth's network actors, running on the current (host namespace) thread.
pub struct Hearth {
    /// The TAP pool.
    pub taps: Addr<TapPoolActor>,
    /// NAT and the firewall.
    pub nat: Addr<NatActor>,
    /// The DNS server on the gateway.
    pub dns: Addr<DnsActor>,
}

/// A guest: its lease and the simulated guest stack on the leased TAP.
pub struct Guest {
    /// What the TAP pool leased.
    pub lease: NetLease,
    /// The guest's network stack.
    pub stack: Arc<GuestStack>,
}

impl Guest {
    /// Runs a blocking call on the guest's stack off the actor thread (see [`blocking`]).
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&GuestStack) -> T + Send + 'static,
    ) -> T {
        let stack = self.stack.clone();
        blocking(move || f(&stack)).await
    }

    /// The guest's IP.
    pub fn ip(&self) -> Ipv4Addr {
        self.lease.guest_ip
    }

    /// The guest's MAC.
    pub fn mac(&self) -> [u8; 6] {
        self.lease.mac.0
    }
}

impl Hearth {
    /// Starts the actors as hearthd would with `switches`: the pool initialised (bridge up,
    /// its MAC set by the pool), the firewall reconciled with no guests, DNS serving on the
    /// gateway.
    pub async fn start(switches: Switches) -> Hearth {
        Self::start_with_upstreams(switches, vec![]).await
    }

    /// [`Hearth::start`] with DNS forwarding other names to `upstreams`.
    pub async fn start_with_upstreams(switches: Switches, upstreams: Vec<SocketAddr>) -> Hearth {
        let log = common::test_logger();
        let cidr = CIDR.parse().expect("CIDR");
        let links = Rc::new(LinuxLinks::new().expect("netlink"));
        let pool = TapPoolConfig {
            bridge: BRIDGE.into(),
            cidr,
            pool_size: 2,
            isolate: switches.isolate_guests,
            ..TapPoolConfig::default()
        };
        let taps = TapPoolActor::new(pool, links, log.clone())
            .expect("TAP pool config")
            .start();
        taps.send(Initialize { used: vec![] })
            .await
            .expect("TAP pool mailbox")
            .expect("Initialize");
        let nat_config = NatConfig {
            bridge: BRIDGE.into(),
            cidr,
            gateway: GATEWAY,
            egress: Some(EGRESS_IF.into()),
            guest_ports: "hth".into(),
            isolate_guests: switches.isolate_guests,
            block_guest_to_host: switches.block_guest_to_host,
            anti_spoofing: switches.anti_spoofing,
        };
        let firewall = Box::new(LinuxFirewall::new(IptablesFlavor::Nft));
        let nat = NatActor::new(nat_config, firewall, log.clone())
            .expect("NAT config")
            .start();
        nat.send(Reconcile { desired: vec![] })
            .await
            .expect("NAT mailbox")
            .expect("Reconcile");
        let mut options = DnsOptions::new(ZONE, upstreams);
        options.guest_subnet = Some(cidr);
        let dns = DnsActor::new(options, log).expect("DNS options").start();
        dns.send(Start {
            listen: SocketAddr::new(GATEWAY.into(), 53),
        })
        .await
        .expect("DNS mailbox")
        .expect("DNS Start");
        Hearth { taps, nat, dns }
    }

    /// Leases a TAP, registers the guest with NAT (anti-spoofing) and sets its NAT flag, and
    /// starts a guest stack on the TAP configured from the lease's `ip=` boot argument.
    pub async fn add_guest(&self, nat: bool) -> Guest {
        let lease = self
            .taps
            .send(AcquireTap {})
            .await
            .expect("TAP pool mailbox")
            .expect("AcquireTap");
        self.nat
            .send(RegisterGuest {
                lease: lease.clone(),
            })
            .await
            .expect("NAT mailbox")
            .expect("RegisterGuest");
        self.set_nat(&lease, nat).await;
        // This thread is in the host namespace, where the leased (persistent) TAP is.
        let fd = open_tap(&lease.tap, VnetHdr::V1Len12).expect("open leased TAP");
        let mut config =
            NetConfig::from_kernel_cmdline(lease.mac.0, &lease.kernel_ip_arg()).expect("ip=");
        config.vnet_hdr = VnetHdr::V1Len12;
        config.timeout = Duration::from_secs(3);
        let stack = Arc::new(GuestStack::spawn(fd, config).expect("guest stack"));
        Guest { lease, stack }
    }

    /// Turns NAT on or off for a guest.
    pub async fn set_nat(&self, lease: &NetLease, enable: bool) {
        self.nat
            .send(EnsureNat {
                guest_ip: lease.guest_ip,
                tap: lease.tap.clone(),
                enable,
            })
            .await
            .expect("NAT mailbox")
            .expect("EnsureNat");
    }

    /// Publishes `name -> ip` records in DNS.
    pub async fn set_records(&self, records: &[(&str, Ipv4Addr)]) {
        let records: HashMap<String, Ipv4Addr> =
            records.iter().map(|(n, ip)| (n.to_string(), *ip)).collect();
        self.dns
            .send(ReplaceRecords { records })
            .await
            .expect("DNS mailbox")
            .expect("ReplaceRecords");
    }
}

/// The bridge's MAC, as `ip` prints it. Runs `ip` from this thread (so in its namespace).
pub fn bridge_mac() -> String {
    let out = ip(&["-o", "link", "show", "dev", BRIDGE]);
    out.split("link/ether ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no MAC in {out}"))
        .to_string()
}

/// Runs `ip` in this thread's namespace and returns its stdout; panics when it fails.
fn ip(args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("spawn ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a blocking guest call off the actor thread and waits for it.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
