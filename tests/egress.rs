//! hearthd on a host with no default route (an offline host, a fresh network namespace): it
//! serves without NAT, answers a NAT request with 503 `unavailable` naming the missing egress
//! interface, and picks the interface up when a default route appears (route events over
//! netlink), after which NAT works. Before, it exited at start-up with "firewall failed: NAT
//! needs an egress interface". The egress follows the default route as it moves to another
//! interface or goes away (also when its interface goes down: no route message then), and a
//! configured egress interface stays put; hearth's rules name only the egress in use.

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

/// hearth's iptables rules that name an interface: the `HEARTH-POSTROUTING` (nat) and
/// `HEARTH-FORWARD` (filter) chains, as `iptables -S` prints them.
fn egress_rules(h: &HearthHost) -> String {
    let nat =
        h.ns.exec_ok(&["iptables", "-t", "nat", "-S", "HEARTH-POSTROUTING"]);
    let filter =
        h.ns.exec_ok(&["iptables", "-t", "filter", "-S", "HEARTH-FORWARD"]);
    format!("{nat}{filter}")
}

/// Waits until hearth's rules masquerade out of `egress` only (`None`: out of nothing) and
/// name no other egress interface; panics with the rules and hearthd's log otherwise.
fn wait_for_egress(h: &HearthHost, egress: Option<&str>) {
    let settled = common::wait_until(Duration::from_secs(10), || {
        let rules = egress_rules(h);
        // Outward masquerades only: published ports' hairpin rule (`-o <bridge>`, DNATed
        // connections between guests) does not depend on the egress interface.
        let masquerades = rules
            .lines()
            .filter(|l| l.contains("MASQUERADE") && !l.contains("--ctstate DNAT"))
            .count();
        let names =
            |i: &str| rules.contains(&format!("-o {i} ")) || rules.contains(&format!("-i {i} "));
        match egress {
            Some(e) => {
                masquerades == 1
                    && names(e)
                    && ["wan0", "wan1"].iter().all(|o| *o == e || !names(o))
            }
            None => masquerades == 0 && !names("wan0") && !names("wan1"),
        }
    });
    assert!(
        settled,
        "rules never settled on egress {egress:?}:\n{}\n{}",
        egress_rules(h),
        h.log()
    );
}

/// NAT for `vm` is refused as unavailable (503) naming the missing egress interface.
fn assert_nat_unavailable(h: &HearthHost, vm: &str) {
    let out = h.ctl(&["vm", "nat", vm, "on"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unavailable") && err.contains("egress interface"),
        "NAT without a default route: {err}"
    );
}

/// A second way out of hearthd's namespace: `wan1` (10.97.0.1) to the upstream's `up1`.
fn add_second_uplink(h: &HearthHost) {
    common::veth(
        &h.ns,
        "wan1",
        "10.97.0.1/24",
        &h.upstream,
        "up1",
        "10.97.0.2/24",
    );
}

#[test]
fn egress_follows_the_default_route_as_it_moves_and_disappears() {
    require_privileged!();
    let h = HearthHost::start_with(&fc_sim::sim_binary(), &[], "", false);
    add_second_uplink(&h);
    h.ctl_ok(&[
        "vm", "create", "web", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    wait_for_egress(&h, None);

    // Appears via wan0.
    h.ns.exec_ok(&["ip", "route", "add", "default", "via", "10.98.0.2"]);
    wait_for_egress(&h, Some("wan0"));
    h.ctl_ok(&["vm", "nat", "web", "on"]);

    // Moves to wan1 (replaced in place): the rules follow, nothing names wan0 any more.
    h.ns.exec_ok(&["ip", "route", "replace", "default", "via", "10.97.0.2"]);
    wait_for_egress(&h, Some("wan1"));
    assert_eq!(
        h.leaks().nat_set,
        1,
        "the guest keeps its NAT through the move"
    );

    // Disappears: nothing is masqueraded and NAT is refused again, as at start-up.
    h.ns.exec_ok(&["ip", "route", "del", "default"]);
    wait_for_egress(&h, None);
    assert_nat_unavailable(&h, "web");

    // Comes back via wan1, then wan1 goes down: the kernel drops the route without a route
    // message (only the link changes), and NAT must notice all the same.
    h.ns.exec_ok(&["ip", "route", "add", "default", "via", "10.97.0.2"]);
    wait_for_egress(&h, Some("wan1"));
    h.ns.exec_ok(&["ip", "link", "set", "wan1", "down"]);
    wait_for_egress(&h, None);
    assert_nat_unavailable(&h, "web");

    h.ctl_ok(&["vm", "rm", "web"]);
    assert!(
        common::wait_until(Duration::from_secs(5), || h.leaks() == Leaks::none()),
        "{:?}",
        h.leaks()
    );
}

#[test]
fn egress_found_at_start_up_follows_the_default_route() {
    require_privileged!();
    // hearthd starts with a default route via wan0: that interface came from the route,
    // not from the configuration, so it must follow the route too.
    let h = HearthHost::start_with(&fc_sim::sim_binary(), &[], "", true);
    add_second_uplink(&h);
    wait_for_egress(&h, Some("wan0"));
    h.ns.exec_ok(&["ip", "route", "replace", "default", "via", "10.97.0.2"]);
    wait_for_egress(&h, Some("wan1"));
    h.ns.exec_ok(&["ip", "route", "del", "default"]);
    wait_for_egress(&h, None);
}

#[test]
fn configured_egress_stays_put_while_it_exists() {
    require_privileged!();
    // The configured interface is used whatever the default route says; when it goes
    // away NAT is refused (naming it), and it is used again when it comes back.
    let h = HearthHost::start_with(
        &fc_sim::sim_binary(),
        &[("HEARTH__NETWORK__EGRESS_INTERFACE", "wan1")],
        "",
        true,
    );
    add_second_uplink(&h);
    wait_for_egress(&h, Some("wan1"));
    h.ctl_ok(&[
        "vm", "create", "web", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    h.ns.exec_ok(&["ip", "route", "del", "default"]);
    std::thread::sleep(Duration::from_millis(500));
    wait_for_egress(&h, Some("wan1"));

    h.ns.exec_ok(&["ip", "link", "del", "wan1"]);
    wait_for_egress(&h, None);
    let out = h.ctl(&["vm", "nat", "web", "on"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("wan1"),
        "NAT with the configured egress gone: {err}"
    );
    add_second_uplink(&h);
    wait_for_egress(&h, Some("wan1"));
    h.ctl_ok(&["vm", "nat", "web", "on"]);
    h.ctl_ok(&["vm", "rm", "web"]);
}
