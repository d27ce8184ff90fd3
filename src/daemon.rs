//! hearthd's wiring: builds every actor from the configuration with the Linux backends, opens
//! the store, reconciles (`Open`), starts DNS on the gateway, and on shutdown closes the
//! supervisor (VMs keep running unless `vm.stop_on_exit`). The actors run on the calling
//! thread's actix system.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use anyhow::Context as _;
use hearth_actors::dns::{self, DnsActor, DnsOptions};
use hearth_actors::firecracker::{self, FirecrackerSettings, StopPlan};
use hearth_actors::host::disks::BackendChoice;
use hearth_actors::host::firewall::linux::{IptablesFlavor, LinuxFirewall};
use hearth_actors::host::links::linux::LinuxLinks;
use hearth_actors::host::processes::linux::LinuxProcesses;
use hearth_actors::nat::{NatActor, NatConfig};
use hearth_actors::snapshot::SnapshotActor;
use hearth_actors::supervisor::{
    self, ImageCatalog, OpenReport, SupervisorDeps, SupervisorSettings, VmSupervisor, VmmFactory,
};
use hearth_actors::tap_pool::{TapPoolActor, TapPoolConfig};
use hearth_proto::api_images::ImageKind;
use slog::{info, warn, Logger};

use crate::api::node::JailStatus;
use crate::config::{Config, JailerMode};
use crate::images::ImageStore;
use crate::preflight::{self, JailDecision};
use crate::store::Store;

/// The running daemon's handles.
pub struct Daemon {
    /// The supervisor: every lifecycle goes through it.
    pub supervisor: Addr<VmSupervisor>,
    /// The DNS actor (serving on the gateway).
    pub dns: Addr<DnsActor>,
    /// What `Open` found.
    pub report: OpenReport,
    /// Where DNS listens.
    pub dns_addr: SocketAddr,
    /// The image store the supervisor resolves images in; the API must use this one (its
    /// removals are serialized with those resolutions).
    pub images: ImageStore,
    /// Whether VMMs run jailed, and why not (decided once, here).
    pub jailing: JailStatus,
}

/// The image store is the supervisor's image catalog (kind checked).
impl ImageCatalog for ImageStore {
    fn resolve(&self, kind: ImageKind, name: &str) -> Option<PathBuf> {
        // Serialized with image removals by the store (one store, shared with the API).
        ImageStore::resolve(self, kind, name)
    }
}

/// Builds the actors, reconciles, and starts DNS. Call inside an actix system.
pub async fn start(config: &Config, log: &Logger) -> anyhow::Result<Daemon> {
    for dir in [&config.data_dir, &config.run_dir] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("Cannot create directory {}", dir.display()))?;
    }
    let store = Store::open_with(&config.data_dir.join("state.db"), config.store.synchronous)?;
    let image_store = ImageStore::open(&config.data_dir).context("Cannot open the image store")?;
    // Decided before any host resource is made: a refusal leaves the host as it was.
    let jailed_vmms = jailed_vmms(&store.load_all()?);
    let (factory, jailing) = vmm_factory(config, &jailed_vmms, log)?;
    let deps = start_host_actors(config, log)?;
    let dns = deps.dns.clone();
    let supervisor = VmSupervisor::new(
        deps,
        factory,
        supervisor_settings(config),
        Box::new(store),
        Box::new(image_store.clone()),
        log.clone(),
    )
    .start();

    let report = supervisor
        .send(supervisor::Open {})
        .await
        .context("The supervisor stopped")??;
    info!(log, "reconciled"; "adopted" => report.adopted.len(), "dead" => report.dead.len(),
        "repaired" => report.repaired.len(), "swept" => report.swept.len());

    // The bridge (and so the gateway address) exists once `Open` initialised the pool.
    let dns_addr = dns
        .send(dns::Start {
            listen: SocketAddr::new(config.gateway().into(), config.dns.port),
        })
        .await
        .context("The DNS actor stopped")??;
    info!(log, "DNS serving"; "addr" => %dns_addr, "zone" => &config.dns.zone);

    Ok(Daemon {
        supervisor,
        dns,
        report,
        dns_addr,
        images: image_store,
        jailing,
    })
}

/// The actors that own the host's resources, on the Linux backends: the TAP pool, the
/// firewall (and the task that follows the egress interface), DNS (not yet serving) and the
/// disks.
fn start_host_actors(config: &Config, log: &Logger) -> anyhow::Result<SupervisorDeps> {
    let net = &config.network;
    let links = LinuxLinks::new().context("Cannot open a netlink socket")?;
    let tap_pool = TapPoolActor::new(
        TapPoolConfig {
            bridge: net.bridge.clone(),
            cidr: net.cidr,
            tap_prefix: net.tap_prefix.clone(),
            pool_size: net.pool_size,
            mtu: net.mtu,
            tap_owner: net.tap_owner,
            tap_group: net.tap_group,
            isolate: net.isolate_guests,
        },
        Rc::new(links),
        log.clone(),
    )?
    .start();
    let nat = NatActor::new(
        NatConfig {
            bridge: net.bridge.clone(),
            cidr: net.cidr,
            gateway: config.gateway(),
            egress: net.egress_interface.clone(),
            guest_ports: net.tap_prefix.clone(),
            isolate_guests: net.isolate_guests,
            block_guest_to_host: net.block_guest_to_host,
            anti_spoofing: net.anti_spoofing,
        },
        Box::new(LinuxFirewall::new(IptablesFlavor::System)),
        log.clone(),
    )?
    .start();
    // Without an egress interface hearthd serves without NAT and picks one up later; one that
    // came from the default route follows the route.
    let configured_egress = if net.egress_follows_route {
        None
    } else {
        net.egress_interface.clone()
    };
    crate::egress::follow(nat.clone(), configured_egress, log.clone());
    let mut dns_options = DnsOptions::new(config.dns.zone.clone(), config.dns.upstreams.clone());
    dns_options.guest_subnet = Some(net.cidr);
    dns_options.cache_entries = config.dns.cache_entries;
    let dns = DnsActor::new(dns_options, log.clone())?.start();
    // Addresses DNS answers deny-mode guests for allowed domains go to the firewall.
    dns.do_send(dns::SetEgressLearner {
        learner: Some(nat.clone().recipient()),
    });

    let choice: BackendChoice = config
        .vm
        .disk_backend
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Disk copies block for up to ~100 ms: on its own thread they never stall the others.
    let snapshot = SnapshotActor::open(choice, &config.data_dir, log.clone())?.start_dedicated();
    Ok(SupervisorDeps {
        tap_pool,
        nat,
        dns,
        snapshot,
    })
}

/// What makes one `FirecrackerActor` per VM: the binary (none when no usable one is found:
/// hearthd serves, creates say why they cannot boot), the process backend, the run directory,
/// and whether VMMs run jailed.
fn vmm_factory(
    config: &Config,
    jailed_vmms: &[String],
    log: &Logger,
) -> anyhow::Result<(VmmFactory, JailStatus)> {
    let processes = Arc::new(LinuxProcesses::new());
    let binary = match firecracker::binary::resolve(config.firecracker_bin.as_deref(), &*processes)
    {
        Ok(b) => {
            info!(log, "firecracker binary"; "path" => %b.path.display(), "version" => %b.version);
            Some(b)
        }
        Err(e) => {
            warn!(log, "no usable Firecracker binary: VMs cannot be created until one is configured";
                "error" => %e);
            None
        }
    };
    let fc = binary
        .as_ref()
        .map(|b| b.path.as_path())
        .or(config.firecracker_bin.as_deref());
    let (jail, status) = decide_jailing(config, fc, jailed_vmms, log)?;
    Ok((
        VmmFactory {
            binary,
            processes,
            settings: FirecrackerSettings {
                socket_group: config.vm.socket_group,
                ..FirecrackerSettings::new(&config.run_dir)
            },
            jail,
        },
        status,
    ))
}

/// Issue 16: jailed or not, decided once from `[jailer] enabled` and what this host offers
/// (`firecracker`: the binary VMMs run). `true` on a host that cannot jail is an error, never
/// a silent fallback; `"auto"` falls back with a warning per reason, unless `jailed_vmms` (VMs
/// whose VMMs were started jailed) would be left running unadopted.
fn decide_jailing(
    config: &Config,
    firecracker: Option<&std::path::Path>,
    jailed_vmms: &[String],
    log: &Logger,
) -> anyhow::Result<(Option<supervisor::JailSettings>, JailStatus)> {
    let mode = config.jailer.enabled;
    let checks = preflight::probe_jailing(&config.jailer, firecracker, &config.data_dir);
    let mut decision = preflight::decide_jailing(mode, &checks);
    let mut jail = None;
    if decision == JailDecision::Jailed {
        // The checks passed; reading the host again could still fail (a binary removed since).
        match config.jailer.settings() {
            Ok(s) => jail = Some(s),
            Err(e) if mode == JailerMode::Auto => {
                decision = JailDecision::Unjailed { reasons: vec![e] };
            }
            Err(e) => decision = JailDecision::Refused { reasons: vec![e] },
        }
    }
    let decision = preflight::keep_jailed_vmms(mode, decision, jailed_vmms);
    match decision {
        JailDecision::Jailed => {
            let j = jail
                .as_ref()
                .context("jailing decided without its settings")?;
            info!(log, "VMMs run jailed"; "jailer" => %j.jailer.display(),
                "enabled" => %mode,
                "chroot_base_dir" => %j.chroot_base.display(),
                "cgroup_version" => j.cgroup_version.as_arg(),
                "uid_range" => format!("{:?}", j.uid_range));
            Ok((
                jail,
                JailStatus {
                    jailed: true,
                    reasons: Vec::new(),
                },
            ))
        }
        JailDecision::Unjailed { reasons } => {
            if mode == JailerMode::Off {
                info!(
                    log,
                    "VMMs run unjailed: as root, with the host's filesystem in view \
                    (less isolated; [jailer] enabled = false, docs/jailer.md)"
                );
            } else {
                for r in &reasons {
                    warn!(log, "VMMs cannot be jailed here"; "reason" => r);
                }
                warn!(
                    log,
                    "VMMs run unjailed: as root, with the host's filesystem in view \
                    (less isolated; [jailer] enabled = \"auto\" found jailing impossible here, \
                    see the reasons above and docs/jailer.md)";
                    "reasons" => reasons.join("; ")
                );
            }
            Ok((
                None,
                JailStatus {
                    jailed: false,
                    reasons,
                },
            ))
        }
        JailDecision::Refused { reasons } => anyhow::bail!(
            "[jailer] enabled = {mode}, but VMMs cannot be jailed here: {}",
            reasons.join("; ")
        ),
    }
}

/// The VMs whose VMMs were started jailed and may still run (a uid and a process recorded).
fn jailed_vmms(records: &[supervisor::VmRecord]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.uid.is_some() && r.process.is_some())
        .map(|r| r.spec.name.clone())
        .collect()
}

/// The `[vm]` section's lifecycle settings, as the supervisor takes them.
fn supervisor_settings(config: &Config) -> SupervisorSettings {
    SupervisorSettings {
        stop_plan: StopPlan {
            ctrl_alt_del_grace: Some(Duration::from_secs(config.vm.shutdown_grace_secs)),
            term_grace: Some(Duration::from_secs(config.vm.term_grace_secs)),
        },
        ready_timeout: Duration::from_secs(config.vm.ready_timeout_secs),
        agent_port: config.vm.agent_port,
        snapshot_dir: config.data_dir.join("snapshots"),
        fork_memory_dir: config.snapshots.fork_memory_dir.clone(),
        policy: config.policy.settings(),
    }
}

/// Stops taking work, lets in-flight operations finish, stops VMs if configured, stops DNS.
/// Host networking (bridge, pool, rules) stays: running VMs still use it.
pub async fn stop(daemon: &Daemon, config: &Config) -> anyhow::Result<()> {
    daemon
        .supervisor
        .send(supervisor::Close {
            stop_vms: config.vm.stop_on_exit,
        })
        .await
        .context("The supervisor stopped")??;
    daemon
        .dns
        .send(dns::Stop)
        .await
        .context("The DNS actor stopped")??;
    Ok(())
}
