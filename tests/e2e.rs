//! End-to-end: the real `hearthd` and `hearthctl` binaries, `firecracker-sim` as the VMM,
//! all inside private network namespaces. Lifecycles, DNS, NAT switching, zero leaks after
//! delete, VMs surviving a daemon restart and a `kill -9`, a `kill -9` in the middle of a
//! create and of a delete, and the same-name create race.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools and binaries (ip, mkfs, hearthd, hearthctl) and clean up their own directories"
)]

mod common;
use common::daemon;

use std::time::Duration;

use daemon::{HearthHost, Leaks};

#[test]
fn lifecycle_dns_nat_and_zero_leaks() {
    require_privileged!();
    let h = HearthHost::start(&[], "");
    assert_eq!(h.leaks(), Leaks::none(), "before any VM");

    let web = h.ctl_ok(&[
        "vm", "create", "web", "--kernel", "vmlinux", "--rootfs", "base", "--nat",
    ]);
    assert_eq!(web["state"], "running", "{web}");
    let db = h.ctl_ok(&[
        "vm", "create", "db", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    assert_eq!(db["state"], "running");
    let web_ip = web["guest_ip"].as_str().unwrap().to_owned();
    let db_ip = db["guest_ip"].as_str().unwrap().to_owned();
    assert_ne!(web_ip, db_ip);

    // DNS answers both names; NAT set holds only the NAT-enabled guest.
    assert_eq!(h.dig("web.vm.internal"), web_ip);
    assert_eq!(h.dig("db.vm.internal"), db_ip);
    let l = h.leaks();
    assert_eq!(
        (l.vmm_processes, l.guest_set, l.nat_set),
        (2, 2, 1),
        "{l:?}"
    );

    // NAT switched on a running VM.
    h.ctl_ok(&["vm", "nat", "db", "on"]);
    assert_eq!(h.leaks().nat_set, 2);
    h.ctl_ok(&["vm", "nat", "db", "off"]);
    assert_eq!(h.leaks().nat_set, 1);

    // Stop: the name goes away and the lease is returned; start: back with a lease.
    let stopped = h.ctl_ok(&["vm", "stop", "web"]);
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(h.dig("web.vm.internal"), "");
    assert_eq!(h.leaks().vmm_processes, 1);
    let started = h.ctl_ok(&["vm", "start", "web"]);
    assert_eq!(started["state"], "running");
    assert_eq!(
        h.dig("web.vm.internal"),
        started["guest_ip"].as_str().unwrap()
    );

    // Restart keeps the VM; kill ends it at once.
    assert_eq!(h.ctl_ok(&["vm", "restart", "web"])["state"], "running");
    assert_eq!(h.ctl_ok(&["vm", "kill", "db"])["state"], "stopped");

    h.ctl_ok(&["vm", "rm", "web"]);
    h.ctl_ok(&["vm", "rm", "db"]);
    assert_eq!(h.ctl_ok(&["vm", "list"]), serde_json::json!([]));
    assert!(
        common::wait_until(Duration::from_secs(5), || h.leaks() == Leaks::none()),
        "leaks after delete: {:?}",
        h.leaks()
    );
}

#[test]
fn running_vms_survive_restart_and_kill9() {
    require_privileged!();
    let mut h = HearthHost::start(&[], "");
    let a = h.ctl_ok(&[
        "vm", "create", "a", "--kernel", "vmlinux", "--rootfs", "base", "--nat",
    ]);
    let pid = a["pid"].as_u64().unwrap();

    // A clean restart leaves the VM running and re-adopts it.
    assert!(h.terminate(), "hearthd exits 0 on SIGTERM:\n{}", h.log());
    assert_eq!(h.leaks().vmm_processes, 1, "the VM outlives the daemon");
    h.launch();
    let after = h.ctl_ok(&["vm", "get", "a"]);
    assert_eq!(
        (after["state"].as_str(), after["pid"].as_u64()),
        (Some("running"), Some(pid))
    );

    // So does a kill -9.
    h.kill9();
    h.launch();
    let after = h.ctl_ok(&["vm", "get", "a"]);
    assert_eq!(
        (after["state"].as_str(), after["pid"].as_u64()),
        (Some("running"), Some(pid))
    );
    assert_eq!(h.dig("a.vm.internal"), a["guest_ip"].as_str().unwrap());
    let l = h.leaks();
    assert_eq!(
        (l.vmm_processes, l.guest_set, l.nat_set),
        (1, 1, 1),
        "{l:?}"
    );
    assert_eq!(
        l.taps,
        daemon::POOL + 1,
        "the leased TAP is kept, the pool refilled"
    );

    // A VM whose process died while hearthd was down is marked crashed at restart.
    h.kill9();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    h.launch();
    assert_eq!(h.state("a").as_deref(), Some("crashed"));
    h.ctl_ok(&["vm", "rm", "a"]);
    assert!(
        common::wait_until(Duration::from_secs(5), || h.leaks() == Leaks::none()),
        "{:?}",
        h.leaks()
    );
}

#[test]
fn kill9_mid_create_is_undone_at_restart() {
    require_privileged!();
    // A slow boot gives the test time to kill hearthd while the create is in flight.
    let mut h = HearthHost::start(&[("FC_SIM_BOOT_DELAY_MS", "3000")], "");
    let mut create = std::process::Command::new(env!("CARGO_BIN_EXE_hearthctl"))
        .arg("--socket")
        .arg(h.path("hearthd.sock"))
        .args([
            "vm", "create", "slow", "--kernel", "vmlinux", "--rootfs", "base",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the VMM is spawned but before the create is confirmed.
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            h.state("slow").as_deref() == Some("creating")
                && daemon::vmm_pids(&h.path("run")).len() == 1
        }),
        "never saw the VMM of a creating VM"
    );
    h.kill9();
    let _ = create.wait();
    h.launch();
    assert_eq!(h.state("slow").as_deref(), Some("failed"));
    let l = h.leaks();
    assert_eq!(
        (l.vmm_processes, l.disks, l.guest_set, l.taps),
        (0, 0, 0, daemon::POOL),
        "{l:?}"
    );
    h.ctl_ok(&["vm", "rm", "slow"]);
    // A released TAP goes back to the pool in the background.
    assert!(
        common::wait_until(Duration::from_secs(5), || h.leaks() == Leaks::none()),
        "leaks: {:?}",
        h.leaks()
    );
}

#[test]
fn kill9_mid_delete_is_finished_at_restart() {
    require_privileged!();
    // A guest that ignores Ctrl+Alt+Del makes the delete's stop wait out its grace.
    let mut h = HearthHost::start(&[("FC_SIM_IGNORE_CTRL_ALT_DEL", "1")], "");
    h.ctl_ok(&[
        "vm", "create", "doomed", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    let mut rm = std::process::Command::new(env!("CARGO_BIN_EXE_hearthctl"))
        .arg("--socket")
        .arg(h.path("hearthd.sock"))
        .args(["vm", "rm", "doomed"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        common::wait_until(Duration::from_secs(10), || h.state("doomed").as_deref()
            == Some("deleting")),
        "never saw deleting"
    );
    h.kill9();
    let _ = rm.wait();
    h.launch();
    assert_eq!(h.state("doomed"), None, "the delete was finished");
    assert!(
        common::wait_until(Duration::from_secs(5), || h.leaks() == Leaks::none()),
        "{:?}",
        h.leaks()
    );
}

#[test]
fn same_name_create_race_has_one_winner() {
    require_privileged!();
    let h = HearthHost::start(&[], "");
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hearthctl"))
            .arg("--socket")
            .arg(h.path("hearthd.sock"))
            .args([
                "--json", "vm", "create", "twin", "--kernel", "vmlinux", "--rootfs", "base",
            ])
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    let wins = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(wins, 1, "a: {a:?}\nb: {b:?}");
    let loser = if a.status.success() { &b } else { &a };
    let text = String::from_utf8_lossy(&loser.stdout).to_string()
        + &String::from_utf8_lossy(&loser.stderr);
    assert!(text.contains("already exists"), "{text}");
    assert_eq!(h.ctl_ok(&["vm", "list"]).as_array().unwrap().len(), 1);
}

#[test]
fn crash_is_reported_and_cleaned_up() {
    require_privileged!();
    let h = HearthHost::start(&[("FC_SIM_CRASH_AFTER_MS", "300")], "");
    h.ctl_ok(&[
        "vm",
        "create",
        "c",
        "--kernel",
        "vmlinux",
        "--rootfs",
        "base",
        "--no-ready-probe",
    ]);
    assert!(
        common::wait_until(Duration::from_secs(10), || h.state("c").as_deref()
            == Some("crashed")),
        "state: {:?}",
        h.state("c")
    );
    let vm = h.ctl_ok(&["vm", "get", "c"]);
    assert!(
        vm["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("exit code 1"),
        "{vm}"
    );
    // The lease's TAP goes back (or away) in the background once its pins are removed.
    common::wait_until(Duration::from_secs(5), || h.leaks().taps == daemon::POOL);
    let l = h.leaks();
    assert_eq!(
        (l.vmm_processes, l.guest_set, l.taps),
        (0, 0, daemon::POOL),
        "{l:?}"
    );
    // `hearthctl --json events` prints one JSON event per line.
    let out = h.ctl(&["events"]);
    assert!(out.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["vm"] == "c" && e["state"] == "crashed" && e["reason"] == "crash"),
        "{events:?}"
    );
}

/// A guest whose init (hearth's) reports the command's exit and reboots: the VM is `stopped`,
/// not `crashed`, and both `vm get` and the `stopped` event carry the command's exit status.
#[test]
fn the_commands_exit_status_reaches_the_stopped_event_and_vm_get() {
    require_privileged!();
    let h = HearthHost::start(
        &[
            ("FC_SIM_CRASH_AFTER_MS", "300"),
            ("FC_SIM_CRASH_CODE", "0"),
            (
                "FC_SIM_CONSOLE_AT_EXIT",
                "hearth-init: command exited status=3",
            ),
        ],
        "",
    );
    h.ctl_ok(&[
        "vm",
        "create",
        "s",
        "--kernel",
        "vmlinux",
        "--rootfs",
        "base",
        "--no-ready-probe",
    ]);
    assert!(
        common::wait_until(Duration::from_secs(10), || h.state("s").as_deref()
            == Some("stopped")),
        "state: {:?}",
        h.state("s")
    );
    let vm = h.ctl_ok(&["vm", "get", "s"]);
    assert_eq!(
        vm["exit_status"],
        serde_json::json!({"exited": {"code": 3}}),
        "{vm}"
    );
    let out = h.ctl(&["events"]);
    assert!(out.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["vm"] == "s"
            && e["state"] == "stopped"
            && e["exit_status"] == serde_json::json!({"exited": {"code": 3}})),
        "{events:?}"
    );
}

/// `vm stop` of a guest run by hearth's init (Ctrl+Alt+Del, the command ends, init prints its
/// line and reboots): the `stopped` event and `vm get` carry the command's exit status.
#[test]
fn a_stopped_inits_exit_status_reaches_the_event_and_vm_get() {
    require_privileged!();
    let h = HearthHost::start(
        &[(
            "FC_SIM_CONSOLE_AT_EXIT",
            "hearth-init: command exited signal=15",
        )],
        "",
    );
    h.ctl_ok(&[
        "vm",
        "create",
        "t",
        "--kernel",
        "vmlinux",
        "--rootfs",
        "base",
        "--no-ready-probe",
    ]);
    h.ctl_ok(&["vm", "stop", "t"]);
    assert_eq!(h.state("t").as_deref(), Some("stopped"));
    let want = serde_json::json!({"signaled": {"signal": 15}});
    let vm = h.ctl_ok(&["vm", "get", "t"]);
    assert_eq!(vm["exit_status"], want, "{vm}");
    let out = h.ctl(&["events"]);
    assert!(out.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["vm"] == "t" && e["state"] == "stopped" && e["exit_status"] == want),
        "{events:?}"
    );
}
