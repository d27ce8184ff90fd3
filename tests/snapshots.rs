//! Pause, resume, snapshot, restore and fork end to end: the real `hearthd` and `hearthctl`,
//! `firecracker-sim` as the VMM, inside private network namespaces (issue 12).
//! - pause/resume change the state with events; a paused VM can be stopped;
//! - a snapshot writes its files under `data/snapshots/<name>/` and records what it was taken
//!   with; a restore is a new VM with its own lease, TAP, process and disk; a snapshot in use
//!   cannot be removed (409 naming the VMs); a fork leaves the source running and its own
//!   snapshot goes with the forked VM; everything is gone after the deletes;
//! - `kill -9` of hearthd in the middle of a snapshot or of a restore: the restarted hearthd
//!   resumes the source, removes the half-made snapshot, fails the half-made VM and leaks
//!   nothing.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools and binaries (ip, mkfs, hearthd, hearthctl) and clean up their own directories"
)]

mod common;
use common::daemon;

use std::path::Path;
use std::time::Duration;

use daemon::HearthHost;
use hearth_testkit::wait_until;
use serde_json::Value;

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

/// `(state, reason)` of `vm`'s events, oldest first (`hearthctl --json events` prints one
/// event per line).
fn events_of(h: &HearthHost, vm: &str) -> Vec<(String, String)> {
    let out = h.ctl(&["events"]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["vm"] == vm)
        .map(|e| {
            (
                e["state"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs `hearthctl <args>` without waiting for it.
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

#[test]
fn pause_resume_and_stop_a_paused_vm() {
    require_privileged!();
    let h = HearthHost::start(&[], "");
    let vm = h.create_test_vm("a", &[]);
    let pid = vm["pid"].as_u64().unwrap();
    assert_eq!(h.ctl_ok(&["vm", "pause", "a"])["state"], "paused");
    assert_eq!(h.state("a").as_deref(), Some("paused"));
    // Pausing twice is refused (409), naming the state.
    let out = h.ctl(&["vm", "pause", "a"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("paused"), "{err}");
    // Guest endpoints answer 409 while paused.
    let out = h.ctl(&["vm", "exec", "a", "--", "true"]);
    assert!(!out.status.success());
    assert_eq!(h.ctl_ok(&["vm", "resume", "a"])["state"], "running");
    let out = h.ctl(&["vm", "resume", "a"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "resume of a running VM is refused"
    );
    assert_eq!(
        events_of(&h, "a")
            .into_iter()
            .filter(|(s, _)| s == "paused" || s == "running")
            .collect::<Vec<_>>(),
        [
            ("running".to_owned(), "user".to_owned()),
            ("paused".into(), "user".into()),
            ("running".into(), "user".into()),
        ]
    );
    assert!(alive(pid), "the same VMM process throughout");
    // A paused VM stops (it is resumed first, so the guest sees Ctrl+Alt+Del).
    h.ctl_ok(&["vm", "pause", "a"]);
    assert_eq!(h.ctl_ok(&["vm", "stop", "a"])["state"], "stopped");
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
    h.ctl_ok(&["vm", "start", "a"]);
    h.ctl_ok(&["vm", "pause", "a"]);
    h.ctl_ok(&["vm", "rm", "a"]);
    daemon::assert_no_leaks(&h);
}

/// The simulator with the real `hearth-agent` as its guests' agent, writing the identity a
/// `reconfigure` asks for to `run/<vm>/sim-identity.json` (and the simulated guest adopting it).
fn with_real_agent() -> HearthHost {
    let agent = hearth_testkit::fc_sim::agent_binary();
    HearthHost::start(
        &[
            ("FC_SIM_AGENT_BIN", agent.to_str().unwrap()),
            ("FC_SIM_IDENTITY_FILE", "1"),
        ],
        "",
    )
}

/// The identity `vm`'s agent was told (the simulator's identity file).
fn identity_of(h: &HearthHost, vm: &str) -> Value {
    let path = h.path(&format!("run/{vm}/sim-identity.json"));
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), h.log())),
    )
    .unwrap()
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario from snapshot to the last delete, read top to bottom"
)]
fn snapshot_restore_fork_and_remove_leave_nothing_behind() {
    require_privileged!();
    let h = with_real_agent();
    let a = h.create_test_vm("a", &[]);
    let snaps = h.path("data/snapshots");

    let s = h.ctl_ok(&["vm", "snapshot", "a", "--name", "s1"]);
    assert_eq!(
        (s["state"].as_str(), s["source_vm"].as_str()),
        (Some("ready"), Some("a")),
        "{s}"
    );
    assert!(!s["fc_version"].as_str().unwrap().is_empty(), "{s}");
    assert_eq!(s["mem_size_mib"], 128);
    assert_eq!(
        entries(&snaps.join("s1")),
        ["disk.img", "memory", "vmstate"]
    );
    assert_eq!(h.state("a").as_deref(), Some("running"), "left running");
    let reasons: Vec<_> = events_of(&h, "a")
        .into_iter()
        .filter(|(_, r)| r == "snapshot")
        .collect();
    assert_eq!(
        reasons,
        [
            ("paused".to_owned(), "snapshot".to_owned()),
            ("running".into(), "snapshot".into())
        ]
    );

    // A restore is a new VM: its own lease, TAP, process and disk.
    let b = h.ctl_ok(&["vm", "create", "b", "--from-snapshot", "s1"]);
    assert_eq!(b["state"], "running", "{b}");
    assert_eq!(b["spec"]["from_snapshot"], "s1");
    assert_eq!(b["spec"]["kernel"], "vmlinux", "the source's machine");
    assert_ne!(b["guest_ip"], a["guest_ip"]);
    assert_ne!(b["tap"], a["tap"]);
    assert_ne!(b["pid"], a["pid"]);
    assert!(alive(b["pid"].as_u64().unwrap()));
    // Running only once its agent took the new identity: its own address and name.
    let id = identity_of(&h, "b");
    assert_eq!(
        (id["ip_cidr"].as_str(), id["hostname"].as_str()),
        (
            Some(format!("{}/24", b["guest_ip"].as_str().unwrap()).as_str()),
            Some("b")
        ),
        "{id}"
    );
    assert!(
        !h.path("run/a/sim-identity.json").exists(),
        "the source was never reconfigured"
    );
    assert_eq!(
        entries(&h.path("data/disks")).len(),
        2 * 2,
        "a's and b's disk, each with its manifest"
    );

    // In use: 409 naming the VM, and the files stay.
    let out = h.ctl(&["snapshot", "rm", "s1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use") && err.contains('b'), "{err}");
    assert_eq!(
        h.ctl_ok(&["snapshot", "get", "s1"])["in_use_by"],
        serde_json::json!(["b"])
    );
    assert!(snaps.join("s1/memory").exists());

    // Bad input changes nothing.
    for args in [
        &[
            "vm",
            "create",
            "x",
            "--from-snapshot",
            "nope",
            "--no-ready-probe",
        ][..],
        &["vm", "snapshot", "a", "--name", "s1"],
        &["vm", "snapshot", "nope", "--name", "s9"],
    ] {
        let out = h.ctl(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
    assert_eq!(h.state("x"), None);
    assert_eq!(entries(&snaps), ["s1"]);

    // Fork: the source keeps running; the fork's own snapshot goes with the forked VM.
    let c = h.ctl_ok(&["vm", "fork", "a", "c"]);
    assert_eq!(c["state"], "running", "{c}");
    assert_eq!(identity_of(&h, "c")["hostname"], "c");
    assert_ne!(identity_of(&h, "c")["mac"], identity_of(&h, "b")["mac"]);
    assert_eq!(h.state("a").as_deref(), Some("running"));
    assert_eq!(entries(&snaps), ["c.fork", "s1"]);
    h.ctl_ok(&["vm", "rm", "c"]);
    assert_eq!(entries(&snaps), ["s1"]);

    h.ctl_ok(&["vm", "rm", "b"]);
    h.ctl_ok(&["snapshot", "rm", "s1"]);
    assert!(entries(&snaps).is_empty());
    let out = h.ctl(&["snapshot", "get", "s1"]);
    assert_eq!(out.status.code(), Some(1), "gone: 404");

    // Leave stopped: the source stops once the snapshot is complete; a stopped VM cannot be
    // snapshotted.
    h.ctl_ok(&["vm", "snapshot", "a", "--name", "s2", "--leave", "stopped"]);
    assert_eq!(h.state("a").as_deref(), Some("stopped"));
    let out = h.ctl(&["vm", "snapshot", "a", "--name", "s3"]);
    assert_eq!(out.status.code(), Some(1));
    h.ctl_ok(&["vm", "rm", "a"]);
    h.ctl_ok(&["snapshot", "rm", "s2"]);
    assert!(entries(&snaps).is_empty());
    daemon::assert_no_leaks(&h);
    let metrics = h.ctl_ok(&["snapshot", "list"]);
    assert_eq!(metrics, serde_json::json!([]));
}

/// The `detail` of `vm`'s events in `state` with reason `snapshot`, oldest first.
fn snapshot_details(h: &HearthHost, vm: &str, state: &str) -> Vec<Option<String>> {
    let out = h.ctl(&["events"]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["vm"] == vm && e["state"] == state && e["reason"] == "snapshot")
        .map(|e| e["detail"].as_str().map(str::to_owned))
        .collect()
}

/// The `freeze`/`thaw` requests `vm`'s real agent got (the simulator has it record them in
/// `run/<vm>/sim-freeze.log` instead of freezing the host's root).
fn freezes_of(h: &HearthHost, vm: &str) -> Vec<Value> {
    std::fs::read_to_string(h.path(&format!("run/{vm}/sim-freeze.log")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A snapshot of a VM whose agent can freeze: its root filesystem is flushed and frozen for
/// the snapshot and thawed after the resume; a restored copy (frozen as its snapshot was) is
/// thawed before it is given its identity.
#[test]
fn a_snapshot_freezes_and_thaws_the_guest_root_through_its_agent() {
    require_privileged!();
    let h = with_real_agent();
    h.create_test_vm("a", &[]);
    assert!(freezes_of(&h, "a").is_empty());
    let s = h.ctl_ok(&["vm", "snapshot", "a", "--name", "s1"]);
    assert_eq!(s["state"], "ready", "{s}");
    let rec = freezes_of(&h, "a");
    let ops: Vec<_> = rec.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["freeze", "thaw"], "{rec:?}\n{}", h.log());
    assert_eq!(rec[0]["path"], "/");
    assert_eq!(
        rec[0]["thaw_after_ms"], 10_000,
        "the deadline is always set"
    );
    assert_eq!(
        rec[1]["cause"], "request",
        "thawed by hearthd, not the deadline"
    );
    assert_eq!(
        snapshot_details(&h, "a", "paused"),
        [None],
        "a frozen snapshot has nothing to excuse"
    );
    assert_eq!(h.state("a").as_deref(), Some("running"));
    // The restored copy: thawed first (its agent knows of no freeze here, so says so).
    let b = h.ctl_ok(&["vm", "create", "b", "--from-snapshot", "s1"]);
    assert_eq!(b["state"], "running", "{b}");
    let rec_b = freezes_of(&h, "b");
    assert_eq!(rec_b.len(), 1, "{rec_b:?}");
    assert_eq!(rec_b[0]["op"], "thaw");
    h.ctl_ok(&["vm", "rm", "b"]);
    h.ctl_ok(&["vm", "rm", "a"]);
    h.ctl_ok(&["snapshot", "rm", "s1"]);
    daemon::assert_no_leaks(&h);
}

/// A VM whose agent cannot freeze (the simulator's own agent has no `freeze`) or that has no
/// agent at all is snapshotted all the same; its paused event says the root was not frozen.
#[test]
fn a_vm_that_cannot_freeze_still_snapshots_and_says_so() {
    require_privileged!();
    for knobs in [&[][..], &[("FC_SIM_NO_AGENT", "1")][..]] {
        let h = HearthHost::start(knobs, "");
        h.create_test_vm("a", &[]);
        let s = h.ctl_ok(&["vm", "snapshot", "a", "--name", "s1"]);
        assert_eq!(s["state"], "ready", "{knobs:?}: {s}");
        assert_eq!(h.state("a").as_deref(), Some("running"), "{knobs:?}");
        let details = snapshot_details(&h, "a", "paused");
        assert_eq!(details.len(), 1, "{knobs:?}: {details:?}");
        let why = details[0].as_deref().unwrap_or_default();
        assert!(
            why.contains("root filesystem not frozen"),
            "{knobs:?}: {why:?}"
        );
        // Running again: the note went with the pause.
        let a = h.ctl_ok(&["vm", "get", "a"]);
        assert!(a["last_error"].is_null(), "{knobs:?}: {a}");
        h.ctl_ok(&["vm", "rm", "a"]);
        h.ctl_ok(&["snapshot", "rm", "s1"]);
        daemon::assert_no_leaks(&h);
    }
}

/// A restored guest whose agent cannot take a new identity (here the simulator's own agent,
/// which has no `reconfigure`) runs, but is `unready` with the reason: its network identity
/// is still its source's.
#[test]
fn a_restore_whose_guest_keeps_the_old_identity_is_unready() {
    require_privileged!();
    let h = HearthHost::start(&[], "");
    h.create_test_vm("a", &[]);
    h.ctl_ok(&["vm", "snapshot", "a", "--name", "s1"]);
    let b = h.ctl_ok(&["vm", "create", "b", "--from-snapshot", "s1", "--nat"]);
    assert_eq!(b["state"], "unready", "{b}");
    let why = b["last_error"].as_str().unwrap();
    assert!(why.contains("guest identity not applied"), "{why}");
    assert!(alive(b["pid"].as_u64().unwrap()), "it runs");
    // Its own NAT setting: its new address is in the NAT set, the source's is not.
    assert_eq!(b["nat"], true);
    assert_eq!(h.leaks().nat_set, 1);
    h.ctl_ok(&["vm", "rm", "b"]);
    h.ctl_ok(&["vm", "rm", "a"]);
    h.ctl_ok(&["snapshot", "rm", "s1"]);
    daemon::assert_no_leaks(&h);
}

/// `kill -9` of hearthd while a snapshot waits on a slow VMM: the restarted hearthd resumes
/// the source (it ran before), removes the half-made files and forgets the record.
#[test]
fn a_snapshot_cut_short_by_a_crash_is_undone_at_restart() {
    require_privileged!();
    let mut h = HearthHost::start(&[("FC_SIM_API_DELAY_MS", "400")], "");
    let a = h.create_test_vm("a", &[]);
    let pid = a["pid"].as_u64().unwrap();
    let mut snap = ctl_in_background(&h, &["vm", "snapshot", "a", "--name", "s1"]);
    // The record exists (and the VM is paused) before any file is written.
    assert!(
        wait_until(Duration::from_secs(10), || h.state("a").as_deref()
            == Some("paused")),
        "{}",
        h.log()
    );
    h.kill9();
    let _ = snap.kill();
    let _ = snap.wait();
    h.launch();
    assert_eq!(h.state("a").as_deref(), Some("running"), "{}", h.log());
    assert!(alive(pid), "the source VMM was adopted, not restarted");
    assert_eq!(h.ctl_ok(&["snapshot", "list"]), serde_json::json!([]));
    assert!(entries(&h.path("data/snapshots")).is_empty());
    // The VMM really runs again: a pause/resume round trip works on it.
    h.ctl_ok(&["vm", "pause", "a"]);
    h.ctl_ok(&["vm", "resume", "a"]);
    h.ctl_ok(&["vm", "rm", "a"]);
    daemon::assert_no_leaks(&h);
}

/// `kill -9` of hearthd while a restore waits on a slow VMM: the restarted hearthd fails the
/// half-made VM (its process killed, disk removed, lease given back); the snapshot stays.
#[test]
fn a_restore_cut_short_by_a_crash_is_undone_at_restart() {
    require_privileged!();
    let mut h = HearthHost::start(&[("FC_SIM_API_DELAY_MS", "200")], "");
    h.create_test_vm("a", &[]);
    h.ctl_ok(&["vm", "snapshot", "a", "--name", "s1", "--leave", "stopped"]);
    let mut restore = ctl_in_background(
        &h,
        &[
            "vm",
            "create",
            "b",
            "--from-snapshot",
            "s1",
            "--no-ready-probe",
        ],
    );
    // Cut while the new VMM exists (spawned, loading).
    assert!(
        wait_until(Duration::from_secs(10), || {
            daemon::vmm_pids(&h.path("run")).len() == 1
        }),
        "{}",
        h.log()
    );
    h.kill9();
    let _ = restore.kill();
    let _ = restore.wait();
    h.launch();
    let b = h.ctl_ok(&["vm", "get", "b"]);
    assert_eq!(b["state"], "failed", "{b}");
    assert!(daemon::vmm_pids(&h.path("run")).is_empty());
    assert_eq!(h.ctl_ok(&["snapshot", "get", "s1"])["state"], "ready");
    h.ctl_ok(&["vm", "rm", "b"]);
    h.ctl_ok(&["vm", "rm", "a"]);
    h.ctl_ok(&["snapshot", "rm", "s1"]);
    daemon::assert_no_leaks(&h);
    assert!(entries(&h.path("data/snapshots")).is_empty());
}

/// `Idempotency-Key` on snapshots and forks: a retry (same key, same request) answers the
/// first result and makes nothing more, across a `kill -9` and restart of hearthd too; the
/// key with another request is refused (409) and changes nothing.
#[test]
fn a_retried_snapshot_or_fork_with_its_key_happens_once() {
    require_privileged!();
    let mut h = with_real_agent();
    h.create_test_vm("a", &[]);
    let snaps = h.path("data/snapshots");
    let snap = [
        "vm",
        "snapshot",
        "a",
        "--name",
        "s1",
        "--idempotency-key",
        "snap-1",
    ];
    let s = h.ctl_ok(&snap);
    assert_eq!(s["state"], "ready", "{s}");
    assert_eq!(h.ctl_ok(&snap), s, "the first answer, not `name taken`");
    assert_eq!(snapshot_details(&h, "a", "paused").len(), 1, "paused once");
    // The key with another request: refused, nothing made.
    let out = h.ctl(&[
        "vm",
        "snapshot",
        "a",
        "--name",
        "s2",
        "--idempotency-key",
        "snap-1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Idempotency-Key"), "{err}");
    assert_eq!(entries(&snaps), ["s1"]);

    let fork = ["vm", "fork", "a", "c", "--idempotency-key", "fork-1"];
    let c = h.ctl_ok(&fork);
    assert_eq!(c["state"], "running", "{c}");
    // The VMMs (and, here, their simulated guests' agents).
    let processes = daemon::vmm_pids(&h.path("run")).len();
    assert_eq!(h.ctl_ok(&fork), c, "the first fork's VM, not a second");
    assert_eq!(
        daemon::vmm_pids(&h.path("run")).len(),
        processes,
        "no new process"
    );
    assert_eq!(entries(&snaps), ["c.fork", "s1"]);
    let out = h.ctl(&["vm", "fork", "a", "d", "--idempotency-key", "fork-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(h.state("d"), None);

    // Kept across a restart of hearthd, as a create's key is.
    h.kill9();
    h.launch();
    assert_eq!(h.ctl_ok(&fork), c);
    assert_eq!(h.ctl_ok(&snap), s);
    assert_eq!(daemon::vmm_pids(&h.path("run")).len(), processes);
    assert_eq!(entries(&snaps), ["c.fork", "s1"]);
    assert_eq!(
        h.ctl_ok(&["vm", "list"]).as_array().map(Vec::len),
        Some(2),
        "a and c"
    );
    h.ctl_ok(&["vm", "rm", "c"]);
    h.ctl_ok(&["vm", "rm", "a"]);
    h.ctl_ok(&["snapshot", "rm", "s1"]);
    daemon::assert_no_leaks(&h);
}

/// A snapshot that leaves its VM paused leaves the guest's root frozen (nothing can thaw a
/// paused guest); `vm resume` thaws it right after the resume, also when hearthd was
/// restarted in between, and only once: a later pause and resume asks for no thaw, nor does
/// a resume of a later process of the VM.
#[test]
fn a_snapshot_left_paused_is_thawed_by_the_resume_even_after_a_restart() {
    require_privileged!();
    let mut h = with_real_agent();
    h.create_test_vm("a", &[]);
    h.ctl_ok(&["vm", "snapshot", "a", "--name", "s1", "--leave", "paused"]);
    assert_eq!(h.state("a").as_deref(), Some("paused"));
    let ops = |h: &HearthHost| -> Vec<(String, String)> {
        freezes_of(h, "a")
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                (s("op"), s("cause"))
            })
            .collect()
    };
    assert_eq!(ops(&h), [("freeze".into(), String::new())], "still frozen");
    h.kill9();
    h.launch();
    assert_eq!(h.state("a").as_deref(), Some("paused"), "{}", h.log());
    assert_eq!(h.ctl_ok(&["vm", "resume", "a"])["state"], "running");
    // Thawed on hearthd's request, well before the agent's own deadline (10 s).
    assert_eq!(
        ops(&h),
        [
            ("freeze".into(), String::new()),
            ("thaw".into(), "request".into())
        ],
        "{}",
        h.log()
    );
    h.ctl_ok(&["vm", "pause", "a"]);
    h.ctl_ok(&["vm", "resume", "a"]);
    assert_eq!(ops(&h).len(), 2, "once: {:?}", ops(&h));
    // A later process of the VM was never frozen: its resume asks nothing either.
    h.ctl_ok(&["vm", "snapshot", "a", "--name", "s2", "--leave", "paused"]);
    h.ctl_ok(&["vm", "stop", "a"]);
    h.ctl_ok(&["vm", "start", "a"]);
    h.ctl_ok(&["vm", "pause", "a"]);
    let before = ops(&h).len();
    h.ctl_ok(&["vm", "resume", "a"]);
    assert_eq!(ops(&h).len(), before, "{:?}", ops(&h));
    // A snapshot of the paused, frozen VM that leaves it running thaws it too.
    h.ctl_ok(&["vm", "snapshot", "a", "--name", "s3", "--leave", "paused"]);
    h.ctl_ok(&["vm", "snapshot", "a", "--name", "s4"]);
    assert_eq!(h.state("a").as_deref(), Some("running"));
    let tail: Vec<_> = ops(&h).split_off(before);
    assert_eq!(
        tail,
        [
            ("freeze".into(), String::new()),
            ("thaw".into(), "request".into())
        ]
    );
    h.ctl_ok(&["vm", "rm", "a"]);
    for s in ["s1", "s2", "s3", "s4"] {
        h.ctl_ok(&["snapshot", "rm", s]);
    }
    daemon::assert_no_leaks(&h);
}

/// The snapshot that left a VM paused and frozen is removed before the VM is resumed (also
/// across a restart of hearthd): the resume still thaws the guest, once.
#[test]
fn removing_the_snapshot_that_left_a_vm_frozen_keeps_the_thaw() {
    require_privileged!();
    let mut h = with_real_agent();
    h.create_test_vm("a", &[]);
    h.ctl_ok(&["vm", "snapshot", "a", "--name", "s1", "--leave", "paused"]);
    h.ctl_ok(&["snapshot", "rm", "s1"]);
    h.kill9();
    h.launch();
    assert_eq!(h.state("a").as_deref(), Some("paused"), "{}", h.log());
    assert_eq!(h.ctl_ok(&["vm", "resume", "a"])["state"], "running");
    let ops: Vec<(String, String)> = freezes_of(&h, "a")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (s("op"), s("cause"))
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("freeze".into(), String::new()),
            ("thaw".into(), "request".into())
        ],
        "{}",
        h.log()
    );
    h.ctl_ok(&["vm", "pause", "a"]);
    h.ctl_ok(&["vm", "resume", "a"]);
    assert_eq!(freezes_of(&h, "a").len(), 2, "once");
    h.ctl_ok(&["vm", "rm", "a"]);
    daemon::assert_no_leaks(&h);
}
