//! Benchmark of publishing one VM's port: `PublishPorts` + `UnpublishPorts` latency (p50/p99)
//! through `NatActor` with 10 and with 1000 other VMs each publishing a port, so the cost
//! can be compared across populations (target: p50 at 1000 within 1.2x that at 10). Same
//! method as `bench_nat`.
//!
//! Runs as root in a private network namespace it creates (a veth "uplink" and a bridge made
//! here; the host's firewall is never touched), and removes it at the end.
//! `cargo run --release --example bench_publish [-- <iterations> [nft|legacy]]` (default: 200
//! iterations, the system's `iptables`).
use hearth_testkit as common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use actix::Actor;
use hearth_actors::host::firewall::linux::{IptablesFlavor, LinuxFirewall};
use hearth_actors::lease::MacAddr;
use hearth_actors::nat::{
    GuestSpec, NatActor, NatConfig, PublishPorts, Reconcile, Teardown, UnpublishPorts,
};
use hearth_proto::api_publish::{PortMapping, Protocol};

/// Guest `n` of the /21 bridge subnet 172.31.240.0/21 (gateway .240.1).
fn guest_ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 31, 240, 1)) + 1 + n)
}

fn config() -> NatConfig {
    NatConfig {
        bridge: "hearth0".into(),
        cidr: "172.31.240.0/21".parse().expect("literal"),
        gateway: Ipv4Addr::new(172, 31, 240, 1),
        egress: Some("wan0".into()),
        guest_ports: "hth".into(),
        isolate_guests: true,
        block_guest_to_host: true,
        anti_spoofing: true,
    }
}

fn port(host_port: u16) -> PortMapping {
    PortMapping {
        host_addr: None,
        host_port,
        guest_port: 80,
        protocol: Protocol::Tcp,
    }
}

/// Guests `0..population`, NAT on.
fn desired(population: u32) -> Vec<GuestSpec> {
    (0..population)
        .map(|n| GuestSpec {
            tap: format!("hth{n}"),
            ip: guest_ip(n),
            mac: MacAddr::for_guest(guest_ip(n)),
            nat: true,
        })
        .collect()
}

/// p50 and p99 of samples, in milliseconds.
fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
    (at(50).as_secs_f64() * 1e3, at(99).as_secs_f64() * 1e3)
}

fn report(what: &str, vms: u32, samples: &mut [Duration]) -> f64 {
    let (p50, p99) = percentiles(samples);
    println!(
        "{what:<28} {vms:>5} publishing VMs  p50 {p50:>7.3} ms  p99 {p99:>7.3} ms  (n={})",
        samples.len()
    );
    p50
}

fn main() {
    if !common::privileged("bench_publish") {
        return;
    }
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let flavor = match std::env::args().nth(2).as_deref() {
        Some("legacy") => IptablesFlavor::Legacy,
        Some("nft") => IptablesFlavor::Nft,
        _ => IptablesFlavor::System,
    };
    println!(
        "bench_publish: {flavor:?} ({}), {iterations} iterations per figure",
        flavor.iptables()
    );

    let owner = common::NetNs::new("hbpub");
    let ns = &owner;
    ns.exec_ok(&[
        "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan0p",
    ]);
    ns.exec_ok(&["ip", "link", "set", "wan0", "up"]);
    ns.exec_ok(&["ip", "link", "add", "hearth0", "type", "bridge"]);
    ns.exec_ok(&["ip", "addr", "add", "172.31.240.1/21", "dev", "hearth0"]);
    ns.exec_ok(&["ip", "link", "set", "hearth0", "up"]);

    ns.block_on(move || async move {
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let fw = Box::new(LinuxFirewall::new(flavor));
        let nat = NatActor::new(config(), fw, log).expect("valid config").start();
        let probe = guest_ip(1500);
        let mut p50s = Vec::new();
        for population in [10u32, 1000] {
            nat.send(Reconcile { desired: desired(population) }).await.expect("mailbox").expect("reconcile");
            // The population: VM n publishes host port 20000 + n.
            let start = Instant::now();
            for n in 0..population {
                let msg = PublishPorts {
                    vm: format!("vm{n}"),
                    guest_ip: guest_ip(n),
                    mappings: vec![port(20000 + u16::try_from(n).expect("small"))],
                };
                nat.send(msg).await.expect("mailbox").expect("publish");
            }
            println!(
                "{:<28} {population:>5} publishing VMs  {:>9.1} ms in all",
                "population published",
                start.elapsed().as_secs_f64() * 1e3
            );
            let start = Instant::now();
            nat.send(Reconcile { desired: desired(population) }).await.expect("mailbox").expect("reconcile");
            println!(
                "{:<28} {population:>5} publishing VMs  {:>9.1} ms (chains, tables, all ports rewritten)",
                "Reconcile",
                start.elapsed().as_secs_f64() * 1e3
            );

            let (mut on, mut off) = (Vec::new(), Vec::new());
            for _ in 0..iterations {
                let t = Instant::now();
                let msg = PublishPorts {
                    vm: "probe".into(),
                    guest_ip: probe,
                    mappings: vec![port(8080)],
                };
                nat.send(msg).await.expect("mailbox").expect("publish");
                on.push(t.elapsed());
                let t = Instant::now();
                let msg = UnpublishPorts {
                    vm: "probe".into(),
                    mappings: None,
                };
                nat.send(msg).await.expect("mailbox").expect("unpublish");
                off.push(t.elapsed());
            }
            p50s.push(report("PublishPorts (actor)", population, &mut on));
            report("UnpublishPorts (actor)", population, &mut off);
            for n in 0..population {
                let msg = UnpublishPorts {
                    vm: format!("vm{n}"),
                    mappings: None,
                };
                nat.send(msg).await.expect("mailbox").expect("unpublish");
            }
        }
        println!(
            "PublishPorts p50 at 1000 / at 10: {:.2}x (target <= 1.2x)",
            p50s[1] / p50s[0]
        );
        nat.send(Teardown).await.expect("mailbox").expect("teardown");
    });
    let left = ns.exec_ok(&[flavor.iptables(), "-t", "nat", "-S"]);
    assert!(!left.contains("HEARTH"), "teardown left rules: {left}");
    let tables = ns.exec_ok(&["nft", "list", "tables"]);
    assert!(
        !tables.contains("hearth-publish"),
        "teardown left the publish table: {tables}"
    );
    println!("teardown: no hearth chain or publish table left");
}
