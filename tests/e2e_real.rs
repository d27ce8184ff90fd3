//! End-to-end against the real Firecracker: `hearthd` (with `firecracker_bin` set to the binary
//! named by `HEARTH_FIRECRACKER_REAL`) and `hearthctl`, inside private network namespaces.
//! Create without the readiness probe (no guest boots here), stop (the guest ignores
//! Ctrl+Alt+Del, so the ladder escalates to SIGTERM), start, adoption after `kill -9` of
//! hearthd (same pid, API ping), the exit status reported when a VMM dies on its own, delete,
//! and zero leaks. Without the variable the test prints
//! a SKIP line; under `HEARTH_REQUIRE_REAL_FIRECRACKER=1` that is a failure.
//!
//! The guest kernel is the generated minimal `vmlinux` (`hearth_testkit::vmlinux`), which the
//! real loader accepts: no download, works offline.

mod common;
use common::daemon;
use common::vmm;

use std::path::Path;
use std::time::{Duration, Instant};

use daemon::{HearthHost, Leaks};
use hearth_actors::firecracker::api_client::Endpoint;
use hearth_actors::firecracker::ApiClient;
use serde_json::Value;

/// `GET /` on a VM's API socket, from a fresh current-thread runtime.
fn vmm_state(api: &Path) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let info: Value = rt
        .block_on(ApiClient::new(api).get(Endpoint::Instance))
        .unwrap_or_else(|e| panic!("GET / on {}: {e}", api.display()));
    info["state"].as_str().unwrap_or_default().to_owned()
}

/// The binary a process runs.
fn exe(pid: u64) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe link")
}

#[test]
fn hearthd_drives_the_real_binary_with_zero_leaks() {
    let Some(real) = vmm::real_firecracker(module_path!()) else {
        return;
    };
    require_privileged!();
    // Unjailed on purpose (tests/jailer_supervisor.rs drives it jailed): under the default
    // "auto" a jailer in PATH could jail it.
    let mut h = HearthHost::start_with_vmm(&real, &[], "\n[jailer]\nenabled = false\n");
    assert_eq!(h.leaks(), Leaks::none(), "before any VM");
    let real = real.canonicalize().unwrap();

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
    assert_eq!(a["state"], "running", "{a}");
    let pid = a["pid"].as_u64().expect("pid");
    assert_eq!(exe(pid), real, "hearthd runs the real binary");
    let api = h.path("run/a/api.sock");
    assert_eq!(vmm_state(&api), "Running");
    let l = h.leaks();
    assert_eq!((l.vmm_processes, l.guest_set), (1, 1), "{l:?}");

    // Stop: the guest ignores Ctrl+Alt+Del; the ladder ends it with SIGTERM after the grace.
    let t = Instant::now();
    let stopped = h.ctl_ok(&["vm", "stop", "a"]);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "the Ctrl+Alt+Del grace (2 s) was waited out: {:?}",
        t.elapsed()
    );
    assert!(
        h.log().contains("ended by SIGTERM"),
        "the stop escalated to SIGTERM:\n{}",
        h.log()
    );
    assert_eq!(h.leaks().vmm_processes, 0);
    assert!(!api.exists(), "api.sock removed after the stop");
    assert!(
        !h.path("run/a/v.sock").exists(),
        "v.sock removed after the stop"
    );

    // Start again: a new process of the real binary.
    let started = h.ctl_ok(&["vm", "start", "a"]);
    assert_eq!(started["state"], "running", "{started}");
    let pid2 = started["pid"].as_u64().expect("pid");
    assert_ne!(pid2, pid);
    assert_eq!(exe(pid2), real);
    assert_eq!(vmm_state(&api), "Running");

    // hearthd killed: the VM keeps running and is adopted, same pid, its API answering.
    h.kill9();
    assert_eq!(vmm_state(&api), "Running", "the VM outlives hearthd");
    h.launch();
    let after = h.ctl_ok(&["vm", "get", "a"]);
    assert_eq!(
        (after["state"].as_str(), after["pid"].as_u64()),
        (Some("running"), Some(pid2)),
        "{after}"
    );
    assert_eq!(vmm_state(&api), "Running");

    // The exit status hearth reports when the real VMM dies on its own: its own child's
    // signal, and "unknown" for one it adopted (not its child).
    let b = h.ctl_ok(&[
        "vm",
        "create",
        "b",
        "--kernel",
        "vmlinux",
        "--rootfs",
        "base",
        "--no-ready-probe",
    ]);
    let pid_b = b["pid"].as_u64().expect("pid");
    for (vm, pid, want) in [
        ("b", pid_b, "VMM exited: signal 15"),
        ("a", pid2, "VMM exited: unknown status (not a child)"),
    ] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(
            common::wait_until(Duration::from_secs(10), || h.state(vm).as_deref()
                == Some("crashed")),
            "{vm} not crashed: {:?}\n{}",
            h.state(vm),
            h.log()
        );
        let got = h.ctl_ok(&["vm", "get", vm]);
        assert_eq!(got["last_error"].as_str(), Some(want), "{got}");
    }
    assert_eq!(h.leaks().vmm_processes, 0);

    h.ctl_ok(&["vm", "rm", "b"]);
    h.ctl_ok(&["vm", "rm", "a"]);
    assert_eq!(h.ctl_ok(&["vm", "list"]), serde_json::json!([]));
    assert!(
        common::wait_until(Duration::from_secs(10), || h.leaks() == Leaks::none()),
        "leaks after delete: {:?}\n{}",
        h.leaks(),
        h.log()
    );
}
