//! Benchmark of `DnsActor` against dnsmasq, both serving the same 1000 names in one private
//! network namespace; also times `ReplaceRecords` of 1000 names while queries run.
//!
//! Run as root: `cargo run --release --example bench_dns [-- SECONDS]` (default 10 s per
//! dnsperf run). Needs `dnsperf` and `dnsmasq` on PATH. See docs/bench/dns.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix::Actor;
use hearth_actors::dns::{DnsActor, DnsOptions, ReplaceRecords, Start, Stop};

const NAMES: usize = 1000;
const ZONE: &str = "vm.internal";
/// Where hearth serves, and where dnsmasq serves, inside the namespace.
const HEARTH_IP: &str = "10.53.0.1";
const DNSMASQ_IP: &str = "10.53.0.2";
/// The fixed query rate of the latency runs (well below either server's saturation).
const LATENCY_QPS: &str = "20000";

fn guest_ip(i: usize, generation: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, generation, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn records(generation: u8) -> HashMap<String, Ipv4Addr> {
    (0..NAMES)
        .map(|i| (format!("vm-{i}"), guest_ip(i, generation)))
        .collect()
}

/// Figures of one dnsperf run.
#[derive(Debug, Default)]
struct Perf {
    qps: f64,
    completed: String,
    avg_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Runs dnsperf (inside the namespace: this thread is in it) and parses its summary; with
/// `rate`, runs verbose at that fixed rate and computes latency percentiles per query.
fn dnsperf(server: &str, queries: &std::path::Path, seconds: u64, rate: Option<&str>) -> Perf {
    let mut cmd = Command::new("dnsperf");
    cmd.args(["-s", server, "-d"]).arg(queries).args([
        "-l",
        &seconds.to_string(),
        "-c",
        "4",
        "-q",
        "200",
    ]);
    if let Some(rate) = rate {
        cmd.args(["-Q", rate, "-v"]);
    }
    let out = cmd.output().expect("run dnsperf (is it installed?)");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(str::trim)
    };
    let mut perf = Perf {
        qps: field("Queries per second:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        completed: field("Queries completed:").unwrap_or("?").to_owned(),
        ..Perf::default()
    };
    perf.avg_ms = field("Average Latency (s):")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        * 1000.0;
    let mut latencies: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    if !latencies.is_empty() {
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] * 1000.0;
        perf.p50_ms = pct(0.50);
        perf.p99_ms = pct(0.99);
        perf.max_ms = pct(1.0);
    }
    perf
}

fn print_perf(label: &str, throughput: &Perf, latency: &Perf) {
    println!(
        "{label:<8} {:>10.0} qps (completed {})  | at {LATENCY_QPS} qps: p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  (saturated avg {:.3} ms)",
        throughput.qps, throughput.completed, latency.p50_ms, latency.p99_ms, latency.max_ms, throughput.avg_ms
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn spawn_dnsmasq(hosts: &std::path::Path) -> Child {
    Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--user=root",
            "--port=53",
        ])
        .arg(format!("--listen-address={DNSMASQ_IP}"))
        .arg(format!("--addn-hosts={}", hosts.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dnsmasq (is it installed?)")
}

fn answers(server: &str, name: &str) -> bool {
    Command::new("dig")
        .args(["+short", "+time=1", "+tries=1", &format!("@{server}"), name])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false)
}

fn main() {
    if !common::privileged("bench_dns") {
        std::process::exit(1);
    }
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);

    let mut queries = tempfile::NamedTempFile::new().expect("temp file");
    let mut hosts = tempfile::NamedTempFile::new().expect("temp file");
    for i in 0..NAMES {
        writeln!(queries, "vm-{i}.{ZONE} A").expect("write queries");
        writeln!(hosts, "{} vm-{i}.{ZONE}", guest_ip(i, 0)).expect("write hosts");
    }

    // The kernel here has no `dummy` module, so the addresses sit on a veth pair whose both
    // ends stay in the namespace; traffic to a local address goes over loopback either way.
    let ns = common::NetNs::new("bdns");
    ns.exec_ok(&[
        "ip", "link", "add", "bench0", "type", "veth", "peer", "name", "bench1",
    ]);
    for addr in [HEARTH_IP, DNSMASQ_IP] {
        ns.exec_ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "bench0"]);
    }
    ns.exec_ok(&["ip", "link", "set", "bench0", "up"]);
    ns.exec_ok(&["ip", "link", "set", "bench1", "up"]);

    println!(
        "bench_dns: {NAMES} names, dnsperf -c 4 -q 200 for {seconds} s per run, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (queries_path, hosts_path) = (queries.path().to_owned(), hosts.path().to_owned());
    ns.block_on(|| async move {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let actor = DnsActor::new(DnsOptions::new(ZONE, vec![]), logger)
            .expect("valid zone")
            .start();
        actor
            .send(ReplaceRecords {
                records: records(0),
            })
            .await
            .expect("mailbox")
            .expect("valid records");
        let listen: SocketAddr = format!("{HEARTH_IP}:53").parse().expect("literal");
        actor
            .send(Start { listen })
            .await
            .expect("mailbox")
            .expect("bind");

        // 1. hearth: throughput, then latency at a fixed rate.
        let q = queries_path.clone();
        let hearth = tokio::task::spawn_blocking(move || {
            (
                dnsperf(HEARTH_IP, &q, seconds, None),
                dnsperf(HEARTH_IP, &q, seconds.min(5), Some(LATENCY_QPS)),
            )
        })
        .await
        .expect("dnsperf thread");

        // 2. ReplaceRecords of 1000 names, timed while dnsperf saturates the server.
        let q = queries_path.clone();
        let load = tokio::task::spawn_blocking(move || dnsperf(HEARTH_IP, &q, seconds, None));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut times = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(seconds.saturating_sub(1).max(1));
        let mut generation = 1u8;
        while Instant::now() < deadline {
            let msg = ReplaceRecords {
                records: records(generation),
            };
            let t = Instant::now();
            actor
                .send(msg)
                .await
                .expect("mailbox")
                .expect("valid records");
            times.push(t.elapsed());
            generation = generation % 200 + 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let under_replace = load.await.expect("dnsperf thread");
        times.sort();
        actor.send(Stop).await.expect("mailbox").expect("stop");

        // 3. dnsmasq, same names, same dnsperf settings, same namespace.
        let mut dnsmasq = spawn_dnsmasq(&hosts_path);
        let ready = common::wait_until(Duration::from_secs(5), || {
            answers(DNSMASQ_IP, &format!("vm-1.{ZONE}"))
        });
        let q = queries_path.clone();
        let reference = tokio::task::spawn_blocking(move || {
            ready.then(|| {
                (
                    dnsperf(DNSMASQ_IP, &q, seconds, None),
                    dnsperf(DNSMASQ_IP, &q, seconds.min(5), Some(LATENCY_QPS)),
                )
            })
        })
        .await
        .expect("dnsperf thread");
        let _ = dnsmasq.kill();
        let _ = dnsmasq.wait();

        println!();
        print_perf("hearth", &hearth.0, &hearth.1);
        match reference {
            Some((t, l)) => print_perf("dnsmasq", &t, &l),
            None => println!("dnsmasq  did not start answering within 5 s"),
        }
        println!(
            "\nReplaceRecords of {NAMES} names under load ({} swaps, send -> reply): p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            times.len(),
            percentile(&times, 0.5).as_secs_f64() * 1000.0,
            percentile(&times, 0.99).as_secs_f64() * 1000.0,
            percentile(&times, 1.0).as_secs_f64() * 1000.0,
        );
        println!(
            "hearth during the swaps: {:.0} qps (completed {})",
            under_replace.qps, under_replace.completed
        );
    });
}
