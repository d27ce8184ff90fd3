//! End to end, lifecycle policies: the real `hearthd` and `hearthctl`, `firecracker-sim` as
//! the VMM (its `FC_SIM_CRASH_AFTER_MS` knob crashes every VMM soon after it starts), inside
//! private network namespaces:
//! - `on-failure:2` restarts a crashing VM twice (1 s, then 2 s later), then gives up;
//! - a user stop is never undone by `always`;
//! - after a "host reboot" (every VMM and hearthd killed), `always` VMs come back;
//! - a time limit is enforced across a restart of hearthd (the deadline is stored).

mod common;
use common::daemon;

use std::time::Duration;

use daemon::HearthHost;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

fn create(h: &HearthHost, name: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "vm",
        "create",
        name,
        "--kernel",
        "vmlinux",
        "--rootfs",
        "base",
        "--no-ready-probe",
    ];
    args.extend_from_slice(extra);
    h.ctl_ok(&args)
}

/// The details of `vm`'s events with reason `reason`, oldest first.
fn events(h: &HearthHost, vm: &str, reason: &str) -> Vec<String> {
    let out = h.ctl(&["events"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|v| match v {
            Value::Array(a) => a,
            one => vec![one],
        })
        .filter(|e| e["vm"] == vm && e["reason"] == reason)
        .filter_map(|e| e["detail"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn on_failure_restarts_a_crashing_vm_then_gives_up() {
    require_privileged!();
    let h = HearthHost::start(&[("FC_SIM_CRASH_AFTER_MS", "300")], "");
    create(&h, "a", &["--restart", "on-failure:2"]);
    assert!(
        common::wait_until(Duration::from_secs(20), || events(&h, "a", "policy")
            .iter()
            .any(|e| e.contains("gave up"))),
        "{:?}\n{}",
        events(&h, "a", "policy"),
        h.log()
    );
    assert_eq!(
        events(&h, "a", "policy"),
        [
            "restarting in 1s (attempt 1)",
            "restart attempt 1",
            "restarting in 2s (attempt 2)",
            "restart attempt 2",
            "restart policy on-failure:2 gave up after 2 restarts",
        ]
    );
    let vm = h.ctl_ok(&["vm", "get", "a"]);
    assert_eq!(
        (vm["state"].as_str(), vm["restart_attempts"].as_u64()),
        (Some("crashed"), Some(2)),
        "{vm}"
    );
    h.ctl_ok(&["vm", "rm", "a"]);
}

#[test]
fn a_user_stop_is_not_undone_and_a_host_reboot_brings_always_back() {
    require_privileged!();
    let mut h = HearthHost::start(&[], "");
    create(&h, "stays", &["--restart", "always"]);
    let back = create(&h, "back", &["--restart", "always"]);
    create(&h, "never", &[]);
    h.ctl_ok(&["vm", "stop", "stays"]);
    // A negative check: a restart would come after the first backoff (1 s) at the next
    // policy tick (1 s); nothing observable says it will not, so wait past both.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(h.state("stays").as_deref(), Some("stopped"));

    // The "host reboot": hearthd and every VMM die.
    h.kill9();
    for pid in daemon::vmm_pids(&h.path("run")) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    h.launch();
    assert!(
        common::wait_until(Duration::from_secs(20), || h.state("back").as_deref()
            == Some("running")),
        "{}\n{}",
        h.ctl_ok(&["vm", "get", "back"]),
        h.log()
    );
    let now = h.ctl_ok(&["vm", "get", "back"]);
    assert_ne!(now["pid"], back["pid"], "a new VMM");
    assert!(events(&h, "back", "policy")
        .iter()
        .any(|e| e.starts_with("autostart")));
    assert_eq!(h.state("never").as_deref(), Some("crashed"));
    assert_eq!(h.state("stays").as_deref(), Some("stopped"));
    for vm in ["back", "never", "stays"] {
        if h.state(vm).as_deref() == Some("running") {
            h.ctl_ok(&["vm", "stop", vm]);
        }
        h.ctl_ok(&["vm", "rm", vm]);
    }
}

#[test]
fn a_time_limit_is_enforced_across_a_restart_of_hearthd() {
    require_privileged!();
    let mut h = HearthHost::start(&[], "");
    create(&h, "job", &["--ttl", "4s", "--on-expiry", "delete"]);
    create(&h, "keep", &["--ttl", "4s"]);
    let job = h.ctl_ok(&["vm", "get", "job"]);
    let left = job["time_left_secs"].as_u64();
    assert!(matches!(left, Some(1..=4)), "{left:?}");
    let expires_at = job["expires_at"].as_u64().expect("a deadline");
    h.kill9();
    // The deadlines pass while hearthd is down (the wall clock is the condition).
    assert!(common::wait_until(Duration::from_secs(10), || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            > expires_at
    }));
    h.launch();
    assert!(
        common::wait_until(Duration::from_secs(20), || h.state("job").is_none()
            && h.state("keep").as_deref() == Some("stopped")),
        "job {:?}, keep {:?}\n{}",
        h.state("job"),
        h.state("keep"),
        h.log()
    );
    assert_eq!(
        events(&h, "keep", "expired"),
        ["time limit reached: stopping it"]
    );
    h.ctl_ok(&["vm", "rm", "keep"]);
}

#[test]
fn a_cordon_outlives_a_restart_and_a_drain_stops_every_vm() {
    require_privileged!();
    let mut h = HearthHost::start(&[], "");
    create(&h, "a", &["--restart", "always"]);
    create(&h, "b", &[]);
    h.ctl_ok(&["node", "cordon", "kernel upgrade"]);
    h.kill9();
    h.launch();
    let out = h.ctl(&[
        "vm", "create", "c", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cordoned") && err.contains("kernel upgrade"),
        "{err}"
    );
    assert_eq!(h.ctl_ok(&["health"])["cordoned"], true);

    let node = h.ctl_ok(&["node", "drain", "maintenance"]);
    assert_eq!(
        (
            node["drain"]["total"].as_u64(),
            node["drain"]["stopped"].as_u64()
        ),
        (Some(2), Some(2)),
        "{node}"
    );
    // A negative check, as above: past the first backoff and a tick, nothing restarted.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        h.state("a").as_deref(),
        Some("stopped"),
        "always does not undo a drain"
    );
    assert_eq!(h.state("b").as_deref(), Some("stopped"));
    h.ctl_ok(&["node", "uncordon"]);
    assert_eq!(h.ctl_ok(&["node"])["cordoned"], false);
    for vm in ["a", "b"] {
        h.ctl_ok(&["vm", "rm", vm]);
    }
}
