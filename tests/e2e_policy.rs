//! End to end, lifecycle policies: the real `hearthd` and `hearthctl`, `firecracker-sim` as
//! the VMM (its `FC_SIM_CRASH_AFTER_MS` knob crashes every VMM soon after it starts), inside
//! private network namespaces:
//! - `on-failure:2` restarts a crashing VM twice (1 s, then 2 s later), then gives up;
//! - a user stop is never undone by `always`;
//! - after a "host reboot" (every VMM and hearthd killed), `always` VMs come back;
//! - a time limit is enforced across a restart of hearthd (the deadline is stored);
//! - a restart pending at a `kill -9` of hearthd keeps its backoff (the due time is stored);
//! - a `kill -9` between an expiry's snapshot and its stop: the snapshot is found, not retaken;
//! - `always` brings back a guest that powered itself off (`FC_SIM_CRASH_CODE=0`: the VMM
//!   exits 0, as Firecracker does when the guest reboots, e.g. hearth's init after its
//!   command ended), `on-failure` leaves it stopped;
//! - `--on-expiry snapshot` snapshots then stops, the snapshot restorable; a `--snapshot`
//!   drain does the same to every running VM, and one whose snapshot fails is stopped all
//!   the same, the reason in its `drain` event;
//! - a drain cut short by a `kill -9` of hearthd is resumed by the next hearthd: no VM is
//!   stopped twice, and a `--snapshot` drain takes each VM's snapshot once.
//!
//! A check that something did NOT happen (no restart after a user stop or a drain) waits,
//! within a bound, until the policy loop has made a few passes after the event (its
//! `policy_ticks` in `GET /v1/node`), rather than sleeping a guessed while.

mod common;
use common::daemon;

use std::time::Duration;

use daemon::HearthHost;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

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

/// Passes the policy loop has made since hearthd started.
fn policy_ticks(h: &HearthHost) -> u64 {
    let node = h.ctl_ok(&["node"]);
    node["policy_ticks"]
        .as_u64()
        .unwrap_or_else(|| panic!("no policy_ticks in {node}"))
}

/// Passes of the policy loop (1 s apart, the default `[policy] tick_ms`) after which anything
/// the restart policy would do after an event has been done: a restart decided at the event
/// is due one backoff (1 s) later and made by the first pass after that; three passes after
/// the event span at least two seconds.
const WINDOW_TICKS: u64 = 3;

/// The negative window: waits (at most 30 s, which only a stalled loop exceeds) until the
/// policy loop has made [`WINDOW_TICKS`] passes after now.
fn let_the_policy_loop_run(h: &HearthHost) {
    let from = policy_ticks(h);
    assert!(
        common::wait_until(Duration::from_secs(30), || policy_ticks(h)
            >= from + WINDOW_TICKS),
        "the policy loop made {} passes since {from}\n{}",
        policy_ticks(h),
        h.log()
    );
}

#[test]
fn on_failure_restarts_a_crashing_vm_then_gives_up() {
    require_privileged!();
    let h = HearthHost::start(&[("FC_SIM_CRASH_AFTER_MS", "300")], "");
    h.create_test_vm("a", &["--restart", "on-failure:2"]);
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
    h.create_test_vm("stays", &["--restart", "always"]);
    let back = h.create_test_vm("back", &["--restart", "always"]);
    h.create_test_vm("never", &[]);
    h.ctl_ok(&["vm", "stop", "stays"]);
    let_the_policy_loop_run(&h);
    assert_eq!(h.state("stays").as_deref(), Some("stopped"));
    assert_eq!(events(&h, "stays", "policy"), Vec::<String>::new());

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
    h.create_test_vm("job", &["--ttl", "4s", "--on-expiry", "delete"]);
    h.create_test_vm("keep", &["--ttl", "4s"]);
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
    // The stop is the expiry's, not a user's.
    assert_eq!(stop_reasons(&h, "keep"), ["expired", "expired"]);
    h.ctl_ok(&["vm", "rm", "keep"]);
}

#[test]
fn a_cordon_outlives_a_restart_and_a_drain_stops_every_vm() {
    require_privileged!();
    let mut h = HearthHost::start(&[], "");
    h.create_test_vm("a", &["--restart", "always"]);
    h.create_test_vm("b", &[]);
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
    let_the_policy_loop_run(&h);
    assert_eq!(
        h.state("a").as_deref(),
        Some("stopped"),
        "always does not undo a drain"
    );
    assert_eq!(events(&h, "a", "policy"), Vec::<String>::new());
    assert_eq!(h.state("b").as_deref(), Some("stopped"));
    // The drain's stops are the drain's, not a user's.
    for vm in ["a", "b"] {
        assert_eq!(stop_reasons(&h, vm), ["drain", "drain"], "{vm}");
    }
    h.ctl_ok(&["node", "uncordon"]);
    assert_eq!(h.ctl_ok(&["node"])["cordoned"], false);
    for vm in ["a", "b"] {
        h.ctl_ok(&["vm", "rm", vm]);
    }
}

/// The reasons of `vm`'s transitions into `stopping` and `stopped`, oldest first (the
/// `drain: ...` and `time limit reached: ...` reports left out).
fn stop_reasons(h: &HearthHost, vm: &str) -> Vec<String> {
    all_events(h, vm)
        .into_iter()
        .filter(|(state, _, _)| state == "stopping" || state == "stopped")
        .filter(|(_, _, d)| !d.starts_with("drain: ") && !d.starts_with("time limit reached"))
        .map(|(_, reason, _)| reason)
        .collect()
}

/// Every event of `vm` as (state, reason, detail), oldest first.
fn all_events(h: &HearthHost, vm: &str) -> Vec<(String, String, String)> {
    let out = h.ctl(&["events"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|v| match v {
            Value::Array(a) => a,
            one => vec![one],
        })
        .filter(|e| e["vm"] == vm)
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("state"), s("reason"), s("detail"))
        })
        .collect()
}

#[test]
fn always_brings_back_a_guest_that_powered_itself_off() {
    require_privileged!();
    // Every guest powers off 1.5 s after it starts: the VMM exits with status 0.
    let h = HearthHost::start(
        &[
            ("FC_SIM_CRASH_AFTER_MS", "1500"),
            ("FC_SIM_CRASH_CODE", "0"),
        ],
        "",
    );
    h.create_test_vm("back", &["--restart", "always"]);
    h.create_test_vm("stays", &["--restart", "on-failure"]);
    // `back` shuts down, is restarted after 1 s, and runs again.
    let came_back = |h: &HearthHost| {
        let ev = all_events(h, "back");
        ev.iter()
            .position(|(_, r, d)| r == "policy" && d == "restart attempt 1")
            .is_some_and(|i| ev[i..].iter().any(|(s, _, _)| s == "running"))
    };
    assert!(
        common::wait_until(Duration::from_secs(20), || came_back(&h)),
        "{:?}\n{}",
        all_events(&h, "back"),
        h.log()
    );
    let back = all_events(&h, "back");
    assert!(
        back.iter()
            .any(|(s, _, d)| s == "stopped" && d == "the guest shut down"),
        "{back:?}"
    );
    // `on-failure` does not restart a guest that shut itself down.
    assert!(common::wait_until(Duration::from_secs(10), || h
        .state("stays")
        .as_deref()
        == Some("stopped")));
    assert_eq!(events(&h, "stays", "policy"), Vec::<String>::new());
    for vm in ["back", "stays"] {
        let _ = h.ctl(&["vm", "stop", vm]);
        h.ctl_ok(&["vm", "rm", vm]);
    }
}

#[test]
fn expiry_snapshots_then_stops_and_the_snapshot_restores() {
    require_privileged!();
    // The real agent in the simulated guest, which a restore's `reconfigure` needs.
    let agent = hearth_testkit::fc_sim::agent_binary();
    let h = HearthHost::start(
        &[
            ("FC_SIM_AGENT_BIN", agent.to_str().unwrap()),
            ("FC_SIM_IDENTITY_FILE", "1"),
        ],
        "",
    );
    h.create_test_vm("job", &["--ttl", "3s", "--on-expiry", "snapshot"]);
    assert!(
        common::wait_until(Duration::from_secs(20), || events(&h, "job", "expired")
            .len()
            == 2),
        "{:?}\n{}",
        all_events(&h, "job"),
        h.log()
    );
    let ev = events(&h, "job", "expired");
    assert_eq!(ev[0], "time limit reached: snapshotting it");
    let vm = h.ctl_ok(&["vm", "get", "job"]);
    assert_eq!(vm["state"], "stopped", "{vm}");
    assert!(vm["time_left_secs"].is_null(), "deadline cleared: {vm}");
    let snap = vm["parked_snapshot"]
        .as_str()
        .expect("parked_snapshot")
        .to_owned();
    assert!(snap.starts_with("job-expired-"), "{snap}");
    assert_eq!(
        ev[1],
        format!("time limit reached: snapshot {snap} taken, stopped")
    );
    let info = h.ctl_ok(&["snapshot", "get", &snap]);
    assert_eq!(
        (info["state"].as_str(), info["source_vm"].as_str()),
        (Some("ready"), Some("job"))
    );

    // Restorable; and the stopped VM itself boots cold from its disk.
    let restored = h.ctl_ok(&[
        "vm",
        "create",
        "job2",
        "--from-snapshot",
        &snap,
        "--no-ready-probe",
    ]);
    assert_eq!(restored["state"], "running", "{restored}");
    h.ctl_ok(&["vm", "start", "job"]);
    assert_eq!(h.state("job").as_deref(), Some("running"));
    for vm in ["job2", "job"] {
        h.ctl_ok(&["vm", "stop", vm]);
        h.ctl_ok(&["vm", "rm", vm]);
    }
    h.ctl_ok(&["snapshot", "rm", &snap]);
}

#[test]
#[expect(
    clippy::disallowed_methods,
    reason = "runs hearthctl without --json, to read what a person sees"
)]
fn a_snapshot_drain_snapshots_every_vm_and_a_failed_snapshot_still_stops() {
    require_privileged!();
    let h = HearthHost::start(&[], "");
    h.create_test_vm("web", &[]);
    // Snapshots cannot be written (their directory is a dangling link): the drain stops
    // `web` all the same and says why.
    let snapshots = h.path("data/snapshots");
    let _ = std::fs::remove_dir(&snapshots);
    std::os::unix::fs::symlink(h.path("missing"), &snapshots).unwrap();
    let node = h.ctl_ok(&["node", "drain", "disk swap", "--snapshot"]);
    let d = &node["drain"];
    assert_eq!(
        (d["done"].as_bool(), d["stopped"].as_u64()),
        (Some(true), Some(1)),
        "{node}"
    );
    assert_eq!(d["mode"], "snapshot");
    assert_eq!(d["failed"][0][0], "web", "{node}");
    assert!(
        d["failed"][0][1]
            .as_str()
            .unwrap()
            .starts_with("snapshot failed"),
        "{node}"
    );
    assert_eq!(h.state("web").as_deref(), Some("stopped"));
    let drained = events(&h, "web", "drain");
    assert_eq!(drained.len(), 2, "{drained:?}");
    assert_eq!(drained[0], "drain: snapshotting it");
    assert!(
        drained[1].starts_with("drain: snapshot failed ("),
        "{drained:?}"
    );
    assert!(drained[1].ends_with("), stopped instead"), "{drained:?}");
    let left = h.ctl_ok(&["snapshot", "ls"]);
    assert!(left.as_array().is_some_and(Vec::is_empty), "{left}");

    // With somewhere to write them: snapshotted, then stopped; `--no-wait` answers at once.
    std::fs::remove_file(&snapshots).unwrap();
    h.ctl_ok(&["node", "uncordon"]);
    h.ctl_ok(&["vm", "start", "web"]);
    h.create_test_vm("api", &[]);
    let started = h.ctl_ok(&["node", "drain", "--snapshot", "--no-wait"]);
    assert_eq!(started["drain"]["total"], 2, "{started}");
    assert!(
        common::wait_until(Duration::from_secs(20), || h.ctl_ok(&["node"])["drain"]
            ["done"]
            == true),
        "{}",
        h.log()
    );
    let d = h.ctl_ok(&["node"])["drain"].clone();
    assert_eq!(
        (d["stopped"].as_u64(), d["failed"].as_array().map(Vec::len)),
        (Some(2), Some(0)),
        "{d}"
    );
    let mut snaps: Vec<String> = d["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}={}", p[0].as_str().unwrap(), p[1].as_str().unwrap()))
        .collect();
    snaps.sort();
    assert_eq!(snaps.len(), 2, "{d}");
    assert!(
        snaps[0].starts_with("api=api-drained-") && snaps[1].starts_with("web=web-drained-"),
        "{snaps:?}"
    );
    for vm in ["api", "web"] {
        let info = h.ctl_ok(&["vm", "get", vm]);
        assert_eq!(info["state"], "stopped", "{info}");
        let snap = info["parked_snapshot"].as_str().expect("parked").to_owned();
        assert!(events(&h, vm, "drain")
            .last()
            .is_some_and(|e| e == &format!("drain: snapshot {snap} taken, stopped")));
        h.ctl_ok(&["vm", "rm", vm]);
        h.ctl_ok(&["snapshot", "rm", &snap]);
    }
    h.ctl_ok(&["node", "uncordon"]);

    // For a person: `node drain` waits, then prints the outcome.
    h.create_test_vm("last", &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearthctl"))
        .arg("--socket")
        .arg(h.path("hearthd.sock"))
        .args(["node", "drain", "done for today"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("cordoned: done for today"), "{text}");
    assert!(text.contains("drain (stop) done: 1 of 1 stopped"), "{text}");
    assert!(text.contains("policy loop: "), "{text}");
    assert_eq!(h.state("last").as_deref(), Some("stopped"));
    h.ctl_ok(&["vm", "rm", "last"]);
    h.ctl_ok(&["node", "uncordon"]);
}

/// `(at_ms, detail)` of `vm`'s `policy` events, oldest first.
fn policy_times(h: &HearthHost, vm: &str) -> Vec<(u64, String)> {
    let out = h.ctl(&["events"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|v| match v {
            Value::Array(a) => a,
            one => vec![one],
        })
        .filter(|e| e["vm"] == vm && e["reason"] == "policy")
        .map(|e| {
            let at = e["at_ms"].as_u64().unwrap_or_default();
            (at, e["detail"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// A restart pending when hearthd is killed keeps its backoff: the restarted hearthd makes it
/// at its stored due time (4 s after the third crash), not at once as an autostart.
#[test]
fn a_pending_restart_keeps_its_backoff_across_a_kill_9_of_hearthd() {
    require_privileged!();
    let mut h = HearthHost::start(&[("FC_SIM_CRASH_AFTER_MS", "300")], "");
    h.create_test_vm("a", &["--restart", "on-failure:3"]);
    let decided = |h: &HearthHost| {
        policy_times(h, "a")
            .into_iter()
            .find(|(_, d)| d == "restarting in 4s (attempt 3)")
    };
    assert!(
        common::wait_until(Duration::from_secs(20), || decided(&h).is_some()),
        "{:?}\n{}",
        policy_times(&h, "a"),
        h.log()
    );
    h.kill9();
    h.launch();
    let (at_decision, _) = decided(&h).unwrap();
    let made = |h: &HearthHost| {
        policy_times(h, "a")
            .into_iter()
            .find(|(_, d)| d == "restart attempt 3")
    };
    assert!(
        common::wait_until(Duration::from_secs(20), || made(&h).is_some()),
        "{:?}\n{}",
        policy_times(&h, "a"),
        h.log()
    );
    let (at_restart, _) = made(&h).unwrap();
    // The stored due time is the decision's time + 4 s, on the wall clock (ms in the store).
    assert!(
        at_restart >= at_decision + 3_990,
        "restarted {} ms after the decision: {:?}",
        at_restart - at_decision,
        policy_times(&h, "a")
    );
    let details: Vec<String> = policy_times(&h, "a").into_iter().map(|(_, d)| d).collect();
    assert!(
        !details.iter().any(|d| d.starts_with("autostart")),
        "{details:?}"
    );
    assert!(
        common::wait_until(Duration::from_secs(20), || policy_times(&h, "a")
            .iter()
            .any(|(_, d)| d.contains("gave up after 3 restarts"))),
        "{:?}",
        policy_times(&h, "a")
    );
    h.ctl_ok(&["vm", "rm", "a"]);
}

/// `kill -9` of hearthd after an expiry's snapshot is complete but before the VM is stopped
/// (the VMM answers slowly, so the stop takes a while): the restarted hearthd acts on the
/// deadline again, finds the snapshot taken, and only stops the VM; one snapshot, not two.
#[test]
fn an_expiry_snapshot_cut_short_by_a_kill_9_is_not_taken_twice() {
    require_privileged!();
    let mut h = HearthHost::start(&[("FC_SIM_API_DELAY_MS", "400")], "");
    h.create_test_vm("job", &["--ttl", "4s", "--on-expiry", "snapshot"]);
    let ready = |h: &HearthHost| {
        let list = h.ctl_ok(&["snapshot", "list"]);
        list.as_array()
            .and_then(|l| l.first().cloned())
            .filter(|s| s["state"] == "ready")
    };
    assert!(
        common::wait_until(Duration::from_secs(30), || ready(&h).is_some()),
        "{}",
        h.log()
    );
    let snap = ready(&h).unwrap();
    let state_at_kill = h.state("job");
    h.kill9();
    let snap_name = snap["name"].as_str().unwrap_or_default().to_owned();
    h.launch();
    assert!(
        common::wait_until(Duration::from_secs(30), || h.ctl_ok(&["vm", "get", "job"])
            ["time_left_secs"]
            .is_null()),
        "{}",
        h.log()
    );
    let vm = h.ctl_ok(&["vm", "get", "job"]);
    assert_eq!(vm["state"], "stopped", "{vm}");
    assert_eq!(vm["parked_snapshot"], snap_name.as_str(), "{vm}");
    let list = h.ctl_ok(&["snapshot", "list"]);
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "one snapshot: {list}"
    );
    assert_eq!(
        list[0]["created_at"], snap["created_at"],
        "the same one: {list}"
    );
    let expired = events(&h, "job", "expired");
    // Before the kill: the announcement; after it, the second announcement and the outcome
    // (or, had the stop finished just before the kill, only the cleared deadline).
    assert_eq!(
        expired[0], "time limit reached: snapshotting it",
        "{expired:?}"
    );
    let last = expired.last().unwrap();
    assert!(
        last == &format!("time limit reached: snapshot {snap_name} taken, stopped")
            || (state_at_kill.as_deref() == Some("stopped")
                && last == "time limit reached: it was not running"),
        "state at kill {state_at_kill:?}: {expired:?}"
    );
    eprintln!("state at the kill: {state_at_kill:?}; expired events: {expired:?}");
    h.ctl_ok(&["vm", "rm", "job"]);
    h.ctl_ok(&["snapshot", "rm", &snap_name]);
}

/// Every VM's state, by name (`vm list`).
fn states(h: &HearthHost) -> Vec<(String, String)> {
    let list = h.ctl_ok(&["vm", "list"]);
    list.as_array()
        .map(|l| {
            l.iter()
                .map(|v| {
                    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                    (s("name"), s("state"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A drain cut short by a `kill -9` of hearthd (every guest takes 1.5 s to power off after
/// Ctrl+Alt+Del, so the first four stops are under way at the kill): the next hearthd resumes
/// it, still cordoned; every VM ends stopped, each stopped once, and `node` says the drain
/// was resumed and is done.
#[test]
fn a_drain_cut_short_by_a_kill_9_is_resumed_and_stops_each_vm_once() {
    require_privileged!();
    let mut h = HearthHost::start(&[("FC_SIM_REBOOT_DELAY_MS", "1500")], "");
    let names: Vec<String> = (0..8).map(|i| format!("d{i}")).collect();
    for name in &names {
        h.create_test_vm(name, &["--restart", "always"]);
    }
    let started = h.ctl_ok(&["node", "drain", "before reboot", "--no-wait"]);
    assert_eq!(started["drain"]["total"], 8, "{started}");
    let stopping = |h: &HearthHost| states(h).iter().any(|(_, s)| s == "stopping");
    assert!(
        common::wait_until(Duration::from_secs(20), || stopping(&h)),
        "{:?}",
        states(&h)
    );
    let at_kill = h.ctl_ok(&["node"]);
    h.kill9();
    assert_eq!(at_kill["drain"]["done"], false, "too late: {at_kill}");

    h.launch();
    let done = |h: &HearthHost| h.ctl_ok(&["node"])["drain"]["done"] == true;
    assert!(
        common::wait_until(Duration::from_secs(60), || done(&h)),
        "{}\n{}",
        h.ctl_ok(&["node"]),
        h.log()
    );
    let node = h.ctl_ok(&["node"]);
    let d = &node["drain"];
    assert_eq!(
        (&node["cordoned"], &node["reason"]),
        (&Value::Bool(true), &Value::from("before reboot")),
        "{node}"
    );
    assert_eq!(
        (&d["resumed"], &d["mode"]),
        (&Value::Bool(true), &Value::from("stop"))
    );
    // Only what still ran at the resume: the stops under way at the kill were finished by
    // the restart's own repair, not by the drain again.
    let total = d["total"].as_u64().unwrap_or_default();
    assert!((1..8).contains(&total), "{node}");
    assert_eq!(d["stopped"].as_u64(), Some(total), "{node}");
    assert_eq!(d["failed"], serde_json::json!([]), "{node}");
    assert!(h.log().contains("resuming an unfinished drain"));
    // `always` does not undo the drain, nothing autostarted.
    let_the_policy_loop_run(&h);
    for name in &names {
        assert_eq!(h.state(name).as_deref(), Some("stopped"), "{name}");
        let stopped: Vec<_> = all_events(&h, name)
            .into_iter()
            // The stop's own transition (the drain's, or the repair's of a stop under way at
            // the kill); the drain's `drain: ...` events only report on it.
            .filter(|(state, _, detail)| state == "stopped" && !detail.starts_with("drain: "))
            .collect();
        assert_eq!(stopped.len(), 1, "{name} stopped once: {stopped:?}");
        assert!(
            !events(&h, name, "policy")
                .iter()
                .any(|e| e.starts_with("autostart")),
            "{name}"
        );
    }
    eprintln!("at the kill: {at_kill}; after the resume: {node}");
    for name in &names {
        h.ctl_ok(&["vm", "rm", name]);
    }
    h.ctl_ok(&["node", "uncordon"]);
}

/// A `--snapshot` drain cut short by a `kill -9` (the VMM answers slowly, so snapshots take a
/// while): the resumed drain finds the snapshots already taken by their names and only stops
/// those VMs; one snapshot per VM, every VM stopped.
#[test]
fn a_snapshot_drain_cut_short_by_a_kill_9_takes_each_snapshot_once() {
    require_privileged!();
    let mut h = HearthHost::start(&[("FC_SIM_API_DELAY_MS", "300")], "");
    let names: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    for name in &names {
        h.create_test_vm(name, &[]);
    }
    h.ctl_ok(&["node", "drain", "--snapshot", "--no-wait"]);
    let ready = |h: &HearthHost| {
        h.ctl_ok(&["snapshot", "list"])
            .as_array()
            .is_some_and(|l| l.iter().any(|s| s["state"] == "ready"))
    };
    assert!(
        common::wait_until(Duration::from_secs(60), || ready(&h)),
        "{}",
        h.log()
    );
    let at_kill = h.ctl_ok(&["node"]);
    h.kill9();
    assert_eq!(at_kill["drain"]["done"], false, "too late: {at_kill}");

    h.launch();
    let done = |h: &HearthHost| h.ctl_ok(&["node"])["drain"]["done"] == true;
    assert!(
        common::wait_until(Duration::from_secs(90), || done(&h)),
        "{}\n{}",
        h.ctl_ok(&["node"]),
        h.log()
    );
    let node = h.ctl_ok(&["node"]);
    let d = &node["drain"];
    assert_eq!(
        (&d["resumed"], &d["mode"]),
        (&Value::Bool(true), &Value::from("snapshot"))
    );
    assert_eq!(d["failed"], serde_json::json!([]), "{node}");
    let list = h.ctl_ok(&["snapshot", "list"]);
    let snaps = list.as_array().cloned().unwrap_or_default();
    for name in &names {
        assert_eq!(h.state(name).as_deref(), Some("stopped"), "{name}");
        let own: Vec<&Value> = snaps
            .iter()
            .filter(|s| s["source_vm"] == name.as_str())
            .collect();
        assert_eq!(own.len(), 1, "{name}: one snapshot: {list}");
        assert_eq!(own[0]["state"], "ready", "{name}: {list}");
        let snap = own[0]["name"].as_str().unwrap_or_default();
        assert!(snap.starts_with(&format!("{name}-drained-")), "{snap}");
        assert_eq!(
            h.ctl_ok(&["vm", "get", name])["parked_snapshot"],
            snap,
            "{name}"
        );
    }
    eprintln!("at the kill: {at_kill}; after the resume: {node}");
    for name in &names {
        h.ctl_ok(&["vm", "rm", name]);
    }
    for s in &snaps {
        h.ctl_ok(&["snapshot", "rm", s["name"].as_str().unwrap_or_default()]);
    }
    h.ctl_ok(&["node", "uncordon"]);
}
