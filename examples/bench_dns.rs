//! Benchmark of `DnsActor` against dnsmasq, both serving the same 1000 names in one private
//! network namespace; also times `ReplaceRecords` of 1000 names while queries run.
//!
//! Run as root: `cargo run --release --example bench_dns [-- SECONDS [ROUNDS [WORKERS [RATE]]]]`
//! (defaults: 10 s per dnsperf run, 3 rounds, 2 hearth workers, latency measured at 20000
//! qps). Needs `dnsperf`, `dnsmasq` and `dig` on PATH. See docs/bench/dns.md.
#![expect(
    clippy::disallowed_methods,
    reason = "examples drive real tools and binaries directly and clean up their own directories"
)]

use hearth_testkit as common;

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix::Actor;
use hearth_actors::dns::table::{RecordTable, ZoneConfig};
use hearth_actors::dns::{DnsActor, DnsOptions, ReplaceRecords, Start, Stop};

const NAMES: usize = 1000;
const ZONE: &str = "vm.internal";
/// Where hearth serves, and where dnsmasq serves, inside the namespace.
const HEARTH_IP: &str = "10.53.0.1";
const DNSMASQ_IP: &str = "10.53.0.2";
/// The default fixed query rate of the latency runs (well below either server's saturation).
const LATENCY_QPS: u32 = 20000;

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
    rcodes: String,
    /// CPU time the server process spent per completed query (microseconds).
    cpu_us_per_query: f64,
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
        rcodes: field("Response codes:").unwrap_or("?").to_owned(),
        ..Perf::default()
    };
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

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// A dnsperf throughput run against `server`, with the CPU used by process `pid` meanwhile.
fn measured(pid: u32, server: &str, queries: &std::path::Path, seconds: u64) -> Perf {
    let before = cpu_time(pid);
    let mut perf = dnsperf(server, queries, seconds, None);
    let used = cpu_time(pid).saturating_sub(before);
    let completed: f64 = perf
        .completed
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    if completed > 0.0 {
        perf.cpu_us_per_query = used.as_secs_f64() * 1e6 / completed;
    }
    perf
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn print_perf(label: &str, throughput: &[Perf], latency: &Perf, rate: u32) {
    let runs: Vec<String> = throughput.iter().map(|p| format!("{:.0}", p.qps)).collect();
    println!(
        "{label:<8} median {:>7.0} qps (runs: {}), {:.1} us CPU/query  | at {rate} qps: p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        median(throughput.iter().map(|p| p.qps).collect()),
        runs.join(", "),
        median(throughput.iter().map(|p| p.cpu_us_per_query).collect()),
        latency.p50_ms,
        latency.p99_ms,
        latency.max_ms,
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
        .is_ok_and(|o| !o.stdout.is_empty())
}

#[expect(
    clippy::too_many_lines,
    reason = "one benchmark run, read top to bottom: set-up, the timed loop, the report"
)]
fn main() {
    if !common::privileged("bench_dns") {
        std::process::exit(1);
    }
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let workers: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let rate: u32 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(LATENCY_QPS);

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
        "bench_dns: {NAMES} names, dnsperf -c 4 -q 200, {rounds} alternating rounds of {seconds} s, \
         hearth with {workers} worker(s), {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?"),
    );
    let (queries_path, hosts_path) = (queries.path().to_owned(), hosts.path().to_owned());
    ns.block_on(|| async move {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut options = DnsOptions::new(ZONE, vec![]);
        options.workers = workers;
        let actor = DnsActor::new(options, logger)
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

        // Both servers run side by side (the idle one costs nothing); runs alternate so that
        // changes in the machine's load hit both alike.
        let mut dnsmasq = spawn_dnsmasq(&hosts_path);
        let ready = common::wait_until(Duration::from_secs(5), || {
            answers(DNSMASQ_IP, &format!("vm-1.{ZONE}"))
        });
        assert!(ready, "dnsmasq did not start answering within 5 s");

        let q = queries_path.clone();
        let (hearth_pid, dnsmasq_pid) = (std::process::id(), dnsmasq.id());
        let (hearth, reference) = tokio::task::spawn_blocking(move || {
            let mut hearth = Vec::new();
            let mut reference = Vec::new();
            for _ in 0..rounds {
                hearth.push(measured(hearth_pid, HEARTH_IP, &q, seconds));
                reference.push(measured(dnsmasq_pid, DNSMASQ_IP, &q, seconds));
            }
            let rate = rate.to_string();
            let hearth_latency = dnsperf(HEARTH_IP, &q, seconds.min(5), Some(&rate));
            let reference_latency = dnsperf(DNSMASQ_IP, &q, seconds.min(5), Some(&rate));
            ((hearth, hearth_latency), (reference, reference_latency))
        })
        .await
        .expect("dnsperf thread");
        let _ = dnsmasq.kill();
        let _ = dnsmasq.wait();

        // ReplaceRecords of 1000 names with no queries running, for reference.
        let mut idle = Vec::new();
        for i in 0..200u8 {
            let msg = ReplaceRecords {
                records: records(i % 200 + 1),
            };
            let t = Instant::now();
            actor
                .send(msg)
                .await
                .expect("mailbox")
                .expect("valid records");
            idle.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        idle.sort();
        // The table build alone (what the handler does besides the swap), same inputs.
        let zone = ZoneConfig::new(ZONE, 5, None).expect("valid zone");
        let mut builds = Vec::new();
        for i in 0..200u8 {
            let input = records(i % 200 + 1);
            let t = Instant::now();
            let table = RecordTable::build(&zone, &input, 1).expect("valid records");
            builds.push(t.elapsed());
            drop(table);
        }
        builds.sort();

        // ReplaceRecords of 1000 names, timed while dnsperf saturates hearth.
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

        println!();
        print_perf("hearth", &hearth.0, &hearth.1, rate);
        print_perf("dnsmasq", &reference.0, &reference.1, rate);
        println!(
            "\nReplaceRecords of {NAMES} names under load ({} swaps, send -> reply): p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            times.len(),
            percentile(&times, 0.5).as_secs_f64() * 1000.0,
            percentile(&times, 0.99).as_secs_f64() * 1000.0,
            percentile(&times, 1.0).as_secs_f64() * 1000.0,
        );
        println!(
            "ReplaceRecords of {NAMES} names, no queries ({} swaps):        p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            idle.len(),
            percentile(&idle, 0.5).as_secs_f64() * 1000.0,
            percentile(&idle, 0.99).as_secs_f64() * 1000.0,
            percentile(&idle, 1.0).as_secs_f64() * 1000.0,
        );
        println!(
            "  of which RecordTable::build alone:                       p50 {:.3} ms  p99 {:.3} ms",
            percentile(&builds, 0.5).as_secs_f64() * 1000.0,
            percentile(&builds, 0.99).as_secs_f64() * 1000.0,
        );
        println!(
            "hearth during the swaps: {:.0} qps, completed {}, response codes {}",
            under_replace.qps, under_replace.completed, under_replace.rcodes
        );
    });
}
