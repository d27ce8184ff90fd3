//! Benchmark of VM creation through `VmSupervisor`, in-process: this process plays hearthd
//! (`hearth::daemon::start`: SQLite store, image store, TAP pool, NAT, DNS, one
//! `FirecrackerActor` per VM) and `firecracker-sim` is the VMM, all inside a private network
//! namespace with an upstream namespace behind its egress veth. Never the host's network.
//!
//! Stages, for N VMs (default 200):
//! 1. sequential: N creates one after another; each create's round trip is timed here and its
//!    phase times are read exactly from the supervisor's histograms (a `GetMetrics` snapshot
//!    before and after: one observation per phase). Probes of 20 create+delete cycles run at
//!    10 VMs running and at N running (latency against the number of VMs). Then CPU time and
//!    peak RSS of this process with N VMs running, and a concurrent delete of all.
//!    Right after that delete, `--after-delete` creates (default 200, `--concurrency` in
//!    flight) measure creates/s while the deleted VMs' TAPs are still being released.
//! 2. concurrent: N creates with `--concurrency` in flight (default 8): throughput and round
//!    trips, RSS and threads in this second round; then all are deleted again.
//!
//! "hearth's own share" of a create = its round trip minus the phases spent waiting on the
//! VMM process (spawn + `api_ready` + configure + start + ready). See docs/bench/supervisor.md.
//!
//! Needs root. Build the simulator in release first:
//!
//! ```text
//! cargo build --release -p firecracker-sim
//! sudo cargo run --release --example bench_supervisor -- 200
//! sudo cargo run --release --example bench_supervisor -- 1000
//! ```

use hearth::vm_host;
use hearth_testkit as common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix::Addr;
use anyhow::{bail, Context as _};
use clap::Parser;
use common::NetNs;
use futures::stream::{self, StreamExt};
use hearth::config::Config;
use hearth::daemon;
use hearth_actors::supervisor::{CreateVm, DeleteVm, GetMetrics, ListVms, VmSupervisor};
use hearth_proto::api::{self, VmState};
use slog::Drain;
use vm_host::VmHost;

/// Phases spent waiting on the VMM process (its start-up, API answers, the guest's boot).
const VMM_PHASES: [&str; 5] = ["spawn", "api_ready", "configure", "start", "ready"];

/// Ports a Linux bridge can hold.
const BRIDGE_PORTS: usize = 1023;

/// Probe creates per probe point.
const PROBES: usize = 20;

#[derive(Parser, Debug)]
struct Args {
    /// Number of VMs.
    #[arg(default_value_t = 200)]
    n: usize,
    /// Creates in flight in the concurrent stage.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Deletes in flight when deleting everything.
    #[arg(long, default_value_t = 16)]
    delete_concurrency: usize,
    /// Unleased TAPs the pool keeps warm. Default: 32, or fewer so that N VMs, one probe and
    /// the pool fit in the 1023 ports a Linux bridge can hold.
    #[arg(long)]
    pool_size: Option<u32>,
    /// Bridge subnet (room for N guests plus the probe and the pool).
    #[arg(long, default_value = "172.31.0.0/22")]
    cidr: ipnet::Ipv4Net,
    /// Simulated guest boot time (`FC_SIM_BOOT_DELAY_MS`); default: the simulator's (50 ms).
    #[arg(long)]
    boot_delay_ms: Option<u64>,
    /// Put the data directory (SQLite store, disks) here instead of the temporary directory,
    /// e.g. a tmpfs to see what fsync costs. Must not exist yet; it is removed afterwards.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Skip the concurrent stage.
    #[arg(long)]
    sequential_only: bool,
    /// Creates (with `--concurrency` in flight) started right after the first mass delete,
    /// while the TAP pool is still releasing the deleted VMs' TAPs; 0 skips this burst.
    #[arg(long, default_value_t = 200)]
    after_delete: usize,
}

fn logger() -> slog::Logger {
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let drain = slog::LevelFilter::new(drain, slog::Level::Warning).fuse();
    slog::Logger::root(drain, slog::o!())
}

/// CPU time (user + system) of this process's threads, children excluded.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (user + system) of this process's reaped children: the VMM processes once their
/// VMs are deleted.
fn children_cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A `Vm*` line of /proc/self/status, in KiB.
fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Latency samples by series name, in insertion order of first use.
#[derive(Default)]
struct Samples {
    order: Vec<String>,
    series: BTreeMap<String, Vec<Duration>>,
}

impl Samples {
    fn push(&mut self, name: &str, d: Duration) {
        if !self.series.contains_key(name) {
            self.order.push(name.to_owned());
        }
        self.series.entry(name.to_owned()).or_default().push(d);
    }

    fn get(&self, name: &str) -> Vec<Duration> {
        let mut v = self.series.get(name).cloned().unwrap_or_default();
        v.sort();
        v
    }

    fn print(&self, title: &str) {
        println!("{title}");
        println!(
            "  {:28} {:>6} {:>9} {:>9} {:>9} {:>9}",
            "series", "n", "p50 ms", "p99 ms", "mean ms", "max ms"
        );
        for name in &self.order {
            let v = self.get(name);
            let mean = v.iter().sum::<Duration>() / v.len().max(1) as u32;
            println!(
                "  {:28} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                name,
                v.len(),
                ms(pct(&v, 50.0)),
                ms(pct(&v, 99.0)),
                ms(mean),
                ms(*v.last().unwrap_or(&Duration::ZERO))
            );
        }
    }
}

fn spec(name: &str) -> api::CreateVm {
    api::CreateVm {
        name: name.into(),
        kernel: vm_host::KERNEL.into(),
        rootfs: vm_host::ROOTFS.into(),
        vcpus: 1,
        memory_mib: 128,
        disk_size: None,
        boot_args: None,
        init: None,
        nat: false,
        ready_probe: true,
        labels: BTreeMap::new(),
        from_snapshot: None,
        restart: hearth_proto::api_policy::RestartPolicy::No,
        ttl: None,
        on_expiry: hearth_proto::api_policy::OnExpiry::Stop,
        publish: Vec::new(),
        egress: None,
    }
}

fn vm_name(i: usize) -> String {
    format!("vm-{i:05}")
}

/// One create, timed; with `phases`, its exact phase times are added to `samples` and
/// hearth's own share is derived.
async fn create_one(
    sup: &Addr<VmSupervisor>,
    name: &str,
    samples: &mut Samples,
    prefix: &str,
) -> anyhow::Result<()> {
    let before = sup.send(GetMetrics {}).await?;
    let t = Instant::now();
    let vm = sup
        .send(CreateVm {
            spec: spec(name),
            idempotency: None,
        })
        .await?
        .with_context(|| format!("create {name}"))?;
    let round = t.elapsed();
    if vm.state != VmState::Running {
        bail!("{name} is {} ({:?})", vm.state, vm.last_error);
    }
    let after = sup.send(GetMetrics {}).await?;
    let delta = vm_host::phase_delta(&before, &after);
    let mut vmm = Duration::ZERO;
    let mut phase_sum = Duration::ZERO;
    let mut saga = Duration::ZERO;
    for (phase, count, d) in &delta {
        if *count != 1 {
            bail!("{name}: phase {phase} observed {count} times, expected once");
        }
        if *phase == "total" {
            saga = *d;
            continue;
        }
        phase_sum += *d;
        if VMM_PHASES.contains(phase) {
            vmm += *d;
        }
        samples.push(&format!("{prefix}phase {phase}"), *d);
    }
    samples.push(&format!("{prefix}phase total (saga)"), saga);
    samples.push(
        &format!("{prefix}saga minus phases"),
        saga.saturating_sub(phase_sum),
    );
    samples.push(
        &format!("{prefix}round trip minus saga"),
        round.saturating_sub(saga),
    );
    samples.push(&format!("{prefix}VMM-side (5 phases)"), vmm);
    samples.push(
        &format!("{prefix}hearth's own share"),
        round.saturating_sub(vmm),
    );
    samples.push(&format!("{prefix}round trip"), round);
    Ok(())
}

async fn delete_one(sup: &Addr<VmSupervisor>, name: String) -> anyhow::Result<Duration> {
    let t = Instant::now();
    sup.send(DeleteVm { name: name.clone() })
        .await?
        .with_context(|| format!("delete {name}"))?;
    Ok(t.elapsed())
}

/// Deletes every listed VM, `concurrency` at a time; answers (count, wall time, latencies).
async fn delete_all(
    sup: &Addr<VmSupervisor>,
    concurrency: usize,
) -> anyhow::Result<(usize, Duration, Vec<Duration>)> {
    let names: Vec<String> = sup
        .send(ListVms { label: None })
        .await?
        .into_iter()
        .map(|v| v.name)
        .collect();
    let t = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = stream::iter(names)
        .map(|name| delete_one(sup, name))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let wall = t.elapsed();
    let mut took = Vec::with_capacity(results.len());
    let mut first_err = None;
    for r in results {
        match r {
            Ok(d) => took.push(d),
            Err(e) => {
                eprintln!("{e:#}");
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    took.sort();
    Ok((took.len(), wall, took))
}

/// Prints this process's RSS now, and again after asking the allocator to give free memory
/// back (`malloc_trim`): a drop there is memory the allocator kept, not memory hearth holds.
fn rss_after(what: &str) {
    let rss = status_kib("VmRSS");
    // SAFETY: malloc_trim has no preconditions; it only releases free heap pages.
    unsafe { libc::malloc_trim(0) };
    println!(
        "  RSS after {what}: {:.1} MiB, {:.1} MiB after malloc_trim (anon {:.1}, file {:.1}, shmem {:.1}); {} open fds, {} threads",
        mib(rss),
        mib(status_kib("VmRSS")),
        mib(status_kib("RssAnon")),
        mib(status_kib("RssFile")),
        mib(status_kib("RssShmem")),
        open_fds(),
        threads()
    );
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, std::iter::Iterator::count)
}

/// TAP devices in the namespace, counted with `ip` (the pool's own view is not reachable
/// through the daemon's handles).
fn tap_count(ns: &NetNs) -> usize {
    String::from_utf8_lossy(&ns.exec(&["ip", "-o", "link", "show", "type", "tun"]).stdout)
        .lines()
        .count()
}

/// Waits (at most 120 s) until the pool's background TAP deletions have brought the TAP count
/// down to `target`; prints how long that took, so the next stage starts from a settled host.
async fn settle_taps(ns: &NetNs, target: usize) {
    let t = Instant::now();
    let start = tap_count(ns);
    let mut now = start;
    while now > target && t.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = tap_count(ns);
    }
    println!(
        "  background TAP deletions: {start} TAPs -> {now} in {:.2} s after the deletes answered",
        t.elapsed().as_secs_f64()
    );
}

/// Creates the VMs `names`, `k` in flight; answers (wall time, sorted round trips).
async fn create_concurrently(
    sup: &Addr<VmSupervisor>,
    names: Vec<String>,
    k: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let t = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = stream::iter(names)
        .map(|name| async move {
            let t = Instant::now();
            let vm = sup
                .send(CreateVm {
                    spec: spec(&name),
                    idempotency: None,
                })
                .await?
                .with_context(|| format!("create {name}"))?;
            if vm.state != VmState::Running {
                bail!("{name} is {} ({:?})", vm.state, vm.last_error);
            }
            Ok(t.elapsed())
        })
        .buffer_unordered(k.max(1))
        .collect()
        .await;
    let wall = t.elapsed();
    let mut took = Vec::with_capacity(results.len());
    for r in results {
        took.push(r?);
    }
    took.sort();
    Ok((wall, took))
}

/// This process's threads (`Threads` of /proc/self/status).
fn threads() -> u64 {
    status_kib("Threads")
}

/// `PROBES` create+delete cycles of a VM beside those running, timed.
async fn probe(sup: &Addr<VmSupervisor>, label: &str, samples: &mut Samples) -> anyhow::Result<()> {
    for i in 0..PROBES {
        let name = format!("probe-{i}");
        create_one(sup, &name, samples, label).await?;
        delete_one(sup, name).await?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("bench_supervisor needs root: it creates network namespaces, a bridge and TAPs");
    }
    if args.n < 10 {
        bail!("N must be at least 10 (the first probe runs at 10 VMs)");
    }
    if let Some(ms) = args.boot_delay_ms {
        // Inherited by every VMM this process spawns. Set before any thread starts.
        std::env::set_var("FC_SIM_BOOT_DELAY_MS", ms.to_string());
    }
    // A Linux bridge holds at most 1023 ports (BR_MAX_PORTS - 1; the 1024th attach fails
    // with EXFULL): N guests, one probe and the warm pool must fit.
    let room = BRIDGE_PORTS.saturating_sub(args.n + 1);
    if room == 0 {
        bail!(
            "N={} leaves no bridge port for the pool: a bridge holds {BRIDGE_PORTS} ports",
            args.n
        );
    }
    let pool_size = args.pool_size.unwrap_or(32.min(room as u32));
    let mut host = VmHost::with_data_dir("hbsup", 16, args.data_dir.as_deref())?;
    host.config.network.cidr = args.cidr;
    host.config.network.pool_size = pool_size;
    // This kernel has no device-mapper; say so instead of relying on `auto`.
    host.config.vm.disk_backend = "copy".into();
    let config = host.config.clone();
    config.validate()?;
    println!(
        "bench_supervisor: N={} concurrency={} pool_size={} cidr={} boot delay {} ms, data dir {}",
        args.n,
        args.concurrency,
        pool_size,
        args.cidr,
        args.boot_delay_ms
            .map_or_else(|| "50 (sim default)".into(), |d| d.to_string()),
        config.data_dir.display()
    );
    println!(
        "firecracker-sim: {}",
        config
            .firecracker_bin
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let result = host
        .ns
        .block_on(|| run(&args, &config, &host.ns, pool_size as usize));
    let leaks = host.leaks();
    println!("left after the run: {leaks}");
    drop(host);
    result
}

async fn run(args: &Args, config: &Config, ns: &NetNs, pool: usize) -> anyhow::Result<()> {
    let log = logger();
    let rss_start = status_kib("VmRSS");
    let d = daemon::start(config, &log).await?;
    let sup = d.supervisor.clone();
    let outcome = stages(args, &sup, ns, pool, rss_start).await;
    // Whatever happened, every VM is deleted before the daemon stops.
    let cleanup = delete_all(&sup, args.delete_concurrency).await;
    daemon::stop(&d, config).await?;
    outcome?;
    cleanup.map(|_| ())
}

#[expect(
    clippy::too_many_lines,
    reason = "the benchmark's stages in order, each measured and reported where it runs"
)]
async fn stages(
    args: &Args,
    sup: &Addr<VmSupervisor>,
    ns: &NetNs,
    pool: usize,
    rss_start: u64,
) -> anyhow::Result<()> {
    let n = args.n;
    settle_taps(ns, pool).await;
    // Warm-up (untimed): first spawn, caches, SQLite pages.
    let mut scratch = Samples::default();
    for i in 0..3 {
        let name = format!("warm-{i}");
        create_one(sup, &name, &mut scratch, "").await?;
        delete_one(sup, name).await?;
    }

    // Stage 1: sequential creates, probes at 10 and at N running.
    println!("\n== stage 1: {n} sequential creates");
    let mut seq = Samples::default();
    let mut probes = Samples::default();
    let rss_before = status_kib("VmRSS");
    println!(
        "  before the creates: {} open fds, {} threads",
        open_fds(),
        threads()
    );
    let cpu0 = cpu_time();
    let mut seq_wall = Duration::ZERO;
    let mut seq_cpu = Duration::ZERO;
    for i in 0..n {
        if i == 10 {
            probe(sup, "at 10: ", &mut probes).await?;
        }
        let c = cpu_time();
        let t = Instant::now();
        create_one(sup, &vm_name(i), &mut seq, "").await?;
        seq_wall += t.elapsed();
        seq_cpu += cpu_time().checked_sub(c).unwrap();
    }
    let running = sup.send(ListVms { label: None }).await?.len();
    probe(sup, &format!("at {running}: "), &mut probes).await?;
    let cpu_stage = cpu_time().checked_sub(cpu0).unwrap();
    let rss_n = status_kib("VmRSS");
    let hwm_n = status_kib("VmHWM");

    seq.print(&format!(
        "create latency, sequential ({n} creates; phases exact per create)"
    ));
    println!(
        "  sequential throughput: {:.1} creates/s ({n} in {:.2} s of create round trips)",
        n as f64 / seq_wall.as_secs_f64(),
        seq_wall.as_secs_f64()
    );
    probes.print(&format!(
        "latency against VMs running ({PROBES} create+delete probes each)"
    ));
    let p10 = pct(&probes.get("at 10: round trip"), 50.0);
    let pn = pct(&probes.get(&format!("at {running}: round trip")), 50.0);
    let s10 = pct(&probes.get("at 10: hearth's own share"), 50.0);
    let sn = pct(
        &probes.get(&format!("at {running}: hearth's own share")),
        50.0,
    );
    println!(
        "  p50 round trip at {running} / at 10: {:.3} ms / {:.3} ms = {:.2}x (target <= 1.2x)",
        ms(pn),
        ms(p10),
        pn.as_secs_f64() / p10.as_secs_f64()
    );
    println!(
        "  p50 hearth's own share at {running} / at 10: {:.3} ms / {:.3} ms = {:.2}x",
        ms(sn),
        ms(s10),
        sn.as_secs_f64() / s10.as_secs_f64()
    );
    println!("resources of this process (hearthd's part; VMM processes excluded)");
    println!(
        "  CPU time in {n} sequential creates: {:.3} s = {:.3} ms per create; whole stage incl. probes {:.3} s",
        seq_cpu.as_secs_f64(),
        ms(seq_cpu) / n as f64,
        cpu_stage.as_secs_f64()
    );
    println!(
        "  RSS: {:.1} MiB before the daemon, {:.1} MiB before the creates, {:.1} MiB with {running} VMs running (peak VmHWM {:.1} MiB)",
        mib(rss_start),
        mib(rss_before),
        mib(rss_n),
        mib(hwm_n)
    );
    println!(
        "  RSS with {running} VMs: anon {:.1} MiB, file {:.1} MiB, shmem {:.1} MiB; {} open fds, {} threads",
        mib(status_kib("RssAnon")),
        mib(status_kib("RssFile")),
        mib(status_kib("RssShmem")),
        open_fds(),
        threads()
    );
    println!(
        "  RSS growth per running VM: {:.1} KiB",
        rss_n.saturating_sub(rss_before) as f64 / running as f64
    );

    let cpu_d = cpu_time();
    let (deleted, wall, took) = delete_all(sup, args.delete_concurrency).await?;
    println!(
        "delete all: {deleted} in {:.2} s ({:.1}/s, {} in flight), p50 {:.2} ms p99 {:.2} ms, CPU {:.3} ms per delete",
        wall.as_secs_f64(),
        deleted as f64 / wall.as_secs_f64(),
        args.delete_concurrency,
        ms(pct(&took, 50.0)),
        ms(pct(&took, 99.0)),
        ms(cpu_time().checked_sub(cpu_d).unwrap()) / deleted.max(1) as f64
    );
    rss_after("deleting all");

    // Creates right after a mass delete: the deleted VMs' TAPs are still being released.
    if args.after_delete > 0 {
        let m = args.after_delete;
        let k = args.concurrency.max(1);
        let taps = tap_count(ns);
        let names = (0..m).map(|i| format!("after-{i:04}")).collect();
        match create_concurrently(sup, names, k).await {
            Ok((wall, took)) => println!(
                "creates right after deleting {deleted} VMs: {m} with {k} in flight in {:.2} s = {:.1} creates/s; round trip p50 {:.2} ms p99 {:.2} ms ({taps} TAPs when they started, {} when they ended)",
                wall.as_secs_f64(),
                m as f64 / wall.as_secs_f64(),
                ms(pct(&took, 50.0)),
                ms(pct(&took, 99.0)),
                tap_count(ns)
            ),
            // Reported, not fatal: the stages after it still say what they measure.
            Err(e) => println!("creates right after deleting {deleted} VMs: FAILED: {e:#}"),
        }
        delete_all(sup, args.delete_concurrency).await?;
    }
    settle_taps(ns, pool).await;

    if args.sequential_only {
        return Ok(());
    }

    // Stage 2: concurrent creates.
    let k = args.concurrency.max(1);
    println!("\n== stage 2: {n} creates, {k} in flight");
    let cpu0 = cpu_time();
    let children0 = children_cpu_time();
    let before = sup.send(GetMetrics {}).await?;
    let (wall, took) = create_concurrently(sup, (0..n).map(vm_name).collect(), k).await?;
    let cpu = cpu_time().checked_sub(cpu0).unwrap();
    let after = sup.send(GetMetrics {}).await?;
    println!(
        "  throughput: {:.1} creates/s ({n} in {:.2} s)",
        n as f64 / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!(
        "  round trip p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        ms(pct(&took, 50.0)),
        ms(pct(&took, 99.0)),
        ms(*took.last().unwrap_or(&Duration::ZERO))
    );
    println!("  supervisor phases (histogram buckets: p50/p99 are bucket upper bounds)");
    for phase in vm_host::PHASES {
        let h = vm_host::histogram_delta(&before, &after, phase);
        let bound = |p| {
            vm_host::bucket_percentile(&h, p)
                .map_or_else(|| "> 5000".into(), |d| format!("<= {:.1}", ms(d)))
        };
        println!(
            "    {phase:10} n {:5} mean {:9.3} ms  p50 {:>10} ms  p99 {:>10} ms",
            h.count(),
            h.sum * 1e3 / h.count().max(1) as f64,
            bound(50.0),
            bound(99.0)
        );
    }
    println!(
        "  CPU time: {:.3} s = {:.3} ms per create; RSS with {n} VMs (second round) {:.1} MiB (peak VmHWM {:.1} MiB); {} open fds, {} threads",
        cpu.as_secs_f64(),
        ms(cpu) / n as f64,
        mib(status_kib("VmRSS")),
        mib(status_kib("VmHWM")),
        open_fds(),
        threads()
    );
    let (deleted, wall, took) = delete_all(sup, args.delete_concurrency).await?;
    println!(
        "delete all: {deleted} in {:.2} s ({:.1}/s), p50 {:.2} ms p99 {:.2} ms",
        wall.as_secs_f64(),
        deleted as f64 / wall.as_secs_f64(),
        ms(pct(&took, 50.0)),
        ms(pct(&took, 99.0))
    );
    println!(
        "  VMM processes' CPU time (reaped children, create to exit): {:.3} ms per VM",
        ms(children_cpu_time().checked_sub(children0).unwrap()) / n as f64
    );
    rss_after("deleting all");
    settle_taps(ns, pool).await;
    Ok(())
}
