//! `TapPoolActor` over the real kernel (rtnetlink + TUN ioctls), each test in its own network
//! namespace. `ip` is used here only to observe and to plant links, never by the code under test.

mod common;

use std::fmt::Write as _;
use std::rc::Rc;

use actix::{Actor, Addr};
use hearth_actors::host::links::linux::LinuxLinks;
use hearth_actors::host::links::{BridgeSpec, LinkKind, Links, LinksError, PortSpec, TapSpec};
use hearth_actors::lease::{MacAddr, NetLease};
use hearth_actors::tap_pool::{
    AcquireTap, GetStatus, Initialize, PoolStatus, ReleaseTap, TapPoolActor, TapPoolConfig,
    TapPoolError, Teardown,
};

use common::NetNs;

fn config(pool_size: u32) -> TapPoolConfig {
    TapPoolConfig {
        bridge: "hbr0".into(),
        cidr: "10.77.0.0/24".parse().unwrap(),
        tap_prefix: "hth".into(),
        pool_size,
        mtu: 1400,
        tap_owner: Some(4321),
        tap_group: None,
        isolate: true,
    }
}

/// A pool actor over the real kernel; call inside `ns.block_on`.
fn start(config: TapPoolConfig) -> Addr<TapPoolActor> {
    let links = LinuxLinks::new().expect("netlink socket");
    TapPoolActor::new(config, Rc::new(links), common::test_logger())
        .expect("valid config")
        .start()
}

async fn initialize(addr: &Addr<TapPoolActor>, used: Vec<NetLease>) -> PoolStatus {
    addr.send(Initialize { used })
        .await
        .unwrap()
        .expect("initialize")
}

async fn wait_idle(addr: &Addr<TapPoolActor>, free: usize) -> PoolStatus {
    for _ in 0..2000 {
        let s = addr.send(GetStatus {}).await.unwrap();
        if s.pending == 0 && s.free_taps == free {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("pool never settled at {free} free TAPs");
}

/// Names of the links in the namespace whose name starts with `prefix`.
fn links_named(ns: &NetNs, prefix: &str) -> Vec<String> {
    let out = ns.exec_ok(&["ip", "-o", "link", "show"]);
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Asserts that `tap` is a persistent TAP enslaved to hbr0, up, with MTU 1400, the owner, and
/// the given isolation.
fn assert_pool_tap(ns: &NetNs, tap: &str, isolated: bool) {
    let d = ns.exec_ok(&["ip", "-d", "link", "show", tap]);
    for needle in [
        "tun type tap",
        "pi off",
        "vnet_hdr on",
        "persist on",
        "user 4321",
        "master hbr0",
        "mtu 1400",
        if isolated {
            "isolated on"
        } else {
            "isolated off"
        },
    ] {
        assert!(d.contains(needle), "{tap}: no {needle:?} in\n{d}");
    }
    let flags = d
        .split('<')
        .nth(1)
        .and_then(|s| s.split('>').next())
        .unwrap_or("");
    assert!(flags.split(',').any(|f| f == "UP"), "{tap} not up: {d}");
}

#[test]
fn bridge_and_pool_taps_are_set_up() {
    require_privileged!();
    let ns = NetNs::new("tp-setup");
    ns.block_on(|| async {
        let addr = start(config(3));
        let s = initialize(&addr, vec![]).await;
        assert_eq!((s.free_taps, s.leased, s.free_ips), (3, 0, 253));

        let bridge = ns.exec_ok(&["ip", "-d", "link", "show", "hbr0"]);
        assert!(bridge.contains("bridge "), "{bridge}");
        assert!(bridge.contains("mtu 1400"), "{bridge}");
        assert!(bridge.contains(",UP"), "{bridge}");
        // Set explicitly (0a:00:<gateway>), so it cannot follow the ports' MACs.
        assert!(bridge.contains("link/ether 0a:00:0a:4d:00:01"), "{bridge}");
        let addrs = ns.exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", "hbr0"]);
        assert!(addrs.contains("inet 10.77.0.1/24"), "{addrs}");

        assert_eq!(links_named(&ns, "hth"), ["hth0", "hth1", "hth2"]);
        for tap in ["hth0", "hth1", "hth2"] {
            assert_pool_tap(&ns, tap, true);
        }
    });
}

#[test]
fn isolation_can_be_turned_off() {
    require_privileged!();
    let ns = NetNs::new("tp-noiso");
    ns.block_on(|| async {
        let addr = start(TapPoolConfig {
            isolate: false,
            ..config(1)
        });
        initialize(&addr, vec![]).await;
        assert_pool_tap(&ns, "hth0", false);
    });
}

#[test]
fn acquire_release_refill_and_teardown() {
    require_privileged!();
    let ns = NetNs::new("tp-cycle");
    ns.block_on(|| async {
        let addr = start(config(2));
        initialize(&addr, vec![]).await;
        let a = addr.send(AcquireTap {}).await.unwrap().unwrap();
        let b = addr.send(AcquireTap {}).await.unwrap().unwrap();
        assert_eq!((a.tap.as_str(), b.tap.as_str()), ("hth0", "hth1"));
        assert_eq!(a.guest_ip.to_string(), "10.77.0.2");
        assert_eq!(a.mac.to_string(), "06:00:0a:4d:00:02");
        // The pool refills itself in the background.
        let s = wait_idle(&addr, 2).await;
        assert_eq!(s.leased, 2);
        assert_eq!(links_named(&ns, "hth"), ["hth0", "hth1", "hth2", "hth3"]);
        assert_pool_tap(&ns, "hth3", true);

        // Pool full: released TAPs are deleted; a fresh IP comes after the last one.
        addr.send(ReleaseTap { lease: a.clone() })
            .await
            .unwrap()
            .unwrap();
        wait_idle(&addr, 2).await;
        assert_eq!(links_named(&ns, "hth"), ["hth1", "hth2", "hth3"]);
        let c = addr.send(AcquireTap {}).await.unwrap().unwrap();
        assert_eq!(c.guest_ip.to_string(), "10.77.0.4");

        let unknown = addr.send(ReleaseTap { lease: a }).await.unwrap();
        assert!(matches!(unknown, Err(TapPoolError::UnknownLease { .. })));

        wait_idle(&addr, 2).await;
        addr.send(ReleaseTap { lease: b }).await.unwrap().unwrap();
        addr.send(ReleaseTap { lease: c }).await.unwrap().unwrap();
        let report = addr
            .send(Teardown {
                remove_bridge: true,
            })
            .await
            .unwrap()
            .unwrap();
        assert!(report.bridge_removed);
        assert!(
            links_named(&ns, "h").is_empty(),
            "{:?}",
            links_named(&ns, "h")
        );
    });
}

#[test]
fn restart_adopts_leases_reclaims_strays_and_recreates_missing_taps() {
    require_privileged!();
    let ns = NetNs::new("tp-restart");
    let leases = ns.block_on(|| async {
        let addr = start(config(2));
        initialize(&addr, vec![]).await;
        let a = addr.send(AcquireTap {}).await.unwrap().unwrap();
        let b = addr.send(AcquireTap {}).await.unwrap().unwrap();
        wait_idle(&addr, 2).await;
        vec![a, b]
    });
    // The first daemon is gone (its System stopped); its TAPs persist. Plant a stray TAP,
    // a foreign link with the prefix, and lose one leased TAP.
    assert_eq!(links_named(&ns, "hth"), ["hth0", "hth1", "hth2", "hth3"]);
    ns.exec_ok(&["ip", "tuntap", "add", "dev", "hth9", "mode", "tap"]);
    // (This kernel has no dummy driver; a bridge serves as the foreign link.)
    ns.exec_ok(&["ip", "link", "add", "hth5", "type", "bridge"]);
    ns.exec_ok(&["ip", "link", "del", "hth1"]);

    ns.block_on(|| async {
        let addr = start(config(2));
        let s = initialize(&addr, leases.clone()).await;
        assert_eq!((s.leased, s.free_taps, s.free_ips), (2, 2, 251));
        // hth2, hth3 reclaimed (lowest numbers), hth9 deleted, hth1 re-created, hth5 untouched.
        assert_eq!(
            links_named(&ns, "hth"),
            ["hth0", "hth1", "hth2", "hth3", "hth5"]
        );
        for tap in ["hth0", "hth1", "hth2", "hth3"] {
            assert_pool_tap(&ns, tap, true);
        }
        let foreign = ns.exec_ok(&["ip", "-d", "link", "show", "hth5"]);
        assert!(
            foreign.contains("bridge ") && !foreign.contains("master"),
            "{foreign}"
        );
        // The bridge address was not added twice.
        let addrs = ns.exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", "hbr0"]);
        assert_eq!(addrs.lines().count(), 1, "{addrs}");

        // The adopted leases are live: release one, acquire continues after the last IP.
        addr.send(ReleaseTap {
            lease: leases[0].clone(),
        })
        .await
        .unwrap()
        .unwrap();
        let c = addr.send(AcquireTap {}).await.unwrap().unwrap();
        assert_eq!(c.guest_ip.to_string(), "10.77.0.4");
        assert_eq!(c.tap, "hth2");
    });
}

#[test]
fn second_actor_over_same_namespace_changes_nothing() {
    require_privileged!();
    let ns = NetNs::new("tp-idem");
    ns.block_on(|| async {
        let first = start(config(3));
        initialize(&first, vec![]).await;
        let lease = first.send(AcquireTap {}).await.unwrap().unwrap();
        wait_idle(&first, 3).await;
        let before = ns.exec_ok(&["ip", "-o", "link", "show"]);

        let second = start(config(3));
        let s = initialize(&second, vec![lease]).await;
        assert_eq!((s.leased, s.free_taps), (1, 3));
        let after = ns.exec_ok(&["ip", "-o", "link", "show"]);
        let indexes = |text: &str| -> Vec<String> {
            text.lines()
                .map(|l| l.split(": ").take(2).collect::<Vec<_>>().join(":"))
                .collect()
        };
        assert_eq!(
            indexes(&before),
            indexes(&after),
            "same links, same indexes"
        );
    });
}

#[test]
fn existing_non_bridge_with_bridge_name_is_refused() {
    require_privileged!();
    let ns = NetNs::new("tp-notbr");
    ns.exec_ok(&[
        "ip", "link", "add", "hbr0", "type", "veth", "peer", "name", "hpeer0",
    ]);
    ns.block_on(|| async {
        let addr = start(config(2));
        let err = addr
            .send(Initialize { used: vec![] })
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(
                &err,
                TapPoolError::Host {
                    source: LinksError::NotABridge { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(links_named(&ns, "hth").is_empty());
    });
}

#[test]
fn backend_refuses_taken_names_and_tolerates_missing_links() {
    require_privileged!();
    let ns = NetNs::new("tp-backend");
    ns.exec_ok(&["ip", "link", "add", "hth8", "type", "bridge"]);
    ns.block_on(|| async {
        let links = LinuxLinks::new().unwrap();
        let spec = |name: &str| TapSpec {
            name: name.into(),
            owner: None,
            group: None,
        };
        // A taken name (here by a bridge) is refused, and the link is left alone.
        let err = links.create_tap(spec("hth8")).await.unwrap_err();
        assert!(matches!(err, LinksError::Exists { .. }), "{err}");
        let bad = links
            .create_tap(spec("way-too-long-name"))
            .await
            .unwrap_err();
        assert!(matches!(bad, LinksError::InvalidName { .. }), "{bad}");

        let bridge = links
            .ensure_bridge(BridgeSpec {
                name: "hbr0".into(),
                gateway: "10.77.0.1".parse().unwrap(),
                prefix_len: 24,
                mtu: 1500,
                mac: MacAddr::for_gateway("10.77.0.1".parse().unwrap()),
            })
            .await
            .unwrap();
        let index = links.create_tap(spec("hth0")).await.unwrap();
        let again = links.create_tap(spec("hth0")).await.unwrap_err();
        assert!(matches!(again, LinksError::Exists { .. }), "{again}");
        // Attaching to a bridge that does not exist fails and leaves the TAP detached.
        let port = |bridge_index| PortSpec {
            bridge_index,
            mtu: 1500,
            isolated: true,
        };
        assert!(links
            .attach_port("hth0", index, port(999_999))
            .await
            .is_err());
        links
            .attach_port("hth0", index, port(bridge))
            .await
            .unwrap();

        let mut listed = links.list_links("hth").await.unwrap();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        let summary: Vec<_> = listed
            .iter()
            .map(|l| (l.name.as_str(), l.kind, l.master))
            .collect();
        assert_eq!(
            summary,
            [
                ("hth0", LinkKind::Tap, Some(bridge)),
                ("hth8", LinkKind::Bridge, None)
            ]
        );

        links.delete_link("hth0").await.unwrap();
        links.delete_link("hth0").await.unwrap(); // already gone: fine
        assert_eq!(links_named(&ns, "hth"), ["hth8"]);
    });
}

#[test]
fn empty_pool_makes_taps_on_demand() {
    require_privileged!();
    let ns = NetNs::new("tp-ondemand");
    ns.block_on(|| async {
        let addr = start(config(0));
        initialize(&addr, vec![]).await;
        assert!(links_named(&ns, "hth").is_empty());
        let a = addr.send(AcquireTap {}).await.unwrap().unwrap();
        assert_eq!(a.tap, "hth0");
        assert_pool_tap(&ns, "hth0", true);
        addr.send(ReleaseTap { lease: a }).await.unwrap().unwrap();
        wait_idle(&addr, 0).await;
        assert!(
            links_named(&ns, "hth").is_empty(),
            "pool of 0 keeps nothing"
        );
    });
}

/// The ports of bridge `hbr0` (TAPs enslaved to it), as the kernel lists them.
fn bridge_ports(ns: &NetNs) -> usize {
    ns.exec_ok(&["ip", "-o", "link", "show", "master", "hbr0"])
        .lines()
        .count()
}

#[test]
fn a_22_fills_its_bridge_without_the_pool_overflowing_it() {
    require_privileged!();
    // A /22 (the widest subnet the configuration takes) has 1021 guest addresses; the bridge
    // holds at most 1023 ports. With every address leased, the pool of 16 must shrink to what
    // is left (2) instead of the refill hitting the kernel's limit (EXFULL) over and over.
    let ns = NetNs::new("tp-full");
    ns.block_on(|| async {
        let addr = start(TapPoolConfig {
            cidr: "10.76.0.0/22".parse().unwrap(),
            ..config(16)
        });
        initialize(&addr, vec![]).await;
        let mut leases = Vec::new();
        for i in 0..1021 {
            match addr.send(AcquireTap {}).await.unwrap() {
                Ok(lease) => leases.push(lease),
                Err(e) => panic!(
                    "acquire {i} failed: {e} ({:?})",
                    std::error::Error::source(&e)
                ),
            }
        }
        let s = wait_idle(&addr, 2).await;
        assert_eq!((s.leased, s.refill_failures), (1021, 0), "{s:?}");
        assert_eq!(bridge_ports(&ns), 1023);
        // Every address is out: the next acquire is refused for that, cleanly.
        let err = addr.send(AcquireTap {}).await.unwrap().unwrap_err();
        assert!(matches!(err, TapPoolError::IpsExhausted { .. }), "{err}");

        // All released at once (most TAPs queued for deletion, the ports still taken) and
        // leased again right away: the acquires reuse queued TAPs or wait for the ports a
        // deletion frees, none is refused.
        for lease in leases.drain(..) {
            addr.send(ReleaseTap { lease }).await.unwrap().unwrap();
        }
        for i in 0..1021 {
            match addr.send(AcquireTap {}).await.unwrap() {
                Ok(lease) => leases.push(lease),
                Err(e) => panic!("acquire {i} after the mass release failed: {e}"),
            }
        }
        let s = wait_idle(&addr, 2).await;
        assert_eq!((s.leased, s.refill_failures), (1021, 0), "{s:?}");
        assert_eq!(bridge_ports(&ns), 1023);

        // Releases bring the pool back to its size.
        for lease in leases.drain(..100) {
            addr.send(ReleaseTap { lease }).await.unwrap().unwrap();
        }
        let s = wait_idle(&addr, 16).await;
        assert_eq!((s.leased, s.refill_failures), (921, 0), "{s:?}");
        assert_eq!(bridge_ports(&ns), 921 + 16);
        for lease in leases {
            addr.send(ReleaseTap { lease }).await.unwrap().unwrap();
        }
        addr.send(Teardown {
            remove_bridge: true,
        })
        .await
        .unwrap()
        .unwrap();
        assert!(links_named(&ns, "hth").is_empty());
    });
}

#[test]
fn a_bridge_out_of_ports_is_named_as_such() {
    require_privileged!();
    // 1023 other links (TAPs made with `ip`) fill bridge hbr0: the kernel refuses one more port with
    // EXFULL, which the backend reports as `BridgeFull`, and the pool as a failed acquire
    // that leaves nothing behind.
    let ns = NetNs::new("tp-exfull");
    ns.exec_ok(&["ip", "link", "add", "hbr0", "type", "bridge"]);
    let mut batch = String::new();
    for i in 0..hearth_actors::host::links::BRIDGE_MAX_PORTS {
        writeln!(
            batch,
            "tuntap add dev full{i} mode tap\nlink set full{i} master hbr0"
        )
        .unwrap();
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), batch).unwrap();
    ns.exec_ok(&["ip", "-batch", &file.path().display().to_string()]);
    assert_eq!(bridge_ports(&ns), 1023);
    ns.block_on(|| async {
        let addr = start(config(0));
        initialize(&addr, vec![]).await;
        let err = addr.send(AcquireTap {}).await.unwrap().unwrap_err();
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            matches!(
                &err,
                TapPoolError::Host {
                    source: LinksError::BridgeFull { .. },
                    ..
                }
            ),
            "{err}: {source:?}"
        );
        assert_eq!(
            source.as_deref(),
            Some("Bridge has no port left for hth0 (a Linux bridge takes at most 1023 ports)")
        );
        assert!(links_named(&ns, "hth").is_empty(), "the TAP was undone");
        assert_eq!(status_of(&addr).await.free_ips, 253);
    });
}

async fn status_of(addr: &Addr<TapPoolActor>) -> PoolStatus {
    addr.send(GetStatus {}).await.unwrap()
}
