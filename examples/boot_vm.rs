//! Boots one VM with `FirecrackerActor` and prints each phase's duration. The VM is brought up
//! as the supervisor's saga does it: `SpawnProcess`, `ConfigureVm`, `StartVm`, then
//! `ProbeReady` (a silent agent is reported, and the VM is still stopped cleanly).
//!
//! By default it runs `firecracker-sim` (build it first: `cargo build -p firecracker-sim`)
//! inside a private network namespace it creates, with a TAP leased from `TapPoolActor`, a
//! dummy kernel and a small rootfs file it creates. With `--firecracker PATH --kernel PATH
//! --rootfs PATH` it does the same against a real Firecracker. Needs root (namespace, TAP).
//!
//! ```text
//! cargo run --example boot_vm
//! cargo run --example boot_vm -- --firecracker /usr/bin/firecracker --kernel vmlinux --rootfs rootfs.ext4
//! ```

use hearth_testkit as common;
use hearth_testkit::fc_sim;

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use anyhow::{bail, Context};
use clap::Parser;
use hearth_actors::firecracker::{
    binary, cid_for_guest_ip, ConfigureVm, FirecrackerActor, FirecrackerSettings, NetConfig,
    ProbeReady, SpawnProcess, StartVm, StopPlan, StopVm, VmConfig,
};
use hearth_actors::host::links::linux::LinuxLinks;
use hearth_actors::host::processes::LinuxProcesses;
use hearth_actors::tap_pool::{
    AcquireTap, Initialize, ReleaseTap, TapPoolActor, TapPoolConfig, Teardown,
};
use slog::Drain;

#[derive(Parser, Debug)]
#[expect(
    clippy::struct_field_names,
    reason = "`boot_args` is the `--boot-args` flag, named as hearth names it everywhere"
)]
struct Args {
    /// A real Firecracker binary (default: firecracker-sim from the target directory).
    #[arg(long)]
    firecracker: Option<PathBuf>,
    /// Guest kernel (default: a dummy file, fine for the simulator).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Root filesystem image (default: a small empty file).
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Extra kernel arguments.
    #[arg(long, default_value = "")]
    boot_args: String,
    /// Skip the guest agent readiness probe.
    #[arg(long)]
    no_probe: bool,
    /// Readiness probe timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    probe_timeout_ms: u64,
}

fn logger() -> slog::Logger {
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let drain = slog::LevelFilter::new(drain, slog::Level::Info).fuse();
    slog::Logger::root(drain, slog::o!())
}

fn ms(d: Duration) -> String {
    format!("{:8.3} ms", d.as_secs_f64() * 1e3)
}

/// Spawn, configure, start and (unless `--no-probe`) probe, printing each phase.
async fn boot(
    vm: &actix::Addr<FirecrackerActor>,
    config: VmConfig,
    args: &Args,
) -> anyhow::Result<()> {
    let spawned = vm.send(SpawnProcess {}).await??;
    println!("pid          {}", spawned.record.pid);
    println!("spawn        {}", ms(spawned.spawn));
    println!("api ready    {}", ms(spawned.api_ready));
    let mut total = spawned.spawn + spawned.api_ready;
    let configured = vm.send(ConfigureVm { config }).await??;
    println!("configured   {}", ms(configured));
    let started = vm.send(StartVm {}).await??;
    println!("started      {}", ms(started));
    total += configured + started;
    if args.no_probe {
        println!("agent ready  (probe skipped)");
    } else {
        let probed = vm
            .send(ProbeReady {
                port: hearth_proto::agent::DEFAULT_PORT,
                timeout: Duration::from_millis(args.probe_timeout_ms),
            })
            .await?;
        match probed {
            Ok(out) => {
                println!("agent ready  {}", ms(out.elapsed));
                total += out.elapsed;
                let agent = out.reply;
                println!(
                    "agent        v{} boot_id {} uptime {} ms",
                    agent.version, agent.boot_id, agent.uptime_ms
                );
            }
            // The VM runs; only its agent is silent (the supervisor calls this `unready`).
            Err(e) => println!("agent        not ready: {e}"),
        }
    }
    println!("total        {}", ms(total));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("boot_vm needs root: it creates a network namespace and a TAP");
    }
    let work = tempfile::Builder::new()
        .prefix("bootvm")
        .tempdir_in("/tmp")?;
    let kernel = if let Some(k) = &args.kernel {
        k.clone()
    } else {
        let k = work.path().join("vmlinux");
        std::fs::write(&k, firecracker_sim::kernel::minimal_vmlinux())?;
        k
    };
    let rootfs = if let Some(r) = &args.rootfs {
        r.clone()
    } else {
        let r = work.path().join("rootfs.ext4");
        std::fs::write(&r, vec![0u8; 1 << 20])?;
        r
    };
    let fc = args.firecracker.clone().unwrap_or_else(fc_sim::sim_binary);
    let ns = common::NetNs::new("hearth-bootvm");
    let log = logger();
    ns.block_on(|| async move {
        let bin = binary::resolve(Some(&fc), &LinuxProcesses)?;
        println!("firecracker  {} ({})", bin.path.display(), bin.version);

        let links = LinuxLinks::new().context("netlink")?;
        let pool_cfg = TapPoolConfig {
            pool_size: 1,
            ..TapPoolConfig::default()
        };
        let pool = TapPoolActor::new(pool_cfg, Rc::new(links), log.clone())?.start();
        pool.send(Initialize { used: vec![] }).await??;
        let lease = pool.send(AcquireTap {}).await??;
        println!(
            "lease        tap {} ip {} mac {}",
            lease.tap, lease.guest_ip, lease.mac
        );

        let (events, _rx) = fc_sim::event_sink();
        let settings = FirecrackerSettings::new(work.path().join("vms"));
        let vm = FirecrackerActor::new(
            "boot-vm",
            bin,
            Arc::new(LinuxProcesses),
            settings,
            events,
            log.clone(),
        )?
        .start();
        let config = VmConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
            kernel,
            initrd: None,
            extra_boot_args: args.boot_args.clone(),
            rootfs,
            rootfs_read_only: false,
            rootfs_rate_limiter: None,
            vsock_cid: cid_for_guest_ip(lease.guest_ip),
            net: Some(NetConfig {
                lease: lease.clone(),
                rx_rate_limiter: None,
                tx_rate_limiter: None,
            }),
        };
        let result = boot(&vm, config, &args).await;
        if let Err(e) = &result {
            println!("boot failed: {e:#}");
        }
        // Whatever happened, a process that was spawned is stopped (a no-op otherwise).
        let plan = StopPlan {
            ctrl_alt_del_grace: Some(Duration::from_secs(3)),
            term_grace: Some(Duration::from_secs(2)),
        };
        if let Ok(out) = vm.send(StopVm { plan }).await? {
            println!(
                "stopped by   {} ({}) in {}",
                out.rung,
                out.status,
                ms(out.elapsed)
            );
        }
        let console = work.path().join("vms/boot-vm/console.log");
        let bytes = std::fs::metadata(&console).map_or(0, |m| m.len());
        println!("console log  {bytes} bytes (removed with the work directory)");
        pool.send(ReleaseTap { lease }).await??;
        pool.send(Teardown {
            remove_bridge: true,
        })
        .await??;
        result?;
        Ok::<_, anyhow::Error>(())
    })
}
