//! Boot latency of `FirecrackerActor`, phase by phase, against `firecracker-sim` (or a real
//! binary with `--firecracker`), compared with a bare-bones baseline that drives the same VMM
//! the same way with blocking std code and no actor (fork/exec, a tight connect loop, the same
//! API calls on one connection, the same vsock probe). The difference is what the actor adds.
//!
//! The actor is driven as the supervisor's saga drives it: `SpawnProcess`, `ConfigureVm`,
//! `StartVm`, then `ProbeReady` (skipped with `--no-probe`). The headline is spawn→`Running`
//! p50 of hearth next to the baseline's, and their ratio (target ≤ 1.1×).
//!
//! Runs inside a network namespace it creates, with one TAP leased from `TapPoolActor`. The
//! simulator's guest boot delay is set to 0 (`--sim-boot-delay-ms`) so the agent phase
//! measures the probe itself. The kernel defaults to the generated minimal `vmlinux` of
//! `hearth_testkit::vmlinux` (the real loader accepts it; no guest boots), the root disk to a
//! 1 MiB file. Needs root.
//!
//! ```text
//! cargo build --release -p firecracker-sim
//! cargo run --release --example bench_boot -- --boots 200
//! cargo run --release --example bench_boot -- --boots 200 --no-probe \
//!     --firecracker ../shared/firecracker/bin/firecracker
//! ```
#![expect(
    clippy::disallowed_methods,
    reason = "examples drive real tools and binaries directly and clean up their own directories"
)]

use hearth_testkit as common;
use hearth_testkit::fc_sim;
use hearth_testkit::vmlinux;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use anyhow::{bail, Context};
use clap::Parser;
use hearth_actors::firecracker::command::LaunchArgs;
use hearth_actors::firecracker::config::ApiBodies;
use hearth_actors::firecracker::{api_client, readiness};
use hearth_actors::firecracker::{
    binary, cid_for_guest_ip, ConfigureVm, FirecrackerActor, FirecrackerSettings, KillVm,
    NetConfig, ProbeReady, RunDir, SpawnProcess, StartVm, VmConfig, VmProcessEvent,
};
use hearth_actors::host::links::linux::LinuxLinks;
use hearth_actors::host::processes::LinuxProcesses;
use hearth_actors::lease::NetLease;
use hearth_actors::tap_pool::{
    AcquireTap, Initialize, ReleaseTap, TapPoolActor, TapPoolConfig, Teardown,
};
use hearth_proto::agent::{decode_response, encode_request, PingReply, Request};
use hearth_proto::firecracker::{ActionType, InstanceActionInfo, LogLevel};

#[derive(Parser, Debug)]
struct Args {
    /// Number of boots per variant.
    #[arg(long, default_value_t = 200)]
    boots: usize,
    /// A real Firecracker binary (default: firecracker-sim beside this example).
    #[arg(long)]
    firecracker: Option<PathBuf>,
    /// The simulator's InstanceStart-to-guest-up delay.
    #[arg(long, default_value_t = 0)]
    sim_boot_delay_ms: u64,
    /// Skip the no-actor baseline.
    #[arg(long)]
    no_baseline: bool,
    /// The guest kernel (default: a generated minimal x86-64 vmlinux that only halts).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The root disk (default: a 1 MiB file of zeros).
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Skip the agent probe (no guest agent answers on the real binary here).
    #[arg(long)]
    no_probe: bool,
    /// Where the run directories go; hearth's belong on tmpfs (/run/hearth), like this default.
    #[arg(long, default_value = "/dev/shm")]
    work_dir: PathBuf,
}

fn logger() -> slog::Logger {
    use slog::Drain;
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    slog::Logger::root(
        slog::LevelFilter::new(drain, slog::Level::Warning).fuse(),
        slog::o!(),
    )
}

fn config(kernel: &Path, rootfs: &Path, lease: &NetLease) -> VmConfig {
    VmConfig {
        vcpu_count: 1,
        mem_size_mib: 128,
        kernel: kernel.to_path_buf(),
        initrd: None,
        extra_boot_args: String::new(),
        rootfs: rootfs.to_path_buf(),
        rootfs_read_only: false,
        rootfs_rate_limiter: None,
        net: Some(NetConfig {
            lease: lease.clone(),
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }),
        vsock_cid: cid_for_guest_ip(lease.guest_ip),
    }
}

/// How long the agent probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-phase durations of one boot (each phase on its own, not cumulative).
#[derive(Debug, Clone, Copy, Default)]
struct BootTimings {
    /// Run dir, console, fork/exec.
    spawn: Duration,
    /// Until the API socket accepted a connection.
    api_ready: Duration,
    /// machine-config, boot-source, drive, network, vsock.
    configured: Duration,
    /// `InstanceStart` until `GET /` says Running.
    started: Duration,
    /// Until the guest agent answered (None when the probe is skipped).
    agent_ready: Option<Duration>,
}

impl BootTimings {
    fn total(&self) -> Duration {
        self.spawn
            + self.api_ready
            + self.configured
            + self.started
            + self.agent_ready.unwrap_or_default()
    }
}

/// One boot's phases and its spawn→`Running` wall time.
struct Sample {
    phases: BootTimings,
    to_running: Duration,
}

/// One blocking HTTP exchange on a kept-alive connection.
fn http(
    conn: &mut BufReader<UnixStream>,
    method: &str,
    uri: &str,
    body: Option<&[u8]>,
) -> anyhow::Result<u16> {
    let body = body.unwrap_or_default();
    let mut req = format!("{method} {uri} HTTP/1.1\r\nHost: localhost\r\n");
    if method != "GET" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    let mut msg = req.into_bytes();
    msg.extend_from_slice(body);
    conn.get_mut().write_all(&msg)?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status: u16 = line.split(' ').nth(1).context("status")?.parse()?;
    let mut len = 0usize;
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse()?;
            }
        }
    }
    let mut buf = vec![0; len];
    conn.read_exact(&mut buf)?;
    if !(200..300).contains(&status) {
        bail!("{method} {uri}: {status} {}", String::from_utf8_lossy(&buf));
    }
    Ok(status)
}

fn put<T: serde::Serialize>(
    conn: &mut BufReader<UnixStream>,
    uri: &str,
    body: &T,
) -> anyhow::Result<()> {
    http(conn, "PUT", uri, Some(&serde_json::to_vec(body)?)).map(|_| ())
}

fn raw_probe(uds: &Path) -> anyhow::Result<PingReply> {
    let mut delay = readiness::PROBE_BACKOFF_FIRST;
    loop {
        let attempt = (|| -> anyhow::Result<PingReply> {
            let mut s = BufReader::new(UnixStream::connect(uds)?);
            s.get_mut().write_all(b"CONNECT 52\n")?;
            let mut line = String::new();
            s.read_line(&mut line)?;
            if !line.starts_with("OK ") {
                bail!("no OK");
            }
            s.get_mut().write_all(&encode_request(&Request::Ping))?;
            line.clear();
            s.read_line(&mut line)?;
            Ok(decode_response(line.as_bytes())?)
        })();
        if let Ok(r) = attempt {
            return Ok(r);
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(readiness::PROBE_BACKOFF_MAX);
    }
}

/// The baseline: the same VMM, arguments and calls, with no actor, no console pump, no pidfd.
fn raw_boot(fc: &Path, rd: &RunDir, bodies: &ApiBodies, probe: bool) -> anyhow::Result<Sample> {
    let mut t = BootTimings::default();
    let t0 = Instant::now();
    for s in [rd.api_socket(), rd.vsock_socket()] {
        let _ = std::fs::remove_file(s);
    }
    let mut child = Command::new(fc)
        .args(LaunchArgs::for_run_dir(rd, "raw", LogLevel::Warning).args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    t.spawn = t0.elapsed();
    let t1 = Instant::now();
    let mut delay = api_client::SOCKET_BACKOFF_FIRST;
    let stream = loop {
        if let Ok(s) = UnixStream::connect(rd.api_socket()) {
            break s;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(api_client::SOCKET_BACKOFF_MAX);
    };
    t.api_ready = t1.elapsed();
    let mut conn = BufReader::new(stream);
    let t2 = Instant::now();
    put(&mut conn, "/machine-config", &bodies.machine)?;
    put(&mut conn, "/boot-source", &bodies.boot)?;
    put(&mut conn, "/drives/rootfs", &bodies.root)?;
    if let Some(n) = &bodies.net {
        put(&mut conn, "/network-interfaces/eth0", n)?;
    }
    if let Some(v) = &bodies.vsock {
        put(&mut conn, "/vsock", v)?;
    }
    t.configured = t2.elapsed();
    let t3 = Instant::now();
    put(
        &mut conn,
        "/actions",
        &InstanceActionInfo::new(ActionType::InstanceStart),
    )?;
    http(&mut conn, "GET", "/", None)?;
    t.started = t3.elapsed();
    let to_running = t0.elapsed();
    if probe {
        let t4 = Instant::now();
        raw_probe(&rd.vsock_socket())?;
        t.agent_ready = Some(t4.elapsed());
    }
    child.kill()?;
    child.wait()?;
    Ok(Sample {
        phases: t,
        to_running,
    })
}

/// Hearth's boot, as the saga does it: spawn, configure, start, then the probe if asked.
async fn actor_boot(
    vm: &actix::Addr<FirecrackerActor>,
    cfg: &VmConfig,
    probe: bool,
) -> anyhow::Result<Sample> {
    let t0 = Instant::now();
    let spawned = vm.send(SpawnProcess {}).await??;
    let configured = vm
        .send(ConfigureVm {
            config: cfg.clone(),
        })
        .await??;
    let started = vm.send(StartVm {}).await??;
    let to_running = t0.elapsed();
    let agent_ready = if probe {
        let out = vm
            .send(ProbeReady {
                port: 52,
                timeout: PROBE_TIMEOUT,
            })
            .await??;
        Some(out.elapsed)
    } else {
        None
    };
    Ok(Sample {
        phases: BootTimings {
            spawn: spawned.spawn,
            api_ready: spawned.api_ready,
            configured,
            started,
            agent_ready,
        },
        to_running,
    })
}

fn pct(mut v: Vec<Duration>, p: usize) -> Duration {
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn row(name: &str, actor: Vec<Duration>, raw: Option<Vec<Duration>>) {
    let f = |d: Duration| format!("{:8.3}", d.as_secs_f64() * 1e3);
    let (a50, a99) = (pct(actor.clone(), 50), pct(actor, 99));
    match raw {
        Some(r) => {
            let (r50, r99) = (pct(r.clone(), 50), pct(r, 99));
            let diff = a50.as_secs_f64() - r50.as_secs_f64();
            println!(
                "{name:<12} {} {}   {} {}   {:+8.3}",
                f(a50),
                f(a99),
                f(r50),
                f(r99),
                diff * 1e3
            );
        }
        None => println!("{name:<12} {} {}", f(a50), f(a99)),
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one benchmark run, read top to bottom: set-up, the timed loop, the report"
)]
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("bench_boot needs root: it creates a network namespace and a TAP");
    }
    if args.boots == 0 {
        bail!("--boots must be at least 1");
    }
    // Simulator knobs, inherited by every VMM this process spawns (set before any thread).
    std::env::set_var("FC_SIM_BOOT_DELAY_MS", args.sim_boot_delay_ms.to_string());
    let work = tempfile::Builder::new()
        .prefix("bb")
        .tempdir_in(&args.work_dir)?;
    let kernel = if let Some(k) = &args.kernel {
        k.canonicalize()
            .with_context(|| format!("--kernel {}", k.display()))?
    } else {
        let k = work.path().join("vmlinux");
        vmlinux::write_minimal_vmlinux(&k);
        k
    };
    let rootfs = if let Some(r) = &args.rootfs {
        r.canonicalize()
            .with_context(|| format!("--rootfs {}", r.display()))?
    } else {
        let r = work.path().join("rootfs.ext4");
        std::fs::write(&r, vec![0u8; 1 << 20])?;
        r
    };
    let probe = !args.no_probe;
    let fc = args.firecracker.clone().unwrap_or_else(fc_sim::sim_binary);
    let ns = common::NetNs::new("hearth-benchboot");
    let log = logger();
    ns.block_on(|| async move {
        let bin = binary::resolve(Some(&fc), &LinuxProcesses)?;
        let pool = TapPoolActor::new(
            TapPoolConfig {
                pool_size: 1,
                ..TapPoolConfig::default()
            },
            Rc::new(LinuxLinks::new()?),
            log.clone(),
        )?
        .start();
        pool.send(Initialize { used: vec![] }).await??;
        let lease = pool.send(AcquireTap {}).await??;
        let cfg = config(&kernel, &rootfs, &lease);
        println!(
            "bench_boot: {} boots each, {} {}, kernel {}, TAP {} in netns, sim boot delay {} ms{}",
            args.boots,
            bin.path.display(),
            bin.version,
            kernel.display(),
            lease.tap,
            args.sim_boot_delay_ms,
            if probe { "" } else { ", no probe" }
        );

        let raw_rd = RunDir::new(&work.path().join("vms"), "raw")?;
        raw_rd.prepare()?;
        let raw_bodies = cfg.api_bodies(&raw_rd.vsock_socket())?;
        let mut raw_v = Vec::with_capacity(args.boots);
        let mut actor_t = Vec::with_capacity(args.boots);
        let settings = FirecrackerSettings::new(work.path().join("vms"));
        for i in 0..args.boots {
            let (events, mut rx) = fc_sim::event_sink();
            let vm = FirecrackerActor::new(
                &format!("b{i}"),
                bin.clone(),
                Arc::new(LinuxProcesses),
                settings.clone(),
                events,
                log.clone(),
            )?
            .start();
            actor_t.push(actor_boot(&vm, &cfg, probe).await?);
            vm.send(KillVm {}).await??;
            // The TAP is free again once the process is gone.
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(VmProcessEvent::Stopped { .. })) => {}
                other => bail!("unexpected event {other:?}"),
            }
            // Interleaved, so both variants see the same machine noise.
            if !args.no_baseline {
                raw_v.push(raw_boot(&bin.path, &raw_rd, &raw_bodies, probe)?);
            }
        }

        let raw_t = (!args.no_baseline).then_some(raw_v);

        println!("\nphase (ms)     actor p50  p99      baseline p50  p99   actor-baseline p50");
        type Get = fn(&Sample) -> Duration;
        let phases: [(&str, Get); 7] = [
            ("spawn", |s| s.phases.spawn),
            ("api ready", |s| s.phases.api_ready),
            ("configured", |s| s.phases.configured),
            ("started", |s| s.phases.started),
            ("to Running", |s| s.to_running),
            ("agent ready", |s| s.phases.agent_ready.unwrap_or_default()),
            ("total", |s| s.phases.total()),
        ];
        for (name, get) in phases {
            row(
                name,
                actor_t.iter().map(get).collect(),
                raw_t.as_ref().map(|r| r.iter().map(get).collect()),
            );
        }
        let hearth = pct(actor_t.iter().map(|s| s.to_running).collect(), 50);
        match &raw_t {
            Some(r) => {
                let raw = pct(r.iter().map(|s| s.to_running).collect(), 50);
                println!(
                    "\nspawn→Running p50: hearth {:.3} ms, minimal client {:.3} ms, ratio {:.3}× \
                     (target ≤ 1.1×)",
                    hearth.as_secs_f64() * 1e3,
                    raw.as_secs_f64() * 1e3,
                    hearth.as_secs_f64() / raw.as_secs_f64()
                );
            }
            None => println!(
                "\nspawn→Running p50: hearth {:.3} ms",
                hearth.as_secs_f64() * 1e3
            ),
        }
        pool.send(ReleaseTap { lease }).await??;
        pool.send(Teardown {
            remove_bridge: true,
        })
        .await??;
        Ok::<_, anyhow::Error>(())
    })
}
