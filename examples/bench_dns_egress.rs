//! Benchmark of hearth's DNS with egress policies on 1000 VMs against dnsmasq, in one run.
//!
//! In a private network namespace: an upstream dnsmasq answers 1000 names `pkg-<i>.example.com`
//! (authoritative for them); hearth's `DnsActor` forwards to it, with 1000 deny-mode guests
//! whose patterns are `*.example.com`, the `NatActor` (real firewall, its egress table holding
//! the 1000 policies) as the learner. dnsperf queries hearth *from one of those guests'
//! addresses*, so every answer goes through the learning path (the addresses reach the
//! guest's kernel set before the reply leaves). The reference is a second dnsmasq serving the
//! same names itself, queried by the same dnsperf; runs alternate so the machine's load hits
//! both alike. A third series queries hearth from an address with no policy (`10.53.0.4`):
//! forwarding alone, to tell the learning path's cost from the upstream hop's.
//!
//! Both dnsmasqs answer with a TTL of `TTL` seconds (`--local-ttl`; dnsmasq's own default is
//! 0, which no resolver caches, real names rarely have, and which would measure forwarding
//! only): hearth caches the upstream's answers for that long, so after the first round most
//! queries are cache hits, and a deny-mode guest's hits still go through the learning path.
//!
//! Run as root: `cargo run --release --example bench_dns_egress [-- SECONDS [ROUNDS [TTL [pin]]]]`
//! (defaults 10 s, 3 rounds, TTL 300 s; TTL 0 measures forwarding without the cache; `pin` gives
//! the servers CPU 1 and dnsperf CPU 0; hearth's DNS then has one worker, as hearthd pinned to one
//! CPU would: `BENCH_DNS_WORKERS=2` overrides, for comparison). Skips with a message when dnsmasq
//! or dnsperf is missing.
//! dnsmasq is started with `--no-resolv --no-hosts --conf-file=/dev/null`: it neither reads
//! nor writes the host's resolv.conf.
#![expect(
    clippy::disallowed_methods,
    reason = "examples drive real tools and binaries directly"
)]

use hearth_testkit as common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use actix::Actor;
use hearth_actors::dns::{DnsActor, DnsOptions, SetEgressDomains, SetEgressLearner, Start, Stop};
use hearth_actors::host::firewall::linux::{IptablesFlavor, LinuxFirewall};
use hearth_actors::lease::MacAddr;
use hearth_actors::nat::egress::{EgressRules, ReconcileEgress};
use hearth_actors::nat::{GuestSpec, NatActor, NatConfig, Reconcile, Teardown};

const NAMES: usize = 1000;
const GUESTS: u32 = 1000;
const HEARTH_IP: &str = "10.53.0.1";
const DNSMASQ_IP: &str = "10.53.0.2";
const UPSTREAM_IP: &str = "10.53.0.3";
/// A source with no egress policy.
const FREE_IP: &str = "10.53.0.4";
const PATTERN: &str = "*.example.com";

/// Guest `n` of the bridge subnet 172.31.240.0/21 (gateway .240.1).
fn guest_ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 31, 240, 1)) + 1 + n)
}

fn name_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250 + 1) as u8)
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
        anti_spoofing: false,
    }
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn spawn_dnsmasq(listen: &str, hosts: &Path, ttl: u32) -> Child {
    Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--user=root",
            "--port=53",
            "--pid-file=",
        ])
        .arg(format!("--listen-address={listen}"))
        .arg(format!("--addn-hosts={}", hosts.display()))
        .arg(format!("--local-ttl={ttl}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dnsmasq")
}

fn answers(server: &str, source: &str, name: &str) -> bool {
    Command::new("dig")
        .args(["+short", "+time=1", "+tries=1", "-b", source])
        .arg(format!("@{server}"))
        .arg(name)
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
}

/// One dnsperf run from `source`: (queries per second, the summary's response codes line).
fn dnsperf(server: &str, source: &str, queries: &Path, seconds: u64) -> (f64, String) {
    // With `pin`, the servers (this process and its dnsmasqs) have CPU 1 and dnsperf CPU 0.
    let mut command = if PINNED.load(std::sync::atomic::Ordering::Relaxed) {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", "dnsperf"]);
        c
    } else {
        Command::new("dnsperf")
    };
    let out = command
        .args(["-s", server, "-a", source, "-d"])
        .arg(queries)
        .args(["-l", &seconds.to_string(), "-c", "4", "-q", "200"])
        .output()
        .expect("run dnsperf");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().to_owned())
    };
    let qps = field("Queries per second:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (qps, field("Response codes:").unwrap_or_default())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Whether the servers and the load generator were given a CPU each (`pin`).
static PINNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Pins this process (every thread made from now on, and the dnsmasqs it spawns) to CPU 1, so
/// dnsperf, on CPU 0, does not compete with the servers it measures (on a 2-core machine it
/// takes ~45 % of the CPU otherwise). Both servers get the same one CPU.
fn pin_servers() {
    let mut one = nix::sched::CpuSet::new();
    let pinned = one
        .set(1)
        .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one));
    match pinned {
        Ok(()) if on_path("taskset") => PINNED.store(true, std::sync::atomic::Ordering::Relaxed),
        Ok(()) => println!("bench_dns_egress: no taskset: dnsperf shares CPU 1"),
        Err(e) => println!("bench_dns_egress: not pinned ({e}): CPUs shared"),
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one benchmark run, read top to bottom"
)]
fn main() {
    if !common::privileged("bench_dns_egress") {
        return;
    }
    for tool in ["dnsmasq", "dnsperf", "dig"] {
        if !on_path(tool) {
            println!("bench_dns_egress: SKIPPED: `{tool}` is not installed (apt-get install -y dnsmasq dnsperf bind9-dnsutils)");
            return;
        }
    }
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let ttl: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(300);
    if args.next().as_deref() == Some("pin") {
        pin_servers();
    }

    let mut queries = tempfile::NamedTempFile::new().expect("temp file");
    let mut hosts = tempfile::NamedTempFile::new().expect("temp file");
    for i in 0..NAMES {
        writeln!(queries, "pkg-{i}.example.com A").expect("write queries");
        writeln!(hosts, "{} pkg-{i}.example.com", name_ip(i)).expect("write hosts");
    }

    let owner = common::NetNs::new("bdnse");
    let ns = &owner;
    ns.exec_ok(&["ip", "link", "add", "hearth0", "type", "bridge"]);
    ns.exec_ok(&["ip", "addr", "add", "172.31.240.1/21", "dev", "hearth0"]);
    ns.exec_ok(&["ip", "link", "set", "hearth0", "up"]);
    ns.exec_ok(&[
        "ip", "link", "add", "bench0", "type", "veth", "peer", "name", "bench1",
    ]);
    for addr in [HEARTH_IP, DNSMASQ_IP, UPSTREAM_IP, FREE_IP] {
        ns.exec_ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "bench0"]);
    }
    // dnsperf's source: guest 0's address, so hearth sees its queries as that guest's.
    let client = guest_ip(0).to_string();
    ns.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{client}/32"),
        "dev",
        "bench0",
    ]);
    ns.exec_ok(&["ip", "link", "set", "bench0", "up"]);
    ns.exec_ok(&["ip", "link", "set", "bench1", "up"]);
    println!(
        "bench_dns_egress: {NAMES} names forwarded by hearth to an upstream dnsmasq, {GUESTS} deny-mode \
         guests ({PATTERN}), queries from guest 0; dnsmasq serving the same names; dnsperf -c 4 -q 200, \
         {rounds} alternating rounds of {seconds} s; answers' TTL {ttl} s; load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?"),
    );

    let (queries_path, hosts_path) = (queries.path().to_owned(), hosts.path().to_owned());
    ns.block_on(|| async move {
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let fw = Box::new(LinuxFirewall::new(IptablesFlavor::System));
        let nat = NatActor::new(config(), fw, log.clone())
            .expect("config")
            .start();
        let desired = (0..GUESTS)
            .map(|n| GuestSpec {
                tap: format!("hth{n}"),
                ip: guest_ip(n),
                mac: MacAddr::for_guest(guest_ip(n)),
                nat: false,
            })
            .collect();
        nat.send(Reconcile { desired })
            .await
            .expect("mailbox")
            .expect("reconcile");
        let rules = EgressRules {
            nets: BTreeSet::new(),
            ports: BTreeSet::new(),
            domains: BTreeSet::from([PATTERN.to_owned()]),
        };
        let policies: BTreeMap<Ipv4Addr, EgressRules> =
            (0..GUESTS).map(|n| (guest_ip(n), rules.clone())).collect();
        nat.send(ReconcileEgress { policies })
            .await
            .expect("mailbox")
            .expect("reconcile egress");

        let upstream: SocketAddr = format!("{UPSTREAM_IP}:53").parse().expect("literal");
        let mut options = DnsOptions::new("vm.internal", vec![upstream]);
        if let Some(n) = std::env::var("BENCH_DNS_WORKERS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            options.workers = n;
        }
        println!("bench_dns_egress: hearth DNS workers: {}", options.workers);
        let dns = DnsActor::new(options, log).expect("valid zone").start();
        dns.send(SetEgressLearner {
            learner: Some(nat.clone().recipient()),
        })
        .await
        .expect("mailbox");
        for n in 0..GUESTS {
            dns.send(SetEgressDomains {
                guest: guest_ip(n),
                domains: Some(vec![PATTERN.to_owned()]),
            })
            .await
            .expect("mailbox")
            .expect("patterns");
        }
        let listen: SocketAddr = format!("{HEARTH_IP}:53").parse().expect("literal");
        dns.send(Start { listen })
            .await
            .expect("mailbox")
            .expect("bind");

        let mut upstream_dnsmasq = spawn_dnsmasq(UPSTREAM_IP, &hosts_path, ttl);
        let mut reference = spawn_dnsmasq(DNSMASQ_IP, &hosts_path, ttl);
        let c = client.clone();
        let ready = tokio::task::spawn_blocking(move || {
            common::wait_until(Duration::from_secs(5), || {
                answers(DNSMASQ_IP, &c, "pkg-1.example.com")
                    && answers(HEARTH_IP, &c, "pkg-1.example.com")
            })
        })
        .await
        .expect("dig thread");
        assert!(ready, "the servers did not answer within 5 s");
        // The answer reached guest 0's learned set before it left.
        let learned = ns.exec_ok(&["nft", "list", "set", "ip", "hearth-egress", "learned"]);
        assert!(
            learned.contains(&format!("{client} . {}", name_ip(1))),
            "not learned: {learned}"
        );

        let q = queries_path.clone();
        let c = client.clone();
        let (hearth, dnsmasq, free) = tokio::task::spawn_blocking(move || {
            let (mut hearth, mut dnsmasq, mut free) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                hearth.push(dnsperf(HEARTH_IP, &c, &q, seconds));
                dnsmasq.push(dnsperf(DNSMASQ_IP, &c, &q, seconds));
                free.push(dnsperf(HEARTH_IP, FREE_IP, &q, seconds));
            }
            (hearth, dnsmasq, free)
        })
        .await
        .expect("dnsperf thread");
        let _ = upstream_dnsmasq.kill();
        let _ = upstream_dnsmasq.wait();
        let _ = reference.kill();
        let _ = reference.wait();
        dns.send(Stop).await.expect("mailbox").expect("stop");
        nat.send(Teardown)
            .await
            .expect("mailbox")
            .expect("teardown");

        for (label, runs) in [
            ("hearth (deny-mode guest, learning)", &hearth),
            ("dnsmasq (serving the names)", &dnsmasq),
            ("hearth (no policy, forwarding only)", &free),
        ] {
            let qps: Vec<String> = runs.iter().map(|(q, _)| format!("{q:.0}")).collect();
            println!(
                "{label:<36} median {:>7.0} qps (runs: {}); response codes of the last run: {}",
                median(runs.iter().map(|(q, _)| *q).collect()),
                qps.join(", "),
                runs.last().map_or("", |(_, r)| r.as_str()),
            );
        }
    });
}
