//! Snapshots of jailed VMMs (issues 12 and 16) against the real Firecracker and jailer: the
//! checkpoint is lent into the source's jail, Firecracker writes the state and memory files
//! there, hearth takes them out to `data_dir/snapshots/<name>/` (root-owned, mode 0600), the
//! source runs on in its jail on its own disk, and nothing of the snapshot stays in the jail.
//! Restores and forks of jailed VMs: `tests/jailer_restore.rs`.
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

/// A range of its own: the test may run beside `jailer_supervisor`.
const FIRST_UID: u32 = 940_100;
const LAST_UID: u32 = 940_109;

/// A failing snapshot of `a` (VMM `pid`, jail files `before`) is undone.
fn undone(h: &HearthHost, base: &Path, pid: u64, before: &[String]) {
    // A failing snapshot is undone: Firecracker (the VM's uid) cannot write a memory file
    // root holds in its jail; the checkpoint is taken back, the half-made files removed, the
    // source runs on its own disk.
    let trap = base.join(format!("firecracker/{FIRST_UID}/root/snapshot-s3.memory"));
    std::fs::write(&trap, b"").unwrap();
    std::fs::set_permissions(&trap, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    let out = h.ctl(&["vm", "snapshot", "a", "--name", "s3"]);
    assert!(!out.status.success(), "{}", h.log());
    assert_eq!(jail_files(base, FIRST_UID), before, "{}", h.log());
    assert!(!h.path("data/snapshots/s3").exists());
    let a3 = h.ctl_ok(&["vm", "get", "a"]);
    assert_eq!(
        (a3["state"].as_str(), a3["pid"].as_u64()),
        (Some("running"), Some(pid)),
        "{a3}"
    );
    let own = inode(&base.join(format!("firecracker/{FIRST_UID}/root/rootfs")));
    assert!(open_inodes(pid).contains(&own), "back on its own disk");
}

#[test]
fn a_jailed_vm_is_snapshotted_in_its_jail() {
    let Some((fc, jailer)) = real_binaries(module_path!()) else {
        return;
    };
    require_privileged!();
    let (base, _cleanup) = jail_base("hs", FIRST_UID..=LAST_UID);
    let jail_cfg = jail_config(&jailer, base.path(), &(FIRST_UID..=LAST_UID));
    let h = HearthHost::start_jailed(&fc, &jail_cfg);
    let base = base.path().to_path_buf();
    let a = h.create_running("a");
    let pid = a["pid"].as_u64().expect("pid");
    let before = jail_files(&base, FIRST_UID);

    let s = h.ctl_ok(&["vm", "snapshot", "a", "--name", "s1"]);
    assert_eq!(s["state"], "ready", "{s}\n{}", h.log());
    let a2 = h.ctl_ok(&["vm", "get", "a"]);
    assert_eq!(
        (a2["state"].as_str(), a2["pid"].as_u64()),
        (Some("running"), Some(pid)),
        "the source runs on in its jail: {a2}"
    );
    // The files are out of the jail, root's alone: the VM's uid can neither change nor read them.
    for f in ["vmstate", "memory", "disk.img"] {
        let p = h.path(&format!("data/snapshots/s1/{f}"));
        let m = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!((m.uid(), m.gid()), (0, 0), "{f} root-owned");
        assert_eq!(m.mode() & 0o077, 0, "{f} mode {:o}", m.mode());
    }
    assert!(
        std::fs::metadata(h.path("data/snapshots/s1/memory"))
            .unwrap()
            .len()
            > 0
    );
    assert_eq!(
        jail_files(&base, FIRST_UID),
        before,
        "nothing of the snapshot left in the jail"
    );
    // The state names the checkpoint at its in-jail path (where a restore's jail will put it).
    let state = std::fs::read(h.path("data/snapshots/s1/vmstate")).unwrap();
    let needle = b"/snapshot-s1.disk";
    assert!(
        state.windows(needle.len()).any(|w| w == needle),
        "the state file names the lent checkpoint"
    );
    // The VMM holds its own disk again, nothing of the snapshot.
    let fds = open_inodes(pid);
    for f in ["vmstate", "memory", "disk.img"] {
        let snap = inode(&h.path(&format!("data/snapshots/s1/{f}")));
        assert!(!fds.contains(&snap), "the VMM holds the snapshot's {f}");
    }
    let own = inode(&base.join(format!("firecracker/{FIRST_UID}/root/rootfs")));
    assert!(fds.contains(&own), "the VMM holds its own disk");

    // A second snapshot of the same VM, while paused and left paused: the same handoff.
    h.ctl_ok(&["vm", "pause", "a"]);
    let s2 = h.ctl_ok(&["vm", "snapshot", "a", "--name", "s2", "--leave", "paused"]);
    assert_eq!(s2["state"], "ready", "{s2}\n{}", h.log());
    assert_eq!(jail_files(&base, FIRST_UID), before);
    h.ctl_ok(&["vm", "resume", "a"]);

    undone(&h, &base, pid, &before);

    // Deletes: nothing left.
    h.ctl_ok(&["snapshot", "rm", "s1"]);
    h.ctl_ok(&["snapshot", "rm", "s2"]);
    h.ctl_ok(&["vm", "rm", "a"]);
    assert!(!base.join(format!("firecracker/{FIRST_UID}")).exists());
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
}
