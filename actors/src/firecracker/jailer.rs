//! Running Firecracker through its jailer: the jail's layout ([`JailLayout`]), the limits derived
//! from a VM's size ([`JailLimits`]) and the jailer's command line, built by a pure
//! [`JailerArgs::args`] (as [`super::command::LaunchArgs`] is for Firecracker itself).
//!
//! Facts this module relies on, observed with the real `jailer` v1.17.0-dev on a cgroup-v1 host
//! (see `docs/jailer.md` for the probe commands):
//!
//! - The jail is `<chroot-base-dir>/<exec file name>/<id>/root`. The jailer creates it (files
//!   already there are kept, so hearth links the kernel and disks in first), copies the exec
//!   file in as `root/<exec file name>` (owned uid:gid), makes `dev/kvm`, `dev/net/tun`,
//!   `dev/urandom`, `dev/userfaultfd` (owned uid:gid, 0600) and `run/` (0700), then chroots.
//!   A second run on the same id fails (`mknod` of `/dev/net/tun`: EEXIST), so a stale jail
//!   must be removed before a spawn.
//! - The VMM's pid is written (no newline) to `root/<exec file name>.pid`, root-owned.
//! - With `--new-pid-ns` the jailer forks: the VMM is pid 1 of a new pid namespace, not our
//!   child (its parent is init), and the jailer exits 0 once the pid file is written. Without
//!   `--daemonize` the VMM keeps the jailer's stdio (so the console FIFO still works) and its
//!   process group. As the init of its namespace, the VMM ignores SIGTERM sent from outside
//!   (Firecracker has no handler): the stop ladder's SIGTERM rung does nothing and it
//!   escalates to SIGKILL.
//! - The VMM's command line is `/<exec file name> --id <id> --start-time-us N
//!   --start-time-cpu-us N --parent-cpu-time-us N <args after -->`: paths in it are
//!   chroot-relative, so hearth recognises its VMMs by `--id` and the chroot-relative API
//!   socket, and by `/proc/<pid>/root` being the jail.
//! - The API socket `--api-sock /run/api.sock` appears outside at `root/run/api.sock`, owned
//!   uid:gid, mode 0755 (root can connect; hearth gives it to `socket_group` itself).
//! - cgroups: `--cgroup-version` defaults to 1; `--cgroup <file>=<value>` creates
//!   `<controller mount>/<parent-cgroup>/<id>` (parent default: the exec file name) for each
//!   controller named, and fails with `Controller <c> is unavailable` when the controller is
//!   not mounted for that version. The cgroups are left behind when the VMM exits: removing
//!   them (and the jail) is the caller's job. Without any `--cgroup` the VMM stays in the
//!   jailer's cgroup.
//! - `--resource-limit fsize=N,no-file=N` become the VMM's `RLIMIT_FSIZE`/`RLIMIT_NOFILE`.
//! - Errors are printed on stderr (`Error: MknodDev(..)`, `Error: InvalidInstanceId(..)`)
//!   and the jailer exits 1. Ids allow letters, digits and `-` (no `_`), 1-64 chars.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::command::LaunchArgs;
use super::run_dir::{check_socket_path, validate_vm_id, SUN_PATH_MAX};
use super::FirecrackerError;

/// Which cgroup hierarchy the jailer puts the VMM in (`--cgroup-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CgroupVersion {
    /// Legacy per-controller hierarchies (`/sys/fs/cgroup/<controller>`).
    V1,
    /// The unified hierarchy.
    V2,
}

impl CgroupVersion {
    /// The value of `--cgroup-version`.
    pub fn as_arg(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "1",
            CgroupVersion::V2 => "2",
        }
    }
}

/// The cgroup parent hearth's VMM cgroups go under (`--parent-cgroup`), so that a sweep finds
/// them all in one place per controller.
pub const PARENT_CGROUP: &str = "hearth";

/// The controllers hearth sets limits in.
pub const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// The CFS period hearth uses for the CPU quota, µs (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// How a VM's size turns into limits (configurable in hearthd's `[jailer]` section).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitPolicy {
    /// MiB allowed beyond the guest's memory for the VMM itself (Firecracker's specification
    /// says ≤ 5 MiB; page tables, buffers and the binary's own pages come on top).
    pub mem_overhead_mib: u64,
    /// CPU quota per vCPU, in CPUs (1.0 = one full core per vCPU).
    pub cpu_per_vcpu: f64,
    /// Tasks allowed in the cgroup (threads count: one per vCPU, API, VMM, I/O).
    pub pids_max: u64,
    /// `RLIMIT_FSIZE`, bytes (caps any file the VMM writes, e.g. a snapshot).
    pub fsize: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub no_file: Option<u64>,
}

impl Default for LimitPolicy {
    fn default() -> Self {
        LimitPolicy {
            mem_overhead_mib: 64,
            cpu_per_vcpu: 1.0,
            pids_max: 64,
            fsize: None,
            no_file: Some(2048),
        }
    }
}

/// The least memory limit of a warm pool member, MiB: an idle, unconfigured Firecracker
/// v1.17 has 2.7 MiB resident (its binary is 6.3 MiB), so this leaves room.
pub const WARM_MEMORY_FLOOR_MIB: u64 = 16;

/// One VM's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JailLimits {
    /// Memory limit, bytes.
    pub memory_bytes: u64,
    /// CPU quota per [`CPU_PERIOD_US`], µs.
    pub cpu_quota_us: u64,
    /// Task limit.
    pub pids_max: u64,
    /// `RLIMIT_FSIZE`.
    pub fsize: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub no_file: Option<u64>,
}

impl JailLimits {
    /// The limits of a VM with `vcpus` vCPUs and `mem_size_mib` MiB under `policy`. A quota
    /// below 1 ms per period is raised to 1 ms (the kernel's minimum).
    pub fn for_vm(vcpus: u8, mem_size_mib: u64, policy: &LimitPolicy) -> Self {
        let mib = mem_size_mib.saturating_add(policy.mem_overhead_mib);
        let quota = (f64::from(vcpus) * policy.cpu_per_vcpu * CPU_PERIOD_US as f64).round();
        JailLimits {
            memory_bytes: mib.saturating_mul(1 << 20),
            cpu_quota_us: (quota as u64).max(1_000),
            pids_max: policy.pids_max,
            fsize: policy.fsize,
            no_file: policy.no_file,
        }
    }

    /// The limits a warm pool member starts with, before any VM takes it: those of a
    /// 1-vCPU VM with no guest memory (the VMM's overhead alone, ample for an unconfigured
    /// Firecracker). The jailer needs some value per controller to create each cgroup; a
    /// take writes the VM's own values into them (`Jails::set_limits`). The rlimits do not
    /// depend on the VM and are final. The memory limit is at least [`WARM_MEMORY_FLOOR_MIB`]:
    /// with `mem_overhead_mib = 0` it would otherwise be 0 bytes, and the member could not
    /// even start.
    pub fn for_warm(policy: &LimitPolicy) -> Self {
        let mut limits = Self::for_vm(1, 0, policy);
        limits.memory_bytes = limits.memory_bytes.max(WARM_MEMORY_FLOOR_MIB << 20);
        limits
    }

    /// The `--cgroup <file>=<value>` settings for `version`, period before quota (cgroup v1
    /// checks a quota against the current period).
    pub fn cgroup_settings(&self, version: CgroupVersion) -> Vec<(String, String)> {
        let s = |f: &str, v: String| (f.to_string(), v);
        match version {
            CgroupVersion::V1 => vec![
                s("memory.limit_in_bytes", self.memory_bytes.to_string()),
                s("cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                s("cpu.cfs_quota_us", self.cpu_quota_us.to_string()),
                s("pids.max", self.pids_max.to_string()),
            ],
            CgroupVersion::V2 => vec![
                s("memory.max", self.memory_bytes.to_string()),
                s("cpu.max", format!("{} {CPU_PERIOD_US}", self.cpu_quota_us)),
                s("pids.max", self.pids_max.to_string()),
            ],
        }
    }
}

/// Where one VM's jail and its files are, seen from outside and from inside the chroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailLayout {
    id: String,
    exec_name: String,
    base: PathBuf,
}

/// The API socket inside the jail.
pub const API_SOCKET_INSIDE: &str = "/run/api.sock";
/// The hybrid vsock socket inside the jail.
pub const VSOCK_INSIDE: &str = "/run/v.sock";
/// The longest `_<port>` suffix Firecracker appends to the vsock path.
const MAX_PORT_SUFFIX: &str = "_4294967295";

impl JailLayout {
    /// The layout of jail `id` (see [`JailLayout::id_for_uid`]) under `base` running `exec_file`. Checks the id, that the
    /// exec file has a UTF-8 name, and that the sockets seen from outside (the API socket and
    /// the longest vsock port socket) fit in `sun_path`. Creates nothing.
    pub fn new(base: &Path, exec_file: &Path, id: &str) -> Result<Self, FirecrackerError> {
        validate_vm_id(id)?;
        let exec_name = exec_file
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| FirecrackerError::InvalidConfig {
                what: "jailer exec file",
                detail: format!("{} has no UTF-8 file name", exec_file.display()),
            })?
            .to_string();
        let layout = JailLayout {
            id: id.to_string(),
            exec_name,
            base: base.to_path_buf(),
        };
        check_socket_path(&layout.api_socket())?;
        let mut longest = layout.vsock_socket().into_os_string();
        longest.push(MAX_PORT_SUFFIX);
        check_socket_path(Path::new(&longest))?;
        Ok(layout)
    }

    /// The longest `chroot_base_dir` for which every VM id up to `id_len` bytes and exec file
    /// name `exec_name` keeps the jail's sockets within `sun_path` (for config checks).
    pub fn max_base_len(exec_name: &str, id_len: usize) -> usize {
        // <base>/<exec>/<id>/root/run/v.sock_4294967295
        let tail = 1 + exec_name.len() + 1 + id_len + "/root".len() + VSOCK_INSIDE.len();
        SUN_PATH_MAX.saturating_sub(tail + MAX_PORT_SUFFIX.len())
    }

    /// The jail id hearth gives the VM leased `uid`: its decimal number. Unique among live
    /// VMs (a uid is leased to one VM at a time) and at most 10 bytes, where a 63-byte VM
    /// name would leave only 4 bytes of `sun_path` for the base directory.
    pub fn id_for_uid(uid: u32) -> String {
        uid.to_string()
    }

    /// The jailer's `--chroot-base-dir`.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The jail's `--id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The exec file's name (the jail's second path component, the binary inside).
    pub fn exec_name(&self) -> &str {
        &self.exec_name
    }

    /// `<base>/<exec name>/<id>`: everything the jail is made of; removed on cleanup.
    pub fn jail_dir(&self) -> PathBuf {
        self.base.join(&self.exec_name).join(&self.id)
    }

    /// The chroot.
    pub fn root(&self) -> PathBuf {
        self.jail_dir().join("root")
    }

    /// The jailer's pid file.
    pub fn pid_file(&self) -> PathBuf {
        self.root().join(format!("{}.pid", self.exec_name))
    }

    /// A path inside the jail (absolute, chroot-relative) seen from outside.
    pub fn outside(&self, inside: &Path) -> PathBuf {
        let rel = inside.strip_prefix("/").unwrap_or(inside);
        self.root().join(rel)
    }

    /// The API socket seen from outside.
    pub fn api_socket(&self) -> PathBuf {
        self.outside(Path::new(API_SOCKET_INSIDE))
    }

    /// The vsock socket seen from outside.
    pub fn vsock_socket(&self) -> PathBuf {
        self.outside(Path::new(VSOCK_INSIDE))
    }

    /// The cgroup directories the jailer creates for this VM: `<mount>/hearth/<id>` under each
    /// controller's mount (`v1`: one per controller of [`CONTROLLERS`]; `v2`: the unified one).
    pub fn cgroup_dirs(&self, mounts: &[PathBuf]) -> Vec<PathBuf> {
        mounts
            .iter()
            .map(|m| m.join(PARENT_CGROUP).join(&self.id))
            .collect()
    }
}

/// The jailer's options for one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerArgs {
    /// `--id` (the VM id).
    pub id: String,
    /// `--exec-file`: the (statically linked) Firecracker binary.
    pub exec_file: PathBuf,
    /// `--uid`.
    pub uid: u32,
    /// `--gid`.
    pub gid: u32,
    /// `--chroot-base-dir`.
    pub chroot_base: PathBuf,
    /// `--netns`: a network namespace to join (`/var/run/netns/<name>`).
    pub netns: Option<PathBuf>,
    /// `--new-pid-ns`.
    pub new_pid_ns: bool,
    /// `--daemonize` (hearth leaves it off: it would point the console at /dev/null).
    pub daemonize: bool,
    /// `--cgroup-version`.
    pub cgroup_version: CgroupVersion,
    /// `--parent-cgroup`.
    pub parent_cgroup: Option<String>,
    /// The limits (`--cgroup` and `--resource-limit`); `None`: none set.
    pub limits: Option<JailLimits>,
    /// Firecracker's own options, with chroot-relative paths (after `--`).
    pub firecracker: LaunchArgs,
}

impl JailerArgs {
    /// hearth's jailer options for a VM: new pid namespace, no daemonizing, the VMM cgroups
    /// under [`PARENT_CGROUP`], the API socket at [`API_SOCKET_INSIDE`] and Firecracker's log
    /// left on the console (stdout) where hearth already captures it.
    pub fn for_vm(
        layout: &JailLayout,
        exec_file: &Path,
        uid: u32,
        gid: u32,
        cgroup_version: CgroupVersion,
        limits: JailLimits,
        level: hearth_proto::firecracker::LogLevel,
    ) -> Self {
        JailerArgs {
            id: layout.id().to_string(),
            exec_file: exec_file.to_path_buf(),
            uid,
            gid,
            chroot_base: layout.base.clone(),
            netns: None,
            new_pid_ns: true,
            daemonize: false,
            cgroup_version,
            parent_cgroup: Some(PARENT_CGROUP.to_string()),
            limits: Some(limits),
            firecracker: LaunchArgs {
                api_sock: API_SOCKET_INSIDE.into(),
                // The jailer passes `--id` itself.
                id: String::new(),
                log_path: None,
                level: Some(level),
                metrics_path: None,
            },
        }
    }

    /// The argv after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--id".into(),
            self.id.clone().into(),
            "--exec-file".into(),
            self.exec_file.clone().into(),
            "--uid".into(),
            self.uid.to_string().into(),
            "--gid".into(),
            self.gid.to_string().into(),
            "--chroot-base-dir".into(),
            self.chroot_base.clone().into(),
            "--cgroup-version".into(),
            self.cgroup_version.as_arg().into(),
        ];
        if let Some(p) = &self.parent_cgroup {
            a.push("--parent-cgroup".into());
            a.push(p.into());
        }
        if let Some(limits) = &self.limits {
            for (file, value) in limits.cgroup_settings(self.cgroup_version) {
                a.push("--cgroup".into());
                a.push(format!("{file}={value}").into());
            }
            for (name, value) in [("fsize", limits.fsize), ("no-file", limits.no_file)] {
                if let Some(v) = value {
                    a.push("--resource-limit".into());
                    a.push(format!("{name}={v}").into());
                }
            }
        }
        if let Some(ns) = &self.netns {
            a.push("--netns".into());
            a.push(ns.clone().into());
        }
        if self.new_pid_ns {
            a.push("--new-pid-ns".into());
        }
        if self.daemonize {
            a.push("--daemonize".into());
        }
        a.push("--".into());
        let fc = self.firecracker.args();
        // `--id` is the jailer's to pass; an empty one here means "leave it out".
        let mut it = fc.into_iter().peekable();
        while let Some(arg) = it.next() {
            if arg == "--id" && it.peek().is_some_and(|v| v.is_empty()) {
                it.next();
                continue;
            }
            a.push(arg);
        }
        a
    }
}

/// Whether the command line `cmdline` (as read from /proc) is the jailed VMM of `layout`:
/// argv\[0\] is `/<exec name>`, `--id <id>` and `--api-sock` [`API_SOCKET_INSIDE`] are in it.
pub fn is_jailed_vmm(cmdline: &[String], layout: &JailLayout) -> bool {
    let argv0 = format!("/{}", layout.exec_name());
    let has_pair = |flag: &str, value: &str| {
        cmdline.windows(2).any(|w| w[0] == flag && w[1] == value)
            || cmdline.iter().any(|a| {
                a.strip_prefix(flag)
                    .and_then(|r| r.strip_prefix('='))
                    .is_some_and(|v| v == value)
            })
    };
    cmdline.first().is_some_and(|a| *a == argv0)
        && has_pair("--id", layout.id())
        && has_pair("--api-sock", API_SOCKET_INSIDE)
}

/// The value of `flag` in a command line read from /proc (`--flag value` or `--flag=value`).
fn flag_value<'a>(cmdline: &'a [String], flag: &str) -> Option<&'a str> {
    cmdline
        .windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .or_else(|| {
            cmdline
                .iter()
                .find_map(|a| a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')))
        })
}

/// The jail id a jailer works on, when `cmdline` (as read from /proc) is a jailer's, or the
/// child it forked before that child execs, building a jail of `exec_name` under `base`
/// (`--chroot-base-dir <base>`, `--exec-file <..>/<exec_name>`, `--id <id>`). Such a process
/// is about to become that jail's VMM, whatever its program is called.
pub fn jailer_target<'a>(cmdline: &'a [String], base: &Path, exec_name: &str) -> Option<&'a str> {
    let (Some(dir), Some(exec), Some(id)) = (
        flag_value(cmdline, "--chroot-base-dir"),
        flag_value(cmdline, "--exec-file"),
        flag_value(cmdline, "--id"),
    ) else {
        return None;
    };
    let same_exec = Path::new(exec).file_name().and_then(|n| n.to_str()) == Some(exec_name);
    (Path::new(dir) == base && same_exec).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::firecracker::LogLevel;

    fn strs(a: &[OsString]) -> Vec<&str> {
        a.iter().map(|s| s.to_str().unwrap()).collect()
    }

    fn layout() -> JailLayout {
        JailLayout::new(
            Path::new("/srv/j"),
            Path::new("/opt/fc/firecracker"),
            "vm-1",
        )
        .unwrap()
    }

    #[test]
    fn layout_paths_follow_the_jailer() {
        let l = layout();
        assert_eq!(l.jail_dir(), Path::new("/srv/j/firecracker/vm-1"));
        assert_eq!(l.root(), Path::new("/srv/j/firecracker/vm-1/root"));
        assert_eq!(
            l.pid_file(),
            Path::new("/srv/j/firecracker/vm-1/root/firecracker.pid")
        );
        assert_eq!(
            l.api_socket(),
            Path::new("/srv/j/firecracker/vm-1/root/run/api.sock")
        );
        assert_eq!(
            l.outside(Path::new("/rootfs.ext4")),
            Path::new("/srv/j/firecracker/vm-1/root/rootfs.ext4")
        );
        let v1: Vec<PathBuf> = ["memory", "cpu,cpuacct", "pids"]
            .iter()
            .map(|c| Path::new("/sys/fs/cgroup").join(c))
            .collect();
        assert_eq!(
            l.cgroup_dirs(&v1),
            [
                Path::new("/sys/fs/cgroup/memory/hearth/vm-1"),
                Path::new("/sys/fs/cgroup/cpu,cpuacct/hearth/vm-1"),
                Path::new("/sys/fs/cgroup/pids/hearth/vm-1"),
            ]
        );
    }

    #[test]
    fn bad_ids_and_long_bases_are_refused() {
        let fc = Path::new("/fc/firecracker");
        assert!(matches!(
            JailLayout::new(Path::new("/srv"), fc, "bad_id"),
            Err(FirecrackerError::InvalidId { .. })
        ));
        let long = PathBuf::from(format!("/{}", "b".repeat(80)));
        assert!(matches!(
            JailLayout::new(&long, fc, "vm-1"),
            Err(FirecrackerError::SocketPathTooLong { .. })
        ));
        assert!(JailLayout::new(Path::new("/srv"), Path::new("/"), "vm-1").is_err());
    }

    #[test]
    fn max_base_len_is_exact() {
        let id = "a".repeat(36);
        let max = JailLayout::max_base_len("firecracker", id.len());
        let fits = PathBuf::from(format!("/{}", "b".repeat(max - 1)));
        let fc = Path::new("/x/firecracker");
        assert!(JailLayout::new(&fits, fc, &id).is_ok());
        let over = PathBuf::from(format!("/{}", "b".repeat(max)));
        assert!(JailLayout::new(&over, fc, &id).is_err());
    }

    #[test]
    fn warm_limits_have_a_memory_floor() {
        let none = LimitPolicy {
            mem_overhead_mib: 0,
            ..LimitPolicy::default()
        };
        assert_eq!(JailLimits::for_warm(&none).memory_bytes, 16 << 20);
        // Above the floor, the VMM's overhead as configured.
        assert_eq!(
            JailLimits::for_warm(&LimitPolicy::default()).memory_bytes,
            64 << 20
        );
    }

    #[test]
    fn limits_from_the_vm_size() {
        let p = LimitPolicy::default();
        let l = JailLimits::for_vm(2, 256, &p);
        assert_eq!(l.memory_bytes, (256 + 64) << 20);
        assert_eq!(l.cpu_quota_us, 200_000);
        let half = LimitPolicy {
            cpu_per_vcpu: 0.5,
            ..p
        };
        assert_eq!(JailLimits::for_vm(1, 128, &half).cpu_quota_us, 50_000);
        let tiny = LimitPolicy {
            cpu_per_vcpu: 0.001,
            ..p
        };
        assert_eq!(JailLimits::for_vm(1, 128, &tiny).cpu_quota_us, 1_000);
        assert_eq!(
            l.cgroup_settings(CgroupVersion::V2),
            [
                ("memory.max".to_string(), (320u64 << 20).to_string()),
                ("cpu.max".to_string(), "200000 100000".to_string()),
                ("pids.max".to_string(), "64".to_string()),
            ]
        );
        let v1: Vec<String> = l
            .cgroup_settings(CgroupVersion::V1)
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            v1,
            [
                "memory.limit_in_bytes",
                "cpu.cfs_period_us",
                "cpu.cfs_quota_us",
                "pids.max"
            ]
        );
    }

    #[test]
    fn argv_for_vm() {
        let l = layout();
        let limits = JailLimits::for_vm(1, 128, &LimitPolicy::default());
        let args = JailerArgs::for_vm(
            &l,
            Path::new("/opt/fc/firecracker"),
            100_001,
            100_001,
            CgroupVersion::V1,
            limits,
            LogLevel::Warning,
        )
        .args();
        assert_eq!(
            strs(&args),
            [
                "--id",
                "vm-1",
                "--exec-file",
                "/opt/fc/firecracker",
                "--uid",
                "100001",
                "--gid",
                "100001",
                "--chroot-base-dir",
                "/srv/j",
                "--cgroup-version",
                "1",
                "--parent-cgroup",
                "hearth",
                "--cgroup",
                "memory.limit_in_bytes=201326592",
                "--cgroup",
                "cpu.cfs_period_us=100000",
                "--cgroup",
                "cpu.cfs_quota_us=100000",
                "--cgroup",
                "pids.max=64",
                "--resource-limit",
                "no-file=2048",
                "--new-pid-ns",
                "--",
                "--api-sock",
                "/run/api.sock",
                "--level",
                LogLevel::Warning.as_str(),
            ]
        );
    }

    #[test]
    fn minimal_argv_with_netns_and_daemonize() {
        let a = JailerArgs {
            id: "x".into(),
            exec_file: "/f".into(),
            uid: 1,
            gid: 2,
            chroot_base: "/b".into(),
            netns: Some("/var/run/netns/n".into()),
            new_pid_ns: false,
            daemonize: true,
            cgroup_version: CgroupVersion::V2,
            parent_cgroup: None,
            limits: None,
            firecracker: LaunchArgs {
                api_sock: "/s".into(),
                id: "x".into(),
                log_path: None,
                level: None,
                metrics_path: None,
            },
        };
        assert_eq!(
            strs(&a.args()),
            [
                "--id",
                "x",
                "--exec-file",
                "/f",
                "--uid",
                "1",
                "--gid",
                "2",
                "--chroot-base-dir",
                "/b",
                "--cgroup-version",
                "2",
                "--netns",
                "/var/run/netns/n",
                "--daemonize",
                "--",
                "--api-sock",
                "/s",
                "--id",
                "x",
            ]
        );
    }

    #[test]
    fn recognises_its_jailed_vmm() {
        let l = layout();
        let cmd = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert!(is_jailed_vmm(
            &cmd("/firecracker --id vm-1 --start-time-us 1 --api-sock /run/api.sock"),
            &l
        ));
        assert!(is_jailed_vmm(
            &cmd("/firecracker --id=vm-1 --api-sock=/run/api.sock"),
            &l
        ));
        assert!(!is_jailed_vmm(
            &cmd("/firecracker --id vm-2 --api-sock /run/api.sock"),
            &l
        ));
        assert!(!is_jailed_vmm(
            &cmd("/bin/sh --id vm-1 --api-sock /run/api.sock"),
            &l
        ));
        assert!(!is_jailed_vmm(&cmd("/firecracker --id vm-1"), &l));
    }

    #[test]
    fn recognises_a_jailer_and_its_jail() {
        let cmd = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let base = Path::new("/srv/j");
        let jailer = cmd(
            "/usr/bin/jailer --id 900001 --exec-file /opt/fc/firecracker --uid 900001 \
             --chroot-base-dir /srv/j --new-pid-ns -- --api-sock /run/api.sock",
        );
        assert_eq!(jailer_target(&jailer, base, "firecracker"), Some("900001"));
        let equals = cmd("jailer --id=7 --exec-file=/fc/firecracker --chroot-base-dir=/srv/j");
        assert_eq!(jailer_target(&equals, base, "firecracker"), Some("7"));
        // Another base, another exec file, or a missing flag: not a jail of ours.
        let other_base = cmd("jailer --id 7 --exec-file /fc/firecracker --chroot-base-dir /x");
        assert_eq!(jailer_target(&other_base, base, "firecracker"), None);
        assert_eq!(jailer_target(&jailer, base, "firecracker-v2"), None);
        let no_id = cmd("jailer --exec-file /fc/firecracker --chroot-base-dir /srv/j");
        assert_eq!(jailer_target(&no_id, base, "firecracker"), None);
        // A VMM after its exec carries `--id` but neither jailer flag.
        let vmm = cmd("/firecracker --id 7 --api-sock /run/api.sock");
        assert_eq!(jailer_target(&vmm, base, "firecracker"), None);
    }
}
