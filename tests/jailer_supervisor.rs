//! Jailed VMMs end to end (issue 16): `hearthd` with `[jailer] enabled = true`, the real
//! Firecracker and jailer, driven by `hearthctl` inside private network namespaces. Each VM's
//! VMM runs as its own uid/gid, chrooted in its jail, in a new pid namespace, in cgroups holding
//! the limits derived from its size; stop (the jailed VMM, init of its pid namespace, ignores
//! SIGTERM, so the ladder ends with SIGKILL), start, restart, kill, adoption after `kill -9` of
//! hearthd, the sweep of a jail whose VMM died while hearthd was down, and delete, leaving no
//! jail directory, cgroup, VMM or TAP behind.
//!
//! Needs `HEARTH_FIRECRACKER_REAL` and the jailer (`HEARTH_JAILER_REAL`, or `jailer` beside
//! that Firecracker); without them it prints a SKIP line (a failure under
//! `HEARTH_REQUIRE_REAL_FIRECRACKER=1`). Root only (`HEARTH_REQUIRE_PRIVILEGED=1`).

mod common;
use common::daemon;
use common::jails::*;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use daemon::{HearthHost, Leaks};
use hearth_actors::host::jails::cgroups::detect_host;

const FIRST_UID: u32 = 940_000;
const LAST_UID: u32 = 940_009;

/// Checks that `pid` is VM `uid`'s jailed VMM with the limits of `memory_mib` MiB.
fn assert_jailed(base: &Path, pid: u64, uid: u32, memory_mib: u64) {
    assert_eq!(
        status_field(pid, "Uid"),
        format!("{uid} {uid} {uid} {uid}"),
        "runs as the VM's uid"
    );
    assert_eq!(status_field(pid, "Gid"), format!("{uid} {uid} {uid} {uid}"));
    let nspid = status_field(pid, "NSpid");
    assert!(
        nspid.ends_with(" 1"),
        "pid 1 of a new pid namespace: NSpid {nspid}"
    );
    let jail_root = base.join("firecracker").join(uid.to_string()).join("root");
    let theirs = std::fs::metadata(format!("/proc/{pid}/root/")).expect("root");
    let ours = std::fs::metadata(&jail_root).expect("jail root");
    assert_eq!(
        (theirs.dev(), theirs.ino()),
        (ours.dev(), ours.ino()),
        "its root is the jail {}",
        jail_root.display()
    );
    // Its files are in the jail: the kernel and its disk.
    for f in ["vmlinux", "rootfs"] {
        assert!(jail_root.join(f).exists(), "{f} in the jail");
    }
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert!(
        cgroups.contains(&format!("/hearth/{uid}")),
        "in its own cgroups:\n{cgroups}"
    );
    let host = detect_host().unwrap();
    let want = (memory_mib
        + hearth_actors::firecracker::jailer::LimitPolicy::default().mem_overhead_mib)
        << 20;
    let limit = cgroup_dirs(uid)
        .iter()
        .find_map(|d| {
            std::fs::read_to_string(d.join("memory.limit_in_bytes"))
                .or_else(|_| std::fs::read_to_string(d.join("memory.max")))
                .ok()
        })
        .unwrap_or_else(|| panic!("no memory limit under {:?}", host.mounts));
    assert_eq!(limit.trim(), want.to_string(), "memory limit");
}

/// Runs the jailer by hand: a jailed Firecracker in jail `uid` that no VM knows. Answers its
/// pid once it runs Firecracker.
fn start_stray(jailer: &Path, fc: &Path, base: &Path, uid: u32) -> u64 {
    #[expect(
        clippy::disallowed_methods,
        reason = "the test plays a VMM hearth lost track of"
    )]
    let out = std::process::Command::new(jailer)
        .args(["--id", &uid.to_string(), "--exec-file"])
        .arg(fc)
        .args(["--uid", &uid.to_string(), "--gid", &uid.to_string()])
        .arg("--chroot-base-dir")
        .arg(base)
        .args(["--new-pid-ns", "--", "--api-sock", "/run/api.sock"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("jailer");
    assert!(out.success(), "jailer: {out}");
    let pid_file = base.join(format!("firecracker/{uid}/root/firecracker.pid"));
    let pid: u64 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert!(common::wait_until(Duration::from_secs(5), || {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"/firecracker"))
    }));
    pid
}

/// hearthd killed; meanwhile b's VMM (`pids.1`) dies too, and a jailed VMM of no VM starts
/// (as if spawned just before the crash, never recorded). The restarted hearthd adopts a
/// (`pids.0`, still jailed), records b crashed, sweeps b's jail and cgroups, kills the stray
/// and sweeps its jail.
fn crash_and_readopt(
    h: &mut HearthHost,
    base: &Path,
    (fc, jailer): (&Path, &Path),
    (pid2, pid_b3): (u64, u64),
    mem: u64,
) {
    h.kill9();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid_b3 as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(common::wait_until(Duration::from_secs(5), || !alive(
        pid_b3
    )));
    let stale = base.join(format!("firecracker/{LAST_UID}/root"));
    let stray = start_stray(jailer, fc, base, LAST_UID);
    assert!(alive(stray));
    assert!(base.join(format!("firecracker/{}", FIRST_UID + 1)).exists());
    h.launch();
    let after = h.ctl_ok(&["vm", "get", "a"]);
    assert_eq!(
        (after["state"].as_str(), after["pid"].as_u64()),
        (Some("running"), Some(pid2)),
        "{after}\n{}",
        h.log()
    );
    assert!(alive(pid2));
    assert_jailed(base, pid2, FIRST_UID, mem);
    assert_eq!(h.state("b").as_deref(), Some("crashed"));
    assert_jail_gone(base, FIRST_UID + 1);
    assert!(!alive(stray), "the stray jailed VMM was killed");
    assert!(!stale.exists(), "the stray's jail was swept");
}

#[test]
fn hearthd_runs_every_vmm_jailed_and_leaves_nothing() {
    let Some((fc, jailer)) = real_binaries(module_path!()) else {
        return;
    };
    require_privileged!();
    let (base, _cleanup) = jail_base("hj", FIRST_UID..=LAST_UID);
    let jail_cfg = jail_config(&jailer, base.path(), &(FIRST_UID..=LAST_UID));
    let mut h = HearthHost::start_jailed(&fc, &jail_cfg);
    assert!(h.log().contains("VMMs run jailed"), "{}", h.log());
    let base = base.path().to_path_buf();

    // Create: jailed as the first uid of the range.
    let a = h.create_running("a");
    let pid = a["pid"].as_u64().expect("pid");
    let mem = a["spec"]["memory_mib"].as_u64().expect("memory_mib");
    assert_jailed(&base, pid, FIRST_UID, mem);
    let api = base.join(format!("firecracker/{FIRST_UID}/root/run/api.sock"));
    assert!(api.exists(), "the API socket is in the jail");

    // A second VM gets the next uid.
    let b = h.create_running("b");
    let pid_b = b["pid"].as_u64().expect("pid");
    assert_jailed(&base, pid_b, FIRST_UID + 1, mem);

    // Stop: the ladder escalates (Ctrl+Alt+Del unanswered, SIGTERM ignored by a pid-ns init)
    // to SIGKILL; the jail and cgroups go with the VMM.
    let stopped = h.ctl_ok(&["vm", "stop", "a"]);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(h.log().contains("ended by SIGKILL"), "{}", h.log());
    assert!(!alive(pid));
    assert_jail_gone(&base, FIRST_UID);

    // Start: the same uid again (a's for life), a new VMM.
    let started = h.ctl_ok(&["vm", "start", "a"]);
    assert_eq!(started["state"], "running", "{started}\n{}", h.log());
    let pid2 = started["pid"].as_u64().unwrap();
    assert_ne!(pid2, pid);
    assert_jailed(&base, pid2, FIRST_UID, mem);

    // Restart and kill.
    let restarted = h.ctl_ok(&["vm", "restart", "b"]);
    assert_eq!(restarted["state"], "running", "{restarted}\n{}", h.log());
    let pid_b2 = restarted["pid"].as_u64().unwrap();
    assert!(!alive(pid_b));
    assert_jailed(&base, pid_b2, FIRST_UID + 1, mem);
    let killed = h.ctl_ok(&["vm", "kill", "b"]);
    assert_eq!(killed["state"], "stopped", "{killed}");
    assert!(!alive(pid_b2));
    assert_jail_gone(&base, FIRST_UID + 1);
    let again = h.ctl_ok(&["vm", "start", "b"]);
    let pid_b3 = again["pid"].as_u64().unwrap();
    assert_jailed(&base, pid_b3, FIRST_UID + 1, mem);

    crash_and_readopt(&mut h, &base, (&fc, &jailer), (pid2, pid_b3), mem);

    // The adopted VM stops by the ladder too, and b starts again on its own uid.
    let stopped = h.ctl_ok(&["vm", "stop", "a"]);
    assert_eq!(stopped["state"], "stopped", "{stopped}\n{}", h.log());
    assert!(!alive(pid2));
    let b4 = h.ctl_ok(&["vm", "start", "b"]);
    assert_jailed(&base, b4["pid"].as_u64().unwrap(), FIRST_UID + 1, mem);

    // Delete both: nothing left (jails, cgroups, VMMs, run directories, disks, TAPs).
    h.ctl_ok(&["vm", "rm", "a"]);
    h.ctl_ok(&["vm", "rm", "b"]);
    assert_eq!(h.ctl_ok(&["vm", "list"]), serde_json::json!([]));
    for uid in FIRST_UID..=LAST_UID {
        assert_jail_gone(&base, uid);
    }
    assert!(!alive(b4["pid"].as_u64().unwrap()));
    let jails: Vec<_> = std::fs::read_dir(base.join("firecracker"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(jails.is_empty(), "jails left: {jails:?}");
    assert!(
        common::wait_until(Duration::from_secs(10), || h.leaks() == Leaks::none()),
        "leaks after delete: {:?}\n{}",
        h.leaks(),
        h.log()
    );

    // The uids were given back: a new VM gets the first one again.
    let c = h.create_running("c");
    assert_jailed(&base, c["pid"].as_u64().unwrap(), FIRST_UID, mem);
    h.ctl_ok(&["vm", "rm", "c"]);
    assert_jail_gone(&base, FIRST_UID);
}
