//! Egress policy with real packets: hearth's network actors in a host namespace, the outside
//! world (echo servers, a UDP sink, a dnsmasq as hearth's upstream resolver, serving a short
//! TTL and a CNAME) in an upstream namespace, and a simulated guest on a leased TAP.
//!
//! With `deny`, the guest reaches its allowed CIDRs (and ports), an allowed domain's address
//! only after resolving it through hearth (also through a CNAME chain, and `*.x` only for
//! subdomains) and only until the record's TTL has passed; a literal address outside the
//! allowlist and DNS to any resolver but hearth's are dropped and counted. A fresh `NatActor`
//! (hearthd restarted) reconciling the same policies keeps what was learned and the counter;
//! back to allow mode and unregistering leave no element behind; teardown no table.
#![expect(
    clippy::disallowed_methods,
    reason = "the test starts dnsmasq in its own namespace"
)]

mod common;
use common::hearth_net;
use hearth_testkit::guest::{PeerEchoServer, UdpSink};

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use actix::Actor;
use firecracker_sim::netstack::frames::{self, FrameAddrs};
use hearth_actors::dns::{SetEgressDomains, SetEgressLearner};
use hearth_actors::host::firewall::linux::{IptablesFlavor, LinuxFirewall};
use hearth_actors::nat::egress::{EgressRules, GetEgressDenied, ReconcileEgress, SetEgressPolicy};
use hearth_actors::nat::{
    GuestSpec, NatActor, NatConfig, PublishPorts, Reconcile, Teardown, UnregisterGuest,
};
use hearth_net::{Guest, Hearth, Net, Switches, BRIDGE, CIDR, EGRESS_IF, EGRESS_IP, GATEWAY};

/// How long a check waits for traffic that must not get through.
const NEGATIVE: Duration = Duration::from_secs(2);
const PORT: u16 = 8000;

/// Addresses in the upstream namespace (198.51.100.2 is the veth's own).
const ALLOWED_NET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const DOMAIN_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const LITERAL_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 4);
const RESOLVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 5);
const PORT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 6);

/// dnsmasq as hearth's upstream: `api.example.com` is a CNAME (TTL 1) to
/// `real.example.net` (198.51.100.3, TTL 1); `example.org` and its subdomains are
/// 198.51.100.4.
struct Upstream(Child);

impl Upstream {
    fn start(ns: &str) -> Self {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "dnsmasq",
                "-k",
                "--conf-file=/dev/null",
            ])
            .args([
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--user=root",
            ])
            .args(["--pid-file=", "--local-ttl=1"])
            .arg(format!("--listen-address={RESOLVER_IP}"))
            .arg(format!("--host-record=real.example.net,{DOMAIN_IP}"))
            .arg("--cname=api.example.com,real.example.net,1")
            .arg(format!("--address=/example.org/{LITERAL_IP}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq (apt-get install dnsmasq)");
        Upstream(child)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn reaches(g: &Guest, ip: Ipv4Addr, port: u16) -> bool {
    g.call(move |s| s.tcp_connect_within(ip, port, b"hi", NEGATIVE))
        .await
        .is_ok()
}

async fn resolve(g: &Guest, name: &'static str) -> Option<Ipv4Addr> {
    g.call(move |s| s.resolve(name)).await.ok()
}

/// Sends one UDP datagram from the guest, routed via the gateway, to `dst`.
async fn send_udp(g: &Guest, dst: SocketAddrV4, payload: &'static [u8]) {
    let gw_mac = g
        .call(|s| s.neighbor_mac(GATEWAY))
        .await
        .expect("ARP for the gateway");
    let addrs = FrameAddrs {
        src_mac: g.mac(),
        dst_mac: gw_mac,
        src_ip: g.ip(),
        dst_ip: *dst.ip(),
    };
    let frame = frames::udp_frame(addrs, 40_000, dst.port(), payload);
    g.call(move |s| s.send_raw_frame(&frame))
        .await
        .expect("send frame");
}

fn rules() -> EgressRules {
    EgressRules {
        nets: BTreeSet::from([format!("{ALLOWED_NET}/32").parse().unwrap()]),
        ports: BTreeSet::from([(format!("{PORT_IP}/32").parse().unwrap(), PORT)]),
        domains: BTreeSet::from(["api.example.com".to_owned(), "*.example.org".to_owned()]),
    }
}

/// The elements of every set of hearth's egress table (`nft list`), or `None` without table.
fn egress_elements(net: &Net) -> Option<String> {
    let out = net
        .host
        .exec(&["nft", "list", "table", "ip", "hearth-egress"]);
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("elements"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one guest's story (allow, deny, learn, expire, restart, allow, delete), read top to bottom"
)]
fn deny_mode_reaches_only_allowed_nets_and_names_resolved_through_hearth() {
    require_privileged!();
    let net = Net::new("hegr");
    for ip in [DOMAIN_IP, LITERAL_IP, RESOLVER_IP, PORT_IP] {
        net.upstream
            .exec_ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "up0"]);
    }
    let _dns = Upstream::start(net.upstream.name());
    let servers: Vec<PeerEchoServer> = [
        (ALLOWED_NET, PORT),
        (DOMAIN_IP, PORT),
        (LITERAL_IP, PORT),
        (PORT_IP, PORT),
        (PORT_IP, PORT + 1),
    ]
    .into_iter()
    .map(|(ip, port)| PeerEchoServer::start(&net.upstream, SocketAddrV4::new(ip, port)))
    .collect();
    let allowed_sink = UdpSink::bind(&net.upstream, SocketAddrV4::new(ALLOWED_NET, 5300));
    let foreign_resolver = UdpSink::bind(&net.upstream, SocketAddrV4::new(ALLOWED_NET, 53));

    net.host.block_on(|| async {
        let upstreams = vec![SocketAddr::new(RESOLVER_IP.into(), 53)];
        let hearth = Hearth::start_with_upstreams(Switches::DEFAULTS, upstreams).await;
        hearth
            .nat
            .send(ReconcileEgress {
                policies: BTreeMap::new(),
            })
            .await
            .unwrap()
            .expect("ReconcileEgress");
        hearth
            .dns
            .send(SetEgressLearner {
                learner: Some(hearth.nat.clone().recipient()),
            })
            .await
            .unwrap();
        let a = hearth.add_guest(true).await;

        // Allow mode (the default): everything NAT reaches.
        assert!(reaches(&a, LITERAL_IP, PORT).await, "allow mode");

        // Deny mode.
        hearth
            .nat
            .send(SetEgressPolicy {
                guest: a.ip(),
                rules: Some(rules()),
            })
            .await
            .unwrap()
            .expect("SetEgressPolicy");
        hearth
            .dns
            .send(SetEgressDomains {
                guest: a.ip(),
                domains: Some(rules().domains.into_iter().collect()),
            })
            .await
            .unwrap()
            .expect("SetEgressDomains");

        assert!(
            !reaches(&a, LITERAL_IP, PORT).await,
            "literal IP outside the allowlist"
        );
        assert!(reaches(&a, ALLOWED_NET, PORT).await, "allowed CIDR");
        assert!(reaches(&a, PORT_IP, PORT).await, "allowed CIDR:port");
        assert!(
            !reaches(&a, PORT_IP, PORT + 1).await,
            "other port of a CIDR:port"
        );

        // DNS to a foreign resolver is dropped even inside an allowed CIDR; the same
        // datagram to another port of it passes (so the drop is the DNS rule's).
        send_udp(&a, SocketAddrV4::new(ALLOWED_NET, 53), b"foreign").await;
        send_udp(&a, SocketAddrV4::new(ALLOWED_NET, 5300), b"control").await;
        assert!(allowed_sink.wait_for(b"control", NEGATIVE).is_some());
        assert!(foreign_resolver.wait_for(b"foreign", NEGATIVE).is_none());

        // An allowed domain: unreachable before resolving, reachable after (through the
        // CNAME chain), unreachable again once its TTL (1 s, floored to 2 s) has passed.
        assert!(!reaches(&a, DOMAIN_IP, PORT).await, "before resolving");
        assert_eq!(resolve(&a, "api.example.com").await, Some(DOMAIN_IP));
        assert!(reaches(&a, DOMAIN_IP, PORT).await, "after resolving");
        // The learned entry's kernel timeout ends it: polled, within the same 3 s bound.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while reaches(&a, DOMAIN_IP, PORT).await {
            assert!(
                std::time::Instant::now() < deadline,
                "still reachable after the TTL"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // `*.example.org` allows subdomains only: resolving the apex learns nothing.
        assert_eq!(resolve(&a, "example.org").await, Some(LITERAL_IP));
        assert!(!reaches(&a, LITERAL_IP, PORT).await, "apex of a wildcard");
        assert_eq!(resolve(&a, "www.example.org").await, Some(LITERAL_IP));
        assert!(
            reaches(&a, LITERAL_IP, PORT).await,
            "subdomain of a wildcard"
        );

        // Denied packets were counted for this guest.
        let denied = hearth.nat.send(GetEgressDenied).await.unwrap().unwrap();
        let before_restart = denied.get(&a.ip()).copied().unwrap_or(0);
        assert!(before_restart > 0, "{denied:?}");

        // hearthd restarts: a fresh NatActor reconciles the same guest and policy and keeps
        // the learned address (reachable without resolving again) and the counter.
        let config = NatConfig {
            bridge: BRIDGE.into(),
            cidr: CIDR.parse().unwrap(),
            gateway: GATEWAY,
            egress: Some(EGRESS_IF.into()),
            guest_ports: "hth".into(),
            isolate_guests: true,
            block_guest_to_host: true,
            anti_spoofing: true,
        };
        let firewall = Box::new(LinuxFirewall::new(IptablesFlavor::Nft));
        let nat = NatActor::new(config, firewall, common::test_logger())
            .unwrap()
            .start();
        let spec = GuestSpec {
            tap: a.lease.tap.clone(),
            ip: a.ip(),
            mac: a.lease.mac,
            nat: true,
        };
        nat.send(Reconcile {
            desired: vec![spec],
        })
        .await
        .unwrap()
        .expect("Reconcile after restart");
        nat.send(ReconcileEgress {
            policies: BTreeMap::from([(a.ip(), rules())]),
        })
        .await
        .unwrap()
        .expect("ReconcileEgress after restart");
        hearth
            .dns
            .send(SetEgressLearner {
                learner: Some(nat.clone().recipient()),
            })
            .await
            .unwrap();
        assert!(
            reaches(&a, LITERAL_IP, PORT).await,
            "learned, kept over restart"
        );
        assert!(
            !reaches(&a, DOMAIN_IP, PORT).await,
            "still expired after restart"
        );
        let after = nat.send(GetEgressDenied).await.unwrap().unwrap();
        assert!(
            after.get(&a.ip()).copied().unwrap_or(0) > before_restart,
            "counter kept and counting: {after:?}"
        );
        // And it still learns through the new actor.
        assert_eq!(resolve(&a, "api.example.com").await, Some(DOMAIN_IP));
        assert!(reaches(&a, DOMAIN_IP, PORT).await, "learned after restart");

        // Back to allow mode at run time: everything reachable, the guest's elements gone.
        nat.send(SetEgressPolicy {
            guest: a.ip(),
            rules: None,
        })
        .await
        .unwrap()
        .expect("allow mode");
        assert!(reaches(&a, PORT_IP, PORT + 1).await, "allow mode again");
        let guest = a.ip().to_string();
        let left = egress_elements(&net).expect("table");
        assert!(!left.contains(&guest), "{left}");

        // Deny again, then the VM goes: unregistering leaves no element.
        nat.send(SetEgressPolicy {
            guest: a.ip(),
            rules: Some(rules()),
        })
        .await
        .unwrap()
        .expect("deny again");
        assert_eq!(resolve(&a, "www.example.org").await, Some(LITERAL_IP));
        assert!(egress_elements(&net).unwrap().contains(&guest));
        nat.send(UnregisterGuest {
            lease: a.lease.clone(),
        })
        .await
        .unwrap()
        .expect("UnregisterGuest");
        let left = egress_elements(&net).expect("table");
        assert!(!left.contains(&guest), "{left}");

        nat.send(Teardown).await.unwrap().expect("Teardown");
        assert!(egress_elements(&net).is_none(), "table left after teardown");
    });
    drop(servers);
}

/// A published port reached through a host address (hairpin) counts as a connection to that
/// address and port: a deny-mode guest reaches it only when its allowlist has them, judged
/// before hearth's publish table sends the connection to the port's hairpin proxy.
#[test]
fn deny_mode_reaches_a_published_port_through_the_host_only_when_the_address_is_allowed() {
    require_privileged!();
    let net = Net::new("hegh");
    net.host.block_on(|| async {
        let hearth = Hearth::start(Switches::DEFAULTS).await;
        hearth
            .nat
            .send(ReconcileEgress {
                policies: BTreeMap::new(),
            })
            .await
            .unwrap()
            .expect("ReconcileEgress");
        let (a, web) = (hearth.add_guest(false).await, hearth.add_guest(false).await);
        web.call(|s| s.serve_tcp(80, b"web")).await.expect("serve");
        hearth
            .nat
            .send(PublishPorts {
                vm: "web".into(),
                guest_ip: web.ip(),
                mappings: vec!["8080:80".parse().unwrap()],
            })
            .await
            .unwrap()
            .expect("publish");
        let answer = |a: &Guest| {
            let g = a.stack.clone();
            hearth_net::blocking(move || g.tcp_connect_within(EGRESS_IP, 8080, b"hi", NEGATIVE))
        };
        // Allow mode: the hairpin answers (the control for the refusals below).
        assert_eq!(answer(&a).await.expect("allow mode"), b"web");

        let deny = |rules: EgressRules| SetEgressPolicy {
            guest: a.ip(),
            rules: Some(rules),
        };
        let host = |s: &str| -> ipnet::Ipv4Net { s.parse().unwrap() };
        for (rules, reached, what) in [
            (EgressRules::default(), false, "an empty allowlist"),
            (
                EgressRules {
                    ports: BTreeSet::from([(host(&format!("{EGRESS_IP}/32")), 8081)]),
                    ..EgressRules::default()
                },
                false,
                "another port of the host's address",
            ),
            (
                EgressRules {
                    nets: BTreeSet::from([host("172.31.240.0/24")]),
                    ..EgressRules::default()
                },
                false,
                "the guests' subnet (web's own address)",
            ),
            (
                EgressRules {
                    ports: BTreeSet::from([(host(&format!("{EGRESS_IP}/32")), 8080)]),
                    ..EgressRules::default()
                },
                true,
                "the host's address and the port",
            ),
            (
                EgressRules {
                    nets: BTreeSet::from([host("198.51.100.0/24")]),
                    ..EgressRules::default()
                },
                true,
                "a range holding the host's address",
            ),
        ] {
            hearth
                .nat
                .send(deny(rules))
                .await
                .unwrap()
                .expect("SetEgressPolicy");
            let r = answer(&a).await;
            assert_eq!(r.is_ok(), reached, "{what}: {r:?}");
        }
        hearth.nat.send(Teardown).await.unwrap().expect("Teardown");
    });
}
