//! Which of hearthd's file descriptors a VMM receives: none. A VMM gets stdin (`/dev/null`),
//! stdout and stderr (the console FIFO), and holds otherwise only what it opens itself; a
//! netlink socket, a pipe or the store in a VMM's hands would let a guest that escapes into
//! its VMM reach the host.
//!
//! - `simulated_vmm_*` and `real_vmm_*`: hearthd-like descriptors are open in this process,
//!   deliberately *without* close-on-exec (a raw netlink socket and a pipe, as a careless C
//!   library opens them; libipset does so for its netlink socket) plus the store, and a
//!   `FirecrackerActor` spawns the VMM exactly as hearthd does. The real binary is used when
//!   `HEARTH_FIRECRACKER_REAL` names it (e.g. `../shared/firecracker/bin/firecracker`);
//!   otherwise that test prints a SKIP line and passes.
//! - `hearthd_*` (root): the daemon itself (`hearth::daemon::start` in a private network
//!   namespace, `firecracker-sim` as the VMM) creates a VM with NAT, so every kind of
//!   descriptor hearthd opens is open (netlink, libipset sessions, store, DNS and API sockets,
//!   console FIFOs, pidfds); every new one must be close-on-exec, and the VMM must hold none.
//!
//! The tests of this file take one lock: the checks read this whole process's descriptor table.

mod common;
use hearth::vm_host;
use hearth_testkit::fc_sim;

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Actor;
use hearth::store::{Durability, Store};
use hearth_actors::firecracker::binary;
use hearth_actors::firecracker::{
    FirecrackerActor, FirecrackerSettings, KillVm, SpawnInfo, SpawnProcess,
};
use hearth_actors::host::processes::LinuxProcesses;

/// Serialises the tests of this binary (they read the whole process's descriptor table).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The variable naming the real Firecracker binary.
const REAL_VAR: &str = "HEARTH_FIRECRACKER_REAL";

/// A process's descriptors: number -> what `/proc/<pid>/fd/<n>` links to.
fn fd_table(pid: u32) -> BTreeMap<i32, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/<pid>/fd")
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((n, target.display().to_string()))
        })
        .collect()
}

/// This process's descriptors that survive exec (no `FD_CLOEXEC`), from fd 3 up.
fn inheritable_fds() -> BTreeMap<i32, String> {
    fd_table(std::process::id())
        .into_iter()
        .filter(|(fd, _)| {
            if *fd < 3 {
                return false;
            }
            // SAFETY: F_GETFD only reads the flags of a descriptor number.
            let flags = unsafe { libc::fcntl(*fd, libc::F_GETFD) };
            flags >= 0 && flags & libc::FD_CLOEXEC == 0
        })
        .collect()
}

/// Whether descriptor `fd_a` of `a` and `fd_b` of `b` are the same open file (`kcmp(2)`
/// with `KCMP_FILE`: exact, also for eventfds and epoll instances, which all link to the same
/// `anon_inode:` name). `None` when the kernel has no kcmp.
fn same_file(a: u32, fd_a: i32, b: u32, fd_b: i32) -> Option<bool> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp takes no pointers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            a as libc::pid_t,
            b as libc::pid_t,
            KCMP_FILE,
            fd_a as libc::c_ulong,
            fd_b as libc::c_ulong,
        )
    };
    if rc < 0 {
        return None;
    }
    Some(rc == 0)
}

/// What is wrong with the descriptor table of VMM `vmm` (spawned by this process): anything
/// beyond stdio that is hearthd's (the same open file as one of this process's descriptors),
/// or that is not the kind of thing a VMM opens itself (files in its run directory, KVM and
/// TUN devices, its own sockets, eventfds, timerfds, epoll, and the images it was configured
/// with, under `configured`).
fn problems(vmm: u32, run_dir: &Path, configured: &[&Path]) -> Vec<String> {
    let table = fd_table(vmm);
    let me = std::process::id();
    let hearthd = fd_table(me);
    let mut bad = Vec::new();
    let fifo = run_dir.join("console.fifo").display().to_string();
    let expect_std = [(0, "/dev/null"), (1, fifo.as_str()), (2, fifo.as_str())];
    for (fd, want) in expect_std {
        if table.get(&fd).map(String::as_str) != Some(want) {
            bad.push(format!("fd {fd} is {:?}, expected {want}", table.get(&fd)));
        }
    }
    let run_dir = run_dir.display().to_string();
    for (fd, target) in table.range(3..) {
        let shared = hearthd.iter().find(|(ours, our_target)| {
            // Without kcmp, fall back to names (blind to anonymous inodes).
            same_file(vmm, *fd, me, **ours)
                .unwrap_or(*our_target == target && !target.starts_with("anon_inode:"))
        });
        if let Some((ours, _)) = shared {
            bad.push(format!("fd {fd} is hearthd's fd {ours}: {target}"));
            continue;
        }
        let own = target.starts_with(&format!("{run_dir}/"))
            || configured
                .iter()
                .any(|dir| Path::new(target).starts_with(dir))
            || matches!(
                target.as_str(),
                "/dev/kvm" | "/dev/net/tun" | "/dev/urandom"
            )
            || target.starts_with("socket:[")
            || target.starts_with("anon_inode:");
        if !own {
            bad.push(format!("fd {fd} is unexpected: {target}"));
        }
    }
    bad
}

/// Descriptors like hearthd's, the first two inheritable on purpose.
struct HearthdLike {
    _netlink: OwnedFd,
    _pipe: (OwnedFd, OwnedFd),
    _store: Store,
}

impl HearthdLike {
    fn open(dir: &Path) -> Self {
        // SAFETY: socket takes no pointers; the fd is owned below.
        let nl = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE) };
        assert!(
            nl >= 0,
            "netlink socket: {}",
            std::io::Error::last_os_error()
        );
        let mut p = [0; 2];
        // SAFETY: pipe writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        // SAFETY: all three were just created and are owned by nobody else.
        let (netlink, pipe) = unsafe {
            (
                OwnedFd::from_raw_fd(nl),
                (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])),
            )
        };
        let store = Store::open_with(&dir.join("state.db"), Durability::Normal).expect("store");
        HearthdLike {
            _netlink: netlink,
            _pipe: pipe,
            _store: store,
        }
    }
}

/// Spawns `program` with a `FirecrackerActor` (as hearthd does) while hearthd-like
/// descriptors are open, and checks the VMM's descriptor table once its API answers.
fn spawned_vmm_holds_nothing_of_ours(program: PathBuf) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::Builder::new()
        .prefix("fd")
        .tempdir_in("/tmp")
        .unwrap();
    let _hearthd = HearthdLike::open(dir.path());
    let inheritable = inheritable_fds();
    assert!(
        inheritable.len() >= 3,
        "the fixture's netlink socket and pipe should be inheritable: {inheritable:?}"
    );
    let settings = FirecrackerSettings::new(dir.path().join("vms"));
    let run_dir = settings.run_base.join("vm-fd");
    let (problems, table) = actix::System::new().block_on(async move {
        let bin = binary::resolve(Some(&program), &LinuxProcesses).expect("resolve the VMM");
        let (events, _rx) = fc_sim::event_sink();
        let vm = FirecrackerActor::new(
            "vm-fd",
            bin,
            Arc::new(LinuxProcesses),
            settings,
            events,
            common::test_logger(),
        )
        .unwrap()
        .start();
        let info: SpawnInfo = vm.send(SpawnProcess {}).await.unwrap().expect("spawn");
        let vmm = fd_table(info.record.pid);
        let found = problems(info.record.pid, &run_dir, &[]);
        vm.send(KillVm {}).await.unwrap().expect("kill");
        (found, vmm)
    });
    assert!(
        problems.is_empty(),
        "the VMM holds what it should not: {problems:#?}\nits descriptors: {table:#?}"
    );
}

#[test]
fn simulated_vmm_holds_only_stdio_and_its_own_descriptors() {
    spawned_vmm_holds_nothing_of_ours(fc_sim::sim_binary());
}

#[test]
fn real_vmm_holds_only_stdio_and_its_own_descriptors() {
    let Some(real) = std::env::var_os(REAL_VAR) else {
        assert!(
            std::env::var("HEARTH_REQUIRE_REAL_FIRECRACKER").as_deref() != Ok("1"),
            "HEARTH_REQUIRE_REAL_FIRECRACKER=1 but {REAL_VAR} is not set"
        );
        hearth_testkit::skip!(
            "SKIP: real_vmm_holds_only_stdio_and_its_own_descriptors: set \
             {REAL_VAR}=/path/to/firecracker (e.g. ../shared/firecracker/bin/firecracker) to \
             check the real binary's descriptors"
        );
        return;
    };
    let real = PathBuf::from(real);
    assert!(
        real.is_file(),
        "{REAL_VAR}={} is not a file",
        real.display()
    );
    spawned_vmm_holds_nothing_of_ours(real);
}

#[test]
fn hearthd_opens_nothing_inheritable_and_its_vmms_get_nothing_of_it() {
    require_privileged!();
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut host = vm_host::VmHost::new("hvfd", 16).expect("host");
    host.config.network.pool_size = 1;
    host.config.vm.disk_backend = "copy".into();
    let config = host.config.clone();
    let run_base = config.run_dir.clone();
    let outcome = host.ns.block_on(|| async move {
        let before = inheritable_fds();
        let log = common::test_logger();
        let d = hearth::daemon::start(&config, &log).await.expect("daemon");
        let spec = hearth_proto::api::CreateVm {
            name: "fds".into(),
            kernel: vm_host::KERNEL.into(),
            rootfs: vm_host::ROOTFS.into(),
            vcpus: 1,
            memory_mib: 128,
            disk_size: None,
            boot_args: None,
            init: None,
            // NAT and the guest set: libipset sessions and their netlink sockets.
            nat: true,
            ready_probe: true,
            labels: std::collections::BTreeMap::default(),
            from_snapshot: None,
            restart: hearth_proto::api_policy::RestartPolicy::No,
            ttl: None,
            on_expiry: hearth_proto::api_policy::OnExpiry::Stop,
            publish: Vec::new(),
            egress: None,
        };
        let created = d
            .supervisor
            .send(hearth_actors::supervisor::CreateVm {
                spec,
                idempotency: None,
            })
            .await
            .unwrap();
        let result = match created {
            Ok(_) => {
                let after = inheritable_fds();
                let new_inheritable: BTreeMap<i32, String> = after
                    .into_iter()
                    .filter(|(fd, t)| before.get(fd) != Some(t))
                    .collect();
                let pids = vm_host::vmm_pids(&config.run_dir);
                let vmm_problems: Vec<String> = pids
                    .iter()
                    .flat_map(|pid| {
                        let run_dir = vmm_run_dir(*pid, &run_base);
                        // The kernel and the VM's disk, opened by the VMM when configured.
                        let images = config.data_dir.join("images");
                        let disks = config.data_dir.join("disks");
                        problems(*pid, &run_dir, &[&images, &disks])
                    })
                    .collect();
                Ok((new_inheritable, pids.len(), vmm_problems))
            }
            Err(e) => Err(e.to_string()),
        };
        let _ = d
            .supervisor
            .send(hearth_actors::supervisor::DeleteVm { name: "fds".into() })
            .await;
        hearth::daemon::stop(&d, &config).await.expect("stop");
        result
    });
    let (new_inheritable, vmms, vmm_problems) = outcome.expect("create the VM");
    assert_eq!(vmms, 1, "one VMM runs");
    assert!(
        new_inheritable.is_empty(),
        "hearthd opened descriptors without close-on-exec: {new_inheritable:#?}"
    );
    assert!(
        vmm_problems.is_empty(),
        "the VMM holds what it should not: {vmm_problems:#?}"
    );
    // Wait for the deletion to have ended the VMM before the host is torn down.
    common::wait_until(Duration::from_secs(5), || host.vmm_pids().is_empty());
}

/// The run directory of a VMM: the directory of the `--api-sock` on its command line.
fn vmm_run_dir(pid: u32, run_base: &Path) -> PathBuf {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    args.iter()
        .position(|a| a == "--api-sock")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| Path::new(s).parent().map(Path::to_path_buf))
        .unwrap_or_else(|| run_base.to_path_buf())
}
