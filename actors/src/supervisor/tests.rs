//! Supervisor unit tests: the repair plan after a restart (pure), command-line ownership, the
//! refusal paths that must change nothing, and long polls — against fake backends. Full
//! lifecycles with a VMM run in `tests/e2e.rs` (hearthd with firecracker-sim in a namespace).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use actix::Addr;
use hearth_proto::api::{self, VmState};
use hearth_proto::firecracker::InstanceState;

use super::open::{owner_vm, plan_repairs, Adoption};
use super::*;
use crate::host::disks::fake::FakeDisks;
use crate::lease::MacAddr;

fn spec(name: &str) -> api::CreateVm {
    serde_json::from_value(serde_json::json!({"name": name, "kernel": "vmlinux", "rootfs": "base"}))
        .unwrap()
}

fn lease(n: u8) -> NetLease {
    let ip = Ipv4Addr::new(172, 31, 240, n);
    NetLease {
        tap: format!("hth{n}"),
        mac: MacAddr::for_guest(ip),
        guest_ip: ip,
        gateway: Ipv4Addr::new(172, 31, 240, 1),
        prefix_len: 24,
    }
}

fn record(name: &str, state: VmState, lease_n: Option<u8>, pid: Option<u32>) -> VmRecord {
    VmRecord {
        spec: spec(name),
        state,
        nat: true,
        last_error: None,
        lease: lease_n.map(lease),
        disk: Some(DiskRecord {
            path: format!("/d/{name}.img").into(),
            backend: crate::host::disks::BackendKind::Copy,
        }),
        process: pid.map(|pid| VmmProcessRecord {
            pid: Some(pid),
            start_time: Some(1),
            api_socket: format!("/run/hearth/vms/{name}/api.sock").into(),
            binary: "/usr/bin/firecracker".into(),
            vsock_cid: 3,
            left_frozen: false,
        }),
        policy: PolicyState::default(),
        uid: None,
    }
}

fn adopted(vmm_state: InstanceState) -> Adoption {
    Adoption::Adopted { vmm_state }
}

#[test]
fn running_vm_with_live_process_is_adopted_and_keeps_its_lease() {
    let records = vec![record("a", VmState::Running, Some(5), Some(100))];
    let plan = plan_repairs(
        &records,
        &BTreeMap::from([("a".into(), adopted(InstanceState::Running))]),
    );
    assert_eq!(plan.report.adopted, vec!["a"]);
    assert!(plan.alive.contains("a"));
    assert_eq!(plan.used, vec![lease(5)]);
    assert_eq!(plan.guests.len(), 1);
    assert!(plan.guests[0].nat);
    assert!(plan.kill.is_empty() && plan.changes.is_empty());
}

#[test]
fn running_vm_whose_process_is_gone_is_crashed_and_loses_its_lease() {
    let records = vec![record("a", VmState::Running, Some(5), Some(100))];
    let plan = plan_repairs(&records, &BTreeMap::from([("a".into(), Adoption::Gone)]));
    assert_eq!(plan.report.dead, vec!["a"]);
    assert!(plan.used.is_empty() && plan.guests.is_empty());
    assert!(
        plan.kill.is_empty(),
        "a process that failed verification is never signalled"
    );
    assert!(plan.changes.iter().any(|(_, c)| matches!(
        c,
        Change::State {
            state: VmState::Crashed,
            ..
        }
    )));
    assert!(plan
        .changes
        .iter()
        .any(|(_, c)| matches!(c, Change::Lease(None))));
    assert!(plan
        .changes
        .iter()
        .any(|(_, c)| matches!(c, Change::Process(None))));
}

#[test]
fn interrupted_create_is_undone() {
    let records = vec![record("a", VmState::Creating, Some(5), Some(100))];
    let plan = plan_repairs(
        &records,
        &BTreeMap::from([("a".into(), adopted(InstanceState::NotStarted))]),
    );
    assert_eq!(plan.kill, vec!["a"]);
    assert_eq!(plan.remove_disk, vec!["a"]);
    assert!(plan.used.is_empty());
    assert!(plan.changes.iter().any(|(_, c)| matches!(
        c,
        Change::State {
            state: VmState::Failed,
            ..
        }
    )));
    assert_eq!(plan.report.repaired, vec!["a"]);
}

#[test]
fn interrupted_delete_is_finished() {
    let records = vec![record("a", VmState::Deleting, None, None)];
    let plan = plan_repairs(&records, &BTreeMap::new());
    assert_eq!(plan.remove_disk, vec!["a"]);
    assert_eq!(plan.forget, vec!["a"]);
}

#[test]
fn interrupted_boot_is_killed_and_failed() {
    let records = vec![record("a", VmState::Starting, Some(5), Some(100))];
    let plan = plan_repairs(
        &records,
        &BTreeMap::from([("a".into(), adopted(InstanceState::NotStarted))]),
    );
    assert_eq!(plan.kill, vec!["a"]);
    assert!(plan.used.is_empty() && plan.alive.is_empty());
    // Even if the VMM had started the guest: an unconfirmed boot is not kept.
    let plan = plan_repairs(
        &records,
        &BTreeMap::from([("a".into(), adopted(InstanceState::Running))]),
    );
    assert_eq!(plan.kill, vec!["a"]);
    assert!(plan.changes.iter().any(|(_, c)| matches!(
        c,
        Change::State {
            state: VmState::Failed,
            ..
        }
    )));
}

#[test]
fn interrupted_stop_is_left_stopping_for_the_background_ladder() {
    let records = vec![record("a", VmState::Stopping, Some(5), Some(100))];
    let plan = plan_repairs(
        &records,
        &BTreeMap::from([("a".into(), adopted(InstanceState::Running))]),
    );
    assert_eq!(plan.stop, vec!["a"]);
    // Until the ladder ends it the process runs: its TAP and firewall entry stay, it is not
    // swept as a stray, and nothing is recorded yet (the stop records `stopped` itself).
    assert_eq!(plan.used, vec![lease(5)]);
    assert_eq!(plan.guests.len(), 1);
    assert!(plan.alive.contains("a"));
    assert!(plan.kill.is_empty() && plan.changes.is_empty(), "{plan:?}");
}

#[test]
fn interrupted_stop_whose_process_is_gone_is_stopped() {
    let records = vec![record("a", VmState::Stopping, Some(5), Some(100))];
    let plan = plan_repairs(&records, &BTreeMap::from([("a".into(), Adoption::Gone)]));
    assert!(plan.stop.is_empty() && plan.used.is_empty() && plan.alive.is_empty());
    assert!(plan.changes.iter().any(|(_, c)| matches!(
        c,
        Change::State {
            state: VmState::Stopped,
            ..
        }
    )));
    assert!(plan
        .changes
        .iter()
        .any(|(_, c)| matches!(c, Change::Lease(None))));
}

#[test]
fn stopped_vm_is_left_alone() {
    let records = vec![record("a", VmState::Stopped, None, None)];
    let plan = plan_repairs(&records, &BTreeMap::new());
    assert_eq!(plan, super::open::RepairPlan::default());
}

#[test]
fn vmm_command_lines_are_attributed_to_their_vm() {
    let args = |v: &[&str]| {
        v.iter()
            .map(std::string::ToString::to_string)
            .collect::<Vec<_>>()
    };
    let base = "/run/hearth/vms";
    assert_eq!(
        owner_vm(
            &args(&[
                "firecracker",
                "--api-sock",
                "/run/hearth/vms/web/api.sock",
                "--id",
                "web"
            ]),
            base
        ),
        Some("web".into())
    );
    assert_eq!(
        owner_vm(
            &args(&["firecracker", "--api-sock=/run/hearth/vms/db/api.sock"]),
            base
        ),
        Some("db".into())
    );
    assert_eq!(
        owner_vm(&args(&["firecracker", "--api-sock", "/tmp/x.sock"]), base),
        None
    );
    assert_eq!(owner_vm(&args(&["sleep", "10"]), base), None);
    // A sibling directory that merely shares the prefix is not ours.
    assert_eq!(
        owner_vm(
            &args(&["fc", "--api-sock", "/run/hearth/vms-old/a/api.sock"]),
            base
        ),
        None
    );
}

fn supervisor(with_binary: bool, store: MemoryVmStore) -> (Addr<VmSupervisor>, FakeDisks) {
    super::testing::supervisor_over_fakes(with_binary, store)
}

#[actix::test]
async fn create_refusals_name_the_problem_and_record_nothing() {
    let (sup, disks) = supervisor(false, MemoryVmStore::default());
    let send = |spec| {
        sup.send(CreateVm {
            spec,
            idempotency: None,
        })
    };

    let err = send(api::CreateVm {
        vcpus: 0,
        ..spec("a")
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        matches!(&err, SupervisorError::InvalidField(f) if f.field == "vcpus"),
        "{err}"
    );

    let err = send(api::CreateVm {
        kernel: "nope".into(),
        ..spec("a")
    })
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(
        err,
        SupervisorError::UnknownImage {
            kind: "kernel",
            image: "nope".into()
        }
    );

    let err = send(spec("a")).await.unwrap().unwrap_err();
    assert!(matches!(err, SupervisorError::Unavailable { .. }), "{err}");

    assert!(sup.send(ListVms { label: None }).await.unwrap().is_empty());
    assert!(
        disks.calls().is_empty(),
        "no disk was made: {:?}",
        disks.calls()
    );
}

#[actix::test]
async fn unknown_vms_are_not_found() {
    let (sup, _) = supervisor(true, MemoryVmStore::default());
    for res in [
        sup.send(GetVm { name: "x".into() })
            .await
            .unwrap()
            .map(|_| ()),
        sup.send(DeleteVm { name: "x".into() }).await.unwrap(),
        sup.send(RunAction {
            name: "x".into(),
            action: VmAction::Start,
            idempotency: None,
        })
        .await
        .unwrap()
        .map(|_| ()),
    ] {
        assert_eq!(res, Err(SupervisorError::NotFound { name: "x".into() }));
    }
}

/// A store holding one stopped VM, so actions can be tried without a VMM.
fn store_with_stopped(name: &str) -> MemoryVmStore {
    let mut l = MemoryVmStore::default();
    l.insert_vm(&spec(name)).unwrap();
    l.set_state(name, VmState::Stopped, None).unwrap();
    l
}

#[actix::test]
async fn open_loads_the_table_and_actions_check_the_state() {
    let (sup, _) = supervisor(true, store_with_stopped("a"));
    let report = sup.send(Open {}).await.unwrap().unwrap();
    assert!(report.adopted.is_empty() && report.dead.is_empty());
    let info = sup.send(GetVm { name: "a".into() }).await.unwrap().unwrap();
    assert_eq!(info.state, VmState::Stopped);

    let err = sup
        .send(RunAction {
            name: "a".into(),
            action: VmAction::Stop,
            idempotency: None,
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err,
        SupervisorError::InvalidState {
            name: "a".into(),
            state: VmState::Stopped,
            op: "stop"
        }
    );
    // NAT can be switched on a stopped VM; it is applied when it next gets a lease.
    let info = sup
        .send(SetNat {
            name: "a".into(),
            enabled: true,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(info.nat);
}

#[actix::test]
async fn waiting_times_out_or_answers_at_once() {
    let (sup, _) = supervisor(true, store_with_stopped("a"));
    sup.send(Open {}).await.unwrap().unwrap();
    let now = sup
        .send(WaitForState {
            name: "a".into(),
            state: VmState::Stopped,
            timeout: Duration::from_millis(10),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.state, VmState::Stopped);
    // From stopped, running cannot come without a start: refused at once, not after 10 s.
    let err = sup
        .send(WaitForState {
            name: "a".into(),
            state: VmState::Running,
            timeout: Duration::from_secs(10),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, SupervisorError::InvalidState { .. }), "{err}");
    let err = sup
        .send(WaitForState {
            name: "a".into(),
            state: VmState::Deleting,
            timeout: Duration::from_millis(20),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, SupervisorError::Timeout { .. }), "{err}");
}

#[actix::test]
async fn delete_of_a_stopped_vm_frees_its_disk_and_forgets_it() {
    let mut store = store_with_stopped("a");
    store
        .put_disk(
            "a",
            &DiskRecord {
                path: "/d/a.img".into(),
                backend: crate::host::disks::BackendKind::Copy,
            },
        )
        .unwrap();
    let (sup, disks) = supervisor(true, store);
    sup.send(Open {}).await.unwrap().unwrap();
    sup.send(DeleteVm { name: "a".into() })
        .await
        .unwrap()
        .unwrap();
    assert!(sup.send(ListVms { label: None }).await.unwrap().is_empty());
    assert!(
        disks
            .calls()
            .iter()
            .any(|c| c.contains("remove") && c.contains('a')),
        "{:?}",
        disks.calls()
    );
    let events = sup
        .send(EventsSince {
            since: 0,
            limit: 100,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.last().unwrap().state, VmState::Deleting);
}

#[actix::test]
async fn idempotency_key_reused_with_other_request_conflicts() {
    let mut store = store_with_stopped("a");
    store.put_idempotent_response("k1", "hash-a", "{}").unwrap();
    let (sup, _) = supervisor(true, store);
    sup.send(Open {}).await.unwrap().unwrap();
    let err = sup
        .send(RunAction {
            name: "a".into(),
            action: VmAction::Start,
            idempotency: Some(Idempotency {
                key: "k1".into(),
                request_hash: "hash-b".into(),
            }),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, SupervisorError::Conflict { .. }), "{err}");
}

#[actix::test]
async fn a_failed_delete_leaves_a_retryable_vm_not_one_stuck_deleting() {
    let mut store = store_with_stopped("a");
    store
        .put_disk(
            "a",
            &DiskRecord {
                path: "/d/a.img".into(),
                backend: crate::host::disks::BackendKind::Copy,
            },
        )
        .unwrap();
    let (sup, disks) = supervisor(true, store);
    sup.send(Open {}).await.unwrap().unwrap();
    disks.fail_on_nth("remove", 1);

    let err = sup
        .send(DeleteVm { name: "a".into() })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            SupervisorError::Step {
                step: "remove disk",
                ..
            }
        ),
        "{err}"
    );
    let info = sup.send(GetVm { name: "a".into() }).await.unwrap().unwrap();
    assert_eq!(info.state, VmState::Failed);
    assert!(info.last_error.unwrap().contains("remove disk"));

    // The disk record was kept, so the retry removes it and the VM is gone.
    sup.send(DeleteVm { name: "a".into() })
        .await
        .unwrap()
        .unwrap();
    assert!(sup.send(ListVms { label: None }).await.unwrap().is_empty());
}

/// An exhausted address pool is a typed cause (`TapPoolError::IpsExhausted`), not a string,
/// so the HTTP layer can answer 503; the failed create is undone (its disk removed).
#[actix::test]
async fn an_exhausted_pool_fails_the_create_with_the_pools_own_error() {
    let pool = crate::tap_pool::TapPoolConfig {
        cidr: "172.31.240.0/29".parse().unwrap(),
        pool_size: 1,
        ..Default::default()
    };
    let (sup, disks, tap_pool) =
        super::testing::supervisor_with_pool(true, MemoryVmStore::default(), pool);
    sup.send(Open {}).await.unwrap().unwrap();
    // Every guest address of the /29 is leased by someone else.
    while tap_pool
        .send(crate::tap_pool::AcquireTap {})
        .await
        .unwrap()
        .is_ok()
    {}

    let err = sup
        .send(CreateVm {
            spec: spec("a"),
            idempotency: None,
        })
        .await
        .unwrap()
        .unwrap_err();
    match &err {
        SupervisorError::Step {
            step: "network lease",
            source: StepCause::Pool(cause),
        } => assert!(
            matches!(**cause, crate::tap_pool::TapPoolError::IpsExhausted { .. }),
            "{cause:?}"
        ),
        other => panic!("not the pool's error: {other:?}"),
    }
    assert!(err.to_string().contains("No free guest IP"), "{err}");
    let info = sup.send(GetVm { name: "a".into() }).await.unwrap().unwrap();
    assert_eq!(info.state, VmState::Failed);
    assert!(
        disks.calls().iter().any(|c| c.contains("remove")),
        "the disk was undone: {:?}",
        disks.calls()
    );
}

#[test]
fn a_running_vm_is_kept_only_if_its_vmm_runs_a_guest() {
    let records = vec![record("a", VmState::Running, Some(5), Some(100))];
    for vmm_state in [InstanceState::Paused, InstanceState::NotStarted] {
        let plan = plan_repairs(
            &records,
            &BTreeMap::from([("a".into(), adopted(vmm_state))]),
        );
        assert_eq!(plan.kill, vec!["a"], "{vmm_state:?}");
        assert!(
            plan.alive.is_empty() && plan.used.is_empty(),
            "{vmm_state:?}"
        );
    }
}

/// A VM recorded `paused` (a pause records it before the VMM call, a resume after): kept
/// paused if its VMM is, recorded `running` if its VMM runs (the pause never reached it, or
/// the resume did), crashed if its VMM is gone; never killed for being paused.
#[test]
fn a_paused_vm_is_kept_as_its_vmm_is() {
    let records = vec![record("a", VmState::Paused, Some(5), Some(100))];
    for (vmm_state, change) in [
        (InstanceState::Paused, None),
        (InstanceState::Running, Some(VmState::Running)),
    ] {
        let plan = plan_repairs(
            &records,
            &BTreeMap::from([("a".into(), adopted(vmm_state))]),
        );
        assert!(plan.kill.is_empty(), "{vmm_state:?}");
        assert!(plan.alive.contains("a"), "{vmm_state:?}");
        assert_eq!(plan.used.len(), 1, "{vmm_state:?}: keeps its lease");
        let states: Vec<VmState> = plan
            .changes
            .iter()
            .filter_map(|(_, c)| match c {
                Change::State { state, .. } => Some(*state),
                _ => None,
            })
            .collect();
        assert_eq!(
            states,
            change.into_iter().collect::<Vec<_>>(),
            "{vmm_state:?}"
        );
    }
    let plan = plan_repairs(&records, &BTreeMap::new());
    assert!(plan.alive.is_empty());
    assert!(plan.changes.iter().any(|(_, c)| matches!(
        c,
        Change::State {
            state: VmState::Crashed,
            ..
        }
    )));
}

/// `Open` with a stopped VM `a` (its run directory still holding a dead process's socket, and
/// a log), a leaked run directory `ghost` of no VM, and a VMM nobody adopted using each: every
/// stray is killed by the actor owning its run directory, `ghost`'s directory is removed, `a`
/// keeps its log but not the socket, and an unrelated process is left alone. Deleting `a`
/// then removes its directory too.
#[actix::test]
async fn open_sweeps_strays_and_run_directories_through_their_owners() {
    use crate::host::processes::{fake::FakeCall, FakeProcesses, ProcessIdentity, Signal};
    let run = tempfile::tempdir().unwrap();
    let base = run.path().join("vms");
    for dir in ["a", "ghost"] {
        std::fs::create_dir_all(base.join(dir)).unwrap();
        std::fs::write(base.join(dir).join("api.sock"), b"").unwrap();
        std::fs::write(base.join(dir).join("console.log"), b"words").unwrap();
    }
    let fake = FakeProcesses::new();
    let vmm = |args: Vec<String>| ProcessIdentity {
        start_time: 1,
        cmdline: [vec!["/usr/bin/firecracker".to_string()], args].concat(),
    };
    let api = |vm: &str| base.join(vm).join("api.sock").display().to_string();
    fake.set_identity(71, vmm(vec!["--api-sock".into(), api("a")]));
    fake.set_identity(72, vmm(vec![format!("--api-sock={}", api("ghost"))]));
    fake.set_identity(
        90,
        vmm(vec!["--api-sock".into(), "/elsewhere/x/api.sock".into()]),
    );
    let (sup, _, _) = super::testing::supervisor_with(
        true,
        store_with_stopped("a"),
        crate::tap_pool::TapPoolConfig::default(),
        fake.clone(),
        base.clone(),
    );

    let report = sup.send(Open {}).await.unwrap().unwrap();
    for swept in ["process 71", "process 72", "run directory ghost"] {
        assert!(
            report.swept.iter().any(|s| s == swept),
            "{swept} not in {:?}",
            report.swept
        );
    }
    let signals: Vec<_> = fake
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            FakeCall::Signal { pid, signal } => Some((pid, signal)),
            _ => None,
        })
        .collect();
    assert_eq!(signals, vec![(71, Signal::Kill), (72, Signal::Kill)]);
    assert!(!base.join("ghost").exists());
    assert!(
        !base.join("a/api.sock").exists(),
        "the dead process's socket goes"
    );
    assert!(base.join("a/console.log").exists(), "the VM's log stays");

    sup.send(DeleteVm { name: "a".into() })
        .await
        .unwrap()
        .unwrap();
    assert!(!base.join("a").exists());
    assert!(base.exists());
}

/// Without a Firecracker binary no process actor can own a run directory, yet a delete needs
/// none to remove files: `a`'s directory goes with it. `b`'s directory is still used by a VMM
/// nobody adopted (an earlier hearthd's): it stays, and that process is not touched.
#[actix::test]
async fn delete_without_a_binary_removes_the_run_directory_unless_a_process_uses_it() {
    use crate::host::processes::{fake::FakeCall, FakeProcesses, ProcessIdentity};
    let run = tempfile::tempdir().unwrap();
    let base = run.path().join("vms");
    for dir in ["a", "b"] {
        std::fs::create_dir_all(base.join(dir)).unwrap();
        std::fs::write(base.join(dir).join("console.log"), b"words").unwrap();
    }
    let fake = FakeProcesses::new();
    let api_b = base.join("b").join("api.sock").display().to_string();
    fake.set_identity(
        73,
        ProcessIdentity {
            start_time: 1,
            cmdline: vec!["/usr/bin/firecracker".into(), "--api-sock".into(), api_b],
        },
    );
    let mut store = store_with_stopped("a");
    store.insert_vm(&spec("b")).unwrap();
    store.set_state("b", VmState::Stopped, None).unwrap();
    let (sup, _, _) = super::testing::supervisor_with(
        false,
        store,
        crate::tap_pool::TapPoolConfig::default(),
        fake.clone(),
        base.clone(),
    );
    sup.send(Open {}).await.unwrap().unwrap();

    sup.send(DeleteVm { name: "a".into() })
        .await
        .unwrap()
        .unwrap();
    assert!(!base.join("a").exists(), "a's run directory is removed");

    sup.send(DeleteVm { name: "b".into() })
        .await
        .unwrap()
        .unwrap();
    assert!(
        base.join("b/console.log").exists(),
        "a directory a process uses stays"
    );
    assert!(
        !fake
            .calls()
            .iter()
            .any(|c| matches!(c, FakeCall::Signal { .. })),
        "{:?}",
        fake.calls()
    );
    assert!(base.exists());
}
