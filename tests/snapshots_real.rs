//! Pause, resume, snapshot, restore and fork against the real Firecracker (`hearthd` with
//! `firecracker_bin` set to the binary named by `HEARTH_FIRECRACKER_REAL`), inside private
//! network namespaces. No guest boots here, but the VM runs its vCPUs, so the real binary
//! pauses, writes and loads snapshots. Restored and forked VMs are real Firecracker processes
//! that hearthd adopts after a `kill -9`; with no guest (so no agent to take a new identity)
//! they are `unready`, naming why. Without the variable the test prints a SKIP line;
//! under `HEARTH_REQUIRE_REAL_FIRECRACKER=1` that is a failure.

mod common;
use common::daemon;
use common::vmm;

use std::path::Path;

use daemon::HearthHost;
use hearth_actors::firecracker::api_client::Endpoint;
use hearth_actors::firecracker::ApiClient;
use serde_json::Value;

/// `GET /` on a VM's API socket: the VMM's own view of its state.
fn vmm_state(h: &HearthHost, vm: &str) -> String {
    let api = h.path(&format!("run/{vm}/api.sock"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let info: Value = rt
        .block_on(ApiClient::new(&api).get(Endpoint::Instance))
        .unwrap_or_else(|e| panic!("GET / on {}: {e}", api.display()));
    info["state"].as_str().unwrap_or_default().to_owned()
}

fn exe(pid: u64) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe link")
}

#[test]
fn snapshots_restores_and_forks_with_the_real_binary() {
    let Some(real) = vmm::real_firecracker(module_path!()) else {
        return;
    };
    require_privileged!();
    let mut h = HearthHost::start_with_vmm(&real, &[], "");
    let real = real.canonicalize().unwrap();
    h.ctl_ok(&[
        "vm",
        "create",
        "a",
        "--kernel",
        "vmlinux",
        "--rootfs",
        "base",
        "--no-ready-probe",
    ]);
    assert!(
        Path::new(&h.path("run/a/api.sock")).exists(),
        "API socket layout changed: fix vmm_state"
    );

    h.ctl_ok(&["vm", "pause", "a"]);
    assert_eq!(vmm_state(&h, "a"), "Paused");
    h.ctl_ok(&["vm", "resume", "a"]);
    assert_eq!(vmm_state(&h, "a"), "Running");

    let s = h.ctl_ok(&["vm", "snapshot", "a", "--name", "s1"]);
    assert_eq!(s["state"], "ready", "{s}");
    assert!(
        s["fc_version"].as_str().unwrap().starts_with("1."),
        "the real binary's version: {s}"
    );
    assert!(h.path("data/snapshots/s1/memory").exists());
    assert_eq!(vmm_state(&h, "a"), "Running", "left running");

    let b = h.ctl_ok(&[
        "vm",
        "create",
        "b",
        "--from-snapshot",
        "s1",
        "--no-ready-probe",
    ]);
    assert_eq!(b["state"], "unready", "no agent to reconfigure: {b}");
    assert!(
        b["last_error"]
            .as_str()
            .unwrap()
            .contains("guest identity not applied"),
        "{b}"
    );
    let b_pid = b["pid"].as_u64().unwrap();
    assert_eq!(exe(b_pid), real, "a real Firecracker loaded the snapshot");
    assert_eq!(vmm_state(&h, "b"), "Running");

    let c = h.ctl_ok(&["vm", "fork", "a", "c"]);
    assert_eq!(c["state"], "unready", "{c}");
    let c_pid = c["pid"].as_u64().unwrap();
    assert_eq!(vmm_state(&h, "a"), "Running", "the source keeps running");

    let out = h.ctl(&["snapshot", "rm", "s1"]);
    assert_eq!(out.status.code(), Some(1), "in use by b");

    // Restored VMs are adopted like booted ones.
    h.kill9();
    h.launch();
    for (vm, pid) in [("b", b_pid), ("c", c_pid)] {
        let v = h.ctl_ok(&["vm", "get", vm]);
        assert_eq!(
            (v["state"].as_str(), v["pid"].as_u64()),
            (Some("unready"), Some(pid)),
            "{v}"
        );
    }

    for vm in ["c", "b", "a"] {
        h.ctl_ok(&["vm", "rm", vm]);
    }
    h.ctl_ok(&["snapshot", "rm", "s1"]);
    assert_eq!(h.ctl_ok(&["snapshot", "list"]), serde_json::json!([]));
    daemon::assert_no_leaks(&h);
}
