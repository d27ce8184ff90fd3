//! End-to-end port publishing through the real `hearthd` and `hearthctl` (`firecracker-sim`
//! as the VMM, in private namespaces): `--publish` at create, `vm port`, `vm publish` /
//! `unpublish` at run time, a conflict naming the other VM, the rules kept across a `kill -9`
//! of hearthd (re-applied from the store by `Open`), and nothing left in the kernel once the
//! VMs are deleted. Packets through these rules: tests/publish.rs.

mod common;
use common::daemon;
use common::publish_maps::{hairpin_elements, published_elements};

use daemon::HearthHost;

fn ports(h: &HearthHost, vm: &str) -> Vec<String> {
    let v = h.ctl_ok(&["vm", "port", vm]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let m: hearth_proto::api_publish::PortMapping =
                serde_json::from_value(m.clone()).unwrap();
            m.to_string()
        })
        .collect()
}

#[test]
fn published_ports_follow_the_vm_across_changes_restarts_and_delete() {
    require_privileged!();
    let mut h = HearthHost::start(&[], "");
    let vm = h.ctl_ok(&[
        "vm",
        "create",
        "web",
        "--kernel",
        "vmlinux",
        "--rootfs",
        "base",
        "--publish",
        "8080:80",
        "--publish",
        "10.98.0.1:5353:53/udp",
    ]);
    assert_eq!(vm["state"], "running", "{vm}");
    let ip = vm["guest_ip"].as_str().unwrap().to_owned();
    assert_eq!(ports(&h, "web"), ["8080:80/tcp", "10.98.0.1:5353:53/udp"]);
    let rules = published_elements(&h.ns);
    assert_eq!(rules.len(), 2, "{rules:?}\n{}", h.log());
    assert!(
        rules.contains(&format!("tcp . 8080 : {ip} . 80")),
        "{rules:?}"
    );
    // Each port has its hairpin proxy on the gateway.
    let hairpins = hairpin_elements(&h.ns);
    assert_eq!(hairpins.len(), 2, "{hairpins:?}");
    assert!(
        hairpins
            .iter()
            .any(|e| e.starts_with("tcp . 8080 : 172.31.240.1 . ")),
        "{hairpins:?}"
    );

    // At run time; another VM asking for a taken port is refused naming the owner.
    h.ctl_ok(&["vm", "publish", "web", "8443:443"]);
    h.ctl_ok(&[
        "vm", "create", "db", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    let out = h.ctl(&["vm", "publish", "db", "8080:81"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("\"web\""), "{err}");
    assert!(ports(&h, "db").is_empty());
    // A create whose port collides fails and leaves nothing: not its NAT entry (the NAT
    // switch ran before the refusal; the guest's unregistration would also clear it, so this
    // does not single out the capability's own undo), not a rule.
    let out = h.ctl(&[
        "vm",
        "create",
        "clash",
        "--kernel",
        "vmlinux",
        "--rootfs",
        "base",
        "--nat",
        "--publish",
        "8080:82",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("\"web\""), "{err}");
    assert_eq!(h.state("clash").as_deref(), Some("failed"));
    assert_eq!(h.leaks().nat_set, 0, "the NAT switch was undone");
    assert_eq!(published_elements(&h.ns).len(), 3);
    h.ctl_ok(&["vm", "rm", "clash"]);
    // An address the host does not have: refused (409, the host's state), nothing recorded.
    let out = h.ctl(&["vm", "publish", "db", "10.99.0.1:8081:81"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not an address of this host"),
        "{err}"
    );
    assert!(ports(&h, "db").is_empty());
    assert_eq!(published_elements(&h.ns).len(), 3);

    // hearthd killed and started again: Open rebuilds the chains and re-publishes.
    h.kill9();
    h.launch();
    assert_eq!(h.ctl_ok(&["vm", "get", "web"])["state"], "running");
    let rules = published_elements(&h.ns);
    assert_eq!(rules.len(), 3, "{rules:?}\n{}", h.log());
    assert_eq!(
        hairpin_elements(&h.ns).len(),
        3,
        "new proxies after the restart"
    );

    h.ctl_ok(&["vm", "unpublish", "web", "8443:443"]);
    assert_eq!(published_elements(&h.ns).len(), 2);
    let out = h.ctl(&["vm", "unpublish", "web", "8443:443"]);
    assert!(!out.status.success(), "not published any more");

    // A stopped VM holds no port; starting it publishes again.
    h.ctl_ok(&["vm", "stop", "web"]);
    assert!(published_elements(&h.ns).is_empty());
    assert!(hairpin_elements(&h.ns).is_empty());
    h.ctl_ok(&["vm", "start", "web"]);
    assert_eq!(published_elements(&h.ns).len(), 2);

    h.ctl_ok(&["vm", "rm", "web"]);
    h.ctl_ok(&["vm", "rm", "db"]);
    assert!(published_elements(&h.ns).is_empty());
    assert!(hairpin_elements(&h.ns).is_empty());
    daemon::assert_no_leaks(&h);
}
