//! Benchmark of per-VM egress-policy changes: `SetEgressPolicy` (a guest's CIDR allowance
//! swapped for another: one netlink transaction) and `AllowLearned` (what hearth's DNS sends
//! per answer) p50/p99 with 10 and with 1000 deny-mode guests, each holding 2 CIDRs, 1
//! CIDR:port and 4 learned addresses; plus `ReconcileEgress` for scale. The probe guest keeps
//! what it learned at 10 guests (one address per iteration, TTL 60 s) into the run at 1000: a
//! policy change keeping the guest's domains must not cost with their number either.
//!
//! Runs as root in a private network namespace it creates (a bridge made here; the host's
//! firewall is never touched) and removes it at the end.
//! `cargo run --release --example bench_egress [-- <iterations>]` (default 2000).

use hearth_testkit as common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use actix::Actor;
use hearth_actors::host::firewall::linux::{IptablesFlavor, LinuxFirewall};
use hearth_actors::lease::MacAddr;
use hearth_actors::nat::egress::{AllowLearned, EgressRules, ReconcileEgress, SetEgressPolicy};
use hearth_actors::nat::{GuestSpec, NatActor, NatConfig, Reconcile, Teardown};

/// Guest `n` of the /21 bridge subnet 172.31.240.0/21 (gateway .240.1).
fn guest_ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 31, 240, 1)) + 1 + n)
}

fn config() -> NatConfig {
    NatConfig {
        bridge: "hearth0".into(),
        cidr: "172.31.240.0/21".parse().expect("literal"),
        gateway: Ipv4Addr::new(172, 31, 240, 1),
        egress: None,
        guest_ports: "hth".into(),
        isolate_guests: true,
        block_guest_to_host: true,
        anti_spoofing: true,
    }
}

/// A policy whose CIDRs depend on `n` (so guests hold distinct elements).
fn rules(n: u32) -> EgressRules {
    let [_, _, hi, lo] = n.to_be_bytes();
    EgressRules {
        nets: BTreeSet::from([
            format!("10.{hi}.{lo}.0/24").parse().expect("cidr"),
            format!("10.200.{lo}.0/24").parse().expect("cidr"),
        ]),
        ports: BTreeSet::from([(format!("192.0.2.{lo}/32").parse().expect("cidr"), 443)]),
        domains: BTreeSet::from(["api.example.com".to_owned()]),
    }
}

fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
    (at(50).as_secs_f64() * 1e3, at(99).as_secs_f64() * 1e3)
}

fn report(what: &str, guests: u32, samples: &mut [Duration]) -> f64 {
    let (p50, p99) = percentiles(samples);
    println!(
        "{what:<34} {guests:>5} deny guests  p50 {p50:>7.4} ms  p99 {p99:>7.4} ms  (n={})",
        samples.len()
    );
    p50
}

#[expect(
    clippy::too_many_lines,
    reason = "one benchmark run, read top to bottom"
)]
fn main() {
    if !common::privileged("bench_egress") {
        return;
    }
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let owner = common::NetNs::new("hbegr");
    let ns = &owner;
    ns.exec_ok(&["ip", "link", "add", "hearth0", "type", "bridge"]);
    ns.exec_ok(&["ip", "addr", "add", "172.31.240.1/21", "dev", "hearth0"]);
    ns.exec_ok(&["ip", "link", "set", "hearth0", "up"]);

    ns.block_on(move || async move {
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let fw = Box::new(LinuxFirewall::new(IptablesFlavor::System));
        let nat = NatActor::new(config(), fw, log).expect("config").start();
        let probe = guest_ip(1500);
        let mut ratios = Vec::new();
        let mut probe_learned = 0;
        for population in [10u32, 1000] {
            let mut desired: Vec<GuestSpec> = (0..population)
                .map(|n| GuestSpec {
                    tap: format!("hth{n}"),
                    ip: guest_ip(n),
                    mac: MacAddr::for_guest(guest_ip(n)),
                    nat: false,
                })
                .collect();
            desired.push(GuestSpec {
                tap: "hth1500".into(),
                ip: probe,
                mac: MacAddr::for_guest(probe),
                nat: false,
            });
            nat.send(Reconcile { desired })
                .await
                .expect("mailbox")
                .expect("reconcile");
            let mut policies: BTreeMap<Ipv4Addr, EgressRules> =
                (0..population).map(|n| (guest_ip(n), rules(n))).collect();
            policies.insert(probe, rules(1500));
            let t = Instant::now();
            nat.send(ReconcileEgress { policies })
                .await
                .expect("mailbox")
                .expect("reconcile egress");
            println!(
                "{:<34} {population:>5} deny guests  {:>7.2} ms (nft -j list, nft -f)",
                "ReconcileEgress",
                t.elapsed().as_secs_f64() * 1e3
            );
            // Four learned addresses per guest, as a population of resolving guests holds.
            for n in 0..population {
                let addrs = (0..4u8)
                    .map(|i| (Ipv4Addr::new(198, 18, i, 1), 300))
                    .collect();
                nat.send(AllowLearned {
                    guest: guest_ip(n),
                    pattern: "api.example.com".into(),
                    addrs,
                })
                .await
                .expect("mailbox")
                .expect("learn");
            }

            println!(
                "{:<34} {population:>5} deny guests  probe holds {probe_learned} learned addresses",
                ""
            );
            let mut change = Vec::new();
            for i in 0..iterations {
                // Alternate between two policies that differ in one CIDR.
                let mut r = rules(1500);
                if i % 2 == 0 {
                    r.nets.insert("10.250.0.0/16".parse().expect("cidr"));
                }
                let t = Instant::now();
                nat.send(SetEgressPolicy {
                    guest: probe,
                    rules: Some(r),
                })
                .await
                .expect("mailbox")
                .expect("set policy");
                change.push(t.elapsed());
            }
            let p50_change = report(
                "SetEgressPolicy (one CIDR swapped)",
                population,
                &mut change,
            );

            let mut learn = Vec::new();
            for i in 0..iterations {
                // A new address each time: every call reaches the kernel.
                let [_, _, hi, lo] = u32::try_from(i).unwrap_or(0).to_be_bytes();
                let t = Instant::now();
                nat.send(AllowLearned {
                    guest: probe,
                    pattern: "api.example.com".into(),
                    addrs: vec![(Ipv4Addr::new(198, 19, hi, lo), 60)],
                })
                .await
                .expect("mailbox")
                .expect("learn");
                learn.push(t.elapsed());
            }
            report("AllowLearned (1 new address)", population, &mut learn);
            probe_learned += iterations;
            ratios.push(p50_change);
        }
        if let [small, large] = ratios[..] {
            println!(
                "SetEgressPolicy p50 at 1000 / at 10: {:.2}x (target <= 1.2x)",
                large / small
            );
        }
        nat.send(Teardown)
            .await
            .expect("mailbox")
            .expect("teardown");
    });
    let left = ns.exec(&["nft", "list", "table", "ip", "hearth-egress"]);
    assert!(!left.status.success(), "teardown left the egress table");
    println!("teardown: no egress table left");
}
