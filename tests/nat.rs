//! Privileged tests of `NatActor` with the real firewall backend, each in its own network
//! namespace with a veth "egress" interface and a bridge made here. They assert the rule and
//! set state (`iptables -S`, `ipset list`), for both iptables flavours; real packets through
//! these rules are tested elsewhere.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools and binaries (ip, mkfs, hearthd, hearthctl) and clean up their own directories"
)]

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use actix::{Actor, Addr};
use common::NetNs;
use hearth_actors::host::firewall::linux::{IptablesFlavor, LinuxFirewall};
use hearth_actors::host::firewall::{Firewall, LeaseChange, PortLease, SetEntry, Table};
use hearth_actors::lease::{MacAddr, NetLease};
use hearth_actors::nat::rules::{self, HOOKS};
use hearth_actors::nat::{
    EnsureNat, GetStatus, GuestSpec, NatActor, NatConfig, NatError, Reconcile, RegisterGuest,
    SetEgress, Teardown, UnregisterGuest,
};
use hearth_actors::testing::{guest, ip, lease, nat_config};

const FLAVORS: [IptablesFlavor; 2] = [IptablesFlavor::Nft, IptablesFlavor::Legacy];

fn config() -> NatConfig {
    nat_config("wan0")
}

/// A namespace with a `wan0` (the egress) and the bridge `hearth0` at the gateway.
fn namespace() -> NetNs {
    let ns = NetNs::new("hnat");
    // No dummy driver on every kernel: one end of a veth pair stands for the uplink.
    ns.exec_ok(&[
        "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan0p",
    ]);
    ns.exec_ok(&["ip", "link", "set", "wan0", "up"]);
    ns.exec_ok(&["ip", "link", "add", "hearth0", "type", "bridge"]);
    ns.exec_ok(&["ip", "addr", "add", "172.31.240.1/24", "dev", "hearth0"]);
    ns.exec_ok(&["ip", "link", "set", "hearth0", "up"]);
    ns
}

/// Starts a NAT actor on the current thread's namespace.
fn start(config: NatConfig, flavor: IptablesFlavor) -> Addr<NatActor> {
    NatActor::new(
        config,
        Box::new(LinuxFirewall::new(flavor)),
        common::test_logger(),
    )
    .unwrap()
    .start()
}

/// `iptables -S` of a whole table.
fn table(ns: &NetNs, flavor: IptablesFlavor, table: Table) -> String {
    ns.exec_ok(&[flavor.iptables(), "-w", "-t", table.name(), "-S"])
}

/// The rules of one chain, without its `-N` / `-P` line.
fn chain(ns: &NetNs, flavor: IptablesFlavor, t: Table, chain: &str) -> Vec<String> {
    ns.exec_ok(&[flavor.iptables(), "-w", "-t", t.name(), "-S", chain])
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_owned)
        .collect()
}

/// The members of a set as `ipset list` prints them (MACs lower-cased).
fn members(ns: &NetNs, set: &str) -> BTreeSet<String> {
    let out = ns.exec_ok(&["ipset", "list", set]);
    out.lines()
        .skip_while(|l| !l.starts_with("Members:"))
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn set_names(ns: &NetNs) -> Vec<String> {
    ns.exec_ok(&["ipset", "list", "-n"])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn strings<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.into_iter().map(str::to_owned).collect()
}

/// hearth's chains hold exactly the computed rules, and each built-in chain's first rule is
/// the only jump to hearth's chain.
fn assert_chains_exact(ns: &NetNs, flavor: IptablesFlavor, config: &NatConfig) {
    for (t, builtin, ours) in HOOKS {
        assert_eq!(
            chain(ns, flavor, t, ours),
            rules::chain_rules(config, Some("wan0"), ours),
            "{flavor:?} {ours}"
        );
        let jump = format!("-A {builtin} -j {ours}");
        let rules = chain(ns, flavor, t, builtin);
        assert_eq!(
            rules.first(),
            Some(&jump),
            "{flavor:?} {builtin}: {rules:?}"
        );
        let to_ours = rules
            .iter()
            .filter(|r| r.ends_with(&format!("-j {ours}")))
            .count();
        assert_eq!(to_ours, 1, "{flavor:?} {builtin}: {rules:?}");
    }
}

fn ensure(n: u8, enable: bool) -> EnsureNat {
    EnsureNat {
        guest_ip: ip(n),
        tap: format!("hth{n}"),
        enable,
    }
}

#[test]
fn set_membership_is_exact_after_repeated_ensure_and_disable() {
    require_privileged!();
    for flavor in FLAVORS {
        let owner = namespace();
        let ns = &owner;
        ns.block_on(move || async move {
            let nat = start(config(), flavor);
            nat.send(Reconcile { desired: vec![] })
                .await
                .unwrap()
                .unwrap();
            assert_chains_exact(ns, flavor, &config());
            assert_eq!(
                ns.exec_ok(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
                "1"
            );
            assert!(members(ns, "hearth-nat").is_empty());

            for _ in 0..3 {
                nat.send(ensure(5, true)).await.unwrap().unwrap();
            }
            nat.send(ensure(6, true)).await.unwrap().unwrap();
            assert_eq!(
                members(ns, "hearth-nat"),
                strings(["172.31.240.5", "172.31.240.6"])
            );
            for _ in 0..3 {
                nat.send(ensure(5, false)).await.unwrap().unwrap();
            }
            assert_eq!(members(ns, "hearth-nat"), strings(["172.31.240.6"]));

            // Anti-spoofing pairs: registering again with another MAC replaces it.
            let other = MacAddr([0x06, 0, 0, 0, 0, 0x42]);
            nat.send(RegisterGuest { lease: lease(6) })
                .await
                .unwrap()
                .unwrap();
            nat.send(RegisterGuest {
                lease: NetLease {
                    mac: other,
                    ..lease(6)
                },
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(
                members(ns, "hearth-guests"),
                strings(["172.31.240.6,06:00:00:00:00:42"])
            );
            for _ in 0..2 {
                nat.send(UnregisterGuest {
                    lease: NetLease {
                        mac: other,
                        ..lease(6)
                    },
                })
                .await
                .unwrap()
                .unwrap();
            }
            assert!(members(ns, "hearth-guests").is_empty());
            assert!(members(ns, "hearth-nat").is_empty());

            // Per-guest changes never touched the rules; a second reconcile keeps one jump each.
            assert_chains_exact(ns, flavor, &config());
            nat.send(Reconcile {
                desired: vec![guest(7, true)],
            })
            .await
            .unwrap()
            .unwrap();
            assert_chains_exact(ns, flavor, &config());
            assert_eq!(members(ns, "hearth-nat"), strings(["172.31.240.7"]));
            assert_eq!(
                members(ns, "hearth-guests"),
                strings(["172.31.240.7,06:00:ac:1f:f0:07"])
            );
            assert_eq!(set_names(ns).len(), 2, "no scratch set left");
        });
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one crash-and-restart scenario, read top to bottom"
)]
fn reconcile_after_a_crash_removes_stale_state_and_keeps_foreign_rules() {
    require_privileged!();
    for flavor in FLAVORS {
        let owner = namespace();
        let ns = &owner;
        let ipt = flavor.iptables();
        ns.block_on(move || async move {
            let first = start(config(), flavor);
            first
                .send(Reconcile {
                    desired: vec![guest(5, true), guest(6, false)],
                })
                .await
                .unwrap()
                .unwrap();
        });
        // Leftovers and damage a crash or a hand could leave, plus rules hearth did not make.
        for argv in [
            vec!["ipset", "add", "hearth-nat", "172.31.240.99"],
            vec![
                "ipset",
                "add",
                "hearth-guests",
                "172.31.240.98,06:00:00:00:00:98",
            ],
            vec!["ipset", "create", "hearth-nat-tmp", "hash:ip"],
            vec!["ipset", "add", "hearth-nat-tmp", "172.31.240.97"],
            vec![ipt, "-w", "-A", "HEARTH-FORWARD", "-j", "ACCEPT"],
            vec![ipt, "-w", "-A", "FORWARD", "-j", "HEARTH-FORWARD"],
            vec![
                ipt,
                "-w",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-j",
                "HEARTH-POSTROUTING",
            ],
            vec![
                ipt,
                "-w",
                "-A",
                "FORWARD",
                "-s",
                "10.9.9.9/32",
                "-j",
                "ACCEPT",
            ],
            vec![
                ipt, "-w", "-I", "INPUT", "1", "-p", "tcp", "-m", "tcp", "--dport", "22", "-j",
                "ACCEPT",
            ],
            vec![
                ipt,
                "-w",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "wan0",
                "-j",
                "MASQUERADE",
            ],
        ] {
            ns.exec_ok(&argv);
        }
        ns.block_on(move || async move {
            // A new actor, as after a restart, reconciles to the store's view.
            let second = start(config(), flavor);
            second
                .send(Reconcile {
                    desired: vec![guest(6, true), guest(8, false)],
                })
                .await
                .unwrap()
                .unwrap();
        });
        assert_chains_exact(ns, flavor, &config());
        assert_eq!(members(ns, "hearth-nat"), strings(["172.31.240.6"]));
        assert_eq!(
            members(ns, "hearth-guests"),
            strings([
                "172.31.240.6,06:00:ac:1f:f0:06",
                "172.31.240.8,06:00:ac:1f:f0:08"
            ])
        );
        assert_eq!(set_names(ns), ["hearth-nat", "hearth-guests"]);
        let forward = chain(ns, flavor, Table::Filter, "FORWARD");
        assert!(
            forward.contains(&"-A FORWARD -s 10.9.9.9/32 -j ACCEPT".to_owned()),
            "{forward:?}"
        );
        let input = chain(ns, flavor, Table::Filter, "INPUT");
        assert_eq!(
            input[1], "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
            "{input:?}"
        );
        let post = chain(ns, flavor, Table::Nat, "POSTROUTING");
        assert!(
            post.contains(&"-A POSTROUTING -o wan0 -j MASQUERADE".to_owned()),
            "{post:?}"
        );
    }
}

#[test]
fn teardown_leaves_nothing_but_foreign_rules() {
    require_privileged!();
    for flavor in FLAVORS {
        let owner = namespace();
        let ns = &owner;
        let ipt = flavor.iptables();
        ns.exec_ok(&[
            ipt,
            "-w",
            "-A",
            "FORWARD",
            "-s",
            "10.9.9.9/32",
            "-j",
            "ACCEPT",
        ]);
        let before = (
            table(ns, flavor, Table::Nat),
            table(ns, flavor, Table::Filter),
        );
        ns.block_on(move || async move {
            let nat = start(config(), flavor);
            nat.send(Reconcile {
                desired: vec![guest(5, true)],
            })
            .await
            .unwrap()
            .unwrap();
            nat.send(ensure(6, true)).await.unwrap().unwrap();
            assert!(table(ns, flavor, Table::Filter).contains("HEARTH-INPUT"));
            nat.send(Teardown).await.unwrap().unwrap();
            // Twice is fine: nothing left to remove.
            nat.send(Teardown).await.unwrap().unwrap();
        });
        let after = (
            table(ns, flavor, Table::Nat),
            table(ns, flavor, Table::Filter),
        );
        assert_eq!(after, before, "{flavor:?}");
        assert!(set_names(ns).is_empty());
        assert_eq!(
            ns.exec_ok(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
            "0"
        );
    }
}

#[test]
fn teardown_by_a_fresh_actor_cleans_a_crashed_run() {
    require_privileged!();
    let owner = namespace();
    let ns = &owner;
    let flavor = IptablesFlavor::System;
    ns.block_on(move || async move {
        let nat = start(config(), flavor);
        nat.send(Reconcile {
            desired: vec![guest(5, true)],
        })
        .await
        .unwrap()
        .unwrap();
    });
    ns.exec_ok(&["iptables", "-w", "-I", "INPUT", "1", "-j", "HEARTH-INPUT"]);
    ns.block_on(move || async move {
        let nat = start(config(), flavor);
        nat.send(Teardown).await.unwrap().unwrap();
    });
    for t in [Table::Nat, Table::Filter] {
        let text = table(ns, flavor, t);
        assert!(!text.contains("HEARTH"), "{text}");
    }
    assert!(set_names(ns).is_empty());
}

#[test]
fn missing_egress_interface_refuses_nat_until_it_exists() {
    require_privileged!();
    let owner = namespace();
    let ns = &owner;
    let flavor = IptablesFlavor::System;
    ns.block_on(move || async move {
        let nat = start(
            NatConfig {
                egress: Some("wan9".into()),
                ..config()
            },
            flavor,
        );
        // Everything but NAT is installed; NAT is refused, naming the interface.
        nat.send(Reconcile {
            desired: vec![guest(5, true)],
        })
        .await
        .unwrap()
        .unwrap();
        let err = nat.send(ensure(6, true)).await.unwrap().unwrap_err();
        assert!(matches!(err, NatError::EgressMissing { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "NAT needs egress interface wan9, which does not exist"
        );
        // The interface appears: re-checking it turns NAT on, the earlier flag included.
        let out = std::process::Command::new("ip")
            .args([
                "link", "add", "wan9", "type", "veth", "peer", "name", "wan9p",
            ])
            .output()
            .expect("ip");
        assert!(out.status.success(), "{out:?}");
        nat.send(SetEgress {
            interface: Some("wan9".into()),
        })
        .await
        .unwrap()
        .unwrap();
        nat.send(ensure(6, true)).await.unwrap().unwrap();
        let status = nat.send(GetStatus).await.unwrap().unwrap();
        assert_eq!(status.egress.as_deref(), Some("wan9"));
        assert_eq!(status.nat, BTreeSet::from([ip(5), ip(6)]));
    });
    let masquerade = table(ns, flavor, Table::Nat);
    assert!(masquerade.contains("-o wan9"), "{masquerade}");
}

#[test]
fn switching_anti_spoofing_off_removes_its_rules_and_set() {
    require_privileged!();
    let owner = namespace();
    let ns = &owner;
    let flavor = IptablesFlavor::System;
    let relaxed = NatConfig {
        anti_spoofing: false,
        block_guest_to_host: false,
        isolate_guests: false,
        ..config()
    };
    let relaxed_config = relaxed.clone();
    ns.block_on(move || async move {
        let nat = start(config(), flavor);
        nat.send(Reconcile {
            desired: vec![guest(5, true)],
        })
        .await
        .unwrap()
        .unwrap();
        let nat = start(relaxed_config, flavor);
        nat.send(Reconcile {
            desired: vec![guest(5, true)],
        })
        .await
        .unwrap()
        .unwrap();
    });
    assert_chains_exact(ns, flavor, &relaxed);
    assert!(chain(ns, flavor, Table::Filter, "HEARTH-INPUT").is_empty());
    assert_eq!(set_names(ns), ["hearth-nat"]);
}

#[test]
fn changing_the_subnet_swaps_in_a_guest_set_with_the_new_range() {
    require_privileged!();
    let owner = namespace();
    let ns = &owner;
    let flavor = IptablesFlavor::System;
    let wider = NatConfig {
        cidr: "172.31.0.0/16".parse().unwrap(),
        gateway: Ipv4Addr::new(172, 31, 0, 1),
        ..config()
    };
    let wider_config = wider.clone();
    ns.block_on(move || async move {
        let nat = start(config(), flavor);
        nat.send(Reconcile {
            desired: vec![guest(5, true)],
        })
        .await
        .unwrap()
        .unwrap();
        let nat = start(wider_config, flavor);
        let moved = GuestSpec {
            tap: "hth9".into(),
            ip: Ipv4Addr::new(172, 31, 7, 9),
            mac: MacAddr::for_guest(Ipv4Addr::new(172, 31, 7, 9)),
            nat: true,
        };
        nat.send(Reconcile {
            desired: vec![moved],
        })
        .await
        .unwrap()
        .unwrap();
    });
    let header = ns.exec_ok(&["ipset", "list", "hearth-guests"]);
    assert!(
        header.contains("range 172.31.0.0-172.31.255.255"),
        "{header}"
    );
    assert_eq!(
        members(ns, "hearth-guests"),
        strings(["172.31.7.9,06:00:ac:1f:07:09"])
    );
    assert_eq!(members(ns, "hearth-nat"), strings(["172.31.7.9"]));
    assert_chains_exact(ns, flavor, &wider);
}

#[test]
fn backend_errors_name_the_command_or_operation_and_the_tool_text() {
    require_privileged!();
    let owner = namespace();
    let ns = &owner;
    for flavor in FLAVORS {
        ns.run(|| {
            let mut fw = LinuxFirewall::new(flavor);
            let err = fw
                .restore_rules("*filter\n-A HEARTH-NOPE -j ACCEPT\nCOMMIT\n")
                .unwrap_err()
                .to_string();
            assert!(err.contains(flavor.iptables_restore()), "{err}");
            // The tool's own text, pointing at the failing line.
            assert!(err.contains("line 2") || err.contains("line: 2"), "{err}");

            let err = fw
                .add_to_set("hearth-absent", SetEntry::Ip(ip(5)))
                .unwrap_err()
                .to_string();
            assert!(err.contains("add 172.31.240.5 to hearth-absent"), "{err}");
            assert!(err.contains("does not exist"), "{err}");

            let err = fw
                .restore_sets("create hearth-x hash:nope\n")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("ipset restore") && err.contains("hash:nope"),
                "{err}"
            );

            // Absent things are fine to remove.
            fw.destroy_set("hearth-absent").unwrap();
        });
    }
}

/// The elements of hearth's bridge lease set as `nft` prints them, one per entry.
fn port_leases(ns: &NetNs) -> BTreeSet<String> {
    let out = ns.exec_ok(&["nft", "list", "set", "bridge", "hearth", "leases"]);
    let Some(start) = out.find("elements = {") else {
        return BTreeSet::new();
    };
    let list = &out[start + "elements = {".len()..];
    let list = &list[..list.find('}').unwrap()];
    list.split(',')
        .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|e| !e.is_empty())
        .collect()
}

#[test]
fn lease_elements_go_in_and_out_over_netlink_in_one_transaction() {
    require_privileged!();
    let owner = namespace();
    let ns = &owner;
    ns.block_on(move || async move {
        let nat = start(config(), IptablesFlavor::Nft);
        nat.send(Reconcile {
            desired: vec![guest(2, false)],
        })
        .await
        .unwrap()
        .unwrap();
        let two = "\"hth2\" . 06:00:ac:1f:f0:02 . 172.31.240.2";
        assert_eq!(port_leases(ns), strings([two]));

        // In: the element is in the kernel when the answer comes (nft reads the same key
        // back, so the key layout is nft's).
        nat.send(RegisterGuest { lease: lease(6) })
            .await
            .unwrap()
            .unwrap();
        let six = "\"hth6\" . 06:00:ac:1f:f0:06 . 172.31.240.6";
        assert_eq!(port_leases(ns), strings([two, six]));

        // Moved to another port and MAC: the old element goes in the same transaction.
        let other = MacAddr([0x06, 0, 0, 0, 0, 0x42]);
        let mut moved = NetLease {
            mac: other,
            ..lease(6)
        };
        moved.tap = "hth9".into();
        nat.send(RegisterGuest {
            lease: moved.clone(),
        })
        .await
        .unwrap()
        .unwrap();
        let nine = "\"hth9\" . 06:00:00:00:00:42 . 172.31.240.6";
        assert_eq!(port_leases(ns), strings([two, nine]));

        // Out, twice (the second finds nothing and is fine).
        for _ in 0..2 {
            nat.send(UnregisterGuest {
                lease: moved.clone(),
            })
            .await
            .unwrap()
            .unwrap();
        }
        assert_eq!(port_leases(ns), strings([two]));

        // A restart's reconcile replaces the elements with the known guests.
        nat.send(RegisterGuest { lease: lease(6) })
            .await
            .unwrap()
            .unwrap();
        nat.send(Reconcile {
            desired: vec![guest(3, false)],
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            port_leases(ns),
            strings(["\"hth3\" . 06:00:ac:1f:f0:03 . 172.31.240.3"])
        );
        nat.send(Teardown).await.unwrap().unwrap();
    });
}

#[test]
fn lease_update_failures_name_the_set_and_apply_nothing() {
    require_privileged!();
    let owner = namespace();
    let ns = &owner;
    // A set that holds one element: the second add of a batch is refused by the kernel.
    ns.exec_ok(&["nft", "add", "table", "bridge", "hearth"]);
    ns.exec_ok(&[
        "nft",
        "add set bridge hearth leases { type ifname . ether_addr . ipv4_addr; size 1; }",
    ]);
    ns.run(|| {
        let mut fw = LinuxFirewall::new(IptablesFlavor::Nft);
        let element = |n: u8| PortLease {
            port: format!("hth{n}"),
            mac: MacAddr::for_guest(ip(n)),
            ip: ip(n),
        };
        let err = fw
            .update_port_leases(
                "hearth",
                "leases",
                &[LeaseChange::Add(element(2)), LeaseChange::Add(element(3))],
            )
            .unwrap_err();
        let text = error_chain(&err);
        assert!(text.contains("bridge hearth leases"), "{text}");
        assert!(text.contains("add \"hth3\""), "{text}");
        // All or nothing: the first element is not there either.
        assert!(port_leases(ns).is_empty());

        // A table that does not exist: named, with the kernel's reason.
        let err = fw
            .update_port_leases("hearth-absent", "leases", &[LeaseChange::Add(element(2))])
            .unwrap_err();
        let text = error_chain(&err);
        assert!(
            text.contains("bridge hearth-absent leases") && text.contains("No such file"),
            "{text}"
        );

        // A port name no interface can have: refused before anything is sent.
        let bad = PortLease {
            port: "a-name-of-16-byt".into(),
            ..element(2)
        };
        let err = fw
            .update_port_leases(
                "hearth",
                "leases",
                &[LeaseChange::Add(element(2)), LeaseChange::Add(bad)],
            )
            .unwrap_err();
        assert!(error_chain(&err).contains("1-15 bytes"), "{err}");
        assert!(port_leases(ns).is_empty());

        // The socket still works after the refusals; removing an absent element is fine
        // (the set has room for it: a removal adds the element first).
        fw.update_port_leases("hearth", "leases", &[LeaseChange::Add(element(2))])
            .unwrap();
        assert_eq!(
            port_leases(ns),
            strings(["\"hth2\" . 06:00:ac:1f:f0:02 . 172.31.240.2"])
        );
        for _ in 0..2 {
            fw.update_port_leases("hearth", "leases", &[LeaseChange::Remove(element(2))])
                .unwrap();
            assert!(port_leases(ns).is_empty());
        }
    });
}

/// An error and its sources, joined.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.join(": ")
}
