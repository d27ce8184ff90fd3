//! Test support (feature `testing`, and this crate's own tests): a `VmSupervisor` wired to
//! the fake host backends, so the supervisor and the layers above it (hearthd's HTTP API) can
//! be tested without root, a kernel or a VMM.
// Test support: a set-up that fails panics (in `build`), failing the test that asked for it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use actix::{Actor, Addr};
use hearth_proto::api_images::ImageKind;

use super::{
    MemoryVmStore, StaticImages, SupervisorDeps, SupervisorSettings, VmSupervisor, VmmFactory,
};
use crate::dns::{DnsActor, DnsOptions};
use crate::firecracker::{FirecrackerSettings, VmmVersion};
use crate::host::disks::fake::FakeDisks;
use crate::host::firewall::fake::FakeFirewall;
use crate::host::links::fake::FakeLinks;
use crate::host::processes::fake::FakeProcesses;
use crate::nat::{NatActor, NatConfig};
use crate::snapshot::SnapshotActor;
use crate::tap_pool::{TapPoolActor, TapPoolConfig};

fn log() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// Starts a supervisor over fake host backends (pool, firewall, DNS on no socket, disks,
/// processes) and `store`, with the images `vmlinux` (kernel) and `base` (rootfs).
/// `with_binary` decides whether a VMM binary "exists"; the fake disks are returned to
/// inspect or make fail. Call inside an actix system.
pub fn supervisor_over_fakes(
    with_binary: bool,
    store: MemoryVmStore,
) -> (Addr<VmSupervisor>, FakeDisks) {
    let (sup, disks, _) = supervisor_with_pool(with_binary, store, TapPoolConfig::default());
    (sup, disks)
}

/// [`supervisor_over_fakes`] with the TAP pool configured by `pool` (its subnet must lie in
/// 172.31.240.0/24), also answering the pool's address (e.g. to lease every address first).
pub fn supervisor_with_pool(
    with_binary: bool,
    store: MemoryVmStore,
    pool: TapPoolConfig,
) -> (Addr<VmSupervisor>, FakeDisks, Addr<TapPoolActor>) {
    supervisor_with(
        with_binary,
        store,
        pool,
        FakeProcesses::new(),
        PathBuf::from("/nonexistent/hearth-test/vms"),
    )
}

/// [`supervisor_with_pool`] over the given fake processes (to plant VMMs or inspect
/// signals) and run directories under `run_base`.
pub fn supervisor_with(
    with_binary: bool,
    store: MemoryVmStore,
    pool: TapPoolConfig,
    processes: FakeProcesses,
    run_base: PathBuf,
) -> (Addr<VmSupervisor>, FakeDisks, Addr<TapPoolActor>) {
    supervisor_with_settings(
        with_binary,
        store,
        pool,
        processes,
        run_base,
        SupervisorSettings::default(),
    )
}

/// [`supervisor_with`] with the given lifecycle settings (e.g. a snapshot directory).
pub fn supervisor_with_settings(
    with_binary: bool,
    store: MemoryVmStore,
    pool: TapPoolConfig,
    processes: FakeProcesses,
    run_base: PathBuf,
    settings: SupervisorSettings,
) -> (Addr<VmSupervisor>, FakeDisks, Addr<TapPoolActor>) {
    let (sup, disks, pool) = build(
        with_binary,
        store,
        pool,
        processes,
        run_base,
        settings,
        None,
    );
    (sup.start(), disks, pool)
}

/// A supervisor over fakes (with a Firecracker v1.16.0 binary, which restores snapshots)
/// whose VMMs are jailed by `jail` (e.g. over `FakeJails`), with run directories under
/// `run_base`.
pub fn supervisor_jailed(
    store: MemoryVmStore,
    processes: FakeProcesses,
    run_base: PathBuf,
    jail: super::JailSettings,
) -> (Addr<VmSupervisor>, FakeDisks) {
    let (mut sup, disks, _) = build(
        true,
        store,
        TapPoolConfig::default(),
        processes,
        run_base,
        SupervisorSettings::default(),
        Some(jail),
    );
    // A jailer-compatible VMM recent enough to restore snapshots (`vsock_override`).
    if let Some(b) = sup.vmm.binary.as_mut() {
        b.version = crate::firecracker::snapshot_handlers::MIN_RESTORE_VERSION;
    }
    (sup.start(), disks)
}

/// A supervisor over fakes (with a binary) whose policies read `clock` and check only when
/// sent a `PolicyTick` (no periodic tick), with `autostart_parallelism`, and run directories
/// under `run_base` (restarts spawn: give it a temporary directory).
pub fn supervisor_with_clock(
    store: MemoryVmStore,
    processes: FakeProcesses,
    clock: Arc<dyn super::policy::Clock>,
    autostart_parallelism: usize,
    run_base: PathBuf,
) -> Addr<VmSupervisor> {
    let settings = SupervisorSettings {
        policy: super::PolicySettings {
            tick: std::time::Duration::ZERO,
            autostart_parallelism,
        },
        ..SupervisorSettings::default()
    };
    let (sup, _, _) = build(
        true,
        store,
        TapPoolConfig::default(),
        processes,
        run_base,
        settings,
        None,
    );
    sup.with_clock(clock).start()
}

/// A supervisor over fakes, not started: tests call its bookkeeping directly.
#[cfg(test)]
pub(super) fn unstarted(store: MemoryVmStore, settings: SupervisorSettings) -> VmSupervisor {
    let run_base = std::env::temp_dir().join("hearth-unstarted-supervisor");
    build(
        true,
        store,
        TapPoolConfig::default(),
        FakeProcesses::new(),
        run_base,
        settings,
        None,
    )
    .0
}

fn build(
    with_binary: bool,
    store: MemoryVmStore,
    pool: TapPoolConfig,
    processes: FakeProcesses,
    run_base: PathBuf,
    settings: SupervisorSettings,
    jail: Option<super::JailSettings>,
) -> (VmSupervisor, FakeDisks, Addr<TapPoolActor>) {
    let tap_pool = TapPoolActor::new(pool, std::rc::Rc::new(FakeLinks::new()), log())
        .unwrap()
        .start();
    let firewall = FakeFirewall::new();
    firewall.add_interface("eth0");
    firewall.add_interface("hearth0");
    let nat = NatActor::new(
        NatConfig {
            bridge: "hearth0".into(),
            cidr: "172.31.240.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 31, 240, 1),
            egress: Some("eth0".into()),
            guest_ports: "hth".into(),
            isolate_guests: true,
            block_guest_to_host: true,
            anti_spoofing: true,
        },
        Box::new(firewall),
        log(),
    )
    .unwrap()
    .start();
    let dns = DnsActor::new(DnsOptions::new("vm.internal", vec![]), log())
        .unwrap()
        .start();
    let disks = FakeDisks::new(1 << 20);
    let snapshot = SnapshotActor::new(Box::new(disks.clone()), log()).start();
    let vmm = VmmFactory {
        binary: with_binary.then(|| crate::firecracker::FirecrackerBinary {
            path: PathBuf::from("/usr/bin/firecracker"),
            version: VmmVersion {
                major: 1,
                minor: 12,
                patch: 0,
            },
        }),
        processes: Arc::new(processes),
        settings: FirecrackerSettings::new(run_base),
        jail,
    };
    let images = StaticImages(BTreeMap::from([
        (
            (ImageKind::Kernel, "vmlinux".into()),
            PathBuf::from("/img/vmlinux"),
        ),
        (
            (ImageKind::Rootfs, "base".into()),
            PathBuf::from("/img/base.ext4"),
        ),
    ]));
    let sup = VmSupervisor::new(
        SupervisorDeps {
            tap_pool: tap_pool.clone(),
            nat,
            dns,
            snapshot,
        },
        vmm,
        settings,
        Box::new(store),
        Box::new(images),
        log(),
    );
    (sup, disks, tap_pool)
}
