//! End-to-end regressions of the supervisor's restart and stop bookkeeping: the real `hearthd`
//! and `hearthctl`, `firecracker-sim` as the VMM, inside private network namespaces.
//! - a stop that never ran (a restart refused) does not hide a later crash of the VMM;
//! - after a `kill -9` in the middle of a stop, the restarted hearthd serves at once while the
//!   interrupted stop finishes in the background (and an exit meanwhile is its outcome);
//! - VMs repaired at restart lose the sockets and FIFO of their dead process;
//! - a stray VMM using a leaked run directory is killed at restart and the directory removed;
//! - a delete by a hearthd with no Firecracker binary still removes the VM's run directory.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools and binaries (ip, mkfs, hearthd, hearthctl) and clean up their own directories"
)]

mod common;
use common::daemon;
use hearth_testkit::fc_sim;

use std::time::Duration;

use daemon::{HearthHost, Leaks};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn signal(pid: u64, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).expect("signal the VMM");
}

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Replaces `from` by `to` in hearthd's config; read at the next launch.
fn edit_config(h: &HearthHost, from: &str, to: &str) {
    let path = h.path("hearthd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} not in the config:\n{text}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

/// Runs `hearthctl vm <args>` without waiting for it.
fn ctl_in_background(h: &HearthHost, args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_hearthctl"))
        .arg("--socket")
        .arg(h.path("hearthd.sock"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// A restart whose boot half is refused (its kernel image vanished from the store) never ran
/// its stop. The VMM was once marked as "being stopped" for good, so its later death went
/// unnoticed and the VM showed `running` with no process.
#[test]
fn a_refused_restart_does_not_hide_a_later_crash() {
    require_privileged!();
    let h = HearthHost::start(&[], "");
    let vm = h.ctl_ok(&[
        "vm",
        "create",
        "a",
        "--kernel",
        "vmlinux",
        "--rootfs",
        "base",
        "--no-ready-probe",
    ]);
    let pid = vm["pid"].as_u64().unwrap();
    // The image disappears behind hearthd's back (an operator's `rm -r`).
    std::fs::remove_dir_all(h.path("data/images/vmlinux")).unwrap();
    let out = h.ctl(&["vm", "restart", "a"]);
    assert!(!out.status.success(), "the restart cannot boot");
    let vm = h.ctl_ok(&["vm", "get", "a"]);
    assert_eq!(
        (vm["state"].as_str(), vm["pid"].as_u64()),
        (Some("running"), Some(pid)),
        "a refused restart leaves the VM as it was: {vm}"
    );

    signal(pid, Signal::SIGKILL);
    assert!(
        common::wait_until(Duration::from_secs(10), || h.state("a").as_deref()
            == Some("crashed")),
        "the crash was not recorded: {}",
        h.ctl_ok(&["vm", "get", "a"])
    );
    let l = h.leaks();
    assert_eq!(
        (l.vmm_processes, l.guest_set, l.taps),
        (0, 0, daemon::POOL),
        "{l:?}"
    );
}

/// `kill -9` of hearthd while a stop waits out a long Ctrl+Alt+Del grace (the guest ignores
/// it). The restarted hearthd answers its API and DNS at once (`launch` gives it 30 s; the
/// grace is 300 s), the VM reads `stopping` with its process alive, and when the process
/// exits (here: SIGTERM from outside) the stop records `stopped` and gives everything back.
#[test]
fn an_interrupted_stop_finishes_in_the_background_after_a_restart() {
    require_privileged!();
    let mut h = HearthHost::start(&[("FC_SIM_IGNORE_CTRL_ALT_DEL", "1")], "");
    h.kill9();
    edit_config(&h, "shutdown_grace_secs = 2", "shutdown_grace_secs = 300");
    h.launch();
    let other = h.ctl_ok(&[
        "vm", "create", "other", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    let vm = h.ctl_ok(&[
        "vm", "create", "slow", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    let pid = vm["pid"].as_u64().unwrap();
    let mut stop = ctl_in_background(&h, &["vm", "stop", "slow"]);
    assert!(
        common::wait_until(Duration::from_secs(10), || h.state("slow").as_deref()
            == Some("stopping")),
        "never saw stopping"
    );
    h.kill9();
    let _ = stop.kill();
    let _ = stop.wait();

    h.launch();
    let vm = h.ctl_ok(&["vm", "get", "slow"]);
    assert_eq!(vm["state"], "stopping", "{vm}");
    assert!(alive(pid), "the ladder is still waiting for the guest");
    assert_eq!(
        h.dig("other.vm.internal"),
        other["guest_ip"].as_str().unwrap(),
        "DNS serves while the stop runs"
    );
    assert_eq!(
        h.ctl_ok(&["vm", "get", "other"])["state"],
        "running",
        "the other VM was adopted"
    );
    signal(pid, Signal::SIGTERM);
    assert!(
        common::wait_until(Duration::from_secs(10), || h.state("slow").as_deref()
            == Some("stopped")),
        "state: {:?}\n{}",
        h.state("slow"),
        h.log()
    );
    // `stopped` is recorded when the VMM exits; the adopted VMM is init's child, and a
    // loaded host may show it as a zombie for a moment after that.
    let counts = |l: Leaks| (l.vmm_processes, l.guest_set, l.taps);
    assert!(
        common::wait_until(Duration::from_secs(10), || counts(h.leaks())
            == (1, 1, daemon::POOL + 1)),
        "only the other VM holds a process, a TAP and a firewall entry: {:?}",
        h.leaks()
    );
    h.ctl_ok(&["vm", "rm", "slow"]);
    // Its guest ignores Ctrl+Alt+Del too: killed, not waited for.
    h.ctl_ok(&["vm", "kill", "other"]);
    h.ctl_ok(&["vm", "rm", "other"]);
    assert!(
        common::wait_until(Duration::from_secs(20), || h.leaks() == Leaks::none()),
        "{:?}",
        h.leaks()
    );
}

/// A VM whose process died while hearthd was down is repaired to `crashed` at restart; its
/// run directory keeps the logs but not `api.sock`, `v.sock` or `console.fifo`.
#[test]
fn vms_repaired_at_restart_lose_their_stale_sockets() {
    require_privileged!();
    let mut h = HearthHost::start(&[], "");
    let vm = h.ctl_ok(&[
        "vm", "create", "a", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    let pid = vm["pid"].as_u64().unwrap();
    h.kill9();
    signal(pid, Signal::SIGKILL);
    assert!(common::wait_until(Duration::from_secs(5), || !alive(pid)));
    let run = h.path("run/a");
    let files = ["api.sock", "v.sock", "console.fifo"];
    for f in files {
        assert!(run.join(f).exists(), "{f} is left by a killed VMM");
    }

    h.launch();
    assert_eq!(h.state("a").as_deref(), Some("crashed"));
    for f in files {
        assert!(!run.join(f).exists(), "{f} is still in {}", run.display());
    }
    assert!(run.join("console.log").exists(), "the logs stay");
    h.ctl_ok(&["vm", "rm", "a"]);
    // A released TAP goes back to the pool in the background.
    assert!(
        common::wait_until(Duration::from_secs(5), || h.leaks() == Leaks::none()),
        "leaks: {:?}",
        h.leaks()
    );
}

/// A VMM that uses the run directory of a VM hearthd does not know (spawned, say, just before
/// a crash wiped its record) is a stray: at restart it is killed, by the actor owning that run
/// directory, and the leaked directory is removed, while an adopted VM keeps running.
#[test]
fn a_stray_vmm_and_its_leaked_run_directory_are_swept_at_restart() {
    require_privileged!();
    let mut h = HearthHost::start(&[], "");
    let vm = h.ctl_ok(&[
        "vm", "create", "a", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    let pid = vm["pid"].as_u64().unwrap();
    h.kill9();
    let ghost = h.path("run/ghost");
    std::fs::create_dir_all(&ghost).unwrap();
    let mut stray = std::process::Command::new(fc_sim::sim_binary())
        .arg("--api-sock")
        .arg(ghost.join("api.sock"))
        .arg("--id")
        .arg("ghost")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        common::wait_until(Duration::from_secs(5), || ghost.join("api.sock").exists()),
        "the stray VMM serves its API"
    );

    h.launch();
    assert!(
        common::wait_until(Duration::from_secs(5), || stray
            .try_wait()
            .unwrap()
            .is_some()),
        "the stray VMM was killed"
    );
    assert!(!ghost.exists(), "the leaked run directory is removed");
    assert_eq!(h.state("a").as_deref(), Some("running"));
    assert!(alive(pid), "the adopted VMM is not a stray");
    h.ctl_ok(&["vm", "rm", "a"]);
    // The released TAP goes back to the pool in the background.
    assert!(
        common::wait_until(Duration::from_secs(5), || h.leaks() == Leaks::none()),
        "leaks: {:?}",
        h.leaks()
    );
}

/// A stopped VM deleted by a hearthd restarted without a usable Firecracker binary: no process
/// actor can be made then, but removing files needs none, so the run directory goes with the
/// VM. It used to stay until a later hearthd with a binary swept it.
#[test]
fn a_delete_without_a_firecracker_binary_removes_the_run_directory() {
    require_privileged!();
    let mut h = HearthHost::start(&[], "");
    h.ctl_ok(&[
        "vm", "create", "a", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    h.ctl_ok(&["vm", "stop", "a"]);
    let run = h.path("run/a");
    assert!(
        run.join("console.log").exists(),
        "a stopped VM keeps its logs"
    );
    assert!(h.terminate(), "hearthd exits cleanly");

    let sim = format!("firecracker_bin = \"{}\"", fc_sim::sim_binary().display());
    edit_config(&h, &sim, "firecracker_bin = \"/nonexistent/firecracker\"");
    h.launch();
    assert!(
        h.log().contains("no usable Firecracker binary"),
        "{}",
        h.log()
    );
    assert_eq!(h.state("a").as_deref(), Some("stopped"));
    h.ctl_ok(&["vm", "rm", "a"]);
    assert!(!run.exists(), "{} is left:\n{}", run.display(), h.log());
    assert!(
        common::wait_until(Duration::from_secs(5), || h.leaks() == Leaks::none()),
        "leaks: {:?}",
        h.leaks()
    );
}
