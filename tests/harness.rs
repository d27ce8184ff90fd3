//! Checks of the namespace harness itself: a namespace is private, is torn down when dropped
//! (also after a panic inside it), and veth links carry traffic between namespaces.

mod common;

use common::NetNs;

#[test]
fn namespace_is_private_and_removed_on_drop() {
    require_privileged!();
    let ns = NetNs::new("hh");
    let name = ns.name().to_owned();
    // Only loopback exists inside, whatever the host has.
    let links = ns.exec_ok(&["ip", "-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    // A thread inside sees the same single interface. (Not via /sys/class/net: sysfs shows the
    // namespace of whoever mounted it, not the thread's.)
    let names: Vec<String> = ns.run(|| {
        nix::net::if_::if_nameindex()
            .unwrap()
            .iter()
            .map(|i| i.name().to_string_lossy().into_owned())
            .collect()
    });
    assert_eq!(names, vec!["lo".to_owned()]);
    drop(ns);
    assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
}

#[test]
fn panic_inside_namespace_still_tears_it_down() {
    require_privileged!();
    let ns = NetNs::new("hh");
    let path = format!("/run/netns/{}", ns.name());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ns.run(|| panic!("planned"));
    }));
    assert!(result.is_err());
    drop(ns);
    assert!(!std::path::Path::new(&path).exists());
}

#[test]
fn veth_connects_two_namespaces() {
    require_privileged!();
    let a = NetNs::new("hh");
    let b = NetNs::new("hh");
    common::veth(&a, "va", "10.200.0.1/30", &b, "vb", "10.200.0.2/30");
    a.exec_ok(&["ping", "-c", "1", "-W", "2", "10.200.0.2"]);
}
