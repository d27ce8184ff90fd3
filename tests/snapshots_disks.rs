//! Which disk file each VMM holds around snapshots, restores and forks (issue 12's disk
//! defect): Firecracker's state file names the drive's backing file and a load reopens it, so
//! hearth must snapshot with the drive on the snapshot's own checkpoint and move a restored
//! VM onto its own copy before it runs. Checked by the files each VMM process holds open
//! (`/proc/<pid>/fd`), against `firecracker-sim` and the real Firecracker named by
//! `HEARTH_FIRECRACKER_REAL` (a SKIP line without it; a failure under
//! `HEARTH_REQUIRE_REAL_FIRECRACKER=1`), each hearthd in private network namespaces.
#![expect(
    clippy::disallowed_methods,
    reason = "a test runs hearthctl in the background to cut a snapshot short"
)]

mod common;
use common::daemon;
use common::vmm;

use std::path::{Path, PathBuf};

use daemon::HearthHost;
use serde_json::Value;

/// The regular files process `pid` holds open under `dir`.
fn open_under(pid: u64, dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|p| p.starts_with(dir))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.dedup();
    files
}

fn pid(vm: &Value) -> u64 {
    vm["pid"].as_u64().unwrap_or_else(|| panic!("no pid: {vm}"))
}

/// The one disk file (a VM's disk or a snapshot's checkpoint) VMM `pid` holds: its root
/// drive.
fn drive_of(h: &HearthHost, pid: u64) -> PathBuf {
    let data = h.path("data").canonicalize().unwrap();
    let mut files = open_under(pid, &data.join("disks"));
    // Not the memory file a restored VMM maps (nor the state file, should one be held).
    files.extend(
        open_under(pid, &data.join("snapshots"))
            .into_iter()
            .filter(|p| p.ends_with("disk.img")),
    );
    assert_eq!(files.len(), 1, "one drive file: {files:?}");
    files[0].clone()
}

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

/// A snapshot leaves the source on its own disk; a fork and a restore each hold their own
/// disk (not the source's, not the checkpoint); a snapshot still restores once its source is
/// deleted; a fork, then `rm` of its source, then `rm` of the fork leaves nothing behind.
fn restored_vms_hold_their_own_disks(h: &HearthHost, ready: &str) {
    let data = h.path("data").canonicalize().unwrap();
    let disks = data.join("disks");
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
    let a_disk = drive_of(h, pid(&a));
    assert!(a_disk.starts_with(&disks), "{}", a_disk.display());

    h.ctl_ok(&["vm", "snapshot", "a", "--name", "s1"]);
    assert_eq!(
        drive_of(h, pid(&a)),
        a_disk,
        "the source is back on its disk"
    );
    let checkpoint = data.join("snapshots/s1/disk.img");
    assert!(checkpoint.exists());

    let c = h.ctl_ok(&["vm", "fork", "a", "c"]);
    assert_eq!(c["state"], ready, "{c}");
    let c_disk = drive_of(h, pid(&c));
    assert!(c_disk.starts_with(&disks), "{}", c_disk.display());
    assert_ne!(c_disk, a_disk, "the fork writes its own disk");
    assert_eq!(
        drive_of(h, pid(&a)),
        a_disk,
        "the source is back on its disk"
    );
    // A fork's spec names its own snapshot (`c.fork`, no name a user could give) and the
    // source's images: an update of it is checked without them (found by the API fuzz).
    let c = h.ctl_ok(&["vm", "update", "c", "--label", "k=v"]);
    assert_eq!(c["spec"]["labels"]["k"], "v", "{c}");
    // So is a change of its egress policy (the API fuzz found it answering 400 too).
    h.ctl_ok(&[
        "vm",
        "egress",
        "c",
        "--egress",
        "deny",
        "--allow",
        "10.21.0.0/16",
    ]);
    let c = h.ctl_ok(&["vm", "get", "c"]);
    assert_eq!(c["spec"]["egress"]["mode"], "deny", "{c}");

    // The source goes (its disk with it); its snapshot still restores.
    h.ctl_ok(&["vm", "rm", "a"]);
    assert!(!a_disk.exists());
    let b = h.ctl_ok(&[
        "vm",
        "create",
        "b",
        "--from-snapshot",
        "s1",
        "--no-ready-probe",
    ]);
    assert_eq!(b["state"], ready, "{b}");
    let b_disk = drive_of(h, pid(&b));
    assert!(b_disk.starts_with(&disks), "{}", b_disk.display());
    assert!(![&a_disk, &c_disk, &checkpoint].contains(&&b_disk));

    // The fork outlives its source and goes with its own snapshot.
    assert_eq!(entries(&data.join("snapshots")), ["c.fork", "s1"]);
    h.ctl_ok(&["vm", "rm", "c"]);
    assert_eq!(entries(&data.join("snapshots")), ["s1"]);
    h.ctl_ok(&["vm", "rm", "b"]);
    h.ctl_ok(&["snapshot", "rm", "s1"]);
    assert!(entries(&data.join("snapshots")).is_empty());
    daemon::assert_no_leaks(h);
}

#[test]
fn restored_vms_hold_their_own_disks_sim() {
    require_privileged!();
    let h = HearthHost::start(&[], "");
    // The simulator's own agent has no `reconfigure`: restored guests are unready.
    restored_vms_hold_their_own_disks(&h, "unready");
}

#[test]
fn restored_vms_hold_their_own_disks_real() {
    let Some(real) = vmm::real_firecracker(module_path!()) else {
        return;
    };
    require_privileged!();
    let h = HearthHost::start_with_vmm(&real, &[], "");
    // No guest boots here, so no agent takes the new identity.
    restored_vms_hold_their_own_disks(&h, "unready");
}

/// `kill -9` of hearthd while the source's drive is on the checkpoint (the simulator answers
/// each API call after 400 ms, so the saga is caught between its two `PATCH /drives`): the
/// restarted hearthd moves the drive back onto the VM's own disk before it resumes it, and
/// removes the half-made snapshot.
#[test]
fn a_crash_with_the_drive_on_the_checkpoint_moves_it_back_at_restart() {
    require_privileged!();
    let mut h = HearthHost::start(&[("FC_SIM_API_DELAY_MS", "400")], "");
    let data = h.path("data").canonicalize().unwrap();
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
    let a_disk = drive_of(&h, pid(&a));
    let checkpoint = data.join("snapshots/s1/disk.img");
    let mut snap = std::process::Command::new(env!("CARGO_BIN_EXE_hearthctl"))
        .arg("--socket")
        .arg(h.path("hearthd.sock"))
        .args(["vm", "snapshot", "a", "--name", "s1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        hearth_testkit::wait_until(std::time::Duration::from_secs(20), || {
            open_under(pid(&a), &data).contains(&checkpoint)
        }),
        "the source's drive never reached the checkpoint: {}",
        h.log()
    );
    h.kill9();
    let _ = snap.kill();
    let _ = snap.wait();
    h.launch();
    assert_eq!(h.state("a").as_deref(), Some("running"), "{}", h.log());
    assert_eq!(drive_of(&h, pid(&a)), a_disk, "back on its own disk");
    assert!(!checkpoint.exists());
    assert_eq!(h.ctl_ok(&["snapshot", "list"]), serde_json::json!([]));
    h.ctl_ok(&["vm", "rm", "a"]);
    daemon::assert_no_leaks(&h);
}
