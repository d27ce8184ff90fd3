//! Restores and forks of jailed VMs (issues 12 and 16) against the real Firecracker and
//! jailer: each restored VMM runs in a jail of its own, as its own uid, holding its own disk
//! (linked in as `/rootfs` and at the path the state records) and neither the source's disk
//! nor the snapshot's checkpoint; the snapshot's state and memory are linked in read-only,
//! root's and writable by no VM's uid. A restore after the source is deleted, adoption after
//! `kill -9` of hearthd, a failed restore undone, and deletes leaving nothing (jails,
//! cgroups, uids, TAPs, links).
//!
//! No guest kernel boots on the test hosts, so restored VMs end `unready` (no agent takes
//! the new identity), their VMMs loaded and running.
//!
//! Needs `HEARTH_FIRECRACKER_REAL` and the jailer (`HEARTH_JAILER_REAL`, or `jailer` beside
//! that Firecracker); without them it prints a SKIP line. Root only
//! (`HEARTH_REQUIRE_PRIVILEGED=1`).

mod common;
use common::daemon;
use common::jails::*;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use daemon::{HearthHost, Leaks};

/// A range of its own: the test may run beside the other jailer tests.
const FIRST_UID: u32 = 940_200;
const LAST_UID: u32 = 940_209;

/// `vm`'s VMM (`v`, as `vm get` shows it) runs as `uid`, pid 1 of its own pid namespace,
/// chrooted in jail `uid`, in that jail's cgroups.
fn assert_jailed(base: &Path, v: &serde_json::Value, uid: u32) -> u64 {
    let pid = v["pid"].as_u64().unwrap_or_else(|| panic!("no pid: {v}"));
    assert!(alive(pid), "{v}");
    assert_eq!(
        status_field(pid, "Uid"),
        format!("{uid} {uid} {uid} {uid}"),
        "runs as its own uid: {v}"
    );
    assert_eq!(status_field(pid, "Gid"), format!("{uid} {uid} {uid} {uid}"));
    assert!(
        status_field(pid, "NSpid").ends_with(" 1"),
        "own pid namespace"
    );
    assert_eq!(
        inode(Path::new(&format!("/proc/{pid}/root/"))),
        inode(&jail_root(base, uid)),
        "its root is jail {uid}"
    );
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert!(cgroups.contains(&format!("/hearth/{uid}")), "{cgroups}");
    pid
}

/// A VMM restored from snapshot `snap` into jail `uid`: it holds its own disk (the jail's
/// `/rootfs`, also linked at `/snapshot-<snap>.disk`), not `not_disks`; it maps the
/// snapshot's memory through the jail; its vsock socket is the jail's; its TAP is its uid's.
fn assert_restored(h: &HearthHost, base: &Path, v: &serde_json::Value, uid: u32, snap: &str) {
    let pid = assert_jailed(base, v, uid);
    let root = jail_root(base, uid);
    let own = inode(&root.join("rootfs"));
    assert_eq!(
        inode(&root.join(format!("snapshot-{snap}.disk"))),
        own,
        "the state's drive path is the VM's own disk"
    );
    let fds = open_inodes(pid);
    assert!(fds.contains(&own), "holds its own disk");
    let checkpoint = inode(&h.path(&format!("data/snapshots/{snap}/disk.img")));
    assert!(
        !fds.contains(&checkpoint),
        "holds the snapshot's checkpoint"
    );
    assert_ne!(own, checkpoint);
    for f in ["vmstate", "memory"] {
        assert_eq!(
            inode(&root.join(format!("snapshot-{snap}.{f}"))),
            inode(&h.path(&format!("data/snapshots/{snap}/{f}"))),
            "the snapshot's {f} linked in"
        );
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    assert!(
        maps.contains(&format!("/snapshot-{snap}.memory")),
        "the guest memory is mapped from the shared file"
    );
    assert!(root.join("run/v.sock").exists(), "the jail's vsock socket");
    let tap = v["tap"].as_str().expect("tap");
    let owner =
        h.ns.exec_ok(&["cat", &format!("/sys/class/net/{tap}/owner")]);
    assert_eq!(owner.trim(), uid.to_string(), "the TAP is the VM's uid's");
    assert_snapshot_read_only(h, snap);
    // As the VM's uid, in its jail: the shared files read but never written; its disk both.
    for f in ["vmstate", "memory"] {
        let name = format!("snapshot-{snap}.{f}");
        assert!(uid_may_open(&root, &name, uid, false), "{name} unreadable");
        assert!(
            !uid_may_open(&root, &name, uid, true),
            "{name} writable by {uid}"
        );
    }
    assert!(uid_may_open(&root, "rootfs", uid, true), "its own disk");
}

/// Whether `uid` may open `name` in jail `root` for writing (else for reading), as the
/// VMM would: from a thread whose filesystem uid and gid are `uid` (which drops root's
/// file capabilities for that thread only), relative to the jail root opened by root.
fn uid_may_open(root: &Path, name: &str, uid: u32, write: bool) -> bool {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(root).expect("jail root");
    let name = std::ffi::CString::new(name).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setfsgid/setfsuid change this thread's filesystem ids only (raw
            // syscalls, not glibc's process-wide set*id); the thread ends right after.
            unsafe {
                libc::syscall(libc::SYS_setfsgid, uid);
                libc::syscall(libc::SYS_setfsuid, uid);
            }
            let flags = if write {
                libc::O_WRONLY
            } else {
                libc::O_RDONLY
            };
            // SAFETY: a valid directory descriptor and NUL-terminated name.
            let fd =
                unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
            if fd >= 0 {
                // SAFETY: fd was just opened by this thread.
                unsafe { libc::close(fd) };
            }
            fd >= 0
        })
        .join()
        .unwrap()
    })
}

/// The snapshot's state and memory are root's, writable by no other uid, readable through
/// the jails they are linked into; their directory only root enters; the checkpoint is
/// root's alone.
fn assert_snapshot_read_only(h: &HearthHost, snap: &str) {
    let dir = std::fs::metadata(h.path(&format!("data/snapshots/{snap}"))).unwrap();
    assert_eq!((dir.uid(), dir.mode() & 0o777), (0, 0o700));
    for (f, mode) in [("vmstate", 0o444), ("memory", 0o444), ("disk.img", 0o600)] {
        let m = std::fs::metadata(h.path(&format!("data/snapshots/{snap}/{f}"))).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (0, 0, mode), "{f}");
    }
}

/// A failed restore (a state file Firecracker refuses) is undone: the VM `failed`, its VMM gone, no jail or cgroup, its uid given back.
fn failed_restore_is_undone(h: &HearthHost, base: &Path, free_uid: u32) {
    let s2 = h.ctl_ok(&["vm", "snapshot", "b", "--name", "s2"]);
    assert_eq!(s2["state"], "ready", "{s2}\n{}", h.log());
    // A state file whose header is broken (its drive path intact): Firecracker refuses it.
    {
        use std::io::Write;
        let mut f = std::fs::File::options()
            .write(true)
            .open(h.path("data/snapshots/s2/vmstate"))
            .unwrap();
        f.write_all(&[0; 8]).unwrap();
    }
    let out = h.ctl(&[
        "vm",
        "create",
        "e",
        "--from-snapshot",
        "s2",
        "--no-ready-probe",
    ]);
    assert!(!out.status.success(), "{}", h.log());
    let e = h.ctl_ok(&["vm", "get", "e"]);
    assert_eq!(e["state"], "failed", "{e}");
    let why = e["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("Magic value does not match"),
        "Firecracker's refusal: {e}"
    );
    assert!(e["pid"].is_null(), "{e}");
    assert_jail_gone(base, free_uid);
    // Its uid was given back: the next restore is jailed with it.
    h.ctl_ok(&["vm", "rm", "e"]);
    let f = h.ctl_ok(&[
        "vm",
        "create",
        "f",
        "--from-snapshot",
        "s1",
        "--no-ready-probe",
    ]);
    assert_eq!(f["state"], "unready", "{f}\n{}", h.log());
    assert_restored(h, base, &f, free_uid, "s1");
    h.ctl_ok(&["vm", "rm", "f"]);
    assert_jail_gone(base, free_uid);
}

/// Deletes of every VM and snapshot leave nothing: jails, cgroups, snapshot files, TAPs,
/// firewall entries; the uids are given back (a new VM gets the first one).
fn deletes_leave_nothing(h: &HearthHost, base: &Path) {
    // Deletes: nothing left.
    for vm in ["b", "c", "d"] {
        h.ctl_ok(&["vm", "rm", vm]);
    }
    // No jail links the snapshot's files any more.
    for f in ["vmstate", "memory"] {
        let m = std::fs::metadata(h.path(&format!("data/snapshots/s1/{f}"))).unwrap();
        assert_eq!(m.nlink(), 1, "s1/{f} still linked");
    }
    for snap in ["s1", "s2"] {
        h.ctl_ok(&["snapshot", "rm", snap]);
    }
    assert_eq!(h.ctl_ok(&["snapshot", "list"]), serde_json::json!([]));
    for uid in FIRST_UID..=LAST_UID {
        assert_jail_gone(base, uid);
    }
    let left: Vec<_> = std::fs::read_dir(h.path("data/snapshots"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "snapshot files left: {left:?}");
    assert!(
        common::wait_until(Duration::from_secs(10), || h.leaks() == Leaks::none()),
        "leaks: {:?}\n{}",
        h.leaks(),
        h.log()
    );
    // The uids were given back: a new VM gets the first one.
    let g = h.ctl_ok(&[
        "vm",
        "create",
        "g",
        "--kernel",
        "vmlinux",
        "--rootfs",
        "base",
        "--no-ready-probe",
    ]);
    assert_jailed(base, &g, FIRST_UID);
    h.ctl_ok(&["vm", "rm", "g"]);
    assert_jail_gone(base, FIRST_UID);
}

#[test]
fn jailed_vms_restore_and_fork_into_jails_of_their_own() {
    let Some((fc, jailer)) = real_binaries(module_path!()) else {
        return;
    };
    require_privileged!();
    let (base, _cleanup) = jail_base("hr", FIRST_UID..=LAST_UID);
    let jail_cfg = jail_config(&jailer, base.path(), &(FIRST_UID..=LAST_UID));
    let mut h = HearthHost::start_jailed(&fc, &jail_cfg);
    let base = base.path().to_path_buf();
    let a = h.ctl_ok(&[
        "vm",
        "create",
        "a",
        "--kernel",
        "vmlinux",
        "--rootfs",
        "base",
        "--no-ready-probe",
    ]);
    assert_eq!(a["state"], "running", "{a}\n{}", h.log());
    let pid_a = assert_jailed(&base, &a, FIRST_UID);
    let a_disk = inode(&jail_root(&base, FIRST_UID).join("rootfs"));
    let a_files = jail_files(&base, FIRST_UID);
    let s = h.ctl_ok(&["vm", "snapshot", "a", "--name", "s1"]);
    assert_eq!(s["state"], "ready", "{s}\n{}", h.log());

    // Restore: a new uid, a jail of its own.
    let b = h.ctl_ok(&[
        "vm",
        "create",
        "b",
        "--from-snapshot",
        "s1",
        "--no-ready-probe",
    ]);
    assert_eq!(b["state"], "unready", "{b}\n{}", h.log());
    assert_restored(&h, &base, &b, FIRST_UID + 1, "s1");
    let pid_b = b["pid"].as_u64().unwrap();
    assert!(
        !open_inodes(pid_b).contains(&a_disk),
        "holds the source's disk"
    );

    // Fork: a snapshot in a's jail, restored into a third.
    let c = h.ctl_ok(&["vm", "fork", "a", "c"]);
    assert_eq!(c["state"], "unready", "{c}\n{}", h.log());
    assert_restored(&h, &base, &c, FIRST_UID + 2, "c.fork");
    assert!(!open_inodes(c["pid"].as_u64().unwrap()).contains(&a_disk));
    let a2 = h.ctl_ok(&["vm", "get", "a"]);
    assert_eq!(
        (a2["state"].as_str(), a2["pid"].as_u64()),
        (Some("running"), Some(pid_a)),
        "the source runs on: {a2}"
    );
    assert_eq!(
        jail_files(&base, FIRST_UID),
        a_files,
        "nothing of the fork left in the source's jail"
    );

    // Restored jailed VMs are adopted after `kill -9` of hearthd.
    h.kill9();
    h.launch();
    let b2 = h.ctl_ok(&["vm", "get", "b"]);
    assert_eq!(b2["pid"].as_u64(), Some(pid_b), "{b2}\n{}", h.log());
    assert_jailed(&base, &b2, FIRST_UID + 1);

    // Restore after deleting the source: the snapshot stands alone; a's uid is free again.
    h.ctl_ok(&["vm", "rm", "a"]);
    assert_jail_gone(&base, FIRST_UID);
    let d = h.ctl_ok(&[
        "vm",
        "create",
        "d",
        "--from-snapshot",
        "s1",
        "--no-ready-probe",
    ]);
    assert_eq!(d["state"], "unready", "{d}\n{}", h.log());
    assert_restored(&h, &base, &d, FIRST_UID, "s1");

    failed_restore_is_undone(&h, &base, FIRST_UID + 3);

    deletes_leave_nothing(&h, &base);
}
