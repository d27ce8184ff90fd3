//! Actor tests against the recording fake links.

use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};

use super::*;
use crate::host::links::fake::{FakeLinks, FakeOp, LinksCall};
use crate::host::links::LinkKind;
use crate::lease::MacAddr;

fn logger() -> Logger {
    Logger::root(slog::Discard, slog::o!())
}

/// /29: five guest addresses 10.9.0.2..=10.9.0.6.
fn config(pool_size: u32) -> TapPoolConfig {
    TapPoolConfig {
        bridge: "hbr0".into(),
        cidr: "10.9.0.0/29".parse().unwrap(),
        tap_prefix: "hth".into(),
        pool_size,
        mtu: 1400,
        tap_owner: Some(1000),
        tap_group: None,
        isolate: true,
    }
}

fn start(config: TapPoolConfig, fake: &FakeLinks) -> Addr<TapPoolActor> {
    TapPoolActor::new(config, Rc::new(fake.clone()), logger())
        .unwrap()
        .start()
}

async fn started(pool_size: u32, fake: &FakeLinks) -> Addr<TapPoolActor> {
    let addr = start(config(pool_size), fake);
    addr.send(Initialize { used: vec![] })
        .await
        .unwrap()
        .unwrap();
    addr
}

async fn status(addr: &Addr<TapPoolActor>) -> PoolStatus {
    addr.send(GetStatus {}).await.unwrap()
}

async fn acquire(addr: &Addr<TapPoolActor>) -> Result<NetLease, TapPoolError> {
    addr.send(AcquireTap {}).await.unwrap()
}

/// Polls the actor until `cond` holds on its status (or panics after 5 s).
async fn wait_status(addr: &Addr<TapPoolActor>, cond: impl Fn(&PoolStatus) -> bool) -> PoolStatus {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = status(addr).await;
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "condition never held; last {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 9, 0, last)
}

fn used(tap: &str, last: u8) -> NetLease {
    NetLease {
        tap: tap.into(),
        mac: MacAddr::for_guest(ip(last)),
        guest_ip: ip(last),
        gateway: ip(1),
        prefix_len: 29,
    }
}

fn taps(fake: &FakeLinks) -> Vec<String> {
    fake.links()
        .into_iter()
        .filter(|(_, l)| l.kind == LinkKind::Tap)
        .map(|(name, _)| name)
        .collect()
}

#[actix::test]
async fn initialize_sets_up_bridge_and_fills_pool_with_attached_isolated_taps() {
    let fake = FakeLinks::new();
    let addr = start(config(3), &fake);
    let s = addr
        .send(Initialize { used: vec![] })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (s.ready, s.free_taps, s.leased, s.free_ips),
        (true, 3, 0, 5)
    );

    let bridge = fake.link("hbr0").unwrap();
    assert_eq!(bridge.kind, LinkKind::Bridge);
    assert!(bridge.up && bridge.ipv6_off);
    assert_eq!(bridge.mtu, 1400);
    assert_eq!(bridge.addresses, vec![(ip(1), 29)]);
    assert_eq!(taps(&fake), ["hth0", "hth1", "hth2"]);
    for tap in taps(&fake) {
        let l = fake.link(&tap).unwrap();
        assert_eq!(l.master, Some(bridge.index), "{tap}");
        assert!(l.up && l.isolated && l.ipv6_off, "{tap}");
        assert_eq!((l.mtu, l.owner), (1400, Some(1000)), "{tap}");
    }
}

#[actix::test]
async fn isolation_off_is_applied() {
    let fake = FakeLinks::new();
    let addr = start(
        TapPoolConfig {
            isolate: false,
            ..config(1)
        },
        &fake,
    );
    addr.send(Initialize { used: vec![] })
        .await
        .unwrap()
        .unwrap();
    assert!(!fake.link("hth0").unwrap().isolated);
}

#[actix::test]
async fn messages_before_initialize_and_second_initialize_are_refused() {
    let fake = FakeLinks::new();
    let addr = start(config(1), &fake);
    assert!(matches!(
        acquire(&addr).await,
        Err(TapPoolError::NotInitialized)
    ));
    let r = addr
        .send(ReleaseTap {
            lease: used("hth0", 2),
        })
        .await
        .unwrap();
    assert!(matches!(r, Err(TapPoolError::NotInitialized)));
    assert!(fake.calls().is_empty());
    addr.send(Initialize { used: vec![] })
        .await
        .unwrap()
        .unwrap();
    let again = addr.send(Initialize { used: vec![] }).await.unwrap();
    assert!(matches!(again, Err(TapPoolError::AlreadyInitialized)));
}

#[actix::test]
async fn initialize_is_atomic_acquire_sent_meanwhile_waits_for_it() {
    let fake = FakeLinks::new();
    fake.set_create_delay(Some(Duration::from_millis(20)));
    let addr = start(config(2), &fake);
    // Both queued at once: without AtomicResponse the acquire would run mid-Initialize
    // and be refused as NotInitialized.
    let init = addr.send(Initialize { used: vec![] });
    let acq = addr.send(AcquireTap {});
    let (init, acq) = futures::join!(init, acq);
    assert_eq!(init.unwrap().unwrap().free_taps, 2);
    assert_eq!(acq.unwrap().unwrap().tap, "hth0");
}

#[actix::test]
async fn concurrent_on_demand_acquires_get_distinct_taps_and_ips() {
    let fake = FakeLinks::new();
    let addr = started(0, &fake).await;
    fake.set_create_delay(Some(Duration::from_millis(20)));
    let (a, b, c) = futures::join!(acquire(&addr), acquire(&addr), acquire(&addr));
    let mut got: Vec<_> = [a, b, c]
        .into_iter()
        .map(|l| {
            let l = l.unwrap();
            (l.tap, l.guest_ip)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("hth0".to_string(), ip(2)),
            ("hth1".to_string(), ip(3)),
            ("hth2".to_string(), ip(4))
        ]
    );
    assert_eq!(status(&addr).await.leased, 3);
}

#[actix::test]
async fn warm_acquire_is_in_memory_and_not_blocked_by_refill() {
    let fake = FakeLinks::new();
    let addr = started(2, &fake).await;
    // Every background creation now takes a minute: acquires must not wait for it.
    fake.set_create_delay(Some(Duration::from_secs(60)));
    fake.clear_calls();
    let a = acquire(&addr).await.unwrap();
    let b = acquire(&addr).await.unwrap();
    assert_eq!((a.tap.as_str(), b.tap.as_str()), ("hth0", "hth1"));
    assert_eq!((a.guest_ip, b.guest_ip), (ip(2), ip(3)));
    assert_eq!(a.mac, MacAddr::for_guest(ip(2)));
    assert_eq!((a.gateway, a.prefix_len), (ip(1), 29));
    // The only host calls: one neighbour pin per lease (no TAP made or touched).
    let bridge = fake.link("hbr0").unwrap().index;
    assert_eq!(
        fake.calls(),
        [
            LinksCall::PinNeighbour(bridge, "hth0".into(), ip(2), a.mac),
            LinksCall::PinNeighbour(bridge, "hth1".into(), ip(3), b.mac)
        ]
    );
    let s = status(&addr).await;
    assert_eq!((s.free_taps, s.leased, s.pending), (0, 2, 1));
}

#[actix::test]
async fn neighbour_pins_follow_leases() {
    let fake = FakeLinks::new();
    let addr = started(1, &fake).await;
    let bridge = fake.link("hbr0").unwrap().index;
    // One from the warm pool, one made on demand.
    let a = acquire(&addr).await.unwrap();
    let b = acquire(&addr).await.unwrap();
    assert_eq!(
        fake.neighbours(),
        [((bridge, a.guest_ip), a.mac), ((bridge, b.guest_ip), b.mac)].into()
    );
    assert_eq!(
        fake.forwarding(),
        [(a.mac, a.tap.clone()), (b.mac, b.tap.clone())].into()
    );
    addr.send(ReleaseTap { lease: a.clone() })
        .await
        .unwrap()
        .unwrap();
    wait_status(&addr, |s| s.pending == 0).await;
    assert_eq!(fake.neighbours(), [((bridge, b.guest_ip), b.mac)].into());
}

#[actix::test]
async fn failed_pin_refuses_the_lease_and_keeps_tap_and_ip() {
    let fake = FakeLinks::new();
    let addr = started(1, &fake).await;
    fake.fail(FakeOp::PinNeighbour, None, 1);
    let err = acquire(&addr).await.unwrap_err();
    assert!(err.to_string().contains("pin the neighbour entry"), "{err}");
    let s = status(&addr).await;
    assert_eq!((s.free_taps, s.leased, s.free_ips), (1, 0, 5));
    assert!(fake.neighbours().is_empty());
    let a = acquire(&addr).await.unwrap();
    assert_eq!(a.tap, "hth0");
}

#[actix::test]
async fn initialize_pins_used_leases_and_removes_stale_pins() {
    let fake = FakeLinks::new();
    let bridge = fake.plant("hbr0", LinkKind::Bridge);
    fake.plant("hth4", LinkKind::Tap);
    // A crash left the pin of a released address, and one with a wrong MAC.
    fake.plant_neighbour(bridge, ip(5), MacAddr::for_guest(ip(5)));
    fake.plant_neighbour(bridge, ip(2), MacAddr([6, 0, 0, 0, 0, 1]));
    let addr = start(config(1), &fake);
    addr.send(Initialize {
        used: vec![used("hth4", 2)],
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        fake.neighbours(),
        [((bridge, ip(2)), MacAddr::for_guest(ip(2)))].into()
    );
}

#[actix::test]
async fn refill_restores_pool_size_in_background() {
    let fake = FakeLinks::new();
    let addr = started(2, &fake).await;
    acquire(&addr).await.unwrap();
    acquire(&addr).await.unwrap();
    let s = wait_status(&addr, |s| s.free_taps == 2 && s.pending == 0).await;
    assert_eq!(s.leased, 2);
    assert_eq!(taps(&fake), ["hth0", "hth1", "hth2", "hth3"]);
}

#[actix::test]
async fn freed_ip_is_not_reused_immediately() {
    let fake = FakeLinks::new();
    let addr = started(2, &fake).await;
    let a = acquire(&addr).await.unwrap();
    let b = acquire(&addr).await.unwrap();
    addr.send(ReleaseTap { lease: a.clone() })
        .await
        .unwrap()
        .unwrap();
    let c = acquire(&addr).await.unwrap();
    assert_eq!(c.guest_ip, ip(4), "round-robin after {}", b.guest_ip);
    assert_ne!(c.guest_ip, a.guest_ip);
}

#[actix::test]
async fn exhausted_ips_are_a_clear_error_that_changes_nothing() {
    let fake = FakeLinks::new();
    let addr = started(1, &fake).await;
    let mut leases = Vec::new();
    for _ in 0..5 {
        // Beyond the warm TAP, the pool makes TAPs on demand.
        leases.push(acquire(&addr).await.unwrap());
    }
    let ips: Vec<_> = leases.iter().map(|l| l.guest_ip).collect();
    assert_eq!(ips, [2, 3, 4, 5, 6].map(ip));
    let before = wait_status(&addr, |s| s.pending == 0).await;
    let err = acquire(&addr).await.unwrap_err();
    assert!(
        matches!(err, TapPoolError::IpsExhausted { leased: 5, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("10.9.0.0/29"), "{err}");
    assert_eq!(status(&addr).await, before);
}

#[actix::test]
async fn releasing_an_unknown_lease_is_refused_and_changes_nothing() {
    let fake = FakeLinks::new();
    let addr = started(2, &fake).await;
    let a = acquire(&addr).await.unwrap();
    let before = wait_status(&addr, |s| s.pending == 0).await;
    let mut wrong_ip = a.clone();
    wrong_ip.guest_ip = ip(6);
    for bogus in [used("hth9", 5), wrong_ip] {
        let err = addr
            .send(ReleaseTap { lease: bogus })
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, TapPoolError::UnknownLease { .. }), "{err}");
    }
    assert_eq!(status(&addr).await, before);
    addr.send(ReleaseTap { lease: a.clone() })
        .await
        .unwrap()
        .unwrap();
    let twice = addr.send(ReleaseTap { lease: a }).await.unwrap();
    assert!(matches!(twice, Err(TapPoolError::UnknownLease { .. })));
}

#[actix::test]
async fn release_returns_tap_to_pool_or_deletes_it_when_full() {
    let fake = FakeLinks::new();
    let addr = started(1, &fake).await;
    let a = acquire(&addr).await.unwrap();
    wait_status(&addr, |s| s.free_taps == 1 && s.pending == 0).await;
    // Pool full: a's TAP is deleted, in the background.
    addr.send(ReleaseTap { lease: a.clone() })
        .await
        .unwrap()
        .unwrap();
    wait_status(&addr, |s| s.pending == 0).await;
    assert!(fake.link(&a.tap).is_none());
    assert!(fake
        .calls()
        .contains(&LinksCall::DeleteLinks(vec![a.tap.clone()])));
    let s = status(&addr).await;
    assert_eq!((s.free_taps, s.leased, s.free_ips), (1, 0, 5));

    // Pool short (refill blocked): b's TAP goes back into the pool.
    fake.fail(FakeOp::CreateTap, None, usize::MAX);
    let b = acquire(&addr).await.unwrap();
    addr.send(ReleaseTap { lease: b.clone() })
        .await
        .unwrap()
        .unwrap();
    wait_status(&addr, |s| s.free_taps == 1).await;
    assert!(fake.link(&b.tap).is_some());
    assert_eq!(acquire(&addr).await.unwrap().tap, b.tap);
}

#[actix::test]
async fn refill_landing_on_a_full_pool_is_deleted() {
    let fake = FakeLinks::new();
    let addr = started(1, &fake).await;
    fake.set_create_delay(Some(Duration::from_millis(50)));
    let a = acquire(&addr).await.unwrap();
    // The release refills the pool before the background creation lands.
    addr.send(ReleaseTap { lease: a.clone() })
        .await
        .unwrap()
        .unwrap();
    let s = wait_status(&addr, |s| s.pending == 0).await;
    assert_eq!((s.free_taps, s.leased), (1, 0));
    assert_eq!(taps(&fake), std::slice::from_ref(&a.tap));
}

#[actix::test]
async fn failed_delete_of_released_tap_keeps_it_in_the_pool() {
    let fake = FakeLinks::new();
    let addr = started(1, &fake).await;
    let a = acquire(&addr).await.unwrap();
    wait_status(&addr, |s| s.pending == 0 && s.free_taps == 1).await;
    fake.fail(FakeOp::DeleteLink, Some(&a.tap), 1);
    let release = ReleaseTap { lease: a.clone() };
    addr.send(release).await.unwrap().unwrap();
    let s = wait_status(&addr, |s| s.pending == 0).await;
    assert_eq!((s.free_taps, s.leased, s.free_ips), (2, 0, 5));
    assert!(fake.link(&a.tap).is_some());
}

#[actix::test]
async fn empty_pool_creates_on_demand_and_failed_attach_is_undone() {
    let fake = FakeLinks::new();
    let addr = started(0, &fake).await;
    assert!(taps(&fake).is_empty());

    fake.fail(FakeOp::AttachPort, None, 1);
    let err = acquire(&addr).await.unwrap_err();
    assert!(
        matches!(&err, TapPoolError::Host { op: "attach TAP to bridge", name, .. } if name == "hth0"),
        "{err}"
    );
    assert!(taps(&fake).is_empty(), "the unattached TAP was deleted");
    assert!(fake.calls().contains(&LinksCall::DeleteLink("hth0".into())));
    let s = status(&addr).await;
    assert_eq!((s.leased, s.free_ips, s.pending), (0, 5, 0));

    let ok = acquire(&addr).await.unwrap();
    assert_eq!(ok.tap, "hth0", "the name was given back");
    assert!(fake.link("hth0").unwrap().master.is_some());
}

#[actix::test]
async fn failed_create_on_demand_gives_back_ip_and_name() {
    let fake = FakeLinks::new();
    let addr = started(0, &fake).await;
    fake.fail(FakeOp::CreateTap, None, 1);
    let err = acquire(&addr).await.unwrap_err();
    assert!(
        matches!(
            err,
            TapPoolError::Host {
                op: "create TAP",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(status(&addr).await.free_ips, 5);
    assert_eq!(acquire(&addr).await.unwrap().tap, "hth0");
}

#[actix::test]
async fn refill_failure_backs_off_and_recovers() {
    let fake = FakeLinks::new();
    let addr = started(1, &fake).await;
    fake.fail(FakeOp::CreateTap, None, 2);
    acquire(&addr).await.unwrap();
    wait_status(&addr, |s| s.refill_failures >= 1).await;
    let s = wait_status(&addr, |s| s.free_taps == 1).await;
    assert_eq!((s.refill_failures, s.pending), (0, 0));
    let creates = fake
        .calls()
        .iter()
        .filter(|c| matches!(c, LinksCall::CreateTap(_)))
        .count();
    assert_eq!(
        creates,
        1 + 3,
        "initial fill, then two failures and a success"
    );
}

#[actix::test]
async fn initialize_adopts_used_leases_and_sorts_out_strays() {
    let fake = FakeLinks::new();
    fake.plant("hth0", LinkKind::Tap); // leased, present
    fake.plant("hth2", LinkKind::Tap); // strays: two reclaimed, one deleted
    fake.plant("hth3", LinkKind::Tap);
    fake.plant("hth5", LinkKind::Tap);
    fake.plant("hth1", LinkKind::Other); // foreign: untouched, name never reused
    let addr = start(config(2), &fake);
    let used = vec![used("hth0", 2), used("hth7", 3)]; // hth7 is missing
    let s = addr
        .send(Initialize { used: used.clone() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s.leased, s.free_taps, s.free_ips), (2, 2, 3));

    assert_eq!(taps(&fake), ["hth0", "hth2", "hth3", "hth7"]);
    let bridge = fake.link("hbr0").unwrap().index;
    for tap in ["hth0", "hth2", "hth3", "hth7"] {
        let l = fake.link(tap).unwrap();
        assert_eq!(l.master, Some(bridge), "{tap}");
        assert!(l.up && l.isolated && l.mtu == 1400, "{tap}");
    }
    assert_eq!(fake.link("hth1").unwrap().master, None);

    let next = acquire(&addr).await.unwrap();
    assert_eq!((next.tap.as_str(), next.guest_ip), ("hth2", ip(4)));
    // The adopted leases can be released like any other.
    addr.send(ReleaseTap {
        lease: used[0].clone(),
    })
    .await
    .unwrap()
    .unwrap();
    // Refill skips the foreign hth1 and the taken names.
    let s = wait_status(&addr, |s| s.pending == 0 && s.free_taps == 2).await;
    assert_eq!(s.leased, 2);
    assert!(fake.link("hth1").unwrap().kind == LinkKind::Other);
}

#[actix::test]
async fn invalid_used_lease_is_refused_before_touching_the_host() {
    let fake = FakeLinks::new();
    let addr = start(config(1), &fake);
    let err = addr
        .send(Initialize {
            used: vec![used("hth0", 2), used("hth1", 2)],
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("leased twice"), "{err}");
    assert!(fake.calls().is_empty());
    assert!(!status(&addr).await.ready);
}

#[actix::test]
async fn failed_initialize_changes_no_state_and_can_be_retried() {
    let fake = FakeLinks::new();
    let addr = start(config(2), &fake);
    fake.fail(FakeOp::ListLinks, None, 1);
    let err = addr
        .send(Initialize { used: vec![] })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            TapPoolError::Host {
                op: "list links",
                ..
            }
        ),
        "{err}"
    );
    assert!(!status(&addr).await.ready);
    let s = addr
        .send(Initialize { used: vec![] })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s.ready, s.free_taps), (true, 2));
}

#[actix::test]
async fn non_bridge_link_with_bridge_name_is_a_clear_error() {
    let fake = FakeLinks::new();
    fake.plant("hbr0", LinkKind::Other);
    let addr = start(config(1), &fake);
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
    assert!(taps(&fake).is_empty());
}

#[actix::test]
async fn teardown_deletes_pool_taps_keeps_leased_and_refuses_acquire() {
    let fake = FakeLinks::new();
    let addr = started(2, &fake).await;
    let a = acquire(&addr).await.unwrap();
    wait_status(&addr, |s| s.pending == 0 && s.free_taps == 2).await;
    let report = addr
        .send(Teardown {
            remove_bridge: true,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.deleted_taps, ["hth1", "hth2"]);
    assert_eq!((report.leased_kept, report.bridge_removed), (1, false));
    assert_eq!(taps(&fake), std::slice::from_ref(&a.tap));
    assert!(matches!(acquire(&addr).await, Err(TapPoolError::TornDown)));
    // Releasing after teardown deletes the TAP; a second teardown removes the bridge.
    addr.send(ReleaseTap { lease: a }).await.unwrap().unwrap();
    wait_status(&addr, |s| s.pending == 0).await;
    assert!(taps(&fake).is_empty());
    let report = addr
        .send(Teardown {
            remove_bridge: true,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(report.bridge_removed);
    assert!(fake.links().is_empty());
}

#[actix::test]
async fn teardown_waits_for_background_creation_and_deletes_it() {
    let fake = FakeLinks::new();
    let addr = started(1, &fake).await;
    fake.set_create_delay(Some(Duration::from_millis(100)));
    let a = acquire(&addr).await.unwrap();
    assert_eq!(status(&addr).await.pending, 1);
    let report = addr
        .send(Teardown {
            remove_bridge: false,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(report.deleted_taps.is_empty());
    assert_eq!(status(&addr).await.pending, 0);
    assert_eq!(
        taps(&fake),
        [a.tap],
        "the refilled TAP was deleted, not leaked"
    );
}

#[test]
fn bad_configs_name_their_field() {
    for (c, field) in [
        (
            TapPoolConfig {
                bridge: String::new(),
                ..config(1)
            },
            "bridge",
        ),
        (
            TapPoolConfig {
                bridge: "hth3".into(),
                ..config(1)
            },
            "bridge",
        ),
        (
            TapPoolConfig {
                tap_prefix: "waytoolong".into(),
                ..config(1)
            },
            "tap_prefix",
        ),
        (
            TapPoolConfig {
                cidr: "10.0.0.0/30".parse().unwrap(),
                ..config(1)
            },
            "cidr",
        ),
        (
            TapPoolConfig {
                cidr: "10.0.0.5/24".parse().unwrap(),
                ..config(1)
            },
            "cidr",
        ),
        (
            TapPoolConfig {
                mtu: 10,
                ..config(1)
            },
            "mtu",
        ),
        (config(6), "pool_size"),
    ] {
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
    assert!(config(5).validate().is_ok());
}

#[actix::test]
async fn acquire_on_a_full_bridge_is_refused_naming_the_limit() {
    let fake = FakeLinks::new();
    // Links with the prefix that are not pool TAPs: counted as the bridge's ports (the pool
    // cannot tell where they are attached), so the bridge has room for one more TAP.
    for i in 0..BRIDGE_MAX_PORTS - 1 {
        fake.plant(&format!("hthx{i}"), LinkKind::Other);
    }
    let addr = started(3, &fake).await;
    let s = wait_status(&addr, |s| s.pending == 0).await;
    assert_eq!(
        s.free_taps, 1,
        "the pool stops at the bridge's limit: {s:?}"
    );
    assert_eq!(s.refill_failures, 0, "{s:?}");
    let a = acquire(&addr).await.unwrap();
    // Pool empty, bridge full: refused before any host work, the address given back.
    fake.clear_calls();
    let err = acquire(&addr).await.unwrap_err();
    assert!(
        matches!(
            err,
            TapPoolError::BridgeFull {
                max: 1023,
                leased: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "Bridge hbr0 is full: a Linux bridge takes at most 1023 ports (1 leased)"
    );
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    assert_eq!(status(&addr).await.free_ips, 4);
    // A release frees a port: the TAP goes back to the pool and is leased again.
    addr.send(ReleaseTap { lease: a }).await.unwrap().unwrap();
    wait_status(&addr, |s| s.pending == 0 && s.free_taps == 1).await;
    acquire(&addr).await.unwrap();
}
