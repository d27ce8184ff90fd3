//! The simulator's HTTP API end to end: spawns the built binary and checks the boot sequence,
//! Firecracker's validation errors and their texts, and the pre-/post-boot rules.

use hearth_testkit::bodies;
mod support;

use std::time::Duration;

use bodies::{invalid, valid};
use support::Sim;

const NOT_AFTER_BOOT: &str = "The requested operation is not supported after starting the microVM.";

fn dir(sim: &Sim) -> String {
    sim.dir.path().to_str().unwrap().to_owned()
}

#[test]
fn full_boot_sequence_answers_204_and_reports_state() {
    let sim = Sim::start(&["--id", "vm-1"], &[]);
    let d = dir(&sim);
    sim.kernel();
    sim.file("rootfs.ext4");
    sim.file("data.ext4");

    let (status, body) = sim.req("GET", "/", None);
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["state"], "Not started");
    assert_eq!(info["id"], "vm-1");
    assert_eq!(info["app_name"], "Firecracker");

    // All calls on one keep-alive connection.
    let mut c = sim.client();
    for (method, path, body) in [
        ("PUT", "/logger", valid("Logger", 0, &d)),
        ("PUT", "/metrics", valid("Metrics", 0, &d)),
        (
            "PUT",
            "/machine-config",
            valid("MachineConfiguration", 0, &d),
        ),
        (
            "PATCH",
            "/machine-config",
            valid("MachineConfiguration#patch", 0, &d),
        ),
        ("PUT", "/boot-source", valid("BootSource", 0, &d)),
        ("PUT", "/drives/rootfs", valid("Drive", 0, &d)),
        ("PUT", "/drives/data", valid("Drive", 1, &d)),
        ("PUT", "/vsock", valid("Vsock", 0, &d)),
        ("PUT", "/actions", valid("InstanceActionInfo", 0, &d)),
    ] {
        let (status, text) = c.req(method, path, Some(&body));
        assert_eq!(status, 204, "{method} {path}: {text}");
    }
    assert!(sim.path("fc.log").exists());
    assert!(sim.path("v.sock").exists());

    let (status, body) = c.req("GET", "/", None);
    assert_eq!(status, 200);
    assert!(body.contains(r#""state":"Running""#), "{body}");
    let (status, body) = c.req("GET", "/version", None);
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"firecracker_version":"1.17.0-sim"}"#)
    );
    let (status, body) = c.req("GET", "/machine-config", None);
    assert_eq!(status, 200);
    assert!(body.contains(r#""mem_size_mib":512"#), "{body}");
    let (status, body) = c.req("GET", "/vm/config", None);
    assert_eq!(status, 200);
    let cfg: hearth_proto::firecracker::VmConfigFile = serde_json::from_str(&body).unwrap();
    assert_eq!(cfg.drives.len(), 2);

    // Post-boot calls.
    std::fs::write(sim.path("data2.ext4"), b"x").unwrap();
    let (status, text) = c.req("PATCH", "/drives/data", Some(&valid("PartialDrive", 0, &d)));
    assert_eq!(status, 204, "{text}");
    let (status, _) = c.req("PUT", "/actions", Some(&valid("InstanceActionInfo", 2, &d)));
    assert_eq!(status, 204);
    let metrics = std::fs::read_to_string(sim.path("metrics.json")).unwrap();
    assert!(metrics.contains("utc_timestamp_ms"), "{metrics}");
    for (state, want) in [(0, "Paused"), (1, "Running")] {
        let (status, _) = c.req("PATCH", "/vm", Some(&valid("Vm", state, &d)));
        assert_eq!(status, 204);
        let (_, body) = c.req("GET", "/", None);
        assert!(body.contains(&format!(r#""state":"{want}""#)), "{body}");
    }
}

#[test]
fn pre_boot_only_calls_fail_after_start() {
    let sim = Sim::start(&[], &[]);
    let d = dir(&sim);
    sim.boot();
    sim.file("rootfs.ext4");
    for (path, body) in [
        ("/machine-config", valid("MachineConfiguration", 0, &d)),
        ("/boot-source", valid("BootSource", 0, &d)),
        ("/vsock", valid("Vsock", 0, &d)),
        ("/logger", valid("Logger", 0, &d)),
        ("/metrics", valid("Metrics", 0, &d)),
        ("/actions", valid("InstanceActionInfo", 0, &d)),
    ] {
        assert_eq!(
            sim.fault("PUT", path, Some(&body)),
            NOT_AFTER_BOOT,
            "PUT {path}"
        );
    }
    assert_eq!(
        sim.fault(
            "PATCH",
            "/machine-config",
            Some(&valid("MachineConfiguration#patch", 0, &d))
        ),
        NOT_AFTER_BOOT
    );
    // A drive after boot is a hot-plug, refused for PCI (as the real binary does).
    assert_eq!(
        sim.fault("PUT", "/drives/rootfs", Some(&valid("Drive", 0, &d))),
        "PCI is not enabled"
    );
}

#[test]
fn post_boot_only_calls_fail_before_start() {
    let sim = Sim::start(&[], &[]);
    let d = dir(&sim);
    let before = "The requested operation is not supported before starting the microVM.";
    assert_eq!(
        sim.fault("PUT", "/actions", Some(&valid("InstanceActionInfo", 1, &d))),
        before
    );
    assert_eq!(sim.fault("PATCH", "/vm", Some(&valid("Vm", 0, &d))), before);
    assert_eq!(
        sim.fault("PATCH", "/drives/data", Some(&valid("PartialDrive", 0, &d))),
        before
    );
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "a table of requests and Firecracker's wording for each"
)]
fn request_validation_errors_use_firecracker_wording() {
    let sim = Sim::start(&[], &[]);
    let d = dir(&sim);
    sim.file("rootfs.ext4");

    let msg = sim.fault(
        "PUT",
        "/machine-config",
        Some(&invalid("MachineConfiguration", 0, &d)),
    );
    assert!(
        msg.starts_with("An error occurred when deserializing the json body of a request: unknown field `bogus`"),
        "{msg}"
    );
    let msg = sim.fault(
        "PUT",
        "/machine-config",
        Some(&invalid("MachineConfiguration", 1, &d)),
    );
    assert!(
        msg.starts_with("Machine config error: The number of vCPUs"),
        "{msg}"
    );
    let msg = sim.fault(
        "PUT",
        "/machine-config",
        Some(&invalid("MachineConfiguration", 2, &d)),
    );
    assert!(msg.contains("missing field `vcpu_count`"), "{msg}");
    let msg = sim.fault(
        "PUT",
        "/actions",
        Some(&invalid("InstanceActionInfo", 0, &d)),
    );
    assert!(msg.contains("unknown variant `Reboot`"), "{msg}");
    let msg = sim.fault("PATCH", "/vm", Some(&invalid("Vm", 0, &d)));
    assert!(msg.contains("unknown variant `Stopped`"), "{msg}");
    // The spec says CID >= 3, but the real binary accepts 2 (and 0, 1): so does the sim.
    sim.ok("PUT", "/vsock", &invalid("Vsock", 0, &d));
    assert!(sim.path("v2.sock").exists());
    let msg = sim.fault("PUT", "/logger", Some(r#"{"level":"Loud"}"#));
    assert_eq!(
        msg,
        "An error occurred when deserializing the json body of a request: Invalid LevelFilter \
         at line 1 column 16."
    );
    let msg = sim.fault(
        "PUT",
        "/machine-config",
        Some(&invalid("MachineConfiguration", 0, &d)),
    );
    assert!(
        msg.contains(
            "expected one of `vcpu_count`, `mem_size_mib`, `smt`, `cpu_template`, \
             `track_dirty_pages`, `huge_pages`"
        ),
        "the real binary's field order: {msg}"
    );
    let msg = sim.fault(
        "PUT",
        "/boot-source",
        Some(r#"{"kernel_image_path":"/k","bogus":1}"#),
    );
    assert!(
        msg.contains("expected one of `kernel_image_path`, `initrd_path`, `boot_args`"),
        "the real binary's field order: {msg}"
    );
    // A bad MAC is a body error, with its position, as in the real binary.
    assert_eq!(
        sim.fault(
            "PUT",
            "/network-interfaces/eth0",
            Some(r#"{"iface_id":"eth0","host_dev_name":"tapy0","guest_mac":"zz:00:00:00:00:00"}"#)
        ),
        "An error occurred when deserializing the json body of a request: The provided MAC \
         address is invalid. at line 1 column 75."
    );

    // Path ID rules: charset (no hyphen) and path == body.
    let rootfs = valid("Drive", 0, &d);
    assert_eq!(
        sim.fault(
            "PUT",
            "/drives/root-fs",
            Some(&rootfs.replace("\"rootfs\"", "\"root-fs\""))
        ),
        "API Resource IDs can only contain alphanumeric characters and underscores."
    );
    assert_eq!(
        sim.fault("PUT", "/drives/other", Some(&rootfs)),
        "The id from the path does not match the id from the body!"
    );
    assert_eq!(
        sim.fault("PUT", "/drives", Some(&rootfs)),
        "The ID cannot be empty."
    );

    // Unknown endpoints and bodiless calls.
    assert_eq!(
        sim.fault("GET", "/nonexistent", None),
        "Invalid request method and/or path: GET nonexistent."
    );
    assert_eq!(
        sim.fault("DELETE", "/drives/rootfs", None),
        "Invalid request method and/or path: DELETE drives."
    );
    assert_eq!(
        sim.fault("PUT", "/machine-config", None),
        "Empty PUT request."
    );
    assert_eq!(
        sim.fault("GET", "/", Some("{}")),
        "GET request cannot have a body."
    );
}

#[test]
fn files_are_opened_at_put_time_and_one_root_device() {
    let sim = Sim::start(&[], &[]);
    let d = dir(&sim);
    let msg = sim.fault("PUT", "/boot-source", Some(&valid("BootSource", 0, &d)));
    assert!(
        msg.starts_with(
            "Boot source error: The kernel file cannot be opened: No such file or directory"
        ),
        "{msg}"
    );
    let msg = sim.fault("PUT", "/drives/rootfs", Some(&valid("Drive", 0, &d)));
    assert!(msg.starts_with("Drive config error:"), "{msg}");
    assert!(msg.contains("No such file or directory"), "{msg}");

    sim.file("rootfs.ext4");
    sim.ok("PUT", "/drives/rootfs", &valid("Drive", 0, &d));
    let second_root = valid("Drive", 0, &d).replace("\"rootfs\"", "\"rootfs2\"");
    assert_eq!(
        sim.fault("PUT", "/drives/rootfs2", Some(&second_root)),
        "Drive config error: A root block device already exists!"
    );
    assert_eq!(
        sim.fault("PUT", "/actions", Some(&valid("InstanceActionInfo", 0, &d))),
        "Start microvm error: Cannot start microvm without kernel configuration."
    );
}

#[test]
fn vsock_path_that_exists_is_a_binding_error() {
    let sim = Sim::start(&[], &[]);
    let d = dir(&sim);
    sim.file("v.sock");
    let msg = sim.fault("PUT", "/vsock", Some(&valid("Vsock", 0, &d)));
    assert!(
        msg.starts_with("Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: Address"),
        "{msg}"
    );
}

#[test]
fn metrics_can_be_initialised_only_once() {
    let sim = Sim::start(&[], &[]);
    let d = dir(&sim);
    sim.ok("PUT", "/metrics", &valid("Metrics", 0, &d));
    assert_eq!(
        sim.fault("PUT", "/metrics", Some(&valid("Metrics", 0, &d))),
        "Metrics error: Cannot initialize the metrics system due to bad user input: Reinitialization of metrics not allowed."
    );
}

#[test]
fn api_delay_knob_slows_requests_but_keeps_answers() {
    let sim = Sim::start(&[], &[("FC_SIM_API_DELAY_MS", "50")]);
    let start = std::time::Instant::now();
    let (status, _) = sim.req("GET", "/", None);
    assert_eq!(status, 200);
    assert!(start.elapsed() >= Duration::from_millis(50));
}
