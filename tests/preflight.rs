//! hearthd's host checks, run inside a private namespace (listing iptables may create tables
//! with the nft backend, so never in the host's own).

mod common;

use common::NetNs;

#[test]
fn iptables_is_usable_in_a_fresh_namespace() {
    require_privileged!();
    let ns = NetNs::new("pf");
    let finding = ns.run(hearth::preflight::iptables_works);
    assert_eq!(finding.problem, None, "{finding}");
}

#[test]
fn every_prerequisite_is_reported_by_name() {
    require_privileged!();
    let ns = NetNs::new("pf");
    let findings =
        ns.run(|| hearth::preflight::check_host(Some(std::path::Path::new("/nonexistent/fc"))));
    let names: Vec<&str> = findings.iter().map(|f| f.what.as_str()).collect();
    for expected in [
        "root (CAP_NET_ADMIN)",
        "/dev/net/tun",
        "/dev/kvm",
        "iptables",
        "ipset",
        "iptables usable (filter table)",
        "firecracker binary",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let fc = findings
        .iter()
        .find(|f| f.what == "firecracker binary")
        .unwrap();
    assert!(
        fc.problem.is_some(),
        "a missing configured binary is reported"
    );
}
