//! TAP handling, against the real kernel inside a private network namespace (root only): the
//! TAP is attached at `PUT /network-interfaces` with Firecracker's flags, so a TAP held by
//! another VMM is busy (EBUSY) with Firecracker's error text, a missing TAP is created, a
//! re-PUT replaces the device, and duplicate guest MACs are refused.

#[path = "support/bodies.rs"]
mod bodies;
#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use common::NetNs;
use support::Sim;

fn sim_in(ns: &NetNs) -> Sim {
    let dir = tempfile::tempdir().unwrap();
    Sim::start_in(dir, &[], &[], Some(&["ip", "netns", "exec", ns.name()]))
}

#[test]
fn busy_tap_is_ebusy_with_firecracker_text() {
    require_privileged!();
    let ns = NetNs::new("simtap");
    ns.exec_ok(&["ip", "tuntap", "add", "dev", "simtap0", "mode", "tap"]);
    let a = sim_in(&ns);
    let b = sim_in(&ns);
    let body = bodies::valid("NetworkInterface", 0, "");
    a.ok("PUT", "/network-interfaces/eth0", &body);
    // Re-PUT of the same interface replaces the device (the old fd is closed first).
    a.ok("PUT", "/network-interfaces/eth0", &body);
    let msg = b.fault("PUT", "/network-interfaces/eth0", Some(&body));
    assert_eq!(
        msg,
        "Network config error: Could not create the network device: Open tap device failed: \
         Error while creating ifreq structure: Device or resource busy (os error 16). \
         Invalid TUN/TAP Backend provided by simtap0. Check our documentation on setting up \
         the network devices."
    );
    // Once the first VMM is gone, the TAP is free again.
    drop(a);
    b.ok("PUT", "/network-interfaces/eth0", &body);
}

#[test]
fn missing_tap_is_created_down() {
    require_privileged!();
    let ns = NetNs::new("simtap");
    let sim = sim_in(&ns);
    sim.ok(
        "PUT",
        "/network-interfaces/eth0",
        &bodies::valid("NetworkInterface", 0, ""),
    );
    let link = ns.exec_ok(&["ip", "-o", "link", "show", "simtap0"]);
    assert!(!link.contains("state UP"), "{link}");
}

#[test]
fn duplicate_guest_mac_is_refused() {
    require_privileged!();
    let ns = NetNs::new("simtap");
    let sim = sim_in(&ns);
    sim.ok(
        "PUT",
        "/network-interfaces/eth0",
        &bodies::valid("NetworkInterface", 0, ""),
    );
    // Same MAC, written in upper case, on another interface.
    let body = bodies::valid("NetworkInterface", 1, "").replace("06:00:ac", "06:00:AC");
    assert_eq!(
        sim.fault("PUT", "/network-interfaces/eth1", Some(&body)),
        "Network config error: The MAC address is already in use: 06:00:AC:10:00:02"
    );
    // Nothing was attached for the refused interface.
    assert!(!ns.exec(&["ip", "link", "show", "simtap1"]).status.success());
}

#[test]
fn invalid_mtu_and_long_names_are_refused() {
    require_privileged!();
    let ns = NetNs::new("simtap");
    let sim = sim_in(&ns);
    let msg = sim.fault(
        "PUT",
        "/network-interfaces/eth0",
        Some(&bodies::invalid("NetworkInterface", 0, "")),
    );
    assert!(
        msg.starts_with("Network config error: Invalid MTU 40"),
        "{msg}"
    );
    let long = r#"{"iface_id":"eth0","host_dev_name":"a-very-long-tap-name"}"#;
    assert_eq!(
        sim.fault("PUT", "/network-interfaces/eth0", Some(long)),
        "Network config error: Could not create the network device: Open tap device failed: \
         Invalid interface name"
    );
}
