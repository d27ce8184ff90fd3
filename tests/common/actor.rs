//! Driving one `FirecrackerActor` in tests as the supervisor's saga does: a [`Fixture`] (a
//! temporary run base with a kernel and a root disk, and actors spawned under it) and the
//! saga's messages.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use hearth_actors::firecracker::binary::{self, FirecrackerBinary};
use hearth_actors::firecracker::{
    cid_for_guest_ip, ConfigureVm, FirecrackerActor, FirecrackerSettings, NetConfig, SpawnProcess,
    StartVm, VmConfig, VmProcessEvent, VmmProcess,
};
use hearth_actors::host::processes::LinuxProcesses;
use hearth_actors::lease::NetLease;
use hearth_testkit::{fc_sim, vmlinux};
use tokio::sync::mpsc::UnboundedReceiver;

/// A temporary run base (`<dir>/vms`) with a kernel (`vmlinux`) and a root disk
/// (`rootfs.ext4`) for the VMM, removed on drop.
pub struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A fixture in a fresh directory under `/tmp` named from `prefix` (short: socket paths
    /// under it must fit in 108 bytes).
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .unwrap();
        vmlinux::write_minimal_vmlinux(&dir.path().join("vmlinux"));
        std::fs::write(dir.path().join("rootfs.ext4"), vec![0u8; 4096]).unwrap();
        Fixture { dir }
    }

    /// The fixture's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Actor settings with the run base under the fixture.
    pub fn settings(&self) -> FirecrackerSettings {
        FirecrackerSettings::new(self.path().join("vms"))
    }

    /// The VMM binary at `path`, checked as hearthd checks it.
    #[expect(
        clippy::unused_self,
        reason = "a method so tests build every VMM part through the fixture alike"
    )]
    pub fn binary(&self, path: PathBuf) -> FirecrackerBinary {
        binary::resolve(Some(&path), &LinuxProcesses).unwrap()
    }

    /// The simulator behind a wrapper setting `env` (see [`fc_sim::sim_wrapper`]).
    pub fn wrapper(
        &self,
        name: &str,
        env: &[(&str, &str)],
        ignore_sigterm: bool,
    ) -> FirecrackerBinary {
        self.binary(fc_sim::sim_wrapper(self.path(), name, env, ignore_sigterm))
    }

    /// A one-vCPU VM on the fixture's kernel and disk, with a vsock and `net` if given.
    pub fn config(&self, net: Option<NetLease>) -> VmConfig {
        VmConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
            kernel: self.path().join("vmlinux"),
            initrd: None,
            extra_boot_args: String::new(),
            rootfs: self.path().join("rootfs.ext4"),
            rootfs_read_only: false,
            rootfs_rate_limiter: None,
            net: net.map(|lease| NetConfig {
                lease,
                rx_rate_limiter: None,
                tx_rate_limiter: None,
            }),
            vsock_cid: cid_for_guest_ip(Ipv4Addr::new(172, 31, 240, 5)),
        }
    }

    /// A started actor for `vm` running `bin` with the real process backend, and its events.
    pub fn actor(
        &self,
        vm: &str,
        bin: FirecrackerBinary,
    ) -> (Addr<FirecrackerActor>, UnboundedReceiver<VmProcessEvent>) {
        let (events, rx) = fc_sim::event_sink();
        let actor = FirecrackerActor::new(
            vm,
            bin,
            Arc::new(LinuxProcesses),
            self.settings(),
            events,
            hearth_testkit::test_logger(),
        )
        .unwrap();
        (actor.start(), rx)
    }
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

/// The next event of a VM; panics after 10 s without one.
pub async fn next_event(rx: &mut UnboundedReceiver<VmProcessEvent>) -> VmProcessEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no VM event within 10 s")
        .expect("event channel closed")
}

/// Brings the VM up with the saga's messages: spawn, configure, start.
pub async fn bring_up(vm: &Addr<FirecrackerActor>, config: VmConfig) -> VmmProcess {
    let spawned = vm.send(SpawnProcess {}).await.unwrap().expect("spawn");
    vm.send(ConfigureVm { config })
        .await
        .unwrap()
        .expect("configure");
    vm.send(StartVm {}).await.unwrap().expect("start");
    spawned.record
}
