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

/// The jailed VMMs of the first test's uids now running: uid → pid.
fn vmms() -> BTreeMap<u32, u64> {
    vmms_in(FIRST_UID..=LAST_UID)
}

/// The jailed VMMs of `uids` now running: uid → pid.
fn vmms_in(uids: std::ops::RangeInclusive<u32>) -> BTreeMap<u32, u64> {
    jailed_vmms(&uids)
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

/// Waits (at most 20 s) until exactly the members (or VMMs) of `uids` run.
fn wait_for_vmms(h: &HearthHost, uids: &[u32]) -> BTreeMap<u32, u64> {
    wait_for_vmms_in(h, FIRST_UID..=LAST_UID, uids)
}

/// [`wait_for_vmms`] among the VMMs of `range`.
fn wait_for_vmms_in(
    h: &HearthHost,
    range: std::ops::RangeInclusive<u32>,
    uids: &[u32],
) -> BTreeMap<u32, u64> {
    let ok = common::wait_until(Duration::from_secs(20), || {
        vmms_in(range.clone()).keys().copied().collect::<Vec<_>>() == uids
    });
    assert!(
        ok,
        "VMMs {:?}, want uids {uids:?}\n{}",
        vmms_in(range.clone()),
        h.log()
    );
    vmms_in(range)
}

/// hearthd jailing the real Firecracker under `base` with the uids `range` and a warm pool
/// of `warm`.
fn start_pooled(
    fc: &Path,
    jailer: &Path,
    base: &Path,
    range: &std::ops::RangeInclusive<u32>,
    warm: usize,
) -> HearthHost {
    let cfg = format!("{}warm_pool = {warm}\n", jail_config(jailer, base, range));
    HearthHost::start_jailed(fc, &cfg)
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
    let mut h = start_pooled(&fc, &jailer, base.path(), &(FIRST_UID..=LAST_UID), 2);
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
    let a = h.create_running("a");
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
    let b = h.create_running("b");
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

const ORPHAN_FIRST_UID: u32 = 941_100;
const ORPHAN_LAST_UID: u32 = 941_109;

/// Waits (at most 10 s) for `child` to end, and answers the signal that ended it.
fn killed_by(child: &mut std::process::Child) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let mut status = None;
    common::wait_until(Duration::from_secs(10), || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status.and_then(|s| s.signal())
}

/// What a `kill -9` of hearthd can leave that no pid file tells of is killed by the next
/// `Open`, before the jails are swept and their uids leased again: a VMM whose jail lost its
/// pid file, a jailer still building a jail (its own session outlives hearthd), and any
/// process running as a uid of the range that no live VM holds. The adopted VM's VMM, which
/// runs as a uid of the range too, lives on.
#[test]
#[expect(
    clippy::disallowed_methods,
    reason = "starts the stand-ins of a jailer mid-start and of an orphan of the uid range"
)]
fn processes_of_jails_no_vm_holds_are_killed_at_open() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let Some((fc, jailer)) = real_binaries(module_path!()) else {
        return;
    };
    require_privileged!();
    let range = ORPHAN_FIRST_UID..=ORPHAN_LAST_UID;
    let (base, _cleanup) = jail_base("ho", range.clone());
    let mut h = start_pooled(&fc, &jailer, base.path(), &range, 1);
    let base = base.path().to_path_buf();

    // A VM (it takes the member) and the refilled member: two real jailed VMMs.
    let first = wait_for_vmms_in(&h, range.clone(), &[ORPHAN_FIRST_UID]);
    let a = h.create_running("a");
    let pid_a = a["pid"].as_u64().expect("pid");
    assert_eq!(first[&ORPHAN_FIRST_UID], pid_a, "a took the member");
    let member_uid = ORPHAN_FIRST_UID + 1;
    let both = wait_for_vmms_in(&h, range.clone(), &[ORPHAN_FIRST_UID, member_uid]);
    let member = both[&member_uid];

    h.kill9();
    set_warm_pool(&h, 0);
    // The member's jail loses its pid file: only its uid says whose it is.
    let pid_file = jail_root(&base, member_uid).join("firecracker.pid");
    std::fs::remove_file(&pid_file).expect("the member's pid file");
    // A jailer still at work on a jail no VM holds (a shell blocked on its stdin, under the
    // jailer's flags), running as root.
    let mut jailer_mid_start = Command::new("/bin/sh")
        .args(["-c", "read line", "jailer", "--id"])
        .arg((ORPHAN_FIRST_UID + 5).to_string())
        .arg("--exec-file")
        .arg(&fc)
        .arg("--chroot-base-dir")
        .arg(&base)
        .stdin(Stdio::piped())
        .spawn()
        .expect("the stand-in jailer");
    // A process of a uid of the range no VM holds, with no jail at all.
    let mut orphan = Command::new("sleep")
        .arg("600")
        .uid(ORPHAN_FIRST_UID + 7)
        .gid(ORPHAN_FIRST_UID + 7)
        .spawn()
        .expect("a process of the range");
    // Not hearth's: the same command line under another chroot base, run as root.
    let mut elsewhere = Command::new("/bin/sh")
        .args(["-c", "read line", "jailer", "--id"])
        .arg((ORPHAN_FIRST_UID + 6).to_string())
        .arg("--exec-file")
        .arg(&fc)
        .args(["--chroot-base-dir", "/nonexistent-base"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("another base's stand-in jailer");

    h.launch();
    let after = h.ctl_ok(&["vm", "get", "a"]);
    assert_eq!(
        (after["state"].as_str(), after["pid"].as_u64()),
        (Some("running"), Some(pid_a)),
        "{after}\n{}",
        h.log()
    );
    assert!(alive(pid_a), "the adopted VM's VMM lives on");
    assert!(
        !alive(member),
        "the member without a pid file left running\n{}",
        h.log()
    );
    assert_eq!(killed_by(&mut jailer_mid_start), Some(9), "{}", h.log());
    assert_eq!(killed_by(&mut orphan), Some(9), "{}", h.log());
    assert!(
        elsewhere.try_wait().expect("try_wait").is_none(),
        "another base's process was killed"
    );
    let _ = elsewhere.kill();
    let _ = elsewhere.wait();
    assert_jail_gone(&base, member_uid);
    assert_eq!(
        vmms_in(range.clone()),
        BTreeMap::from([(ORPHAN_FIRST_UID, pid_a)])
    );

    // The member's uid is free again: b is jailed as it.
    let b = h.create_running("b");
    let pid_b = b["pid"].as_u64().unwrap();
    assert_eq!(
        status_field(pid_b, "Uid").split(' ').next(),
        Some(member_uid.to_string().as_str())
    );
    h.ctl_ok(&["vm", "rm", "a"]);
    h.ctl_ok(&["vm", "rm", "b"]);
    assert!(
        common::wait_until(Duration::from_secs(10), || h.leaks() == Leaks::none()),
        "leaks after delete: {:?}\n{}",
        h.leaks(),
        h.log()
    );
}

const FS_FIRST_UID: u32 = 941_200;
const FS_LAST_UID: u32 = 941_209;

/// A tmpfs mounted by a test, lazily unmounted on the way out (`MNT_DETACH`: whatever still
/// uses it, e.g. a hearthd a failed assertion left running, keeps it until it lets go).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Self {
        use nix::mount::{mount, MsFlags};
        std::fs::create_dir_all(at).expect("mount point");
        mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("size=64m,mode=0755"),
        )
        .unwrap_or_else(|e| panic!("mount tmpfs on {}: {e}", at.display()));
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The run directory on another filesystem than `chroot_base_dir` (here a tmpfs; the data
/// directory stays beside the jails, so the VM's files are hard-linked): a create still takes
/// the member, whose console FIFO lives in `<run_dir>/.warm` and is renamed within the run
/// directory's filesystem, never across; the VM is adopted after `kill -9` and its delete
/// leaves nothing.
#[test]
fn the_pool_works_with_the_run_dir_on_another_filesystem() {
    let Some((fc, jailer)) = real_binaries(module_path!()) else {
        return;
    };
    require_privileged!();
    let range = FS_FIRST_UID..=FS_LAST_UID;
    let (base, _cleanup) = jail_base("hf", range.clone());
    let mut h = start_pooled(&fc, &jailer, base.path(), &range, 0);
    let base = base.path().to_path_buf();
    // Restarted over a tmpfs run directory, with a pool.
    assert!(h.terminate(), "hearthd exited cleanly\n{}", h.log());
    let run = h.path("run");
    let _tmpfs = Tmpfs::mount(&run);
    let dev = |p: &Path| std::fs::metadata(p).expect("metadata").dev();
    assert_ne!(
        dev(&run),
        dev(&base),
        "the run directory is on its own filesystem"
    );
    set_warm_pool(&h, 1);
    h.launch();

    let members = wait_for_vmms_in(&h, range.clone(), &[FS_FIRST_UID]);
    assert!(run.join(format!(".warm/{FS_FIRST_UID}.fifo")).exists());
    let a = h.create_running("a");
    let pid = a["pid"].as_u64().expect("pid");
    assert_eq!(
        pid,
        members[&FS_FIRST_UID],
        "a took the member\n{}",
        h.log()
    );
    assert!(h.log().contains("took a warm jailed VMM"), "{}", h.log());
    assert!(!h.log().contains("warm VMM not taken"), "{}", h.log());
    let fifo = run.join("a/console.fifo");
    assert!(fifo.exists() && dev(&fifo) == dev(&run));
    assert!(!run.join(format!(".warm/{FS_FIRST_UID}.fifo")).exists());
    let files = jail_files(&base, FS_FIRST_UID);
    assert!(
        files.contains(&"vmlinux".into()) && files.contains(&"rootfs".into()),
        "{files:?}"
    );

    h.kill9();
    h.launch();
    let after = h.ctl_ok(&["vm", "get", "a"]);
    assert_eq!(
        (after["state"].as_str(), after["pid"].as_u64()),
        (Some("running"), Some(pid)),
        "{after}\n{}",
        h.log()
    );
    h.ctl_ok(&["vm", "rm", "a"]);
    assert!(!alive(pid));
    assert_jail_gone(&base, FS_FIRST_UID);
    // Nothing but the refilled member's FIFO directory (`.warm`) in the run directory.
    let pool_only = Leaks {
        run_dirs: 1,
        ..Leaks::none()
    };
    assert!(
        common::wait_until(Duration::from_secs(10), || h.leaks() == pool_only),
        "leaks after delete: {:?}\n{}",
        h.leaks(),
        h.log()
    );
    assert!(run
        .join(format!(".warm/{}.fifo", FS_FIRST_UID + 1))
        .exists());
    // A clean shutdown discards the member and its FIFO directory.
    assert!(h.terminate(), "hearthd exited cleanly\n{}", h.log());
    assert!(vmms_in(range).is_empty());
    assert!(!run.join(".warm").exists());
    assert_jail_gone(&base, FS_FIRST_UID + 1);
}
