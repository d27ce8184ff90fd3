//! Benchmark of per-VM NAT changes: `EnsureNat` enable/disable latency (p50/p99) with 10 and
//! with 1000 NAT-enabled guests, through the actor (message round trip) and through the raw
//! firewall backend, plus `RegisterGuest` and a full `Reconcile` for scale.
//!
//! Runs as root in a private network namespace it creates (a veth "uplink" and a bridge made
//! here; the host's firewall is never touched), and removes it at the end.
//! `cargo run --release --example bench_nat [-- <iterations> [nft|legacy]]` (default: 2000
//! iterations, the system's `iptables`); described in docs/bench/nat.md.
#![expect(
    clippy::disallowed_methods,
    reason = "examples drive real tools and binaries directly and clean up their own directories"
)]

use hearth_testkit as common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use actix::Actor;
use hearth_actors::host::firewall::linux::{IptablesFlavor, LinuxFirewall};
use hearth_actors::host::firewall::{Firewall, SetEntry};
use hearth_actors::lease::{MacAddr, NetLease};
use hearth_actors::nat::rules::NAT_SET;
use hearth_actors::nat::{
    EnsureNat, GuestSpec, NatActor, NatConfig, Reconcile, RegisterGuest, Teardown, UnregisterGuest,
};

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

/// p50 and p99 of samples, in milliseconds.
fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
    (at(50).as_secs_f64() * 1e3, at(99).as_secs_f64() * 1e3)
}

fn report(what: &str, guests: usize, samples: &mut [Duration]) {
    let (p50, p99) = percentiles(samples);
    println!(
        "{what:<34} {guests:>5} NAT guests  p50 {p50:>7.4} ms  p99 {p99:>7.4} ms  (n={})",
        samples.len()
    );
}

fn iptables_version() -> String {
    Command::new("iptables").arg("-V").output().map_or_else(
        |e| format!("iptables -V failed: {e}"),
        |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
    )
}

fn main() {
    if !common::privileged("bench_nat") {
        return;
    }
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let flavor = match std::env::args().nth(2).as_deref() {
        Some("legacy") => IptablesFlavor::Legacy,
        Some("nft") => IptablesFlavor::Nft,
        _ => IptablesFlavor::System,
    };
    println!(
        "bench_nat: `iptables -V`: {}; running {flavor:?} ({}), {iterations} iterations per figure",
        iptables_version(),
        flavor.iptables()
    );

    let owner = common::NetNs::new("hbnat");
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
        // The probe guest is outside the NAT-enabled population.
        let probe = guest_ip(1500);
        let lease = NetLease {
            tap: "hth1500".into(),
            mac: MacAddr::for_guest(probe),
            guest_ip: probe,
            gateway: Ipv4Addr::new(172, 31, 240, 1),
            prefix_len: 21,
        };

        for population in [10u32, 1000] {
            let desired: Vec<GuestSpec> = (0..population)
                .map(|n| GuestSpec { tap: format!("hth{n}"), ip: guest_ip(n), mac: MacAddr::for_guest(guest_ip(n)), nat: true })
                .collect();
            let start = Instant::now();
            nat.send(Reconcile { desired }).await.expect("mailbox").expect("reconcile");
            println!(
                "{:<34} {population:>5} NAT guests  {:>7.2} ms (3 listings, ipset restore, iptables-restore)",
                "Reconcile",
                start.elapsed().as_secs_f64() * 1e3
            );

            let (mut on, mut off) = (Vec::new(), Vec::new());
            for _ in 0..iterations {
                for (enable, samples) in [(true, &mut on), (false, &mut off)] {
                    let msg = EnsureNat { guest_ip: probe, tap: "hth1500".into(), enable };
                    let t = Instant::now();
                    nat.send(msg).await.expect("mailbox").expect("ensure nat");
                    samples.push(t.elapsed());
                }
            }
            report("EnsureNat enable (actor)", population as usize, &mut on);
            report("EnsureNat disable (actor)", population as usize, &mut off);

            let (mut reg, mut unreg) = (Vec::new(), Vec::new());
            for _ in 0..iterations / 4 {
                let t = Instant::now();
                nat.send(RegisterGuest { lease: lease.clone() }).await.expect("mailbox").expect("register");
                reg.push(t.elapsed());
                let t = Instant::now();
                nat.send(UnregisterGuest { lease: lease.clone() }).await.expect("mailbox").expect("unregister");
                unreg.push(t.elapsed());
            }
            report("RegisterGuest (actor)", population as usize, &mut reg);
            report("UnregisterGuest (actor, 2 sets)", population as usize, &mut unreg);

            // The raw backend, without the mailbox.
            let mut raw = LinuxFirewall::new(flavor);
            let (mut add, mut del) = (Vec::new(), Vec::new());
            for _ in 0..iterations {
                let t = Instant::now();
                raw.add_to_set(NAT_SET, SetEntry::Ip(probe)).expect("add");
                add.push(t.elapsed());
                let t = Instant::now();
                raw.remove_from_set(NAT_SET, SetEntry::Ip(probe)).expect("del");
                del.push(t.elapsed());
            }
            report("add_to_set (raw libipset)", population as usize, &mut add);
            report("remove_from_set (raw libipset)", population as usize, &mut del);
        }

        // For scale: the same change as a process, which hearth does not do per VM.
        let mut spawned = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let ok = Command::new("ipset")
                .args(["add", "-exist", NAT_SET, &probe.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ipset add process failed");
            spawned.push(t.elapsed());
        }
        report("`ipset add` process (reference)", 1000, &mut spawned);

        nat.send(Teardown).await.expect("mailbox").expect("teardown");
    });
    let left = ns.exec_ok(&[flavor.iptables(), "-S"]);
    assert!(!left.contains("HEARTH"), "teardown left rules: {left}");
    println!("teardown: no hearth chain or set left");
}
