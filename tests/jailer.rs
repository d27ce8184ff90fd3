//! Jailed VMMs (issue 16) against the real jailer and Firecracker: `FirecrackerActor` with a
//! `VmJail`, driven with the saga's messages. The VMM must run as the VM's uid/gid, in its jail
//! (`/proc/<pid>/root`), in a new pid namespace, in cgroups holding the limits asked for; a
//! drive outside the jail is refused; stop escalates past the SIGTERM the jailed VMM ignores;
//! removal leaves no jail directory and no cgroup; a new actor adopts a jailed VMM.
//!
//! The binaries: `HEARTH_FIRECRACKER_REAL` (as in `tests/vmm.rs`) and the jailer from
//! `HEARTH_JAILER_REAL`, or else `jailer` beside that Firecracker (as in `../shared`). Without
//! them each test prints a SKIP line naming the variables; under
//! `HEARTH_REQUIRE_REAL_FIRECRACKER=1` a missing jailer is a failure. Root only (cgroups,
//! chroot, /dev/kvm): `HEARTH_REQUIRE_PRIVILEGED=1` makes a non-root run fail.

mod common;

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use hearth_actors::firecracker::binary;
use hearth_actors::firecracker::jailer::{JailLayout, JailLimits, LimitPolicy, CPU_PERIOD_US};
use hearth_actors::firecracker::{
    AdoptProcess, ConfigureVm, FirecrackerActor, FirecrackerError, FirecrackerSettings,
    GetVmmProcess, KillVm, RemoveRunDir, SpawnProcess, StartVm, StopPlan, StopRung, StopVm, VmJail,
    VmProcessEvent,
};
use hearth_actors::host::jails::cgroups::{detect_host, CgroupHost};
use hearth_actors::host::jails::{JailFile, Jails, LinuxJails};
use hearth_actors::host::processes::LinuxProcesses;
use hearth_actors::lease::{MacAddr, NetLease};
use hearth_testkit::{fc_sim, vmlinux, NetNs};
use tokio::sync::mpsc::UnboundedReceiver;

use common::actor::{alive, next_event, Fixture};
use common::vmm::{real_firecracker, REAL_VAR, REQUIRE_REAL_VAR};

const GUEST_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 240, 5);

/// Names the jailer binary (else `jailer` beside the real Firecracker is used).
const JAILER_VAR: &str = "HEARTH_JAILER_REAL";

/// The real Firecracker and jailer, or `None` after a SKIP line.
fn real_binaries(test: &str) -> Option<(PathBuf, PathBuf)> {
    let fc = real_firecracker(test)?;
    let jailer = std::env::var_os(JAILER_VAR)
        .map(PathBuf::from)
        .or_else(|| Some(fc.parent()?.join("jailer")))
        .filter(|p| p.is_file());
    let Some(jailer) = jailer else {
        assert!(
            std::env::var(REQUIRE_REAL_VAR).as_deref() != Ok("1"),
            "{test}: {REQUIRE_REAL_VAR}=1 but no jailer: set {JAILER_VAR} or put `jailer` beside {REAL_VAR}"
        );
        hearth_testkit::skip!(
            "SKIP: {test}: no jailer; set {JAILER_VAR}=/path/to/jailer (or put it beside {REAL_VAR})"
        );
        return None;
    };
    Some((fc, jailer))
}

/// One jailed VM's test setup: the fixture (kernel, disk, run base), a chroot base, the uid.
struct Jailed {
    fx: Fixture,
    base: tempfile::TempDir,
    fc: PathBuf,
    jailer: PathBuf,
    cgroups: CgroupHost,
    uid: u32,
}

impl Jailed {
    fn new(prefix: &str, fc: PathBuf, jailer: PathBuf, uid: u32) -> Self {
        let fx = Fixture::new(prefix);
        // The disk is the VM's own: hard-linked and given to its uid; the kernel stays root's
        // and world-readable, like a shared kernel image.
        let base = tempfile::Builder::new()
            .prefix("jl")
            .tempdir_in("/tmp")
            .unwrap();
        let cgroups = detect_host().expect("cgroup controllers for the jailer");
        Jailed {
            fx,
            base,
            fc,
            jailer,
            cgroups,
            uid,
        }
    }

    fn layout(&self) -> JailLayout {
        JailLayout::new(
            self.base.path(),
            &self.fc,
            &JailLayout::id_for_uid(self.uid),
        )
        .unwrap()
    }

    fn limits() -> JailLimits {
        JailLimits::for_vm(
            1,
            128,
            &LimitPolicy {
                cpu_per_vcpu: 0.5,
                pids_max: 40,
                no_file: Some(512),
                fsize: Some(1 << 30),
                ..LimitPolicy::default()
            },
        )
    }

    fn files(&self, kernel: &Path) -> Vec<JailFile> {
        vec![
            JailFile {
                source: kernel.to_path_buf(),
                name: "vmlinux".into(),
                writable: false,
            },
            JailFile {
                source: self.fx.path().join("rootfs.ext4"),
                name: "rootfs.ext4".into(),
                writable: true,
            },
        ]
    }

    fn jail(&self, kernel: &Path) -> VmJail {
        VmJail::new(
            self.jailer.clone(),
            Arc::new(LinuxJails::new(self.base.path(), self.cgroups.clone())),
            self.layout(),
            self.uid,
            self.uid,
            self.cgroups.version,
            Self::limits(),
            self.files(kernel),
        )
    }

    fn settings(&self) -> FirecrackerSettings {
        FirecrackerSettings::new(self.fx.path().join("vms"))
    }

    /// A started jailed actor for `vm`, its kernel at `kernel`.
    fn actor(
        &self,
        vm: &str,
        kernel: &Path,
    ) -> (Addr<FirecrackerActor>, UnboundedReceiver<VmProcessEvent>) {
        let (events, rx) = fc_sim::event_sink();
        let bin = binary::resolve(Some(&self.fc), &LinuxProcesses).unwrap();
        let actor = FirecrackerActor::new(
            vm,
            bin,
            Arc::new(LinuxProcesses),
            self.settings(),
            events,
            hearth_testkit::test_logger(),
        )
        .unwrap()
        .jailed(self.jail(kernel));
        (actor.start(), rx)
    }

    /// The per-VM cgroup directories.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.layout().cgroup_dirs(&self.cgroups.mounts)
    }

    /// Asserts nothing of the VM is left: jail directory, cgroups, run directory.
    fn assert_nothing_left(&self, vm: &str) {
        let layout = self.layout();
        assert!(
            !layout.jail_dir().exists(),
            "{} left",
            layout.jail_dir().display()
        );
        for cg in self.cgroup_dirs() {
            assert!(!cg.exists(), "cgroup {} left", cg.display());
        }
        let run = self.fx.path().join("vms").join(vm);
        assert!(!run.exists(), "{} left", run.display());
        let listed = LinuxJails::new(self.base.path(), self.cgroups.clone())
            .list("firecracker")
            .unwrap();
        assert!(listed.is_empty(), "jails left: {listed:?}");
    }
}

impl Drop for Jailed {
    /// After a failed assertion: the test's VMM (found in its cgroups) is killed and its jail
    /// removed, so the next run with the same uid starts clean.
    fn drop(&mut self) {
        let mut pids = Vec::new();
        for dir in self.cgroup_dirs() {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(procs.lines().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        for pid in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let jails = LinuxJails::new(self.base.path(), self.cgroups.clone());
        for _ in 0..100 {
            if jails.remove(&self.layout()).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `/proc/<pid>/status` field `name`, e.g. `Uid`.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// The value in cgroup file `file` of the first directory that has it.
fn cgroup_value(dirs: &[PathBuf], file: &str) -> String {
    dirs.iter()
        .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
        .unwrap_or_else(|| panic!("no {file} in {dirs:?}"))
        .trim()
        .to_string()
}

/// The VMM `pid` is in its cgroups, which hold the limits asked for, and has its rlimits.
fn assert_limits(j: &Jailed, pid: u32) {
    let limits = Jailed::limits();
    let dirs = j.cgroup_dirs();
    let procs = cgroup_value(&dirs, "cgroup.procs");
    assert!(
        procs.lines().any(|p| p == pid.to_string()),
        "{pid} not in {procs}"
    );
    assert_eq!(cgroup_value(&dirs, "pids.max"), "40");
    match j.cgroups.version {
        hearth_actors::firecracker::jailer::CgroupVersion::V1 => {
            assert_eq!(
                cgroup_value(&dirs, "memory.limit_in_bytes"),
                limits.memory_bytes.to_string()
            );
            assert_eq!(cgroup_value(&dirs, "cpu.cfs_quota_us"), "50000");
            assert_eq!(
                cgroup_value(&dirs, "cpu.cfs_period_us"),
                CPU_PERIOD_US.to_string()
            );
        }
        hearth_actors::firecracker::jailer::CgroupVersion::V2 => {
            assert_eq!(
                cgroup_value(&dirs, "memory.max"),
                limits.memory_bytes.to_string()
            );
            assert_eq!(cgroup_value(&dirs, "cpu.max"), "50000 100000");
        }
    }
    // Resource limits.
    let limits_txt = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits_txt
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 512 ")),
        "{limits_txt}"
    );
}

async fn runs_jailed_and_leaves_nothing(fc: PathBuf, jailer: PathBuf) {
    let j = Jailed::new("jl1", fc, jailer, 940_001);
    let kernel = j.fx.path().join("vmlinux");
    let (vm, mut events) = j.actor("jvm1", &kernel);
    let spawned = vm
        .send(SpawnProcess {})
        .await
        .unwrap()
        .expect("jailed spawn");
    let pid = spawned.record.pid;
    let layout = j.layout();
    assert_eq!(spawned.record.api_socket, layout.api_socket());

    // The VM's uid and gid (real, effective, saved, fs).
    let uid = j.uid.to_string();
    assert_eq!(status_field(pid, "Uid"), [uid.as_str(); 4].join("\t"));
    assert_eq!(status_field(pid, "Gid"), [uid.as_str(); 4].join("\t"));
    // Its root is the jail.
    let theirs = std::fs::metadata(format!("/proc/{pid}/root/")).unwrap();
    let jail = std::fs::metadata(layout.root()).unwrap();
    assert_eq!((theirs.dev(), theirs.ino()), (jail.dev(), jail.ino()));
    // A new pid namespace, where it is pid 1.
    let nspid = status_field(pid, "NSpid");
    assert_eq!(nspid, format!("{pid}\t1"), "NSpid");
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
        std::fs::read_link("/proc/self/ns/pid").unwrap()
    );
    assert_limits(&j, pid);
    // Files: the disk is the VM's, the kernel root's.
    let disk = std::fs::metadata(layout.root().join("rootfs.ext4")).unwrap();
    assert_eq!((disk.uid(), disk.gid()), (j.uid, j.uid));

    // Configure with host paths (translated into the jail) and start.
    vm.send(ConfigureVm {
        config: j.fx.config(None),
    })
    .await
    .unwrap()
    .expect("configure jailed");
    vm.send(StartVm {}).await.unwrap().expect("start jailed");
    assert!(layout.vsock_socket().exists(), "vsock socket in the jail");

    // The ladder: the guest ignores Ctrl+Alt+Del, and the VMM, init of its pid namespace,
    // ignores SIGTERM from outside, so only SIGKILL ends it.
    let plan = StopPlan {
        ctrl_alt_del_grace: Some(Duration::from_millis(200)),
        term_grace: Some(Duration::from_millis(300)),
    };
    let out = vm.send(StopVm { plan }).await.unwrap().expect("stop");
    assert_eq!(out.rung, StopRung::Sigkill);
    assert!(matches!(
        next_event(&mut events).await,
        VmProcessEvent::Stopped {
            rung: StopRung::Sigkill,
            ..
        }
    ));
    assert!(!alive(pid));

    // Restart: the same VM, uid and jail id again (the jailer refuses a jail it already made,
    // so the spawn must clear the old one), then kill.
    let again = vm.send(SpawnProcess {}).await.unwrap().expect("respawn");
    assert_ne!(again.record.pid, pid);
    vm.send(ConfigureVm {
        config: j.fx.config(None),
    })
    .await
    .unwrap()
    .expect("configure again");
    vm.send(StartVm {}).await.unwrap().expect("start again");
    let out = vm.send(KillVm {}).await.unwrap().expect("kill");
    assert_eq!(out.rung, StopRung::Sigkill);
    assert!(matches!(
        next_event(&mut events).await,
        VmProcessEvent::Stopped { .. }
    ));
    vm.send(RemoveRunDir {}).await.unwrap().expect("remove");
    j.assert_nothing_left("jvm1");
}

async fn refuses_a_drive_outside_the_jail(fc: PathBuf, jailer: PathBuf) {
    let j = Jailed::new("jl2", fc, jailer, 940_002);
    let kernel = j.fx.path().join("vmlinux");
    let (vm, _events) = j.actor("jvm2", &kernel);
    vm.send(SpawnProcess {})
        .await
        .unwrap()
        .expect("jailed spawn");
    // A disk hearth did not put in the jail: its host path means nothing in the chroot.
    let outside = j.fx.path().join("other.ext4");
    std::fs::write(&outside, vec![0u8; 4096]).unwrap();
    let mut config = j.fx.config(None);
    config.rootfs = outside.clone();
    let err = vm
        .send(ConfigureVm { config })
        .await
        .unwrap()
        .expect_err("a drive outside the jail");
    let text = format!("{err:#}");
    assert!(
        matches!(err, FirecrackerError::Api { .. }) || text.contains("No such file"),
        "{text}"
    );
    vm.send(KillVm {}).await.unwrap().expect("kill");
    vm.send(RemoveRunDir {}).await.unwrap().expect("remove");
    j.assert_nothing_left("jvm2");
}

async fn adopts_a_jailed_vmm(fc: PathBuf, jailer: PathBuf) {
    let j = Jailed::new("jl3", fc, jailer, 940_003);
    // The kernel on another filesystem (tmpfs): bind-mounted read-only into the jail.
    let shm = tempfile::Builder::new()
        .prefix("jl")
        .tempdir_in("/dev/shm")
        .unwrap();
    let kernel = shm.path().join("vmlinux");
    vmlinux::write_minimal_vmlinux(&kernel);
    let (vm, _events) = j.actor("jvm3", &kernel);
    let record = vm
        .send(SpawnProcess {})
        .await
        .unwrap()
        .expect("spawn")
        .record;
    let mut config = j.fx.config(None);
    config.kernel = kernel.clone();
    vm.send(ConfigureVm { config })
        .await
        .unwrap()
        .expect("configure");
    vm.send(StartVm {}).await.unwrap().expect("start");

    // hearthd goes away (the actor stops; the VM stays), a new actor adopts the VMM.
    drop(vm);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(alive(record.pid));
    let (vm2, mut events2) = j.actor("jvm3", &kernel);
    // A record that does not match (pid reused) is refused, touching nothing.
    let mut wrong = record.clone();
    wrong.start_time += 1;
    assert!(matches!(
        vm2.send(AdoptProcess { record: wrong }).await.unwrap(),
        Err(FirecrackerError::AdoptMismatch { .. })
    ));
    let info = vm2
        .send(AdoptProcess {
            record: record.clone(),
        })
        .await
        .unwrap()
        .expect("adopt jailed VMM");
    assert!(!info.is_child);
    assert_eq!(
        info.vmm_state,
        hearth_proto::firecracker::InstanceState::Running
    );
    assert_eq!(
        vm2.send(GetVmmProcess {}).await.unwrap().map(|p| p.pid),
        Some(record.pid)
    );

    vm2.send(KillVm {}).await.unwrap().expect("kill");
    assert!(matches!(
        next_event(&mut events2).await,
        VmProcessEvent::Stopped { .. }
    ));
    vm2.send(RemoveRunDir {}).await.unwrap().expect("remove");
    j.assert_nothing_left("jvm3");
    // The bind mount is gone too, and the kernel is untouched.
    assert!(kernel.exists());
}

/// `ip -d link show <tap>` in `ns`.
fn tap_details(ns: &NetNs, tap: &str) -> String {
    ns.exec_ok(&["ip", "-d", "link", "show", tap])
}

async fn gives_the_tap_to_the_vm(fc: PathBuf, jailer: PathBuf, ns: &NetNs) {
    let j = Jailed::new("jl4", fc, jailer, 940_004);
    let kernel = j.fx.path().join("vmlinux");
    // A TAP owned by another user: the unprivileged VMM could not attach to it as it is.
    ns.exec_ok(&[
        "ip", "tuntap", "add", "dev", "hjt0", "mode", "tap", "user", "1",
    ]);
    let (vm, _events) = j.actor("jvm4", &kernel);
    vm.send(SpawnProcess {})
        .await
        .unwrap()
        .expect("jailed spawn");
    let lease = NetLease {
        tap: "hjt0".into(),
        mac: MacAddr::for_guest(GUEST_IP),
        guest_ip: GUEST_IP,
        gateway: Ipv4Addr::new(172, 31, 240, 1),
        prefix_len: 24,
    };
    vm.send(ConfigureVm {
        config: j.fx.config(Some(lease)),
    })
    .await
    .unwrap()
    .expect("the jailed VMM attaches to the TAP given to its uid");
    let details = tap_details(ns, "hjt0");
    assert!(details.contains(" user 940004 "), "{details}");
    assert!(details.contains(" group 940004 "), "{details}");
    vm.send(KillVm {}).await.unwrap().expect("kill");
    vm.send(RemoveRunDir {}).await.unwrap().expect("remove");
    let details = tap_details(ns, "hjt0");
    assert!(
        details.contains(" user root ") && details.contains(" group root "),
        "TAP not back to root: {details}"
    );
    j.assert_nothing_left("jvm4");
}

macro_rules! jailer_test {
    ($name:ident, $body:path) => {
        #[test]
        fn $name() {
            let Some((fc, jailer)) = real_binaries(stringify!($name)) else {
                return;
            };
            hearth_testkit::require_privileged!();
            actix::System::new().block_on($body(fc, jailer));
        }
    };
    ($name:ident, $body:path, net) => {
        #[test]
        fn $name() {
            let Some((fc, jailer)) = real_binaries(stringify!($name)) else {
                return;
            };
            hearth_testkit::require_privileged!();
            let ns = NetNs::new("jail");
            ns.block_on(|| $body(fc, jailer, &ns));
        }
    };
}

jailer_test!(
    jailed_vmm_runs_as_its_uid_in_its_jail,
    runs_jailed_and_leaves_nothing
);
jailer_test!(
    jailed_vmm_refuses_a_drive_outside_its_jail,
    refuses_a_drive_outside_the_jail
);
jailer_test!(jailed_vmm_is_adopted_after_a_restart, adopts_a_jailed_vmm);
jailer_test!(jailed_vmm_gets_its_tap, gives_the_tap_to_the_vm, net);
