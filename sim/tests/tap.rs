//! TAP handling, against the real kernel inside a private network namespace (root only): the
//! TAP is attached at `PUT /network-interfaces` with Firecracker's flags, so a TAP held by
//! another VMM is busy (EBUSY) with Firecracker's error text, a missing TAP is created, a
//! re-PUT replaces the device, and duplicate guest MACs are refused.

use hearth_testkit as common;
use hearth_testkit::bodies;
use hearth_testkit::require_privileged;
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
    assert_eq!(
        msg,
        "Network config error: Could not create the network device: MTU 40 is out of range \
         [68, 65535]"
    );
    let long = r#"{"iface_id":"eth0","host_dev_name":"a-very-long-tap-name"}"#;
    assert_eq!(
        sim.fault("PUT", "/network-interfaces/eth0", Some(long)),
        "Network config error: Could not create the network device: Open tap device failed: \
         Invalid interface name"
    );
}

#[test]
fn netstack_knob_answers_ping_on_the_tap() {
    require_privileged!();
    let ns = NetNs::new("simtap");
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start_in(
        dir,
        &[],
        &[("FC_SIM_NETSTACK", "1"), ("FC_SIM_BOOT_DELAY_MS", "0")],
        Some(&["ip", "netns", "exec", ns.name()]),
    );
    sim.ok(
        "PUT",
        "/network-interfaces/eth0",
        &bodies::valid("NetworkInterface", 0, ""),
    );
    ns.exec_ok(&["ip", "addr", "add", "10.77.0.1/24", "dev", "simtap0"]);
    ns.exec_ok(&["ip", "link", "set", "simtap0", "up"]);
    let kernel = sim.kernel();
    sim.ok(
        "PUT",
        "/boot-source",
        &format!(
            r#"{{"kernel_image_path":"{kernel}","boot_args":"reboot=k panic=1 ip=10.77.0.2::10.77.0.1:255.255.255.0::eth0:off"}}"#
        ),
    );
    sim.ok("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#);
    assert!(
        common::wait_until(std::time::Duration::from_secs(10), || ns
            .exec(&["ping", "-c1", "-W1", "10.77.0.2"])
            .status
            .success()),
        "the simulated guest never answered ping"
    );
}
