//! Drives `VmSupervisor` directly, without HTTP: this process plays hearthd.
//!
//! Inside a private network namespace (with an upstream namespace behind its egress veth
//! `wan0`), it builds every actor with the Linux backends through `hearth::daemon::start`
//! (SQLite store and image store in a temporary data directory, `firecracker-sim` as the
//! Firecracker binary), then creates three VMs, lists them, resolves their names over DNS,
//! switches NAT on and off for one, stops and starts one, deletes them all, and prints states,
//! per-VM timings and the supervisor's phase times. What is left on the host is counted at the
//! end; VMM processes, namespaces and the directory are removed even on failure.
//!
//! Needs root. Build the simulator first:
//!
//! ```text
//! cargo build -p firecracker-sim
//! sudo cargo run --example supervisor
//! ```

use hearth::vm_host;
use hearth_testkit as common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::Addr;
use anyhow::{bail, Context as _};
use common::NetNs;
use hearth::config::Config;
use hearth::daemon::{self, Daemon};
use hearth_actors::supervisor::{
    CreateVm, DeleteVm, GetMetrics, ListVms, RunAction, SetNat, VmAction, VmSupervisor,
};
use hearth_proto::api::{self, VmInfo};
use slog::Drain;
use vm_host::VmHost;

/// The VMs made here: name and whether NAT is on from the start.
const VMS: [(&str, bool); 3] = [("web", true), ("db", false), ("cache", false)];

fn logger() -> slog::Logger {
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let drain = slog::LevelFilter::new(drain, slog::Level::Warning).fuse();
    slog::Logger::root(drain, slog::o!())
}

fn ms(d: Duration) -> String {
    format!("{:7.2} ms", d.as_secs_f64() * 1e3)
}

fn spec(name: &str, nat: bool) -> api::CreateVm {
    api::CreateVm {
        name: name.into(),
        kernel: vm_host::KERNEL.into(),
        rootfs: vm_host::ROOTFS.into(),
        vcpus: 1,
        memory_mib: 128,
        disk_size: None,
        boot_args: None,
        init: None,
        nat,
        ready_probe: true,
        labels: BTreeMap::from([("example".to_owned(), "supervisor".to_owned())]),
        from_snapshot: None,
        restart: hearth_proto::api_policy::RestartPolicy::No,
        ttl: None,
        on_expiry: hearth_proto::api_policy::OnExpiry::Stop,
        publish: Vec::new(),
        egress: None,
    }
}

fn row(vm: &VmInfo) -> String {
    format!(
        "{:6} {:8} ip {:15} tap {:6} pid {:>7} nat {:3}{}",
        vm.name,
        vm.state.to_string(),
        vm.guest_ip.map_or_else(|| "-".into(), |i| i.to_string()),
        vm.tap.as_deref().unwrap_or("-"),
        vm.pid.map_or_else(|| "-".into(), |p| p.to_string()),
        if vm.nat { "on" } else { "off" },
        vm.last_error
            .as_deref()
            .map(|e| format!(" error: {e}"))
            .unwrap_or_default()
    )
}

fn nat_members(ns: &NetNs) -> usize {
    let out = ns.exec(&["ipset", "list", "hearth-nat"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip_while(|l| !l.starts_with("Members:"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count()
}

fn dig(ns: &NetNs, server: std::net::IpAddr, name: &str) -> String {
    let out = ns.exec(&[
        "dig",
        "+short",
        "+time=2",
        "+tries=1",
        &format!("@{server}"),
        name,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("supervisor needs root: it creates network namespaces, a bridge, TAPs and rules");
    }
    // Dropped last: kills leftover VMMs, deletes both namespaces and the directory.
    let host = VmHost::new("hsup", 16)?;
    let mut config = host.config.clone();
    config.network.pool_size = 2;
    println!(
        "host         namespace {} (upstream {}), data {}",
        host.ns.name(),
        host.upstream.name(),
        config.data_dir.display()
    );
    let result = host.ns.block_on(|| run(&host.ns, &config));
    let leaks = host.leaks();
    println!(
        "left         {leaks} (the TAPs are the warm pool of {})",
        config.network.pool_size
    );
    result?;
    if leaks.vmm_processes + leaks.run_dirs + leaks.disks + leaks.nat_members + leaks.guest_members
        != 0
    {
        bail!("VM resources were left behind: {leaks}");
    }
    drop(host);
    println!("cleanup      namespaces and directory deleted");
    Ok(())
}

async fn run(ns: &NetNs, config: &Config) -> anyhow::Result<()> {
    let log = logger();
    let started = Instant::now();
    let daemon = daemon::start(config, &log).await?;
    println!(
        "daemon       up in {}, DNS on {}, reconciled: {} adopted, {} swept",
        ms(started.elapsed()),
        daemon.dns_addr,
        daemon.report.adopted.len(),
        daemon.report.swept.len()
    );
    let outcome = scenario(ns, &daemon).await;
    // Whatever happened, every VM this run made is deleted (bounded: one pass over the list).
    let cleanup = delete_all(&daemon.supervisor).await;
    daemon::stop(&daemon, config).await?;
    outcome?;
    cleanup
}

#[expect(
    clippy::too_many_lines,
    reason = "the scenario the example shows, step by step"
)]
async fn scenario(ns: &NetNs, daemon: &Daemon) -> anyhow::Result<()> {
    let sup = &daemon.supervisor;
    println!("--- create (phase times from the supervisor's histograms, ms)");
    println!(
        "       {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} | {:>8}",
        "disk", "lease", "spawn", "api_rdy", "config", "start", "nat_dns", "ready", "saga", "round"
    );
    for (name, nat) in VMS {
        let before = sup.send(GetMetrics {}).await?;
        let t = Instant::now();
        let vm = sup
            .send(CreateVm {
                spec: spec(name, nat),
                idempotency: None,
            })
            .await?
            .with_context(|| format!("create {name}"))?;
        let took = t.elapsed();
        let after = sup.send(GetMetrics {}).await?;
        let phases: String = vm_host::phase_delta(&before, &after)
            .iter()
            .map(|(_, _, d)| format!(" {:8.2}", d.as_secs_f64() * 1e3))
            .collect();
        println!(
            "{name:6}{phases} | {:8.2}  -> {}",
            took.as_secs_f64() * 1e3,
            vm.state
        );
    }

    println!("--- list");
    let vms = sup.send(ListVms { label: None }).await?;
    for vm in &vms {
        println!("    {}", row(vm));
    }
    if vms.len() != VMS.len() {
        bail!(
            "expected {} VMs, the supervisor lists {}",
            VMS.len(),
            vms.len()
        );
    }

    println!(
        "--- DNS (dig @{} inside the namespace)",
        daemon.dns_addr.ip()
    );
    for vm in &vms {
        let fqdn = format!("{}.vm.internal", vm.name);
        println!("    {fqdn:20} -> {}", dig(ns, daemon.dns_addr.ip(), &fqdn));
    }

    println!("--- NAT on db");
    println!("    hearth-nat members before: {}", nat_members(ns));
    let t = Instant::now();
    let db = sup
        .send(SetNat {
            name: "db".into(),
            enabled: true,
        })
        .await??;
    println!(
        "    SetNat on  {} -> members {}  ({})",
        ms(t.elapsed()),
        nat_members(ns),
        row(&db)
    );
    let t = Instant::now();
    sup.send(SetNat {
        name: "db".into(),
        enabled: false,
    })
    .await??;
    println!(
        "    SetNat off {} -> members {}",
        ms(t.elapsed()),
        nat_members(ns)
    );

    println!("--- stop / start cache");
    for action in [VmAction::Stop, VmAction::Start] {
        let t = Instant::now();
        let vm = sup
            .send(RunAction {
                name: "cache".into(),
                action,
                idempotency: None,
            })
            .await??;
        println!(
            "    {:5} {}  {}",
            action.as_str(),
            ms(t.elapsed()),
            row(&vm)
        );
    }

    println!("--- delete");
    for (name, _) in VMS {
        let t = Instant::now();
        sup.send(DeleteVm { name: name.into() })
            .await?
            .with_context(|| format!("delete {name}"))?;
        println!("    {name:6} {}", ms(t.elapsed()));
    }
    let left = sup.send(ListVms { label: None }).await?;
    println!("    VMs listed after delete: {}", left.len());

    let m = sup.send(GetMetrics {}).await?;
    println!("--- supervisor phase histograms (all boots: 3 creates + 1 start)");
    for (phase, h) in &m.phase_seconds {
        let mean = if h.count() > 0 {
            h.sum / h.count() as f64
        } else {
            0.0
        };
        println!(
            "    {phase:10} n {:2}  mean {:7.2} ms",
            h.count(),
            mean * 1e3
        );
    }
    for (op, n) in &m.errors {
        println!("    errors {op}: {n}");
    }
    Ok(())
}

/// Deletes every VM the supervisor lists; the first error is returned after trying all.
async fn delete_all(sup: &Addr<VmSupervisor>) -> anyhow::Result<()> {
    let mut first = Ok(());
    for vm in sup.send(ListVms { label: None }).await? {
        let res = sup
            .send(DeleteVm {
                name: vm.name.clone(),
            })
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| format!("cleanup: delete {}", vm.name));
        if let Err(e) = res {
            eprintln!("{e:#}");
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}
