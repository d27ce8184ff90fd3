//! The policy loop's observable tick and decision counters (`GET /v1/node`'s `policy_ticks`,
//! `/metrics`), against fake backends and a manual clock: each pass counts once, after it has
//! looked at every VM, and each decision is counted by kind. Also the helper that reads the
//! reasons stops are recorded with (a drain's or an expiry's stop is theirs, not a user's).

use std::time::Duration;

use hearth_proto::api::{EventReason, VmState};

use super::metrics::PolicyCounters;
use super::policy::ManualClock;
use super::tests_policy::{opened, store_with, t0, until_last_event};
use super::*;

/// The reasons of `vm`'s transitions into `stopping` or `stopped`, oldest first.
pub(super) async fn stop_reasons(
    sup: &Addr<VmSupervisor>,
    vm: &str,
) -> Vec<(VmState, EventReason)> {
    sup.send(EventsSince {
        since: 0,
        limit: 1000,
    })
    .await
    .unwrap()
    .unwrap()
    .into_iter()
    .filter(|e| e.vm == vm && matches!(e.state, VmState::Stopping | VmState::Stopped))
    // The drain's own reports are not transitions.
    .filter(|e| {
        !e.detail
            .as_deref()
            .is_some_and(|d| d.starts_with("drain: "))
    })
    .filter(|e| {
        !e.detail
            .as_deref()
            .is_some_and(|d| d.starts_with("time limit reached"))
    })
    .map(|e| (e.state, e.reason))
    .collect()
}

async fn counters(sup: &actix::Addr<VmSupervisor>) -> PolicyCounters {
    sup.send(GetMetrics {}).await.unwrap().policy
}

#[actix::test]
async fn each_pass_of_the_policy_loop_and_each_decision_is_counted() {
    let clock = ManualClock::new(t0());
    let sup = opened(store_with("a", VmState::Crashed, "on-failure:1"), &clock).await;
    // Found crashed on Open: an autostart, whose start fails: a restart decided.
    until_last_event(&sup, "restarting in 1s (attempt 1)").await;
    assert_eq!(
        counters(&sup).await,
        PolicyCounters {
            autostarts: 1,
            restarts: 1,
            ..PolicyCounters::default()
        }
    );
    assert_eq!(sup.send(GetNode).await.unwrap().policy_ticks, 0);

    // A pass that finds nothing due still counts: it looked.
    sup.send(PolicyTick).await.unwrap();
    assert_eq!(sup.send(GetNode).await.unwrap().policy_ticks, 1);

    // The restart is due: the pass makes it, it fails, and the policy gives up.
    clock.advance(Duration::from_secs(1));
    let report = sup.send(PolicyTick).await.unwrap();
    assert_eq!(report.restarts, ["a"]);
    until_last_event(&sup, "gave up after 1 restarts").await;
    assert_eq!(
        counters(&sup).await,
        PolicyCounters {
            ticks: 2,
            autostarts: 1,
            restarts: 1,
            give_ups: 1,
            ..PolicyCounters::default()
        }
    );
    assert_eq!(sup.send(GetNode).await.unwrap().policy_ticks, 2);
}

#[actix::test]
async fn an_expiry_is_counted_once_when_acted_on() {
    let clock = ManualClock::new(t0());
    let mut store = store_with("idle", VmState::Stopped, "no");
    store
        .put_policy(
            "idle",
            &PolicyState {
                deadline: Some(t0() + Duration::from_secs(30)),
                ..PolicyState::default()
            },
        )
        .unwrap();
    let sup = opened(store, &clock).await;
    sup.send(PolicyTick).await.unwrap();
    assert_eq!(counters(&sup).await.expiries, 0);
    clock.advance(Duration::from_secs(30));
    assert_eq!(sup.send(PolicyTick).await.unwrap().expiries, ["idle"]);
    // Its deadline is cleared: later passes do not count it again.
    sup.send(PolicyTick).await.unwrap();
    let c = counters(&sup).await;
    assert_eq!((c.ticks, c.expiries, c.autostarts), (3, 1, 0), "{c:?}");
}
