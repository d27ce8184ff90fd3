//! Egress policy through hearthd and hearthctl: a VM created with `--egress deny` gets its
//! elements in hearth's egress table, `vm egress` shows and changes them at run time, a crash
//! and restart of hearthd keeps them (the counter too), and deleting the VM leaves none.

mod common;
use common::daemon::{self, HearthHost};

/// The element lines of hearth's egress table holding one guest's address, each prefixed by
/// its set's name (a CIDR is its network address in the set of its prefix length).
fn elements_of(h: &HearthHost, ip: &str) -> String {
    let mut set = String::new();
    let mut out = Vec::new();
    for line in
        h.ns.exec_ok(&["nft", "list", "table", "ip", "hearth-egress"])
            .lines()
    {
        if let Some(name) = line.trim().strip_prefix("set ") {
            name.trim_end_matches(" {").clone_into(&mut set);
        } else if line.contains("elements") && line.contains(ip) {
            out.push(format!("{set}: {}", line.trim()));
        }
    }
    out.join("\n")
}

#[test]
fn egress_policy_follows_the_vm_through_changes_restart_and_delete() {
    require_privileged!();
    let mut h = HearthHost::start(&[], "");
    let vm = h.ctl_ok(&[
        "vm",
        "create",
        "job",
        "--kernel",
        "vmlinux",
        "--rootfs",
        "base",
        "--nat",
        "--egress",
        "deny",
        "--allow",
        "10.20.0.0/16",
        "--allow",
        "10.30.0.0/16:443",
        "--allow-domain",
        "*.pypi.org",
    ]);
    assert_eq!(vm["state"], "running", "{vm}");
    assert_eq!(vm["spec"]["egress"]["mode"], "deny", "{vm}");
    let ip = vm["guest_ip"].as_str().unwrap().to_owned();
    let held = elements_of(&h, &ip);
    assert!(
        held.contains(&format!("nets16: elements = {{ {ip} . 10.20.0.0 }}")),
        "{held}"
    );
    assert!(held.contains(". tcp . 443 . 10.30.0.0"), "{held}");

    // Shown, with the denied-packet counter of a live deny-mode guest.
    let shown = h.ctl_ok(&["vm", "egress", "job"]);
    assert_eq!(shown["allow_domains"][0], "*.pypi.org", "{shown}");
    assert!(shown["denied_packets"].is_u64(), "{shown}");

    // Changed at run time: the old CIDR goes, the new one comes.
    let changed = h.ctl_ok(&["vm", "egress", "job", "--allow", "10.21.0.0/16"]);
    assert_eq!(changed["allow"][0], "10.21.0.0/16", "{changed}");
    let held = elements_of(&h, &ip);
    assert!(
        held.contains(". 10.21.0.0") && !held.contains(". 10.20.0.0"),
        "{held}"
    );
    // Bad input changes nothing (refused by hearthctl before sending, exit 2).
    let bad = h.ctl(&["vm", "egress", "job", "--allow-domain", "a..b"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(elements_of(&h, &ip), held);

    // hearthd crashes and comes back: the policy is still in force and still the VM's.
    h.kill9();
    h.launch();
    assert_eq!(h.state("job").as_deref(), Some("running"));
    assert_eq!(elements_of(&h, &ip), held);
    let shown = h.ctl_ok(&["vm", "egress", "job"]);
    assert_eq!(shown["allow"][0], "10.21.0.0/16", "{shown}");
    assert!(shown["denied_packets"].is_u64(), "{shown}");

    // Back to allow at run time: nothing of the guest left; deny again, then delete.
    h.ctl_ok(&["vm", "egress", "job", "--egress", "allow"]);
    assert_eq!(elements_of(&h, &ip), "");
    h.ctl_ok(&["vm", "egress", "job", "--allow", "10.22.0.0/16"]);
    assert!(!elements_of(&h, &ip).is_empty());
    let rm = h.ctl(&["vm", "rm", "job"]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    daemon::assert_no_leaks(&h);
}
