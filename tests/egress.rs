//! hearthd on a host with no default route (an offline host, a fresh network namespace): it
//! serves without NAT, answers a NAT request with 503 `unavailable` naming the missing egress
//! interface, and picks the interface up when a default route appears (route events over
//! netlink), after which NAT works. Before, it exited at start-up with "firewall failed: NAT
//! needs an egress interface".

mod common;
use common::daemon;
use hearth_testkit::fc_sim;

use std::time::Duration;

use daemon::{HearthHost, Leaks};

#[test]
fn hearthd_without_default_route_serves_and_nat_follows_the_route() {
    require_privileged!();
    // `start_with` waits until hearthd answers its health check.
    let h = HearthHost::start_with(&fc_sim::sim_binary(), &[], "", false);
    assert_eq!(h.leaks(), Leaks::none(), "before any VM");

    // A VM without NAT works.
    let vm = h.ctl_ok(&[
        "vm", "create", "web", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    assert_eq!(vm["state"], "running", "{vm}");

    // NAT is refused as unavailable, with the reason, and changes nothing.
    let out = h.ctl(&["vm", "nat", "web", "on"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "NAT without egress succeeded");
    assert!(
        err.contains("unavailable") && err.contains("egress interface"),
        "{err}"
    );
    assert_eq!(h.leaks().nat_set, 0);
    // A create asking for NAT is refused the same way and leaves nothing behind.
    let out = h.ctl(&[
        "vm", "create", "nat1", "--kernel", "vmlinux", "--rootfs", "base", "--nat",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unavailable"),
        "{err}"
    );
    // The supervisor keeps a failed create's record (state `failed`) for inspection.
    if h.state("nat1").is_some() {
        h.ctl_ok(&["vm", "rm", "nat1"]);
    }

    // The route appears: hearthd picks wan0 up by itself.
    h.ns.exec_ok(&["ip", "route", "add", "default", "via", "10.98.0.2"]);
    let nat_on = common::wait_until(Duration::from_secs(10), || {
        h.ctl(&["vm", "nat", "web", "on"]).status.success()
    });
    assert!(
        nat_on,
        "NAT never worked after the route appeared:\n{}",
        h.log()
    );
    assert_eq!(h.leaks().nat_set, 1);
    let masquerade =
        h.ns.exec_ok(&["iptables", "-t", "nat", "-S", "HEARTH-POSTROUTING"]);
    assert!(masquerade.contains("-o wan0"), "{masquerade}");

    h.ctl_ok(&["vm", "rm", "web"]);
    assert!(
        common::wait_until(Duration::from_secs(5), || h.leaks() == Leaks::none()),
        "{:?}",
        h.leaks()
    );
}
