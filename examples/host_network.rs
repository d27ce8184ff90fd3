//! The three network actors on their own, against the real kernel: `TapPoolActor` (bridge +
//! pool of TAPs + leases), `NatActor` (hearth's iptables chains and ipsets) and `DnsActor`
//! (names of VMs on the gateway address), with the Linux backends.
//!
//! Everything happens inside a private network namespace this program creates (`ip netns
//! add`) with a veth `wan0` standing for the uplink; the host's own interfaces, routes and
//! firewall are never touched. It leases two TAPs, turns NAT on for one guest, answers both
//! names over DNS (queried with `dig` inside the namespace), prints what it made, then takes
//! it all down with each actor's teardown message, counts what is left, and deletes the
//! namespace (also on error: the namespace guard deletes it when dropped).
//!
//! ```text
//! sudo cargo run --example host_network
//! ```
#![expect(
    clippy::disallowed_methods,
    reason = "examples drive real tools and binaries directly and clean up their own directories"
)]

use hearth_testkit as common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use actix::Actor;
use anyhow::{bail, Context};
use common::NetNs;
use hearth_actors::dns::{self, DnsActor, DnsOptions};
use hearth_actors::host::firewall::linux::{IptablesFlavor, LinuxFirewall};
use hearth_actors::host::links::linux::LinuxLinks;
use hearth_actors::lease::NetLease;
use hearth_actors::nat::{self, rules, EnsureNat, NatActor, NatConfig, RegisterGuest};
use hearth_actors::tap_pool::{self, AcquireTap, Initialize, ReleaseTap, TapPoolActor};
use ipnet::Ipv4Net;
use slog::Drain;

const BRIDGE: &str = "hearth0";
const TAP_PREFIX: &str = "hth";
const ZONE: &str = "vm.internal";
const FLAVOR: IptablesFlavor = IptablesFlavor::System;

fn logger() -> slog::Logger {
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let drain = slog::LevelFilter::new(drain, slog::Level::Warning).fuse();
    slog::Logger::root(drain, slog::o!())
}

/// What is on the namespace's host side, counted with the system tools (not the actors' view).
#[derive(Debug, Default)]
struct Counts {
    bridges: usize,
    taps: usize,
    hearth_chains: usize,
    hearth_sets: usize,
    nat_members: usize,
    guest_members: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bridges {}, TAPs {}, hearth chains {}, hearth sets {} (nat members {}, guest members {})",
            self.bridges,
            self.taps,
            self.hearth_chains,
            self.hearth_sets,
            self.nat_members,
            self.guest_members
        )
    }
}

fn stdout(ns: &NetNs, argv: &[&str]) -> String {
    String::from_utf8_lossy(&ns.exec(argv).stdout).into_owned()
}

fn set_members(ns: &NetNs, set: &str) -> usize {
    stdout(ns, &["ipset", "list", set])
        .lines()
        .skip_while(|l| !l.starts_with("Members:"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count()
}

fn count(ns: &NetNs) -> Counts {
    let lines = |argv: &[&str]| stdout(ns, argv).lines().count();
    let chains = ["nat", "filter"]
        .iter()
        .map(|t| {
            stdout(ns, &[FLAVOR.iptables(), "-w", "10", "-t", t, "-S"])
                .lines()
                .filter(|l| l.starts_with("-N HEARTH-"))
                .count()
        })
        .sum();
    Counts {
        bridges: lines(&["ip", "-o", "link", "show", "type", "bridge"]),
        taps: lines(&["ip", "-o", "link", "show", "type", "tun"]),
        hearth_chains: chains,
        hearth_sets: stdout(ns, &["ipset", "list", "-n"])
            .lines()
            .filter(|l| l.starts_with("hearth-"))
            .count(),
        nat_members: set_members(ns, rules::NAT_SET),
        guest_members: set_members(ns, rules::GUEST_SET),
    }
}

fn section(title: &str, text: &str) {
    println!("--- {title}");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        println!("    {line}");
    }
}

fn show(ns: &NetNs) {
    section(
        "bridge and TAPs (ip -br link)",
        &stdout(ns, &["ip", "-br", "link", "show", "master", BRIDGE]),
    );
    section(
        "bridge address",
        &stdout(ns, &["ip", "-br", "addr", "show", "dev", BRIDGE]),
    );
    for (table, chain) in rules::HOOKS.iter().map(|(t, _, c)| (t.name(), *c)) {
        section(
            &format!("{} -t {table} -S {chain}", FLAVOR.iptables()),
            &stdout(
                ns,
                &[FLAVOR.iptables(), "-w", "10", "-t", table, "-S", chain],
            ),
        );
    }
    for set in [rules::NAT_SET, rules::GUEST_SET] {
        let text = stdout(ns, &["ipset", "list", set]);
        let members: String = text
            .lines()
            .skip_while(|l| !l.starts_with("Members:"))
            .map(|l| format!("{l}\n"))
            .collect();
        section(&format!("ipset {set}"), &members);
    }
}

fn dig(ns: &NetNs, server: IpAddr, name: &str) -> String {
    stdout(
        ns,
        &[
            "dig",
            "+short",
            "+time=2",
            "+tries=1",
            &format!("@{server}"),
            name,
        ],
    )
    .trim()
    .to_owned()
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("host_network needs root: it creates a network namespace, a bridge and TAPs");
    }
    // Deleted when dropped: on success, on error and on panic.
    let ns = NetNs::new("hearth-hostnet");
    println!("namespace    {}", ns.name());
    // One end of a veth pair stands for the uplink NAT leaves by.
    ns.exec_ok(&[
        "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan0p",
    ]);
    ns.exec_ok(&["ip", "link", "set", "wan0", "up"]);

    let result = ns.block_on(|| demo(&ns));
    let name = ns.name().to_owned();
    drop(ns);
    let left = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .context("ip netns list")?
            .stdout,
    )
    .lines()
    .filter(|l| l.split_whitespace().next() == Some(name.as_str()))
    .count();
    println!("namespace    {name} deleted ({left} left with that name)");
    result
}

#[expect(
    clippy::too_many_lines,
    reason = "a walk-through of the host network, step by step"
)]
async fn demo(ns: &NetNs) -> anyhow::Result<()> {
    let log = logger();
    let cidr: Ipv4Net = "172.31.240.0/24".parse()?;
    let gateway = "172.31.240.1".parse()?;

    let pool = TapPoolActor::new(
        tap_pool::TapPoolConfig {
            bridge: BRIDGE.into(),
            cidr,
            tap_prefix: TAP_PREFIX.into(),
            pool_size: 2,
            ..tap_pool::TapPoolConfig::default()
        },
        Rc::new(LinuxLinks::new().context("netlink socket")?),
        log.clone(),
    )?
    .start();
    let nat = NatActor::new(
        NatConfig {
            bridge: BRIDGE.into(),
            cidr,
            gateway,
            egress: Some("wan0".into()),
            guest_ports: "hth".into(),
            isolate_guests: true,
            block_guest_to_host: true,
            anti_spoofing: true,
        },
        Box::new(LinuxFirewall::new(FLAVOR)),
        log.clone(),
    )?
    .start();
    let mut options = DnsOptions::new(ZONE, vec![]);
    options.guest_subnet = Some(cidr);
    let dns = DnsActor::new(options, log.clone())?.start();

    // Leases taken so far, so teardown gives back exactly these even after a failure.
    let mut leases: Vec<(String, NetLease)> = Vec::new();
    let built = async {
        let status = pool.send(Initialize { used: vec![] }).await??;
        println!(
            "pool         bridge {BRIDGE} {cidr}, {} TAPs warm",
            status.free_taps
        );
        // An empty desired state: chains, jumps and empty sets; guests come one by one.
        nat.send(nat::Reconcile { desired: vec![] }).await??;
        let listen = SocketAddr::new(gateway.into(), 53);
        let bound = dns.send(dns::Start { listen }).await??;
        println!("dns          serving {ZONE} on {bound}");

        for (name, with_nat) in [("web", true), ("db", false)] {
            let lease = pool.send(AcquireTap {}).await??;
            leases.push((name.to_owned(), lease.clone()));
            nat.send(RegisterGuest {
                lease: lease.clone(),
            })
            .await??;
            if with_nat {
                nat.send(EnsureNat {
                    guest_ip: lease.guest_ip,
                    tap: lease.tap.clone(),
                    enable: true,
                })
                .await??;
            }
            println!(
                "lease        {name:4} tap {} ip {} mac {} nat {}",
                lease.tap,
                lease.guest_ip,
                lease.mac,
                if with_nat { "on" } else { "off" }
            );
        }
        let records: HashMap<String, _> = leases
            .iter()
            .map(|(name, l)| (name.clone(), l.guest_ip))
            .collect();
        dns.send(dns::ReplaceRecords { records }).await??;
        // The pool refills in the background after the acquires; wait (bounded) for it so
        // the listing below is the settled state.
        for _ in 0..200 {
            if pool.send(tap_pool::GetStatus {}).await?.pending == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok::<_, anyhow::Error>(bound)
    }
    .await;

    let outcome = match built {
        Ok(bound) => {
            show(ns);
            let mut answered = true;
            println!("--- dig @{} (inside the namespace)", bound.ip());
            for (name, lease) in &leases {
                let fqdn = format!("{name}.{ZONE}");
                let answer = dig(ns, bound.ip(), &fqdn);
                let ok = answer == lease.guest_ip.to_string();
                answered &= ok;
                println!(
                    "    {fqdn:18} -> {answer:15} ({})",
                    if ok { "matches the lease" } else { "WRONG" }
                );
            }
            println!("counts       {}", count(ns));
            if answered {
                Ok(())
            } else {
                Err(anyhow::anyhow!("DNS did not answer both names correctly"))
            }
        }
        Err(e) => Err(e),
    };

    // Teardown runs whatever happened above; its own failures are reported, not hidden.
    let torn = async {
        dns.send(dns::Stop).await??;
        for (_, lease) in leases {
            nat.send(nat::UnregisterGuest {
                lease: lease.clone(),
            })
            .await??;
            pool.send(ReleaseTap { lease }).await??;
        }
        nat.send(nat::Teardown).await??;
        let report = pool
            .send(tap_pool::Teardown {
                remove_bridge: true,
            })
            .await??;
        println!(
            "teardown     {} pool TAPs deleted, bridge removed: {}, leases kept: {}",
            report.deleted_taps.len(),
            report.bridge_removed,
            report.leased_kept
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let after = count(ns);
    println!("after        {after}");
    outcome?;
    torn?;
    let clean = after.bridges + after.taps + after.hearth_chains + after.hearth_sets == 0;
    if !clean {
        bail!("something was left behind: {after}");
    }
    Ok(())
}
