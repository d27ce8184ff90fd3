//! Benchmark of hearthd's restart after a `kill -9` in the middle of stops: how long until the
//! API answers again, with N VMs running and S of them caught in a stop whose guest ignores
//! Ctrl+Alt+Del (so each stop's ladder waits out its grace). The real `hearthd` binary runs
//! inside a private network namespace with `firecracker-sim` as the VMM; this process drives
//! it over its API socket like any client. Never the host's network.
//!
//! Stages:
//! 1. start hearthd (Ctrl+Alt+Del grace `--grace-secs`, default 300 s), create N VMs
//!    (`--concurrency` in flight), then ask for S stops and wait until all S read `stopping`;
//! 2. `--rounds` times: SIGKILL hearthd, start it again, and time from the spawn to the first
//!    `GET /v1/health` that answers 200, then to a full `GET /v1/vms` (N VMs), and count the
//!    VMs still `stopping` at that moment (their ladders run in the background);
//! 3. SIGTERM the S stopping VMMs (the sim exits on it) and time until all S read `stopped`:
//!    an exit during a background stop is that stop's outcome.
//!
//! Target (issue 8): restart to a healthy API ≤ 1 s with N=1000 and S=50. See
//! docs/bench/restart.md. Needs root. Build hearthd and the simulator in release first:
//!
//! ```text
//! cargo build --release --bin hearthd
//! cargo build --release -p firecracker-sim
//! sudo cargo run --release --example bench_restart -- 1000 --stops 50
//! ```
#![expect(
    clippy::disallowed_methods,
    reason = "examples drive real tools and binaries directly and clean up their own directories"
)]

use hearth::vm_host;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use hearth::client::{Client, Method};
use hearth_proto::api::{self, VmInfo, VmState};
use vm_host::VmHost;

/// Ports a Linux bridge can hold.
const BRIDGE_PORTS: usize = 1023;

#[derive(Parser, Debug)]
struct Args {
    /// Number of running VMs.
    #[arg(default_value_t = 1000)]
    n: usize,
    /// VMs caught in an interrupted stop.
    #[arg(long, default_value_t = 50)]
    stops: usize,
    /// Restarts to time.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Creates in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The Ctrl+Alt+Del grace of every stop, seconds (long: the stops must outlast the run).
    #[arg(long, default_value_t = 300)]
    grace_secs: u64,
}

/// The hearthd binary next to this example (`target/<profile>/hearthd`), or `$HEARTHD`.
fn hearthd_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("HEARTHD") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("exe dir")?.to_path_buf();
    if dir.file_name().and_then(|n| n.to_str()) == Some("examples") {
        dir.pop();
    }
    let bin = dir.join("hearthd");
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release --bin hearthd` or set HEARTHD",
            bin.display()
        );
    }
    Ok(bin)
}

struct Daemon {
    bin: PathBuf,
    ns: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Spawns hearthd and answers the instant of the spawn.
    fn spawn(&mut self) -> anyhow::Result<Instant> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let t0 = Instant::now();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&self.bin)
            .arg("--config")
            .arg(&self.config)
            // Inherited by every VMM: guests ignore Ctrl+Alt+Del, so stops wait their grace.
            .env("FC_SIM_IGNORE_CTRL_ALT_DEL", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn hearthd")?;
        self.child = Some(child);
        Ok(t0)
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `GET /v1/health` every millisecond until it answers 200 (bounded by `limit`).
fn wait_healthy(client: &Client, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(r) = client.request(Method::GET, "/v1/health", &[], None) {
            if r.ok().is_ok() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("hearthd not healthy after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn list(client: &Client) -> anyhow::Result<Vec<VmInfo>> {
    Ok(client.get("/v1/vms")?)
}

fn count(vms: &[VmInfo], state: VmState) -> usize {
    vms.iter().filter(|v| v.state == state).count()
}

fn name(i: usize) -> String {
    format!("r{i:04}")
}

fn spec(i: usize) -> api::CreateVm {
    serde_json::from_value(serde_json::json!({
        "name": name(i), "kernel": vm_host::KERNEL, "rootfs": vm_host::ROOTFS,
        "ready_probe": false,
    }))
    .expect("spec")
}

/// Runs `work(i)` for every i in 0..n with `threads` workers; answers the failures.
fn parallel(n: usize, threads: usize, work: impl Fn(usize) -> anyhow::Result<()> + Sync) -> usize {
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if let Err(e) = work(i) {
                    if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("{}: {e:#}", name(i));
                    }
                }
            });
        }
    });
    failed.into_inner()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("bench_restart needs root: it creates network namespaces, a bridge and TAPs");
    }
    if args.stops > args.n {
        bail!("--stops {} exceeds N={}", args.stops, args.n);
    }
    let pool = 8;
    if args.n + pool > BRIDGE_PORTS {
        bail!(
            "N={} and a pool of {pool} exceed the {BRIDGE_PORTS} ports of a bridge",
            args.n
        );
    }
    let mut host = VmHost::new("hbrst", 16)?;
    let socket = host.dir.path().join("hearthd.sock");
    host.config.network.cidr = "172.31.0.0/22".parse()?;
    host.config.network.pool_size = pool as u32;
    host.config.vm.disk_backend = "copy".into();
    host.config.vm.shutdown_grace_secs = args.grace_secs;
    host.config.api.socket.clone_from(&socket);
    host.config.validate()?;
    let config_path = host.dir.path().join("hearthd.toml");
    std::fs::write(&config_path, toml::to_string(&host.config)?)?;
    let mut daemon = Daemon {
        bin: hearthd_binary()?,
        ns: host.ns.name().to_owned(),
        config: config_path,
        log: host.dir.path().join("hearthd.log"),
        child: None,
    };
    println!(
        "bench_restart: N={} stops={} rounds={} grace={} s, hearthd {}",
        args.n,
        args.stops,
        args.rounds,
        args.grace_secs,
        daemon.bin.display()
    );
    let result = run(&args, &mut daemon, &socket, &host);
    if result.is_err() {
        let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!("--- hearthd log (last lines):");
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
    }
    daemon.kill9();
    drop(host);
    result
}

fn run(args: &Args, daemon: &mut Daemon, socket: &Path, host: &VmHost) -> anyhow::Result<()> {
    let client = Client::new(socket);
    daemon.spawn()?;
    wait_healthy(&client, Duration::from_secs(60))?;

    let t = Instant::now();
    let failed = parallel(args.n, args.concurrency, |i| {
        let _: VmInfo = client.send_json(Method::POST, "/v1/vms", &[], &spec(i))?;
        Ok(())
    });
    if failed > 0 {
        bail!("{failed} creates failed");
    }
    println!(
        "created {} VMs in {:.1} s ({:.0}/s)",
        args.n,
        t.elapsed().as_secs_f64(),
        args.n as f64 / t.elapsed().as_secs_f64()
    );

    // The stops block until their ladder ends: fire them from threads that outlive the
    // daemon (their connections break at the kill).
    for i in 0..args.stops {
        let c = Client::new(socket);
        std::thread::spawn(move || {
            let _ = c.request(Method::POST, format!("/v1/vms/{}/stop", name(i)), &[], None);
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&list(&client)?, VmState::Stopping) < args.stops {
        if Instant::now() > deadline {
            bail!("the stops never all read stopping");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopping_pids: Vec<u32> = list(&client)?
        .iter()
        .filter(|v| v.state == VmState::Stopping)
        .filter_map(|v| v.pid)
        .collect();
    println!(
        "{} stops under way (guests ignore Ctrl+Alt+Del)",
        stopping_pids.len()
    );

    let mut health = Vec::new();
    for round in 1..=args.rounds {
        daemon.kill9();
        let t0 = daemon.spawn()?;
        wait_healthy(&client, Duration::from_secs(120))?;
        let healthy = t0.elapsed();
        let vms = list(&client)?;
        let listed = t0.elapsed();
        println!(
            "round {round}: kill -9, restart -> healthy API {:.0} ms, full list of {} VMs {:.0} ms; \
             {} running, {} stopping, {} VMM processes",
            ms(healthy),
            vms.len(),
            ms(listed),
            count(&vms, VmState::Running),
            count(&vms, VmState::Stopping),
            host.vmm_pids().len()
        );
        if count(&vms, VmState::Stopping) != args.stops {
            bail!("expected {} VMs stopping after the restart", args.stops);
        }
        health.push(healthy);
    }
    health.sort();
    println!(
        "restart -> healthy API over {} rounds: min {:.0} ms, median {:.0} ms, max {:.0} ms \
         (target <= 1000 ms)",
        health.len(),
        ms(health[0]),
        ms(health[health.len() / 2]),
        ms(health[health.len() - 1])
    );

    // The background ladders are still waiting; the processes exit now (SIGTERM from
    // outside): each exit ends its stop, recorded as stopped.
    let t = Instant::now();
    for pid in &stopping_pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let vms = list(&client)?;
        if count(&vms, VmState::Stopped) == args.stops && count(&vms, VmState::Stopping) == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "after the VMMs exited: {} stopped, {} stopping",
                count(&vms, VmState::Stopped),
                count(&vms, VmState::Stopping)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "{} VMMs exited -> all {} recorded stopped in {:.0} ms",
        stopping_pids.len(),
        args.stops,
        ms(t.elapsed())
    );
    Ok(())
}
