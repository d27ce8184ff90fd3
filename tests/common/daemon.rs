//! A whole hearth host for end-to-end tests: `hearthd` (the real binary) running inside a
//! private "host" namespace with an "upstream" namespace behind its egress veth,
//! `firecracker-sim` as the VMM, and `hearthctl` to drive it. Also counts everything hearth
//! could leak (processes, run directories, disks, TAPs, set members).
//!
//! Use with `mod common; use common::daemon;`.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools and binaries (ip, mkfs, hearthd, hearthctl) and clean up their own directories"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use hearth_testkit::{self as common, fc_sim, vmlinux, NetNs};

/// TAPs kept warm by the test daemons.
pub const POOL: usize = 2;

/// A running (or killed) hearthd with its namespaces and files.
pub struct HearthHost {
    /// The namespace hearthd runs in.
    pub ns: NetNs,
    /// Stands for the outside world.
    pub upstream: NetNs,
    /// Data, run directory, socket, config, images.
    pub dir: tempfile::TempDir,
    /// `FC_SIM_*` variables given to hearthd (and so to every VMM it spawns).
    knobs: Vec<(String, String)>,
    daemon: Option<Child>,
    /// Launch hearthd with `nsenter --net` rather than `ip netns exec`, which remounts `/sys`
    /// and so hides the host's cgroup hierarchies (the jailer needs them).
    host_mounts: bool,
}

impl HearthHost {
    /// Starts hearthd with the simulator's `knobs` (`FC_SIM_*` variables) and extra config
    /// text appended to the `[vm]` section.
    pub fn start(knobs: &[(&str, &str)], vm_config: &str) -> Self {
        Self::start_with(&fc_sim::sim_binary(), knobs, vm_config, true)
    }

    /// Like [`HearthHost::start`], with `fc` as hearthd's Firecracker binary (the simulator
    /// or the real one).
    pub fn start_with_vmm(fc: &Path, knobs: &[(&str, &str)], vm_config: &str) -> Self {
        Self::start_with(fc, knobs, vm_config, true)
    }

    /// Like [`HearthHost::start_with_vmm`], with or without a default route in hearthd's
    /// namespace (without: an offline host; `wan0` and the upstream exist, hearthd just has
    /// no route).
    pub fn start_with(
        fc: &Path,
        knobs: &[(&str, &str)],
        vm_config: &str,
        default_route: bool,
    ) -> Self {
        Self::start_opts(fc, knobs, vm_config, default_route, false)
    }

    /// Like [`HearthHost::start_with_vmm`], hearthd seeing the host's mounts (its cgroups):
    /// for jailed VMMs.
    pub fn start_jailed(fc: &Path, vm_config: &str) -> Self {
        Self::start_opts(fc, &[], vm_config, true, true)
    }

    fn start_opts(
        fc: &Path,
        knobs: &[(&str, &str)],
        vm_config: &str,
        default_route: bool,
        host_mounts: bool,
    ) -> Self {
        // A short path: socket paths under the run directory must fit in 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("he")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let ns = NetNs::new("he");
        let upstream = NetNs::new("heu");
        common::veth(
            &ns,
            "wan0",
            "10.98.0.1/24",
            &upstream,
            "up0",
            "10.98.0.2/24",
        );
        if default_route {
            ns.exec_ok(&["ip", "route", "add", "default", "via", "10.98.0.2"]);
        }
        // Knobs reach the simulator through hearthd's environment, which its children
        // inherit; the binary is the simulator itself, as a real firecracker would be.
        let knobs: Vec<(String, String)> = knobs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let d = dir.path().display().to_string();
        let config = format!(
            "data_dir = \"{d}/data\"\nrun_dir = \"{d}/run\"\nfirecracker_bin = \"{}\"\n\
             [network]\npool_size = {POOL}\n[dns]\nupstreams = [\"10.98.0.2:53\"]\n\
             [api]\nsocket = \"{d}/hearthd.sock\"\n\
             [vm]\nready_timeout_secs = 5\nshutdown_grace_secs = 2\nterm_grace_secs = 2\n{vm_config}\n",
            fc.display()
        );
        std::fs::write(dir.path().join("hearthd.toml"), config).expect("write config");
        write_images(dir.path());
        let mut host = HearthHost {
            ns,
            upstream,
            dir,
            knobs,
            daemon: None,
            host_mounts,
        };
        host.launch();
        host.ctl_ok(&[
            "image",
            "import",
            "vmlinux",
            &format!("{d}/vmlinux"),
            "--kind",
            "kernel",
        ]);
        host.ctl_ok(&[
            "image",
            "import",
            "base",
            &format!("{d}/rootfs.ext4"),
            "--kind",
            "rootfs",
        ]);
        host
    }

    /// Starts hearthd (again) and waits until it answers.
    pub fn launch(&mut self) {
        assert!(self.daemon.is_none(), "hearthd already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("hearthd.log"))
            .expect("log file");
        // `ip netns exec` (and `nsenter`) exec hearthd: the child's pid is hearthd's.
        let mut cmd = if self.host_mounts {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{}", self.ns.name()));
            c
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", self.ns.name()]);
            c
        };
        let child = cmd
            .arg(env!("CARGO_BIN_EXE_hearthd"))
            .arg("--config")
            .arg(self.path("hearthd.toml"))
            .envs(self.knobs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn hearthd");
        self.daemon = Some(child);
        let up = common::wait_until(Duration::from_secs(30), || {
            self.ctl(&["health"]).status.success()
        });
        assert!(up, "hearthd did not come up:\n{}", self.log());
    }

    /// SIGKILLs hearthd, as a crash would.
    pub fn kill9(&mut self) {
        let mut child = self.daemon.take().expect("hearthd running");
        child.kill().expect("kill hearthd");
        child.wait().expect("reap hearthd");
    }

    /// SIGTERMs hearthd and waits for it to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let mut child = self.daemon.take().expect("hearthd running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        child.wait().expect("reap hearthd").success()
    }

    /// A path inside the test directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// hearthd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("hearthd.log")).unwrap_or_default()
    }

    /// Runs `hearthctl --json <args>`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_hearthctl"))
            .arg("--socket")
            .arg(self.path("hearthd.sock"))
            .arg("--json")
            .args(args)
            .output()
            .expect("run hearthctl")
    }

    /// Runs hearthctl, asserts success, and parses its JSON output (`Null` when empty).
    pub fn ctl_ok(&self, args: &[&str]) -> Value {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "hearthctl {args:?} failed: {}{}\n--- hearthd log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Creates VM `name` from the test images (kernel `vmlinux`, rootfs `base`) without a
    /// readiness probe, with `extra` arguments of `vm create`; answers its JSON.
    pub fn create_test_vm(&self, name: &str, extra: &[&str]) -> Value {
        let mut args = vec![
            "vm",
            "create",
            name,
            "--kernel",
            "vmlinux",
            "--rootfs",
            "base",
            "--no-ready-probe",
        ];
        args.extend_from_slice(extra);
        self.ctl_ok(&args)
    }

    /// [`HearthHost::create_test_vm`] without extra arguments, asserting the VM is `running`.
    pub fn create_running(&self, name: &str) -> Value {
        let v = self.create_test_vm(name, &[]);
        assert_eq!(v["state"], "running", "{v}\n{}", self.log());
        v
    }

    /// A VM's state, or `None` when hearthd does not know it.
    pub fn state(&self, vm: &str) -> Option<String> {
        let out = self.ctl(&["vm", "get", vm]);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["state"].as_str().map(str::to_owned)
    }

    /// Resolves `name` with dig against hearth's DNS on the gateway.
    pub fn dig(&self, name: &str) -> String {
        self.ns
            .exec_ok(&[
                "dig",
                "+short",
                "+time=2",
                "+tries=1",
                "@172.31.240.1",
                name,
            ])
            .trim()
            .to_owned()
    }

    /// Everything hearth could leak, counted from the host (not from hearth's own view).
    pub fn leaks(&self) -> Leaks {
        let run = self.path("run");
        Leaks {
            vmm_processes: vmm_pids(&run).len(),
            run_dirs: count_entries(&run),
            disks: count_entries(&self.path("data/disks")),
            taps: self
                .ns
                .exec_ok(&["ip", "-o", "link", "show", "type", "tun"])
                .lines()
                .count(),
            guest_set: set_members(&self.ns, "hearth-guests"),
            nat_set: set_members(&self.ns, "hearth-nat"),
            port_bindings: lease_elements(&self.ns),
            egress_elements: egress_elements(&self.ns),
            pinned_neighbours: self
                .ns
                .exec_ok(&["ip", "-4", "neigh", "show", "nud", "permanent"])
                .lines()
                .count(),
        }
    }
}

impl Drop for HearthHost {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in vmm_pids(&self.path("run")) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Waits (up to 5 s) for the host to hold nothing but the warm pool, then asserts it: the pool
/// trims TAPs given back by removed VMs (or found at a restart) in the background.
pub fn assert_no_leaks(h: &HearthHost) {
    crate::common::wait_until(std::time::Duration::from_secs(5), || {
        h.leaks() == Leaks::none()
    });
    assert_eq!(h.leaks(), Leaks::none(), "{}", h.log());
}

/// What is left on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaks {
    /// VMM processes whose API socket is under the run directory.
    pub vmm_processes: usize,
    /// Entries in the run directory.
    pub run_dirs: usize,
    /// Entries in the disks directory.
    pub disks: usize,
    /// TAP devices in the namespace.
    pub taps: usize,
    /// Members of the anti-spoofing set.
    pub guest_set: usize,
    /// Members of the NAT set.
    pub nat_set: usize,
    /// Leases in hearth's nftables bridge table (port, MAC, IP bound together).
    pub port_bindings: usize,
    /// Elements of the sets of hearth's egress-policy table (any guest's).
    pub egress_elements: usize,
    /// Permanent (pinned) IPv4 neighbour entries.
    pub pinned_neighbours: usize,
}

impl Leaks {
    /// The state of a host with no VM: only the warm pool.
    pub fn none() -> Self {
        Leaks {
            vmm_processes: 0,
            run_dirs: 0,
            disks: 0,
            taps: POOL,
            guest_set: 0,
            nat_set: 0,
            port_bindings: 0,
            egress_elements: 0,
            pinned_neighbours: 0,
        }
    }
}

/// Elements of hearth's nft `leases` set (each `"tap" . mac . ip`: one `" . ` apiece, which
/// the set's type line has not); 0 when the table does not exist.
fn lease_elements(ns: &NetNs) -> usize {
    let out = ns.exec(&["nft", "list", "set", "bridge", "hearth", "leases"]);
    String::from_utf8_lossy(&out.stdout)
        .matches("\" . ")
        .count()
}

/// Elements in the sets of hearth's `ip hearth-egress` table (the JSON listing's `elem`
/// arrays); 0 when the table does not exist.
pub fn egress_elements(ns: &NetNs) -> usize {
    let out = ns.exec(&["nft", "-j", "list", "table", "ip", "hearth-egress"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    json["nftables"].as_array().map_or(0, |items| {
        items
            .iter()
            .filter_map(|i| i["set"]["elem"].as_array())
            .map(Vec::len)
            .sum()
    })
}

fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, std::iter::Iterator::count)
}

fn set_members(ns: &NetNs, set: &str) -> usize {
    let out = ns.exec(&["ipset", "list", set]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip_while(|l| !l.starts_with("Members:"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Pids of processes with `--api-sock <run>/...` on their command line.
pub fn vmm_pids(run: &Path) -> Vec<u32> {
    let needle = format!("{}/", run.display());
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A kernel that the image store and Firecracker's loader accept (the generated minimal
/// `vmlinux`, so the real binary reaches `Running` too) and a real ext4 root filesystem.
fn write_images(dir: &Path) {
    vmlinux::write_minimal_vmlinux(&dir.join("vmlinux"));
    let rootfs = dir.join("rootfs.ext4");
    std::fs::File::create(&rootfs)
        .and_then(|f| f.set_len(16 << 20))
        .expect("rootfs file");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&rootfs)
        .output()
        .expect("mkfs.ext4");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
