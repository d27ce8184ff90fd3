//! A jailed fork with `[snapshots] fork_memory_dir` on another filesystem than the jails (a
//! tmpfs under `/dev/shm`), against the real Firecracker and jailer: the source's VMM writes
//! the memory in its jail, hearth moves it out (a copy across filesystems) to the fork memory
//! directory, and the fork's jail holds it through a read-only bind mount (no hard link can
//! cross filesystems), readable but never writable by the fork's uid, mapped by its VMM.
//! Deleting the fork removes the file, its jail and the snapshot's directory.
//!
//! Needs `HEARTH_FIRECRACKER_REAL` and the jailer (`HEARTH_JAILER_REAL`); without them it
//! prints a SKIP line. Root only (`HEARTH_REQUIRE_PRIVILEGED=1`).

mod common;
use common::daemon;
use common::jails::*;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use daemon::{HearthHost, Leaks};

/// A range of its own: the test may run beside the other jailer tests.
const FIRST_UID: u32 = 940_300;
const LAST_UID: u32 = 940_304;

#[test]
fn a_jailed_fork_maps_its_memory_from_fork_memory_dir_on_another_filesystem() {
    let Some((fc, jailer)) = real_binaries(module_path!()) else {
        return;
    };
    require_privileged!();
    let base = tempfile::Builder::new()
        .prefix("hfm")
        .tempdir_in("/tmp")
        .unwrap();
    let shm = tempfile::Builder::new()
        .prefix("hfm")
        .tempdir_in("/dev/shm")
        .unwrap();
    let mem = shm.path().join("forks");
    let _cleanup = JailedVmms {
        uids: FIRST_UID..=LAST_UID,
    };
    let cfg = format!(
        "{}\n[snapshots]\nfork_memory_dir = \"{}\"\n",
        jail_config(&jailer, base.path(), &(FIRST_UID..=LAST_UID)),
        mem.display()
    );
    let h = HearthHost::start_jailed(&fc, &cfg);
    let base = base.path().to_path_buf();
    h.create_running("a");
    let a_files = jail_files(&base, FIRST_UID);
    assert_ne!(
        std::fs::metadata(shm.path()).unwrap().dev(),
        std::fs::metadata(&base).unwrap().dev(),
        "another filesystem than the jails"
    );

    let c = h.ctl_ok(&["vm", "fork", "a", "c"]);
    // No guest boots here: the fork loads and runs, its agent never answers.
    assert_eq!(c["state"], "unready", "{c}\n{}", h.log());
    let file = mem.join("c.fork.memory");
    let m = std::fs::metadata(&file).expect("the memory file is in fork_memory_dir");
    assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o444), "root's, read-only");
    assert_eq!(m.len(), 128 << 20);
    let d = std::fs::metadata(&mem).unwrap();
    assert_eq!((d.uid(), d.mode() & 0o777), (0, 0o700));
    assert!(
        !h.path("data/snapshots/c.fork/memory").exists(),
        "not in the snapshot's directory"
    );
    assert_eq!(
        jail_files(&base, FIRST_UID),
        a_files,
        "nothing of the fork left in the source's jail"
    );
    let pid = c["pid"].as_u64().expect("pid");
    let root = jail_root(&base, FIRST_UID + 1);
    let in_jail = root.join("snapshot-c.fork.memory");
    assert_eq!(inode(&in_jail), inode(&file), "the same file, bind-mounted");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    assert!(maps.contains("/snapshot-c.fork.memory"), "{maps}");
    let a2 = h.ctl_ok(&["vm", "get", "a"]);
    assert_eq!(a2["state"], "running", "{a2}");

    h.ctl_ok(&["vm", "rm", "c"]);
    assert_jail_gone(&base, FIRST_UID + 1);
    assert!(!file.exists(), "removed with the fork");
    let left: Vec<_> = std::fs::read_dir(&mem)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    h.ctl_ok(&["vm", "rm", "a"]);
    assert_jail_gone(&base, FIRST_UID);
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
