//! `[snapshots] fork_memory_dir` end to end: the real `hearthd` and `hearthctl`, `firecracker-sim`
//! as the VMM (with the real agent), inside private network namespaces.
//! - a fork writes its memory file there (its state and disk checkpoint stay in
//!   `data/snapshots/<fork>.fork/`), the fork runs, and deleting it leaves both directories empty;
//! - after a "reboot" (hearthd and the fork's VMM killed, the memory file gone) hearthd starts,
//!   marks the snapshot `lost` with an event on the fork, the fork starts cold from its own disk,
//!   and deleting it removes everything.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real binaries (hearthd, hearthctl) and remove the files a reboot would lose"
)]

mod common;
use common::daemon;

use std::path::Path;
use std::time::Duration;

use daemon::HearthHost;
use hearth_testkit::wait_until;

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// hearthd with the real agent in the simulated guests and its fork memory in `mem`.
fn start(mem: &Path) -> HearthHost {
    let agent = hearth_testkit::fc_sim::agent_binary();
    HearthHost::start(
        &[
            ("FC_SIM_AGENT_BIN", agent.to_str().unwrap()),
            ("FC_SIM_IDENTITY_FILE", "1"),
        ],
        &format!("\n[snapshots]\nfork_memory_dir = \"{}\"\n", mem.display()),
    )
}

#[test]
fn a_fork_keeps_its_memory_in_fork_memory_dir_and_takes_it_away() {
    require_privileged!();
    let tmp = tempfile::tempdir().unwrap();
    // Not there yet: the first fork makes it.
    let mem = tmp.path().join("forks");
    let h = start(&mem);
    let snaps = h.path("data/snapshots");
    h.create_running("a");
    let c = h.ctl_ok(&["vm", "fork", "a", "c"]);
    assert_eq!(c["state"], "running", "{c}\n{}", h.log());
    assert_eq!(h.state("a").as_deref(), Some("running"));
    assert_eq!(entries(&mem), ["c.fork.memory"]);
    assert_eq!(entries(&snaps.join("c.fork")), ["disk.img", "vmstate"]);
    let snap = h.ctl_ok(&["snapshot", "get", "c.fork"]);
    assert_eq!(snap["state"], "ready", "{snap}");
    // A user's snapshot keeps its memory with its other files.
    h.ctl_ok(&["vm", "snapshot", "a", "--name", "s1"]);
    assert_eq!(
        entries(&snaps.join("s1")),
        ["disk.img", "memory", "vmstate"]
    );
    assert_eq!(entries(&mem), ["c.fork.memory"]);
    h.ctl_ok(&["vm", "rm", "c"]);
    assert!(entries(&mem).is_empty(), "{:?}", entries(&mem));
    assert_eq!(entries(&snaps), ["s1"]);
    h.ctl_ok(&["snapshot", "rm", "s1"]);
    h.ctl_ok(&["vm", "rm", "a"]);
    assert!(entries(&snaps).is_empty());
    daemon::assert_no_leaks(&h);
}

#[test]
fn after_a_reboot_the_fork_snapshot_is_lost_and_the_fork_starts_cold() {
    require_privileged!();
    let tmp = tempfile::tempdir().unwrap();
    let mem = tmp.path().join("forks");
    let mut h = start(&mem);
    let snaps = h.path("data/snapshots");
    h.create_running("a");
    let d = h.ctl_ok(&["vm", "fork", "a", "d"]);
    let pid = d["pid"].as_u64().expect("the fork runs");
    // A reboot: every process gone, and the tmpfs with them.
    h.kill9();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    assert!(wait_until(Duration::from_secs(5), || !Path::new(&format!(
        "/proc/{pid}"
    ))
    .exists()));
    std::fs::remove_file(mem.join("d.fork.memory")).unwrap();
    h.launch();
    let snap = h.ctl_ok(&["snapshot", "get", "d.fork"]);
    assert_eq!(snap["state"], "lost", "{snap}\n{}", h.log());
    let out = h.ctl(&["events"]);
    let events = String::from_utf8_lossy(&out.stdout);
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"vm\":\"d\"") && l.contains("lost its memory file")),
        "{events}"
    );
    // Still the fork's: not removable while it exists.
    let out = h.ctl(&["snapshot", "rm", "d.fork"]);
    assert_eq!(out.status.code(), Some(1));
    // The fork boots cold from its own disk (its memory is gone).
    assert_ne!(h.state("d").as_deref(), Some("running"));
    let started = h.ctl_ok(&["vm", "start", "d"]);
    assert_eq!(started["state"], "running", "{started}\n{}", h.log());
    h.ctl_ok(&["vm", "rm", "d"]);
    let out = h.ctl(&["snapshot", "get", "d.fork"]);
    assert_eq!(out.status.code(), Some(1), "removed with the fork");
    assert!(entries(&snaps).is_empty(), "{:?}", entries(&snaps));
    assert!(entries(&mem).is_empty(), "{:?}", entries(&mem));
    h.ctl_ok(&["vm", "rm", "a"]);
    daemon::assert_no_leaks(&h);
}

/// The fork memory directory changed under a running hearthd into one others can reach (a
/// symlink, mode 0777, another owner): each fork is refused naming
/// `snapshots.fork_memory_dir`, and nothing changes (no fork, no snapshot, the source runs,
/// nothing written there). A memory file's name planted as a symlink in hearthd's own
/// directory is unlinked, never written through.
#[test]
fn forks_refuse_a_fork_memory_dir_that_is_not_hearthds_own() {
    use std::os::unix::fs::PermissionsExt;
    require_privileged!();
    let tmp = tempfile::tempdir().unwrap();
    let mem = tmp.path().join("forks");
    let h = start(&mem);
    h.create_running("a");
    // hearthd makes its directory at the first fork; this one is a stranger's.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &mem).unwrap();
    let refused = |why: &str| {
        let out = h.ctl(&["vm", "fork", "a", "b"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{err}");
        assert!(
            err.contains("snapshots.fork_memory_dir") && err.contains(why),
            "{why}: {err}\n{}",
            h.log()
        );
        assert_eq!(h.state("a").as_deref(), Some("running"));
        assert_eq!(h.state("b"), None);
        assert_eq!(h.ctl(&["snapshot", "get", "b.fork"]).status.code(), Some(1));
        assert!(entries(&h.path("data/snapshots")).is_empty());
    };
    refused("symbolic link");
    assert!(entries(&elsewhere).is_empty());
    std::fs::remove_file(&mem).unwrap();
    std::fs::create_dir(&mem).unwrap();
    std::fs::set_permissions(&mem, std::fs::Permissions::from_mode(0o777)).unwrap();
    refused("mode 0777");
    std::fs::set_permissions(&mem, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&mem, Some(900_003), Some(900_003)).unwrap();
    refused("uid 900003");
    assert!(entries(&mem).is_empty());
    std::os::unix::fs::chown(&mem, Some(0), Some(0)).unwrap();

    // Its own again, with the fork's memory file's name planted as a symlink.
    let precious = tmp.path().join("precious");
    std::fs::write(&precious, b"keep").unwrap();
    std::os::unix::fs::symlink(&precious, mem.join("b.fork.memory")).unwrap();
    let b = h.ctl_ok(&["vm", "fork", "a", "b"]);
    assert_eq!(b["state"], "running", "{b}\n{}", h.log());
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep");
    let meta = mem.join("b.fork.memory").symlink_metadata().unwrap();
    assert!(meta.is_file(), "{meta:?}");
    h.ctl_ok(&["vm", "rm", "b"]);
    h.ctl_ok(&["vm", "rm", "a"]);
    assert!(entries(&mem).is_empty(), "{:?}", entries(&mem));
    daemon::assert_no_leaks(&h);
}
