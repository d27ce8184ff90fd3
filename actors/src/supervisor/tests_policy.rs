//! Lifecycle policies against fake backends and a manual clock: the restart loop (backoff,
//! give-up, cancel by a user stop), autostart on `Open`, time limits and live updates. Every
//! start fails at the spawn (fake processes), which is a crash loop without a VMM. The clock
//! is moved by hand and the check is sent as a `PolicyTick`: no test sleeps a backoff.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::Addr;
use hearth_proto::api::{self, EventReason, VmState};
use hearth_proto::api_policy::{DrainMode, OnExpiry, RestartPolicy, TtlChange};

use super::policy::ManualClock;
use super::testing::supervisor_with_clock;
use super::tests_policy_loop::stop_reasons;
use super::*;
use crate::host::processes::FakeProcesses;

pub(super) fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub(super) fn spec(name: &str, restart: &str) -> api::CreateVm {
    serde_json::from_value(serde_json::json!({
        "name": name, "kernel": "vmlinux", "rootfs": "base", "restart": restart
    }))
    .unwrap()
}

/// A store with `name` in `state` (no process, no lease) under `restart`.
pub(super) fn store_with(name: &str, state: VmState, restart: &str) -> MemoryVmStore {
    let mut s = MemoryVmStore::default();
    s.insert_vm(&spec(name, restart)).unwrap();
    s.set_state(name, state, Some("VMM exited: killed by signal 9"))
        .unwrap();
    s
}

/// A supervisor whose every VMM spawn fails, opened over `store`.
/// Run directories of these tests' supervisors: restarts spawn (and fail), which prepares a
/// run directory first, so it must be somewhere the tests own, never a fixed host path. One
/// temporary directory per test process; a static is never dropped, so it stays in the
/// system's temporary directory (a few empty run directories, no VMM ever runs).
fn run_base() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap())
        .path()
        .join("vms")
}

pub(super) async fn opened(store: MemoryVmStore, clock: &ManualClock) -> Addr<VmSupervisor> {
    opened_with_report(store, clock).await.0
}

/// [`opened`], with what `Open` reported.
async fn opened_with_report(
    store: MemoryVmStore,
    clock: &ManualClock,
) -> (Addr<VmSupervisor>, OpenReport) {
    let processes = FakeProcesses::new();
    processes.fail_spawn("no VMM in unit tests");
    let sup = supervisor_with_clock(store, processes, Arc::new(clock.clone()), 4, run_base());
    let report = sup.send(Open {}).await.unwrap().unwrap();
    (sup, report)
}

pub(super) async fn policy_events(sup: &Addr<VmSupervisor>) -> Vec<String> {
    sup.send(EventsSince {
        since: 0,
        limit: 1000,
    })
    .await
    .unwrap()
    .unwrap()
    .into_iter()
    .filter(|e| matches!(e.reason, EventReason::Policy | EventReason::Expired))
    .filter_map(|e| e.detail)
    .collect()
}

/// Waits (for the sagas, never for a backoff: the clock does not move) until the last
/// policy event contains `text`.
pub(super) async fn until_last_event(sup: &Addr<VmSupervisor>, text: &str) -> Vec<String> {
    for _ in 0..500 {
        let events = policy_events(sup).await;
        if events.last().is_some_and(|e| e.contains(text)) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no event {text:?}; got {:?}", policy_events(sup).await);
}

pub(super) async fn info(sup: &Addr<VmSupervisor>, name: &str) -> api::VmInfo {
    sup.send(GetVm { name: name.into() })
        .await
        .unwrap()
        .unwrap()
}

#[actix::test]
async fn a_crash_loop_backs_off_on_the_clock_and_gives_up_after_max() {
    let clock = ManualClock::new(t0());
    let sup = opened(store_with("a", VmState::Crashed, "on-failure:2"), &clock).await;

    // Found crashed on Open: started at once (autostart), which fails, so attempt 1 waits 1 s.
    until_last_event(&sup, "restarting in 1s (attempt 1)").await;
    let vm = info(&sup, "a").await;
    assert_eq!(vm.state, VmState::Failed);
    assert_eq!((vm.restart_attempts, vm.restart_in_secs), (1, Some(1)));

    // The clock has not moved: a check restarts nothing.
    clock.advance(Duration::from_millis(999));
    assert_eq!(sup.send(PolicyTick).await.unwrap(), TickReport::default());
    assert!(!policy_events(&sup)
        .await
        .iter()
        .any(|e| e.contains("restart attempt 1")));

    clock.advance(Duration::from_millis(1));
    sup.send(PolicyTick).await.unwrap();
    until_last_event(&sup, "restarting in 2s (attempt 2)").await;
    clock.advance(Duration::from_secs(2));
    sup.send(PolicyTick).await.unwrap();
    let events = until_last_event(&sup, "gave up after 2 restarts").await;
    assert_eq!(
        events,
        [
            "autostart: its process was gone when hearthd started",
            "restarting in 1s (attempt 1)",
            "restart attempt 1",
            "restarting in 2s (attempt 2)",
            "restart attempt 2",
            "restart policy on-failure:2 gave up after 2 restarts",
        ]
    );
    let vm = info(&sup, "a").await;
    assert_eq!((vm.restart_attempts, vm.restart_in_secs), (2, None));

    // Given up: nothing more however long it waits.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(sup.send(PolicyTick).await.unwrap(), TickReport::default());
    assert_eq!(policy_events(&sup).await.len(), events.len());

    // A user start resets the history.
    let err = sup
        .send(RunAction {
            name: "a".into(),
            action: VmAction::Start,
            idempotency: None,
        })
        .await
        .unwrap();
    assert!(err.is_err(), "the spawn fails");
    assert_eq!(info(&sup, "a").await.restart_attempts, 0);
}

#[actix::test]
async fn a_user_stop_cancels_a_pending_restart() {
    let clock = ManualClock::new(t0());
    let sup = opened(store_with("a", VmState::Crashed, "always"), &clock).await;
    until_last_event(&sup, "restarting in 1s (attempt 1)").await;

    let vm = sup
        .send(RunAction {
            name: "a".into(),
            action: VmAction::Stop,
            idempotency: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(vm.state, VmState::Stopped);
    assert_eq!(vm.restart_in_secs, None);

    clock.advance(Duration::from_secs(60));
    assert_eq!(sup.send(PolicyTick).await.unwrap(), TickReport::default());
    let events = policy_events(&sup).await;
    assert!(
        !events.iter().any(|e| e.contains("restart attempt")),
        "{events:?}"
    );
    assert_eq!(info(&sup, "a").await.state, VmState::Stopped);
}

#[actix::test]
async fn without_a_policy_or_after_a_user_stop_nothing_is_started_on_open() {
    let clock = ManualClock::new(t0());
    let mut store = store_with("crashed-no", VmState::Crashed, "no");
    store.insert_vm(&spec("stopped-always", "always")).unwrap();
    store
        .set_state("stopped-always", VmState::Stopped, None)
        .unwrap();
    let (sup, report) = opened_with_report(store, &clock).await;
    assert_eq!(report.autostarts, Vec::<String>::new());
    clock.advance(Duration::from_secs(600));
    assert_eq!(sup.send(PolicyTick).await.unwrap(), TickReport::default());
    assert_eq!(policy_events(&sup).await, Vec::<String>::new());
    assert_eq!(info(&sup, "crashed-no").await.state, VmState::Crashed);
    assert_eq!(info(&sup, "stopped-always").await.state, VmState::Stopped);
}

#[actix::test]
async fn autostart_goes_oldest_first() {
    let clock = ManualClock::new(t0());
    let mut store = MemoryVmStore::default();
    // Names in reverse of age, so name order would be wrong.
    for (name, age) in [("a", 1), ("b", 3), ("c", 2)] {
        store.insert_vm(&spec(name, "always")).unwrap();
        store.set_state(name, VmState::Crashed, None).unwrap();
        store
            .put_policy(
                name,
                &PolicyState {
                    created: Some(t0() - Duration::from_secs(age)),
                    ..PolicyState::default()
                },
            )
            .unwrap();
    }
    let processes = FakeProcesses::new();
    processes.fail_spawn("no VMM in unit tests");
    let sup = supervisor_with_clock(store, processes, Arc::new(clock.clone()), 1, run_base());
    sup.send(Open {}).await.unwrap().unwrap();
    for _ in 0..500 {
        let n = sup
            .send(EventsSince {
                since: 0,
                limit: 1000,
            })
            .await
            .unwrap()
            .unwrap()
            .iter()
            .filter(|e| {
                e.detail
                    .as_deref()
                    .is_some_and(|d| d.starts_with("autostart"))
            })
            .count();
        if n == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let order: Vec<String> = sup
        .send(EventsSince {
            since: 0,
            limit: 1000,
        })
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.detail
                .as_deref()
                .is_some_and(|d| d.starts_with("autostart"))
        })
        .map(|e| e.vm)
        .collect();
    assert_eq!(order, ["b", "c", "a"]);
}

#[actix::test]
async fn a_stored_deadline_expires_on_the_clock_stop_or_delete() {
    let clock = ManualClock::new(t0());
    let mut store = MemoryVmStore::default();
    for (name, on_expiry) in [("keep", OnExpiry::Stop), ("gone", OnExpiry::Delete)] {
        let mut s = spec(name, "no");
        s.on_expiry = on_expiry;
        store.insert_vm(&s).unwrap();
        store.set_state(name, VmState::Stopped, None).unwrap();
        store
            .put_policy(
                name,
                &PolicyState {
                    deadline: Some(t0() + Duration::from_secs(30)),
                    ..PolicyState::default()
                },
            )
            .unwrap();
    }
    // As after a restart of hearthd: the deadline comes from the store.
    let sup = opened(store, &clock).await;
    assert_eq!(info(&sup, "gone").await.time_left_secs, Some(30));
    clock.advance(Duration::from_secs(29));
    assert_eq!(sup.send(PolicyTick).await.unwrap(), TickReport::default());
    assert_eq!(policy_events(&sup).await, Vec::<String>::new());

    clock.advance(Duration::from_secs(1));
    sup.send(PolicyTick).await.unwrap();
    for _ in 0..500 {
        if sup
            .send(GetVm {
                name: "gone".into(),
            })
            .await
            .unwrap()
            .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        sup.send(GetVm {
            name: "gone".into()
        })
        .await
        .unwrap(),
        Err(SupervisorError::NotFound { .. })
    ));
    // Its deletion is recorded as the expiry's, not a user's.
    let deletes: Vec<EventReason> = sup
        .send(EventsSince {
            since: 0,
            limit: 1000,
        })
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .filter(|e| e.vm == "gone" && e.state == VmState::Deleting)
        .map(|e| e.reason)
        .collect();
    assert!(!deletes.is_empty());
    assert!(
        deletes.iter().all(|r| *r == EventReason::Expired),
        "{deletes:?}"
    );
    // `keep` was not running: the expiry only clears its deadline, once.
    let keep = info(&sup, "keep").await;
    assert_eq!((keep.state, keep.time_left_secs), (VmState::Stopped, None));
    clock.advance(Duration::from_secs(60));
    assert_eq!(sup.send(PolicyTick).await.unwrap(), TickReport::default());
    let mut events = policy_events(&sup).await;
    events.sort();
    assert_eq!(
        events,
        [
            "deleted",
            "time limit reached: deleting it",
            "time limit reached: it was not running"
        ]
    );
}

#[actix::test]
async fn update_changes_policy_labels_and_ttl_and_refuses_bad_input_whole() {
    let clock = ManualClock::new(t0());
    let sup = opened(store_with("a", VmState::Stopped, "no"), &clock).await;
    let vm = sup
        .send(UpdateVm {
            name: "a".into(),
            restart: Some(RestartPolicy::Always),
            ttl: Some(TtlChange::Set(Duration::from_secs(600))),
            ..UpdateVm::default()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(vm.spec.restart, RestartPolicy::Always);
    assert_eq!(vm.time_left_secs, Some(600));
    clock.advance(Duration::from_secs(100));
    let vm = sup
        .send(UpdateVm {
            name: "a".into(),
            ttl: Some(TtlChange::Extend(Duration::from_secs(900))),
            ..UpdateVm::default()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(vm.time_left_secs, Some(1400));

    // A bad label refuses the whole update: the policy given with it is not applied.
    let err = sup
        .send(UpdateVm {
            name: "a".into(),
            labels: Some([("bad=key".to_owned(), "v".to_owned())].into()),
            restart: Some(RestartPolicy::No),
            ..UpdateVm::default()
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("labels"), "{err}");
    let vm = info(&sup, "a").await;
    assert_eq!(vm.spec.restart, RestartPolicy::Always);
    assert!(vm.spec.labels.is_empty());
    assert!(matches!(
        sup.send(UpdateVm {
            name: "nope".into(),
            ..UpdateVm::default()
        })
        .await
        .unwrap(),
        Err(SupervisorError::NotFound { .. })
    ));
}

#[actix::test]
async fn a_cordoned_host_refuses_creates_and_a_drain_stops_what_would_run() {
    let clock = ManualClock::new(t0());
    let sup = opened(store_with("a", VmState::Crashed, "always"), &clock).await;
    until_last_event(&sup, "restarting in 1s (attempt 1)").await;

    let node = sup
        .send(SetCordon {
            reason: Some("kernel upgrade".into()),
        })
        .await
        .unwrap()
        .unwrap();
    assert!(node.cordoned);
    let err = sup
        .send(CreateVm {
            spec: spec("b", "no"),
            idempotency: None,
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, SupervisorError::Cordoned { reason } if reason == "kernel upgrade"),
        "{err}"
    );
    assert!(sup.send(GetVm { name: "b".into() }).await.unwrap().is_err());

    // The drain stops `a`, whose restart was pending: it stays stopped.
    let node = sup
        .send(Drain {
            reason: "maintenance".into(),
            mode: DrainMode::Stop,
            wait: true,
        })
        .await
        .unwrap()
        .unwrap();
    let drain = node.drain.unwrap();
    assert_eq!((drain.total, drain.stopped, drain.done), (1, 1, true));
    assert_eq!(node.reason.as_deref(), Some("maintenance"));
    assert_eq!(info(&sup, "a").await.state, VmState::Stopped);
    clock.advance(Duration::from_secs(60));
    assert_eq!(sup.send(PolicyTick).await.unwrap(), TickReport::default());
    assert_eq!(info(&sup, "a").await.state, VmState::Stopped);

    let node = sup.send(SetCordon { reason: None }).await.unwrap().unwrap();
    assert!(!node.cordoned && node.reason.is_none());
    assert!(!matches!(
        sup.send(CreateVm {
            spec: spec("b", "no"),
            idempotency: None,
        })
        .await
        .unwrap(),
        Err(SupervisorError::Cordoned { .. })
    ));
}

/// A restart pending when hearthd was killed keeps its backoff: the next `Open` waits for the
/// stored due time instead of starting the VM at once, and counts on from the stored attempt.
#[actix::test]
async fn a_pending_restart_keeps_its_due_time_across_a_restart_of_hearthd() {
    let clock = ManualClock::new(t0());
    let mut store = store_with("a", VmState::Crashed, "on-failure:5");
    // As left by a hearthd killed 1 s after it decided attempt 3 (due 4 s after the crash).
    store
        .put_policy(
            "a",
            &PolicyState {
                attempts: 3,
                last_start: Some(t0() - Duration::from_secs(2)),
                restart_due: Some(t0() + Duration::from_secs(3)),
                ..PolicyState::default()
            },
        )
        .unwrap();
    let (sup, report) = opened_with_report(store, &clock).await;
    assert_eq!(report.autostarts, Vec::<String>::new());
    let vm = info(&sup, "a").await;
    assert_eq!((vm.state, vm.restart_in_secs), (VmState::Crashed, Some(3)));
    assert_eq!(vm.restart_attempts, 3);

    clock.advance(Duration::from_millis(2999));
    assert_eq!(sup.send(PolicyTick).await.unwrap(), TickReport::default());
    clock.advance(Duration::from_millis(1));
    let tick = sup.send(PolicyTick).await.unwrap();
    assert_eq!(tick.restarts, ["a"]);
    // The spawn fails: the loop goes on at attempt 4 (8 s), not from 1.
    let events = until_last_event(&sup, "restarting in 8s (attempt 4)").await;
    assert_eq!(
        events,
        ["restart attempt 3", "restarting in 8s (attempt 4)"]
    );
}

/// A restart overdue when hearthd starts is made at once (with the autostarts), even if its
/// count is at the maximum: the stored decision is kept, not made again.
#[actix::test]
async fn an_overdue_restart_from_before_is_made_on_open() {
    let clock = ManualClock::new(t0());
    let mut store = store_with("a", VmState::Failed, "on-failure:2");
    store
        .put_policy(
            "a",
            &PolicyState {
                attempts: 2,
                last_start: Some(t0() - Duration::from_secs(60)),
                restart_due: Some(t0() - Duration::from_secs(50)),
                ..PolicyState::default()
            },
        )
        .unwrap();
    let (sup, report) = opened_with_report(store, &clock).await;
    assert_eq!(report.autostarts, ["a"]);
    // Its start fails: the count is at the maximum, so the policy gives up.
    until_last_event(&sup, "gave up after 2 restarts").await;
    assert_eq!(info(&sup, "a").await.restart_in_secs, None);
}

async fn drain_events(sup: &Addr<VmSupervisor>, vm: &str) -> Vec<String> {
    sup.send(EventsSince {
        since: 0,
        limit: 1000,
    })
    .await
    .unwrap()
    .unwrap()
    .into_iter()
    .filter(|e| e.reason == EventReason::Drain && e.vm == vm)
    .filter_map(|e| e.detail)
    .collect()
}

/// A drain asked not to wait answers as soon as it has started (a second one is refused
/// meanwhile), its progress readable with `GetNode`; each VM gets `drain` events. A VM that
/// does not run (its restart pending) is only stopped, even by a `snapshot` drain.
#[actix::test]
async fn a_drain_can_answer_at_once_and_tells_each_vm_why() {
    let clock = ManualClock::new(t0());
    let sup = opened(store_with("a", VmState::Crashed, "always"), &clock).await;
    until_last_event(&sup, "restarting in 1s (attempt 1)").await;
    let drain = |wait| Drain {
        reason: "maintenance".into(),
        mode: DrainMode::Snapshot,
        wait,
    };
    // Both queued before the first is handled: the second finds the first running (its
    // stops are queued behind it).
    let (first, second) = (sup.send(drain(false)), sup.send(drain(true)));
    let d = first.await.unwrap().unwrap().drain.unwrap();
    assert_eq!((d.mode, d.total, d.done), (DrainMode::Snapshot, 1, false));
    assert!(matches!(
        second.await.unwrap(),
        Err(SupervisorError::Conflict { .. })
    ));
    let mut node = sup.send(GetNode).await.unwrap();
    for _ in 0..500 {
        if node.drain.as_ref().is_some_and(|d| d.done) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        node = sup.send(GetNode).await.unwrap();
    }
    let d = node.drain.unwrap();
    assert_eq!((d.stopped, d.done), (1, true), "{d:?}");
    assert!(d.snapshots.is_empty() && d.failed.is_empty(), "{d:?}");
    assert_eq!(info(&sup, "a").await.state, VmState::Stopped);
    // The stop itself (here the cancel of its pending restart) is the drain's, not a user's.
    assert_eq!(
        drain_events(&sup, "a").await,
        [
            "drain: stopping it",
            "stopped by a drain; the pending restart is cancelled",
            "drain: stopped"
        ]
    );
    assert_eq!(
        stop_reasons(&sup, "a").await,
        [(VmState::Stopped, EventReason::Drain)]
    );
}

/// `on_expiry: snapshot` of a VM that does not run: nothing to snapshot. One whose restart is
/// pending is stopped (the restart cancelled), one already stopped only loses its deadline.
#[actix::test]
async fn an_expiry_to_snapshot_of_a_vm_that_does_not_run_stops_it_or_clears_the_deadline() {
    let clock = ManualClock::new(t0());
    let mut store = MemoryVmStore::default();
    for (name, state, restart) in [
        ("idle", VmState::Stopped, "no"),
        ("looping", VmState::Crashed, "always"),
    ] {
        let mut s = spec(name, restart);
        s.on_expiry = OnExpiry::Snapshot;
        store.insert_vm(&s).unwrap();
        store.set_state(name, state, None).unwrap();
        store
            .put_policy(
                name,
                &PolicyState {
                    deadline: Some(t0() + Duration::from_secs(30)),
                    ..PolicyState::default()
                },
            )
            .unwrap();
    }
    let sup = opened(store, &clock).await;
    until_last_event(&sup, "restarting in 1s (attempt 1)").await;
    clock.advance(Duration::from_millis(500));
    assert_eq!(sup.send(PolicyTick).await.unwrap(), TickReport::default());
    clock.advance(Duration::from_secs(30));
    let tick = sup.send(PolicyTick).await.unwrap();
    let mut expired = tick.expiries.clone();
    expired.sort();
    assert_eq!(expired, ["idle", "looping"]);
    for _ in 0..500 {
        if info(&sup, "looping").await.time_left_secs.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for name in ["idle", "looping"] {
        let vm = info(&sup, name).await;
        assert_eq!(
            (vm.state, vm.time_left_secs, vm.restart_in_secs),
            (VmState::Stopped, None, None),
            "{name}"
        );
        assert_eq!(vm.parked_snapshot, None);
    }
    let events = policy_events(&sup).await;
    assert!(events.contains(&"time limit reached: it was not running".to_owned()));
    assert!(events.contains(&"time limit reached: stopping it".to_owned()));
    // The stop is the expiry's, not a user's.
    assert!(
        events.contains(&"stopped at its time limit; the pending restart is cancelled".to_owned())
    );
    assert_eq!(
        stop_reasons(&sup, "looping").await,
        [(VmState::Stopped, EventReason::Expired)]
    );
    // The restart the expiry cancelled does not come back.
    clock.advance(Duration::from_secs(60));
    assert_eq!(sup.send(PolicyTick).await.unwrap(), TickReport::default());
}

async fn drain_done(sup: &Addr<VmSupervisor>) -> NodeStatus {
    for _ in 0..500 {
        let node = sup.send(GetNode).await.unwrap();
        if node.drain.as_ref().is_some_and(|d| d.done) {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("drain not done: {:?}", sup.send(GetNode).await.unwrap());
}

/// A drain is recorded before it touches any VM and forgotten when done; one that cannot be
/// recorded is refused, with nothing stopped and the cordon as it was.
#[actix::test]
async fn a_drain_is_recorded_before_its_first_stop_and_forgotten_when_done() {
    use super::node::StoredDrain;
    let clock = ManualClock::new(t0());
    let mut store = store_with("a", VmState::Crashed, "always");
    store.fail_node_key = Some("drain".into());
    let sup = opened(store, &clock).await;
    until_last_event(&sup, "restarting in 1s (attempt 1)").await;
    let drain = |wait| Drain {
        reason: "maintenance".into(),
        mode: DrainMode::Stop,
        wait,
    };
    let err = sup.send(drain(true)).await.unwrap().unwrap_err();
    assert!(matches!(err, SupervisorError::Store(_)), "{err}");
    let node = sup.send(GetNode).await.unwrap();
    assert_eq!((node.cordoned, node.drain), (false, None));
    assert_eq!(info(&sup, "a").await.restart_in_secs, Some(1));
    assert!(drain_events(&sup, "a").await.is_empty());

    let sup = opened(store_with("a", VmState::Crashed, "always"), &clock).await;
    until_last_event(&sup, "restarting in 1s (attempt 1)").await;
    // Queued right behind the drain: handled before any message its stops send.
    let (started, stored, before) = (
        sup.send(drain(false)),
        sup.send(StoredDrain),
        sup.send(GetVm { name: "a".into() }),
    );
    assert!(!started.await.unwrap().unwrap().drain.unwrap().done);
    let stored: serde_json::Value = serde_json::from_str(&stored.await.unwrap().unwrap()).unwrap();
    assert_eq!(
        (&stored["mode"], &stored["reason"], &stored["started_ms"]),
        (
            &serde_json::json!("stop"),
            &serde_json::json!("maintenance"),
            &serde_json::json!(1_800_000_000_000u64)
        )
    );
    let before = before.await.unwrap().unwrap();
    // Not stopped yet: its restart still pending (its failed start left it `failed`).
    assert_eq!(
        (before.state, before.restart_in_secs),
        (VmState::Failed, Some(1))
    );
    let d = drain_done(&sup).await.drain.unwrap();
    assert_eq!(info(&sup, "a").await.state, VmState::Stopped);
    assert_eq!((d.total, d.stopped, d.resumed), (1, 1, false));
    assert_eq!(sup.send(StoredDrain).await.unwrap(), None);
}

/// A drain a killed hearthd left recorded is resumed by the next `Open`: still cordoned, it
/// stops what still runs (a pending restart here), skips what is stopped, makes no autostart
/// (an overdue restart is cancelled), says it was resumed, and is forgotten when done.
#[actix::test]
async fn a_drain_cut_short_is_resumed_by_the_next_open() {
    use super::node::StoredDrain;
    let clock = ManualClock::new(t0());
    let mut store = MemoryVmStore::default();
    for (name, state, restart, due) in [
        (
            "pending",
            VmState::Crashed,
            "always",
            Some(t0() + Duration::from_secs(30)),
        ),
        (
            "overdue",
            VmState::Crashed,
            "always",
            Some(t0() - Duration::from_secs(5)),
        ),
        ("crashed", VmState::Crashed, "on-failure", None),
        ("done", VmState::Stopped, "always", None),
    ] {
        store.insert_vm(&spec(name, restart)).unwrap();
        store.set_state(name, state, None).unwrap();
        let policy = PolicyState {
            attempts: 1,
            restart_due: due,
            ..PolicyState::default()
        };
        store.put_policy(name, &policy).unwrap();
    }
    store.put_cordon(Some("kernel upgrade")).unwrap();
    let record = r#"{"mode":"stop","reason":"kernel upgrade","started_ms":1799999990000}"#;
    store.put_node_value("drain", Some(record)).unwrap();

    let (sup, report) = opened_with_report(store, &clock).await;
    assert_eq!(report.autostarts, Vec::<String>::new());
    let node = drain_done(&sup).await;
    assert_eq!(node.reason.as_deref(), Some("kernel upgrade"));
    let d = node.drain.unwrap();
    assert_eq!(
        (d.mode, d.total, d.stopped, d.resumed),
        (DrainMode::Stop, 1, 1, true),
        "{d:?}"
    );
    assert!(d.failed.is_empty(), "{d:?}");
    assert_eq!(sup.send(StoredDrain).await.unwrap(), None);
    let states = [
        ("pending", VmState::Stopped),
        ("overdue", VmState::Crashed),
        ("crashed", VmState::Crashed),
        ("done", VmState::Stopped),
    ];
    for (name, state) in states {
        let vm = info(&sup, name).await;
        assert_eq!((vm.state, vm.restart_in_secs), (state, None), "{name}");
    }
    assert_eq!(
        drain_events(&sup, "pending").await,
        [
            "drain: stopping it",
            "stopped by a drain; the pending restart is cancelled",
            "drain: stopped"
        ]
    );
    assert_eq!(
        stop_reasons(&sup, "pending").await,
        [(VmState::Stopped, EventReason::Drain)]
    );
    for name in ["overdue", "crashed", "done"] {
        assert!(drain_events(&sup, name).await.is_empty(), "{name}");
    }
    // No restart comes back later: the pending one was cancelled, the overdue one forgotten.
    clock.advance(Duration::from_secs(60));
    assert_eq!(sup.send(PolicyTick).await.unwrap(), TickReport::default());
    assert!(
        policy_events(&sup).await.is_empty(),
        "{:?}",
        policy_events(&sup).await
    );
}

/// A drain record that cannot be read is dropped with a warning; `Open` goes on as usual.
#[actix::test]
async fn an_unreadable_drain_record_is_dropped() {
    use super::node::StoredDrain;
    let clock = ManualClock::new(t0());
    let mut store = store_with("a", VmState::Crashed, "always");
    store.put_node_value("drain", Some("{not json")).unwrap();
    let (sup, report) = opened_with_report(store, &clock).await;
    assert_eq!(report.autostarts, ["a"]);
    assert_eq!(sup.send(GetNode).await.unwrap().drain, None);
    assert_eq!(sup.send(StoredDrain).await.unwrap(), None);
}
