//! An in-process hearth host for examples and benchmarks that drive `VmSupervisor` directly
//! (the calling process plays hearthd): a private "host" namespace with an "upstream"
//! namespace behind its egress veth `wan0` and a default route, a short temporary directory
//! with the data and run directories, an image store holding a kernel (`vmlinux`, an `x86_64`
//! ELF header: the simulator boots anything) and a real ext4 root filesystem (`base`), and a
//! [`Config`] pointing at `firecracker-sim`. Dropping the host SIGKILLs every VMM process
//! whose API socket lies under its run directory (they run in their own process groups and
//! would outlive this process), then deletes both namespaces and the directory, so nothing is
//! left behind on failure either.
//!
//! Test support: only with the `testing` feature, which the crate's own tests and examples
//! get through its dev-dependency on itself, so release binaries do not carry it.
#![expect(
    clippy::disallowed_methods,
    reason = "test support: it runs mkfs.ext4 and removes the host directory it made"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use hearth_actors::supervisor::metrics::{Histogram, BUCKETS};
use hearth_actors::supervisor::SupervisorMetrics;
use hearth_proto::api_images::ImageKind;
use hearth_testkit::{self as common, fc_sim, NetNs};

use crate::config::Config;
use crate::images::ImageStore;

/// Name of the kernel image in the store.
pub const KERNEL: &str = "vmlinux";
/// Name of the root filesystem image in the store.
pub const ROOTFS: &str = "base";

/// The upstream namespace's address on the egress link (also its DNS "resolver").
const UPSTREAM_ADDR: &str = "10.98.0.2";

/// A private host for an in-process supervisor.
pub struct VmHost {
    /// The namespace the supervisor (and so every VMM it spawns) runs in.
    pub ns: NetNs,
    /// Stands for the outside world, behind `wan0`.
    pub upstream: NetNs,
    /// Data and run directories, images.
    pub dir: tempfile::TempDir,
    /// hearthd's configuration for this host (`firecracker-sim`, egress `wan0`).
    pub config: Config,
    /// A data directory outside `dir` (see [`VmHost::with_data_dir`]), removed on drop.
    external_data: Option<PathBuf>,
}

impl VmHost {
    /// Creates the namespaces, the directories and the image store. `rootfs_mib` is the size
    /// of the ext4 base image (mostly holes: `mkfs.ext4` writes only metadata).
    pub fn new(prefix: &str, rootfs_mib: u64) -> anyhow::Result<Self> {
        Self::with_data_dir(prefix, rootfs_mib, None)
    }

    /// Like [`VmHost::new`], with the data directory (store, images, disks) at `data_dir`
    /// (which must not exist yet; e.g. on a tmpfs), removed again on drop.
    pub fn with_data_dir(
        prefix: &str,
        rootfs_mib: u64,
        data_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        if let Some(d) = data_dir {
            if d.exists() {
                bail!("{} exists; give a path that does not", d.display());
            }
        }
        // A short path: socket paths under the run directory must fit in 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .context("temporary directory")?;
        let ns = NetNs::new(prefix);
        let upstream = NetNs::new(&format!("{prefix}u"));
        common::veth(
            &ns,
            "wan0",
            "10.98.0.1/24",
            &upstream,
            "up0",
            &format!("{UPSTREAM_ADDR}/24"),
        );
        ns.exec_ok(&["ip", "route", "add", "default", "via", UPSTREAM_ADDR]);

        let mut config = Config::new();
        config.data_dir = data_dir.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
        config.run_dir = dir.path().join("run");
        config.firecracker_bin = Some(fc_sim::sim_binary());
        config.network.egress_interface = Some("wan0".into());
        config.dns.upstreams = vec![format!("{UPSTREAM_ADDR}:53").parse()?];
        config.vm.ready_timeout_secs = 5;
        config.vm.shutdown_grace_secs = 2;
        config.vm.term_grace_secs = 2;
        let host = VmHost {
            ns,
            upstream,
            dir,
            config,
            external_data: data_dir.map(Path::to_path_buf),
        };
        host.import_images(rootfs_mib)?;
        Ok(host)
    }

    /// Writes the kernel and root filesystem and imports both into the image store.
    fn import_images(&self, rootfs_mib: u64) -> anyhow::Result<()> {
        let src = self.dir.path().join("src");
        std::fs::create_dir_all(&src)?;
        // A kernel the image store and Firecracker's loader (and so the simulator) accept.
        std::fs::write(
            src.join("vmlinux"),
            hearth_testkit::vmlinux::minimal_vmlinux(),
        )?;
        let rootfs = src.join("rootfs.ext4");
        std::fs::File::create(&rootfs)?.set_len(rootfs_mib << 20)?;
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&rootfs)
            .output()
            .context("run mkfs.ext4 (Debian package e2fsprogs)")?;
        if !out.status.success() {
            bail!("mkfs.ext4: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::fs::create_dir_all(&self.config.data_dir)?;
        let store = ImageStore::open(&self.config.data_dir)?;
        store.import(KERNEL, ImageKind::Kernel, &src.join("vmlinux"), |_, _| {})?;
        store.import(ROOTFS, ImageKind::Rootfs, &rootfs, |_, _| {})?;
        std::fs::remove_dir_all(&src)?;
        Ok(())
    }

    /// Pids of VMM processes whose command line names a socket under the run directory.
    pub fn vmm_pids(&self) -> Vec<u32> {
        vmm_pids(&self.config.run_dir)
    }

    /// What is left on the host, counted with the system tools (not from hearth's view).
    pub fn leaks(&self) -> Leaks {
        let out = |argv: &[&str]| String::from_utf8_lossy(&self.ns.exec(argv).stdout).into_owned();
        let members = |set: &str| {
            out(&["ipset", "list", set])
                .lines()
                .skip_while(|l| !l.starts_with("Members:"))
                .skip(1)
                .filter(|l| !l.trim().is_empty())
                .count()
        };
        Leaks {
            vmm_processes: self.vmm_pids().len(),
            run_dirs: count_entries(&self.config.run_dir),
            disks: count_entries(&self.config.data_dir.join("disks")),
            taps: out(&["ip", "-o", "link", "show", "type", "tun"])
                .lines()
                .count(),
            nat_members: members("hearth-nat"),
            guest_members: members("hearth-guests"),
        }
    }
}

impl Drop for VmHost {
    fn drop(&mut self) {
        let pids = self.vmm_pids();
        for pid in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if !pids.is_empty() {
            eprintln!("cleanup: killed {} leftover VMM processes", pids.len());
            // Bounded: a SIGKILLed process is gone within milliseconds.
            common::wait_until(Duration::from_secs(5), || self.vmm_pids().is_empty());
        }
        if let Some(d) = &self.external_data {
            let _ = std::fs::remove_dir_all(d);
        }
        // Then the fields drop: both namespaces are deleted, the directory removed.
    }
}

/// What hearth could leave behind on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaks {
    /// VMM processes with a socket under the run directory.
    pub vmm_processes: usize,
    /// Entries in the run directory.
    pub run_dirs: usize,
    /// Entries in the disks directory.
    pub disks: usize,
    /// TAP devices in the namespace (the warm pool included).
    pub taps: usize,
    /// Members of the NAT set.
    pub nat_members: usize,
    /// Members of the anti-spoofing set.
    pub guest_members: usize,
}

impl std::fmt::Display for Leaks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VMM processes {}, run dirs {}, disks {}, TAPs {}, NAT set {}, guest set {}",
            self.vmm_processes,
            self.run_dirs,
            self.disks,
            self.taps,
            self.nat_members,
            self.guest_members
        )
    }
}

fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, std::iter::Iterator::count)
}

/// Pids of processes with `<run>/` on their command line.
pub fn vmm_pids(run: &Path) -> Vec<u32> {
    let needle = format!("{}/", run.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

/// The supervisor's create phases, in saga order (`total` is the whole boot saga).
pub const PHASES: [&str; 9] = [
    "disk",
    "lease",
    "spawn",
    "api_ready",
    "configure",
    "start",
    "nat_dns",
    "ready",
    "total",
];

/// Per-phase time observed between two metric snapshots, in [`PHASES`] order: (phase,
/// observations, summed duration). Between the snapshots around one sequential create,
/// each phase has one observation and the sum is that create's exact phase time.
pub fn phase_delta(
    before: &SupervisorMetrics,
    after: &SupervisorMetrics,
) -> Vec<(&'static str, u64, Duration)> {
    let find = |m: &SupervisorMetrics, phase: &str| {
        m.phase_seconds
            .iter()
            .find(|(p, _)| *p == phase)
            .map_or((0, 0.0), |(_, h)| (h.count(), h.sum))
    };
    PHASES
        .iter()
        .map(|phase| {
            let (c0, s0) = find(before, phase);
            let (c1, s1) = find(after, phase);
            (
                *phase,
                c1.saturating_sub(c0),
                Duration::from_secs_f64((s1 - s0).max(0.0)),
            )
        })
        .collect()
}

/// The observations of `phase` made between two metric snapshots, as a histogram.
pub fn histogram_delta(
    before: &SupervisorMetrics,
    after: &SupervisorMetrics,
    phase: &str,
) -> Histogram {
    let find = |m: &SupervisorMetrics| {
        m.phase_seconds
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, h)| h.clone())
            .unwrap_or_default()
    };
    let (b, a) = (find(before), find(after));
    let mut d = Histogram::default();
    for (i, c) in d.counts.iter_mut().enumerate() {
        *c = a.counts[i].saturating_sub(b.counts[i]);
    }
    d.overflow = a.overflow.saturating_sub(b.overflow);
    d.sum = (a.sum - b.sum).max(0.0);
    d
}

/// The upper bound of the bucket holding the `p`th percentile (`None`: above the last bucket).
pub fn bucket_percentile(h: &Histogram, p: f64) -> Option<Duration> {
    let n = h.count();
    if n == 0 {
        return Some(Duration::ZERO);
    }
    let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in h.counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(Duration::from_secs_f64(BUCKETS[i]));
        }
    }
    None
}
