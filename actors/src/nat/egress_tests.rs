//! Unit tests of the egress policy of `NatActor`, against the fake firewall.

use std::collections::{BTreeMap, BTreeSet};

use actix::{Actor, Addr};
use slog::Logger;

use super::*;
use crate::host::firewall::fake::{FakeCall, FakeFirewall};
use crate::host::firewall::nft_egress::{EgressChange, EgressElement, EgressOp};
use crate::nat::{NatActor, NatError, Reconcile, Teardown};
use crate::testing::{ip, nat_config};

async fn ready() -> (Addr<NatActor>, FakeFirewall) {
    let fake = FakeFirewall::new();
    fake.add_interface("eth0");
    let log = Logger::root(slog::Discard, slog::o!());
    let addr = NatActor::new(nat_config("eth0"), Box::new(fake.clone()), log)
        .unwrap()
        .start();
    addr.send(Reconcile { desired: vec![] })
        .await
        .unwrap()
        .unwrap();
    addr.send(ReconcileEgress {
        policies: BTreeMap::new(),
    })
    .await
    .unwrap()
    .unwrap();
    (addr, fake)
}

fn rules(nets: &[&str], ports: &[(&str, u16)], domains: &[&str]) -> EgressRules {
    EgressRules {
        nets: nets.iter().map(|n| n.parse().unwrap()).collect(),
        ports: ports
            .iter()
            .map(|(n, p)| (n.parse().unwrap(), *p))
            .collect(),
        domains: domains.iter().map(ToString::to_string).collect(),
    }
}

fn egress_updates(fake: &FakeFirewall) -> Vec<Vec<EgressChange>> {
    fake.state()
        .calls
        .iter()
        .filter_map(|c| match c {
            FakeCall::UpdateEgress(_, changes) => Some(changes.clone()),
            _ => None,
        })
        .collect()
}

fn elements(fake: &FakeFirewall) -> BTreeMap<String, BTreeSet<EgressElement>> {
    let mut sets = fake.state().egress.clone();
    sets.retain(|_, members| !members.is_empty());
    sets
}

#[actix::test]
async fn a_policy_change_sends_only_the_difference_and_allow_mode_removes_everything() {
    let (addr, fake) = ready().await;
    let g = ip(5);
    let first = rules(&["10.20.0.0/16"], &[("10.30.0.0/16", 443)], &["a.example"]);
    addr.send(SetEgressPolicy {
        guest: g,
        rules: Some(first),
    })
    .await
    .unwrap()
    .unwrap();
    let net = |n: &str| EgressElement::Net(g, n.parse().unwrap());
    assert_eq!(
        elements(&fake)[NETS_SET],
        BTreeSet::from([net("10.20.0.0/16")])
    );
    // Both transports of a port allowance; the guest in the deny and counter sets.
    assert_eq!(elements(&fake)[PORTS_SET].len(), 2);
    assert_eq!(
        elements(&fake)[DENY_SET],
        BTreeSet::from([EgressElement::Guest(g)])
    );

    let second = rules(&["10.21.0.0/16"], &[("10.30.0.0/16", 443)], &["a.example"]);
    addr.send(SetEgressPolicy {
        guest: g,
        rules: Some(second),
    })
    .await
    .unwrap()
    .unwrap();
    let last = egress_updates(&fake).pop().unwrap();
    assert_eq!(
        last,
        [
            EgressChange {
                set: NETS_SET,
                element: net("10.20.0.0/16"),
                op: EgressOp::Remove
            },
            EgressChange {
                set: NETS_SET,
                element: net("10.21.0.0/16"),
                op: EgressOp::Add(None)
            },
        ]
    );

    addr.send(SetEgressPolicy {
        guest: g,
        rules: None,
    })
    .await
    .unwrap()
    .unwrap();
    assert!(elements(&fake).is_empty(), "{:?}", elements(&fake));
}

#[actix::test]
async fn learned_addresses_need_deny_mode_and_a_listed_pattern_and_are_clamped() {
    let (addr, fake) = ready().await;
    let g = ip(5);
    let learn = |pattern: &str, ttl| AllowLearned {
        guest: g,
        pattern: pattern.to_owned(),
        addrs: vec![(ip(200), ttl)],
    };
    // Not in deny mode: nothing learned, nothing sent.
    assert_eq!(addr.send(learn("a.example", 30)).await.unwrap().unwrap(), 0);
    assert!(egress_updates(&fake).is_empty());
    addr.send(SetEgressPolicy {
        guest: g,
        rules: Some(rules(&[], &[], &["a.example"])),
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(addr.send(learn("b.example", 30)).await.unwrap().unwrap(), 0);
    assert_eq!(addr.send(learn("a.example", 0)).await.unwrap().unwrap(), 1);
    assert_eq!(
        egress_updates(&fake).pop().unwrap(),
        [EgressChange {
            set: LEARNED_SET,
            element: EgressElement::Addr(g, ip(200)),
            op: EgressOp::Add(Some(MIN_LEARNED_SECS)),
        }]
    );
    addr.send(learn("a.example", u32::MAX))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        egress_updates(&fake).pop().unwrap()[0].op,
        EgressOp::Add(Some(MAX_LEARNED_SECS))
    );
    // Dropping the pattern forgets what was learned for it.
    addr.send(SetEgressPolicy {
        guest: g,
        rules: Some(rules(&[], &[], &["c.example"])),
    })
    .await
    .unwrap()
    .unwrap();
    assert!(!elements(&fake).contains_key(LEARNED_SET));
}

#[actix::test]
async fn a_change_keeping_every_domain_keeps_learned_addresses_and_dropping_one_forgets_its_own() {
    let (addr, fake) = ready().await;
    let g = ip(5);
    let set = |domains: &'static [&'static str], net: &'static str| SetEgressPolicy {
        guest: g,
        rules: Some(rules(&[net], &[], domains)),
    };
    addr.send(set(&["a.example", "b.example"], "10.1.0.0/16"))
        .await
        .unwrap()
        .unwrap();
    for (pattern, last) in [("a.example", 200), ("b.example", 201), ("a.example", 202)] {
        let learn = AllowLearned {
            guest: g,
            pattern: pattern.to_owned(),
            addrs: vec![(ip(last), 300)],
        };
        assert_eq!(addr.send(learn).await.unwrap().unwrap(), 1);
    }
    let learned = |fake: &FakeFirewall| elements(fake).get(LEARNED_SET).cloned();
    let all = learned(&fake).unwrap();
    assert_eq!(all.len(), 3);
    // Same domains (and one more), another CIDR: only the CIDR changes.
    addr.send(set(&["a.example", "b.example", "c.example"], "10.2.0.0/16"))
        .await
        .unwrap()
        .unwrap();
    assert!(egress_updates(&fake)
        .pop()
        .unwrap()
        .iter()
        .all(|c| c.set != LEARNED_SET));
    assert_eq!(learned(&fake).unwrap(), all);
    // `a.example` dropped: its two addresses go, `b.example`'s stays.
    addr.send(set(&["b.example"], "10.2.0.0/16"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        learned(&fake).unwrap(),
        BTreeSet::from([EgressElement::Addr(g, ip(201))])
    );
    // And they stay forgotten: dropping `b.example` later removes only its own.
    addr.send(set(&[], "10.2.0.0/16")).await.unwrap().unwrap();
    assert_eq!(
        egress_updates(&fake).pop().unwrap(),
        [EgressChange {
            set: LEARNED_SET,
            element: EgressElement::Addr(g, ip(201)),
            op: EgressOp::Remove,
        }]
    );
}

#[actix::test]
async fn bad_policies_and_early_calls_change_nothing() {
    let fake = FakeFirewall::new();
    fake.add_interface("eth0");
    let log = Logger::root(slog::Discard, slog::o!());
    let addr = NatActor::new(nat_config("eth0"), Box::new(fake.clone()), log)
        .unwrap()
        .start();
    let early = addr
        .send(SetEgressPolicy {
            guest: ip(5),
            rules: Some(EgressRules::default()),
        })
        .await
        .unwrap();
    assert!(matches!(early, Err(NatError::NotReady { .. })), "{early:?}");
    let (addr, fake) = ready().await;
    let bad = addr
        .send(SetEgressPolicy {
            guest: ip(5),
            rules: Some(rules(&[], &[("10.0.0.0/8", 0)], &[])),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(bad.to_string().contains("port 0"), "{bad}");
    let outside = addr
        .send(SetEgressPolicy {
            guest: "192.0.2.9".parse().unwrap(),
            rules: Some(EgressRules::default()),
        })
        .await
        .unwrap();
    assert!(matches!(outside, Err(NatError::InvalidGuest { .. })));
    assert!(egress_updates(&fake).is_empty());
    addr.send(Teardown).await.unwrap().unwrap();
    assert!(fake
        .state()
        .calls
        .iter()
        .any(|c| *c == FakeCall::ApplyNft(teardown_text())));
}

#[test]
fn reconcile_keeps_counters_and_learned_of_guests_that_stay() {
    let config = nat_config("eth0");
    let stays = ip(5);
    let leaves = ip(6);
    let current = Listed {
        denied: BTreeMap::from([(stays, 7), (leaves, 3)]),
        learned: vec![(stays, ip(200), 20), (leaves, ip(201), 20)],
        policies: BTreeMap::new(),
    };
    let policies = BTreeMap::from([(stays, rules(&["10.0.0.0/8"], &[], &[]))]);
    let text = table_text(&config, &policies, &current);
    assert!(text.contains(&format!(
        "delete element ip {EGRESS_TABLE} {DENIED_SET} {{ {leaves} }}"
    )));
    assert!(text.contains(&format!(
        "delete element ip {EGRESS_TABLE} {LEARNED_SET} {{ {leaves} . {} }}",
        ip(201)
    )));
    assert!(!text.contains(&format!("{stays} . {}", ip(200))), "{text}");
    // The counter set is never flushed; the policy sets are.
    assert!(!text.contains(&format!("flush set ip {EGRESS_TABLE} {DENIED_SET}")));
    assert!(text.contains(&format!("flush set ip {EGRESS_TABLE} {NETS_SET}8")));
    assert!(text.contains(&format!(
        "add element ip {EGRESS_TABLE} {NETS_SET}8 {{ {stays} . 10.0.0.0 }}"
    )));
}

#[test]
fn listing_is_parsed_from_nft_json() {
    let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
      {"set": {"family": "ip", "name": "denied", "table": "hearth-egress",
        "elem": [{"elem": {"val": "172.31.240.5", "counter": {"packets": 4, "bytes": 240}}}]}},
      {"set": {"family": "ip", "name": "learned", "table": "hearth-egress",
        "elem": [{"elem": {"val": {"concat": ["172.31.240.5", "1.2.3.4"]}, "timeout": 30, "expires": 29}}]}},
      {"set": {"family": "ip", "name": "deny", "table": "hearth-egress", "elem": ["172.31.240.5"]}},
      {"set": {"family": "ip", "name": "nets16", "table": "hearth-egress",
        "elem": [{"concat": ["172.31.240.5", "10.20.0.0"]}]}},
      {"set": {"family": "ip", "name": "nets32", "table": "hearth-egress",
        "elem": [{"concat": ["172.31.240.9", "1.2.3.4"]}]}},
      {"set": {"family": "ip", "name": "ports32", "table": "hearth-egress",
        "elem": [{"concat": ["172.31.240.5", "tcp", 443, "9.9.9.9"]},
                 {"concat": ["172.31.240.5", "udp", 443, "9.9.9.9"]}]}}]}"#;
    let listed = parse_listing(json);
    assert_eq!(listed.denied, BTreeMap::from([(ip(5), 4)]));
    assert_eq!(listed.learned, [(ip(5), "1.2.3.4".parse().unwrap(), 29)]);
    // Policies come back for deny-mode guests only (172.31.240.9 is not in `deny`).
    assert_eq!(
        listed.policies,
        BTreeMap::from([(ip(5), rules(&["10.20.0.0/16"], &[("9.9.9.9/32", 443)], &[]))])
    );
    assert_eq!(parse_listing("not json"), Listed::default());
}

#[actix::test]
async fn a_reconcile_lists_the_egress_table_once() {
    let (addr, fake) = ready().await;
    let egress_listings = |fake: &FakeFirewall| {
        fake.state()
            .calls
            .iter()
            .filter(|c| **c == FakeCall::ListNft(format!("table ip {EGRESS_TABLE}")))
            .count()
    };
    let before = egress_listings(&fake);
    addr.send(Reconcile {
        desired: vec![crate::testing::guest(5, true)],
    })
    .await
    .unwrap()
    .unwrap();
    // The kept policies and the rewrite's counters/learned come from one listing.
    assert_eq!(egress_listings(&fake) - before, 1);
    let before = egress_listings(&fake);
    addr.send(ReconcileEgress {
        policies: BTreeMap::from([(ip(5), rules(&["10.0.0.0/8"], &[], &[]))]),
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(egress_listings(&fake) - before, 1);
}

#[actix::test]
async fn unregistering_a_guest_drops_its_policy_last() {
    let (addr, fake) = ready().await;
    let lease = crate::testing::lease(5);
    let g = lease.guest_ip;
    addr.send(crate::nat::RegisterGuest {
        lease: lease.clone(),
    })
    .await
    .unwrap()
    .unwrap();
    addr.send(SetEgressPolicy {
        guest: g,
        rules: Some(rules(&["10.0.0.0/8"], &[], &[])),
    })
    .await
    .unwrap()
    .unwrap();
    let from = fake.state().calls.len();
    addr.send(crate::nat::UnregisterGuest { lease })
        .await
        .unwrap()
        .unwrap();
    let calls = fake.state().calls[from..].to_vec();
    let at = |want: &dyn Fn(&FakeCall) -> bool| calls.iter().position(want).unwrap();
    let policy_gone = at(&|c| {
        matches!(c, FakeCall::UpdateEgress(_, changes)
            if changes.iter().any(|ch| ch.set == DENY_SET && ch.op == EgressOp::Remove))
    });
    let nat_gone =
        at(&|c| matches!(c, FakeCall::RemoveFromSet(s, _) if s == crate::nat::rules::NAT_SET));
    let lease_gone = at(&|c| matches!(c, FakeCall::UpdatePortLeases { .. }));
    assert!(
        nat_gone < policy_gone && lease_gone < policy_gone,
        "{calls:?}"
    );
    assert!(elements(&fake).is_empty(), "{:?}", elements(&fake));
}
