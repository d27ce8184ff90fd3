//! The warm pool of jailed VMMs end to end (`[jailer] warm_pool`), with the real Firecracker
//! and jailer: idle members start after `Open`, each in its own jail as its own uid; a create
//! takes the oldest (the VM's VMM is that very process, now with the VM's files in its jail
//! and the VM's limits in its cgroups) and the pool refills; after `kill -9` of hearthd the VM
//! is adopted and the idle members are killed and swept (their uids free again); delete and a
//! clean shutdown with idle members leave no VMM, jail or cgroup.
//!
//! Needs `HEARTH_FIRECRACKER_REAL` and the jailer (`HEARTH_JAILER_REAL`, or `jailer` beside
//! that Firecracker); without them it prints a SKIP line (a failure under
//! `HEARTH_REQUIRE_REAL_FIRECRACKER=1`). Root only (`HEARTH_REQUIRE_PRIVILEGED=1`).

mod common;
use common::daemon;
use common::jails::*;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use daemon::{HearthHost, Leaks};
use hearth_actors::firecracker::jailer::{JailLimits, LimitPolicy};

const FIRST_UID: u32 = 941_000;
const LAST_UID: u32 = 941_009;

/// The jailed VMMs of this test's uids now running: uid → pid.
fn vmms() -> BTreeMap<u32, u64> {
    let mut found = BTreeMap::new();
    for pid in std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
    {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().map(String::as_str) != Some("/firecracker") || !alive(pid) {
            continue;
        }
        let uid = args
            .windows(2)
            .find(|w| w[0] == "--id")
            .and_then(|w| w[1].parse::<u32>().ok());
        if let Some(uid) = uid.filter(|u| (FIRST_UID..=LAST_UID).contains(u)) {
            found.insert(uid, pid);
        }
    }
    found
}

/// The value of the first of `files` found in jail `uid`'s cgroups.
fn cgroup_value(uid: u32, files: &[&str]) -> String {
    cgroup_dirs(uid)
        .iter()
        .find_map(|d| {
            files
                .iter()
                .find_map(|f| std::fs::read_to_string(d.join(f)).ok())
        })
        .unwrap_or_else(|| panic!("none of {files:?} in the cgroups of {uid}"))
        .trim()
        .to_string()
}

/// Checks that `pid` runs as `uid`, pid 1 of a new pid namespace, rooted in jail `uid`, in
/// its cgroups with `limits` (memory, and the CPU quota).
fn assert_jailed(base: &Path, pid: u64, uid: u32, limits: &JailLimits) {
    assert_eq!(
        status_field(pid, "Uid"),
        format!("{uid} {uid} {uid} {uid}"),
        "runs as the VM's uid"
    );
    assert_eq!(status_field(pid, "Gid"), format!("{uid} {uid} {uid} {uid}"));
    let nspid = status_field(pid, "NSpid");
    assert!(
        nspid.ends_with(" 1"),
        "pid 1 of a new pid namespace: {nspid}"
    );
    let theirs = std::fs::metadata(format!("/proc/{pid}/root/")).expect("root");
    let ours = std::fs::metadata(jail_root(base, uid)).expect("jail root");
    assert_eq!(
        (theirs.dev(), theirs.ino()),
        (ours.dev(), ours.ino()),
        "its root is jail {uid}"
    );
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert!(cgroups.contains(&format!("/hearth/{uid}")), "{cgroups}");
    assert_eq!(
        cgroup_value(uid, &["memory.limit_in_bytes", "memory.max"]),
        limits.memory_bytes.to_string(),
        "memory limit of {uid}"
    );
    let cpu = cgroup_value(uid, &["cpu.cfs_quota_us", "cpu.max"]);
    assert_eq!(
        cpu.split_whitespace().next(),
        Some(limits.cpu_quota_us.to_string().as_str()),
        "CPU quota of {uid}"
    );
}

fn create(h: &HearthHost, name: &str) -> serde_json::Value {
    let v = h.ctl_ok(&[
        "vm",
        "create",
        name,
        "--kernel",
        "vmlinux",
        "--rootfs",
        "base",
        "--no-ready-probe",
    ]);
    assert_eq!(v["state"], "running", "{v}\n{}", h.log());
    v
}

/// Waits (at most 20 s) until exactly the members (or VMMs) of `uids` run.
fn wait_for_vmms(h: &HearthHost, uids: &[u32]) -> BTreeMap<u32, u64> {
    let ok = common::wait_until(Duration::from_secs(20), || {
        vmms().keys().copied().collect::<Vec<_>>() == uids
    });
    assert!(ok, "VMMs {:?}, want uids {uids:?}\n{}", vmms(), h.log());
    vmms()
}

/// Rewrites hearthd's `warm_pool` (for its next launch).
fn set_warm_pool(h: &HearthHost, n: usize) {
    let path = h.path("hearthd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("warm_pool = ").expect("warm_pool in the config");
    let end = start + text[start..].find('\n').unwrap();
    let text = format!("{}warm_pool = {n}{}", &text[..start], &text[end..]);
    std::fs::write(&path, text).unwrap();
}

fn assert_no_vm_files(base: &Path, uid: u32) {
    let files = jail_files(base, uid);
    for f in ["vmlinux", "rootfs"] {
        assert!(!files.contains(&f.to_string()), "{f} in idle jail {uid}");
    }
}

#[test]
fn vms_from_the_warm_pool_are_jailed_readopted_and_leave_nothing() {
    let Some((fc, jailer)) = real_binaries(module_path!()) else {
        return;
    };
    require_privileged!();
    let (base, _cleanup) = jail_base("hp", FIRST_UID..=LAST_UID);
    let cfg = format!(
        "{}warm_pool = 2\n",
        jail_config(&jailer, base.path(), &(FIRST_UID..=LAST_UID))
    );
    let mut h = HearthHost::start_jailed(&fc, &cfg);
    let base = base.path().to_path_buf();
    let policy = LimitPolicy::default();
    let warm = JailLimits::for_warm(&policy);

    // Two idle members, jailed as their own uids with the warm limits, no VM files yet.
    let members = wait_for_vmms(&h, &[FIRST_UID, FIRST_UID + 1]);
    for (&uid, &pid) in &members {
        assert_jailed(&base, pid, uid, &warm);
        assert_no_vm_files(&base, uid);
        // Its FIFO is on the run directory's filesystem, not in the jail (a take renames it).
        assert!(h.path("run").join(format!(".warm/{uid}.fifo")).exists());
    }

    // A create takes the member that was ready first: the VM's VMM is that very process,
    // its files are in the jail, its own limits in the cgroups, its console FIFO moved out of
    // the jail directory.
    let a = create(&h, "a");
    let pid = a["pid"].as_u64().expect("pid");
    let uid = members
        .iter()
        .find_map(|(u, p)| (*p == pid).then_some(*u))
        .unwrap_or_else(|| panic!("a's VMM {pid} is no member {members:?}\n{}", h.log()));
    let other = if uid == FIRST_UID {
        FIRST_UID + 1
    } else {
        FIRST_UID
    };
    let vcpus = u8::try_from(a["spec"]["vcpus"].as_u64().unwrap()).unwrap();
    let mem = a["spec"]["memory_mib"].as_u64().unwrap();
    let limits = JailLimits::for_vm(vcpus, mem, &policy);
    assert_ne!(limits, warm);
    assert_jailed(&base, pid, uid, &limits);
    let files = jail_files(&base, uid);
    assert!(
        files.contains(&"vmlinux".into()) && files.contains(&"rootfs".into()),
        "{files:?}"
    );
    assert!(!h.path("run").join(format!(".warm/{uid}.fifo")).exists());
    assert!(h.path("run/a/console.fifo").exists());
    assert!(h.log().contains("took a warm jailed VMM"), "{}", h.log());
    // The pool refills with the lowest free uid.
    let now = wait_for_vmms(&h, &[FIRST_UID, FIRST_UID + 1, FIRST_UID + 2]);
    assert_eq!(now[&uid], pid);
    let idle = [now[&other], now[&(FIRST_UID + 2)]];

    // kill -9 with two idle members; restarted without a pool, hearthd adopts a (still
    // jailed, same pid) and its sweep kills the members and removes their jails and cgroups.
    h.kill9();
    set_warm_pool(&h, 0);
    h.launch();
    let after = h.ctl_ok(&["vm", "get", "a"]);
    assert_eq!(
        (after["state"].as_str(), after["pid"].as_u64()),
        (Some("running"), Some(pid)),
        "{after}\n{}",
        h.log()
    );
    assert_jailed(&base, pid, uid, &limits);
    for p in idle {
        assert!(!alive(p), "idle member {p} left running");
    }
    assert_jail_gone(&base, other);
    assert_jail_gone(&base, FIRST_UID + 2);
    assert_eq!(vmms(), BTreeMap::from([(uid, pid)]));
    // The members' uids are free: without a pool, b is jailed through the jailer as the
    // lowest one.
    let b = create(&h, "b");
    let pid_b = b["pid"].as_u64().unwrap();
    assert_jailed(&base, pid_b, other.min(FIRST_UID + 2), &limits);

    // Delete leaves nothing.
    h.ctl_ok(&["vm", "rm", "a"]);
    h.ctl_ok(&["vm", "rm", "b"]);
    assert!(!alive(pid) && !alive(pid_b));
    for uid in FIRST_UID..=LAST_UID {
        assert_jail_gone(&base, uid);
    }
    assert!(
        common::wait_until(Duration::from_secs(10), || h.leaks() == Leaks::none()),
        "leaks after delete: {:?}\n{}",
        h.leaks(),
        h.log()
    );

    // A clean shutdown with idle members kills them and removes their jails.
    assert!(h.terminate(), "hearthd exited cleanly\n{}", h.log());
    set_warm_pool(&h, 2);
    h.launch();
    let members = wait_for_vmms(&h, &[FIRST_UID, FIRST_UID + 1]);
    assert!(h.terminate(), "hearthd exited cleanly\n{}", h.log());
    for p in members.values() {
        assert!(!alive(*p), "idle member {p} left after shutdown");
    }
    assert!(vmms().is_empty(), "{:?}", vmms());
    for uid in FIRST_UID..=LAST_UID {
        assert_jail_gone(&base, uid);
    }
}
