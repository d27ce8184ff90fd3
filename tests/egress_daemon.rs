//! Egress policy through hearthd and hearthctl: a VM created with `--egress deny` gets its
//! elements in hearth's egress table, `vm egress` shows and changes them at run time, a crash
//! and restart of hearthd keeps them (the counter too), and deleting the VM leaves none.
//! With the simulator's guest stack, packets the policy drops make the VM's counter in
//! `/metrics` grow.

mod common;
use common::daemon::{self, HearthHost};

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use hearth_proto::agent::codes;

/// The upstream end of the egress veth: outside any allowlist of these tests.
const UPSTREAM_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);

/// Has `vm`'s guest open a TCP connection to `addr:port` (through its agent, over the hybrid
/// vsock socket), giving up after `timeout_ms`; `Err` carries the agent's error code.
fn connect(
    h: &HearthHost,
    vm: &str,
    addr: Ipv4Addr,
    port: u16,
    timeout_ms: u64,
) -> Result<(), String> {
    common::guest_agent::connect(h, vm, addr, port, "", timeout_ms)
        .map(|_| ())
        .map_err(|(code, _)| code)
}

/// hearthd's `/metrics` text, read over its Unix socket.
fn metrics(h: &HearthHost) -> String {
    let mut s = UnixStream::connect(h.path("hearthd.sock")).expect("connect to hearthd");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: hearthd\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    text
}

/// The value of `hearth_egress_denied_packets_total` for `vm`, if listed.
fn denied_metric(h: &HearthHost, vm: &str) -> Option<u64> {
    let prefix = format!("hearth_egress_denied_packets_total{{vm=\"{vm}\"}} ");
    metrics(h)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|v| v.parse().unwrap()))
}

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

#[test]
fn dropped_packets_make_the_vms_denied_counter_grow_in_metrics() {
    require_privileged!();
    let h = HearthHost::start(&[("FC_SIM_NETSTACK", "1")], "");
    for (name, policy) in [
        ["--egress", "deny", "--allow", "10.20.0.0/16"].as_slice(),
        ["--egress", "allow"].as_slice(),
    ]
    .iter()
    .zip(["job", "free"])
    .map(|(p, n)| (n, *p))
    {
        let mut args = vec![
            "vm", "create", name, "--kernel", "vmlinux", "--rootfs", "base", "--nat",
        ];
        args.extend_from_slice(policy);
        let vm = h.ctl_ok(&args);
        assert_eq!(vm["state"], "running", "{vm}");
    }
    // Listed from the start, at 0; a VM in allow mode has no counter.
    assert_eq!(denied_metric(&h, "job"), Some(0), "{}", metrics(&h));
    assert_eq!(denied_metric(&h, "free"), None);

    // A connection outside the allowlist: its SYNs are dropped (a timeout, not a reset) and
    // counted. The guest stack starts after the agent, so the first tries may answer
    // `no_network`.
    let mut last = None;
    let dropped = common::wait_until(Duration::from_secs(15), || {
        last = Some(connect(&h, "job", UPSTREAM_IP, 9, 1500));
        last == Some(Err(codes::TIMEOUT.to_owned()))
    });
    assert!(dropped, "the connection was not dropped: {last:?}");
    let first = denied_metric(&h, "job").expect("job's counter");
    assert!(first > 0, "{}", metrics(&h));
    // Again: the counter grows, and agrees with the egress endpoint.
    assert_eq!(
        connect(&h, "job", UPSTREAM_IP, 9, 1500),
        Err(codes::TIMEOUT.to_owned())
    );
    let second = denied_metric(&h, "job").expect("job's counter");
    assert!(second > first, "{first} then {second}");
    let shown = h.ctl_ok(&["vm", "egress", "job"]);
    assert_eq!(shown["denied_packets"].as_u64(), Some(second), "{shown}");
}
